//! `/v1/jobs`: create, list, get, cancel, retry; `/v1/admin/jobs`.

use crate::domain::{Credits, JobId, UserId};
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, PAGED_STATUS, Route, doc, route, with_query};
use crate::jobs::input::{self, JobInput};
use crate::jobs::{self, JobStatus, JobType};
use serde::Deserialize;
use serde_json::Value;

/// The jobs routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    route(
        "POST",
        "/v1/jobs",
        Access::User,
        create,
        doc("Queue a generation job (holds its cost bound)", Some("JobCreate"), 202, "Job"),
    ),
    with_query(
        route("GET", "/v1/jobs", Access::User, list, doc("Your jobs (?status=)", None, 200, "JobList")),
        PAGED_STATUS,
    ),
    route("GET", "/v1/jobs/{id}", Access::User, get, doc("One of your jobs, with its events", None, 200, "Job")),
    route(
        "POST",
        "/v1/jobs/{id}/cancel",
        Access::User,
        cancel,
        doc("Cancel a queued or processing job", None, 200, "Job"),
    ),
    route("POST", "/v1/jobs/{id}/retry", Access::User, retry, doc("Retry a failed or canceled job", None, 202, "Job")),
    with_query(
        route(
            "GET",
            "/v1/admin/users/{id}/jobs",
            Access::Admin,
            of_user,
            doc("A user's jobs (?status=)", None, 200, "JobList"),
        ),
        PAGED_STATUS,
    ),
    with_query(
        route(
            "GET",
            "/v1/admin/jobs",
            Access::Admin,
            admin_list,
            doc("All jobs (?status=&user_id=)", None, 200, "JobList"),
        ),
        &["status", "user_id", "limit", "starting_after"],
    ),
];

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "JobCreate")]
pub(crate) struct NewJob {
    #[serde(rename = "type")]
    jtype: String,
    model: String,
    input: Value,
    #[serde(default)]
    max_cost: Option<i64>,
}

pub fn create(ctx: &Ctx) -> Result<Response, ApiError> {
    let caller = ctx.user()?;
    let user = caller.id;
    let body: NewJob = ctx.req.json()?;
    let jtype = JobType::parse(&body.jtype)
        .ok_or_else(|| Error::invalid("type", "type must be text_generation, image_generation or video_generation"))?;
    let model = ctx.app.adapter.model(&body.model).ok_or_else(|| {
        ApiError::refuse("model_not_found", format!("The model {:?} does not exist. See GET /v1/models.", body.model))
            .with_param("model")
    })?;
    let model = &*model;
    caller.check_model(&model.name)?;
    if model.kind != input::model_kind(jtype) {
        return Err(Error::invalid("model", format!("{} is not a model for {}", model.name, jtype.as_str())).into());
    }
    let mut parsed = input::parse(jtype, model, &body.input)?;
    if let Some(max_cost) = body.max_cost {
        if max_cost < 0 {
            return Err(Error::invalid("max_cost", "max_cost must not be negative").into());
        }
        input::fit_max_cost(model, &mut parsed, Credits(max_cost))?;
    }
    // At the caller's price group, as the worker charges it.
    let multiplier = ctx.app.config.pricing.multiplier_micro(caller.price_group.as_deref());
    let bound = crate::metered::scale_credits(input::bound(model, &parsed), multiplier);
    ctx.app.guard.check_cost(user, bound)?;
    let mut stored = body.input.clone();
    if let JobInput::Text(req) = &parsed {
        // The worker runs exactly what was bounded.
        stored["max_tokens"] = serde_json::json!(req.max_tokens);
    }
    let max = ctx.app.config.jobs.input_bytes_max;
    if serde_json::to_vec(&stored).map_or(usize::MAX, |b| b.len()) > max {
        return Err(ApiError::refuse(
            "payload_too_large",
            format!("A job's input is at most {max} bytes as stored (jobs.input_bytes_max)."),
        )
        .with_param("input"));
    }
    let c = jobs::Create {
        user,
        jtype,
        model: model.name.clone(),
        input: stored,
        bound,
        max_attempts: ctx.app.config.jobs.attempts_max,
        bounds: jobs::QueueBounds::of(&ctx.app.config.jobs),
        hold_ttl_ms: ctx.app.hold_ttl_ms(),
        caps: ctx.app.guard.spend_caps(&caller),
    };
    // The user's row, then the queue lock (`jobs::QueueBounds`): beside
    // other users' writes, unless a global daily cap makes the hold run alone.
    let lock = c.caps.lock_user(user);
    let response = ctx.commit_for(lock, 202, move |conn| jobs::create(conn, &c))?;
    ctx.app.notifier.notify();
    ctx.app.job_changes.notify();
    Ok(response)
}

fn status_filter(ctx: &Ctx) -> Result<Option<JobStatus>, ApiError> {
    match ctx.req.query("status") {
        None => Ok(None),
        Some(s) => Ok(Some(JobStatus::parse(s).ok_or_else(|| {
            Error::invalid("status", "status must be queued, processing, completed, failed or canceled")
        })?)),
    }
}

/// Job objects as answered: kept outputs get fresh signed URLs.
fn signed(ctx: &Ctx, mut job: Value) -> Value {
    if let Some(out) = job.get_mut("output") {
        crate::media::sign_output(&ctx.app.media, out);
    }
    job
}

fn list_of(ctx: &Ctx, user: Option<UserId>) -> Result<Response, ApiError> {
    let mut list = jobs::list(&ctx.app.db, user, status_filter(ctx)?, &ctx.req.page_after(JobId::PREFIX)?)?;
    list.data = list.data.into_iter().map(|j| signed(ctx, j)).collect();
    Ok(Response::json(200, &list))
}

pub fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user()?.id;
    list_of(ctx, Some(user))
}

fn job_param(ctx: &Ctx) -> Result<JobId, ApiError> {
    Ok(JobId::parse(ctx.param(0)).ok_or_else(|| Error::not_found("job"))?)
}

pub fn get(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user()?;
    let id = job_param(ctx)?;
    Ok(Response::json(200, &signed(ctx, jobs::get_for(&ctx.app.db, Some(user.id), id)?)))
}

pub fn cancel(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user()?.id;
    let id = job_param(ctx)?;
    let response = ctx.commit_for(Some(user), 200, move |c| jobs::cancel(c, user, id))?;
    ctx.app.job_changes.notify();
    Ok(response)
}

pub fn retry(ctx: &Ctx) -> Result<Response, ApiError> {
    let caller = ctx.user()?;
    let user = caller.id;
    let id = job_param(ctx)?;
    let (ttl, caps) = (ctx.app.hold_ttl_ms(), ctx.app.guard.spend_caps(&caller));
    let bounds = jobs::QueueBounds::of(&ctx.app.config.jobs);
    let lock = caps.lock_user(user);
    let response = ctx.commit_for(lock, 202, move |c| jobs::retry(c, user, id, &bounds, ttl, &caps))?;
    ctx.app.notifier.notify();
    ctx.app.job_changes.notify();
    Ok(response)
}

/// `GET /v1/admin/users/{id}/jobs` (`?status=`).
pub fn of_user(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = super::admin::user_param(ctx)?;
    ctx.app.db.read(|c| crate::users::get_any(c, user))?;
    list_of(ctx, Some(user))
}

pub fn admin_list(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = match ctx.req.query("user_id") {
        None => None,
        Some(s) => {
            Some(UserId::parse(s).ok_or_else(|| Error::invalid("user_id", "user_id must be a user id (usr_...)"))?)
        }
    };
    list_of(ctx, user)
}
