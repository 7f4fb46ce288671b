//! Bad input at the edge: each gets a clear JSON error with a stable code
//! and changes nothing.

use crate::helpers::*;
use serde_json::json;

/// Rows that any accepted write would add to.
fn footprint(app: &TestApp) -> (i64, i64, i64, i64) {
    (app.count("credit_transactions"), app.count("logs"), app.count("users"), app.count("api_keys"))
}

#[test]
fn bad_bodies_get_400_or_413_and_write_nothing() {
    let app = TestApp::spawn_with(|c| c.server.body_bytes_max = 4096);
    let ann = app.user("ann");
    app.grant(&ann, 100);
    let before = footprint(&app);

    let big = vec![b' '; 5000];
    let r = app.client.post_with(CONSUME, &ann.token, &[], &big);
    assert_eq!((r.status, r.error_code().as_str()), (413, "payload_too_large"));

    for (body, code, param) in [
        (&b"{\"amount\": 5"[..], "invalid_json", None),
        (b"", "invalid_json", None),
        (b"[1,2]", "invalid_json", None),
        (b"{}", "invalid_request", Some("amount")),
        (b"{\"amount\": \"5\"}", "invalid_request", Some("amount")),
        (b"{\"amount\": 1.5}", "invalid_request", Some("amount")),
        (b"{\"amount\": 0}", "invalid_request", Some("amount")),
        (b"{\"amount\": -3}", "invalid_request", Some("amount")),
        (b"{\"amount\": 5, \"user_id\": \"usr_1\"}", "invalid_request", None),
    ] {
        let r = app.client.post_with(CONSUME, &ann.token, &[], body);
        assert_eq!(r.status, 400, "{}: {}", String::from_utf8_lossy(body), r.text());
        assert_eq!(r.error_code(), code, "{}", String::from_utf8_lossy(body));
        if let Some(p) = param {
            assert_eq!(r.json()["error"]["param"], p, "{}", String::from_utf8_lossy(body));
        }
    }
    let r = app.client.create_user(&app.admin, json!({"password": PASSWORD}));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("email")));
    let r = app.client.create_user(&app.admin, json!({"email": "not-an-email", "password": PASSWORD}));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("email")));
    let r = app.client.create_user(&app.admin, json!({"email": "x@example.com", "password": "short"}));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("password")));
    let r = app.client.create_key(&ann.token, json!({"name": ""}));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("name")));

    assert_eq!(footprint(&app), before, "a refused request wrote something");
    assert_eq!(app.balance(&ann)["balance"], 100);
}

#[test]
fn a_huge_declared_content_length_is_refused_without_reading_it_and_the_server_lives() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    use std::io::{Read, Write};
    let addr = app.client.base.trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST /v1/credits/consume HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 1000000000000\r\n\r\n{{\"amount\"",
        ann.token
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    drop(s);
    assert_eq!(app.client.me(&ann.token).status, 200, "the server must survive");
}

#[test]
fn unknown_routes_and_methods_get_json_errors() {
    let app = TestApp::spawn();
    let r = app.client.get("/v1/nope", &app.admin);
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    let r = app.client.request("PUT", ME, Some(&app.admin), &[], None).unwrap();
    assert_eq!((r.status, r.error_code().as_str()), (405, "method_not_allowed"));
    let r = app.client.request("GET", "/healthz", None, &[], None).unwrap();
    assert_eq!(r.status, 200);
    let r = app.client.request("GET", "/readyz", None, &[], None).unwrap();
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ready")));
}

#[test]
fn lists_page_newest_first_with_a_cursor_and_bounded_limits() {
    let app = TestApp::spawn();
    let ann = app.user("ann");
    for _ in 0..5 {
        app.grant(&ann, 1);
    }
    let p1 = app.client.get("/v1/credits/transactions?limit=2", &ann.token).json();
    assert_eq!(p1["has_more"], true);
    let ids: Vec<&str> = p1["data"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    let p2 = app.client.get(&format!("/v1/credits/transactions?limit=2&starting_after={}", ids[1]), &ann.token).json();
    let ids2: Vec<&str> = p2["data"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids2.len(), 2);
    let n = |s: &str| s.trim_start_matches("txn_").parse::<i64>().unwrap();
    assert!(n(ids[0]) > n(ids[1]) && n(ids[1]) > n(ids2[0]) && n(ids2[0]) > n(ids2[1]));
    let p3 = app.client.get(&format!("/v1/credits/transactions?limit=2&starting_after={}", ids2[1]), &ann.token).json();
    assert_eq!((p3["data"].as_array().unwrap().len(), p3["has_more"].as_bool()), (1, Some(false)));
    for bad in ["limit=0", "limit=101", "limit=x", "starting_after=job_1", "starting_after=txn_x"] {
        let r = app.client.get(&format!("/v1/credits/transactions?{bad}"), &ann.token);
        assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_request"), "{bad}");
    }
}

/// A TCP connection whose receive buffer is 4 KiB: the server's writes to
/// it block as soon as a little is in flight, as with a client that never
/// reads.
fn tiny_window(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(v4) = addr else { panic!("IPv4 test server") };
    // SAFETY: a fresh socket, configured and connected before it is owned
    // by the TcpStream; every call's result is checked.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        let set = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(set, 0);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let ok = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(ok, 0, "connect");
        std::net::TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn clients_that_never_read_large_answers_slow_nobody_and_are_cut_off_at_their_deadline() {
    use std::io::{Read, Write};
    let app = TestApp::spawn_with(|c| {
        c.server.http_workers = 16;
        c.server.write_timeout_s = 1;
        c.server.body_bytes_per_s_min = 256 * 1024;
    });
    let big = app.client.request("GET", "/openapi.json", None, &[], None).unwrap().body.len();
    assert!(big >= 64 * 1024, "the large answer is {big} bytes");
    let addr: std::net::SocketAddr = app.client.base.trim_start_matches("http://").parse().unwrap();
    // 64 clients ask for it 40 times each (pipelined: more than the
    // kernel's socket buffers hold) and never read.
    const ASKED: usize = 40;
    let slow: Vec<std::net::TcpStream> = (0..64)
        .map(|_| {
            let mut s = tiny_window(addr);
            s.write_all(&b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n".repeat(ASKED)).unwrap();
            s
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // A normal client meanwhile: every answer prompt.
    let mut took: Vec<f64> = (0..200)
        .map(|_| {
            let t = std::time::Instant::now();
            assert_eq!(app.client.request("GET", "/healthz", None, &[], None).unwrap().status, 200);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    took.sort_by(f64::total_cmp);
    let p99 = took[(took.len() * 99) / 100 - 1];
    assert!(p99 < 50.0, "a normal client's p99 was {p99:.1} ms beside 64 clients that never read");
    // Each slow answer has its deadline: 1 s + its bytes at 256 KiB/s, then
    // at most one more blocked write (1 s). Past it the connection is closed
    // with the answer cut short.
    let deadline_s = 1.0 + big as f64 / (256.0 * 1024.0) + 1.0;
    std::thread::sleep(std::time::Duration::from_secs_f64(deadline_s + 0.5));
    for mut s in slow {
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        assert!(
            got.len() < ASKED * big,
            "the connection was closed before every answer went out ({} bytes)",
            got.len()
        );
    }
}
