//! Events out: a durable outbox and the webhooks that carry it.
//!
//! [`emit`] writes an event row in the caller's transaction, so an event
//! exists exactly when the change it reports committed. Nothing here sends
//! anything inside a transaction: `delivery` fans committed events out to
//! the endpoints (`endpoints`) and sends them, signed per the Standard
//! Webhooks spec (`signing`), from threads of its own, so a slow or dead
//! receiver never slows a request or the writer. This module never formats
//! HTTP responses.

pub mod delivery;
pub mod endpoints;
pub mod signing;
pub mod storage;
pub mod url_guard;

pub use crate::domain::EventType;
use crate::domain::{Credits, Timestamp, UserId};
use crate::error::Result;
use crate::storage::Conn;
use serde_json::{Value, json};

/// Random bytes in an event's wire id (`evt_` + hex): unique across
/// restores of older backups, so a receiver that de-duplicates by id never
/// drops a new event as a repeat.
const EVENT_ID_RANDOM_BYTES: usize = 12;

/// Records an event in the caller's transaction; `data` is serialized once,
/// straight into the row.
pub fn emit(conn: &Conn<'_>, etype: EventType, user: Option<UserId>, data: &impl serde::Serialize) -> Result<()> {
    let uid =
        format!("evt_{}", crate::support::token::hex(&crate::support::token::random_bytes::<EVENT_ID_RANDOM_BYTES>()?));
    let data = serde_json::to_string(data)
        .map_err(|e| crate::error::Error::Internal(format!("cannot encode a {} event: {e}", etype.as_str())))?;
    storage::insert_event(conn, &uid, etype.as_str(), user, &data, Timestamp::now())?;
    Ok(())
}

/// `credits.low` when a spend takes the available balance from at least
/// `threshold` to below it: once per crossing, because the next spend starts
/// below (a grant that lifts it above arms it again).
pub fn spent(
    conn: &Conn<'_>,
    user: UserId,
    available_before: Credits,
    amount: Credits,
    threshold: Credits,
) -> Result<()> {
    let after = available_before - amount;
    if threshold > Credits::ZERO && available_before >= threshold && after < threshold {
        emit(
            conn,
            EventType::CreditsLow,
            Some(user),
            &json!({"user_id": user, "available": after, "threshold": threshold}),
        )?;
    }
    Ok(())
}

/// The body a receiver gets: `{id, type, created_at, data}`.
pub fn wire_body(e: &storage::EventRow) -> String {
    let data: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
    json!({"id": e.uid, "type": e.etype, "created_at": e.created_at, "data": data}).to_string()
}

/// Events pruned per writer transaction.
const PRUNE_BATCH_MAX: usize = 1_000;

/// Removes events older than `retention_days` whose deliveries all ended.
pub fn prune(db: &crate::storage::Db, retention_days: u32) -> Result<usize> {
    if retention_days == 0 {
        return Ok(0);
    }
    let before = Timestamp::now().plus_ms(-i64::from(retention_days) * 86_400_000);
    let mut total = 0;
    loop {
        let n = db.write(move |c| storage::prune(c, before, PRUNE_BATCH_MAX))?;
        total += n;
        if n < PRUNE_BATCH_MAX {
            return Ok(total);
        }
    }
}

/// A delivery on the wire (`GET /v1/admin/webhook-deliveries`).
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct Delivery {
    pub id: crate::domain::DeliveryId,
    /// Always `webhook_delivery`.
    pub object: &'static str,
    /// The event's id (`evt_...`): the `webhook-id` header the receiver got.
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: crate::domain::EndpointId,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    /// When the next attempt runs (pending deliveries only).
    pub next_attempt_at: Option<Timestamp>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

impl From<storage::DeliveryRow> for Delivery {
    fn from(d: storage::DeliveryRow) -> Delivery {
        Delivery {
            id: d.id,
            object: "webhook_delivery",
            event_id: d.event.uid,
            event_type: d.event.etype,
            endpoint_id: d.endpoint,
            next_attempt_at: (d.status == "pending").then_some(d.next_attempt_at),
            status: d.status,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            created_at: d.created_at,
            finished_at: d.finished_at,
        }
    }
}

/// Delivery states a list may filter on.
pub const DELIVERY_STATUSES: [&str; 3] = ["pending", "delivered", "failed"];

pub fn list_deliveries(
    db: &crate::storage::Db,
    status: Option<&'static str>,
    endpoint: Option<crate::domain::EndpointId>,
    page: &crate::paging::Page,
) -> Result<crate::paging::List<Delivery>> {
    db.read(|c| {
        let rows = storage::list_deliveries(c, status, endpoint, page)?;
        Ok(crate::paging::List {
            object: "list",
            data: rows.data.into_iter().map(Delivery::from).collect(),
            has_more: rows.has_more,
        })
    })
}

/// Sends a delivery again from its first attempt, now. Refused while its
/// endpoint is deleted (nobody to send it to).
pub fn redeliver(conn: &Conn<'_>, id: crate::domain::DeliveryId) -> Result<Delivery> {
    let d = storage::delivery(conn, id)?.ok_or_else(|| crate::error::Error::not_found("webhook delivery"))?;
    if storage::endpoint(conn, d.endpoint)?.is_none_or(|e| e.deleted_at.is_some()) {
        return Err(crate::error::Error::Conflict {
            code: "webhook_endpoint_deleted",
            message: "The endpoint of this delivery was deleted; there is nowhere to send it.".into(),
        });
    }
    storage::redeliver(conn, id, Timestamp::now())?;
    let d = storage::delivery(conn, id)?.ok_or_else(|| crate::error::Error::not_found("webhook delivery"))?;
    Ok(d.into())
}
