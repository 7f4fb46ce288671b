//! A fake Stripe: a real HTTP server on 127.0.0.1 answering the endpoints
//! tollgate calls (Checkout Sessions, billing portal sessions,
//! PaymentIntents) in Stripe's shapes, form-encoded in, JSON out. Like
//! Stripe, a repeated `Idempotency-Key` gets the first answer again. It
//! records every request (path, form, headers), and can be told to fail or
//! to decline cards. Events are built and signed by the test (`event`,
//! `signed`), the way Stripe signs them.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SECRET_KEY: &str = "sk_test_tollgate";
pub const WEBHOOK_SECRET: &str = "whsec_test_current";
pub const WEBHOOK_SECRET_OLD: &str = "whsec_test_previous";

#[derive(Debug, Clone)]
pub struct StripeRequest {
    pub path: String,
    pub form: HashMap<String, String>,
    pub idempotency_key: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    requests: Vec<StripeRequest>,
    answers: HashMap<String, (u16, Value)>,
    next: u64,
    /// Every call answers this status (Stripe down).
    fail: Option<u16>,
    /// PaymentIntents are declined (402 card_error).
    decline: bool,
    /// Where the hosted pages (Checkout, the portal) are: this server.
    base: String,
}

pub struct FakeStripe {
    pub base: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FakeStripe {
    pub fn start() -> FakeStripe {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("fake stripe listens"));
        let base = format!("http://{}", server.server_addr().to_ip().expect("ip"));
        let state = Arc::new(Mutex::new(State { base: base.clone(), ..State::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..4 {
            let (server, state, stop) = (Arc::clone(&server), Arc::clone(&state), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Some(rq)) = server.recv_timeout(Duration::from_millis(50)) {
                        handle(rq, &state);
                    }
                }
            });
        }
        FakeStripe { base, state, stop }
    }

    pub fn requests(&self) -> Vec<StripeRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }

    pub fn fail_with(&self, status: Option<u16>) {
        self.state.lock().unwrap().fail = status;
    }

    pub fn decline_cards(&self, decline: bool) {
        self.state.lock().unwrap().decline = decline;
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(mut rq: tiny_http::Request, state: &Mutex<State>) {
    let mut body = String::new();
    let _ = rq.as_reader().read_to_string(&mut body);
    let header = |name: &str| {
        rq.headers().iter().find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name)).map(|h| h.value.to_string())
    };
    let path = rq.url().split('?').next().unwrap_or("").to_owned();
    // The hosted pages a browser is sent to.
    if rq.method() == &tiny_http::Method::Get {
        let page =
            format!("<!doctype html><title>Fake Stripe</title><h1 id=\"fake-stripe\">Fake Stripe page {path}</h1>");
        let html = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/html"[..]).unwrap();
        let _ = rq.respond(tiny_http::Response::from_data(page.into_bytes()).with_header(html));
        return;
    }
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let recorded = StripeRequest {
        path: path.clone(),
        form: form.clone(),
        idempotency_key: header("idempotency-key"),
        authorization: header("authorization"),
    };
    let (status, answer) = {
        let mut s = state.lock().unwrap();
        s.requests.push(recorded.clone());
        if let Some(status) = s.fail {
            (status, json!({"error": {"type": "api_error", "message": "Stripe is having a bad day"}}))
        } else if let Some(previous) = recorded.idempotency_key.as_ref().and_then(|k| s.answers.get(k)) {
            previous.clone()
        } else {
            s.next += 1;
            let n = s.next;
            let answer = answer(&path, &form, n, s.decline, &s.base);
            if let Some(k) = &recorded.idempotency_key {
                s.answers.insert(k.clone(), answer.clone());
            }
            answer
        }
    };
    let response = tiny_http::Response::from_data(answer.to_string().into_bytes())
        .with_status_code(status)
        .with_header(tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).unwrap());
    let _ = rq.respond(response);
}

fn metadata(form: &HashMap<String, String>, prefix: &str) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in form {
        if let Some(key) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('[')).and_then(|r| r.strip_suffix(']')) {
            m.insert(key.to_owned(), json!(v));
        }
    }
    Value::Object(m)
}

fn answer(path: &str, form: &HashMap<String, String>, n: u64, decline: bool, base: &str) -> (u16, Value) {
    let f = |k: &str| form.get(k).cloned().unwrap_or_default();
    match path {
        "/v1/checkout/sessions" => (
            200,
            json!({"id": format!("cs_test_{n}"), "object": "checkout.session", "mode": f("mode"),
                   "url": format!("{base}/c/pay/cs_test_{n}"),
                   "client_reference_id": f("client_reference_id"), "metadata": metadata(form, "metadata"),
                   "amount_total": f("line_items[0][price_data][unit_amount]").parse::<i64>().ok(),
                   "currency": f("line_items[0][price_data][currency]"), "payment_status": "unpaid", "status": "open"}),
        ),
        "/v1/billing_portal/sessions" => (
            200,
            json!({"id": format!("bps_{n}"), "object": "billing_portal.session", "customer": f("customer"),
                   "url": format!("{base}/p/session/test_{n}"), "return_url": f("return_url")}),
        ),
        "/v1/payment_intents" if decline => (
            402,
            json!({"error": {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
                             "message": "Your card has insufficient funds.", "payment_intent": {"id": format!("pi_test_{n}")}}}),
        ),
        "/v1/payment_intents" => (
            200,
            json!({"id": format!("pi_test_{n}"), "object": "payment_intent", "status": "succeeded",
                   "amount": f("amount").parse::<i64>().ok(), "currency": f("currency"), "customer": f("customer"),
                   "payment_method": f("payment_method"), "metadata": metadata(form, "metadata")}),
        ),
        _ => (
            404,
            json!({"error": {"type": "invalid_request_error", "message": format!("Unrecognized request URL (POST: {path})")}}),
        ),
    }
}

/// A Stripe event around `object`.
pub fn event(id: &str, etype: &str, object: Value) -> Value {
    json!({"id": id, "object": "event", "api_version": "2025-03-31.basil", "created": now_s(),
           "livemode": false, "pending_webhooks": 1, "type": etype, "data": {"object": object}})
}

pub fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The body and `Stripe-Signature` Stripe would send, signed at `t`.
pub fn signed(event: &Value, secret: &str, t: i64) -> (String, String) {
    let body = serde_json::to_string_pretty(event).unwrap();
    let header = tollgate::payments::signature::sign(secret, t, body.as_bytes());
    (body, header)
}
