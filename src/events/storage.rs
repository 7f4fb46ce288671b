//! SQL for `events`, `webhook_endpoints` and `webhook_deliveries`.

use crate::domain::{DeliveryId, EndpointId, Timestamp, UserId};
use crate::error::Result;
use crate::paging::{List, Page};
use crate::storage::{Conn, Row, StorageError};
use rusqlite::params;

const CURSOR_KEY: &str = "events_fanned_out_through";

#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: i64,
    pub uid: String,
    pub etype: String,
    pub data: String,
    pub created_at: Timestamp,
}

pub fn insert_event(
    conn: &Conn<'_>,
    uid: &str,
    etype: &str,
    user: Option<UserId>,
    data: &str,
    at: Timestamp,
) -> Result<()> {
    conn.execute(
        "INSERT INTO events (uid, type, user_id, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![uid, etype, user, data, at],
    )?;
    Ok(())
}

fn event_row(r: &Row<'_>) -> std::result::Result<EventRow, StorageError> {
    Ok(EventRow { id: r.get(0)?, uid: r.get(1)?, etype: r.get(2)?, data: r.get(3)?, created_at: r.get(4)? })
}

/// Events after the fan-out cursor, oldest first.
pub fn events_to_fan_out(conn: &Conn<'_>, limit: usize) -> Result<Vec<EventRow>> {
    Ok(conn.query_all(
        "SELECT id, uid, type, data, created_at FROM events
             WHERE id > (SELECT CAST(value AS INTEGER) FROM settings WHERE key = ?1) ORDER BY id LIMIT ?2",
        params![CURSOR_KEY, limit as i64],
        event_row,
    )?)
}

pub fn set_fanned_out_through(conn: &Conn<'_>, id: i64) -> Result<()> {
    conn.execute("UPDATE settings SET value = ?2 WHERE key = ?1", params![CURSOR_KEY, id.to_string()])?;
    Ok(())
}

pub fn insert_delivery(conn: &Conn<'_>, event: i64, endpoint: EndpointId, now: Timestamp) -> Result<()> {
    conn.execute(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, status, next_attempt_at, created_at)
         VALUES (?1, ?2, 'pending', ?3, ?3) ON CONFLICT (event_id, endpoint_id) DO NOTHING",
        params![event, endpoint, now],
    )?;
    Ok(())
}

// --- endpoints ---

#[derive(Debug, Clone)]
pub struct EndpointRow {
    pub id: EndpointId,
    pub url: String,
    pub secret: Option<String>,
    pub events: Vec<String>,
    pub description: String,
    pub config_key: Option<String>,
    pub created_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
}

const ENDPOINT_COLUMNS: &str = "id, url, secret, events, description, config_key, created_at, deleted_at";

fn endpoint_row(r: &Row<'_>) -> std::result::Result<EndpointRow, StorageError> {
    let events: String = r.get(3)?;
    Ok(EndpointRow {
        id: r.get(0)?,
        url: r.get(1)?,
        secret: r.get(2)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        description: r.get(4)?,
        config_key: r.get(5)?,
        created_at: r.get(6)?,
        deleted_at: r.get(7)?,
    })
}

/// Every stored signing secret (of live and deleted endpoints), by row.
pub fn stored_secrets(conn: &Conn<'_>) -> Result<Vec<(EndpointId, String)>> {
    let rows: Vec<(EndpointId, String)> =
        conn.query_all("SELECT id, secret FROM webhook_endpoints WHERE secret IS NOT NULL ORDER BY id", &[], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok(rows)
}

pub fn set_secret(conn: &Conn<'_>, id: EndpointId, stored: &str) -> Result<()> {
    conn.execute("UPDATE webhook_endpoints SET secret = ?2 WHERE id = ?1", params![id, stored])?;
    Ok(())
}

pub struct NewEndpoint<'a> {
    pub url: &'a str,
    pub secret: Option<&'a str>,
    pub events: &'a [String],
    pub description: &'a str,
    pub config_key: Option<&'a str>,
}

pub fn insert_endpoint(conn: &Conn<'_>, e: &NewEndpoint<'_>, now: Timestamp) -> Result<EndpointId> {
    let events = serde_json::to_string(e.events).unwrap_or_else(|_| "[]".into());
    Ok(conn.query_one(
        "INSERT INTO webhook_endpoints (url, secret, events, description, config_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        params![e.url, e.secret, events, e.description, e.config_key, now],
        |r| r.get(0),
    )?)
}

/// A config endpoint's row (found by its key), revived and brought up to
/// date with the file; inserted when new.
pub fn upsert_config_endpoint(conn: &Conn<'_>, e: &NewEndpoint<'_>, now: Timestamp) -> Result<EndpointId> {
    let events = serde_json::to_string(e.events).unwrap_or_else(|_| "[]".into());
    let found: Option<EndpointId> =
        conn.query_opt("SELECT id FROM webhook_endpoints WHERE config_key = ?1", params![e.config_key], |r| r.get(0))?;
    match found {
        Some(id) => {
            conn.execute(
                "UPDATE webhook_endpoints SET url = ?2, events = ?3, description = ?4, deleted_at = NULL WHERE id = ?1",
                params![id, e.url, events, e.description],
            )?;
            Ok(id)
        }
        None => insert_endpoint(conn, e, now),
    }
}

/// Config endpoints no longer in the file are deleted.
pub fn delete_config_endpoints_except(conn: &Conn<'_>, keep: &[EndpointId], now: Timestamp) -> Result<Vec<EndpointId>> {
    let gone: Vec<EndpointId> = conn
        .query_all("SELECT id FROM webhook_endpoints WHERE config_key IS NOT NULL AND deleted_at IS NULL", &[], |r| {
            r.get(0)
        })?
        .into_iter()
        .filter(|id| !keep.contains(id))
        .collect();
    for id in &gone {
        delete_endpoint(conn, *id, now)?;
    }
    Ok(gone)
}

pub fn endpoint(conn: &Conn<'_>, id: EndpointId) -> Result<Option<EndpointRow>> {
    Ok(conn.query_opt(
        &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?1"),
        params![id],
        endpoint_row,
    )?)
}

pub fn live_endpoints(conn: &Conn<'_>) -> Result<Vec<EndpointRow>> {
    Ok(conn.query_all(
        &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE deleted_at IS NULL ORDER BY id"),
        &[],
        endpoint_row,
    )?)
}

pub fn list_endpoints(conn: &Conn<'_>, page: &Page) -> Result<List<EndpointRow>> {
    let rows = conn
        .query_all(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE deleted_at IS NULL AND id < ?1 ORDER BY id DESC LIMIT ?2"
        ), params![page.before_id(), page.fetch()], endpoint_row)?;
    Ok(List::from_rows(rows, page))
}

/// Deletes an endpoint; its pending deliveries end as failed.
pub fn delete_endpoint(conn: &Conn<'_>, id: EndpointId, now: Timestamp) -> Result<bool> {
    let n = conn.execute(
        "UPDATE webhook_endpoints SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
        params![id, now],
    )?;
    conn.execute(
        "UPDATE webhook_deliveries SET status = 'failed', finished_at = ?2, last_error = 'the endpoint was deleted'
         WHERE endpoint_id = ?1 AND status = 'pending'",
        params![id, now],
    )?;
    Ok(n == 1)
}

// --- deliveries ---

#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: DeliveryId,
    pub event: EventRow,
    pub endpoint: EndpointId,
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

const DELIVERY_COLUMNS: &str = "d.id, e.id, e.uid, e.type, e.data, e.created_at, d.endpoint_id, d.status, d.attempts,
    d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.finished_at";

fn delivery_row(r: &Row<'_>) -> std::result::Result<DeliveryRow, StorageError> {
    Ok(DeliveryRow {
        id: r.get(0)?,
        event: EventRow { id: r.get(1)?, uid: r.get(2)?, etype: r.get(3)?, data: r.get(4)?, created_at: r.get(5)? },
        endpoint: r.get(6)?,
        status: r.get(7)?,
        attempts: r.get(8)?,
        next_attempt_at: r.get(9)?,
        last_status_code: r.get(10)?,
        last_error: r.get(11)?,
        created_at: r.get(12)?,
        finished_at: r.get(13)?,
    })
}

/// Pending deliveries whose attempt is due, oldest due first.
pub fn due(conn: &Conn<'_>, now: Timestamp, limit: usize) -> Result<Vec<DeliveryRow>> {
    Ok(conn.query_all(
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.status = 'pending' AND d.next_attempt_at <= ?1 ORDER BY d.next_attempt_at, d.id LIMIT ?2"
        ),
        params![now, limit as i64],
        delivery_row,
    )?)
}

/// When the next pending delivery is due (the dispatcher's sleep).
pub fn next_due(conn: &Conn<'_>) -> Result<Option<Timestamp>> {
    Ok(conn
        .query_one("SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'", &[], |r| r.get(0))?)
}

/// What one attempt came to.
pub enum Attempt {
    Delivered { status: u16 },
    Retry { status: Option<u16>, error: String, at: Timestamp },
    Failed { status: Option<u16>, error: String },
}

/// Records an attempt on a delivery that is still pending (a redelivery or
/// a deleted endpoint may have moved it meanwhile: then nothing changes).
pub fn record(conn: &Conn<'_>, id: DeliveryId, attempt: &Attempt, now: Timestamp) -> Result<bool> {
    let (status, next, code, error, finished) = match attempt {
        Attempt::Delivered { status } => ("delivered", now, Some(*status), None, Some(now)),
        Attempt::Retry { status, error, at } => ("pending", *at, *status, Some(error.as_str()), None),
        Attempt::Failed { status, error } => ("failed", now, *status, Some(error.as_str()), Some(now)),
    };
    let n = conn.execute(
        "UPDATE webhook_deliveries SET status = ?2, attempts = attempts + 1, next_attempt_at = ?3,
             last_status_code = ?4, last_error = ?5, finished_at = ?6 WHERE id = ?1 AND status = 'pending'",
        params![id, status, next, code, error, finished],
    )?;
    Ok(n == 1)
}

pub fn delivery(conn: &Conn<'_>, id: DeliveryId) -> Result<Option<DeliveryRow>> {
    Ok(conn.query_opt(
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id WHERE d.id = ?1"
        ),
        params![id],
        delivery_row,
    )?)
}

pub fn list_deliveries(
    conn: &Conn<'_>,
    status: Option<&str>,
    endpoint: Option<EndpointId>,
    page: &Page,
) -> Result<List<DeliveryRow>> {
    let rows = conn
        .query_all(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.id < ?1 AND (CAST(?2 AS TEXT) IS NULL OR d.status = ?2) AND (CAST(?3 AS BIGINT) IS NULL OR d.endpoint_id = ?3)
             ORDER BY d.id DESC LIMIT ?4"
        ), params![page.before_id(), status, endpoint, page.fetch()], delivery_row)?;
    Ok(List::from_rows(rows, page))
}

/// Sends a delivery again from its first attempt: pending, due now.
pub fn redeliver(conn: &Conn<'_>, id: DeliveryId, now: Timestamp) -> Result<()> {
    conn.execute(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?2, finished_at = NULL
         WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

/// Events older than `before` whose deliveries all finished, and those
/// deliveries. Returns the events removed.
pub fn prune(conn: &Conn<'_>, before: Timestamp, batch: usize) -> Result<usize> {
    let ids: Vec<i64> = conn.query_all(
        "SELECT id FROM events WHERE created_at < ?1
             AND id <= (SELECT CAST(value AS INTEGER) FROM settings WHERE key = ?2)
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = events.id AND d.status = 'pending')
             ORDER BY id LIMIT ?3",
        params![before, CURSOR_KEY, batch as i64],
        |r| r.get(0),
    )?;
    for id in &ids {
        conn.execute("DELETE FROM webhook_deliveries WHERE event_id = ?1", params![id])?;
        conn.execute("DELETE FROM events WHERE id = ?1", params![id])?;
    }
    Ok(ids.len())
}
