//! `[media]`: the store of kept job outputs. Reads settings only; `media`
//! acts on them.

use super::{ConfigError, bad};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The media store: job outputs downloaded from providers and kept.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Where kept files live; empty = beside the database (`<db>.media`).
    pub dir: PathBuf,
    /// Download job outputs into the store (false = pass provider URLs on).
    pub keep_outputs: bool,
    /// Largest single output kept; a larger one stays at the provider.
    pub file_bytes_max: u64,
    /// All kept files together (live rows); 0 = no limit.
    pub store_bytes_max: u64,
    /// Download attempts per output, with backoff, before the job completes
    /// with the provider's URL (`kept: false`).
    pub download_attempts_max: u32,
    pub download_backoff_base_ms: u64,
    /// Whole time of one download attempt.
    pub download_timeout_s: u64,
    /// Kept files are deleted this many days after they were kept; 0 = never.
    pub retention_days: u32,
    /// Lifetime of signed URLs (`?expires=&signature=`).
    pub signed_url_ttl_s: u64,
    /// Download outputs from loopback and private addresses too (a
    /// provider on the operator's own network); off: public addresses only.
    pub allow_private_urls: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            dir: PathBuf::new(),
            keep_outputs: true,
            file_bytes_max: 512 * 1_048_576,
            store_bytes_max: 0,
            download_attempts_max: 5,
            download_backoff_base_ms: 2_000,
            download_timeout_s: 300,
            retention_days: 0,
            signed_url_ttl_s: 3_600,
            allow_private_urls: false,
        }
    }
}

impl MediaConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let m = self;
        if m.file_bytes_max == 0 || m.download_attempts_max == 0 || m.download_attempts_max > 20 {
            return bad("media.file_bytes_max / download_attempts_max", "file_bytes_max positive, attempts 1..=20");
        }
        if m.download_timeout_s == 0 || m.signed_url_ttl_s == 0 || m.signed_url_ttl_s > 30 * 86_400 {
            return bad("media.download_timeout_s / signed_url_ttl_s", "positive; signed URLs live at most 30 days");
        }
        Ok(())
    }

    /// The store's folder for the database at `db`.
    pub fn dir_for(&self, db: &Path) -> PathBuf {
        if self.dir.as_os_str().is_empty() {
            let mut p = db.as_os_str().to_owned();
            p.push(".media");
            PathBuf::from(p)
        } else {
            self.dir.clone()
        }
    }
}
