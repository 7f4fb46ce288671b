//! `TestApp`: a running service with its own temp directory and database,
//! an administrator, and one helper per endpoint.

#![allow(dead_code)]

pub use crate::endpoints::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tollgate::config::{Config, Flags, ModelConfig, PriceConfig, RouteConfig};
use tollgate::guard::Clock;
use tollgate::service::{BootstrapAdmin, Service, StartOptions};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const PASSWORD: &str = "user-password-1";

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// How long a refusal says to wait: `Retry-After` up to 60 s; past
    /// that (a daily cap, a lockout) only `X-RateLimit-Reset` and the
    /// body's `retry_after_s`, so SDKs fail fast instead of sleeping.
    pub fn wait_s(&self) -> Option<u64> {
        let body = self.json()["error"]["retry_after_s"].as_u64();
        match self.header("Retry-After") {
            Some(h) => {
                let s: u64 = h.parse().expect("Retry-After in seconds");
                assert!(s <= 60 && body == Some(s), "Retry-After {s}, body {body:?}");
                Some(s)
            }
            None => {
                if let Some(b) = body {
                    assert!(b > 60, "a wait of {b} s is sent as Retry-After");
                    assert_eq!(self.header("X-RateLimit-Reset"), Some(b.to_string().as_str()));
                }
                body
            }
        }
    }

    /// Asserts the contract's error shape and returns the code.
    pub fn error_code(&self) -> String {
        let v = self.json();
        let e = &v["error"];
        assert!(e["type"].is_string() && e["message"].as_str().is_some_and(|m| !m.is_empty()), "bad error shape: {v}");
        assert!(e.get("param").is_some(), "error without param field: {v}");
        e["code"].as_str().unwrap_or_default().to_owned()
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .max_idle_connections_per_host(64)
        .build()
        .into()
}

/// A client for one base URL.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub agent: ureq::Agent,
}

impl Client {
    pub fn new(base: String) -> Client {
        Client { base, agent: agent() }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Resp, ureq::Error> {
        let url = format!("{}{}", self.base, path);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            builder = builder.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let mut resp = match body {
            Some(b) => {
                self.agent.run(builder.header("Content-Type", "application/json").body(b.to_vec()).expect("request"))?
            }
            None => self.agent.run(builder.body(()).expect("request"))?,
        };
        let status = resp.status().as_u16();
        let headers =
            resp.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
        let body = resp.body_mut().with_config().limit(64 << 20).read_to_vec()?;
        Ok(Resp { status, headers, body })
    }

    pub fn get(&self, path: &str, token: &str) -> Resp {
        self.request("GET", path, Some(token), &[], None).expect("GET failed")
    }

    pub fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request("POST", path, Some(token), &[], Some(body.to_string().as_bytes())).expect("POST failed")
    }

    pub fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request("PATCH", path, Some(token), &[], Some(body.to_string().as_bytes())).expect("PATCH failed")
    }

    pub fn delete(&self, path: &str, token: &str) -> Resp {
        self.request("DELETE", path, Some(token), &[], None).expect("DELETE failed")
    }

    pub fn post_with(&self, path: &str, token: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.request("POST", path, Some(token), headers, Some(body)).expect("POST failed")
    }

    pub fn login(&self, email: &str, password: &str) -> Resp {
        self.request(
            "POST",
            "/v1/auth/login",
            None,
            &[],
            Some(json!({"email": email, "password": password}).to_string().as_bytes()),
        )
        .expect("login failed")
    }

    /// Creates a user through the admin API, grants them `credits`, and
    /// logs them in: their token.
    pub fn funded_user(&self, admin: &str, email: &str, credits: i64) -> String {
        let r = self.create_user(admin, json!({"email": email, "password": PASSWORD}));
        assert_eq!(r.status, 201, "create {email}: {}", r.text());
        let id = r.json()["id"].as_str().expect("id").to_owned();
        let r = self.post(
            &format!("/v1/admin/users/{id}/credits"),
            admin,
            json!({"amount": credits, "description": "test"}),
        );
        assert_eq!(r.status, 201, "grant {email}: {}", r.text());
        self.token(email, PASSWORD)
    }

    pub fn token(&self, email: &str, password: &str) -> String {
        let r = self.login(email, password);
        assert_eq!(r.status, 200, "login of {email}: {}", r.text());
        r.json()["access_token"].as_str().expect("access_token").to_owned()
    }
}

pub struct TestApp {
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub admin: String,
    service: Option<Service>,
}

/// Settings for a test: a fresh database in `dir`, an ephemeral port, and
/// durability off (the tests that need it turn it on).
pub fn test_config(dir: &tempfile::TempDir) -> Config {
    // TOLLGATE_TEST_LOG=warn (or any level) shows the services' logs.
    static LOGGER: std::sync::Once = std::sync::Once::new();
    LOGGER.call_once(|| {
        if let Ok(level) = std::env::var("TOLLGATE_TEST_LOG") {
            let _ = env_logger::Builder::new().parse_filters(&level).is_test(true).try_init();
        }
    });
    let mut c = Config::load_from(&Flags::default(), &[]).expect("default config");
    c.server.addr = "127.0.0.1:0".into();
    c.server.db = dir.path().join("tollgate.db");
    c.server.http_workers = 16;
    c.server.sqlite_synchronous = "normal".into();
    c.limits.rpm = 1_000_000;
    c.limits.burst = 1_000_000;
    // Receivers and fake providers listen on loopback.
    c.events.allow_private_urls = true;
    c.events.backoff_base_ms = 50;
    c.events.backoff_max_ms = 200;
    c.media.download_backoff_base_ms = 50;
    c.media.allow_private_urls = true;
    // Seals every second, beside whatever a test does: every audit then
    // checks seals written while the test's writes ran.
    c.ledger.seal_interval_s = 1;
    if engine_is_postgres() {
        c.database.url = tollgate::storage::pg::test_database().expect("TOLLGATE_TEST_PG_URL names the test server");
    }
    c
}

/// Starts (and at once stops) a service on `config` with `secrets`: `Err`
/// says why the start was refused.
pub fn try_start(config: &Config, secrets: &[(&str, &str)]) -> Result<(), String> {
    let secrets = secrets.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Service::start(config.clone(), StartOptions { admin: None, clock: None, secrets }).map(|s| s.shutdown())
}

/// The engine the suite runs on: `TOLLGATE_TEST_ENGINE=postgres` runs every
/// service test on a fresh PostgreSQL database (`scripts/test` runs the
/// suite once per engine).
pub fn engine_is_postgres() -> bool {
    std::env::var("TOLLGATE_TEST_ENGINE").is_ok_and(|e| e == "postgres")
}

/// Skips a test that is about the SQLite file itself (its CLI, backups,
/// kill -9 of a process on it) when the suite runs on PostgreSQL.
#[macro_export]
macro_rules! sqlite_only {
    () => {
        if $crate::helpers::engine_is_postgres() {
            eprintln!("skipped on PostgreSQL: this test is about the SQLite file");
            return;
        }
    };
}

/// Skips a test that needs the PostgreSQL pass (several instances on one
/// database, the PostgreSQL command line).
#[macro_export]
macro_rules! postgres_only {
    () => {
        if !$crate::helpers::engine_is_postgres() {
            eprintln!("skipped on SQLite: this test needs the PostgreSQL pass");
            return;
        }
    };
}

impl TestApp {
    pub fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {})
    }

    pub fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(&dir);
        adjust(&mut config);
        TestApp::start_in(dir, config)
    }

    /// A service whose rate limiter runs on `clock`.
    pub fn spawn_with_clock(clock: Arc<dyn Clock>) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = test_config(&dir);
        TestApp::start(dir, config, Some(clock), Vec::new())
    }

    pub fn start_in(dir: tempfile::TempDir, config: Config) -> TestApp {
        TestApp::start(dir, config, None, Vec::new())
    }

    /// [`TestApp::start_in`] with `secrets` where config names environment
    /// variables (and `TOLLGATE_SECRET_KEY`).
    pub fn start_in_with_secrets(dir: tempfile::TempDir, config: Config, secrets: &[(&str, &str)]) -> TestApp {
        let secrets = secrets.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        TestApp::start(dir, config, None, secrets)
    }

    /// A service that finds `secrets` where config names environment variables.
    pub fn spawn_with_secrets(secrets: &[(&str, &str)], adjust: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(&dir);
        adjust(&mut config);
        let secrets = secrets.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        TestApp::start(dir, config, None, secrets)
    }

    fn start(
        dir: tempfile::TempDir,
        config: Config,
        clock: Option<Arc<dyn Clock>>,
        secrets: Vec<(String, String)>,
    ) -> TestApp {
        let admin = BootstrapAdmin { email: ADMIN_EMAIL.into(), password: ADMIN_PASSWORD.into() };
        let service =
            Service::start(config, StartOptions { admin: Some(admin), clock, secrets }).expect("service starts");
        let client = Client::new(format!("http://{}", service.addr()));
        let admin = client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
        TestApp { client, dir, admin, service: Some(service) }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("tollgate.db")
    }

    pub fn config(&self) -> Config {
        self.service.as_ref().expect("running").app().config.clone()
    }

    /// Stops the service gracefully and starts it again on the same file.
    pub fn restart(mut self) -> TestApp {
        let config = self.config();
        if let Some(s) = self.service.take() {
            s.shutdown();
        }
        let mut config = config;
        config.server.addr = "127.0.0.1:0".into();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        TestApp::start_in(dir, config)
    }

    /// Stops the service and hands back its directory, with the database in it.
    pub fn restart_stopped(mut self) -> tempfile::TempDir {
        if let Some(s) = self.service.take() {
            s.shutdown();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    /// Creates a user through the admin API and logs them in.
    pub fn user(&self, name: &str) -> TestUser {
        let email = format!("{name}@example.com");
        let r = self.client.create_user(&self.admin, json!({"email": email, "password": PASSWORD}));
        assert_eq!(r.status, 201, "create user: {}", r.text());
        let id = r.json()["id"].as_str().expect("id").to_owned();
        let token = self.client.token(&email, PASSWORD);
        TestUser { id, email, token }
    }

    pub fn grant(&self, user: &TestUser, amount: i64) {
        let r = self.client.post(
            &format!("/v1/admin/users/{}/credits", user.id),
            &self.admin,
            json!({"amount": amount, "description": "test grant"}),
        );
        assert_eq!(r.status, 201, "grant: {}", r.text());
    }

    /// `PUT /v1/admin/users/{id}/limits` as `token` (the admin's, or not).
    pub fn put_limits(&self, token: &str, user: &TestUser, body: &str) -> Resp {
        self.client
            .request("PUT", &format!("/v1/admin/users/{}/limits", user.id), Some(token), &[], Some(body.as_bytes()))
            .expect("PUT limits failed")
    }

    /// `GET /v1/admin/users/{id}/grants`, as the admin.
    pub fn admin_grants(&self, user: &TestUser) -> Vec<Value> {
        let r = self.client.get(&format!("/v1/admin/users/{}/grants", user.id), &self.admin);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["data"].as_array().expect("data").clone()
    }

    pub fn balance(&self, user: &TestUser) -> Value {
        let r = self.client.balance(&user.token);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    pub fn consume(&self, user: &TestUser, amount: i64) -> Resp {
        self.client.consume(&user.token, amount)
    }

    pub fn validate(&self, user: &TestUser) -> Value {
        let r = self.client.get("/v1/credits/validate", &user.token);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    pub fn audit(&self) -> Value {
        let r = self.client.audit(&self.admin);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    pub fn count_where(&self, table: &str, condition: &str) -> i64 {
        self.count_sql(&format!("SELECT count(*) FROM {table} WHERE {condition}"))
    }

    /// Counts rows straight from the database, to prove that nothing was
    /// written.
    pub fn count(&self, table: &str) -> i64 {
        self.count_sql(&format!("SELECT count(*) FROM {table}"))
    }

    fn count_sql(&self, sql: &str) -> i64 {
        self.sql_one(sql, &[])
    }

    /// The first column of the one row `sql` returns, read through the
    /// service's own database handle (either engine).
    pub fn sql_one<T: rusqlite::types::FromSql>(&self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> T {
        self.db().read(|c| c.query_one(sql, params, |r| r.get::<T>(0))).expect(sql)
    }

    /// Runs one statement through the service's writer (a test that moves
    /// time or corrupts a row on purpose); the rows it changed.
    pub fn sql_exec(&self, sql: &'static str) -> usize {
        self.db().write(move |c| c.execute(sql, &[])).expect(sql)
    }

    pub fn db(&self) -> &tollgate::storage::Db {
        &self.service.as_ref().expect("running").app().db
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.service.take() {
            s.shutdown();
        }
    }
}

pub struct TestUser {
    pub id: String,
    pub email: String,
    pub token: String,
}

/// An RFC 3339 time `ms` milliseconds from now (grant expiries and the like).
pub fn rfc3339_in(ms: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now + ms) * 1_000_000).expect("time");
    t.format(&time::format_description::well_known::Rfc3339).expect("format")
}

/// Writes `text` as `dir/tollgate.toml`; returns its path (for
/// `TOLLGATE_CONFIG`).
pub fn write_config(dir: &std::path::Path, text: &str) -> PathBuf {
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, text).expect("write tollgate.toml");
    path
}

/// A `[[models]]` entry: `name` of `kind` routed to `(provider, upstream
/// model)` pairs in order, at `price`, with no token bounds (set them with
/// struct update syntax).
pub fn model_config(name: &str, kind: &str, routes: &[(&str, &str)], price: PriceConfig) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        kind: kind.into(),
        routes: routes.iter().map(|(p, m)| RouteConfig { provider: (*p).into(), model: (*m).into() }).collect(),
        price: Some(price),
        max_output_tokens: None,
        image_input_tokens_max: None,
        context_tokens_max: None,
        provider_cost: None,
    }
}

/// The same entry as TOML, for a config written to a file: `price` is an
/// inline table (`{ per_image = 25 }`), `extra` more lines of the entry.
pub fn model_toml(name: &str, kind: &str, provider: &str, upstream: &str, price: &str, extra: &str) -> String {
    format!(
        "[[models]]\nname = \"{name}\"\nkind = \"{kind}\"\nroutes = [{{ provider = \"{provider}\", model = \"{upstream}\" }}]\nprice = {price}\n{extra}"
    )
}

/// `qwen-plus` as TOML, routed to `provider`'s model `q`: 0.8 credits per
/// input token and 2 per output token (so usage maps to visible sums), at
/// most 100 output tokens.
pub fn qwen_plus_toml(provider: &str) -> String {
    model_toml(
        "qwen-plus",
        "chat",
        provider,
        "q",
        "{ input_per_1m = 800000, output_per_1m = 2000000 }",
        "max_output_tokens = 100\n",
    )
}

/// Writes `tollgate.toml` into `dir`: `extra` settings, then a model
/// `slow-chat` (1 credit per token, at most 100 output tokens) routed to an
/// OpenAI-compatible fake provider at `fake_base`. Returns its path.
pub fn slow_chat_config(dir: &std::path::Path, fake_base: &str, extra: &str) -> PathBuf {
    let text = format!(
        "{extra}\n[providers.slow]\nkind = \"openai\"\nbase_url = \"{fake_base}/v1\"\nread_timeout_ms = 60000\n{}",
        model_toml(
            "slow-chat",
            "chat",
            "slow",
            "m",
            "{ input_per_1m = 1000000, output_per_1m = 1000000 }",
            "max_output_tokens = 100\n"
        )
    );
    write_config(dir, &text)
}

/// Starts `n` chats with the `slow-chat` model (see [`slow_chat_config`]),
/// each on its own thread, their outcome ignored: calls in flight for a
/// test that kills the server under them.
pub fn slow_chats_in_background(client: &Client, token: &str, n: usize) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (client, token) = (client.clone(), token.to_owned());
            std::thread::spawn(move || {
                let body = json!({"model": "slow-chat", "messages": [{"role": "user", "content": "hi"}]});
                let _ = client.request("POST", CHAT, Some(&token), &[], Some(body.to_string().as_bytes()));
            })
        })
        .collect()
}

/// The real binary, as an operator runs it.
pub fn bin() -> Command {
    clean_env(Command::new(env!("CARGO_BIN_EXE_tollgate")))
}

/// No setting of the test runner's leaks into a child server.
fn clean_env(mut c: Command) -> Command {
    c.env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("TOLLGATE_") {
            c.env_remove(k);
        }
    }
    c
}

/// Resident memory of a process, and its peak, in KiB (from /proc).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A `tollgate serve` child process on an ephemeral port.
pub struct ServerProcess {
    pub child: Child,
    pub client: Client,
}

/// A test that fails must not leave its server running.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve_process(db: &std::path::Path, extra_env: &[(&str, &str)]) -> ServerProcess {
    spawn_server(bin(), db, extra_env)
}

/// `tollgate serve` under `ulimit -n nofile` (soft and hard).
pub fn serve_process_with_fd_limit(db: &std::path::Path, nofile: u64, extra_env: &[(&str, &str)]) -> ServerProcess {
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\"")).arg(env!("CARGO_BIN_EXE_tollgate"));
    spawn_server(clean_env(sh), db, extra_env)
}

fn spawn_server(mut cmd: Command, db: &std::path::Path, extra_env: &[(&str, &str)]) -> ServerProcess {
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--db"])
        .arg(db)
        .env("TOLLGATE_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("TOLLGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "info")
        // Tests that are not about rate limits must not meet them.
        .env("TOLLGATE_LIMITS_RPM", "1000000")
        .env("TOLLGATE_LIMITS_BURST", "1000000")
        .env("TOLLGATE_LEDGER_SEAL_INTERVAL_S", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn tollgate");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut sent = false;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).expect("server printed its address");
    ServerProcess { child, client: Client::new(format!("http://{addr}")) }
}

/// A private server a test may restart or stop (`scripts/pg-temp`,
/// `scripts/redis-temp`): started in a temp dir on a free port, stopped
/// and removed when dropped.
pub struct TempServer {
    script: &'static str,
    /// The server's URL (the script's `export TOLLGATE_TEST_*_URL=`).
    pub url: String,
    dir: String,
}

impl TempServer {
    /// Starts one with `scripts/<script> start`.
    pub fn start(script: &'static str) -> TempServer {
        let out = Command::new(format!("{}/scripts/{script}", env!("CARGO_MANIFEST_DIR")))
            .arg("start")
            .output()
            .unwrap_or_else(|e| panic!("scripts/{script} start: {e}"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |suffix: &str| {
            text.lines()
                .filter_map(|l| l.strip_prefix("export TOLLGATE_TEST_"))
                .find_map(|l| l.split_once('=').filter(|(k, _)| k.ends_with(suffix)).map(|(_, v)| v.to_owned()))
                .unwrap_or_else(|| panic!("scripts/{script} printed no {suffix}: {text}"))
        };
        TempServer { script, url: value("_URL"), dir: value("_DIR") }
    }

    /// `scripts/<script> <what> DIR` (restart, pause, resume...).
    pub fn run(&self, what: &str) {
        let s = Command::new(format!("{}/scripts/{}", env!("CARGO_MANIFEST_DIR"), self.script))
            .args([what, &self.dir])
            .status()
            .unwrap_or_else(|e| panic!("scripts/{} {what}: {e}", self.script));
        assert!(s.success(), "scripts/{} {what}", self.script);
    }
}

impl Drop for TempServer {
    fn drop(&mut self) {
        self.run("stop");
    }
}

/// Waits until `done` holds, checking every 20 ms, for at most `within`;
/// `what` says what did not happen.
pub fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what} (waited {within:?})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f(i)` on `n` threads released at once; returns the statuses.
pub fn race(n: usize, f: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Vec<u16> {
    let f = Arc::new(f);
    let gate = Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (f, gate) = (Arc::clone(&f), Arc::clone(&gate));
            std::thread::spawn(move || {
                gate.wait();
                f(i)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}
