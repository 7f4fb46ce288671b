//! PATCH (tollgate): one client connection, rewritten (see PATCHES.md).
//!
//! The connection thread reads a request's head (parsed by `httparse`) and
//! its whole body under the deadlines and sizes of [`Limits`], hands the
//! finished request to the workers, and waits for its response before it
//! reads the next one. A worker therefore never reads from a socket, and
//! nothing a client sends after a rejected request is ever parsed: every
//! framing error (bad head, too large, too slow, unsupported version) is
//! answered here with the status and `Connection: close`, then the
//! connection is closed after a short lingering drain so the client can
//! read the answer.

use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::str::FromStr;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ascii::AsciiString;
use chunked_transfer::Decoder;

use crate::common::{HTTPVersion, Header, HeaderField, Method};
use crate::limits::{rejection_bytes, BodyBudget, Limits, Rejection};
use crate::util::{RefinedTcpStream, SequentialWriterBuilder, Wire};
use crate::Request;

/// After a rejection, how long the client's remaining bytes are drained
/// before the socket closes (closing with unread data sends a reset, which
/// can destroy the answer before the client reads it).
const LINGER_MS: u64 = 2000;
/// ... and how many bytes at most.
const LINGER_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// A body is read from the socket in pieces of this size, so the deadline is
/// checked between them and memory grows only with what actually arrived.
const BODY_READ_BYTES: usize = 16 * 1024;
/// Bytes of chunk framing allowed on top of a chunked body's limit.
const CHUNK_FRAMING_BYTES_MAX: u64 = 64 * 1024;

pub struct ClientConnection {
    remote_addr: Option<SocketAddr>,
    reader: BufReader<Wire>,
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,
    limits: Arc<Limits>,
    /// Body bytes held by all connections' requests together.
    bodies_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    accepted_at: Instant,
    /// No request read yet: the head deadline runs from the accept.
    first: bool,
    /// Signals when the previous request's response is written: `true` if
    /// the connection may carry another request.
    responded: Option<Receiver<bool>>,
    /// The last request said `Connection: close` (or was HTTP/1.0).
    no_more_requests: bool,
    head: Vec<u8>,
}

/// Why no request came out of the connection.
enum Failure {
    /// Answer this, then close.
    Reject(Rejection),
    /// The client left, or idled past its limit: close without a word.
    Closed,
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Failure {
        Failure::Reject(r)
    }
}

fn timeout_rejection(what: &str) -> Failure {
    Failure::Reject(Rejection::new(
        408,
        "request_timeout",
        format!("The {what} did not arrive in time; send the whole request promptly."),
    ))
}

fn bad_request(message: impl Into<String>) -> Failure {
    Failure::Reject(Rejection::new(400, "invalid_http", message))
}

impl ClientConnection {
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        limits: Arc<Limits>,
        bodies_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr().ok().flatten();
        ClientConnection {
            remote_addr,
            reader: BufReader::with_capacity(8 * 1024, Wire::new(read_socket)),
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            limits,
            bodies_in_flight,
            accepted_at: Instant::now(),
            first: true,
            responded: None,
            no_more_requests: false,
            head: Vec::new(),
        }
    }

    /// Reads the head: `Ok(length)` once a blank line ends it within the
    /// limits. The bytes stay in `self.head`.
    fn read_head(&mut self) -> Result<usize, Failure> {
        let limits = Arc::clone(&self.limits);
        self.head.clear();
        // Phase 1: wait for the request to start. A fresh connection has the
        // head deadline from its accept; a kept-alive one the idle timeout.
        let start_deadline = if self.first {
            self.accepted_at + limits.head_timeout
        } else {
            Instant::now() + limits.idle_timeout
        };
        self.reader.get_mut().set_deadline(start_deadline);
        match self.reader.fill_buf() {
            Ok([]) => return Err(Failure::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::TimedOut && self.first => return Err(timeout_rejection("request head")),
            Err(_) => return Err(Failure::Closed),
        }
        if !self.first {
            self.reader.get_mut().set_deadline(Instant::now() + limits.head_timeout);
        }
        self.first = false;
        // Phase 2: collect bytes until the blank line, never more than the limit.
        loop {
            let (taken, end) = {
                let buf = match self.reader.fill_buf() {
                    Ok([]) => return Err(Failure::Closed),
                    Ok(buf) => buf,
                    Err(e) if e.kind() == ErrorKind::TimedOut => return Err(timeout_rejection("request head")),
                    Err(_) => return Err(Failure::Closed),
                };
                // Empty lines before a request line are ignored (RFC 9112 2.2).
                let skip = if self.head.is_empty() { buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count() } else { 0 };
                let old = self.head.len();
                let room = limits.head_bytes_max + 1 - old;
                let take = (buf.len() - skip).min(room);
                self.head.extend_from_slice(&buf[skip..skip + take]);
                match head_end(&self.head, old.saturating_sub(3)) {
                    Some(end) => (skip + (end - old), Some(end)),
                    None => (skip + take, None),
                }
            };
            self.reader.consume(taken);
            if let Some(end) = end {
                self.head.truncate(end);
                return Ok(end);
            }
            let line_done = self.head.contains(&b'\n');
            if !line_done && self.head.len() > limits.url_bytes_max + 64 {
                return Err(uri_too_long(&limits).into());
            }
            if self.head.len() > limits.head_bytes_max {
                return Err(if line_done { head_too_large(&limits) } else { uri_too_long(&limits) }.into());
            }
        }
    }

    /// Reads one whole request: head, checks, body.
    fn read_request(&mut self) -> Result<Request, Failure> {
        let limits = Arc::clone(&self.limits);
        let head_len = self.read_head()?;
        let mut slots = vec![httparse::EMPTY_HEADER; limits.headers_max];
        let mut parsed = httparse::Request::new(&mut slots);
        let head = &self.head[..head_len];
        match parsed.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(bad_request("The request head is incomplete.")),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Rejection::new(
                    431,
                    "too_many_headers",
                    format!("A request may carry at most {} headers.", limits.headers_max),
                )
                .into())
            }
            Err(httparse::Error::Version) => {
                return Err(Rejection::new(
                    505,
                    "http_version_not_supported",
                    "Only HTTP/1.0 and HTTP/1.1 are served here; HTTP/2 needs a proxy in front.",
                )
                .into())
            }
            Err(e) => return Err(bad_request(format!("The request head is malformed ({e})."))),
        }
        let (Some(method), Some(path), Some(minor)) = (parsed.method, parsed.path, parsed.version) else {
            return Err(bad_request("The request line is malformed."));
        };
        if path.len() > limits.url_bytes_max {
            return Err(uri_too_long(&limits).into());
        }
        let version = if minor == 0 { HTTPVersion(1, 0) } else { HTTPVersion(1, 1) };
        let method = Method::from_str(method).map_err(|_| bad_request("The method is not a valid token."))?;
        let path = path.to_owned();
        let mut headers = Vec::with_capacity(parsed.headers.len());
        for h in parsed.headers.iter() {
            let value = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| v.is_ascii())
                .ok_or_else(|| bad_request(format!("The value of header {} is not ASCII.", h.name)))?;
            let field = HeaderField::from_bytes(h.name.as_bytes())
                .map_err(|_| bad_request(format!("The header name {} is not ASCII.", h.name)))?;
            let value = AsciiString::from_ascii(value.trim()).map_err(|_| bad_request("A header value is not ASCII."))?;
            headers.push(Header { field, value });
        }
        drop(parsed);

        let find = |name: &'static str| headers.iter().filter(move |h: &&Header| h.field.equiv(name));
        let framing = body_framing(find("Transfer-Encoding").collect(), find("Content-Length").collect())?;
        let limit = (limits.body_bytes_max)(&method, &path);
        if let Framing::Length(n) = framing {
            if n > limit as u64 {
                return Err(too_large(limit).into());
            }
        }
        let expects_continue = match find("Expect").next().map(|h| h.value.as_str()) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("100-continue") => true,
            Some(_) => {
                return Err(Rejection::new(417, "expectation_failed", "Only `Expect: 100-continue` is understood.").into())
            }
        };

        let connection = find("Connection").next().map(|h| h.value.as_str().to_ascii_lowercase());
        self.no_more_requests = match connection {
            Some(ref v) if v.contains("close") || v.contains("upgrade") => true,
            Some(ref v) => version == HTTPVersion(1, 0) && !v.contains("keep-alive"),
            None => version == HTTPVersion(1, 0),
        };

        let writer = self.sink.next().expect("the writer sequence never ends");
        if expects_continue && framing != Framing::None {
            // The client waits for this before it sends the body.
            let mut w = writer;
            let sent = w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").and_then(|_| w.flush());
            if sent.is_err() {
                return Err(Failure::Closed);
            }
            let (body, budget) = self.read_body(framing, limit)?;
            let writer = self.sink.next().expect("the writer sequence never ends");
            return Ok(self.finish(method, path, version, headers, body, budget, writer));
        }
        let (body, budget) = self.read_body(framing, limit)?;
        Ok(self.finish(method, path, version, headers, body, budget, writer))
    }

    fn finish<W: Write + Send + 'static>(
        &mut self,
        method: Method,
        path: String,
        version: HTTPVersion,
        headers: Vec<Header>,
        body: Vec<u8>,
        budget: BodyBudget,
        writer: W,
    ) -> Request {
        let (tx, rx) = channel();
        self.responded = Some(rx);
        crate::request::buffered_request(method, path, version, headers, self.remote_addr, body, budget, writer)
            .with_notify_sender(tx)
    }

    /// Reads the whole body into memory: at least `body_timeout_min`, plus a
    /// second per `body_bytes_per_s_min` bytes received.
    /// The body's bytes are taken from the shared in-flight budget as they
    /// arrive (not as declared), so a client must send to hold memory.
    fn read_body(&mut self, framing: Framing, limit: usize) -> Result<(Vec<u8>, BodyBudget), Failure> {
        let limits = Arc::clone(&self.limits);
        let started = Instant::now();
        let wire_start = self.reader.get_ref().bytes_read;
        let rate = limits.body_bytes_per_s_min.max(1);
        let min = limits.body_timeout_min;
        let deadline_for = |wire: &Wire| {
            let got = wire.bytes_read - wire_start;
            started + min + Duration::from_millis(got.saturating_mul(1000) / rate)
        };
        let mut body = Vec::new();
        let mut budget = BodyBudget::new(Arc::clone(&self.bodies_in_flight));
        let in_flight_max = limits.body_bytes_in_flight_max;
        let busy = || {
            Failure::Reject(Rejection::new(
                503,
                "server_busy",
                "The server is holding too many request bodies at once; retry shortly.",
            ))
        };
        let mut piece = [0u8; BODY_READ_BYTES];
        match framing {
            Framing::None => {}
            Framing::Length(n) => {
                let mut left = n;
                while left > 0 {
                    let deadline = deadline_for(self.reader.get_ref());
                    self.reader.get_mut().set_deadline(deadline);
                    let want = (left as usize).min(BODY_READ_BYTES);
                    match self.reader.read(&mut piece[..want]) {
                        Ok(0) => return Err(Failure::Closed),
                        Ok(k) => {
                            if !budget.grow(k, in_flight_max) {
                                return Err(busy());
                            }
                            body.extend_from_slice(&piece[..k]);
                            left -= k as u64;
                        }
                        Err(e) if e.kind() == ErrorKind::TimedOut => return Err(timeout_rejection("request body")),
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return Err(Failure::Closed),
                    }
                }
            }
            Framing::Chunked => {
                let raw_max = limit as u64 + CHUNK_FRAMING_BYTES_MAX;
                let mut decoder = Decoder::new(Strict { inner: &mut self.reader, left: raw_max });
                loop {
                    let deadline = deadline_for(decoder.get_ref().inner.get_ref());
                    decoder.get_mut().inner.get_mut().set_deadline(deadline);
                    match decoder.read(&mut piece) {
                        Ok(0) => break,
                        Ok(k) => {
                            if !budget.grow(k, in_flight_max) {
                                return Err(busy());
                            }
                            body.extend_from_slice(&piece[..k]);
                            // A declared chunk size past the limit is refused
                            // now, not after waiting for its bytes.
                            let announced = decoder.remaining_chunks_size().unwrap_or(0);
                            if body.len().saturating_add(announced) > limit {
                                return Err(too_large(limit).into());
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::TimedOut => return Err(timeout_rejection("request body")),
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == ErrorKind::OutOfMemory => return Err(too_large(limit).into()),
                        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Err(Failure::Closed),
                        Err(_) => return Err(bad_request("The chunked body is malformed.")),
                    }
                }
            }
        }
        Ok((body, budget))
    }

    /// Answers a rejection, stops reading requests, and drains what the
    /// client still sends for a moment so the answer is not lost to a reset.
    fn reject(&mut self, r: &Rejection) {
        let origin = origin_in(&self.head);
        let bytes = rejection_bytes(&self.limits, r, origin.as_deref());
        if let Some(mut w) = self.sink.next() {
            if w.write_all(&bytes).and_then(|_| w.flush()).is_err() {
                return;
            }
        }
        let wire = self.reader.get_mut();
        let _ = wire.stream().shutdown(Shutdown::Write);
        wire.set_deadline(Instant::now() + Duration::from_millis(LINGER_MS));
        let _ = std::io::copy(&mut (&mut self.reader).take(LINGER_BYTES_MAX), &mut std::io::sink());
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the previous response is written and the next request
    /// has been read whole. `None` closes the connection.
    fn next(&mut self) -> Option<Request> {
        if let Some(responded) = self.responded.take() {
            match responded.recv() {
                Ok(true) => {}
                _ => return None,
            }
        }
        if self.no_more_requests {
            return None;
        }
        match self.read_request() {
            Ok(rq) => Some(rq),
            Err(Failure::Closed) => None,
            Err(Failure::Reject(r)) => {
                log::debug!("rejected a request from {:?}: {} {}", self.remote_addr, r.status, r.code);
                self.reject(&r);
                None
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// How the body is delimited. Anything ambiguous is refused, because two
/// parties that read it differently is how requests are smuggled.
fn body_framing(te: Vec<&Header>, cl: Vec<&Header>) -> Result<Framing, Failure> {
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err(bad_request("A request may not carry both Transfer-Encoding and Content-Length."));
        }
        if te.len() > 1 || !te[0].value.as_str().trim().eq_ignore_ascii_case("chunked") {
            return Err(Rejection::new(
                501,
                "unsupported_transfer_encoding",
                "Only `Transfer-Encoding: chunked` is understood.",
            )
            .into());
        }
        return Ok(Framing::Chunked);
    }
    let mut length = None;
    for h in cl {
        let v = h.value.as_str().trim();
        let n = v
            .parse::<u64>()
            .ok()
            .filter(|_| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| bad_request("Content-Length must be a whole number of bytes."))?;
        if length.is_some_and(|l| l != n) {
            return Err(bad_request("The request carries two different Content-Length values."));
        }
        length = Some(n);
    }
    Ok(match length {
        Some(0) | None => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

/// Index just past the blank line that ends a head (CRLF or bare LF lines),
/// searching from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match buf.get(i + 1) {
                Some(b'\n') => return Some(i + 2),
                Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn uri_too_long(limits: &Limits) -> Rejection {
    Rejection::new(414, "uri_too_long", format!("The URL may be at most {} bytes.", limits.url_bytes_max))
}

fn head_too_large(limits: &Limits) -> Rejection {
    Rejection::new(
        431,
        "request_header_too_large",
        format!("The request line and headers may be at most {} bytes together.", limits.head_bytes_max),
    )
}

fn too_large(limit: usize) -> Rejection {
    Rejection::new(
        413,
        "payload_too_large",
        format!("The request body is larger than {limit} bytes; send a smaller one."),
    )
}

/// The wire under a chunked decoder: an end of stream inside the body is an
/// error (not a short body), and the raw bytes, framing included, are
/// capped so an endless chunk-size line cannot grow memory.
struct Strict<'a> {
    inner: &'a mut BufReader<Wire>,
    left: u64,
}

impl Read for Strict<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::new(ErrorKind::OutOfMemory, "chunked body over its limit"));
        }
        let cap = (buf.len() as u64).min(self.left) as usize;
        match self.inner.read(&mut buf[..cap])? {
            0 => Err(std::io::Error::new(ErrorKind::UnexpectedEof, "the client closed inside the body")),
            n => {
                self.left -= n as u64;
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod test {
    #[test]
    fn head_end_finds_crlf_and_lf_blank_lines() {
        assert_eq!(super::head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(super::head_end(b"GET / HTTP/1.1\n\nrest", 0), Some(16));
        assert_eq!(super::head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
    }
}

/// PATCH (tollgate): the `Origin` a request head names, read from its raw
/// bytes (a rejected head may be cut short or never parsed).
fn origin_in(head: &[u8]) -> Option<String> {
    head.split(|b| *b == b'\n').skip(1).find_map(|line| {
        let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("origin").then(|| value.trim().to_owned())
    })
}
