//! The HTTP floor: a bare tiny_http server with the same worker-pool shape
//! as tollgate, answering a fixed small JSON body. Whatever tollgate does per
//! request costs on top of this.
//!
//! It also stands in for an instant OpenAI-compatible provider: a POST to
//! `/v1/chat/completions` gets a fixed chat completion with usage, so the
//! cost tollgate adds to a chat call can be measured against calling it
//! directly.
//!
//! Run: `cargo run --release --example bare_http -- 127.0.0.1:8090 [workers]`

use std::sync::Arc;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(4);
    let server = Arc::new(tiny_http::Server::http(&addr).expect("listen"));
    eprintln!("bare_http listening on http://{addr} with {workers} workers");
    let body = br#"{"transaction_id":"txn_1","balance":100,"available":100}"#;
    let chat = br#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                let ct = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).expect("header");
                while let Ok(mut rq) = server.recv() {
                    let mut sink = Vec::new();
                    let _ = std::io::Read::read_to_end(rq.as_reader(), &mut sink);
                    let reply = if rq.url().ends_with("/chat/completions") { &chat[..] } else { &body[..] };
                    let _ =
                        rq.respond(tiny_http::Response::from_data(reply).with_status_code(201).with_header(ct.clone()));
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}
