//! A real headless Chromium for the UI's tests, driven over WebDriver (fantoccini) through
//! Debian's `chromedriver`. Each test gets its own chromedriver on a free port and a fresh
//! profile directory; [`with_browser`] runs a test body and, when it fails, saves a screenshot
//! of the page (the path is printed) before the failure propagates.
//!
//! `scripts/services.sh` installs `chromium` and `chromium-driver`. When they are missing the
//! tests fail — they never skip — with a message saying so.

#![allow(dead_code)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{Value, json};

use crate::testenv::free_port;

/// How long the waits of a test give the page, by default.
pub const WAIT: Duration = Duration::from_secs(20);

/// Chromium's flags: headless, no sandbox (tests run as root in containers), and nothing that
/// phones home or syncs.
const CHROMIUM_FLAGS: [&str; 10] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--window-size=1280,1000",
];

/// The first executable named one of `names` on the `PATH`.
fn find_executable(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A browser session and the chromedriver behind it (killed when the last clone is dropped).
#[derive(Clone)]
pub struct Browser {
    pub client: Client,
    base_url: String,
    _driver: Arc<Driver>,
}

struct Driver {
    process: std::sync::Mutex<Option<tokio::process::Child>>,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(mut process) = self.process.lock()
            && let Some(child) = process.as_mut()
        {
            let _ = child.start_kill();
        }
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium pointed at `base_url`.
    pub async fn start(base_url: &str) -> Browser {
        let chromium = find_executable(&["chromium", "chromium-browser", "google-chrome"]).expect(
            "chromium is not installed: run scripts/services.sh (it installs chromium and chromium-driver)",
        );
        let chromedriver = find_executable(&["chromedriver"])
            .expect("chromedriver is not installed: run scripts/services.sh (it installs chromium-driver)");
        let profile = tempfile::tempdir().expect("a profile dir");
        let port = free_port();
        let process = tokio::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let driver = Arc::new(Driver {
            process: std::sync::Mutex::new(Some(process)),
            _profile: profile,
        });
        let webdriver = format!("http://127.0.0.1:{port}");
        wait_until_ready(&webdriver).await;

        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", driver._profile.path().display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": chromium.display().to_string(), "args": args }),
        );
        let client = ClientBuilder::rustls()
            .expect("a rustls WebDriver client")
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .unwrap_or_else(|e| panic!("starting a Chromium session through chromedriver: {e}"));
        Browser {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            _driver: driver,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&self.url(path))
            .await
            .unwrap_or_else(|e| panic!("opening {path}: {e}"));
    }

    /// The path (and query) of the current page.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("the current url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Logs in through the login page (from wherever the browser is) and waits for the page
    /// it leads to.
    pub async fn login(&self, username: &str, password: &str) {
        if !self.path().await.starts_with("/login") {
            self.goto("/login").await;
        }
        self.fill("#login-username", username).await;
        self.fill("#login-password", password).await;
        self.click("form[action='/login'] button[type=submit]").await;
        self.wait_until("the login to lead away from /login", || async {
            !self.path().await.starts_with("/login")
        })
        .await;
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    pub async fn exists(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
            .is_empty()
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |all| all.len())
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_default()
    }

    /// The visible text of every element matching `css`.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await.unwrap_or_default() {
            texts.push(element.text().await.unwrap_or_default());
        }
        texts
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let element = self.find(css).await;
        element
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clearing {css}: {e}"));
        element
            .send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Runs a script in the page and returns its result.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("running {script:?}: {e}"))
    }

    /// Marks the loaded page; [`Browser::assert_not_reloaded`] then proves that what changed
    /// since came through the live script, not a navigation.
    pub async fn mark_page(&self) {
        self.eval("window.__dwTestMark = 'still-here'; return true;")
            .await;
    }

    pub async fn assert_not_reloaded(&self) {
        let mark = self.eval("return window.__dwTestMark || null;").await;
        assert_eq!(mark, json!("still-here"), "the page was reloaded");
    }

    /// Waits until the live script says it is connected.
    pub async fn wait_live(&self) {
        self.wait_until("the live stream to connect", || async {
            self.eval("var s = document.getElementById('live-status'); return s ? s.getAttribute('data-state') : null;")
                .await
                == json!("live")
        })
        .await;
    }

    /// Polls `condition` until it holds or [`WAIT`] passes (then the test fails, naming `what`).
    pub async fn wait_until<F, Fut>(&self, what: &str, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if condition().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what} (page {})",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until an element matching `css` shows `needle` in its text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) {
        self.wait_until(&format!("{css} to show {needle:?}"), || async {
            self.texts(css).await.iter().any(|t| t.contains(needle))
        })
        .await;
    }

    pub async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let png = self.client.screenshot().await.map_err(|e| e.to_string())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(path, png).map_err(|e| e.to_string())
    }

    /// Resizes the window (phone-width checks, screenshots).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .unwrap_or_else(|e| panic!("resizing the window: {e}"));
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

async fn wait_until_ready(webdriver: &str) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = match client.get(format!("{webdriver}/status")).send().await {
            Ok(response) => response
                .json::<Value>()
                .await
                .is_ok_and(|status| status["value"]["ready"] == json!(true)),
            Err(_) => false,
        };
        if ready {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not answer on {webdriver} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where a failed test's screenshot goes: the test target's scratch dir.
pub fn failure_screenshot_path(test: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("ui-failures")
        .join(format!("{test}.png"))
}

/// Runs `body` with a fresh browser on `base_url`. When it fails, the page it was on is saved
/// as a screenshot (the path is printed) before the failure goes on.
pub async fn with_browser<F, Fut>(base_url: &str, test: &str, body: F)
where
    F: FnOnce(Browser) -> Fut,
    Fut: Future<Output = ()>,
{
    let browser = Browser::start(base_url).await;
    let outcome = AssertUnwindSafe(body(browser.clone())).catch_unwind().await;
    if let Err(panic) = outcome {
        let path = failure_screenshot_path(test);
        match browser.screenshot(&path).await {
            Ok(()) => eprintln!(
                "ui test {test} failed; screenshot of the page: {}",
                path.display()
            ),
            Err(e) => eprintln!("ui test {test} failed; no screenshot: {e}"),
        }
        browser.close().await;
        std::panic::resume_unwind(panic);
    }
    browser.close().await;
}
