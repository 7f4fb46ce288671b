//! `/v1/files/{id}` and `/v1/files/{id}/content`: kept job outputs.
//!
//! The content route is public in the route table because a signed URL
//! (`?expires=&signature=`) is its own credential, for `<img>` and
//! `<video>` tags that cannot send a header; without one, the handler
//! authenticates the caller itself through `auth::authenticate` (the only
//! way to an identity) and serves only the owner or an admin. Single byte
//! ranges are served (206), so video players can seek.

use crate::domain::{FileId, Timestamp};
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, Route, doc, route, with_query};
use crate::media::{FileView, sniff, storage};
use std::io::{Read, Seek, SeekFrom};

/// The files routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    route(
        "GET",
        "/v1/files/{id}",
        Access::User,
        get,
        doc("A kept output file, with a fresh signed URL", None, 200, "FileView"),
    ),
    with_query(
        route(
            "GET",
            "/v1/files/{id}/content",
            Access::Public,
            content,
            doc("A kept file's bytes (credential, or ?expires=&signature=); Range gives 206", None, 200, "Binary"),
        ),
        &["expires", "signature"],
    ),
];

fn file_param(ctx: &Ctx) -> Result<FileId, ApiError> {
    Ok(FileId::parse(ctx.param(0)).ok_or_else(|| Error::not_found("file"))?)
}

/// A live file the caller may read (others' files do not exist for them).
fn readable(
    ctx: &Ctx,
    id: FileId,
    owner_check: Option<&crate::auth::CurrentUser>,
) -> Result<storage::FileRow, ApiError> {
    let row = ctx
        .app
        .db
        .read(|c| storage::get(c, id))?
        .filter(|f| owner_check.is_none_or(|u| u.is_admin() || u.id == f.user))
        .ok_or_else(|| Error::not_found("file"))?;
    if row.deleted_at.is_some() {
        return Err(ApiError::refuse("file_expired", "This file passed the media store's retention and was deleted."));
    }
    Ok(row)
}

/// `GET /v1/files/{id}`: the file object, with a fresh signed URL.
pub fn get(ctx: &Ctx) -> Result<Response, ApiError> {
    let caller = ctx.user()?;
    let row = readable(ctx, file_param(ctx)?, Some(&caller))?;
    Ok(Response::json(200, &FileView::of(&row, Some(&ctx.app.media))))
}

/// `GET /v1/files/{id}/content`: the bytes, by signed URL or credential.
pub fn content(ctx: &Ctx) -> Result<Response, ApiError> {
    let id = file_param(ctx)?;
    let row = match (ctx.req.query("expires"), ctx.req.query("signature")) {
        (None, None) => {
            let a = &ctx.app;
            let caller = crate::auth::authenticate(&a.db, &a.keys, &a.credentials, ctx.req.header("authorization"))?;
            readable(ctx, id, Some(&caller))?
        }
        (Some(expires), Some(signature)) => {
            let expires: i64 = expires.parse().map_err(|_| bad_signature())?;
            if !ctx.app.media.verify(id, expires, signature) {
                return Err(bad_signature());
            }
            if expires < Timestamp::now().millis() / 1000 {
                return Err(ApiError::refuse(
                    "url_expired",
                    "This signed URL has expired. Get a fresh one from GET /v1/files/{id} or the job.",
                ));
            }
            readable(ctx, id, None)?
        }
        _ => return Err(bad_signature()),
    };
    serve(ctx, &row)
}

fn bad_signature() -> ApiError {
    ApiError::refuse("invalid_signature", "The URL's signature does not match; use the signed URL exactly as given.")
}

/// What a `Range` header asks of a body of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Whole,
    Part { start: u64, end: u64 },
    Unsatisfiable,
}

/// One `bytes=` range (`a-b`, `a-`, `-n`); anything else (several ranges,
/// another unit, nonsense) gets the whole body, as RFC 9110 allows.
fn wanted(header: Option<&str>, len: u64) -> Wanted {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Wanted::Whole };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return Wanted::Whole };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        (true, false) => match parse(b) {
            Some(0) => Wanted::Unsatisfiable,
            Some(n) if len > 0 => Wanted::Part { start: len.saturating_sub(n), end: len - 1 },
            Some(_) => Wanted::Unsatisfiable,
            None => Wanted::Whole,
        },
        (false, _) => {
            let Some(start) = parse(a) else { return Wanted::Whole };
            let end = if b.is_empty() { Some(u64::MAX) } else { parse(b) };
            match end {
                None => Wanted::Whole,
                Some(end) if end < start => Wanted::Whole,
                Some(_) if start >= len => Wanted::Unsatisfiable,
                Some(end) => Wanted::Part { start, end: end.min(len - 1) },
            }
        }
        (true, true) => Wanted::Whole,
    }
}

fn serve(ctx: &Ctx, row: &storage::FileRow) -> Result<Response, ApiError> {
    let path = ctx.app.media.path(&row.sha256);
    let mut file = std::fs::File::open(&path).map_err(|e| {
        Error::Internal(format!("kept file {} is missing from the media store ({}): {e}", row.id, path.display()))
    })?;
    let len = row.bytes;
    let content_type = sniff::known(&row.content_type);
    let mut headers = vec![
        ("Accept-Ranges", "bytes".to_owned()),
        ("ETag", format!("\"{}\"", row.sha256)),
        ("Cache-Control", "private, max-age=3600".to_owned()),
        ("X-Content-Type-Options", "nosniff".to_owned()),
    ];
    let (status, start, count) = match wanted(ctx.req.header("range"), len) {
        Wanted::Whole => (200, 0, len),
        Wanted::Part { start, end } => {
            headers.push(("Content-Range", format!("bytes {start}-{end}/{len}")));
            (206, start, end - start + 1)
        }
        Wanted::Unsatisfiable => {
            let mut r =
                ApiError::refuse("range_not_satisfiable", format!("The range is outside the file's {len} bytes."))
                    .into_response();
            r.headers.push(("Content-Range", format!("bytes */{len}")));
            return Ok(r);
        }
    };
    file.seek(SeekFrom::Start(start)).map_err(|e| Error::Internal(format!("cannot read a kept file: {e}")))?;
    Ok(Response {
        status,
        content_type,
        headers,
        body: Vec::new(),
        stream: Some(Box::new(file.take(count))),
        stream_len: usize::try_from(count).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_single_byte_ranges_and_ignores_the_rest() {
        assert_eq!(wanted(None, 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-9"), 100), Wanted::Part { start: 0, end: 9 });
        assert_eq!(wanted(Some("bytes=90-"), 100), Wanted::Part { start: 90, end: 99 });
        assert_eq!(wanted(Some("bytes=-10"), 100), Wanted::Part { start: 90, end: 99 });
        assert_eq!(wanted(Some("bytes=-500"), 100), Wanted::Part { start: 0, end: 99 });
        assert_eq!(wanted(Some("bytes=50-5000"), 100), Wanted::Part { start: 50, end: 99 });
        assert_eq!(wanted(Some("bytes=100-"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-0"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-1,5-6"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("items=0-1"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=9-1"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=x-"), 100), Wanted::Whole);
    }
}
