//! Events out and outputs kept, over real HTTP: a receiver that verifies the
//! Standard Webhooks signature and fails on purpose, SIGKILL between the
//! commit and the delivery, a job's live event stream with reconnects, and
//! outputs served by tollgate after the provider's URL died.

use crate::fake_provider::{FakeProvider, media_bytes};
use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate::config::{Config, PriceConfig, ProviderConfig};

#[derive(Default)]
struct Seen {
    /// Every attempt that reached the receiver.
    attempts: usize,
    /// Answer 500 to this many more attempts.
    fail_next: usize,
    /// Answer 503 to everything (the receiver is "down").
    down: bool,
    bad_signatures: usize,
    /// Events by id, after de-duplication; and how often each came.
    events: HashMap<String, Value>,
    copies: HashMap<String, usize>,
}

/// A webhook receiver: a real HTTP server that checks each request's
/// signature with the secret (the Standard Webhooks scheme, computed here
/// independently of tollgate's signer) and de-duplicates by event id.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Seen>>,
    secret: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("receiver listens"));
        let url = format!("http://{}/hooks", server.server_addr().to_ip().expect("ip"));
        let (seen, secret, stop) = (Arc::default(), Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        for _ in 0..4 {
            let (server, seen, secret, stop) =
                (Arc::clone(&server), Arc::clone(&seen), Arc::clone(&secret), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Some(rq)) = server.recv_timeout(Duration::from_millis(50)) {
                        receive(rq, &seen, &secret);
                    }
                }
            });
        }
        Receiver { url, seen, secret, stop }
    }

    fn set_secret(&self, whsec: &str) {
        let b64 = whsec.strip_prefix("whsec_").expect("whsec_ prefix");
        *self.secret.lock().unwrap() = STANDARD.decode(b64).expect("base64 secret");
    }

    fn seen<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.seen.lock().unwrap())
    }

    /// Waits until events of every type in `types` arrived; returns them.
    fn wait_for(&self, types: &[&str]) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: Vec<Value> = self.seen(|s| s.events.values().cloned().collect());
            if types.iter().all(|t| got.iter().any(|e| e["type"] == *t)) {
                return got;
            }
            assert!(Instant::now() < deadline, "waited for {types:?}; got {got:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn receive(mut rq: tiny_http::Request, seen: &Mutex<Seen>, secret: &Mutex<Vec<u8>>) {
    let mut body = String::new();
    let _ = rq.as_reader().read_to_string(&mut body);
    let header = |name: &'static str| {
        rq.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str().to_owned()).unwrap_or_default()
    };
    let (id, ts, sig) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.lock().unwrap()).expect("key");
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let fresh = ts.parse::<i64>().is_ok_and(|t| (t - now_s()).abs() < 300);
    let status = {
        let mut s = seen.lock().unwrap();
        s.attempts += 1;
        if sig.split(' ').all(|v| v != expected) || !fresh {
            s.bad_signatures += 1;
            400
        } else if s.down {
            503
        } else if s.fail_next > 0 {
            s.fail_next -= 1;
            500
        } else {
            let event: Value = serde_json::from_str(&body).expect("JSON event");
            assert_eq!(event["id"], id.as_str(), "webhook-id is the event id");
            *s.copies.entry(id.clone()).or_default() += 1;
            s.events.entry(id).or_insert(event);
            200
        }
    };
    let _ = rq.respond(tiny_http::Response::empty(status));
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Adds the receiver as an endpoint through the admin API.
fn subscribe(app: &TestApp, receiver: &Receiver, events: Value) -> Value {
    let r = app.client.create_webhook(&app.admin, json!({"url": receiver.url, "events": events}));
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    receiver.set_secret(created["secret"].as_str().expect("the secret, once"));
    created
}

#[test]
fn webhooks_are_signed_retried_and_each_event_arrives_once_after_de_duplication() {
    let receiver = Receiver::start();
    receiver.seen(|s| s.fail_next = 3);
    let app = TestApp::spawn_with(|c| c.events.credits_low_threshold = 50);
    let created = subscribe(&app, &receiver, json!([]));
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let listed = app.client.get(ADMIN_WEBHOOKS, &app.admin).json();
    assert_eq!(listed["data"][0]["id"], created["id"]);
    assert!(listed["data"][0].get("secret").is_none(), "the secret is shown only at creation");

    let ann = app.user("ann");
    app.grant(&ann, 100);
    assert_eq!(app.consume(&ann, 30).status, 201);
    assert_eq!(app.consume(&ann, 30).status, 201, "100 -> 70 -> 40 crosses 50 here");
    assert_eq!(app.consume(&ann, 30).status, 201, "40 -> 10: still below, no second credits.low");
    let got = receiver.wait_for(&["user.created", "credits.granted", "credits.low"]);
    let low: Vec<&Value> = got.iter().filter(|e| e["type"] == "credits.low").collect();
    assert_eq!(low.len(), 1, "once per crossing: {low:?}");
    assert_eq!(low[0]["data"], json!({"user_id": ann.id, "available": 40, "threshold": 50}));
    let granted = got.iter().find(|e| e["type"] == "credits.granted").unwrap();
    assert_eq!(
        (granted["data"]["user_id"].as_str(), granted["data"]["amount"].as_i64()),
        (Some(ann.id.as_str()), Some(100))
    );
    assert!(granted["id"].as_str().unwrap().starts_with("evt_") && granted["created_at"].is_string());
    receiver.seen(|s| {
        assert_eq!(s.bad_signatures, 0, "every signature verified");
        assert!(s.attempts >= s.events.len() + 3, "the first attempts failed and were retried");
    });

    // Every delivery ends delivered; a redelivery sends the same event id.
    let deadline = Instant::now() + Duration::from_secs(10);
    let deliveries = loop {
        let d = app.client.get("/v1/admin/webhook-deliveries?status=pending", &app.admin).json();
        if d["data"].as_array().unwrap().is_empty() {
            break app.client.get("/v1/admin/webhook-deliveries", &app.admin).json();
        }
        assert!(Instant::now() < deadline, "deliveries still pending: {d}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let first = deliveries["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((first["status"].as_str(), first["last_status_code"].as_u64()), (Some("delivered"), Some(200)));
    assert!(first["attempts"].as_u64().unwrap() >= 2, "{first}");
    let again = app.client.post(
        &format!("/v1/admin/webhook-deliveries/{}/redeliver", first["id"].as_str().unwrap()),
        &app.admin,
        json!({}),
    );
    assert_eq!(again.status, 202, "{}", again.text());
    let id = first["event_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.seen(|s| s.copies.get(&id).copied().unwrap_or(0)) < 2 {
        assert!(Instant::now() < deadline, "the redelivery never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(receiver.seen(|s| s.events.len()), got.len(), "the copy de-duplicates into the same event");

    // Bad input changes nothing.
    let bad = app.client.create_webhook(&app.admin, json!({"url": receiver.url, "events": ["job.exploded"]}));
    assert_eq!((bad.status, bad.error_code()), (400, "invalid_request".to_owned()));
    let bad = app.client.create_webhook(&app.admin, json!({"url": "ftp://example.com/x"}));
    assert_eq!((bad.status, bad.error_code()), (400, "webhook_url_refused".to_owned()));
    let bad = app.client.get("/v1/admin/webhook-deliveries?status=lost", &app.admin);
    assert_eq!(bad.status, 400);
    let not_admin = app.client.get(ADMIN_WEBHOOKS, &ann.token);
    assert_eq!(not_admin.status, 403);
    assert_eq!(app.count("webhook_endpoints"), 1);
    let del = app
        .client
        .request(
            "DELETE",
            &format!("/v1/admin/webhooks/{}", created["id"].as_str().unwrap()),
            Some(&app.admin),
            &[],
            None,
        )
        .unwrap();
    assert_eq!(del.status, 200, "{}", del.text());
    assert_eq!(app.client.get(ADMIN_WEBHOOKS, &app.admin).json()["data"], json!([]));
}

#[test]
fn webhook_urls_to_private_addresses_are_refused_unless_allowed() {
    let app = TestApp::spawn_with(|c| c.events.allow_private_urls = false);
    for url in ["http://127.0.0.1:9/hooks", "http://localhost/hooks", "http://169.254.169.254/latest", "http://[::1]/"]
    {
        let r = app.client.create_webhook(&app.admin, json!({"url": url}));
        assert_eq!((r.status, r.error_code()), (400, "webhook_url_refused".to_owned()), "{url}");
    }
    // At the limits: a URL of URL_BYTES_MAX + 1 bytes, a description of
    // DESCRIPTION_CHARS_MAX + 1 characters, EVENT_TYPES_MAX + 1 types.
    let long = format!("http://8.8.8.8/{}", "a".repeat(tollgate::events::url_guard::URL_BYTES_MAX - 14));
    assert_eq!(long.len(), tollgate::events::url_guard::URL_BYTES_MAX + 1);
    let r = app.client.create_webhook(&app.admin, json!({"url": long}));
    assert_eq!((r.status, r.error_code()), (400, "webhook_url_refused".to_owned()));
    let r = app.client.create_webhook(&app.admin,
        json!({"url": "http://8.8.8.8/h", "description": "d".repeat(tollgate::events::endpoints::DESCRIPTION_CHARS_MAX + 1)}),
    );
    assert_eq!((r.status, r.error_code()), (400, "invalid_request".to_owned()));
    let types = vec!["job.completed"; tollgate::domain::EVENT_TYPES_MAX + 1];
    let r = app.client.create_webhook(&app.admin, json!({"url": "http://8.8.8.8/h", "events": types}));
    assert_eq!((r.status, r.error_code()), (400, "invalid_request".to_owned()));
    assert_eq!(app.count("webhook_endpoints"), 0);
}

#[test]
fn an_event_committed_before_sigkill_is_delivered_after_the_restart() {
    crate::sqlite_only!();
    let receiver = Receiver::start();
    receiver.seen(|s| s.down = true);
    let (secret, _) = tollgate::events::signing::Secret::generate().unwrap();
    receiver.set_secret(&secret);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let config = write_config(
        dir.path(),
        &format!(
            "[events]\nallow_private_urls = true\nbackoff_base_ms = 100\nbackoff_max_ms = 300\n\n[[webhooks]]\nurl = \"{}\"\nsecret_env = \"HOOK_SECRET\"\nevents = [\"user.created\"]\n",
            receiver.url
        ),
    );
    let env = [
        ("TOLLGATE_CONFIG", config.to_str().unwrap()),
        ("HOOK_SECRET", secret.as_str()),
        ("TOLLGATE_SERVER_SQLITE_SYNCHRONOUS", "full"),
    ];
    let mut server = serve_process(&db, &env);
    let admin = server.client.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    let r = server.client.create_user(&admin, json!({"email": "late@example.com", "password": PASSWORD}));
    assert_eq!(r.status, 201);
    let user = r.json()["id"].as_str().unwrap().to_owned();
    // Committed, tried, refused by the receiver: then the process dies.
    let t = Instant::now();
    while receiver.seen(|s| s.attempts) < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "no attempt reached the receiver");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    assert!(receiver.seen(|s| s.events.is_empty()));
    receiver.seen(|s| s.down = false);

    let _server = serve_process(&db, &env);
    let got = receiver.wait_for(&["user.created"]);
    let created: Vec<&Value> = got.iter().filter(|e| e["data"]["id"] == user.as_str()).collect();
    assert_eq!(created.len(), 1, "{got:?}");
    assert_eq!(created[0]["data"]["email"], "late@example.com");
    assert_eq!(receiver.seen(|s| s.bad_signatures), 0);
}

fn with_video(fake: &FakeProvider) -> impl FnOnce(&mut Config) {
    let base = fake.base.clone();
    move |c| {
        c.jobs.poll_interval_min_ms = 20;
        c.jobs.poll_interval_max_ms = 50;
        c.providers.insert(
            "ds".into(),
            ProviderConfig {
                kind: "dashscope".into(),
                base_url: Some(base),
                api_key_env: None,
                connect_timeout_ms: 1000,
                read_timeout_ms: 2000,
                breaker_failures: 3,
                breaker_cool_down_ms: 200,
                breaker_callers: 2,
                breaker_window_ms: 60_000,
            },
        );
        c.models.push(model_config(
            "wan-video",
            "video",
            &[("ds", "wan-upstream")],
            PriceConfig { per_video_second: 7, ..PriceConfig::default() },
        ));
    }
}

fn video_job(app: &TestApp, token: &str) -> String {
    let r = app.client.create_job(
        token,
        json!({"type": "video_generation", "model": "wan-video", "input": {"prompt": "a cat", "duration_s": 5}}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

fn wait_status(app: &TestApp, token: &str, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = app.client.get(&format!("/v1/jobs/{id}"), token).json();
        if j["status"] == status {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} stuck in {}", j["status"]);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One SSE event: (id, event, data).
type Sse = (Option<String>, String, Value);

/// Reads events from a raw HTTP/1.1 stream until it ends or `max` came.
fn read_sse(base: &str, path: &str, token: &str, last_event_id: Option<&str>, max: usize) -> (u16, Vec<Sse>) {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let resume = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{resume}Connection: close\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut status_line = String::new();
    r.read_line(&mut status_line).unwrap();
    let status: u16 = status_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut chunked = false;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.to_ascii_lowercase().starts_with("transfer-encoding: chunked") {
            chunked = true;
        }
        if h == "\r\n" {
            break;
        }
    }
    // The body, de-chunked as it comes; events parsed from whole blocks.
    let mut text = String::new();
    let mut events = Vec::new();
    loop {
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for l in block.lines() {
                if let Some(v) = l.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = l.strip_prefix("event: ") {
                    event = v.to_owned();
                } else if let Some(v) = l.strip_prefix("data: ") {
                    data = v.to_owned();
                }
            }
            if !event.is_empty() {
                events.push((id, event, serde_json::from_str(&data).unwrap_or(Value::Null)));
            }
        }
        if events.len() >= max {
            break;
        }
        let mut piece = Vec::new();
        if chunked {
            let mut size = String::new();
            if r.read_line(&mut size).unwrap_or(0) == 0 {
                break;
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            piece.resize(n + 2, 0);
            if r.read_exact(&mut piece).is_err() {
                break;
            }
            piece.truncate(n);
        } else if r.read_to_end(&mut piece).unwrap_or(0) == 0 {
            break;
        }
        let chunk = String::from_utf8_lossy(&piece).into_owned();
        if status != 200 {
            let json_start = chunk.find('{').unwrap_or(0);
            let err = serde_json::from_str(chunk[json_start..].trim()).unwrap_or(Value::Null);
            return (status, vec![(None, "error".into(), err)]);
        }
        text.push_str(&chunk);
    }
    (status, events)
}

#[test]
fn a_job_event_stream_shows_every_transition_in_order_and_resumes_after_a_reconnect() {
    let fake = FakeProvider::start();
    fake.script(|s| s.task_polls = 3);
    let receiver = Receiver::start();
    let app = TestApp::spawn_with(with_video(&fake));
    subscribe(&app, &receiver, json!(["job.completed", "job.failed", "job.canceled"]));
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let id = video_job(&app, &ann.token);
    let path = format!("/v1/jobs/{id}/events");
    let (status, events) = read_sse(&app.client.base, &path, &ann.token, None, 100);
    assert_eq!(status, 200);
    let kinds: Vec<(&str, Option<&str>)> = events.iter().map(|(_, e, d)| (e.as_str(), d["status"].as_str())).collect();
    assert_eq!(
        kinds,
        [
            ("status", Some("queued")),
            ("status", Some("processing")),
            ("status", Some("completed")),
            ("job", Some("completed"))
        ],
        "{events:?}"
    );
    let ids: Vec<i64> = events.iter().filter_map(|(id, _, _)| id.as_deref()?.parse().ok()).collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "ids only grow: {ids:?}");
    let job = &events[3].2;
    assert_eq!(job["output"]["kept"], true);

    // Reconnecting after the first event misses nothing and repeats nothing.
    let first = events[0].0.clone().unwrap();
    let (_, rest) = read_sse(&app.client.base, &path, &ann.token, Some(&first), 100);
    let statuses: Vec<&str> = rest.iter().map(|(_, _, d)| d["status"].as_str().unwrap_or("")).collect();
    assert_eq!(statuses, ["processing", "completed", "completed"]);

    // Another user's job does not exist for them; a bad id is refused.
    let bob = app.user("bob");
    let (status, err) = read_sse(&app.client.base, &path, &bob.token, None, 1);
    assert_eq!((status, err[0].2["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, _) = read_sse(&app.client.base, &path, &ann.token, Some("nope"), 1);
    assert_eq!(status, 400);

    // The webhook carried the same final job.
    let got = receiver.wait_for(&["job.completed"]);
    assert_eq!(got[0]["data"]["id"], id.as_str());
    assert_eq!(got[0]["data"]["status"], "completed");
}

#[test]
fn job_event_streams_are_bounded_per_user() {
    let fake = FakeProvider::start();
    fake.script(|s| s.task_polls = 1_000_000);
    let app = TestApp::spawn_with(|c| {
        with_video(&fake)(c);
        c.jobs.streams_per_user_max = 2;
        c.jobs.stream_duration_s_max = 3;
    });
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let id = video_job(&app, &ann.token);
    let path = format!("/v1/jobs/{id}/events");
    let open: Vec<_> = (0..2)
        .map(|_| {
            let (base, path, token) = (app.client.base.clone(), path.clone(), ann.token.clone());
            std::thread::spawn(move || read_sse(&base, &path, &token, None, 100))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (status, err) = read_sse(&app.client.base, &path, &ann.token, None, 1);
    assert_eq!((status, err[0].2["error"]["code"].as_str()), (429, Some("too_many_streams")));
    for h in open {
        let (status, events) = h.join().unwrap();
        assert_eq!(status, 200, "the open streams end at their time limit");
        assert!(events.iter().any(|(_, _, d)| d["status"] == "processing"), "{events:?}");
    }
    let (status, _) = read_sse(&app.client.base, &path, &ann.token, None, 1);
    assert_eq!(status, 200, "closed streams free their slots");
}

#[test]
fn kept_outputs_outlive_the_provider_url_with_signed_urls_and_ranges() {
    let fake = FakeProvider::start();
    let app = TestApp::spawn_with(|c| {
        with_video(&fake)(c);
        c.media.signed_url_ttl_s = 1;
    });
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let id = video_job(&app, &ann.token);
    let job = wait_status(&app, &ann.token, &id, "completed");
    let out = &job["output"];
    assert_eq!(out["kept"], true, "{out}");
    let provider_url = out["provider_url"].as_str().unwrap();
    let expected = media_bytes(provider_url.trim_start_matches(&fake.base), 256 * 1024);
    let file = &out["file"];
    assert_eq!(
        (file["content_type"].as_str(), file["bytes"].as_u64()),
        (Some("video/mp4"), Some(expected.len() as u64))
    );
    assert_eq!(out["video_url"], format!("/v1/files/{}/content", file["id"].as_str().unwrap()));

    // The provider's URL dies; tollgate still serves the bytes.
    fake.script(|s| s.media_gone = true);
    let url = out["video_url"].as_str().unwrap();
    let whole = app.client.get(url, &ann.token);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-type"), Some("video/mp4"));
    assert!(whole.body == expected, "the kept bytes are the provider's");
    let ranged = app.client.request("GET", url, Some(&ann.token), &[("Range", "bytes=10-19")], None).unwrap();
    assert_eq!(ranged.status, 206);
    assert_eq!(ranged.header("content-range"), Some(format!("bytes 10-19/{}", expected.len()).as_str()));
    assert_eq!(ranged.body, expected[10..20]);
    let tail = app.client.request("GET", url, Some(&ann.token), &[("Range", "bytes=-5")], None).unwrap();
    assert_eq!(tail.body, expected[expected.len() - 5..]);
    let past = app
        .client
        .request("GET", url, Some(&ann.token), &[("Range", &format!("bytes={}-", expected.len()))], None)
        .unwrap();
    assert_eq!((past.status, past.error_code()), (416, "range_not_satisfiable".to_owned()));

    // A signed URL works without a credential, until it expires; tampered is 403.
    let signed = out["file"]["signed_url"].as_str().unwrap().to_owned();
    let anon = app.client.request("GET", &signed, None, &[], None).unwrap();
    assert_eq!(anon.status, 200);
    assert!(anon.body == expected);
    let tampered = signed.replace("signature=", "signature=A");
    let r = app.client.request("GET", &tampered, None, &[], None).unwrap();
    assert_eq!((r.status, r.error_code()), (403, "invalid_signature".to_owned()));
    let other = signed.replace(file["id"].as_str().unwrap(), "file_999");
    assert_eq!(app.client.request("GET", &other, None, &[], None).unwrap().status, 403, "a signature names its file");
    let no_auth = app.client.request("GET", url, None, &[], None).unwrap();
    assert_eq!(no_auth.status, 401);
    let bob = app.user("bob");
    assert_eq!(app.client.get(url, &bob.token).status, 404, "another user's file does not exist for them");
    std::thread::sleep(Duration::from_millis(2_100));
    let r = app.client.request("GET", &signed, None, &[], None).unwrap();
    assert_eq!((r.status, r.error_code()), (403, "url_expired".to_owned()));
    let fresh = app.client.get(&format!("/v1/files/{}", file["id"].as_str().unwrap()), &ann.token).json();
    assert_eq!(app.client.request("GET", fresh["signed_url"].as_str().unwrap(), None, &[], None).unwrap().status, 200);

    // An output that cannot be fetched: the job still completes, not kept.
    let id = video_job(&app, &ann.token);
    let job = wait_status(&app, &ann.token, &id, "completed");
    assert_eq!(job["output"]["kept"], false, "{}", job["output"]);
    assert!(job["output"]["video_url"].as_str().unwrap().starts_with(&fake.base));
    assert!(job["credit_cost"].as_i64().unwrap() > 0, "the generation was paid for");
    let logs = app.client.get("/v1/admin/logs?log_type=system", &app.admin).json().to_string();
    assert!(logs.contains("job_output_not_kept"), "{logs}");
    assert_eq!(app.audit()["valid"], true);
}

#[test]
fn an_output_over_the_size_limit_stays_at_the_provider() {
    let fake = FakeProvider::start();
    fake.script(|s| s.video_bytes = 4_097);
    let app = TestApp::spawn_with(|c| {
        with_video(&fake)(c);
        c.media.file_bytes_max = 4_096;
    });
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let id = video_job(&app, &ann.token);
    let job = wait_status(&app, &ann.token, &id, "completed");
    assert_eq!(job["output"]["kept"], false, "one byte over file_bytes_max: {}", job["output"]);
    assert_eq!(app.count("files"), 0);
    fake.script(|s| s.video_bytes = 4_096);
    let id = video_job(&app, &ann.token);
    let job = wait_status(&app, &ann.token, &id, "completed");
    assert_eq!(job["output"]["kept"], true, "exactly file_bytes_max is kept: {}", job["output"]);
}

#[test]
fn a_download_that_fails_at_first_is_retried_and_kept() {
    let fake = FakeProvider::start();
    fake.script(|s| s.media_fail_next = 2);
    let app = TestApp::spawn_with(with_video(&fake));
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let id = video_job(&app, &ann.token);
    let job = wait_status(&app, &ann.token, &id, "completed");
    assert_eq!(job["output"]["kept"], true, "{}", job["output"]);
    assert_eq!(fake.count("/media/"), 3, "two failures, then the download");
}

#[test]
fn a_backup_taken_while_jobs_complete_restores_every_kept_output_with_its_checksum() {
    crate::sqlite_only!();
    let fake = FakeProvider::start();
    fake.script(|s| s.video_bytes = 64 * 1024);
    let app = TestApp::spawn_with(with_video(&fake));
    let ann = app.user("ann");
    app.grant(&ann, 100_000);
    let ids: Vec<String> = (0..12).map(|_| video_job(&app, &ann.token)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let out = tempfile::tempdir().unwrap();
    let backup = out.path().join("mid.db");
    let media = tollgate::ops::media_beside(&app.db_path());
    let report = tollgate::ops::backup(&app.db_path(), &media, &backup).expect("backup while jobs run");
    assert!(report.audit.valid);
    for id in &ids {
        wait_status(&app, &ann.token, id, "completed");
    }
    let after = out.path().join("after.db");
    let report = tollgate::ops::backup(&app.db_path(), &media, &after).expect("backup");
    assert_eq!(report.media_files, 12, "one file per video");

    for file in [backup, after] {
        let place = tempfile::tempdir().unwrap();
        let db = place.path().join("restored.db");
        let restored_media = tollgate::ops::media_beside(&db);
        let r = tollgate::ops::restore(&db, &restored_media, &file, false).expect("restore");
        let c = rusqlite::Connection::open(&db).unwrap();
        let rows: Vec<(String, i64)> = c
            .prepare("SELECT sha256, bytes FROM files WHERE deleted_at IS NULL")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(r.media_files, rows.len());
        for (sha, bytes) in rows {
            let data = std::fs::read(tollgate::media::content_path(&restored_media, &sha)).expect("kept file restored");
            assert_eq!(data.len() as i64, bytes);
            assert_eq!(tollgate::support::token::hex(&<Sha256 as sha2::Digest>::digest(&data)), sha);
        }
        let o = bin().args(["audit", "--db"]).arg(&db).output().unwrap();
        assert!(o.status.success(), "audit of the restored copy: {}", String::from_utf8_lossy(&o.stdout));
    }
    // A damaged kept file in a backup is refused, and changes nothing.
    let damaged = out.path().join("after.db.media");
    let victim = std::fs::read_dir(&damaged).unwrap().flatten().find(|e| e.path().is_dir()).unwrap().path();
    let f = std::fs::read_dir(&victim).unwrap().flatten().next().unwrap().path();
    std::fs::remove_file(&f).unwrap();
    std::fs::write(&f, b"garbage").unwrap();
    let place = tempfile::tempdir().unwrap();
    let db = place.path().join("restored.db");
    let err = tollgate::ops::restore(&db, &tollgate::ops::media_beside(&db), &out.path().join("after.db"), false)
        .unwrap_err();
    assert!(err.contains("checksum"), "{err}");
    assert!(!db.exists(), "nothing restored");
}

/// p50 and p99 of `n` sequential consumes, in ms (reported, not asserted:
/// speed is for benchmarks; this shows the outage next to the baseline).
fn consume_latency_ms(app: &TestApp, user: &TestUser, n: usize) -> (f64, f64) {
    let mut ms: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(app.consume(user, 1).status, 201);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[n / 2], ms[n * 99 / 100])
}

#[test]
fn a_thousand_job_events_wait_out_a_receiver_outage_and_all_arrive() {
    let receiver = Receiver::start();
    receiver.seen(|s| s.down = true);
    let app = Arc::new(TestApp::spawn());
    subscribe(&app, &receiver, json!(["job.completed"]));
    let probe = app.user("probe");
    app.grant(&probe, 100_000);
    let before = consume_latency_ms(&app, &probe, 300);
    let users: Vec<TestUser> = (0..10).map(|i| app.user(&format!("u{i}"))).collect();
    for u in &users {
        app.grant(u, 1_000_000);
    }
    let handles: Vec<_> = users
        .into_iter()
        .map(|u| {
            let app = Arc::clone(&app);
            std::thread::spawn(move || {
                for k in 0..100 {
                    let body = json!({"type": "text_generation", "model": "dev-chat", "input": {"prompt": format!("p{k}"), "max_tokens": 16}});
                    let r = app.client.create_job(&u.token, body);
                    assert_eq!(r.status, 202, "{}", r.text());
                }
            })
        })
        .collect();
    let during = consume_latency_ms(&app, &probe, 300);
    for h in handles {
        h.join().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while app.count_where("jobs", "status = 'completed'") < 1000 {
        assert!(Instant::now() < deadline, "jobs did not complete");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(receiver.seen(|s| s.attempts) > 0 && receiver.seen(|s| s.events.is_empty()), "the receiver was down");
    receiver.seen(|s| s.down = false);
    let deadline = Instant::now() + Duration::from_secs(120);
    while receiver.seen(|s| s.events.len()) < 1000 {
        assert!(Instant::now() < deadline, "only {} of 1000 events arrived", receiver.seen(|s| s.events.len()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let jobs: std::collections::HashSet<String> =
        receiver.seen(|s| s.events.values().map(|e| e["data"]["id"].as_str().unwrap().to_owned()).collect());
    assert_eq!(jobs.len(), 1000, "one event per job, none lost");
    assert_eq!(receiver.seen(|s| s.bad_signatures), 0);
    eprintln!(
        "consume latency: before p50 {:.2} ms p99 {:.2} ms; while 1,000 jobs completed into a dead receiver p50 {:.2} ms p99 {:.2} ms",
        before.0, before.1, during.0, during.1
    );
    assert_eq!(app.audit()["valid"], true);
}

/// A new key for `TOLLGATE_SECRET_KEY`, from the CLI.
fn new_key() -> String {
    let out = bin().args(["secrets", "new-key"]).output().expect("run tollgate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Every byte the database keeps on disk: the file and its WAL.
fn db_bytes(dir: &std::path::Path) -> Vec<u8> {
    ["tollgate.db", "tollgate.db-wal"].iter().filter_map(|f| std::fs::read(dir.join(f)).ok()).flatten().collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Waits until `n` events of type `t` arrived, every signature verified.
fn wait_for_n(receiver: &Receiver, t: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.seen(|s| s.events.values().filter(|e| e["type"] == t).count()) < n {
        assert!(Instant::now() < deadline, "waited for {n} {t}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(receiver.seen(|s| s.bad_signatures), 0, "every signature verified");
}

#[test]
fn stored_webhook_secrets_are_sealed_need_their_key_to_start_and_rotate() {
    if engine_is_postgres() {
        return; // the bytes checked here are SQLite's file; sealing itself is the same on both engines
    }
    let (key1, key2) = (new_key(), new_key());
    let receiver = Receiver::start();
    // Created before any key: stored in clear, as before.
    let app = TestApp::spawn();
    let secret0 = subscribe(&app, &receiver, json!(["user.created"]))["secret"].as_str().unwrap().to_owned();
    let dir = app.restart_stopped();
    let mut config = test_config(&dir);
    config.server.addr = "127.0.0.1:0".into();
    let db = dir.path().join("tollgate.db");
    assert!(contains(&db_bytes(dir.path()), &secret0[6..]), "in clear without a key");

    // The first start with a key seals it; an endpoint made now is sealed at once.
    let app = TestApp::start_in_with_secrets(dir, config.clone(), &[("TOLLGATE_SECRET_KEY", &key1)]);
    let r =
        app.client.create_webhook(&app.admin, json!({"url": "http://127.0.0.1:9/never", "events": ["job.completed"]}));
    assert_eq!(r.status, 201, "{}", r.text());
    let secret1 = r.json()["secret"].as_str().unwrap().to_owned();
    app.user("ann");
    wait_for_n(&receiver, "user.created", 1);
    let dir = app.restart_stopped();
    let backup = dir.path().join("backup.db");
    let out = bin().args(["backup", backup.to_str().unwrap(), "--db", db.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for bytes in [db_bytes(dir.path()), std::fs::read(&backup).unwrap()] {
        assert!(!contains(&bytes, &secret0[6..]) && !contains(&bytes, &secret1[6..]), "no secret in clear on disk");
    }

    // Without the key, or with another, the start is refused and says why.
    let none = try_start(&config, &[]).unwrap_err();
    assert!(none.contains("TOLLGATE_SECRET_KEY"), "{none}");
    let wrong = try_start(&config, &[("TOLLGATE_SECRET_KEY", &key2)]).unwrap_err();
    assert!(wrong.contains("wrong TOLLGATE_SECRET_KEY"), "{wrong}");
    let bad = try_start(&config, &[("TOLLGATE_SECRET_KEY", "not a key")]).unwrap_err();
    assert!(bad.contains("TOLLGATE_SECRET_KEY") && bad.contains("base64"), "{bad}");

    // Rotation seals both with the new key; the old one no longer opens them.
    let out = bin()
        .args(["secrets", "rotate", "--db", db.to_str().unwrap()])
        .env("TOLLGATE_SECRET_KEY", &key1)
        .env("TOLLGATE_SECRET_KEY_NEW", &key2)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sealed 2"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(try_start(&config, &[("TOLLGATE_SECRET_KEY", &key1)]).is_err());
    let app = TestApp::start_in_with_secrets(dir, config, &[("TOLLGATE_SECRET_KEY", &key2)]);
    app.user("bob");
    wait_for_n(&receiver, "user.created", 2);
}

#[test]
fn outputs_on_private_addresses_are_not_downloaded_unless_allowed() {
    let fake = FakeProvider::start();
    let app = TestApp::spawn_with(|c| {
        with_video(&fake)(c);
        // The provider answers with URLs on 127.0.0.1: an SSRF target once
        // an output URL is the provider's (or an attacker's) to choose.
        c.media.allow_private_urls = false;
    });
    let ann = app.user("ann");
    app.grant(&ann, 1_000);
    let id = video_job(&app, &ann.token);
    let job = wait_status(&app, &ann.token, &id, "completed");
    assert_eq!(job["output"]["kept"], false, "{}", job["output"]);
    assert_eq!(fake.count("/media/"), 0, "not one connection to the private address");
    assert_eq!(app.count("files"), 0);
}
