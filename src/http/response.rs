//! A response under construction: status, headers, body bytes.

use serde::Serialize;
use std::io::Read;

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// A body produced while it is sent (server-sent events), sent chunked.
    /// When set, `body` is ignored.
    pub stream: Option<Box<dyn Read + Send>>,
    /// The length of `stream` when known (a file): sent as Content-Length
    /// instead of chunked.
    pub stream_len: Option<usize>,
}

pub const JSON: &str = "application/json";

impl Response {
    pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => {
                Response { status, content_type: JSON, headers: Vec::new(), body, stream: None, stream_len: None }
            }
            Err(e) => {
                log::error!("cannot encode a response: {e}");
                Response::json_value(
                    500,
                    &serde_json::json!({"error": {"type": "api_error", "code": "internal_error", "message": "An internal error occurred.", "param": null}}),
                )
            }
        }
    }

    pub fn json_value(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
            stream: None,
            stream_len: None,
        }
    }

    pub fn text(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, content_type, headers: Vec::new(), body: body.into(), stream: None, stream_len: None }
    }

    pub fn event_stream(body: Box<dyn Read + Send>) -> Response {
        Response {
            status: 200,
            content_type: "text/event-stream",
            headers: vec![("Cache-Control", "no-cache".into())],
            body: Vec::new(),
            stream: Some(body),
            stream_len: None,
        }
    }

    /// 302 to `location`, with a JSON body for clients that do not follow.
    pub fn redirect(location: &str) -> Response {
        let mut r = Response::json_value(302, &serde_json::json!({ "location": location }));
        r.headers.push(("Location", location.to_owned()));
        r.headers.push(("Cache-Control", "no-store".into()));
        r
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}
