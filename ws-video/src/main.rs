//! The `ws-video` binary: settings, logging, bind, run. Everything else is in the library.

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    service_kit::init_logging();
    let config = ws_video::config::from_env();
    service_kit::server::run_main(ws_video::build(config)).await
}
