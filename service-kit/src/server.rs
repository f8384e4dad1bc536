//! The HTTP server every service runs: the same middleware, error bodies, extractor limits and
//! pages, around the service's own routes.

use std::net::TcpListener;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use actix_http::HttpService;
use actix_service::{IntoServiceFactory, ServiceFactoryExt, map_config};
use actix_web::dev::{AppConfig, Server, Service, ServiceRequest};
use actix_web::middleware::{Condition, Logger, from_fn};
use actix_web::{App, HttpResponse, web};

use danmaku_store::{Backend, PgOptions, PgStore, SqliteOptions, SqliteStore, Store, StoreError};
use shared_model::api::Health;

use crate::assets::Pages;
use crate::config::{ServerArgs, ServiceInfo, Settings, StoreLocation, WsArgs};
use crate::hosts::{self, AllowedHosts};
use crate::proxies::TrustedProxies;
use crate::{error, headers, rate, upgrade};

/// The access log line: the client (as [`rate::peer_ip`] resolves it: behind a trusted proxy,
/// the address it forwarded for), the request line with the path only, the status, the size,
/// the user agent and the time taken. Never a query string, nor the `Referer`'s: the query may
/// carry a secret (a host token) and logs are kept and shared more widely than requests.
const ACCESS_LOG_FORMAT: &str =
    r#"%{client}xi "%{request}xi" %s %b "%{referer}xi" "%{User-Agent}i" %T"#;

/// The logger the access log is written through.
const ACCESS_LOG_TARGET: &str = "actix_web::middleware::logger";

/// Whether the access log is on (`RUST_LOG=actix_web::middleware::logger=debug`), as the logger
/// was set up when the server started. Off, the middleware is left out altogether: it keeps its
/// format and the request's details for as long as the response body lives, which for a
/// WebSocket is the whole connection (about 0.7 KiB each; see BENCHMARKS.md, "Memory per
/// connection").
fn access_log_enabled() -> bool {
    log::log_enabled!(target: ACCESS_LOG_TARGET, log::Level::Debug)
}

/// The access log, at debug level (`RUST_LOG=actix_web::middleware::logger=debug`).
fn access_log() -> Logger {
    Logger::new(ACCESS_LOG_FORMAT)
        .custom_request_replace("client", |req: &ServiceRequest| {
            rate::peer_ip(req.request()).map_or_else(|| "-".to_owned(), |ip| ip.to_string())
        })
        .custom_request_replace("request", |req: &ServiceRequest| {
            format!("{} {} {:?}", req.method(), req.path(), req.version())
        })
        .custom_request_replace("referer", |req: &ServiceRequest| {
            req.headers()
                .get(actix_web::http::header::REFERER)
                .map_or_else(
                    || "-".to_owned(),
                    |v| {
                        let v = String::from_utf8_lossy(v.as_bytes());
                        let end = v.find(['?', '#']).unwrap_or(v.len());
                        v[..end].to_owned()
                    },
                )
        })
        .log_level(log::Level::Debug)
}

/// Starts serving on `listener`: `configure` adds the service's state and routes, then come the
/// pages (with `index_page` at `/`) and a JSON 404 for everything else. Every request must name
/// a host the settings allow (see [`crate::hosts`]) before any of that sees it. Signals are left
/// to the caller, which stops the server through its handle (see [`crate::shutdown`]).
pub fn serve<F>(
    listener: TcpListener,
    args: &ServerArgs,
    index_page: &'static str,
    configure: F,
) -> std::io::Result<Server>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    serve_with(listener, args, None, index_page, configure)
}

/// [`serve`] for a WebSocket service: besides, every accepted connection gets the client timeout
/// (`--client-timeout-secs`) as its `TCP_USER_TIMEOUT` (Linux), so the kernel drops a connection
/// whose data has stayed unacknowledged that long, a reader that stopped reading included (its
/// window stays zero). That works whatever the session is doing: actix stops polling a session
/// whose socket cannot take more, so neither its heartbeat nor its queue limit can act then.
pub fn serve_ws<F>(
    listener: TcpListener,
    args: &ServerArgs,
    ws: &WsArgs,
    index_page: &'static str,
    configure: F,
) -> std::io::Result<Server>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    serve_with(
        listener,
        args,
        Some(ws.client_timeout()),
        index_page,
        configure,
    )
}

/// Worker threads when `--workers` is not given: one per CPU core but one, at least one.
///
/// A worker reads and writes its share of the connections, but every comment also passes
/// through threads that are not workers before anyone sees it: the store's writer (its commit
/// and fsync), the fan-out's sequencer and the hub, which batches it and hands each worker its
/// share. With a worker on every core, a large room's fan-out keeps every core busy, and those
/// threads wait for a core while comments pile up behind them. Leaving them one core, on the
/// 2-core machines of BENCHMARKS.md, cut the tail latency at saturation and under overload by
/// several times, at the same CPU per delivery or less ("One worker per core but one").
fn default_workers() -> usize {
    workers_for(cores())
}

/// The CPU cores this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// [`default_workers`] on a machine of `cores`.
fn workers_for(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

fn serve_with<F>(
    listener: TcpListener,
    args: &ServerArgs,
    user_timeout: Option<Duration>,
    index_page: &'static str,
    configure: F,
) -> std::io::Result<Server>
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let pages = Pages::new(args.web_dir.clone(), index_page);
    let workers = args.workers.map_or_else(default_workers, NonZeroUsize::get);
    let fanout_helper = args.fanout_helper.unwrap_or(workers < cores());
    log::info!(
        "{workers} worker(s), fan-out helper {}",
        if fanout_helper { "on" } else { "off" }
    );
    let allowed_hosts = web::Data::new(AllowedHosts::from_args(args));
    log::info!("answering to the hosts {}", allowed_hosts.as_ref());
    let trusted_proxies = web::Data::new(TrustedProxies::from_args(args));
    if !trusted_proxies.is_empty() {
        log::info!(
            "clients forwarded by the trusted proxies {} are known by X-Forwarded-For or \
             Forwarded",
            trusted_proxies.as_ref()
        );
    }
    let access_logged = access_log_enabled();
    let app = move || {
        App::new()
            .app_data(allowed_hosts.clone())
            .app_data(trusted_proxies.clone())
            // Innermost of the wraps: a refused host is still logged and gets the headers.
            .wrap(from_fn(hosts::refuse_other_hosts))
            .wrap(Condition::new(access_logged, access_log()))
            .wrap(error::json_error_pages())
            .wrap(headers::security_headers())
            // Outermost: the chain's future, boxed. actix-http keeps the service's future inside
            // each connection's task, which lives as long as the connection; boxed, the task
            // holds a pointer, and the chain's state is freed once the response is ready (for a
            // WebSocket, right after the upgrade; see BENCHMARKS.md, "Memory per connection").
            .wrap_fn(|req, service| Box::pin(service.call(req)))
            .app_data(error::payload_config())
            .app_data(error::query_config())
            .app_data(error::path_config())
            .configure(configure.clone())
            .configure(|cfg| pages.clone().configure(cfg))
            .default_service(web::to(error::not_found))
    };

    // What actix-web's `HttpServer` does, with the one thing it does not offer: requests that
    // ask for an upgrade (WebSockets) go through the same application, and a `101` answer is then
    // served out of actix-http's HTTP/1 dispatcher, without its two 8 KiB buffers per
    // connection and the copy of every frame into one (see `upgrade.rs`). Its defaults are kept:
    // keep-alive, request and disconnect timeouts, the graceful-shutdown signal that closes idle
    // keep-alive connections when the server stops.
    let addr = listener.local_addr()?;
    let builder = Server::build();
    let shutting_down = builder.graceful_shutdown_signal();
    let server = builder
        .workers(workers)
        .shutdown_timeout(args.shutdown_timeout_secs)
        .disable_signals()
        .listen("danmaku-http", listener, move || {
            // Called on each worker, as it starts.
            crate::ws::use_helper(fanout_helper);
            let shutting_down = shutting_down.clone();
            let app = app()
                .into_factory()
                .map_err(|err: actix_web::Error| err.error_response());
            // The connection's settings as `HttpServer` gives them: not TLS, this address.
            // (`__priv_test_new` is how actix-web's own test server builds one.)
            let app = map_config(app, move |()| {
                AppConfig::__priv_test_new(false, addr.to_string(), addr)
            });
            let (app, upgrade) = upgrade::share(app);
            HttpService::build()
                .client_disconnect_timeout(Duration::from_secs(1))
                .graceful_shutdown_signal(move || {
                    let shutting_down = shutting_down.clone();
                    async move { shutting_down.notified().await }
                })
                .local_addr(addr)
                .on_connect_ext(move |connection: &actix_rt::net::TcpStream, _| {
                    prepare(connection, user_timeout);
                })
                .upgrade(upgrade)
                .h1(app)
                .tcp()
        })?
        .run();
    Ok(server)
}

/// Sets up an accepted connection: `TCP_NODELAY`, and the `TCP_USER_TIMEOUT` of a WebSocket
/// service.
///
/// Without `TCP_NODELAY`, Nagle's algorithm holds a small frame back while an earlier one is
/// unacknowledged, and a client acknowledges a lone small frame (a ping, say) only when its
/// delayed-ACK timer fires, 40 ms later on Linux: every few seconds, each viewer would get a
/// comment 40 ms late. Real-time servers turn it off (uWebSockets does). actix-http's
/// `HttpServiceBuilder::tcp_nodelay` does not reach HTTP/1 connections, so it is set here.
fn prepare(stream: &actix_rt::net::TcpStream, user_timeout: Option<Duration>) {
    if let Err(e) = stream.set_nodelay(true) {
        log::warn!("cannot set TCP_NODELAY on a connection: {e}");
    }
    if let Some(timeout) = user_timeout {
        set_user_timeout(stream, timeout);
    }
}

/// Sets `TCP_USER_TIMEOUT` on an accepted connection (a TCP stream; other kinds are left alone).
fn set_user_timeout(stream: &actix_rt::net::TcpStream, timeout: Duration) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
        log::warn!("cannot set TCP_USER_TIMEOUT on a connection: {e}");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        // No such option here: a stalled reader is dropped by its queue limit once it reads.
        let _ = (stream, timeout);
    }
}

/// What `GET /healthz` checks: the service's store. Every service registers one
/// (`cfg.app_data(HealthCheck::new(store, fanout))`) next to its `/healthz` route.
pub struct HealthCheck {
    store: Arc<dyn Store>,
    fanout: Option<crate::fanout::Fanout>,
}

impl HealthCheck {
    /// The check of `store` and of `fanout`'s bus, ready to register as app data.
    pub fn new(store: Arc<dyn Store>, fanout: Option<crate::fanout::Fanout>) -> web::Data<Self> {
        web::Data::new(Self { store, fanout })
    }
}

/// `GET /healthz`: `200 {"status":"ok"}` while the service and its database serve; `503
/// {"status":"unavailable","error":{"code":"unavailable",...}}` while the store cannot (its
/// writer down or failing, or no answer within `DANMAKU_DB_TIMEOUT_MS`), so a load balancer
/// takes the instance out instead of sending it writes that fail; `200 {"status":"degraded",
/// "bus":{"connected":false,...}}` while a clustered instance cannot reach its bus: it still
/// stores and serves its own viewers, so it stays in the balancer, and the operator sees why.
pub async fn health(check: web::Data<HealthCheck>) -> HttpResponse {
    if let Err(e) = check.store.health().await {
        log::warn!("health check: {e}");
        return HttpResponse::ServiceUnavailable().json(Health::unavailable(e.client_error()));
    }
    let mut health = Health::ok();
    if let Some(bus) = check.fanout.as_ref().and_then(|f| f.bus_status()) {
        if !bus.connected {
            health.status = "degraded".into();
        }
        health.bus = serde_json::to_value(bus).ok();
    }
    HttpResponse::Ok().json(health)
}

/// Why a service could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The store the settings name could not be opened.
    #[error("cannot open the store {store} (--store, DANMAKU_STORE): {source}")]
    OpenStore {
        /// The store, as the settings give it (a password redacted).
        store: String,
        /// Why not.
        source: StoreError,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the settings.
        addr: std::net::SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("the server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// Binds `addr`, naming it in the error.
pub fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, ServiceError> {
    TcpListener::bind(addr).map_err(|source| ServiceError::Bind { addr, source })
}

/// What a service's library exports for `main` and the tests: build the server from its settings
/// on an already-bound listener and an opened store ([`open_store`]).
pub type BuildFn<C> = fn(C, TcpListener, Arc<dyn Backend>) -> Result<RunningServer, ServiceError>;

/// A whole service binary: logging, its settings from flags and `DANMAKU_*` variables (a bad
/// value exits with a message naming it), the listener on the configured address, `build`, then
/// running until SIGTERM or SIGINT. The exit status says whether it started and stopped cleanly.
pub async fn main<C: Settings>(info: &ServiceInfo, build: BuildFn<C>) -> std::process::ExitCode {
    crate::init_logging();
    let config: C = crate::config::from_env(info);
    let built = async {
        let listener = bind(config.server().socket_addr())?;
        let store = open_store(config.server()).await?;
        build(config, listener, store)
    };
    run_main(built.await).await
}

/// Opens the store the settings name (`--store`: a SQLite file, its folder created), with the
/// deadline of `DANMAKU_DB_TIMEOUT_MS` on every call, and logs where it is.
pub async fn open_store(args: &ServerArgs) -> Result<Arc<dyn Backend>, ServiceError> {
    match &args.store {
        StoreLocation::Sqlite(path) => {
            let options = SqliteOptions {
                timeout: args.db_timeout(),
                ..SqliteOptions::default()
            };
            let store = SqliteStore::open_with(path, options).map_err(|e| opening(args, e))?;
            log::info!(
                "store: {} (calls time out after {} ms)",
                args.store,
                store.timeout().as_millis()
            );
            Ok(Arc::new(store))
        }
        StoreLocation::Postgres(url) => {
            let options = PgOptions {
                timeout: args.db_timeout(),
                ..PgOptions::default()
            };
            let store = PgStore::connect(url, options)
                .await
                .map_err(|e| opening(args, e))?;
            log::info!(
                "store: {} (calls time out after {} ms)",
                args.store,
                store.timeout().as_millis()
            );
            Ok(Arc::new(store))
        }
    }
}

/// The error of a store that could not be opened, naming the setting to fix.
fn opening(args: &ServerArgs, source: StoreError) -> ServiceError {
    ServiceError::OpenStore {
        store: args.store.to_string(),
        source,
    }
}

/// Runs a freshly built service until it is stopped: logs why it could not start or failed, and
/// turns that into the exit status.
pub async fn run_main(built: Result<RunningServer, ServiceError>) -> std::process::ExitCode {
    let outcome = match built {
        Ok(server) => server.run_until_stopped().await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A hook a service runs when it is told to stop (to wake or close long-lived requests). It may
/// run more than once, so it must be idempotent.
type ShutdownHook = std::sync::Arc<dyn Fn() + Send + Sync>;

/// A bound server, its address, and what to do on shutdown: ready to run.
pub struct RunningServer {
    name: &'static str,
    server: Server,
    addr: std::net::SocketAddr,
    on_shutdown: Option<ShutdownHook>,
}

impl RunningServer {
    /// Wraps a server built by [`serve`] on `listener`'s address, logging where `name` listens.
    pub fn new(name: &'static str, server: Server, listener_addr: std::net::SocketAddr) -> Self {
        log::info!("{name} listening on http://{listener_addr}");
        Self {
            name,
            server,
            addr: listener_addr,
            on_shutdown: None,
        }
    }

    /// Runs `hook` when the service is told to stop, before open requests are drained, and once
    /// more after the server has stopped.
    pub fn on_shutdown(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_shutdown = Some(std::sync::Arc::new(hook));
        self
    }

    /// The bound address (its port is the real one when the settings said 0).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// A handle to stop the server from elsewhere.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Runs until SIGTERM or SIGINT, then runs the shutdown hook and stops gracefully: no new
    /// connections, open requests get the shutdown timeout to finish.
    pub async fn run_until_stopped(self) -> Result<(), ServiceError> {
        let handle = self.server.handle();
        let hook = self.on_shutdown.clone();
        actix_rt::spawn(async move {
            crate::shutdown::signal_received().await;
            if let Some(hook) = hook {
                hook();
            }
            handle.stop(true).await;
        });
        let name = self.name;
        let result = self.run().await;
        log::info!("{name} stopped");
        result
    }

    /// Runs without listening for signals; stop it through [`RunningServer::handle`].
    pub async fn run(self) -> Result<(), ServiceError> {
        let result = self.server.await;
        if let Some(hook) = self.on_shutdown {
            hook();
        }
        Ok(result?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_workers_leave_one_core_to_the_writer_and_the_hub() {
        assert_eq!(workers_for(1), 1, "a single core still gets a worker");
        assert_eq!(workers_for(2), 1);
        assert_eq!(workers_for(8), 7);
    }

    /// An accepted connection on loopback, as the server gets it, and its client.
    async fn accepted() -> (actix_rt::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    #[actix_rt::test]
    async fn an_accepted_connection_sends_at_once_and_a_websocket_one_has_the_user_timeout() {
        let (plain, _client) = accepted().await;
        assert!(!plain.nodelay().unwrap(), "sockets start with Nagle on");
        prepare(&plain, None);
        assert!(plain.nodelay().unwrap(), "TCP_NODELAY is set");

        let (ws, _client) = accepted().await;
        prepare(&ws, Some(Duration::from_secs(15)));
        assert!(ws.nodelay().unwrap());
        #[cfg(any(target_os = "linux", target_os = "android"))]
        assert_eq!(
            socket2::SockRef::from(&ws).tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(15))
        );
    }
}
