//! The `ws-video` binary: settings, logging, bind, run. Everything else is in the library.

use ws_video::{Application, Config};

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    service_kit::init_logging();
    let config = Config::from_env();
    let app = match Application::build(config) {
        Ok(app) => app,
        Err(e) => {
            log::error!("cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("server failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
