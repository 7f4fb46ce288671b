//! SQL for `usage_daily`, `usage_totals` and `usage_user_running` (whose
//! row per user and day also carries the day's spend for the daily caps).

use super::{COUNT_COLUMNS, COUNTS_N, Counted, Counts, Dim, UsageRow};
use crate::domain::{ApiKeyId, UserId};
use crate::storage::sql::dyn_params;
use crate::storage::{Conn, Sql, StorageError, Write};
use rusqlite::types::Value;

type Result<T> = std::result::Result<T, StorageError>;

/// The counters every call has; the rest (cache, reasoning, audio, provider
/// cost) are zero for most calls and a plain consume.
const BASIC_COUNTS_N: usize = 7;

/// How many counters `c` needs written: the basic ones only, when the rest
/// are zero (an UPSERT's cost grows with the columns it sets: consume
/// measured 6% slower writing all twelve).
fn width(c: &Counted) -> usize {
    if c.counts.array()[BASIC_COUNTS_N..].iter().all(|n| *n == 0) { BASIC_COUNTS_N } else { COUNTS_N }
}

/// The counters of `c` as statement parameters, in column order.
fn counts(c: &Counted) -> impl Iterator<Item = Value> {
    c.counts.array().into_iter().take(width(c)).map(Value::Integer)
}

/// The statements that add a call's counters, written once from
/// [`COUNT_COLUMNS`] (a counter added there is added everywhere).
struct Statements {
    daily: String,
    totals: String,
    running_update: String,
    running_insert: String,
}

fn statements(width: usize) -> &'static Statements {
    static BASIC: std::sync::OnceLock<Statements> = std::sync::OnceLock::new();
    static FULL: std::sync::OnceLock<Statements> = std::sync::OnceLock::new();
    let cell = if width == BASIC_COUNTS_N { &BASIC } else { &FULL };
    cell.get_or_init(|| {
        let columns = &COUNT_COLUMNS[..width];
        let cols = columns.join(", ");
        // `?{first}..` the counters' parameters, after `first - 1` others.
        let params = |first: usize| (0..width).map(|i| format!("?{}", first + i)).collect::<Vec<_>>().join(", ");
        let add_to = |table: &str| {
            columns.iter().map(|c| format!("{c} = {table}.{c} + excluded.{c}")).collect::<Vec<_>>().join(", ")
        };
        Statements {
            daily: format!(
                "INSERT INTO usage_daily (day, user_id, model, api_key_id, {cols}) VALUES (?1, ?2, ?3, ?4, {})
                 ON CONFLICT (day, user_id, model, api_key_id) DO UPDATE SET {}",
                params(5),
                add_to("usage_daily")
            ),
            // ?4: the user's shard of the day's totals.
            totals: format!(
                "INSERT INTO usage_totals (day, model, channel, shard, {cols}) VALUES (?1, ?2, ?3, ?4, {})
                 ON CONFLICT (day, model, channel, shard) DO UPDATE SET {}",
                params(5),
                add_to("usage_totals")
            ),
            // The spend (?3) is the day's own, never below zero; the
            // counters are running sums, added to the day and every later one.
            running_update: format!(
                "UPDATE usage_user_running
                 SET spent = CASE WHEN day <> ?2 THEN spent WHEN spent + ?3 < 0 THEN 0 ELSE spent + ?3 END, {}
                 WHERE user_id = ?1 AND day >= ?2",
                columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{c} = {c} + ?{}", i + 4))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            running_insert: format!(
                "INSERT INTO usage_user_running (user_id, day, spent, {cols})
                 SELECT ?1, ?2, CASE WHEN ?3 < 0 THEN 0 ELSE ?3 END, {}
                 FROM (SELECT 1 AS one) AS o LEFT JOIN (SELECT * FROM usage_user_running WHERE user_id = ?1 AND day < ?2
                                            ORDER BY day DESC LIMIT 1) AS p ON 1 = 1
                 WHERE NOT EXISTS (SELECT 1 FROM usage_user_running WHERE user_id = ?1 AND day = ?2)",
                columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("coalesce(p.{c}, 0) + ?{}", i + 4))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    })
}

/// The writes that add `c` to its (day, user, model, key) row and to
/// everyone's totals, and `spent` (possibly negative) with it to the
/// user's day; none reads another's effect, so they run together.
pub fn add_writes(day: i64, user: UserId, c: &Counted, spent: i64) -> Vec<Write> {
    let s = statements(width(c));
    let daily = [
        Value::Integer(day),
        Value::Integer(user.0),
        Value::Text(c.model.clone()),
        Value::Integer(c.api_key.map_or(0, |k| k.0)),
    ];
    let totals = [
        Value::Integer(day),
        Value::Text(c.model.clone()),
        Value::Text(c.channel.clone()),
        Value::Integer(crate::domain::total_shard(user)),
    ];
    let mut writes = vec![
        Write::new(&s.daily, daily.into_iter().chain(counts(c)).collect()),
        Write::new(&s.totals, totals.into_iter().chain(counts(c)).collect()),
    ];
    writes.extend(running_writes(day, user, c, spent));
    writes
}

/// The writes that add `spent` (possibly negative) to the user's day
/// alone: a hold's reservation or its release, which no usage counts yet.
pub fn spent_writes(day: i64, user: UserId, spent: i64) -> Vec<Write> {
    running_writes(day, user, &Counted::default(), spent).into()
}

/// Adds `c` to the user's running sums from `day` on: every row at or after
/// `day` (usually just today's), and a row for `day` made from the one
/// before it when there is none (the insert sees the rows as they were
/// before the update, which touches no earlier day); `spent` goes to the
/// day's row alone.
fn running_writes(day: i64, user: UserId, c: &Counted, spent: i64) -> [Write; 2] {
    let s = statements(width(c));
    let values: Vec<Value> =
        [Value::Integer(user.0), Value::Integer(day), Value::Integer(spent)].into_iter().chain(counts(c)).collect();
    [Write::new(&s.running_update, values.clone()), Write::new(&s.running_insert, values)]
}

/// Every user's sums over `[start_day, end_day]` from the running sums (two
/// lookups per user), by user; `None` past `limit` users with activity.
pub fn by_user(conn: &Conn<'_>, start_day: i64, end_day: i64, limit: usize) -> Result<Option<Vec<UsageRow>>> {
    let sums = |user: i64, day: i64| -> Result<Sums> {
        let found = conn.query_opt(
            &format!(
                "SELECT {} FROM usage_user_running WHERE user_id = ?1 AND day <= ?2 ORDER BY day DESC LIMIT 1",
                COUNT_COLUMNS.join(", ")
            ),
            rusqlite::params![user, day],
            |r| {
                let mut s = Sums::default();
                for (i, slot) in s.iter_mut().enumerate() {
                    *slot = r.get(i)?;
                }
                Ok(s)
            },
        )?;
        Ok(found.unwrap_or_default())
    };
    let ids: Vec<i64> =
        conn.query_all("SELECT DISTINCT user_id FROM usage_user_running ORDER BY user_id", &[], |r| r.get(0))?;
    let mut out = Vec::new();
    for user in ids {
        let (upto, before) = (sums(user, end_day)?, sums(user, start_day - 1)?);
        let d: Sums = std::array::from_fn(|i| upto[i] - before[i]);
        // A user with nothing in the range is not a group.
        if d.iter().all(|n| *n == 0) {
            continue;
        }
        if out.len() >= limit {
            return Ok(None);
        }
        out.push(UsageRow { user_id: Some(UserId(user)), counts: Counts::from_array(d), ..UsageRow::default() });
    }
    Ok(Some(out))
}

/// The user's spend on `day` (consumed plus reserved).
pub fn spent_on(conn: &Conn<'_>, user: UserId, day: i64) -> Result<i64> {
    Ok(conn
        .query_opt(
            "SELECT spent FROM usage_user_running WHERE user_id = ?1 AND day = ?2",
            rusqlite::params![user.0, day],
            |r| r.get(0),
        )?
        .unwrap_or(0))
}

/// Users whose latest running cost differs from the sum of their daily rows.
pub fn running_drift(conn: &Conn<'_>) -> Result<Vec<(i64, i64, i64)>> {
    conn.query_all("SELECT d.user_id, coalesce((SELECT cost FROM usage_user_running r WHERE r.user_id = d.user_id
                                     ORDER BY r.day DESC LIMIT 1), 0), d.cost
         FROM (SELECT user_id, CAST(sum(cost) AS BIGINT) AS cost FROM usage_daily GROUP BY user_id) d
         WHERE coalesce((SELECT cost FROM usage_user_running r WHERE r.user_id = d.user_id ORDER BY r.day DESC LIMIT 1), 0)
               <> d.cost", &[], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

/// The sums of one group, in report order.
type Sums = [i64; COUNTS_N];

/// Sums over `[start_day, end_day]` (of one user, if given), grouped by
/// `dims` (each from a fixed list: never text from a request), in group
/// order; `None` past `limit` groups (memory stays bounded). All users by day and model read
/// `usage_totals` (a few rows a day); one user reads their own rows through
/// `usage_daily_by_user`; the rest is one range scan of the days, summed
/// here (no sort of the rows).
pub fn grouped(
    conn: &Conn<'_>,
    start_day: i64,
    end_day: i64,
    user: Option<UserId>,
    dims: &[Dim],
    limit: usize,
) -> Result<Option<Vec<UsageRow>>> {
    if user.is_none() && dims == [Dim::User] {
        return by_user(conn, start_day, end_day, limit);
    }
    let totals_only = user.is_none() && dims.iter().all(|d| matches!(d, Dim::Day | Dim::Model | Dim::Channel));
    let sums = COUNT_COLUMNS.join(", ");
    let (sql, args): (String, Vec<Value>) = if totals_only {
        (
            format!("SELECT day, model, 0, 0, channel, {sums} FROM usage_totals WHERE day BETWEEN ?1 AND ?2"),
            vec![Value::Integer(start_day), Value::Integer(end_day)],
        )
    } else if let Some(u) = user {
        (
            format!(
                "SELECT day, model, user_id, api_key_id, '', {sums} FROM usage_daily INDEXED BY usage_daily_by_user
                 WHERE user_id = ?3 AND day BETWEEN ?1 AND ?2"
            ),
            vec![Value::Integer(start_day), Value::Integer(end_day), Value::Integer(u.0)],
        )
    } else {
        (
            format!("SELECT day, model, user_id, api_key_id, '', {sums} FROM usage_daily WHERE day BETWEEN ?1 AND ?2"),
            vec![Value::Integer(start_day), Value::Integer(end_day)],
        )
    };
    type Group = (i64, String, i64, i64, String);
    let mut groups: std::collections::BTreeMap<Group, Sums> = std::collections::BTreeMap::new();
    // SQLite must be told to read one user's rows by user; PostgreSQL's
    // planner needs no hint (and has no INDEXED BY).
    let pg_sql = sql.replace(" INDEXED BY usage_daily_by_user", "");
    let mut over = false;
    conn.query_each(Sql::each(&sql, &pg_sql), &dyn_params(&args), |r| {
        let (day, model, user_id, key): (i64, String, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        let channel: String = r.get(4)?;
        let key = (
            if dims.contains(&Dim::Day) { day } else { 0 },
            if dims.contains(&Dim::Model) { model } else { String::new() },
            if dims.contains(&Dim::User) { user_id } else { 0 },
            if dims.contains(&Dim::Key) { key } else { 0 },
            if dims.contains(&Dim::Channel) { channel } else { String::new() },
        );
        if groups.len() >= limit && !groups.contains_key(&key) {
            over = true;
            return Ok(false);
        }
        let g = groups.entry(key).or_default();
        for (i, slot) in g.iter_mut().enumerate() {
            *slot += r.get::<i64>(5 + i)?;
        }
        Ok(true)
    })?;
    if over {
        return Ok(None);
    }
    let mut out: Vec<UsageRow> = groups
        .into_iter()
        .map(|((day, model, user_id, key, channel), s)| UsageRow {
            day: dims.contains(&Dim::Day).then(|| super::day_string(day)),
            model: dims.contains(&Dim::Model).then_some(model),
            user_id: dims.contains(&Dim::User).then_some(UserId(user_id)),
            api_key_id: dims.contains(&Dim::Key).then(|| (key != 0).then_some(ApiKeyId(key))),
            channel: dims.contains(&Dim::Channel).then_some(channel),
            counts: Counts::from_array(s),
            ..UsageRow::default()
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
                Dim::Channel => a.channel.cmp(&b.channel),
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(Some(out))
}

/// Per (day, model): the totals table's cost and the detail's (the audit
/// checks they agree); only the pairs that differ.
pub fn totals_drift(conn: &Conn<'_>) -> Result<Vec<(i64, String, i64, i64)>> {
    conn.query_all("SELECT coalesce(t.day, d.day), coalesce(t.model, d.model), coalesce(t.cost, 0), coalesce(d.cost, 0)
         FROM (SELECT day, model, CAST(sum(cost) AS BIGINT) AS cost FROM usage_totals GROUP BY day, model) t FULL OUTER JOIN (SELECT day, model, CAST(sum(cost) AS BIGINT) AS cost FROM usage_daily GROUP BY day, model) d
           ON d.day = t.day AND d.model = t.model
         WHERE coalesce(t.cost, 0) <> coalesce(d.cost, 0)", &[], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
}

/// Every user's total charged cost in the aggregate (for the audit).
pub fn cost_by_user(conn: &Conn<'_>) -> Result<Vec<(i64, i64)>> {
    conn.query_all("SELECT user_id, CAST(sum(cost) AS BIGINT) FROM usage_daily GROUP BY user_id", &[], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
}
