//! Copying every row of a SQLite database into an empty PostgreSQL one
//! (`tollgate migrate-to-postgres`): table by table in an order that
//! satisfies every reference, ids kept, identity counters moved past them.
//!
//! This module owns the SQL of the copy. It never decides whether the copy
//! is good (the audit, run by `ops`, does) and never commits: the caller's
//! transaction holds it all or nothing.

use super::StorageError;
use super::sql::{Conn, dyn_params, values_list};
use rusqlite::types::Value;

/// Every table, parents before children (references are checked on
/// insert). A test checks that this names every table of the schema.
pub const TABLES_IN_COPY_ORDER: &[&str] = &[
    "settings",
    "users",
    "api_keys",
    "redemption_codes",
    "credit_transactions",
    "ledger_seals",
    "ledger_seal_heads",
    "credit_holds",
    "jobs",
    "credit_grants",
    "grant_draws",
    "hold_reservations",
    "job_events",
    "logs",
    "idempotency_keys",
    "daily_spend_global",
    "user_limits",
    "api_key_daily_spend",
    "events",
    "webhook_endpoints",
    "webhook_deliveries",
    "files",
    "sessions",
    "refresh_tokens",
    "password_resets",
    "oidc_identities",
    "oidc_logins",
    "oidc_codes",
    "usage_daily",
    "usage_totals",
    "usage_user_running",
    "channels",
    "channel_keys",
    "catalog_models",
    "payments",
    "payment_events",
    "subscriptions",
    "auto_topups",
];

/// Rows per INSERT: PostgreSQL takes at most 65,535 parameters a statement,
/// and the widest table (jobs) has 22 columns.
pub const COPY_ROWS_PER_STATEMENT_MAX: usize = 1_000;

/// Whether `to` holds anything a copy would collide with: any user, ledger
/// row or log (the rows migrations seed in `settings` do not count).
pub fn is_empty(to: &Conn<'_>) -> Result<bool, StorageError> {
    let n: i64 = to.query_one(
        "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM credit_transactions) + (SELECT count(*) FROM logs)",
        &[],
        |r| r.get(0),
    )?;
    Ok(n == 0)
}

/// The columns of `table` in `from`, in schema order.
fn columns(from: &Conn<'_>, table: &str) -> Result<Vec<String>, StorageError> {
    from.query_all("SELECT name FROM pragma_table_info(?1) ORDER BY cid", rusqlite::params![table], |r| r.get(0))
}

/// Copies every row of every table from `from` (SQLite) into `to`
/// (PostgreSQL, inside the caller's transaction); rows copied per table.
/// `progress` hears each table as it finishes.
pub fn copy_all(
    from: &Conn<'_>,
    to: &Conn<'_>,
    mut progress: impl FnMut(&str, u64),
) -> Result<Vec<(&'static str, u64)>, StorageError> {
    // The seeded settings are replaced by the source's (its signing key,
    // its cursors).
    to.execute("DELETE FROM settings", &[])?;
    let mut out = Vec::new();
    for table in TABLES_IN_COPY_ORDER {
        let cols = columns(from, table)?;
        let n = copy_table(from, to, table, &cols)?;
        progress(table, n);
        out.push((*table, n));
    }
    // Identity columns hand out ids after the copied ones.
    for table in TABLES_IN_COPY_ORDER {
        let has_identity: bool = to.query_one(
            "SELECT count(*) > 0 FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = ?1 AND column_name = 'id' AND is_identity = 'YES'",
            rusqlite::params![table],
            |r| r.get(0),
        )?;
        if has_identity {
            to.query_one(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                ),
                &[],
                |_| Ok(()),
            )?;
        }
    }
    Ok(out)
}

fn copy_table(from: &Conn<'_>, to: &Conn<'_>, table: &str, cols: &[String]) -> Result<u64, StorageError> {
    let list = cols.join(", ");
    let mut pending: Vec<Value> = Vec::with_capacity(cols.len() * COPY_ROWS_PER_STATEMENT_MAX);
    let mut rows = 0u64;
    let flush = |pending: &mut Vec<Value>| -> Result<(), StorageError> {
        if pending.is_empty() {
            return Ok(());
        }
        let n = pending.len() / cols.len();
        let sql = format!("INSERT INTO {table} ({list}) VALUES {}", values_list(n, cols.len()));
        to.execute(&sql, &dyn_params(pending))?;
        pending.clear();
        Ok(())
    };
    // Streams the table (a SQLite table scans in id order, so the ledger
    // lands in PostgreSQL in id order too); `to` is another connection, so
    // it may insert while `from` reads.
    from.query_each(&format!("SELECT {list} FROM {table}"), &[], |r| {
        for i in 0..cols.len() {
            pending.push(r.get::<Value>(i)?);
        }
        rows += 1;
        if pending.len() >= cols.len() * COPY_ROWS_PER_STATEMENT_MAX {
            flush(&mut pending)?;
        }
        Ok(true)
    })?;
    flush(&mut pending)?;
    Ok(rows)
}
