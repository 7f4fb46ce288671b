//! Downloading a job's outputs into the store: each URL with a whole-attempt
//! timeout, a size limit, a content check by the bytes themselves, and its
//! SHA-256 computed on the way in; failures retried with backoff. Nothing
//! here writes the database: the completing job records what was kept.

use super::{Store, sniff};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::time::Duration;

/// Read buffer while streaming a download to disk.
const CHUNK_BYTES: usize = 64 << 10;

/// A kept download.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub sha256: String,
    pub bytes: u64,
    pub content_type: &'static str,
}

/// What became of one output URL.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub url: String,
    pub result: Result<Downloaded, String>,
}

/// Why an attempt failed, and whether another could succeed.
struct Failure {
    why: String,
    retry: bool,
}

fn permanent(why: impl Into<String>) -> Failure {
    Failure { why: why.into(), retry: false }
}

fn transient(why: impl Into<String>) -> Failure {
    Failure { why: why.into(), retry: true }
}

/// Provider outputs are downloaded from public addresses only (each
/// redirect hop checked too), unless `media.allow_private_urls`.
pub fn agent(store: &Store) -> ureq::Agent {
    crate::events::url_guard::agent(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(store.config.download_timeout_s)))
            .http_status_as_error(false)
            .max_redirects(REDIRECTS_MAX)
            .build(),
        store.config.allow_private_urls,
    )
}

/// Redirects a download follows, each to a checked address.
pub const REDIRECTS_MAX: u32 = 5;

/// Downloads every URL, each with up to `download_attempts_max` attempts.
/// `between` runs before each retry (the worker renews its lease there) and
/// says whether to go on (false: the job is no longer ours, or shutdown).
pub fn keep_all(
    store: &Store,
    urls: &[String],
    used_bytes: u64,
    mut between: impl FnMut(Duration) -> bool,
) -> Vec<Outcome> {
    let agent = agent(store);
    let mut used = used_bytes;
    let m = crate::metrics::global();
    urls.iter()
        .map(|url| {
            let mut attempt = 1;
            let result = loop {
                match download(&agent, store, url, used) {
                    Ok(d) => {
                        used += d.bytes;
                        m.media_downloads.with_label_values(&["kept"]).inc();
                        break Ok(d);
                    }
                    Err(f) if f.retry && attempt < store.config.download_attempts_max => {
                        m.media_downloads.with_label_values(&["retry"]).inc();
                        let wait = store.config.download_backoff_base_ms.saturating_mul(1 << (attempt - 1).min(16));
                        if !between(Duration::from_millis(wait)) {
                            break Err(format!("stopped before attempt {} ({})", attempt + 1, f.why));
                        }
                        attempt += 1;
                    }
                    Err(f) => {
                        m.media_downloads.with_label_values(&["not_kept"]).inc();
                        break Err(format!("{} (after {attempt} attempt(s))", f.why));
                    }
                }
            };
            Outcome { url: url.clone(), result }
        })
        .collect()
}

fn download(agent: &ureq::Agent, store: &Store, url: &str, used_bytes: u64) -> Result<Downloaded, Failure> {
    let cfg = &store.config;
    let mut resp = agent.get(url).call().map_err(|e| match e {
        // A URL (or a redirect) to a non-public address is refused for
        // good: trying again would not make it public.
        ureq::Error::BadUri(why) => permanent(format!("download refused: {why}")),
        e => transient(format!("download failed: {e}")),
    })?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let why = format!("the provider answered {status}");
        return Err(if status >= 500 || status == 408 || status == 429 { transient(why) } else { permanent(why) });
    }
    let claimed = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if !(claimed.starts_with("image/")
        || claimed.starts_with("video/")
        || claimed.starts_with("application/octet-stream"))
    {
        return Err(permanent(format!("the provider sent {claimed:?}, not an image or a video")));
    }
    let limit = match cfg.store_bytes_max {
        0 => cfg.file_bytes_max,
        total => cfg.file_bytes_max.min(total.saturating_sub(used_bytes)),
    };
    let tmp = store.dir().join("tmp").join(format!(
        "{}.part",
        crate::support::token::hex(&crate::support::token::random_bytes::<8>().map_err(|e| permanent(e.to_string()))?)
    ));
    let result = stream_to(&mut resp.body_mut().as_reader(), &tmp, limit);
    let (sha256, bytes, head) = match result {
        Ok(v) => v,
        Err(f) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(f);
        }
    };
    let Some(content_type) = sniff::content_type(&head) else {
        let _ = std::fs::remove_file(&tmp);
        return Err(permanent(
            "the bytes are not an image or video tollgate knows (PNG, JPEG, GIF, WebP, MP4, QuickTime, WebM)",
        ));
    };
    let dest = store.path(&sha256);
    let placed = dest.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::rename(&tmp, &dest));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(transient(format!("cannot store the file: {e}")));
    }
    Ok(Downloaded { sha256, bytes, content_type })
}

/// Writes `body` to `path` (at most `limit` bytes), hashing it on the way,
/// then fsyncs it. Returns the hash, the length and the first bytes.
fn stream_to(body: &mut impl Read, path: &std::path::Path, limit: u64) -> Result<(String, u64, Vec<u8>), Failure> {
    let mut file = std::fs::File::create(path).map_err(|e| transient(format!("cannot write the media store: {e}")))?;
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(sniff::SNIFF_BYTES);
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut total: u64 = 0;
    loop {
        let n = body.read(&mut buf).map_err(|e| transient(format!("the download broke off: {e}")))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            return Err(permanent(format!("the output is larger than the {limit} bytes the store may take")));
        }
        let chunk = &buf[..n];
        if head.len() < sniff::SNIFF_BYTES {
            head.extend_from_slice(&chunk[..chunk.len().min(sniff::SNIFF_BYTES - head.len())]);
        }
        hasher.update(chunk);
        file.write_all(chunk).map_err(|e| transient(format!("cannot write the media store: {e}")))?;
    }
    file.sync_all().map_err(|e| transient(format!("cannot sync the media store: {e}")))?;
    Ok((crate::support::token::hex(&hasher.finalize()), total, head))
}
