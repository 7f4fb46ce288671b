//! Reading a `multipart/form-data` body (`/v1/audio/transcriptions`) into
//! its parts, with `multer` and limits on every part, on the number of
//! parts and on the whole. Never writes forms (`providers::form` does).
//!
//! The body is already in memory (read under the route's body limit), so
//! multer's stream is one chunk that is always ready: its futures finish
//! on the first poll, and they are polled here with a no-op waker rather
//! than an async runtime (tollgate has none).

use super::error::ApiError;
use crate::providers::types::FormPart;
use std::future::Future;
use std::task::{Context, Poll, Waker};

/// Bytes one text part (a field that is not a file) may have.
pub const FORM_TEXT_PART_BYTES_MAX: u64 = 64 << 10;
/// Parts one form may have.
pub const FORM_PARTS_MAX: usize = 32;

/// Runs a future whose every await is on data already in memory.
fn ready<T>(f: impl Future<Output = T>) -> Option<T> {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn refused(e: &multer::Error) -> ApiError {
    match e {
        multer::Error::FieldSizeExceeded { limit, field_name } => ApiError::refuse(
            "payload_too_large",
            format!("The form part {:?} is larger than {limit} bytes.", field_name.as_deref().unwrap_or("")),
        )
        .with_param(field_name.clone().unwrap_or_default()),
        multer::Error::StreamSizeExceeded { limit } => {
            ApiError::refuse("payload_too_large", format!("The form is larger than {limit} bytes."))
        }
        other => ApiError::refuse("invalid_request", format!("The body is not a valid multipart form: {other}.")),
    }
}

/// The parts of `body`, a form with the boundary `content_type` names;
/// `file_bytes_max` bounds the part named `file`, [`FORM_TEXT_PART_BYTES_MAX`]
/// every other, `total_bytes_max` the whole.
pub fn parse(
    content_type: Option<&str>,
    body: &[u8],
    file_bytes_max: u64,
    total_bytes_max: u64,
) -> Result<Vec<FormPart>, ApiError> {
    let boundary = content_type.and_then(|t| multer::parse_boundary(t).ok()).ok_or_else(|| {
        ApiError::refuse(
            "invalid_request",
            "Send the form as multipart/form-data with a boundary (Content-Type: multipart/form-data; boundary=...).",
        )
        .with_param("Content-Type")
    })?;
    let limits = multer::SizeLimit::new()
        .whole_stream(total_bytes_max)
        .per_field(FORM_TEXT_PART_BYTES_MAX)
        .for_field("file", file_bytes_max);
    let chunk = bytes::Bytes::copy_from_slice(body);
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(chunk) });
    let mut form = multer::Multipart::with_constraints(stream, boundary, multer::Constraints::new().size_limit(limits));
    let mut parts = Vec::new();
    loop {
        let next = ready(form.next_field()).ok_or_else(|| refused(&multer::Error::IncompleteStream))?;
        let Some(field) = next.map_err(|e| refused(&e))? else { break };
        if parts.len() == FORM_PARTS_MAX {
            return Err(ApiError::refuse(
                "invalid_request",
                format!("A form may have at most {FORM_PARTS_MAX} parts."),
            ));
        }
        let name = field.name().unwrap_or("").to_owned();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(ToString::to_string);
        let data =
            ready(field.bytes()).ok_or_else(|| refused(&multer::Error::IncompleteStream))?.map_err(|e| refused(&e))?;
        parts.push(FormPart { name, filename, content_type, data: data.to_vec() });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, filename: Option<&str>, data: &[u8]) -> FormPart {
        FormPart {
            name: name.into(),
            filename: filename.map(str::to_owned),
            content_type: filename.map(|_| "audio/wav".to_owned()),
            data: data.to_vec(),
        }
    }

    #[test]
    fn what_we_write_upstream_reads_back_the_same_and_the_model_is_replaced() {
        let parts = vec![
            part("model", None, b"whisper"),
            part("file", Some("a \"b\".wav"), &[0, 1, 2, 13, 10, 45, 45, 255]),
            part("timestamp_granularities[]", None, b"word"),
        ];
        let body = crate::providers::form::encode(&parts, "b0und", |p| (p.name == "model").then_some(&b"up"[..]));
        let read = parse(Some("multipart/form-data; boundary=b0und"), &body, 1 << 20, 1 << 20).unwrap();
        assert_eq!(read[0].data, b"up");
        // A quote in a name is sent percent-encoded, as browsers send it.
        assert_eq!(read[1].filename.as_deref(), Some("a %22b%22.wav"));
        assert_eq!((&read[1].data, &read[1].content_type), (&parts[1].data, &parts[1].content_type));
        assert_eq!(read[2], parts[2]);
    }

    #[test]
    fn every_part_the_number_of_parts_and_the_whole_are_bounded() {
        let text = |n: usize| part("prompt", None, &vec![b'x'; n]);
        let form = |parts: &[FormPart]| crate::providers::form::encode(parts, "B", |_| None);
        let ct = Some("multipart/form-data; boundary=B");
        let limit = FORM_TEXT_PART_BYTES_MAX as usize;
        assert!(parse(ct, &form(&[text(limit)]), 10, 1 << 20).is_ok());
        let e = parse(ct, &form(&[text(limit + 1)]), 10, 1 << 20).unwrap_err();
        assert_eq!((e.code, e.param.as_deref()), ("payload_too_large", Some("prompt")));
        let file = |n: usize| part("file", Some("a.wav"), &vec![1; n]);
        assert!(parse(ct, &form(&[file(100)]), 100, 1 << 20).is_ok());
        assert_eq!(parse(ct, &form(&[file(101)]), 100, 1 << 20).unwrap_err().code, "payload_too_large");
        let many: Vec<FormPart> = (0..FORM_PARTS_MAX).map(|_| text(1)).collect();
        assert!(parse(ct, &form(&many), 10, 1 << 20).is_ok());
        let too_many: Vec<FormPart> = (0..=FORM_PARTS_MAX).map(|_| text(1)).collect();
        assert_eq!(parse(ct, &form(&too_many), 10, 1 << 20).unwrap_err().code, "invalid_request");
        let whole = form(&[file(1000)]);
        assert_eq!(parse(ct, &whole, 2000, 500).unwrap_err().code, "payload_too_large");
        assert_eq!(parse(None, &whole, 2000, 5000).unwrap_err().code, "invalid_request");
        assert_eq!(parse(ct, b"--B\r\nnot a part", 10, 100).unwrap_err().code, "invalid_request");
    }
}
