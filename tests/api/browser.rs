//! The web console in a real browser: headless Chromium driven through
//! chromedriver's WebDriver protocol (plain HTTP and JSON, spoken here with
//! the ureq the suite already has). Screenshots of every page land in
//! `target/browser-screenshots/`; any console error the page logs fails
//! the test (a 401 is expected only where the test provokes one).
//!
//! Without Chromium and chromedriver the test says loudly that it was
//! skipped; under `CI` it fails instead. `scripts/test` installs both.

use crate::fake_provider::FakeProvider;
use crate::helpers::*;
use base64::Engine;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tollgate::config::PriceConfig;

/// Debian's paths; `TOLLGATE_TEST_CHROMIUM` / `TOLLGATE_TEST_CHROMEDRIVER` point elsewhere.
fn tool(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}
const WAIT: Duration = Duration::from_secs(15);

struct Browser {
    driver: Child,
    url: String,
    agent: ureq::Agent,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.url).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The browser, or `None` (said on stderr) when this machine has none.
fn browser_or_skip(test: &str) -> Option<Browser> {
    let (chromium, chromedriver) = (
        tool("TOLLGATE_TEST_CHROMIUM", "/usr/bin/chromium"),
        tool("TOLLGATE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"),
    );
    let missing: Vec<&str> =
        [chromium.as_str(), chromedriver.as_str()].into_iter().filter(|p| !Path::new(p).exists()).collect();
    if !missing.is_empty() {
        let why = format!(
            "{} not installed (scripts/test installs Debian's chromium and chromium-driver)",
            missing.join(" and ")
        );
        assert!(std::env::var_os("CI").is_none(), "browser test {test} cannot run under CI: {why}");
        // Straight to the process's stderr: the harness hides printed output of passing tests.
        let _ = writeln!(std::io::stderr(), "\nSKIPPED browser test {test}: {why}\n");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let base = format!("http://127.0.0.1:{port}");
    eventually("chromedriver did not start", WAIT, || agent.get(&format!("{base}/status")).call().is_ok());
    let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:loggingPrefs": {"browser": "ALL"},
        "goog:chromeOptions": {"binary": chromium, "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]},
    }}});
    let mut r = agent.post(&format!("{base}/session")).send_json(&caps).expect("new session");
    let v: Value = r.body_mut().read_json().expect("session json");
    let session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_owned();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    Some(Browser { driver, url: format!("{base}/session/{session}"), agent, shots })
}

impl Browser {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let mut r = match body {
            Some(b) => self.agent.post(&url).send_json(&b),
            None if method == "GET" => self.agent.get(&url).call(),
            None => self.agent.delete(&url).call(),
        }
        .expect("webdriver call");
        let v: Value = r.body_mut().read_json().expect("webdriver json");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> Option<String> {
        let v = self.call("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        // W3C's element reference key; an error answer has none.
        v.get("element-6066-11e4-a52e-4f735466cecf").and_then(Value::as_str).map(str::to_owned)
    }

    fn wait(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(Instant::now() < deadline, "no {css} on the page; screenshot: {}", self.shot("missing").display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn text(&self, css: &str) -> String {
        let e = self.wait(css);
        self.call("GET", &format!("/element/{e}/text"), None).as_str().unwrap_or_default().to_owned()
    }

    /// Waits until `css`'s text satisfies `ok`; the text.
    fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let t = self.text(css);
            if ok(&t) {
                return t;
            }
            assert!(Instant::now() < deadline, "{css} stayed {t:?}; screenshot: {}", self.shot("stuck").display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn click(&self, css: &str) {
        let e = self.wait(css);
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    /// Signs in through the console's own form, from a fresh session.
    fn sign_in(&self, base: &str, email: &str, password: &str) {
        self.exec("sessionStorage.clear();", json!([]));
        self.goto(&format!("{base}/console/#/login"));
        self.type_into("#email", email);
        self.type_into("#password", password);
        self.click("#sign-in");
        self.wait("#balance");
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.wait(css);
        self.call("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.call("POST", &format!("/element/{e}/value"), Some(json!({ "text": text })));
    }

    fn select(&self, css: &str, value: &str) {
        self.exec(
            "const s = document.querySelector(arguments[0]); s.value = arguments[1]; s.dispatchEvent(new Event('change'));",
            json!([css, value]),
        );
    }

    fn exec(&self, script: &str, args: Value) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    fn shot(&self, name: &str) -> PathBuf {
        let png = self.call("GET", "/screenshot", None);
        let path = self.shots.join(format!("{name}.png"));
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default()).unwrap_or_default();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The page's console errors since the last call; `expected` are allowed
    /// (the resource errors of responses the test provoked).
    fn assert_no_console_errors(&self, step: &str, expected: &[&str]) {
        let log = self.call("POST", "/se/log", Some(json!({"type": "browser"})));
        let errors: Vec<String> = log
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .filter(|m| !expected.iter().any(|x| m.contains(x)))
            .collect();
        assert!(errors.is_empty(), "console errors at {step}: {errors:?}");
    }

    /// Visits a console page, waits for `ready`, screenshots it, and checks
    /// the console.
    fn page(&self, base: &str, hash: &str, ready: &str, name: &str) {
        let started = Instant::now();
        self.goto(&format!("{base}/console/{hash}"));
        self.wait(ready);
        // Reported, not asserted (timings are for benchmarks): load to usable.
        let _ = writeln!(std::io::stderr(), "console page {name}: usable after {:?}", started.elapsed());
        std::thread::sleep(Duration::from_millis(150));
        self.shot(name);
        self.assert_no_console_errors(name, &[]);
        self.assert_no_missing_fields(name);
    }

    /// A field the page reads that the API does not send shows as
    /// `undefined` or `NaN`: none may be on the page.
    fn assert_no_missing_fields(&self, step: &str) {
        let text = self.exec("return document.querySelector('#main').innerText;", json!([]));
        let text = text.as_str().unwrap_or_default();
        assert!(
            !text.contains("undefined") && !text.contains("NaN") && !text.contains("[object Object]"),
            "a field the API does not send, at {step}: {text}"
        );
    }
}

fn console_app(fake: &FakeProvider) -> TestApp {
    let base = format!("{}/v1", fake.base);
    TestApp::spawn_with(move |c| {
        c.providers.insert("fake".into(), crate::ai::provider("openai", &base, 5_000));
        // What the provider bills: more than the list price for output, so
        // the admin usage page shows a loss.
        let mut chat = crate::ai::chat_model("fake-chat", &[("fake", "m")]);
        chat.provider_cost =
            Some(PriceConfig { input_per_1m: 400_000, output_per_1m: 3_000_000, ..PriceConfig::default() });
        c.models.push(chat);
        c.models.push(model_config(
            "fake-image",
            "image",
            &[("fake", "img")],
            PriceConfig { per_image: 25, ..PriceConfig::default() },
        ));
    })
}

#[test]
fn the_console_serves_admins_and_users_in_a_real_browser() {
    let Some(b) = browser_or_skip("the_console_serves_admins_and_users_in_a_real_browser") else { return };
    let fake = FakeProvider::start();
    fake.script(|s| s.stream_event_delay_ms = 120);
    let app = console_app(&fake);
    let base = app.client.base.clone();

    // `/` leads to the console's sign-in.
    b.goto(&format!("{base}/"));
    b.wait("#sign-in");
    b.shot("01-sign-in");
    b.type_into("#email", ADMIN_EMAIL);
    b.type_into("#password", "not-the-password");
    b.click("#sign-in");
    assert_eq!(b.wait_text("#alert", |t| !t.is_empty()), "Invalid email or password.");
    b.shot("02-wrong-password");
    b.assert_no_console_errors("wrong password", &["401"]);

    // The admin signs in, creates a user and grants credits.
    b.type_into("#password", ADMIN_PASSWORD);
    b.click("#sign-in");
    b.wait("#balance");
    b.page(&base, "#/admin/users", "#create-user", "03-admin-users");
    b.type_into("#new-email", "ann@example.com");
    b.type_into("#new-password", PASSWORD);
    b.click("#create-user");
    b.wait("#grant-amount");
    b.type_into("#grant-amount", "10000");
    b.type_into("#grant-description", "welcome");
    b.click("#grant-submit");
    b.wait_text("#user-balance", |t| t == "10,000");
    // Limits with burst and a per-request cap, and a grant with terms
    // that is then voided.
    b.type_into("#limit-burst", "7");
    b.type_into("#limit-max-cost", "900");
    b.click("#limits-submit");
    let ann_id = {
        let users = app.client.get("/v1/admin/users?email=ann@example.com", &app.admin).json();
        users["data"][0]["id"].as_str().unwrap().to_owned()
    };
    let limits = || app.client.get(&format!("/v1/admin/users/{ann_id}"), &app.admin).json();
    eventually("the limits were not saved", WAIT, || limits()["limits"]["burst"] == 7);
    b.wait("#grant2-amount");
    let limits = limits();
    assert_eq!(
        (limits["limits"]["burst"].as_i64(), limits["limits"]["max_cost_per_request"].as_i64()),
        (Some(7), Some(900)),
        "{limits}"
    );
    b.type_into("#grant2-amount", "300");
    b.select("#grant2-category", "paid");
    b.type_into("#grant2-priority", "5");
    b.exec("document.querySelector('#grant2-expires').value = '2099-01-31';", json!([]));
    b.click("#grant2-submit");
    b.wait_text("#user-balance", |t| t == "10,300");
    b.click("#user-grants");
    b.wait_text("#main table", |t| t.contains("paid") && t.contains("2099-01-31"));
    b.exec("document.querySelector('[data-grant] button[aria-label^=\"Void\"]').click();", json!([]));
    b.wait_text("#main table", |t| t.contains("voided"));
    b.assert_no_console_errors("grants and limits", &[]);
    // A key minted for the user, with limits, shown once.
    b.exec("[...document.querySelectorAll('#main button')].find((x) => x.textContent === 'Keys').click();", json!([]));
    b.type_into("#key-name", "backend");
    b.type_into("#key-spend-limit", "250");
    b.type_into("#key-models", "fake-chat");
    b.click("#key-submit");
    let minted = b.wait_text("#key-shown", |t| t.contains("tg_"));
    b.wait_text("tr[data-key='backend']", |t| t.contains("spend_limit: 250") && t.contains("fake-chat"));
    let key = minted.split_whitespace().find(|w| w.starts_with("tg_")).unwrap().to_owned();
    assert_eq!(app.client.get("/v1/me", &key).status, 200, "the minted key works");
    b.assert_no_console_errors("a key minted for a user", &[]);
    // Edited (a limit raised, one added, the model list cleared), then revoked.
    b.click("button[aria-label='Edit backend']");
    b.type_into("#edit-key-spend-limit", "300");
    b.type_into("#edit-key-rpm", "60");
    b.type_into("#edit-key-models", "");
    b.exec("document.querySelector('#edit-key-expires').value = '2099-02-01';", json!([]));
    b.click("#edit-key-submit");
    b.wait_text("tr[data-key='backend']", |t| {
        t.contains("spend_limit: 300") && t.contains("rpm: 60") && !t.contains("fake-chat")
    });
    let keys = app.client.get(&format!("/v1/admin/users/{ann_id}/api-keys"), &app.admin).json();
    let k = &keys["data"][0];
    assert_eq!(
        (k["spend_limit"].as_i64(), k["rpm"].as_i64(), k["models"].is_null()),
        (Some(300), Some(60), true),
        "{k}"
    );
    assert!(k["expires_at"].as_str().is_some_and(|t| t.starts_with("2099-02-01")), "{k}");
    b.click("button[aria-label='Revoke backend']");
    eventually("the revoked key still works", WAIT, || app.client.get("/v1/me", &key).status == 401);
    b.assert_no_console_errors("a user's key edited and revoked", &[]);
    // The user's role, both ways.
    b.select("#user-role", "admin");
    b.click("#role-submit");
    let role = || app.client.get(&format!("/v1/admin/users/{ann_id}"), &app.admin).json()["role"].clone();
    eventually("the role was not set", WAIT, || role() == "admin");
    b.wait_text("#main p", |t| t.contains("admin"));
    b.select("#user-role", "user");
    b.click("#role-submit");
    b.wait_text("#main p", |t| t.contains("· user ·"));
    assert_eq!(role(), "user");
    b.shot("04-admin-user");
    b.assert_no_console_errors("grant", &[]);
    b.page(&base, "#/admin/codes", "#code-amount", "05-admin-codes");
    b.type_into("#code-amount", "250");
    b.click("#code-submit");
    b.wait_text("#main table", |t| t.contains("250") && t.contains("0 / 1"));
    // A code with every option, then disabled.
    b.type_into("#code-amount", "40");
    b.type_into("#code-count", "2");
    b.select("#code-category", "paid");
    b.type_into("#code-priority", "3");
    b.type_into("#code-grant-days", "30");
    b.type_into("#code-max-redemptions", "5");
    b.type_into("#code-description", "launch week");
    b.exec("document.querySelector('#code-redeem-by').value = '2099-03-01';", json!([]));
    b.click("#code-submit");
    b.wait_text("#new-codes", |t| t.matches("TG-").count() == 2);
    b.wait_text("#main table", |t| {
        t.contains("paid (priority 3)") && t.contains("30 days after") && t.contains("0 / 5")
    });
    let codes = app.client.get("/v1/admin/codes", &app.admin).json();
    let c = codes["data"].as_array().unwrap().iter().find(|c| c["amount"] == 40).unwrap().clone();
    assert_eq!(
        (c["category"].as_str(), c["priority"].as_i64(), c["grant_expires_days"].as_i64(), c["description"].as_str()),
        (Some("paid"), Some(3), Some(30), Some("launch week")),
        "{c}"
    );
    assert!(c["redeem_by"].as_str().is_some_and(|t| t.starts_with("2099-03-01")), "{c}");
    b.click(&format!("button[aria-label='Disable {}']", c["id"].as_str().unwrap()));
    b.wait_text(&format!("tr[data-code='{}'] .status", c["id"].as_str().unwrap()), |t| t == "disabled");
    b.assert_no_console_errors("codes minted, listed and disabled", &[]);
    b.assert_no_missing_fields("05-admin-codes");
    b.page(&base, "#/admin/logs", "#log-level", "06-admin-logs");
    b.wait_text("dl.details", |t| t.contains("amount"));
    b.page(&base, "#/admin/webhooks", "#hook-url", "07-admin-webhooks");
    b.type_into("#hook-url", "http://127.0.0.1:9/hooks");
    b.type_into("#hook-events", "job.completed, credits.low");
    b.click("#hook-submit");
    b.wait_text("#hook-secret", |t| t.contains("whsec_"));
    b.wait_text("tr[data-endpoint='http://127.0.0.1:9/hooks']", |t| t.contains("job.completed, credits.low"));
    b.shot("07-admin-webhook-added");
    b.click("button[aria-label='Delete http://127.0.0.1:9/hooks']");
    eventually("the endpoint stayed listed", WAIT, || b.find("tr[data-endpoint='http://127.0.0.1:9/hooks']").is_none());
    b.assert_no_console_errors("webhooks", &[]);
    b.page(&base, "#/admin/audit", "#run-audit", "08-admin-audit");
    b.click("#run-audit");
    b.wait_text("#audit-result", |t| t.contains("Valid") && t.contains("Chain head"));
    b.shot("08-admin-audit");

    // The user signs in and sees the balance.
    b.exec("sessionStorage.clear();", json!([]));
    b.goto(&format!("{base}/console/#/login"));
    b.type_into("#email", "ann@example.com");
    b.type_into("#password", PASSWORD);
    b.click("#sign-in");
    assert_eq!(b.wait_text("#balance", |t| !t.is_empty()), "10,000");
    b.shot("09-user-overview");
    b.assert_no_console_errors("user sign-in", &[]);

    // A chat in the playground: the text arrives in pieces, the cost after.
    b.page(&base, "#/playground", "#chat-send", "10-playground");
    b.select("#chat-model", "fake-chat");
    b.type_into("#chat-prompt", "hello");
    b.click("#chat-send");
    let final_text = "fake answer from the provider";
    let partial = b.wait_text("#chat-answer", |t| !t.is_empty());
    assert!(partial.len() < final_text.len(), "streamed text appears before the end: {partial:?}");
    b.wait_text("#chat-answer", |t| t == final_text);
    let cost = b.wait_text("#chat-cost", |t| t.starts_with("Cost:"));
    b.shot("11-playground-chat");

    // The same model through Anthropic's Messages API, translated.
    b.select("#chat-api", "messages");
    b.exec(
        "document.querySelector('#chat-answer').textContent = ''; document.querySelector('#chat-cost').textContent = 'pending';",
        json!([]),
    );
    b.click("#chat-send");
    b.wait_text("#chat-answer", |t| t == final_text);
    b.wait_text("#chat-cost", |t| t.starts_with("Cost:"));
    b.select("#chat-api", "chat");

    // An image job completes and its kept image is shown.
    b.select("#image-model", "fake-image");
    b.type_into("#image-prompt", "a cat");
    b.click("#image-send");
    b.wait_text("#image-status", |t| t == "completed");
    let loaded = b.exec(
        "const i = document.querySelector('#image-job img'); return i && i.complete && i.naturalWidth;",
        json!([]),
    );
    let deadline = Instant::now() + WAIT;
    let mut width = loaded.as_u64().unwrap_or(0);
    while width == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        width = b
            .exec("const i = document.querySelector('#image-job img'); return i && i.naturalWidth;", json!([]))
            .as_u64()
            .unwrap_or(0);
    }
    assert_eq!(width, 48, "the kept image is shown");
    b.shot("12-playground-image");
    b.assert_no_console_errors("playground", &[]);

    // The balance and the usage chart moved.
    b.page(&base, "#/", "#spend-chart", "13-user-overview-after");
    let balance: i64 = b.text("#balance").replace(',', "").parse().unwrap();
    assert!(balance < 10_000, "{balance} ({cost})");
    let ann = app.client.token("ann@example.com", PASSWORD);
    assert_eq!(Some(balance), app.client.balance(&ann).json()["balance"].as_i64(), "what the API says");
    let bars = b.exec("return document.querySelectorAll('#spend-chart rect').length;", json!([]));
    assert!(bars.as_u64().unwrap_or(0) >= 2, "the chat and the image, by model: {bars}");
    // The chart says its unit, and a bar its day, model and amount.
    assert!(b.text("#spend-chart").contains("credits / day"));
    b.exec("document.querySelector('#spend-chart rect').dispatchEvent(new Event('mouseenter'));", json!([]));
    let tip = b.wait_text("#chart-tip", |t| !t.is_empty());
    assert!(tip.contains(" credits") && tip.contains(" · "), "{tip}");
    b.page(&base, "#/ledger", "#kind-filter", "14-ledger");
    b.page(&base, "#/grants", "table", "15-grants");
    b.page(&base, "#/jobs", "[data-job]", "16-jobs");
    b.wait_text("[data-job]", |t| t.contains("completed") && t.contains("25") && !t.contains('≤'));

    // A key is shown once, then revoked: used as the console's token, the
    // API's message is shown.
    let r = app.client.create_key(&ann, json!({"name": "capped", "spend_limit": 500, "rpm": 30}));
    assert_eq!(r.status, 201, "{}", r.text());
    b.page(&base, "#/keys", "#key-name", "17-keys");
    b.wait_text(".key-limits", |t| t.contains("spend_limit: 500") && t.contains("rpm: 30"));
    b.type_into("#key-name", "laptop");
    b.click("#key-submit");
    let key = b.wait_text("#new-key", |t| t.starts_with("tg_"));
    b.shot("18-key-created");
    b.click("button[aria-label='Revoke laptop']");
    eventually("the key stayed listed", WAIT, || b.find("button[aria-label='Revoke laptop']").is_none());
    b.assert_no_console_errors("keys", &[]);
    b.exec("sessionStorage.clear(); sessionStorage.setItem('access', arguments[0]);", json!([key]));
    b.goto(&format!("{base}/console/#/"));
    assert_eq!(b.wait_text("#alert", |t| !t.is_empty()), "This API key is unknown or has been revoked.");
    b.wait("#sign-in");
    b.shot("19-revoked-key");
    b.assert_no_console_errors("revoked key", &["401"]);

    // Phone width: the overview still lays out.
    b.sign_in(&base, "ann@example.com", PASSWORD);
    b.call("POST", "/window/rect", Some(json!({"width": 390, "height": 844})));
    let overflow =
        b.exec("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", json!([]));
    b.shot("20-phone-overview");
    assert!(overflow.as_i64().unwrap_or(1) <= 0, "no sideways scroll at phone width: {overflow}");
    b.assert_no_console_errors("phone", &[]);

    // The admin sees everyone's usage, by model and by user.
    b.call("POST", "/window/rect", Some(json!({"width": 1280, "height": 900})));
    b.sign_in(&base, ADMIN_EMAIL, ADMIN_PASSWORD);
    b.page(&base, "#/admin/usage", "#spend-chart rect", "21-admin-usage");
    b.select("#usage-series", "user");
    b.wait_text("table", |t| t.contains("usr_"));
    b.shot("22-admin-usage-by-user");
    b.select("#usage-series", "model");
    b.wait_text("table", |t| t.contains("Provider cost") && t.contains("Margin") && t.contains("fake-chat"));
    let loss = b.exec("return document.querySelectorAll('td.loss').length;", json!([]));
    assert!(loss.as_i64().unwrap_or(0) >= 1, "a model billed above its price shows its loss: {loss}");
    b.assert_no_console_errors("admin usage", &[]);
}

#[test]
fn the_console_manages_channels_and_models_in_a_real_browser() {
    let Some(b) = browser_or_skip("the_console_manages_channels_and_models_in_a_real_browser") else { return };
    let fake = FakeProvider::start();
    let seal = tollgate::support::sealed::SealKey::generate().unwrap();
    let app = TestApp::spawn_with_secrets(&[("TOLLGATE_SECRET_KEY", &seal)], |_| {});
    let base = app.client.base.clone();
    b.goto(&format!("{base}/console/"));
    b.type_into("#email", ADMIN_EMAIL);
    b.type_into("#password", ADMIN_PASSWORD);
    b.click("#sign-in");
    b.wait("#balance");

    // A model with its price, then a channel serving it with a key.
    b.page(&base, "#/admin/models", "#model-name", "22-admin-models");
    b.type_into("#model-name", "house-chat");
    b.type_into("#model-input", "1000");
    b.type_into("#model-output", "2000");
    b.click("#model-submit");
    b.wait("tr[data-model='house-chat']");
    b.page(&base, "#/admin/channels", "#ch-name", "23-admin-channels");
    b.type_into("#ch-name", "house");
    b.type_into("#ch-base-url", &format!("{}/v1", fake.base));
    b.type_into("#ch-models", "house-chat=up-model");
    b.type_into("#ch-weight", "3");
    b.type_into("#ch-key", "sk-console-7777");
    b.click("#ch-submit");
    b.wait_text("tr[data-channel='house']", |t| t.contains("…7777 enabled") && t.contains("3 / 0"));
    let listed = app.client.get("/v1/admin/channels", &app.admin).json();
    let house = listed["data"].as_array().unwrap().iter().find(|c| c["name"] == "house").expect("added").clone();
    assert_eq!(house["models"][0]["upstream"], "up-model");
    // Test it: the answer and its latency.
    b.click("button[aria-label='Test house']");
    b.wait_text("#ch-test-result", |t| t.contains("house: OK in") && t.contains("fake answer"));
    assert_eq!(fake.requests().last().unwrap().headers["authorization"], "Bearer sk-console-7777");
    // The list is drawn again after the answer shows (with the latency):
    // a click before that lands on a row about to be replaced.
    b.wait_text("tr[data-channel='house']", |t| t.contains(" ms"));
    b.shot("24-admin-channel-tested");
    // Edit, disable, enable.
    b.click("button[aria-label='Edit house']");
    b.type_into("#ch-weight", "9");
    b.click("#ch-submit");
    b.wait_text("tr[data-channel='house']", |t| t.contains("9 / 0"));
    b.click("button[aria-label='Disable house']");
    b.wait_text("tr[data-channel='house']", |t| t.contains("disabled"));
    b.click("button[aria-label='Enable house']");
    b.wait_text("tr[data-channel='house']", |t| t.contains("enabled"));
    b.assert_no_console_errors("channels", &[]);

    // A new price, then the model disabled: both through the API at once.
    b.page(&base, "#/admin/models", "tr[data-model='house-chat']", "25-admin-models-listed");
    b.type_into("input[aria-label='Input price of house-chat']", "5000");
    b.click("button[aria-label='Save price of house-chat']");
    b.wait_text("tr[data-model='house-chat']", |t| t.contains("house → up-model") && t.contains('2'));
    let m = app.client.get("/v1/admin/models/house-chat", &app.admin).json();
    assert_eq!(
        (m["price"]["input_per_1m"].as_i64(), m["price"]["output_per_1m"].as_i64()),
        (Some(5000), Some(2000)),
        "{m}"
    );
    b.click("button[aria-label='Disable house-chat']");
    b.wait("button[aria-label='Enable house-chat']");
    let r =
        app.client.chat(&app.admin, json!({"model": "house-chat", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(r.error_code(), "model_not_found");
    b.shot("26-admin-models-disabled");
    b.assert_no_console_errors("models", &[]);
}

/// A user buys a package through the console: the Billing page sends them
/// to (a fake) Stripe Checkout, the signed event grants it, the page they
/// return to shows it paid; auto top-up is set; the admin sees the payment.
#[test]
fn the_console_sells_credits_through_stripe_in_a_real_browser() {
    use crate::fake_stripe::{FakeStripe, WEBHOOK_SECRET, event};
    let Some(b) = browser_or_skip("the_console_sells_credits_through_stripe_in_a_real_browser") else { return };
    let stripe = FakeStripe::start();
    // Checkout returns to the console, so its address must be known first.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = crate::payments::payments_app_with(&stripe, |c| {
        c.server.addr = format!("127.0.0.1:{port}");
        c.payments.return_urls = vec![format!("http://127.0.0.1:{port}/console/")];
    });
    let base = app.client.base.clone();
    let ann = app.user("ann");
    b.sign_in(&base, "ann@example.com", PASSWORD);
    b.page(&base, "#/billing", "[data-package='p500']", "30-billing");
    b.wait_text("[data-plan='pro']", |t| t.contains("20.00 USD / month"));
    b.click("button[aria-label='Buy p500']");
    b.wait("#fake-stripe");
    let at = b.exec("return location.href;", json!([]));
    assert!(at.as_str().unwrap_or("").starts_with(&format!("{}/c/pay/cs_test_", stripe.base)), "{at}");
    let sent = stripe.requests().into_iter().find(|r| r.path == "/v1/checkout/sessions").unwrap();
    let success = sent.form["success_url"].clone();
    assert_eq!(success, format!("{base}/console/#/billing?paid=1"));
    let session = at.as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let payment = sent.form["metadata[payment_id]"].clone();
    let paid =
        event("evt_b1", "checkout.session.completed", crate::payments::completed(&session, &payment, &ann.id, 500));
    assert_eq!(crate::payments::send(&app, &paid, WEBHOOK_SECRET).json()["outcome"], "granted");
    let card = json!({"id": format!("pi_{session}"), "object": "payment_intent", "amount": 500, "currency": "usd",
                      "customer": "cus_ann", "payment_method": "pm_card_visa", "metadata": {"payment_id": payment}});
    crate::payments::send(&app, &event("evt_b2", "payment_intent.succeeded", card), WEBHOOK_SECRET);
    // Back from Stripe.
    b.goto(&success);
    b.wait("#billing-returned");
    b.wait_text(&format!("tr[data-payment='{payment}'] .status"), |t| t == "paid");
    b.shot("31-billing-paid");
    b.assert_no_console_errors("billing after paying", &[]);
    b.assert_no_missing_fields("31-billing-paid");
    assert_eq!(app.balance(&ann)["balance"], 500);
    // Auto top-up, with the saved card.
    b.type_into("#topup-threshold", "120");
    b.wait("#billing-ready");
    b.exec("document.querySelector('#billing-ready').remove();", json!([]));
    b.click("#topup-submit");
    // The page draws itself again with the saved setting.
    b.wait("#billing-ready");
    assert_eq!(b.exec("return document.querySelector('#topup-threshold').value;", json!([])), "120");
    let deadline = Instant::now() + WAIT;
    loop {
        let t = app.client.get("/v1/payments/auto-topup", &ann.token).json();
        if t["setting"]["threshold"] == 120 {
            assert_eq!(
                (t["setting"]["enabled"].as_bool(), t["setting"]["package"].as_str()),
                (Some(true), Some("p500"))
            );
            break;
        }
        assert!(Instant::now() < deadline, "auto top-up not saved: {t}");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.assert_no_console_errors("auto top-up", &[]);

    // The admin sees it.
    b.sign_in(&base, ADMIN_EMAIL, ADMIN_PASSWORD);
    b.page(&base, "#/admin/payments", &format!("tr[data-payment='{payment}']"), "32-admin-payments");
    b.wait_text(&format!("tr[data-payment='{payment}']"), |t| t.contains("paid") && t.contains("5.00 USD"));
    b.assert_no_console_errors("admin payments", &[]);
}
