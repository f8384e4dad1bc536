//! The ws-stream service as it stands: a real server on an ephemeral port answers its health
//! check and its page, and refuses inconsistent settings.

use std::net::TcpListener;

use serde_json::{Value, json};
use ws_stream::{Application, Config};

struct TestApp {
    base: String,
    handle: actix_web::dev::ServerHandle,
    _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // `stop` sends its command at once; the future only waits for completion.
        drop(self.handle.stop(false));
    }
}

fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("svc.db").display().to_string();
    let config = Config::parse_from(["ws-stream", "--db", &db, "--workers", "1"]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let app = Application::build_with_listener(config, listener).unwrap();
            tx.send(app.handle()).unwrap();
            app.run().await.unwrap();
        })
    });
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        handle: rx.recv().unwrap(),
        _dir: dir,
    }
}

#[tokio::test]
async fn health_and_page_are_served() {
    let app = spawn_app();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let health: Value = client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let page = client.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers().contains_key("content-security-policy"));
    assert!(page.text().await.unwrap().contains("<html"));
    let missing = client
        .get(format!("{}/api/none", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[test]
fn a_timeout_shorter_than_the_heartbeat_is_refused_by_name() {
    let err = Config::parse_from([
        "ws-stream",
        "--heartbeat-secs",
        "10",
        "--client-timeout-secs",
        "10",
    ])
    .unwrap_err();
    assert!(err.contains("DANMAKU_CLIENT_TIMEOUT_SECS"), "{err}");
}
