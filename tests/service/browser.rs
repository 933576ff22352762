//! The dashboard in a real browser: headless Chromium driven through chromedriver (W3C WebDriver over
//! HTTP, spoken here with reqwest). It signs in, opens a model page after a calibration and several
//! estimates, checks the plots' SVG elements and the session cookie, saves screenshots under target/,
//! and signs out. `make test` installs Debian's chromium and chromium-driver (tools/chromium.sh); without
//! them the test is skipped, except under CI=true, where it fails.

use crate::common::*;
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A chromedriver process and one browser session in it.
struct Browser {
    client: reqwest::Client,
    base: String,
    _driver: ChildProcess,
}

impl Browser {
    async fn start(driver: &str) -> Browser {
        let port = free_port();
        let child = spawn_spe(
            std::process::Command::new(driver)
                .arg(format!("--port={port}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        );
        let client = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while client.get(format!("{root}/status")).send().await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut args = vec!["--headless=new", "--disable-gpu", "--window-size=1280,2000"];
        // Chromium's sandbox needs user namespaces a root CI container does not give it.
        if running_as_root() {
            args.push("--no-sandbox");
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"args": args}}}});
        let created: Value = client
            .post(format!("{root}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"));
        Browser {
            client,
            base: format!("{root}/session/{id}"),
            _driver: child,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn url(&self) -> String {
        self.call(Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Elements matching a CSS selector (their WebDriver references).
    async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .call(
                Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_array()
            .unwrap_or_else(|| panic!("{css}: {found}"))
            .iter()
            .map(|e| {
                e.as_object()
                    .unwrap()
                    .values()
                    .next()
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    async fn count(&self, css: &str) -> usize {
        self.find_all(css).await.len()
    }

    /// Waits (a form submission navigates in the background) until `css` matches `n` elements.
    async fn wait_count(&self, css: &str, n: usize) {
        let start = Instant::now();
        while self.count(css).await != n {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{css}: {} elements, expected {n}",
                self.count(css).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_url(&self, suffix: &str) {
        let start = Instant::now();
        while !self.url().await.ends_with(suffix) {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "at {}, expected …{suffix}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = &self.find_all(css).await[0];
        self.call(
            Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let element = &self.find_all(css).await[0];
        self.call(
            Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.call(Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        let path = repo().join("target").join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    async fn quit(self) {
        self.call(Method::DELETE, "", None).await;
    }
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

/// chromedriver, from SPE_CHROMEDRIVER or the PATH.
fn chromedriver() -> Option<String> {
    if let Ok(path) = std::env::var("SPE_CHROMEDRIVER") {
        return Some(path);
    }
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v chromedriver"])
        .output()
        .ok()?;
    found
        .status
        .success()
        .then(|| String::from_utf8_lossy(&found.stdout).trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_signs_in_and_shows_the_models_plots_in_chromium() {
    let Some(driver) = chromedriver() else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI needs chromium and chromium-driver (tools/chromium.sh installs them)"
        );
        eprintln!("skipped: no chromedriver (tools/chromium.sh installs Debian's chromium-driver)");
        return;
    };
    let app = TestApp::start().await;
    let (id, _) = calibrated_model(&app, "browsed").await;
    let r = app
        .request(
            Method::PUT,
            &format!("/v1/models/{id}/thresholds"),
            &app.admin,
        )
        .json(&json!({"dice": {"min": 0.99}}));
    assert_eq!(send(r).await.status(), StatusCode::OK);
    let estimates = 3;
    // Different images each time, so the plot has a shape.
    let files = sorted_files(&synthetic().join("batch"));
    for part in [&files[..6], &files[6..], &files[3..9]] {
        let form = part.iter().fold(reqwest::multipart::Form::new(), |f, p| {
            f.part("image", file_part(p))
        });
        estimate_ok(&app, &id, form).await;
    }

    let browser = Browser::start(&driver).await;
    // Without a session, a page sends the browser to the sign-in form.
    browser.goto(&app.at(&format!("/ui/models/{id}"))).await;
    assert!(
        browser.url().await.ends_with("/ui/login"),
        "{}",
        browser.url().await
    );
    browser.type_into("#key", "spe_wrong.key").await;
    browser.click("button[type=submit]").await;
    // A wrong key is refused with a message on the form.
    browser.wait_count("p.error", 1).await;

    browser.type_into("#key", &app.reader).await;
    browser.click("button[type=submit]").await;
    browser.wait_url("/ui").await;
    browser.wait_count("table.models tbody tr", 1).await;
    let cookies = browser.call(Method::GET, "/cookie", None).await;
    let session = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "spe_session")
        .unwrap_or_else(|| panic!("{cookies}"));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    browser.screenshot("ui-overview.png").await;

    browser.goto(&app.at(&format!("/ui/models/{id}"))).await;
    let over_time = "#estimates-plot svg";
    assert_eq!(
        browser.count(&format!("{over_time} .series .point")).await,
        estimates,
        "one point per estimate"
    );
    assert!(browser.count(&format!("{over_time} .band")).await >= 1);
    assert!(browser.count(&format!("{over_time} .threshold")).await >= 1);
    assert!(browser.count(&format!("{over_time} .alert")).await >= 1);
    assert!(browser.count("#calibration-plot svg .checkpoint").await >= 3);
    assert!(browser.count("#calibration-plot svg .fit").await >= 1);
    assert_eq!(browser.count("#estimates tbody tr").await, estimates);
    // The README's picture (docs/dashboard.png) is this screenshot.
    let rect = json!({"width": 1100, "height": 1450});
    browser.call(Method::POST, "/window/rect", Some(rect)).await;
    let shot = browser.screenshot("ui-model.png").await;
    eprintln!("screenshot: {}", shot.display());

    browser.click("nav button").await;
    browser.wait_url("/ui/login").await;
    browser.goto(&app.at("/ui")).await;
    assert!(browser.url().await.ends_with("/ui/login"), "signed out");
    browser.quit().await;
    app.stop().await;
}
