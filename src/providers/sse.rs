//! Reading server-sent events off a provider's response body: `event:` and
//! `data:` lines, an event per blank line. Bounded line length, so a broken
//! upstream cannot make us buffer without end.

use super::ProviderError;
use std::io::BufRead;

/// Longest line accepted from an upstream stream.
pub const SSE_LINE_BYTES_MAX: usize = 1 << 20;

pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

pub struct SseReader<R> {
    inner: R,
}

impl<R: BufRead> SseReader<R> {
    pub fn new(inner: R) -> SseReader<R> {
        SseReader { inner }
    }

    /// The next event, `None` at the end of the stream.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, ProviderError> {
        let mut event = None;
        let mut data = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            let n = std::io::Read::take(self.inner.by_ref(), SSE_LINE_BYTES_MAX as u64).read_line(&mut line).map_err(
                |e| match e.kind() {
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => ProviderError::Timeout,
                    _ => ProviderError::BadResponse(format!("stream read failed: {e}")),
                },
            )?;
            if n == 0 {
                return Ok((event.is_some() || !data.is_empty()).then_some(SseEvent { event, data }));
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if event.is_some() || !data.is_empty() {
                    return Ok(Some(SseEvent { event, data }));
                }
                continue;
            }
            if let Some(v) = l.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            } else if let Some(v) = l.strip_prefix("event:") {
                event = Some(v.trim().to_owned());
            }
            // Comments (":") and other fields are ignored, as the spec says.
        }
    }
}

/// Every event of a provider's SSE answer as it comes: its name and its
/// JSON data, until the stream ends (or `data: [DONE]`). A `data` that is
/// not JSON ends the stream with an error.
pub fn raw_events(resp: ureq::http::Response<ureq::Body>) -> super::RawStream {
    let mut sse = SseReader::new(std::io::BufReader::new(resp.into_body().into_reader()));
    let mut done = false;
    Box::new(std::iter::from_fn(move || {
        if done {
            return None;
        }
        match sse.next_event() {
            Ok(Some(ev)) if ev.data.trim() == "[DONE]" => {
                done = true;
                None
            }
            Ok(Some(ev)) => match serde_json::from_str::<serde_json::Value>(&ev.data) {
                Ok(v) => Some(Ok((ev.event, v))),
                Err(_) => {
                    done = true;
                    Some(Err(ProviderError::BadResponse("a stream event is not JSON".into())))
                }
            },
            Ok(None) => {
                done = true;
                None
            }
            Err(e) => {
                done = true;
                Some(Err(e))
            }
        }
    }))
}
