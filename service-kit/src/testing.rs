//! Running a service inside a test: the real server on an ephemeral port, in its own thread with
//! its own actix system, exactly as `main` would build it, on a fresh database
//! ([`TestService`]); or the real binary, for tests that signal or kill it ([`Binary`]), on a
//! fresh database of the backend the test run chose ([`TestStore`]); a
//! WebSocket client ([`WsClient`]) and an HTTP client ([`http_client`]) with timeouts on every
//! receive; a WebSocket driven byte by byte, and the server's memory and sockets seen from
//! outside, for attacks ([`raw`]).
//!
//! Compiled only with the `testing` feature, which only dev-dependencies enable: none of this is
//! in a release binary.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use actix_web::dev::ServerHandle;

use crate::server::{RunningServer, ServiceError};

/// A service running for a test. Dropping it stops the server and waits for its thread, so the
/// database is closed before the test's temporary folder goes.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The bound address.
    pub addr: std::net::SocketAddr,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Binds 127.0.0.1 on a free port, builds the service with `build` (which may open its store
/// first, hence a future) in a fresh thread and runs it. Panics if the service does not build: a
/// test cannot go on without it.
pub fn spawn<F, Fut>(build: F) -> TestServer
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<RunningServer, ServiceError>> + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = build(listener).await.expect("the service builds");
            tx.send(server.handle())
                .expect("the test waits for the handle");
            if let Err(e) = server.run().await {
                log::error!("test server failed: {e}");
            }
        });
    });
    let handle = rx.recv().expect("the service started");
    TestServer {
        base: format!("http://{addr}"),
        addr,
        handle,
        thread: Some(thread),
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // `stop` sends its command at once; the returned future only waits for completion.
        drop(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The real binary, started on a free port against a store, for tests that signal or kill it.
pub struct Binary {
    /// The process.
    pub child: Child,
    /// Every line the process has written to stderr (its log) so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `ws://127.0.0.1:PORT`.
    pub ws_base: String,
}

impl Binary {
    /// Starts the service binary `exe` (a test's `env!("CARGO_BIN_EXE_<name>")`) on port 0
    /// with `--store store` and `args`, and waits until its log names the port it bound.
    ///
    /// `store` is normally a [`TestStore`], so the binary runs on the backend the test run chose
    /// (`DANMAKU_TEST_STORE`), and a restart on the same `TestStore` finds what the previous
    /// process stored; a test about SQLite files themselves passes a file's path instead.
    pub fn start<S: AsRef<OsStr> + ?Sized>(exe: &str, store: &S, args: &[&str]) -> Self {
        Self::start_with_env(exe, store, args, &[])
    }

    /// Like [`Binary::start`], with extra environment variables (say a `RUST_LOG` other than
    /// `info`).
    pub fn start_with_env<S: AsRef<OsStr> + ?Sized>(
        exe: &str,
        store: &S,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(exe)
            .args(["--port", "0", "--shutdown-timeout-secs", "5", "--store"])
            .arg(store.as_ref())
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("DANMAKU_PORT")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Only this thread writes and tests only read, so a poisoned lock still holds
                // whole lines.
                kept.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line.clone());
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(rest.trim().to_owned());
                }
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("[server] {line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server logs its address within 30 s");
        Self {
            child,
            log,
            base: format!("http://{addr}"),
            ws_base: format!("ws://{addr}"),
        }
    }

    /// Sends SIGTERM (through the system's `kill`, to keep the tests free of unsafe code).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL is delivered");
        self.child.wait().expect("the process is reaped");
    }

    /// Waits up to `limit` for the process to exit; its status, or `None` if it did not.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub mod raw;

/// An answer read off a raw socket by [`raw_http`].
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The status line and headers, as sent.
    pub head: String,
    /// The body (as much as `Content-Length` says, or until the server closed).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }

    /// The body as JSON; fails the test when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\n{}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends `request` (the whole request as written on the wire, headers of the test's choosing,
/// such as a `Host` a client library would not let it forge) over a fresh TCP connection to
/// `addr`, and reads the answer: up to its `Content-Length`, until the server closes, or just
/// the head of a `101 Switching Protocols`. `None` when the server closed without answering.
/// Fails the test after 10 s.
pub fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> Option<RawResponse> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the server accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    stream.write_all(request).expect("the request is sent");
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("no answer within 10 s: {e}"),
        };
        received.extend_from_slice(&chunk[..n]);
        let head_end = received.windows(4).position(|w| w == b"\r\n\r\n");
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&received[..end]).into_owned();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("not an HTTP status line: {head}"));
            let mut response = RawResponse {
                status,
                head,
                body: received[end + 4..].to_vec(),
            };
            let length: Option<usize> = response
                .header("content-length")
                .and_then(|v| v.parse().ok());
            let complete = status == 101 || length.is_some_and(|l| response.body.len() >= l);
            if complete || n == 0 {
                if let Some(length) = length {
                    response.body.truncate(length);
                }
                return Some(response);
            }
        } else if n == 0 {
            return None;
        }
    }
}

pub use service::{STORE_VAR, TestService, TestStore, test_store};
pub use ws_client::WsClient;

/// A service under test with its own temporary database, restartable on the same file.
mod service {
    use danmaku_store::testing::TestDatabase;
    use std::net::TcpListener;
    use std::sync::Arc;

    use super::{TestServer, init_test_logging, spawn};
    use crate::config::{ServiceInfo, Settings, parse_from};
    use crate::server::{BuildFn, RunningServer, ServiceError, open_store};
    use futures::future::LocalBoxFuture;

    /// Builds a service from its command line (program name first) on a bound listener, the
    /// way its `main` would: parse the settings, open the store, then `build_with_listener`.
    type Builder = Arc<
        dyn Fn(
                Vec<String>,
                TcpListener,
            ) -> LocalBoxFuture<'static, Result<RunningServer, ServiceError>>
            + Send
            + Sync,
    >;

    /// A running service on a fresh database in a temporary folder. Dropping it stops the
    /// server, then removes the folder.
    pub struct TestService {
        /// `http://127.0.0.1:PORT`.
        pub base: String,
        /// `ws://127.0.0.1:PORT`.
        pub ws_base: String,
        /// The store it runs on, as given to `--store`: a SQLite file in a temporary folder, or,
        /// with `DANMAKU_TEST_STORE=postgres`, a fresh PostgreSQL database (see [`test_store`]).
        pub store: String,
        /// The bound address.
        pub addr: std::net::SocketAddr,
        name: String,
        builder: Builder,
        server: Option<TestServer>,
        /// Dropped after the server: the SQLite file's folder or the PostgreSQL database.
        _fresh: TestStore,
    }

    /// A fresh store for a test that starts services itself (the real binary, see
    /// [`super::Binary`]), perhaps several times over: a SQLite file in a temporary folder, or,
    /// with [`STORE_VAR`]`=postgres`, a fresh PostgreSQL database (see [`test_store`]). Every
    /// process started on it sees what the previous ones stored. Dropping it removes the folder
    /// or drops the database (ending any session still open), so declare it before the
    /// processes that use it: they are then stopped first.
    pub struct TestStore {
        /// The `--store` value.
        url: String,
        /// The PostgreSQL database, if the test runs on one.
        database: Option<TestDatabase>,
        _dir: tempfile::TempDir,
    }

    impl TestStore {
        /// A fresh store for a service named `name` (the SQLite file's name).
        pub fn new(name: &str) -> Self {
            let dir = tempfile::tempdir().expect("a temporary folder");
            let (url, database) = test_store(dir.path(), name);
            Self {
                url,
                database,
                _dir: dir,
            }
        }

        /// The `--store` value: a SQLite file's path or a `postgres://` URL.
        pub fn url(&self) -> &str {
            &self.url
        }

        /// Whether it is a PostgreSQL database.
        pub fn is_postgres(&self) -> bool {
            self.database.is_some()
        }
    }

    impl AsRef<std::ffi::OsStr> for TestStore {
        fn as_ref(&self) -> &std::ffi::OsStr {
            self.url.as_ref()
        }
    }

    /// The variable that picks the backend the services' tests run on: `postgres` for a fresh
    /// PostgreSQL database per [`TestService`] and [`TestStore`] (on the server `DANMAKU_TEST_POSTGRES` names),
    /// anything else or nothing for a SQLite file. CI runs the services' tests both ways.
    pub const STORE_VAR: &str = "DANMAKU_TEST_STORE";

    /// The `--store` of a test service named `name`: a SQLite file in `dir`, or a fresh
    /// PostgreSQL database (kept alive by the returned guard) when [`STORE_VAR`] says so.
    pub fn test_store(dir: &std::path::Path, name: &str) -> (String, Option<TestDatabase>) {
        if std::env::var(STORE_VAR).is_ok_and(|v| v == "postgres") {
            // Made on a thread of its own: the caller may be inside an async test.
            let database = std::thread::spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(danmaku_store::testing::postgres())
            })
            .join()
            .expect("the test database is made");
            let database = database.unwrap_or_else(|| {
                panic!("{STORE_VAR}=postgres needs DANMAKU_TEST_POSTGRES (a server's URL)")
            });
            return (database.url().to_owned(), Some(database));
        }
        let db = dir.join(format!("{name}.db"));
        (db.display().to_string(), None)
    }

    impl TestService {
        /// Starts the service `info` describes with `args` after the test defaults (a fresh
        /// `--store`, two workers, a one-second shutdown): its settings are parsed as its `main`
        /// parses them, then `build` (its `build_with_listener`) makes the server. Logs go to
        /// stderr when `TEST_LOG` is set.
        pub fn start<C: Settings + 'static>(
            info: &'static ServiceInfo,
            build: BuildFn<C>,
            args: &[&str],
        ) -> Self {
            init_test_logging();
            let fresh = TestStore::new(info.name);
            let builder: Builder = Arc::new(move |argv, listener| {
                let config: C = parse_from(info, argv).expect("valid test settings");
                Box::pin(async move {
                    let store = open_store(config.server()).await?;
                    build(config, listener, store)
                })
            });
            let mut service = Self {
                base: String::new(),
                ws_base: String::new(),
                store: fresh.url().to_owned(),
                addr: ([127, 0, 0, 1], 0).into(),
                name: info.name.to_owned(),
                builder,
                server: None,
                _fresh: fresh,
            };
            service.restart(args);
            service
        }

        /// Stops the server (if running) and starts a new one with `args` on the same database
        /// (on a new port).
        pub fn restart(&mut self, args: &[&str]) {
            drop(self.server.take());
            let mut argv = vec![
                self.name.clone(),
                "--store".to_owned(),
                self.store.clone(),
                "--workers".to_owned(),
                "2".to_owned(),
                "--shutdown-timeout-secs".to_owned(),
                "1".to_owned(),
            ];
            argv.extend(args.iter().map(|a| a.to_string()));
            let builder = self.builder.clone();
            let server = spawn(move |listener| builder(argv, listener));
            self.base = server.base.clone();
            self.ws_base = server.base.replacen("http://", "ws://", 1);
            self.addr = server.addr;
            self.server = Some(server);
        }
    }

    impl Drop for TestService {
        fn drop(&mut self) {
            drop(self.server.take());
        }
    }
}

/// Logs from services under test go to stderr only when `TEST_LOG` is set (once per test
/// binary: the logger is process-wide).
pub fn init_test_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("TEST_LOG").is_some() {
        ONCE.call_once(crate::init_logging);
    }
}

/// Per-client budgets so large that no test reaches them, for the tests that are not about
/// them (every test client is one address, 127.0.0.1). Flags every service takes.
pub const RELAXED: &[&str] = &[
    "--rate-per-sec",
    "100000",
    "--rate-burst",
    "100000",
    "--read-rows-per-sec",
    "1000000000",
    "--read-rows-burst",
    "1000000000",
];

/// GETs `url` and reads the answer as JSON; fails the test when either fails.
pub async fn get_json(url: &str) -> serde_json::Value {
    http_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// Asks `url` (GET, JSON) again and again until `done` accepts the answer, and returns it: a
/// test waits for an effect this way instead of sleeping. Fails the test after 10 s, saying it
/// waited for `what`.
pub async fn wait_for_json(
    url: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get_json(url).await;
        if done(&answer) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 10 s for {what}; the last answer was {answer}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks what every service serves besides its API: `GET /healthz` is `{"status": "ok"}`, `/`
/// is its page with a Content-Security-Policy, and an unknown route is a JSON `404 not_found`.
pub async fn assert_serves_health_and_page(base: &str) {
    let client = http_client();
    let health = get_json(&format!("{base}/healthz")).await;
    assert_eq!(health, serde_json::json!({"status": "ok"}));
    let page = client.get(format!("{base}/")).send().await.expect("a page");
    assert_eq!(page.status(), 200);
    assert!(page.headers().contains_key("content-security-policy"));
    assert!(page.text().await.expect("a body").contains("<html"));
    let missing = client
        .get(format!("{base}/api/none"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "not_found");
}

/// Checks that a WebSocket service refuses a client timeout not longer than its heartbeat, and
/// that the message names the variable to fix.
pub fn assert_timeout_must_exceed_heartbeat(info: &crate::config::ServiceInfo) {
    let err = crate::config::parse_from::<crate::config::WsServiceConfig, _, _>(
        info,
        [
            info.name,
            "--heartbeat-secs",
            "10",
            "--client-timeout-secs",
            "10",
        ],
    )
    .expect_err("a timeout equal to the heartbeat is refused");
    assert!(
        err.to_string().contains("DANMAKU_CLIENT_TIMEOUT_SECS"),
        "{err}"
    );
}

/// An HTTP client for tests: its own connection pool, and a timeout on every request.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("an HTTP client")
}

/// A WebSocket client for tests: every receive has a timeout, and JSON frames come back parsed.
mod ws_client {
    use std::time::Duration;

    use futures::{SinkExt, StreamExt};
    use serde_json::Value;
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

    /// How long a receive waits before the test fails.
    pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

    /// One WebSocket connection of a test.
    pub struct WsClient {
        /// The raw stream, for tests that need frames the helpers do not cover.
        pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    }

    impl WsClient {
        /// Connects to `url` (`ws://...`); panics if the server refuses.
        pub async fn connect(url: &str) -> Self {
            Self::try_connect(url, None)
                .await
                .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
        }

        /// Connects with an `Origin` header when given; the error when the server refuses.
        pub async fn try_connect(
            url: &str,
            origin: Option<&str>,
        ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
            let origin = origin.map(|origin| ("origin", origin));
            Self::try_connect_with_headers(url, origin.as_slice()).await
        }

        /// Connects with these extra headers (say, the `X-Forwarded-For` a proxy would add);
        /// the error when the server refuses.
        pub async fn try_connect_with_headers(
            url: &str,
            headers: &[(&'static str, &str)],
        ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
            let mut request = url.into_client_request()?;
            for (name, value) in headers {
                request
                    .headers_mut()
                    .append(*name, value.parse().expect("a valid header value"));
            }
            let (stream, _response) = tokio_tungstenite::connect_async(request).await?;
            Ok(Self { stream })
        }

        /// Wraps a stream the test set up itself (say, over a socket with a tiny buffer).
        pub fn from_stream(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
            Self { stream }
        }

        /// Sends a JSON frame.
        pub async fn send_json(&mut self, value: &Value) {
            self.send(Message::text(value.to_string())).await;
        }

        /// Sends any message.
        pub async fn send(&mut self, message: Message) {
            self.stream.send(message).await.expect("the frame is sent");
        }

        /// The next message that is not a ping or pong, or `None` when the connection ended.
        /// Panics after [`RECEIVE_TIMEOUT`].
        pub async fn next_message(&mut self) -> Option<Message> {
            // One deadline for the whole wait: the server's pings must not keep it alive.
            let deadline = tokio::time::Instant::now() + RECEIVE_TIMEOUT;
            loop {
                let next = tokio::time::timeout_at(deadline, self.stream.next())
                    .await
                    .expect("a message within the receive timeout");
                match next {
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(message)) => return Some(message),
                    Some(Err(_)) | None => return None,
                }
            }
        }

        /// The next JSON frame. Panics on a timeout, a non-text frame or a closed connection.
        pub async fn recv_json(&mut self) -> Value {
            match self.next_message().await {
                Some(Message::Text(text)) => {
                    serde_json::from_str(&text).expect("the server sends JSON")
                }
                other => panic!("expected a JSON frame, got {other:?}"),
            }
        }

        /// The next JSON frame whose `type` is `kind`, skipping others (such as `viewers`).
        pub async fn recv_type(&mut self, kind: &str) -> Value {
            loop {
                let frame = self.recv_json().await;
                if frame["type"] == kind {
                    return frame;
                }
            }
        }

        /// Reads until the server closes; its close frame (code and reason), skipping whatever
        /// comes before it. `None` when the connection ended without a close frame.
        pub async fn recv_close(&mut self) -> Option<CloseFrame> {
            loop {
                match self.next_message().await {
                    Some(Message::Close(frame)) => return frame,
                    Some(_) => continue,
                    None => return None,
                }
            }
        }

        /// Every JSON frame that arrives within `window` (pings skipped), for asserting what did
        /// and did not come.
        pub async fn drain_for(&mut self, window: Duration) -> Vec<Value> {
            let deadline = tokio::time::Instant::now() + window;
            let mut frames = Vec::new();
            loop {
                match tokio::time::timeout_at(deadline, self.stream.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        frames.push(serde_json::from_str(&text).expect("the server sends JSON"))
                    }
                    Ok(Some(Ok(_))) => continue,
                    Err(_) | Ok(_) => return frames,
                }
            }
        }

        /// Whether nothing but pings arrives for `quiet` (for asserting that a frame was not
        /// delivered). A closed connection counts as quiet.
        pub async fn is_quiet_for(&mut self, quiet: Duration) -> bool {
            let deadline = tokio::time::Instant::now() + quiet;
            loop {
                match tokio::time::timeout_at(deadline, self.stream.next()).await {
                    Err(_) => return true,
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                    Ok(Some(Ok(_))) => return false,
                    Ok(_) => return true,
                }
            }
        }
    }
}

/// The variable naming the Redis server the cluster tests share (`redis://127.0.0.1:6379/`).
pub const REDIS_VAR: &str = "DANMAKU_TEST_REDIS";

/// Whether this run must not skip tests for want of a server (`CI=true`).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci == "true")
}

/// Says on stderr that the current test skipped, and why.
fn skipped(why: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    eprintln!("{test}: skipped: {why}");
}

/// The bus settings for instances that must act as one in a test: `--bus` from [`REDIS_VAR`]
/// and a pub/sub channel of this test's own (tests running at once share the server). `None`
/// when the variable is not set (the test should return; it was told why on stderr); panics
/// under `CI=true`, so a CI run cannot pass without having tested the cluster.
pub fn cluster_bus() -> Option<Vec<String>> {
    match std::env::var(REDIS_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(bus_args(&url)),
        _ => {
            assert!(
                !in_ci(),
                "{REDIS_VAR} is not set and CI=true: CI must run the cluster tests \
                 (set it to a Redis server's URL, e.g. redis://127.0.0.1:6379/)"
            );
            skipped(&format!(
                "{REDIS_VAR} is not set (e.g. redis://127.0.0.1:6379/)"
            ));
            None
        }
    }
}

/// `--bus url --bus-channel <fresh>`.
fn bus_args(url: &str) -> Vec<String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let channel = format!(
        "danmaku.test.{}.{}.{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    vec!["--bus".into(), url.into(), "--bus-channel".into(), channel]
}

/// A Redis server of the test's own, on a port of its own, that the test may stop and start
/// again (the machine's Redis stays untouched). It keeps nothing on disk.
pub struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts `redis-server` on a free port and waits until it answers; `None` when the binary
    /// is not installed (told on stderr), a panic under `CI=true`.
    pub fn start() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                !in_ci(),
                "redis-server is not installed and CI=true (.ci/run installs Debian's)"
            );
            skipped("redis-server is not installed");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self { port, child: None };
        redis.resume();
        Some(redis)
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The bus settings of instances on this server (see [`cluster_bus`]).
    pub fn bus_args(&self) -> Vec<String> {
        bus_args(&self.url())
    }

    /// Kills the server (SIGKILL: it goes away as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, and waits until it answers.
    pub fn resume(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not answer on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits (up to 10 s) until every service at `bases` (`http://127.0.0.1:PORT`) reports its bus
/// connected on `/healthz`.
pub async fn wait_for_bus(bases: &[&str]) {
    for base in bases {
        wait_for_json(&format!("{base}/healthz"), "the bus connected", |health| {
            health["bus"]["connected"] == true
        })
        .await;
    }
}
