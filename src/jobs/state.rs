//! Job types and states, and the one function that says which transitions
//! are legal. An illegal transition is a bug: it returns an error and
//! nothing is written.

use crate::error::Error;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum JobType {
    #[serde(rename = "text_generation")]
    Text,
    #[serde(rename = "image_generation")]
    Image,
    #[serde(rename = "video_generation")]
    Video,
}

impl JobType {
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Text => "text_generation",
            JobType::Image => "image_generation",
            JobType::Video => "video_generation",
        }
    }

    pub fn parse(s: &str) -> Option<JobType> {
        match s {
            "text_generation" => Some(JobType::Text),
            "image_generation" => Some(JobType::Image),
            "video_generation" => Some(JobType::Video),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Processing,
    Completed,
    Failed,
    Canceled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        match s {
            "queued" => Some(JobStatus::Queued),
            "processing" => Some(JobStatus::Processing),
            "completed" => Some(JobStatus::Completed),
            "failed" => Some(JobStatus::Failed),
            "canceled" => Some(JobStatus::Canceled),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Canceled)
    }

    pub const ALL: [JobStatus; 5] =
        [JobStatus::Queued, JobStatus::Processing, JobStatus::Completed, JobStatus::Failed, JobStatus::Canceled];
}

/// The legal transitions:
/// - `queued -> processing` (a worker claims it), `queued -> canceled`;
/// - `processing -> completed | failed | canceled`, and `processing ->
///   queued` (a transient failure waiting for its retry, or recovery after a
///   restart);
/// - `failed | canceled -> queued` (retry, with a new hold).
pub fn check(from: JobStatus, to: JobStatus) -> Result<(), Error> {
    use JobStatus::*;
    let ok = matches!(
        (from, to),
        (Queued, Processing)
            | (Queued, Canceled)
            | (Processing, Completed)
            | (Processing, Failed)
            | (Processing, Canceled)
            | (Processing, Queued)
            | (Failed, Queued)
            | (Canceled, Queued)
    );
    if ok {
        Ok(())
    } else {
        Err(Error::Internal(format!("illegal job transition {} -> {}", from.as_str(), to.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_transitions_are_legal() {
        let legal: usize = JobStatus::ALL
            .iter()
            .flat_map(|a| JobStatus::ALL.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| check(*a, *b).is_ok())
            .count();
        assert_eq!(legal, 8);
        assert!(check(JobStatus::Completed, JobStatus::Queued).is_err(), "a completed job is never run again");
        assert!(check(JobStatus::Queued, JobStatus::Completed).is_err(), "nothing completes without running");
        assert!(check(JobStatus::Failed, JobStatus::Completed).is_err());
    }
}
