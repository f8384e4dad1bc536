//! The `ws-stream` binary: settings, logging, bind, run. Everything else is in the library.

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    service_kit::init_logging();
    let config = service_kit::config::from_env(&ws_stream::config::INFO);
    service_kit::server::run_main(ws_stream::build(config)).await
}
