//! Reading a request off the wire into plain data, with the body bounded,
//! and parsing its parts (JSON body, query, paging) into typed values.

use super::error::ApiError;
use crate::paging::{PAGE_LIMIT_MAX, Page};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::io::Read;
use std::net::IpAddr;

#[derive(Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer_ip: Option<IpAddr>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The client's address: the socket peer, or, when the peer is a trusted
    /// proxy, the right-most `X-Forwarded-For` entry that is not one.
    pub fn client_ip(&self, trusted: &[String]) -> Option<IpAddr> {
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|t| t.parse::<IpAddr>().is_ok_and(|t| t == *ip));
        let peer = self.peer_ip?;
        if !is_trusted(&peer) {
            return Some(peer);
        }
        let forwarded = self.header("x-forwarded-for").unwrap_or("");
        forwarded.rsplit(',').filter_map(|s| s.trim().parse::<IpAddr>().ok()).find(|ip| !is_trusted(ip)).or(Some(peer))
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Parses the JSON body into `T`: `invalid_json` when it is not JSON (or
    /// names a key twice), `invalid_request` naming the field when it does
    /// not fit `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        self.json_and_object().map(|(t, _)| t)
    }

    /// [`Req::json`], and the body's object as parsed, for routes that pass
    /// every field on (one parse for both).
    pub fn json_and_object<T: DeserializeOwned>(&self) -> Result<(T, Map<String, Value>), ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid_json("the body is empty"));
        }
        let value = serde_json::from_slice::<super::strict_json::Strict>(&self.body)
            .map_err(|e| ApiError::invalid_json(&e.to_string()))?
            .0;
        if !value.is_object() {
            return Err(ApiError::invalid_json("expected an object"));
        }
        let typed = serde_path_to_error::deserialize::<_, T>(&value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let param = if path == "." || path.is_empty() { missing_field(&inner).unwrap_or_default() } else { path };
            let mut err = ApiError::refuse("invalid_request", format!("Invalid request body: {inner}."));
            if !param.is_empty() {
                err = err.with_param(param);
            }
            err
        });
        match value {
            Value::Object(object) => typed.map(|t| (t, object)),
            _ => Err(ApiError::invalid_json("expected an object")),
        }
    }

    /// The page, with a `starting_after` cursor that must be an id of the
    /// listed type (`prefix` + digits).
    pub fn page_after(&self, prefix: &'static str) -> Result<Page, ApiError> {
        let mut page = self.page()?;
        if let Some(cursor) = self.query("starting_after") {
            let id = cursor.strip_prefix(prefix).and_then(|d| d.parse::<i64>().ok()).filter(|n| *n > 0).ok_or_else(
                || {
                    ApiError::refuse(
                        "invalid_request",
                        format!("starting_after must be an id of the listed kind ({prefix}...)."),
                    )
                    .with_param("starting_after")
                },
            )?;
            page.starting_after = Some(id);
        }
        Ok(page)
    }

    pub fn page(&self) -> Result<Page, ApiError> {
        let mut page = Page::default();
        if let Some(raw) = self.query("limit") {
            page.limit = raw.parse::<usize>().ok().filter(|n| (1..=PAGE_LIMIT_MAX).contains(n)).ok_or_else(|| {
                ApiError::refuse("invalid_request", format!("limit must be a whole number from 1 to {PAGE_LIMIT_MAX}."))
                    .with_param("limit")
            })?;
        }
        Ok(page)
    }
}

fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// Reads method, path, headers and the body (at most `body_bytes_max`).
/// A declared or actual body over the limit is refused with 413 before more
/// of it is read.
pub fn read(raw: &mut tiny_http::Request, body_bytes_max: usize) -> Result<Req, ApiError> {
    let url = raw.url().to_owned();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_owned(), form_urlencoded::parse(q.as_bytes()).into_owned().collect()),
        None => (url, Vec::new()),
    };
    let headers: Vec<(String, String)> =
        raw.headers().iter().map(|h| (h.field.as_str().as_str().to_owned(), h.value.as_str().to_owned())).collect();
    let req = Req {
        method: raw.method().as_str().to_ascii_uppercase(),
        path,
        query,
        headers,
        body: Vec::new(),
        peer_ip: raw.remote_addr().map(|a| a.ip()),
    };
    if raw.body_length().is_some_and(|n| n > body_bytes_max) {
        return Err(ApiError::payload_too_large(body_bytes_max));
    }
    let mut body = Vec::with_capacity(raw.body_length().unwrap_or(0).min(body_bytes_max));
    raw.as_reader()
        .take(body_bytes_max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::refuse("invalid_request", format!("Could not read the request body: {e}.")))?;
    if body.len() > body_bytes_max {
        return Err(ApiError::payload_too_large(body_bytes_max));
    }
    Ok(Req { body, ..req })
}
