//! Writing a multipart form (RFC 7578) to send upstream: the parts a
//! client sent, in order, framed by a boundary of our own. Reading forms is
//! `multer`'s job (in `http::multipart`); this side only frames bytes.

use super::types::FormPart;

/// A quoted-string value with the characters that would end or break it
/// percent-encoded, as browsers send them.
fn quoted(v: &str) -> String {
    v.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A")
}

/// `parts` as a `multipart/form-data` body with `boundary`; `replace` gives
/// a part new contents (the model's name upstream), else it goes as sent.
pub fn encode<'a>(parts: &'a [FormPart], boundary: &str, replace: impl Fn(&FormPart) -> Option<&'a [u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.data.len() + 160).sum());
    for p in parts {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"", quoted(&p.name)).as_bytes(),
        );
        if let Some(f) = &p.filename {
            out.extend_from_slice(format!("; filename=\"{}\"", quoted(f)).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if let Some(t) = &p.content_type {
            out.extend_from_slice(format!("Content-Type: {}\r\n", t.replace(['\r', '\n'], "")).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(replace(p).unwrap_or(&p.data));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}
