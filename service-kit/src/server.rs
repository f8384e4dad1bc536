//! The HTTP server every service runs: the same middleware, error bodies, extractor limits and
//! pages, around the service's own routes.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::middleware::Logger;
use actix_web::{App, HttpServer, web};

use crate::assets::Pages;
use crate::config::ServerArgs;
use crate::{error, headers};

/// Starts serving on `listener`: `configure` adds the service's state and routes, then come the
/// pages (with `index_page` at `/`) and a JSON 404 for everything else. Signals are left to the
/// caller, which stops the server through its handle (see [`crate::shutdown`]).
pub fn serve<F>(
    listener: TcpListener,
    args: &ServerArgs,
    index_page: &'static str,
    configure: F,
) -> std::io::Result<Server>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let pages = Pages::new(args.web_dir.clone(), index_page);
    let workers = args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(2, |n| n.get()),
        |n| n.get(),
    );
    let server = HttpServer::new(move || {
        App::new()
            .wrap(Logger::default().log_level(log::Level::Debug))
            .wrap(error::json_error_pages())
            .wrap(headers::security_headers())
            .app_data(error::json_config())
            .app_data(error::query_config())
            .app_data(error::path_config())
            .configure(configure.clone())
            .configure(|cfg| pages.clone().configure(cfg))
            .default_service(web::to(error::not_found))
    })
    .workers(workers)
    .shutdown_timeout(args.shutdown_timeout_secs)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

/// `GET /healthz`: answers `{"status":"ok"}` while the service runs.
pub async fn health() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(shared_model::api::Health::ok())
}

/// A bound server and its address, ready to run.
pub struct RunningServer {
    server: Server,
    addr: std::net::SocketAddr,
}

impl RunningServer {
    /// Wraps a server built by [`serve`] on `addr`, logging where `name` listens.
    pub fn new(name: &str, server: Server, addr: std::net::SocketAddr) -> Self {
        log::info!("{name} listening on http://{addr}");
        Self { server, addr }
    }

    /// The bound address (its port is the real one when the settings said 0).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// A handle to stop the server from elsewhere.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Runs until SIGTERM or SIGINT, then calls `on_signal` (to wake or close long-lived
    /// requests) and stops gracefully: no new connections, open requests get the shutdown
    /// timeout to finish.
    pub async fn run_until_stopped(
        self,
        on_signal: impl FnOnce() + 'static,
    ) -> std::io::Result<()> {
        let handle = self.server.handle();
        actix_rt::spawn(async move {
            crate::shutdown::signal_received().await;
            on_signal();
            handle.stop(true).await;
        });
        self.server.await
    }

    /// Runs without listening for signals; stop it through [`RunningServer::handle`].
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}
