//! The `ws-stream` binary: everything but this line is in the library; `service_kit::server::main`
//! reads the settings, starts logging, binds, builds and runs it until SIGTERM or Ctrl-C.

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    service_kit::server::main(&ws_stream::config::INFO, ws_stream::build_with_listener).await
}
