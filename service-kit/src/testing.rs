//! Running a service inside a test: the real server on an ephemeral port, in its own thread with
//! its own actix system, exactly as `main` would build it.

use std::net::TcpListener;
use std::sync::mpsc;

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

/// Binds 127.0.0.1 on a free port, builds the service with `build` in a fresh thread and runs it.
/// Panics if the service does not build: a test cannot go on without it.
pub fn spawn<F>(build: F) -> TestServer
where
    F: FnOnce(TcpListener) -> Result<RunningServer, ServiceError> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = build(listener).expect("the service builds");
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
