//! Load generator for tollgate: N keep-alive connections (one thread each,
//! a plain `TcpStream`; responses parsed by `httparse`, so the generator
//! costs far less per request than the server it measures),
//! a fixed request count or duration, and a scenario. Prints requests/s,
//! errors by status and latency percentiles (hdrhistogram).
//!
//! `--url` may list several instances (comma-separated): connections are
//! spread over them in turn.
//!
//! Users: with `--db FILE` (the server's database, or its PostgreSQL URL) it seeds `--users` users
//! with credits straight into the file through tollgate's own library and
//! mints their tokens with the stored signing key: seconds, instead of
//! minutes of argon2 through the API. Without `--db` it creates them through
//! the admin API (`--admin-email/--admin-password`), fine for a few dozen.
//!
//! Scenarios: `consume` (POST /v1/credits/consume, 1 credit), `balance`,
//! `chat` (POST /v1/chat/completions with `--model`), `jobs` (POST /v1/jobs,
//! text), `get` (GET a fixed path: use against examples/bare_http).
//!
//!   cargo run --release --example loadgen -- --url http://127.0.0.1:8080 \
//!     --db ./tollgate.db --users 10000 --connections 64 --requests 200000 --scenario consume

use hdrhistogram::Histogram;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    url: String,
    scenario: String,
    connections: usize,
    requests: u64,
    duration_s: u64,
    users: usize,
    db: Option<String>,
    admin_email: String,
    admin_password: String,
    model: String,
    path: String,
    /// Credit grants seeded per user (`--db` only): mixed priority, category
    /// and expiry, as a user who bought, was given and redeemed credits.
    grants: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        scenario: "consume".into(),
        connections: 16,
        requests: 50_000,
        duration_s: 0,
        users: 100,
        db: None,
        admin_email: "admin@example.com".into(),
        admin_password: "admin-password".into(),
        model: "dev-chat".into(),
        path: "/".into(),
        grants: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val(),
            "--scenario" => a.scenario = val(),
            "--connections" => a.connections = val().parse().expect("--connections"),
            "--requests" => a.requests = val().parse().expect("--requests"),
            "--duration" => a.duration_s = val().parse().expect("--duration (seconds)"),
            "--users" => a.users = val().parse().expect("--users"),
            "--db" => a.db = Some(val()),
            "--admin-email" => a.admin_email = val(),
            "--admin-password" => a.admin_password = val(),
            "--model" => a.model = val(),
            "--path" => a.path = val(),
            "--grants" => a.grants = val().parse().expect("--grants"),
            "--help" | "-h" => {
                println!("see the comment at the top of examples/loadgen.rs");
                std::process::exit(0);
            }
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .max_idle_connections_per_host(1)
        .build()
        .into()
}

/// The `g`-th grant of a seeded user: the first never expires; the others
/// expire 1..30 days out, alternate categories and spread over priorities.
fn seed_grant(
    c: &tollgate::storage::Conn<'_>,
    user: tollgate::domain::UserId,
    g: usize,
) -> tollgate::error::Result<()> {
    use tollgate::ledger::grants::{Category, NewGrant, Source};
    let day_ms = 86_400_000;
    let now = tollgate::domain::Timestamp::now();
    let g64 = g as i64;
    let grant = NewGrant {
        user,
        amount: tollgate::domain::Credits(1_000_000_000),
        category: if g.is_multiple_of(2) { Category::Paid } else { Category::Promotional },
        priority: (g64 * 7) % 101,
        expires_at: (g > 0).then(|| now.plus_ms((1 + g64 % 30) * day_ms)),
        source: Source::Admin,
        description: "loadgen".into(),
        external_id: None,
        code: None,
    };
    tollgate::ledger::grants::create(c, &grant)?;
    Ok(())
}

/// Seeds users into the file and returns their bearer tokens.
fn seed_db(path: &str, n: usize, grants: usize) -> Vec<String> {
    use tollgate::domain::{Email, Password, Role};
    let db = if path.starts_with("postgres://") || path.starts_with("postgresql://") {
        tollgate::storage::Db::open_postgres(path).expect("open the PostgreSQL database")
    } else {
        tollgate::storage::Db::open(std::path::Path::new(path), tollgate::storage::Synchronous::Normal)
            .expect("open db")
    };
    let keys = tollgate::auth::load_keys(&db).expect("keys");
    let hash = tollgate::auth::password::hash(&Password::parse("loadgen-password").expect("pw")).expect("hash");
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let (hash, chunk) = (hash.clone(), chunk.to_vec());
        let batch = db
            .write(move |c| {
                let mut out = Vec::new();
                for i in &chunk {
                    let email = Email::parse(&format!("load{stamp}-{i}@example.com")).expect("email");
                    let u = tollgate::users::insert(c, &email, &hash, Role::User)?;
                    for g in 0..grants.max(1) {
                        seed_grant(c, u.id, g)?;
                    }
                    // Tokens name a session, as a login's do.
                    let session =
                        tollgate::auth::sessions::start(c, u.id, Role::User, "password", &Default::default())?;
                    out.push((u.id, session.session));
                }
                Ok::<_, tollgate::error::Error>(out)
            })
            .expect("seed users");
        ids.extend(batch);
    }
    ids.into_iter().map(|(id, session)| keys.issue(id, Role::User, session, 86_400).expect("token")).collect()
}

fn seed_api(a: &Args) -> Vec<String> {
    let ag = agent();
    let login = |email: &str, pw: &str| -> String {
        let mut r = ag
            .post(&format!("{}/v1/auth/login", a.url))
            .send_json(json!({"email": email, "password": pw}))
            .expect("login");
        let v: serde_json::Value = r.body_mut().read_json().expect("json");
        v["access_token"].as_str().unwrap_or_else(|| panic!("login failed: {v}")).to_owned()
    };
    let admin = login(&a.admin_email, &a.admin_password);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    (0..a.users)
        .map(|i| {
            let email = format!("load{stamp}-{i}@example.com");
            let mut r = ag
                .post(&format!("{}/v1/admin/users", a.url))
                .header("Authorization", &format!("Bearer {admin}"))
                .send_json(json!({"email": email, "password": "loadgen-password"}))
                .expect("create user");
            let v: serde_json::Value = r.body_mut().read_json().expect("json");
            let id = v["id"].as_str().expect("user id").to_owned();
            ag.post(&format!("{}/v1/admin/users/{id}/credits", a.url))
                .header("Authorization", &format!("Bearer {admin}"))
                .send_json(json!({"amount": 1_000_000_000i64, "description": "loadgen"}))
                .expect("grant");
            login(&email, "loadgen-password")
        })
        .collect()
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    stream: std::net::TcpStream,
    host: String,
    buf: Vec<u8>,
}

impl Conn {
    fn open(url: &str) -> Conn {
        let host = url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let stream = std::net::TcpStream::connect(&host).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn { stream, host, buf: Vec::with_capacity(16 * 1024) }
    }

    /// Sends one request and reads the whole response; returns the status.
    fn call(&mut self, method: &str, path: &str, auth: &str, body: &[u8]) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let mut req = Vec::with_capacity(256 + body.len());
        write!(req, "{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host)?;
        if !auth.is_empty() {
            write!(req, "Authorization: {auth}\r\n")?;
        }
        if !body.is_empty() || method == "POST" {
            write!(req, "Content-Type: application/json\r\nContent-Length: {}\r\n", body.len())?;
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        self.stream.write_all(&req)?;
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        loop {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "server closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            let status = resp.parse(&self.buf).map_err(|e| std::io::Error::other(e.to_string()))?;
            let httparse::Status::Complete(head) = status else { continue };
            let code = resp.code.unwrap_or(0);
            let len: Option<usize> = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
            let chunked = resp.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
            match (len, chunked) {
                (Some(len), _) => {
                    while self.buf.len() < head + len {
                        let n = self.stream.read(&mut chunk)?;
                        if n == 0 {
                            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short body"));
                        }
                        self.buf.extend_from_slice(&chunk[..n]);
                    }
                }
                // A chunked body (a stream) ends with the zero-length chunk.
                (None, true) => {
                    while !self.buf.ends_with(b"0\r\n\r\n") {
                        let n = self.stream.read(&mut chunk)?;
                        if n == 0 {
                            break;
                        }
                        self.buf.extend_from_slice(&chunk[..n]);
                    }
                }
                (None, false) => {}
            }
            return Ok(code);
        }
    }
}

fn main() {
    let a = parse_args();
    let tokens: Arc<Vec<String>> = Arc::new(match (&a.db, a.scenario.as_str()) {
        (_, "get") => vec![String::new()],
        (Some(db), _) => seed_db(db, a.users, a.grants),
        (None, _) => seed_api(&a),
    });
    eprintln!("{} users ready; {} connections, scenario {}", tokens.len(), a.connections, a.scenario);
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram")));
    let statuses: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let per_conn = a.requests.div_ceil(a.connections as u64);
    let deadline = (a.duration_s > 0).then(|| Instant::now() + Duration::from_secs(a.duration_s));
    let started = Instant::now();
    let threads: Vec<_> = (0..a.connections)
        .map(|t| {
            let (tokens, hist, statuses) = (Arc::clone(&tokens), Arc::clone(&hist), Arc::clone(&statuses));
            // `--url a,b,c` spreads the connections over several instances.
            let urls: Vec<&str> = a.url.split(',').collect();
            let url = urls[t % urls.len()].to_owned();
            let (scenario, model, path) = (a.scenario.clone(), a.model.clone(), a.path.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(&url);
                let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                let mut i = 0u64;
                let chat =
                    json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]})
                        .to_string();
                let job =
                    json!({"type": "text_generation", "model": model, "input": {"prompt": "hello", "max_tokens": 16}})
                        .to_string();
                loop {
                    if deadline.map_or(i >= per_conn, |d| Instant::now() >= d) {
                        break;
                    }
                    let token = &tokens[(t + i as usize * 7919) % tokens.len()];
                    let auth = if token.is_empty() { String::new() } else { format!("Bearer {token}") };
                    let t0 = Instant::now();
                    let result = match scenario.as_str() {
                        "consume" => conn.call("POST", "/v1/credits/consume", &auth, br#"{"amount":1}"#),
                        "balance" => conn.call("GET", "/v1/credits/balance", &auth, b""),
                        "chat" => conn.call("POST", "/v1/chat/completions", &auth, chat.as_bytes()),
                        "jobs" => conn.call("POST", "/v1/jobs", &auth, job.as_bytes()),
                        "get" => conn.call("GET", &path, &auth, b""),
                        other => panic!("unknown scenario {other}"),
                    };
                    let key = match result {
                        Ok(code) => code.to_string(),
                        Err(e) => {
                            conn = Conn::open(&url);
                            format!("error: {e}")
                        }
                    };
                    let _ = local.record(t0.elapsed().as_micros().max(1) as u64);
                    *counts.entry(key).or_default() += 1;
                    i += 1;
                }
                if let Ok(mut h) = hist.lock() {
                    let _ = h.add(&local);
                }
                if let Ok(mut s) = statuses.lock() {
                    for (k, v) in counts {
                        *s.entry(k).or_default() += v;
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let h = hist.lock().expect("histogram");
    let total = h.len();
    println!("scenario: {}  connections: {}  requests: {total}  time: {elapsed:.2} s", a.scenario, a.connections);
    println!("throughput: {:.0} requests/s", total as f64 / elapsed);
    println!(
        "latency: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        h.value_at_quantile(0.50) as f64 / 1000.0,
        h.value_at_quantile(0.90) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    for (k, v) in statuses.lock().expect("statuses").iter() {
        println!("status {k}: {v}");
    }
}
