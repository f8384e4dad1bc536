//! Test helpers: the three services on ephemeral ports with fresh databases, the `danmaku`
//! binary as a child process with a timeout on every wait, and the services' binaries for tests
//! that kill the server.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;
pub use service_kit::testing::RELAXED;
use service_kit::testing::TestService;

/// How long any one wait of a test may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// The HTTP service on a fresh database.
pub fn spawn_http() -> TestService {
    TestService::start(
        &http_danmaku::config::INFO,
        http_danmaku::build_with_listener,
        RELAXED,
    )
}

/// The video service on a fresh database.
pub fn spawn_video() -> TestService {
    TestService::start(
        &ws_video::config::INFO,
        ws_video::build_with_listener,
        RELAXED,
    )
}

/// The live service on a fresh database.
pub fn spawn_live() -> TestService {
    TestService::start(
        &ws_stream::config::INFO,
        ws_stream::build_with_listener,
        RELAXED,
    )
}

/// The `danmaku` binary with `args`, logs of started services off.
pub fn danmaku(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_danmaku"));
    command.args(args).env_remove("DANMAKU_AUTHOR");
    command
}

/// Runs `danmaku args` to its end, failing the test if it takes longer than `limit`.
pub fn run_danmaku(args: &[&str], limit: Duration) -> Output {
    let mut child = danmaku(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("danmaku starts");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_or_kill(&mut child, limit)
        .unwrap_or_else(|| panic!("danmaku {args:?} did not finish within {limit:?}"));
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Waits up to `limit` for `child`; kills it and returns `None` if it is still running.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A `danmaku tail` running in the background: its stdout lines and stderr lines as they come.
pub struct Tail {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_lines: mpsc::Receiver<String>,
}

impl Tail {
    /// Starts `danmaku tail args` and waits until it says it is following.
    pub fn start(args: &[&str]) -> Self {
        let mut full = vec!["tail"];
        full.extend_from_slice(args);
        let mut child = danmaku(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("danmaku tail starts");
        let stdout = lines(child.stdout.take().expect("piped stdout"));
        let stderr_lines = lines(child.stderr.take().expect("piped stderr"));
        let mut tail = Self {
            child,
            stdout,
            stderr: Arc::default(),
            stderr_lines,
        };
        tail.wait_for_stderr("following");
        tail
    }

    /// Waits for a stderr line containing `needle`; panics after [`WAIT`].
    pub fn wait_for_stderr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.lock().unwrap().push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "tail never said {needle:?} (exit status {:?}); stderr so far: {:?}",
                    self.child.try_wait(),
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// The next stdout line; panics after [`WAIT`].
    pub fn next_line(&mut self) -> String {
        self.stdout
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("tail printed nothing within {WAIT:?}"))
    }

    /// The next stdout line as JSON.
    pub fn next_json(&mut self) -> Value {
        let line = self.next_line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Waits for the process to exit by itself (after `--count`); its status.
    pub fn wait(mut self) -> std::process::ExitStatus {
        wait_or_kill(&mut self.child, WAIT).expect("tail exits after --count comments")
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            if tx.send(text).is_err() {
                return;
            }
        }
    });
    rx
}

/// Parses a command's stdout as JSON, showing both streams when it is not.
pub fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The JSON report of a command that must have succeeded; the report shows when it did not.
pub fn success_json(output: &Output) -> Value {
    let report = stdout_json(output);
    assert!(output.status.success(), "{report:#}");
    report
}

/// The path of a service binary in the same target folder as `danmaku`, building it first if
/// it is not there (`cargo test -p danmaku-cli` alone builds only this package's binary;
/// `cargo test --workspace` builds them all).
pub fn service_binary(name: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_danmaku"))
        .parent()
        .expect("the binary has a folder")
        .to_path_buf();
    let exe = dir.join(name);
    if !exe.is_file() {
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "-p", name, "--bin", name])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building {name} failed");
    }
    exe
}

/// A TCP proxy in front of a service whose connections a test can cut, and keep cut, to
/// simulate a network drop without restarting the server (which would change its port).
pub struct CutProxy {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    paused: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    _thread: std::thread::JoinHandle<()>,
}

impl CutProxy {
    /// Proxies a free local port to `upstream`.
    pub fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("bound");
        let paused = Arc::new(AtomicBool::new(false));
        let (cut, cut_rx) = tokio::sync::watch::channel(0u64);
        let accept_paused = paused.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        return;
                    };
                    if accept_paused.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let mut cut_rx = cut_rx.clone();
                    cut_rx.borrow_and_update();
                    tokio::spawn(async move {
                        let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut_rx.changed() => {}
                        }
                    });
                }
            });
        });
        Self {
            addr,
            paused,
            cut,
            _thread: thread,
        }
    }

    /// Drops every proxied connection and refuses new ones until [`CutProxy::resume`].
    pub fn cut(&self) {
        self.paused.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
    }

    /// Accepts connections again.
    pub fn resume(&self) {
        self.paused
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
