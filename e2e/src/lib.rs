//! The pages end to end: the three services on ephemeral ports, headless Chromium driven through
//! WebDriver (Debian's `chromium` and `chromium-driver`), real pages, real clicks and typing.
//!
//! Every test starts its own `chromedriver` and its own browser sessions, and stops them when it
//! ends. Where the browser is missing, a test says so and passes as skipped, except under
//! `CI=true`, where a missing browser fails the run. `DANMAKU_CHROMIUM` and
//! `DANMAKU_CHROMEDRIVER` point at other executables.
//!
//! Screenshots for people to look at go to `target/screenshots/`.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use service_kit::testing::{RELAXED, TestService};

/// How long a condition on a page may take before the test fails.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the browser and its driver are.
struct Executables {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

fn executables() -> Result<Executables, String> {
    Ok(Executables {
        chromium: find_executable("DANMAKU_CHROMIUM", &["chromium", "chromium-browser"])?,
        chromedriver: find_executable("DANMAKU_CHROMEDRIVER", &["chromedriver"])?,
    })
}

/// The executable named by `variable`, or the first of `names` found on the `PATH`.
fn find_executable(variable: &str, names: &[&str]) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{variable} names {}, which does not exist",
                path.display()
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "{} is not on the PATH (install Debian's chromium and chromium-driver, or set \
                 {variable})",
                names.join(" or ")
            )
        })
}

/// A running `chromedriver`, stopped when dropped.
pub struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
}

impl Driver {
    /// Starts `chromedriver`, or `None` (after saying why) when there is no browser here and
    /// this is not CI. Under `CI=true` a missing browser panics: CI must run these tests.
    pub async fn start(test: &str) -> Option<Self> {
        let executables = match executables() {
            Ok(found) => found,
            Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("{test}: the browser tests must run under CI, but {why}")
            }
            Err(why) => {
                eprintln!("{test}: SKIPPED: {why}");
                return None;
            }
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // Its own process group, so that dropping the driver also ends the browsers it started,
        // even those of a test that failed before closing its sessions.
        let child = Command::new(&executables.chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium: executables.chromium,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(driver)
    }

    /// A new browser (its own profile, so its own storage) with a window of this size.
    pub async fn browser(&self, width: u32, height: u32) -> Client {
        let mut capabilities = Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": self.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--autoplay-policy=no-user-gesture-required",
                    "--mute-audio",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every browser it launched (through the system's
        // `kill`, to keep the tests free of unsafe code).
        let group = format!("-{}", self.child.id());
        let killed = Command::new("kill")
            .args(["-KILL", "--", &group])
            .status()
            .is_ok_and(|status| status.success());
        if !killed {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The three services, each on its own port with its own database.
pub struct Services {
    /// `http-danmaku`.
    pub http: TestService,
    /// `ws-video`.
    pub video: TestService,
    /// `ws-stream`.
    pub live: TestService,
}

/// The operator's admin token of the services [`start_services`] starts.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

/// Starts the three services with relaxed rate limits and [`ADMIN_TOKEN`], the live service
/// sending recordings to this video service.
pub fn start_services() -> Services {
    let mut args = RELAXED.to_vec();
    args.extend(["--admin-token", ADMIN_TOKEN]);
    let video = TestService::start(
        &ws_video::config::INFO,
        ws_video::build_with_listener,
        &args,
    );
    let mut live_args = args.clone();
    live_args.extend(["--video-url", video.base.as_str()]);
    let live = TestService::start(
        &ws_stream::config::INFO,
        ws_stream::build_with_listener,
        &live_args,
    );
    Services {
        http: TestService::start(
            &http_danmaku::config::INFO,
            http_danmaku::build_with_listener,
            &args,
        ),
        video,
        live,
    }
}

/// Runs `script` (a function body that `return`s a value) in the page.
pub async fn eval(client: &Client, script: &str) -> Value {
    client
        .execute(script, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// Waits until `condition` (a JavaScript expression) is truthy in the page; its value then.
/// Fails the test after [`PAGE_TIMEOUT`], naming `what`.
pub async fn wait_for(client: &Client, condition: &str, what: &str) -> Value {
    let script = format!("return ({condition});");
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        let value = client.execute(&script, Vec::new()).await;
        match value {
            Ok(v) if is_truthy(&v) => return v,
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(v) => panic!(
                "timed out waiting for {what}: {condition} is {v}\npage: {}",
                page_text(client).await
            ),
            Err(e) => panic!(
                "timed out waiting for {what}: {e}\npage: {}",
                page_text(client).await
            ),
        }
    }
}

/// The page's visible text, for a failure message.
async fn page_text(client: &Client) -> String {
    client
        .execute("return document.body.innerText;", Vec::new())
        .await
        .map_or_else(
            |e| format!("(unreadable: {e})"),
            |v| v.as_str().unwrap_or_default().to_owned(),
        )
}

fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// The text of every element matching `selector`, in document order.
pub async fn texts(client: &Client, selector: &str) -> Vec<String> {
    let script = format!(
        "return [...document.querySelectorAll({})].map(e => e.textContent);",
        json!(selector)
    );
    serde_json::from_value(eval(client, &script).await).expect("a list of strings")
}

/// Types `text` into the field `selector` (replacing what is there).
pub async fn fill(client: &Client, selector: &str, text: &str) {
    let field = client
        .find(fantoccini::Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("no {selector}: {e}"));
    field.clear().await.expect("the field clears");
    field.send_keys(text).await.expect("typing works");
}

/// Clicks the element `selector`.
pub async fn click(client: &Client, selector: &str) {
    client
        .find(fantoccini::Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("no {selector}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {selector}: {e}"));
}

/// The folder screenshots go to: `target/screenshots` of this workspace.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is inside the workspace")
        .join("target/screenshots")
}

/// Saves a screenshot of the page as `target/screenshots/{name}.png`.
pub async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.expect("a screenshot");
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).expect("the screenshot folder");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).expect("the screenshot is written");
    path
}

/// A JavaScript string literal for `text`.
pub fn js(text: &str) -> String {
    json!(text).to_string()
}

/// A JavaScript condition: some element matching `selector` contains `text`.
pub fn has_text(selector: &str, text: &str) -> String {
    format!(
        "[...document.querySelectorAll({})].some(e => e.textContent.includes({}))",
        js(selector),
        js(text)
    )
}

/// Sets this page's name on the live page and waits for the welcome under it.
pub async fn live_as(client: &Client, base: &str, room: &str, name: &str) {
    client.goto(&format!("{base}/?room={room}")).await.unwrap();
    wait_for(
        client,
        "document.getElementById('status').textContent.length > 0",
        "the page to start",
    )
    .await;
    fill(client, "#name", name).await;
    eval(
        client,
        "document.getElementById('name-form').requestSubmit(); return true;",
    )
    .await;
    // The status line names the connection's name once the server welcomed it.
    wait_for(
        client,
        &format!(
            "document.getElementById('status').textContent.includes(' as ' + {})",
            js(name)
        ),
        "the welcome under the new name",
    )
    .await;
}

/// Opens the live service's host page at `base` in `host`, creates a room there (with `title`
/// when given) and returns the room's id once the page shows its share link.
pub async fn create_room_on_host_page(host: &Client, base: &str, title: Option<&str>) -> String {
    host.goto(&format!("{base}/host.html"))
        .await
        .expect("the host page opens");
    if let Some(title) = title {
        fill(host, "#title", title).await;
    }
    click(host, "#create").await;
    wait_for(
        host,
        "(h => h.includes('room=') && new URL(h).searchParams.get('room'))\
         (document.getElementById('share').href)",
        "the share link",
    )
    .await
    .as_str()
    .expect("a room id")
    .to_owned()
}
