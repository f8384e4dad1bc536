//! The `--store` setting against the real binary: a PostgreSQL server that cannot be reached stops
//! the start with a message naming the setting, and the password in the URL is never printed.

use std::process::Command;
use std::time::Duration;

#[test]
fn an_unreachable_postgres_store_stops_the_start_naming_the_setting_and_hiding_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_http-danmaku"))
        .args(["--port", "0", "--db-timeout-ms", "2000", "--store"])
        // Port 1: nothing listens there.
        .arg("postgres://ann:hunter2@127.0.0.1:1/danmaku")
        .current_dir(dir.path())
        .env("RUST_LOG", "debug")
        .env_remove("DANMAKU_STORE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the service kept running without its store"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!status.success(), "it must not start: {log}");
    assert!(log.contains("DANMAKU_STORE"), "names the setting: {log}");
    assert!(
        log.contains("postgres://ann:***@127.0.0.1:1/danmaku"),
        "{log}"
    );
    assert!(!log.contains("hunter2"), "the password leaked: {log}");
    assert!(
        !dir.path().join("data").exists(),
        "no SQLite file was made instead"
    );
}
