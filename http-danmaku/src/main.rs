//! The `http-danmaku` binary: settings, logging, bind, run. Everything else is in the library.

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    service_kit::init_logging();
    let config = service_kit::config::from_env(&http_danmaku::config::INFO);
    service_kit::server::run_main(http_danmaku::build(config)).await
}
