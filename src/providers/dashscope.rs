//! Alibaba Cloud Model Studio (DashScope) for Qwen's image and video models:
//! the asynchronous task API.
//!
//! - Submit: `POST {base}/api/v1/services/aigc/text2image/image-synthesis`
//!   or `.../video-generation/video-synthesis` with `X-DashScope-Async:
//!   enable` and `Authorization: Bearer`, body `{model, input:{prompt},
//!   parameters}` -> `output.task_id`.
//! - Poll: `GET {base}/api/v1/tasks/{task_id}` -> `output.task_status` one of
//!   `PENDING`, `RUNNING`, `SUCCEEDED`, `FAILED`, `CANCELED`, `UNKNOWN`;
//!   results in `output.video_url` or `output.results[].url`; usage in
//!   `usage.video_duration` / `usage.image_count`.
//! - Cancel: `POST {base}/api/v1/tasks/{task_id}/cancel` (pending tasks only).
//! - Chat goes to the OpenAI-compatible mode at `{base}/compatible-mode/v1`.

use super::ProviderError;
use super::http;
use super::types::{ImageRequest, TaskState, VideoRequest};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use ureq::Agent;

/// Poll interval bounds for a task awaited inline (an image request).
const POLL_MS_MIN: u64 = 200;
const POLL_MS_MAX: u64 = 3_000;

pub struct DashScope {
    pub base_url: String,
    pub key: Option<String>,
    pub agent: Agent,
    /// How long an inline image task may take.
    pub task_timeout: Duration,
}

impl DashScope {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }

    fn auth(
        &self,
        rb: ureq::RequestBuilder<ureq::typestate::WithBody>,
    ) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        match &self.key {
            Some(k) => rb.header("Authorization", &format!("Bearer {k}")),
            None => rb,
        }
    }

    fn submit(&self, path: &str, body: &Value) -> Result<String, ProviderError> {
        let rb = self.auth(self.agent.post(&self.url(path))).header("X-DashScope-Async", "enable");
        let v = http::read_json(http::check(rb.send_json(body).map_err(ProviderError::from_ureq)?)?)?;
        v.pointer("/output/task_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ProviderError::BadResponse("no output.task_id".into()))
    }

    pub fn submit_video(&self, upstream: &str, req: &VideoRequest) -> Result<String, ProviderError> {
        let body =
            json!({"model": upstream, "input": {"prompt": req.prompt}, "parameters": {"duration": req.duration_s}});
        let mut body = body;
        if let Some(r) = &req.resolution {
            body["parameters"]["resolution"] = json!(r);
        }
        self.submit("/api/v1/services/aigc/video-generation/video-synthesis", &body)
    }

    pub fn submit_image(&self, upstream: &str, req: &ImageRequest) -> Result<String, ProviderError> {
        let mut params = json!({"n": req.n});
        if let Some(s) = &req.size {
            params["size"] = json!(s.replace('x', "*"));
        }
        let body = json!({"model": upstream, "input": {"prompt": req.prompt}, "parameters": params});
        self.submit("/api/v1/services/aigc/text2image/image-synthesis", &body)
    }

    pub fn poll(&self, task_id: &str) -> Result<TaskState, ProviderError> {
        let mut rb = self.agent.get(&self.url(&format!("/api/v1/tasks/{task_id}")));
        if let Some(k) = &self.key {
            rb = rb.header("Authorization", &format!("Bearer {k}"));
        }
        let v = http::read_json(http::check(rb.call().map_err(ProviderError::from_ureq)?)?)?;
        let status = v.pointer("/output/task_status").and_then(Value::as_str).unwrap_or("UNKNOWN");
        Ok(match status {
            "PENDING" | "RUNNING" => TaskState::Running,
            "SUCCEEDED" => {
                let mut urls: Vec<String> = Vec::new();
                if let Some(u) = v.pointer("/output/video_url").and_then(Value::as_str) {
                    urls.push(u.to_owned());
                }
                if let Some(items) = v.pointer("/output/results").and_then(Value::as_array) {
                    urls.extend(items.iter().filter_map(|i| i.get("url").and_then(Value::as_str)).map(str::to_owned));
                }
                let duration_s = v.pointer("/usage/video_duration").and_then(Value::as_u64).map(|d| d as u32);
                TaskState::Succeeded { urls, duration_s }
            }
            "FAILED" | "CANCELED" => TaskState::Failed {
                code: v.pointer("/output/code").and_then(Value::as_str).unwrap_or(status).to_owned(),
                message: v
                    .pointer("/output/message")
                    .and_then(Value::as_str)
                    .unwrap_or("the task did not succeed")
                    .to_owned(),
            },
            // UNKNOWN: the task expired or never existed.
            other => {
                TaskState::Failed { code: other.to_owned(), message: "the provider does not know this task".into() }
            }
        })
    }

    pub fn cancel(&self, task_id: &str) -> Result<(), ProviderError> {
        let rb = self.auth(self.agent.post(&self.url(&format!("/api/v1/tasks/{task_id}/cancel"))));
        http::check(rb.send_empty().map_err(ProviderError::from_ureq)?)?;
        Ok(())
    }

    /// Submits an image task and waits for it (for `/v1/images/generations`).
    pub fn image(&self, upstream: &str, req: &ImageRequest) -> Result<Vec<String>, ProviderError> {
        let task = self.submit_image(upstream, req)?;
        let started = Instant::now();
        let mut wait = POLL_MS_MIN;
        loop {
            match self.poll(&task)? {
                TaskState::Succeeded { urls, .. } if !urls.is_empty() => return Ok(urls),
                TaskState::Succeeded { .. } => {
                    return Err(ProviderError::BadResponse("the task returned no images".into()));
                }
                TaskState::Failed { code, message } => {
                    return Err(ProviderError::Status { status: 502, message: format!("{code}: {message}") });
                }
                TaskState::Running if started.elapsed() > self.task_timeout => {
                    let _ = self.cancel(&task);
                    return Err(ProviderError::Timeout);
                }
                TaskState::Running => {
                    std::thread::sleep(Duration::from_millis(wait));
                    wait = (wait * 2).min(POLL_MS_MAX);
                }
            }
        }
    }
}
