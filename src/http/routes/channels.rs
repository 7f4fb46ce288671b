//! `/v1/admin/channels` and `/v1/admin/models`: the live catalog. Keys are
//! sealed here, on the HTTP worker (never in the writer), and never shown
//! again; after each change the snapshot is rebuilt before the answer, so
//! the very next request on every worker sees it.

use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::response::Response;
use crate::http::route::{Access, Ctx, Route, doc, route};
use crate::paging::List;
use crate::providers::admin::{self, ChannelPatch, KeyPatch, ModelPatch, NewChannel, NewModel, SealedKey};
use crate::providers::live;
use serde::Deserialize;

/// The catalog routes, in the order the router tries them.
pub static ROUTES: &[Route] = &[
    route(
        "POST",
        "/v1/admin/channels",
        Access::Admin,
        create,
        doc(
            "Add a channel: a provider kind, base URL, keys (sealed, never shown again), models, weight, priority",
            Some("NewChannel"),
            201,
            "ChannelView",
        ),
    ),
    route(
        "GET",
        "/v1/admin/channels",
        Access::Admin,
        list,
        doc("Every channel with its keys (fingerprints only) and their health", None, 200, "ChannelList"),
    ),
    route("GET", "/v1/admin/channels/{id}", Access::Admin, get, doc("One channel", None, 200, "ChannelView")),
    route(
        "PATCH",
        "/v1/admin/channels/{id}",
        Access::Admin,
        update,
        doc("Change a channel (a config-file channel becomes the API's)", Some("ChannelPatch"), 200, "ChannelView"),
    ),
    route(
        "DELETE",
        "/v1/admin/channels/{id}",
        Access::Admin,
        delete,
        doc("Delete a channel added through the API, with its keys", None, 200, "ChannelView"),
    ),
    route(
        "POST",
        "/v1/admin/channels/{id}/test",
        Access::Admin,
        test,
        doc("One real test call through the channel: latency and answer", Some("TestBody"), 200, "TestCall"),
    ),
    route(
        "POST",
        "/v1/admin/channels/{id}/keys",
        Access::Admin,
        add_key,
        doc("Add an upstream key to a channel", Some("NewKeyBody"), 201, "KeyView"),
    ),
    route(
        "PATCH",
        "/v1/admin/channels/{id}/keys/{key_id}",
        Access::Admin,
        update_key,
        doc("Rotate a key's secret, or enable or disable it", Some("KeyPatch"), 200, "KeyView"),
    ),
    route(
        "DELETE",
        "/v1/admin/channels/{id}/keys/{key_id}",
        Access::Admin,
        delete_key,
        doc("Delete an upstream key", None, 200, "KeyView"),
    ),
    route(
        "POST",
        "/v1/admin/models",
        Access::Admin,
        create_model,
        doc("Add a model with its price", Some("NewModel"), 201, "ModelView"),
    ),
    route(
        "GET",
        "/v1/admin/models",
        Access::Admin,
        list_models,
        doc("Every model: prices, the channels serving it, enabled or not", None, 200, "CatalogModelList"),
    ),
    route("GET", "/v1/admin/models/{name}", Access::Admin, get_model, doc("One model", None, 200, "ModelView")),
    route(
        "PATCH",
        "/v1/admin/models/{name}",
        Access::Admin,
        update_model,
        doc(
            "Change a model's price or bounds, enable or disable it (applies to the next call)",
            Some("ModelPatch"),
            200,
            "ModelView",
        ),
    ),
    route(
        "DELETE",
        "/v1/admin/models/{name}",
        Access::Admin,
        delete_model,
        doc("Delete a model added through the API", None, 200, "ModelView"),
    ),
];

/// A catalog change is in force before its answer: the snapshot is built
/// again from what was just committed.
fn reloaded(ctx: &Ctx, r: Result<Response, ApiError>) -> Result<Response, ApiError> {
    let r = r?;
    for p in ctx.app.adapter.reload()? {
        log::error!("catalog entry unusable after a change: {p}");
    }
    Ok(r)
}

/// Seals a key for storage: refused without `TOLLGATE_SECRET_KEY`.
fn seal(ctx: &Ctx, key: &str, param: &str) -> Result<SealedKey, ApiError> {
    let key = key.trim();
    if key.is_empty() || key.len() > admin::KEY_BYTES_MAX {
        return Err(Error::invalid(param, format!("a key is 1 to {} bytes", admin::KEY_BYTES_MAX)).into());
    }
    let sealer = ctx.app.adapter.seal_key().ok_or_else(|| {
        ApiError::refuse(
            "secret_key_unset",
            "Upstream keys are stored sealed: set TOLLGATE_SECRET_KEY (tollgate secrets new-key) and restart.",
        )
    })?;
    Ok(SealedKey {
        sealed: sealer.seal(key).map_err(Error::Internal)?,
        fingerprint: live::fingerprint(key),
        last4: live::last4(key),
    })
}

pub fn create(ctx: &Ctx) -> Result<Response, ApiError> {
    let body: NewChannel = ctx.req.json()?;
    if body.keys.len() > admin::CHANNEL_KEYS_MAX {
        return Err(Error::invalid("keys", format!("a channel holds at most {} keys", admin::CHANNEL_KEYS_MAX)).into());
    }
    let keys = body.keys.iter().map(|k| seal(ctx, k, "keys")).collect::<Result<Vec<_>, _>>()?;
    let who = ctx.user()?.id;
    reloaded(ctx, ctx.commit(201, move |c| admin::create_channel(c, who, &body, &keys)))
}

pub fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let adapter = &ctx.app.adapter;
    let data = ctx.app.db.read(|c| admin::list_channels(c, &|k| adapter.key_stats(k)))?;
    Ok(Response::json(200, &List { object: "list", data, has_more: false }))
}

pub fn get(ctx: &Ctx) -> Result<Response, ApiError> {
    let adapter = &ctx.app.adapter;
    let id = ctx.param(0);
    Ok(Response::json(200, &ctx.app.db.read(|c| admin::get_channel(c, id, &|k| adapter.key_stats(k)))?))
}

pub fn update(ctx: &Ctx) -> Result<Response, ApiError> {
    let body: ChannelPatch = ctx.req.json()?;
    let (who, id) = (ctx.user()?.id, ctx.param(0).to_owned());
    reloaded(ctx, ctx.commit(200, move |c| admin::update_channel(c, who, &id, &body)))
}

pub fn delete(ctx: &Ctx) -> Result<Response, ApiError> {
    let (who, id) = (ctx.user()?.id, ctx.param(0).to_owned());
    reloaded(ctx, ctx.commit(200, move |c| admin::delete_channel(c, who, &id)))
}

/// `POST /v1/admin/channels/{id}/test`.
#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestBody {
    /// A model the channel serves (default: its first chat or embedding model).
    #[serde(default)]
    model: Option<String>,
    /// One of its keys (default: its first enabled key).
    #[serde(default)]
    key_id: Option<String>,
}

pub fn test(ctx: &Ctx) -> Result<Response, ApiError> {
    let body: TestBody = if ctx.req.body.is_empty() { TestBody::default() } else { ctx.req.json()? };
    let id = ctx.param(0);
    if ctx.app.db.read(|c| crate::providers::store::channel(c, id))?.is_none() {
        return Err(Error::not_found("channel").into());
    }
    let result = ctx
        .app
        .adapter
        .test_channel(id, body.model.as_deref(), body.key_id.as_deref())
        .map_err(|m| Error::invalid("model", m))?;
    Ok(Response::json(200, &result))
}

/// `POST /v1/admin/channels/{id}/keys`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewKeyBody {
    /// The upstream key (stored sealed; never shown again).
    key: String,
}

pub fn add_key(ctx: &Ctx) -> Result<Response, ApiError> {
    let body: NewKeyBody = ctx.req.json()?;
    let sealed = seal(ctx, &body.key, "key")?;
    let (who, id) = (ctx.user()?.id, ctx.param(0).to_owned());
    reloaded(ctx, ctx.commit(201, move |c| admin::add_key(c, who, &id, &sealed)))
}

pub fn update_key(ctx: &Ctx) -> Result<Response, ApiError> {
    let body: KeyPatch = ctx.req.json()?;
    let sealed = body.key.as_deref().map(|k| seal(ctx, k, "key")).transpose()?;
    let (who, id, key) = (ctx.user()?.id, ctx.param(0).to_owned(), ctx.param(1).to_owned());
    let enabled = body.enabled;
    reloaded(ctx, ctx.commit(200, move |c| admin::update_key(c, who, &id, &key, enabled, sealed.as_ref())))
}

pub fn delete_key(ctx: &Ctx) -> Result<Response, ApiError> {
    let (who, id, key) = (ctx.user()?.id, ctx.param(0).to_owned(), ctx.param(1).to_owned());
    reloaded(ctx, ctx.commit(200, move |c| admin::delete_key(c, who, &id, &key)))
}

pub fn create_model(ctx: &Ctx) -> Result<Response, ApiError> {
    let body: NewModel = ctx.req.json()?;
    let who = ctx.user()?.id;
    reloaded(ctx, ctx.commit(201, move |c| admin::create_model(c, who, &body)))
}

pub fn list_models(ctx: &Ctx) -> Result<Response, ApiError> {
    let data = ctx.app.db.read(admin::list_models)?;
    Ok(Response::json(200, &List { object: "list", data, has_more: false }))
}

pub fn get_model(ctx: &Ctx) -> Result<Response, ApiError> {
    let name = ctx.param(0);
    Ok(Response::json(200, &ctx.app.db.read(|c| admin::get_model(c, name))?))
}

pub fn update_model(ctx: &Ctx) -> Result<Response, ApiError> {
    let body: ModelPatch = ctx.req.json()?;
    let (who, name) = (ctx.user()?.id, ctx.param(0).to_owned());
    reloaded(ctx, ctx.commit(200, move |c| admin::update_model(c, who, &name, &body)))
}

pub fn delete_model(ctx: &Ctx) -> Result<Response, ApiError> {
    let (who, name) = (ctx.user()?.id, ctx.param(0).to_owned());
    reloaded(ctx, ctx.commit(200, move |c| admin::delete_model(c, who, &name)))
}
