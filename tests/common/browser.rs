//! A real headless browser for the pages' tests: Debian's Chromium driven by its ChromeDriver
//! over the W3C WebDriver protocol (plain JSON over HTTP on 127.0.0.1). Screenshots go to
//! `artefact_dir()`, which CI lists.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where the screenshots are kept.
pub fn artefact_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    profile: PathBuf,
}

/// A port nothing listens on now, on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Browser {
    pub async fn start() -> Browser {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "the browser tests need Debian's chromium and chromium-driver \
             (apt-get install chromium chromium-driver; bash .ci/run installs them)"
        );
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let t0 = Instant::now();
        loop {
            let ready = http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "chromedriver not up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile =
            std::env::temp_dir().join(format!("ghost-chromium-{:08x}", rand::random::<u32>()));
        // The flags keep Chromium off the network: no background fetches, updates or sync.
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
            profile,
        };
        let created = browser.call("POST", "/session", Some(caps)).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.try_call(method, path, body).await {
            Ok(value) => value,
            Err(error) => panic!("webdriver {method} {path}: {error}"),
        }
    }

    /// The answer's value, or the error it carried (e.g. "no such element").
    async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "POST" => self
                .http
                .post(&url)
                .json(&body.unwrap_or_else(|| json!({}))),
            "DELETE" => self.http.delete(&url),
            _ => self.http.get(&url),
        };
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value["value"].clone())
        } else {
            Err(format!("{status} {value}"))
        }
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({"url": url})))
            .await;
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                "POST",
                &self.at("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    pub async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        let text = self
            .call("GET", &self.at(&format!("/element/{id}/text")), None)
            .await;
        text.as_str().unwrap_or_default().to_string()
    }

    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let id = self.element(css).await;
        let value = self
            .call(
                "GET",
                &self.at(&format!("/element/{id}/attribute/{name}")),
                None,
            )
            .await;
        value.as_str().map(str::to_string)
    }

    pub async fn is_displayed(&self, css: &str) -> bool {
        let id = self.element(css).await;
        self.call("GET", &self.at(&format!("/element/{id}/displayed")), None)
            .await
            .as_bool()
            .unwrap_or(false)
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call("POST", &self.at(&format!("/element/{id}/click")), None)
            .await;
    }

    /// The element's text, or None while there is no such element.
    async fn try_text(&self, css: &str) -> Option<String> {
        let found = self
            .try_call(
                "POST",
                &self.at("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .ok()?;
        let id = found[ELEMENT].as_str()?;
        let text = self
            .try_call("GET", &self.at(&format!("/element/{id}/text")), None)
            .await
            .ok()?;
        text.as_str().map(str::to_string)
    }

    /// Waits until `css` exists and its text satisfies `done`; returns the text.
    pub async fn wait_text(
        &self,
        css: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let t0 = Instant::now();
        loop {
            let text = self.try_text(css).await;
            if let Some(text) = text.as_deref().filter(|t| done(t)) {
                return text.to_string();
            }
            assert!(
                t0.elapsed() < timeout,
                "{css}: not {what} after {timeout:?}; it shows {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the window, kept as `artefact_dir()/name`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let data = self.call("GET", &self.at("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        let path = artefact_dir().join(name);
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session ends Chromium; then the driver, which this test started.
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            // Drop runs inside the test's runtime; use a private one on a plain thread.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let _ = reqwest::Client::new().delete(url).send().await;
                });
                Ok::<(), std::io::Error>(())
            })
            .join();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
