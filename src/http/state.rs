//! What the HTTP server holds: the [`App`] every layer shares, plus the state
//! only HTTP uses (the CORS policy, the open job event streams). Built once
//! when the server starts; nothing below `http` ever sees it.

use super::cors::Cors;
use super::routes::job_events::Streams;
use crate::app::App;
use std::sync::Arc;

pub struct HttpState {
    pub app: Arc<App>,
    /// Cross-origin access for browser frontends.
    pub cors: Cors,
    /// Open job event streams, for their bounds.
    pub job_streams: Streams,
}

impl HttpState {
    pub fn new(app: Arc<App>) -> HttpState {
        let cors = Cors::new(&app.config.server.cors_origins, app.config.server.cors_max_age_s);
        HttpState { app, cors, job_streams: Streams::default() }
    }
}
