//! SQL for `usage_daily`.

use super::{Counted, Dim, UsageRow};
use crate::domain::{ApiKeyId, UserId};
use rusqlite::{Connection, params_from_iter, types::Value};

/// Adds `c` to its (day, user, model, key) row.
pub fn add(conn: &Connection, day: i64, user: UserId, c: &Counted) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO usage_daily (day, user_id, model, api_key_id, requests, input_tokens, output_tokens, images,
                                  video_seconds, cost, failures)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (day, user_id, model, api_key_id) DO UPDATE SET
           requests = requests + excluded.requests, input_tokens = input_tokens + excluded.input_tokens,
           output_tokens = output_tokens + excluded.output_tokens, images = images + excluded.images,
           video_seconds = video_seconds + excluded.video_seconds, cost = cost + excluded.cost,
           failures = failures + excluded.failures",
    )?
    .execute(rusqlite::params![
        day,
        user,
        c.model,
        c.api_key.map_or(0, |k| k.0),
        c.requests,
        c.input_tokens,
        c.output_tokens,
        c.images,
        c.video_seconds,
        c.cost,
        c.failures
    ])?;
    Ok(())
}

fn column(d: Dim) -> &'static str {
    match d {
        Dim::Day => "day",
        Dim::Model => "model",
        Dim::User => "user_id",
        Dim::Key => "api_key_id",
    }
}

/// Sums over `[start_day, end_day]` (of one user, if given), grouped by
/// `dims` (each from a fixed list: never text from a request), ordered by
/// them; at most `limit` groups.
pub fn grouped(
    conn: &Connection,
    start_day: i64,
    end_day: i64,
    user: Option<UserId>,
    dims: &[Dim],
    limit: usize,
) -> rusqlite::Result<Vec<UsageRow>> {
    let cols: Vec<&str> = dims.iter().map(|d| column(*d)).collect();
    let select = if cols.is_empty() { String::new() } else { format!("{}, ", cols.join(", ")) };
    let group = if cols.is_empty() { String::new() } else { format!("GROUP BY {0} ORDER BY {0}", cols.join(", ")) };
    let sql = format!(
        "SELECT {select} count(*), sum(requests), sum(input_tokens), sum(output_tokens), sum(images),
                sum(video_seconds), sum(cost), sum(failures)
         FROM usage_daily WHERE day BETWEEN ?1 AND ?2 AND (?3 IS NULL OR user_id = ?3) {group} LIMIT ?4"
    );
    let args: Vec<Value> = vec![
        Value::Integer(start_day),
        Value::Integer(end_day),
        user.map_or(Value::Null, |u| Value::Integer(u.0)),
        Value::Integer(limit as i64),
    ];
    let mut st = conn.prepare(&sql)?;
    let rows = st.query_map(params_from_iter(args), |r| {
        let mut row = UsageRow::default();
        for (i, d) in dims.iter().enumerate() {
            match d {
                Dim::Day => row.day = Some(super::day_string(r.get(i)?)),
                Dim::Model => row.model = Some(r.get(i)?),
                Dim::User => row.user_id = Some(UserId(r.get(i)?)),
                Dim::Key => row.api_key_id = Some(r.get::<_, i64>(i).map(|k| (k != 0).then_some(ApiKeyId(k)))?),
            }
        }
        let n = dims.len();
        let groups: i64 = r.get(n)?;
        if groups == 0 {
            return Ok(None);
        }
        row.requests = r.get(n + 1)?;
        row.input_tokens = r.get(n + 2)?;
        row.output_tokens = r.get(n + 3)?;
        row.images = r.get(n + 4)?;
        row.video_seconds = r.get(n + 5)?;
        row.cost = r.get(n + 6)?;
        row.failures = r.get(n + 7)?;
        Ok(Some(row))
    })?;
    let mut out = Vec::new();
    for r in rows {
        out.extend(r?);
    }
    Ok(out)
}

/// Every user's total charged cost in the aggregate (for the audit).
pub fn cost_by_user(conn: &Connection) -> rusqlite::Result<Vec<(i64, i64)>> {
    conn.prepare("SELECT user_id, sum(cost) FROM usage_daily GROUP BY user_id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}
