//! The media store: job outputs downloaded from providers and kept beside
//! the database, so a user who paid for a video still has it after the
//! provider's URL expired.
//!
//! Layout: `<dir>/<first two hex of sha256>/<sha256>`, content-addressed
//! (the same bytes are kept once), written under `<dir>/tmp/` and renamed
//! into place after an fsync. Rows in `files` (see `storage`) say who owns
//! what; a file's bytes go when no live row holds them. Kept files are
//! served at `/v1/files/{id}/content` with a credential, or with a signed,
//! expiring URL ([`Store::signed_path`]) that an `<img>` or `<video>` tag can
//! use without one. This module never formats HTTP.

pub mod fetch;
pub mod sniff;
pub mod storage;

use crate::config::MediaConfig;
use crate::domain::{FileId, JobId, Timestamp, UserId};
use crate::error::Result;
use crate::storage::Conn;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;
use std::path::{Path, PathBuf};

/// The settings row holding the URL-signing key (made at first start).
const SIGNING_KEY_SETTING: &str = "media_signing_key";
/// Files past retention handled per sweep.
const SWEEP_BATCH_MAX: usize = 500;
/// Bytes younger than this are never removed by a sweep: a download of the
/// same content may be about to record a row for them.
const REMOVE_GRACE_S: u64 = 3_600;

pub struct Store {
    dir: PathBuf,
    key: Vec<u8>,
    pub config: MediaConfig,
}

/// Where the bytes with this hash live under `dir`.
pub fn content_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(sha256.get(..2).unwrap_or("00")).join(sha256)
}

impl Store {
    /// Opens (creating) the store for the database at `db_path`, with the
    /// signing key from the database.
    pub fn open(config: &MediaConfig, db_path: &Path, db: &crate::storage::Db) -> std::result::Result<Store, String> {
        let dir = config.dir_for(db_path);
        std::fs::create_dir_all(dir.join("tmp"))
            .map_err(|e| format!("cannot create the media store {}: {e}", dir.display()))?;
        let key = crate::auth::secret_setting(db, SIGNING_KEY_SETTING)
            .map_err(|e| format!("cannot load the media signing key: {e}"))?;
        Ok(Store { dir, key: key.into_bytes(), config: config.clone() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        content_path(&self.dir, sha256)
    }

    fn mac(&self, id: FileId, expires_s: i64) -> Hmac<Sha256> {
        // HMAC takes a key of any length; new_from_slice cannot fail here.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(format!("{id}.{expires_s}").as_bytes());
        mac
    }

    /// `/v1/files/{id}/content?expires=<unix s>&signature=<base64url>`,
    /// valid for `media.signed_url_ttl_s` from `now`.
    pub fn signed_path(&self, id: FileId, now: Timestamp) -> String {
        let expires = now.millis() / 1000 + self.config.signed_url_ttl_s as i64;
        let sig = URL_SAFE_NO_PAD.encode(self.mac(id, expires).finalize().into_bytes());
        format!("/v1/files/{id}/content?expires={expires}&signature={sig}")
    }

    /// Whether a signature is this store's for `id` and `expires`, in
    /// constant time. Expiry is checked by the caller.
    pub fn verify(&self, id: FileId, expires_s: i64, signature: &str) -> bool {
        let Ok(sig) = URL_SAFE_NO_PAD.decode(signature) else { return false };
        self.mac(id, expires_s).verify_slice(&sig).is_ok()
    }

    /// Removes the bytes of hashes no live row holds (after the grace).
    fn remove_unheld(&self, hashes: &[String]) {
        for sha in hashes {
            let path = self.path(sha);
            let young = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() < REMOVE_GRACE_S);
            if !young && let Err(e) = std::fs::remove_file(&path) {
                log::warn!("cannot remove expired media {}: {e}", path.display());
            }
        }
    }
}

/// A file's wire form, as it appears in job outputs and `GET /v1/files/{id}`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct FileView {
    pub id: FileId,
    /// Always `file`.
    pub object: &'static str,
    pub content_type: String,
    pub bytes: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Fetch with your credential.
    pub url: String,
    /// Fetch without one, until it expires (`media.signed_url_ttl_s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_url: Option<String>,
    pub job_id: Option<JobId>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

impl FileView {
    pub fn of(row: &storage::FileRow, store: Option<&Store>) -> FileView {
        FileView {
            id: row.id,
            object: "file",
            content_type: row.content_type.clone(),
            bytes: row.bytes,
            sha256: row.sha256.clone(),
            url: format!("/v1/files/{}/content", row.id),
            signed_url: store.map(|s| s.signed_path(row.id, Timestamp::now())),
            job_id: row.job,
            created_at: row.created_at,
            expires_at: row.expires_at,
        }
    }
}

/// The provider URLs in a job output (image URLs, the video URL).
pub fn output_urls(output: &Value) -> Vec<String> {
    let mut urls: Vec<String> = output
        .get("images")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("url").and_then(Value::as_str).map(str::to_owned))
        .collect();
    urls.extend(output.get("video_url").and_then(Value::as_str).map(str::to_owned));
    urls
}

/// In the completing job's transaction: records a row for each kept output
/// and points the output at it (`url` -> tollgate's, `kept: true`, `file`,
/// `provider_url`); outputs not kept get `kept: false` and keep the
/// provider's URL.
pub fn attach(
    conn: &Conn<'_>,
    user: UserId,
    job: JobId,
    output: &mut Value,
    kept: &[fetch::Outcome],
    retention_days: u32,
) -> Result<()> {
    let now = Timestamp::now();
    let expires_at = (retention_days > 0).then(|| now.plus_ms(i64::from(retention_days) * 86_400_000));
    let view_of = |url: &str| -> Result<Option<Value>> {
        let Some(Ok(d)) = kept.iter().find(|o| o.url == url).map(|o| &o.result) else { return Ok(None) };
        let new = storage::NewFile {
            user,
            job: Some(job),
            sha256: &d.sha256,
            bytes: d.bytes,
            content_type: d.content_type,
            source_url: url,
            expires_at,
        };
        let id = storage::insert(conn, &new, now)?;
        let row = storage::get(conn, id)?.ok_or_else(|| crate::error::Error::Internal("file vanished".into()))?;
        Ok(Some(serde_json::to_value(FileView::of(&row, None)).unwrap_or(Value::Null)))
    };
    if let Some(images) = output.get_mut("images").and_then(Value::as_array_mut) {
        for img in images {
            let Some(url) = img.get("url").and_then(Value::as_str).map(str::to_owned) else { continue };
            point_at(img, "url", view_of(&url)?, &url);
        }
    }
    if let Some(url) = output.get("video_url").and_then(Value::as_str).map(str::to_owned) {
        let file = view_of(&url)?;
        point_at(output, "video_url", file, &url);
    }
    Ok(())
}

/// Points `holder[url_key]` at a kept file (with `kept`, `file` and the
/// provider's URL beside it), or marks it `kept: false`.
fn point_at(holder: &mut Value, url_key: &str, file: Option<Value>, provider_url: &str) {
    match file {
        Some(file) => {
            holder[url_key] = file["url"].clone();
            holder["kept"] = json!(true);
            holder["file"] = file;
            holder["provider_url"] = json!(provider_url);
        }
        None => holder["kept"] = json!(false),
    }
}

/// Adds a fresh `signed_url` to every kept file in a job output (at read
/// time: a stored signed URL would expire in the stored output).
pub fn sign_output(store: &Store, output: &mut Value) {
    let now = Timestamp::now();
    let sign = |file: &mut Value| {
        if let Some(id) = file.get("id").and_then(Value::as_str).and_then(FileId::parse) {
            file["signed_url"] = json!(store.signed_path(id, now));
        }
    };
    if let Some(images) = output.get_mut("images").and_then(Value::as_array_mut) {
        for img in images {
            if let Some(f) = img.get_mut("file") {
                sign(f);
            }
        }
    }
    if let Some(f) = output.get_mut("file") {
        sign(f);
    }
}

/// Retention: marks files past their time deleted and removes bytes no
/// live row holds. Returns how many contents were released.
pub fn sweep(db: &crate::storage::Db, store: &Store) -> Result<usize> {
    let orphaned = db.write(|c| storage::expire(c, Timestamp::now(), SWEEP_BATCH_MAX))?;
    store.remove_unheld(&orphaned);
    Ok(orphaned.len())
}
