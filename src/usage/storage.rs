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
    conn.prepare_cached(
        "INSERT INTO usage_totals (day, model, requests, input_tokens, output_tokens, images, video_seconds, cost, failures)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (day, model) DO UPDATE SET
           requests = requests + excluded.requests, input_tokens = input_tokens + excluded.input_tokens,
           output_tokens = output_tokens + excluded.output_tokens, images = images + excluded.images,
           video_seconds = video_seconds + excluded.video_seconds, cost = cost + excluded.cost,
           failures = failures + excluded.failures",
    )?
    .execute(rusqlite::params![
        day,
        c.model,
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

/// The sums of one group, in report order.
type Sums = [i64; 7];

/// Sums over `[start_day, end_day]` (of one user, if given), grouped by
/// `dims` (each from a fixed list: never text from a request), in group
/// order; `None` past `limit` groups (memory stays bounded). All users by day and model read
/// `usage_totals` (a few rows a day); one user reads their own rows through
/// `usage_daily_by_user`; the rest is one range scan of the days, summed
/// here (no sort of the rows).
pub fn grouped(
    conn: &Connection,
    start_day: i64,
    end_day: i64,
    user: Option<UserId>,
    dims: &[Dim],
    limit: usize,
) -> rusqlite::Result<Option<Vec<UsageRow>>> {
    let totals_only = user.is_none() && dims.iter().all(|d| matches!(d, Dim::Day | Dim::Model));
    let sums = "requests, input_tokens, output_tokens, images, video_seconds, cost, failures";
    let (sql, args): (String, Vec<Value>) = if totals_only {
        (
            format!("SELECT day, model, 0, 0, {sums} FROM usage_totals WHERE day BETWEEN ?1 AND ?2"),
            vec![Value::Integer(start_day), Value::Integer(end_day)],
        )
    } else if let Some(u) = user {
        (
            format!(
                "SELECT day, model, user_id, api_key_id, {sums} FROM usage_daily INDEXED BY usage_daily_by_user
                 WHERE user_id = ?3 AND day BETWEEN ?1 AND ?2"
            ),
            vec![Value::Integer(start_day), Value::Integer(end_day), Value::Integer(u.0)],
        )
    } else {
        (
            format!("SELECT day, model, user_id, api_key_id, {sums} FROM usage_daily WHERE day BETWEEN ?1 AND ?2"),
            vec![Value::Integer(start_day), Value::Integer(end_day)],
        )
    };
    let mut groups: std::collections::BTreeMap<(i64, String, i64, i64), Sums> = std::collections::BTreeMap::new();
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(params_from_iter(args))?;
    while let Some(r) = rows.next()? {
        let (day, model, user_id, key): (i64, String, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        let key = (
            if dims.contains(&Dim::Day) { day } else { 0 },
            if dims.contains(&Dim::Model) { model } else { String::new() },
            if dims.contains(&Dim::User) { user_id } else { 0 },
            if dims.contains(&Dim::Key) { key } else { 0 },
        );
        if groups.len() >= limit && !groups.contains_key(&key) {
            return Ok(None);
        }
        let g = groups.entry(key).or_default();
        for (i, slot) in g.iter_mut().enumerate() {
            *slot += r.get::<_, i64>(4 + i)?;
        }
    }
    let mut out: Vec<UsageRow> = groups
        .into_iter()
        .map(|((day, model, user_id, key), s)| UsageRow {
            day: dims.contains(&Dim::Day).then(|| super::day_string(day)),
            model: dims.contains(&Dim::Model).then_some(model),
            user_id: dims.contains(&Dim::User).then_some(UserId(user_id)),
            api_key_id: dims.contains(&Dim::Key).then(|| (key != 0).then_some(ApiKeyId(key))),
            requests: s[0],
            input_tokens: s[1],
            output_tokens: s[2],
            images: s[3],
            video_seconds: s[4],
            cost: s[5],
            failures: s[6],
        })
        .collect();
    // Groups in the order the caller named the dimensions.
    out.sort_by(|a, b| {
        dims.iter()
            .map(|d| match d {
                Dim::Day => a.day.cmp(&b.day),
                Dim::Model => a.model.cmp(&b.model),
                Dim::User => a.user_id.map(|u| u.0).cmp(&b.user_id.map(|u| u.0)),
                Dim::Key => a.api_key_id.flatten().map(|k| k.0).cmp(&b.api_key_id.flatten().map(|k| k.0)),
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(Some(out))
}

/// Per (day, model): the totals table's cost and the detail's (the audit
/// checks they agree); only the pairs that differ.
pub fn totals_drift(conn: &Connection) -> rusqlite::Result<Vec<(i64, String, i64, i64)>> {
    conn.prepare(
        "SELECT coalesce(t.day, d.day), coalesce(t.model, d.model), coalesce(t.cost, 0), coalesce(d.cost, 0)
         FROM usage_totals t FULL OUTER JOIN (SELECT day, model, sum(cost) AS cost FROM usage_daily GROUP BY day, model) d
           ON d.day = t.day AND d.model = t.model
         WHERE coalesce(t.cost, 0) <> coalesce(d.cost, 0)",
    )?
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
    .collect()
}

/// Every user's total charged cost in the aggregate (for the audit).
pub fn cost_by_user(conn: &Connection) -> rusqlite::Result<Vec<(i64, i64)>> {
    conn.prepare("SELECT user_id, sum(cost) FROM usage_daily GROUP BY user_id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}
