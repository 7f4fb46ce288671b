//! The front door under abuse, over real sockets: slow and silent clients,
//! oversized heads, framing tricks, descriptor exhaustion and login floods.
//! Each attack is bounded in count and time, and each test checks that a
//! normal client is still served while it runs.

use crate::helpers::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn addr_of(client: &Client) -> String {
    client.base.trim_start_matches("http://").to_owned()
}

/// Sends `bytes` on a new connection and reads until the server closes it
/// (or `wait` passes): everything the server answered.
fn exchange(addr: &str, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(wait)).unwrap();
    // A server that answers early and closes may reset the rest of a write.
    let _ = s.write_all(bytes);
    read_to_close(&mut s)
}

fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn responses_in(text: &str) -> usize {
    text.matches("HTTP/1.1 ").count()
}

/// The `error.code` of the one response in `text`.
fn code_in(text: &str) -> String {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON error body ({e}): {text:?}"));
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

fn p99(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms[(ms.len() * 99 / 100).min(ms.len() - 1)]
}

#[test]
fn a_thousand_slowloris_sockets_get_408_while_a_normal_client_is_served_fast() {
    let app = TestApp::spawn_with(|c| c.server.head_timeout_s = 4);
    let ann = app.user("ann");
    let addr = addr_of(&app.client);
    let mut sockets: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let s = TcpStream::connect(&addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    // One header byte per socket every second: never a whole head.
    let dripper = {
        let stop = Arc::clone(&stop);
        let mut writers: Vec<TcpStream> = sockets.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            let head = b"GET /v1/me HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let started = Instant::now();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(20) && i < head.len() {
                for w in &mut writers {
                    let _ = w.write_all(&head[i..=i]);
                }
                i += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        assert_eq!(app.client.me(&ann.token).status, 200);
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(5));
    }
    let p99_ms = p99(latencies.clone());
    assert!(p99_ms < 50.0, "p99 {p99_ms:.1} ms over {} requests during the attack", latencies.len());
    // Past the head deadline every slow socket has its answer and is closed.
    let mut timed_out = 0;
    for s in &mut sockets {
        let text = read_to_close(s);
        if text.starts_with("HTTP/1.1 408") && code_in(&text) == "request_timeout" {
            timed_out += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    dripper.join().unwrap();
    assert_eq!(timed_out, 1000, "every slowloris socket got 408 and a close");
    assert_eq!(app.client.me(&ann.token).status, 200);
}

#[test]
fn two_hundred_silent_bodies_hold_no_worker_and_then_get_408() {
    let app = TestApp::spawn_with(|c| c.server.body_timeout_min_s = 3);
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let addr = addr_of(&app.client);
    let mut silent: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let head = format!(
                "POST /v1/credits/consume HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 2000\r\n\r\n",
                ann.token
            );
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    // A chunked body announcing an enormous chunk and sending nothing.
    let mut huge_chunk = TcpStream::connect(&addr).unwrap();
    huge_chunk.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    huge_chunk
        .write_all(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab",
        )
        .unwrap();
    // 16 HTTP workers and 200 stuck bodies: logins and consumes still answer.
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(app.consume(&ann, 1).status, 201);
    }
    assert_eq!(app.client.login(&ann.email, PASSWORD).status, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "served in {:?}", t.elapsed());
    let text = read_to_close(&mut huge_chunk);
    assert!(text.starts_with("HTTP/1.1 413"), "an announced chunk over the limit is refused at once: {text:?}");
    let mut timed_out = 0;
    for s in &mut silent {
        let text = read_to_close(s);
        timed_out += usize::from(text.starts_with("HTTP/1.1 408") && responses_in(&text) == 1);
    }
    assert_eq!(timed_out, 200);
    assert_eq!(app.balance(&ann)["balance"], 80, "only the 20 real consumes were charged");
}

#[test]
fn oversized_heads_urls_and_header_counts_get_431_or_414_with_memory_bounded() {
    crate::sqlite_only!();
    let dir = tempfile::tempdir().unwrap();
    let server = serve_process(&dir.path().join("t.db"), &[]);
    let addr = addr_of(&server.client);
    let pid = server.child.id();
    // Warm up, then measure from here.
    assert_eq!(server.client.request("GET", "/healthz", None, &[], None).unwrap().status, 200);
    let (before, _) = rss_kib(pid);
    let line = format!("GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
    let many = format!("GET /healthz HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(100_000));
    let url = format!("GET /{} HTTP/1.1\r\n\r\n", "u".repeat(1 << 20));
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let (addr, line, many, url) = (addr.clone(), line.clone(), many.clone(), url.clone());
            std::thread::spawn(move || {
                let (bytes, status, code) = match i % 3 {
                    0 => (line, "431", "request_header_too_large"),
                    1 => (many, "431", "request_header_too_large"),
                    _ => (url, "414", "uri_too_long"),
                };
                let text = exchange(&addr, bytes.as_bytes(), Duration::from_secs(10));
                assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{}", &text[..text.len().min(200)]);
                assert_eq!(code_in(&text), code);
                assert!(text.contains("Connection: close"));
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // At the limits themselves: exactly 100 headers and an 8 KiB URL pass.
    let hundred = format!("GET /healthz HTTP/1.1\r\n{}Connection: close\r\n\r\n", "A: b\r\n".repeat(99));
    assert!(exchange(&addr, hundred.as_bytes(), Duration::from_secs(5)).starts_with("HTTP/1.1 200"));
    let one_more = format!("GET /healthz HTTP/1.1\r\n{}Connection: close\r\n\r\n", "A: b\r\n".repeat(100));
    assert!(exchange(&addr, one_more.as_bytes(), Duration::from_secs(5)).starts_with("HTTP/1.1 431"));
    // A URL of exactly the limit reaches the router (which refuses the
    // query parameter /healthz does not take: read, not cut off).
    let long_url = format!("GET /healthz?{} HTTP/1.1\r\nConnection: close\r\n\r\n", "q".repeat(8192 - 9));
    let text = exchange(&addr, long_url.as_bytes(), Duration::from_secs(5));
    assert!(
        text.starts_with("HTTP/1.1 400") && code_in(&text) == "unknown_parameter",
        "{}",
        &text[..text.len().min(200)]
    );
    let too_long = format!("GET /healthz?{} HTTP/1.1\r\nConnection: close\r\n\r\n", "q".repeat(8192 - 8));
    assert!(exchange(&addr, too_long.as_bytes(), Duration::from_secs(5)).starts_with("HTTP/1.1 414"));
    let (after, _) = rss_kib(pid);
    let growth_kib = after.saturating_sub(before);
    assert!(growth_kib < 16 * 1024, "RSS grew by {growth_kib} KiB ({before} -> {after})");
    assert_eq!(server.client.request("GET", "/healthz", None, &[], None).unwrap().status, 200);
}

#[test]
fn nothing_after_a_refused_body_is_read_as_a_request() {
    let app = TestApp::spawn_with(|c| c.server.body_bytes_max = 4096);
    let ann = app.user("ann");
    let addr = addr_of(&app.client);
    let hidden = format!("GET /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", ann.token);
    // Declared too large: refused before reading, the rest never parsed.
    let mut body = vec![b'x'; 6000];
    body.extend_from_slice(hidden.as_bytes());
    let head = format!(
        "POST /v1/credits/consume HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        ann.token,
        body.len()
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    let text = exchange(&addr, &bytes, Duration::from_secs(5));
    assert_eq!(responses_in(&text), 1, "{text}");
    assert!(text.starts_with("HTTP/1.1 413") && text.contains("Connection: close"), "{text}");
    // Chunked, growing past the limit: the same.
    let mut bytes = b"POST /v1/credits/consume HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        bytes.extend_from_slice(b"800\r\n");
        bytes.extend_from_slice(&[b'y'; 0x800]);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    bytes.extend_from_slice(hidden.as_bytes());
    let text = exchange(&addr, &bytes, Duration::from_secs(5));
    assert_eq!((responses_in(&text), code_in(&text).as_str()), (1, "payload_too_large"), "{text}");
    // Ambiguous framing is refused, never guessed.
    for framing in [
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Content-Length: -5\r\n",
    ] {
        let req = format!("POST /v1/credits/consume HTTP/1.1\r\nHost: x\r\n{framing}\r\nhello{hidden}");
        let text = exchange(&addr, req.as_bytes(), Duration::from_secs(5));
        assert_eq!(responses_in(&text), 1, "{framing}: {text}");
        assert!(text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 501"), "{framing}: {text}");
    }
    // The body limit itself passes; one byte more does not.
    let ok = format!(
        "POST /v1/credits/consume HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\nContent-Length: 4096\r\n\r\n{}",
        ann.token,
        " ".repeat(4096)
    );
    let text = exchange(&addr, ok.as_bytes(), Duration::from_secs(5));
    assert_eq!(code_in(&text), "invalid_json", "a 4096-byte body is read and parsed: {text}");
    assert_eq!(app.count("credit_transactions"), 0);
}

#[test]
fn invalid_utf8_http2_and_garbage_get_an_answer_and_a_close() {
    let app = TestApp::spawn();
    let addr = addr_of(&app.client);
    for (bytes, status) in [
        (&b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n"[..], "400"),
        (b"GET / HTTP/1.1\r\nHost: \xc3\x28\r\n\r\n", "400"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "505"),
        (b"GET / HTTP/3.0\r\n\r\n", "505"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "400"),
        (b"hello there\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", "400"),
    ] {
        let text = exchange(&addr, bytes, Duration::from_secs(5));
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{:?}: {text:?}", String::from_utf8_lossy(bytes));
        assert!(text.contains("Connection: close"), "{text}");
        assert!(!code_in(&text).is_empty());
    }
    assert_eq!(app.client.request("GET", "/healthz", None, &[], None).unwrap().status, 200);
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(|c| c.server.idle_timeout_s = 1);
    let addr = addr_of(&app.client);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let t = Instant::now();
    let text = read_to_close(&mut s);
    assert_eq!(responses_in(&text), 1);
    assert!(t.elapsed() < Duration::from_secs(5), "closed after {:?}", t.elapsed());
}

#[test]
fn connections_past_the_descriptor_budget_get_503_and_the_server_recovers() {
    crate::sqlite_only!();
    let dir = tempfile::tempdir().unwrap();
    // 256 descriptors: the derived limit is (256 - 128 - 256 / 8) / 2 = 48.
    let server = serve_process_with_fd_limit(&dir.path().join("t.db"), 256, &[]);
    let addr = addr_of(&server.client);
    let mut kept = Vec::new();
    for _ in 0..48 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        kept.push(s);
    }
    let mut refused = 0;
    for _ in 0..60 {
        let text = exchange(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(5));
        if text.starts_with("HTTP/1.1 503") && code_in(&text) == "server_busy" && text.contains("Retry-After") {
            refused += 1;
        }
    }
    assert_eq!(refused, 60, "every connection past the limit is refused with 503");
    drop(kept);
    wait_until_served(&server.client, Duration::from_secs(10));
}

/// Polls `/healthz` until it answers 200; fails after `within`.
fn wait_until_served(client: &Client, within: Duration) {
    let t = Instant::now();
    loop {
        if client.request("GET", "/healthz", None, &[], None).is_ok_and(|r| r.status == 200) {
            return;
        }
        assert!(t.elapsed() < within, "the server did not serve again within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn running_out_of_descriptors_never_stops_the_accept_loop() {
    crate::sqlite_only!();
    let dir = tempfile::tempdir().unwrap();
    // A limit above what the descriptors allow, so accept itself hits EMFILE.
    let server = serve_process_with_fd_limit(
        &dir.path().join("t.db"),
        256,
        &[("TOLLGATE_SERVER_CONNECTIONS_MAX", "10000"), ("TOLLGATE_SERVER_IDLE_TIMEOUT_S", "60")],
    );
    let addr = addr_of(&server.client);
    let mut held = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            held.push(s);
        }
    }
    for s in &mut held {
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    let mut served = 0;
    for s in &mut held {
        let mut buf = [0u8; 256];
        if matches!(s.read(&mut buf), Ok(n) if n > 0 && buf.starts_with(b"HTTP/1.1 200")) {
            served += 1;
        }
    }
    assert!(served < 300, "the descriptor limit should have stopped some accepts (served {served})");
    drop(held);
    wait_until_served(&server.client, Duration::from_secs(15));
}

#[test]
fn a_login_flood_from_a_hundred_ips_keeps_memory_flat() {
    crate::sqlite_only!();
    let dir = tempfile::tempdir().unwrap();
    let server = serve_process(
        &dir.path().join("t.db"),
        &[
            ("TOLLGATE_SERVER_TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
            ("TOLLGATE_AUTH_PASSWORD_HASH_WAIT_MS", "50"),
            ("TOLLGATE_AUTH_LOGIN_RPM_PER_IP", "1000"),
        ],
    );
    let pid = server.child.id();
    let statuses: Arc<Mutex<std::collections::BTreeMap<u16, usize>>> = Arc::default();
    let busy_with_retry = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (client, statuses, next, busy) =
                (server.client.clone(), Arc::clone(&statuses), Arc::clone(&next), Arc::clone(&busy_with_retry));
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= 5_000 {
                        return;
                    }
                    let ip = format!("198.51.100.{}", i % 100);
                    let body = json!({"email": format!("user{}@example.com", i % 37), "password": "wrong-password"});
                    let r = client
                        .request(
                            "POST",
                            "/v1/auth/login",
                            None,
                            &[("X-Forwarded-For", &ip)],
                            Some(body.to_string().as_bytes()),
                        )
                        .expect("login request");
                    if r.status == 503 && r.error_code() == "server_busy" && r.header("Retry-After").is_some() {
                        busy.fetch_add(1, Ordering::Relaxed);
                    }
                    *statuses.lock().unwrap().entry(r.status).or_default() += 1;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let statuses = statuses.lock().unwrap().clone();
    let (_, peak) = rss_kib(pid);
    assert_eq!(statuses.values().sum::<usize>(), 5_000);
    assert!(statuses.keys().all(|s| [401, 429, 503].contains(s)), "{statuses:?}");
    assert_eq!(statuses.get(&503).copied().unwrap_or(0), busy_with_retry.load(Ordering::Relaxed));
    assert!(peak < 128 * 1024, "peak RSS {peak} KiB during 5,000 failed logins ({statuses:?})");
    // The admin still signs in afterwards from an address that did not fail.
    assert_eq!(server.client.login(ADMIN_EMAIL, ADMIN_PASSWORD).status, 200);
}

#[test]
fn the_owner_signs_in_while_their_email_is_attacked_from_other_ips() {
    let app = TestApp::spawn_with(|c| {
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
        c.auth.login_rpm_per_ip = 1_000;
    });
    let ann = app.user("ann");
    let login_from = |ip: &str, pw: &str| {
        let body = json!({"email": ann.email, "password": pw}).to_string();
        app.client.request("POST", "/v1/auth/login", None, &[("X-Forwarded-For", ip)], Some(body.as_bytes())).unwrap()
    };
    let mut checked = 0;
    for round in 0..15 {
        for n in 0..20 {
            let r = login_from(&format!("203.0.113.{n}"), &format!("guess-{round}-{n}"));
            assert!([401, 429].contains(&r.status), "{}", r.text());
            checked += usize::from(r.status == 401);
        }
    }
    // 20 IPs x 15 guesses: each IP's first try, the first free failures,
    // then the email's pace lets only a few more through.
    assert!(checked < 60, "{checked} passwords checked out of 300 guesses");
    let r = login_from("198.51.100.1", PASSWORD);
    assert_eq!(r.status, 200, "the owner, from an IP that never failed: {}", r.text());
    let r = login_from("203.0.113.1", PASSWORD);
    assert_eq!(r.status, 429, "an attacking IP is refused even with the right password");
}

#[test]
fn concurrent_guesses_from_one_ip_check_at_most_the_limit() {
    let app = TestApp::spawn_with(|c| {
        c.auth.login_rpm_per_ip = 1_000;
        c.auth.password_hash_wait_ms = 30_000;
    });
    let ann = app.user("ann");
    let checked = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..100)
        .map(|i| {
            let (client, email, checked) = (app.client.clone(), ann.email.clone(), Arc::clone(&checked));
            std::thread::spawn(move || {
                let r = client.login(&email, &format!("wrong-{i}"));
                assert!([401, 429].contains(&r.status), "{}", r.text());
                if r.status == 401 {
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(checked.load(Ordering::Relaxed), 10, "login_failures_max per (email, IP) is exact under concurrency");
}

#[test]
fn signups_are_limited_per_ip() {
    let app = TestApp::spawn_with(|c| {
        c.auth.signup_enabled = true;
        c.auth.signup_bonus_credits = 50;
        c.auth.signups_per_ip_per_hour = 5;
    });
    let users_before = app.count("users");
    let mut created = 0;
    for i in 0..61 {
        let body = json!({"email": format!("burst{i}@example.com"), "password": PASSWORD}).to_string();
        let r = app.client.request("POST", "/v1/auth/signup", None, &[], Some(body.as_bytes())).unwrap();
        match r.status {
            201 => created += 1,
            429 => assert!(r.wait_s().is_some()),
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    assert_eq!(created, 5);
    assert_eq!(app.count("users") - users_before, 5);
    let body = json!({"email": "burst0@example.com", "password": PASSWORD}).to_string();
    let r = app.client.request("POST", "/v1/auth/signup", Some(&app.admin), &[], Some(body.as_bytes())).unwrap();
    assert_eq!(r.status, 429, "the IP's allowance is spent");
}

#[test]
fn api_key_creation_refuses_an_idempotency_key_so_no_key_is_stored_in_clear() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let body = json!({"name": "ci"}).to_string();
    let r = app.client.post_with(API_KEYS, &ann.token, &[("Idempotency-Key", "k1")], body.as_bytes());
    assert_eq!((r.status, r.error_code().as_str()), (400, "idempotency_not_supported"), "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "Idempotency-Key");
    assert_eq!(app.count("api_keys"), 0);
    let r = app.client.create_key(&ann.token, json!({"name": "ci"}));
    assert_eq!(r.status, 201);
    let key = r.json()["key"].as_str().unwrap().to_owned();
    let bodies: Vec<Vec<u8>> = app
        .db()
        .read(|c| c.query_all("SELECT body FROM idempotency_keys WHERE body IS NOT NULL", &[], |r| r.get(0)))
        .unwrap();
    let stored = bodies.iter().filter(|b| String::from_utf8_lossy(b).contains(&key)).count();
    assert_eq!(stored, 0);
}

#[test]
fn small_edge_cases_get_clear_errors_and_change_nothing() {
    let app = TestApp::spawn_with(|c| c.auth.signup_enabled = true);
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let before = app.count("credit_transactions");
    // i64::MIN used to overflow the range check.
    for amount in [i64::MIN, i64::MAX, -1_000_000_000_001] {
        let r = app.client.post(
            &format!("/v1/admin/users/{}/credits", ann.id),
            &app.admin,
            json!({"amount": amount, "description": "x"}),
        );
        assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("amount")), "{amount}");
    }
    // A repeated key is not silently resolved to its last value.
    let r = app.client.post_with(CONSUME, &ann.token, &[], br#"{"amount":1,"amount":90}"#);
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_json"));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("duplicate key `amount`"));
    assert_eq!(app.count("credit_transactions"), before);
    assert_eq!(app.balance(&ann)["balance"], 100);
    // A taken email on signup is a conflict, not an idempotency error.
    let body = json!({"email": ann.email, "password": PASSWORD}).to_string();
    let r = app.client.request("POST", "/v1/auth/signup", None, &[], Some(body.as_bytes())).unwrap();
    assert_eq!((r.status, r.error_code().as_str()), (409, "email_taken"));
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[test]
fn a_key_and_user_refusal_takes_no_token_from_the_key() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    let key = app.client.create_key(&ann.token, json!({"name": "k"})).json()["key"].as_str().unwrap().to_owned();
    // The user's bucket holds 3: the JWT spends it, then the key is refused
    // by the user's bucket without losing its own tokens.
    let r = app.put_limits(&app.admin, &ann, r#"{"rpm": 60, "burst": 3}"#);
    assert_eq!(r.status, 200);
    for _ in 0..3 {
        assert_eq!(app.client.me(&ann.token).status, 200);
    }
    for _ in 0..5 {
        let r = app.client.me(&key);
        assert_eq!(r.status, 429);
        assert_eq!(r.header("Retry-After"), Some("1"), "one token refills in a second at 60 rpm");
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(app.client.me(&key).status, 200, "the key's bucket was not drained by refusals");
}

#[test]
fn bodies_in_flight_are_bounded_across_connections() {
    let app = TestApp::spawn_with(|c| {
        c.server.body_bytes_max = 64 * 1024;
        c.server.chat_body_bytes_max = 64 * 1024;
        c.server.body_bytes_in_flight_max = 100 * 1024;
    });
    let ann = app.user("ann");
    let addr = addr_of(&app.client);
    let (body, first) = (48 * 1024, 40 * 1024);
    let head = format!(
        "POST /v1/credits/consume HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\nContent-Length: {body}\r\n\r\n",
        ann.token
    );
    // Three bodies of 48 KiB, 40 KiB of each sent: none can finish, and
    // 120 KiB do not fit a 100 KiB pool, so one at least is refused.
    let mut conns: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&vec![b' '; first]).unwrap();
            s
        })
        .collect();
    let answered = |s: &TcpStream| {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let got = s.peek(&mut b).is_ok_and(|n| n > 0);
        s.set_nonblocking(false).unwrap();
        got
    };
    let t = Instant::now();
    while !conns.iter().any(answered) {
        assert!(t.elapsed() < Duration::from_secs(10), "no body was refused");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let refused: Vec<bool> = conns.iter().map(answered).collect();
    let mut busy = 0;
    for (s, refused) in conns.iter_mut().zip(&refused) {
        if !refused {
            // (A second refusal may still land in this instant.)
            let _ = s.write_all(&vec![b' '; body - first]);
        }
        let text = read_to_close(s);
        if text.starts_with("HTTP/1.1 503") {
            assert_eq!(code_in(&text), "server_busy", "{text}");
            busy += 1;
        } else {
            assert!(!refused);
            assert_eq!(code_in(&text), "invalid_json", "a body that fits is read whole and parsed: {text}");
        }
    }
    assert!((1..=2).contains(&busy), "{busy} refused");
    // Every byte goes back to the pool as the requests are dropped.
    let t = Instant::now();
    loop {
        let r = app.client.post_with(CONSUME, &ann.token, &[], &vec![b' '; 60 * 1024]);
        if r.status == 400 {
            assert_eq!(r.error_code(), "invalid_json");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "the pool was not freed: {}", r.text());
        std::thread::sleep(Duration::from_millis(20));
    }
}
