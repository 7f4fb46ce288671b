//! Usage analytics: a daily aggregate per (day, user, model, API key) of
//! requests, tokens, images, video seconds, cost and failures, added to in
//! the same transaction as each charge (the ledger calls [`count`] for every
//! consume and settle; the metered path for free calls and failures), so it
//! always equals the ledger (the audit checks cost per user). Reports read
//! only this table: their cost does not grow with the ledger.
//!
//! This module never charges and never reads the ledger.

pub mod storage;

use crate::domain::{ApiKeyId, Credits, Timestamp, UserId, day_start};
use crate::error::{Error, Result};
use crate::storage::{Conn, Write};
use serde::Serialize;

/// The longest range one report covers.
pub const RANGE_DAYS_MAX: i64 = 366;
/// Groups one report answers at most (366 days x a few models fits).
pub const GROUPS_MAX: usize = 10_000;

/// The counters of the aggregate, in column order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Counts {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub images: i64,
    pub video_seconds: i64,
    pub cost: i64,
    pub failures: i64,
    /// Of `input_tokens`: read from the prompt cache.
    pub cached_input_tokens: i64,
    /// Of `input_tokens`: written to the prompt cache (5 minutes and 1 hour).
    pub cache_write_tokens: i64,
    /// Of `output_tokens`: reasoning.
    pub reasoning_tokens: i64,
    /// Audio tokens, input and output.
    pub audio_tokens: i64,
    /// What the provider billed the operator (millionths): shown to
    /// administrators only, as `provider_cost_micro` and `margin_micro`.
    #[serde(skip)]
    pub provider_cost_micro: i64,
}

/// Counters one aggregate row has.
pub const COUNTS_N: usize = 12;

/// The counters' column names, in the order of [`Counts::array`] (the CSV's
/// order too; `provider_cost_micro` is in administrators' reports only).
pub const COUNT_COLUMNS: [&str; COUNTS_N] = [
    "requests",
    "input_tokens",
    "output_tokens",
    "images",
    "video_seconds",
    "cost",
    "failures",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_tokens",
    "provider_cost_micro",
];

impl Counts {
    pub fn array(&self) -> [i64; COUNTS_N] {
        [
            self.requests,
            self.input_tokens,
            self.output_tokens,
            self.images,
            self.video_seconds,
            self.cost,
            self.failures,
            self.cached_input_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
            self.audio_tokens,
            self.provider_cost_micro,
        ]
    }

    pub fn from_array(a: [i64; COUNTS_N]) -> Counts {
        let [
            requests,
            input_tokens,
            output_tokens,
            images,
            video_seconds,
            cost,
            failures,
            cached_input_tokens,
            cache_write_tokens,
            reasoning_tokens,
            audio_tokens,
            provider_cost_micro,
        ] = a;
        Counts {
            requests,
            input_tokens,
            output_tokens,
            images,
            video_seconds,
            cost,
            failures,
            cached_input_tokens,
            cache_write_tokens,
            reasoning_tokens,
            audio_tokens,
            provider_cost_micro,
        }
    }
}

/// What one call adds to the aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    /// The model name; empty for a plain consume.
    pub model: String,
    pub channel: String,
    pub api_key: Option<ApiKeyId>,
    pub counts: Counts,
}

/// What a metered call used (the ledger adds the cost and the key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metered {
    pub model: String,
    /// The channel that carried the call (its id; empty when none did).
    pub channel: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub images: u64,
    pub video_seconds: u64,
    /// Of the input: read from the prompt cache, written to it.
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    /// Of the output: reasoning.
    pub reasoning_tokens: u64,
    /// Audio, input and output.
    pub audio_tokens: u64,
    /// What the provider billed the operator, in millionths of a credit.
    pub provider_cost_micro: i64,
    /// What the ledger row was charged for (the answer's cost detail, as
    /// JSON): chained on the row.
    pub components: Option<String>,
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Metered {
    pub fn model(name: &str) -> Metered {
        Metered { model: name.to_owned(), ..Metered::default() }
    }

    /// The same use, carried by `channel`.
    pub fn via(self, channel: &str) -> Metered {
        Metered { channel: channel.to_owned(), ..self }
    }

    /// One request that cost `cost`, through `key`.
    pub fn request(&self, key: Option<ApiKeyId>, cost: Credits) -> Counted {
        Counted {
            model: self.model.clone(),
            channel: self.channel.clone(),
            api_key: key,
            counts: Counts {
                requests: 1,
                input_tokens: int(self.input_tokens),
                output_tokens: int(self.output_tokens),
                images: int(self.images),
                video_seconds: int(self.video_seconds),
                cost: cost.0,
                failures: 0,
                cached_input_tokens: int(self.cached_input_tokens),
                cache_write_tokens: int(self.cache_write_tokens),
                reasoning_tokens: int(self.reasoning_tokens),
                audio_tokens: int(self.audio_tokens),
                provider_cost_micro: self.provider_cost_micro,
            },
        }
    }

    /// One call that failed (nothing charged).
    pub fn failure(&self, key: Option<ApiKeyId>) -> Counted {
        Counted {
            model: self.model.clone(),
            channel: self.channel.clone(),
            api_key: key,
            counts: Counts { failures: 1, ..Counts::default() },
        }
    }
}

/// Adds `c` to the user's row of `day`, inside the caller's transaction.
pub fn count(conn: &Conn<'_>, user: UserId, day: i64, c: &Counted) -> Result<()> {
    Ok(conn.execute_together(&storage::add_writes(day, user, c, 0))?)
}

/// The writes that add `spent` (possibly negative) to the user's spend on
/// `day`, with the call's usage `c` in the same row (a charge and its usage
/// are one fact), or alone (a hold's reservation or release). The caller
/// runs them, with its own, in one `Conn::execute_together`.
pub fn spent_writes(user: UserId, day: i64, c: Option<&Counted>, spent: Credits) -> Vec<Write> {
    match c {
        Some(c) => storage::add_writes(day, user, c, spent.0),
        None => storage::spent_writes(day, user, spent.0),
    }
}

/// The user's spend on `day`: consumed plus reserved.
pub fn spent_on(conn: &Conn<'_>, user: UserId, day: i64) -> Result<Credits> {
    Ok(Credits(storage::spent_on(conn, user, day)?))
}

/// A report dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Day,
    Model,
    User,
    Key,
    /// The channel that carried the calls (all users' reports only).
    Channel,
}

impl Dim {
    fn parse(s: &str) -> Option<Dim> {
        match s {
            "day" => Some(Dim::Day),
            "model" => Some(Dim::Model),
            "user" => Some(Dim::User),
            "key" => Some(Dim::Key),
            "channel" => Some(Dim::Channel),
            _ => None,
        }
    }
}

/// One group of a report; the dimensions not grouped by are left out.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct UsageRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// `null` for calls made with an access token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<Option<ApiKeyId>>,
    /// The channel's id (`""` for calls before channels, or that reached
    /// none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Administrators' reports: what the provider billed, and the cost
    /// charged less it, both in millionths of a credit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_cost_micro: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin_micro: Option<i64>,
}

/// A report's answer.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Report {
    pub object: &'static str,
    pub start: String,
    pub end: String,
    pub group_by: Vec<&'static str>,
    pub data: Vec<UsageRow>,
    /// An administrator's report: with provider cost and margin.
    #[serde(skip)]
    pub operator: bool,
}

/// `YYYY-MM-DD` of a day number (UTC: days are named by their UTC date).
pub fn day_string(day: i64) -> String {
    day_start(day, 0).rfc3339()[..10].to_owned()
}

/// The day number of `YYYY-MM-DD`, or 400 naming `param`.
pub fn parse_day(raw: &str, param: &str) -> Result<i64> {
    let at = Timestamp::parse_rfc3339(&format!("{raw}T00:00:00Z"))
        .filter(|_| raw.len() == 10)
        .ok_or_else(|| Error::invalid(param, format!("{param} must be a date as YYYY-MM-DD")))?;
    Ok(at.millis().div_euclid(86_400_000))
}

/// A parsed report request.
#[derive(Debug, Clone)]
pub struct Query {
    pub start_day: i64,
    pub end_day: i64,
    pub user: Option<UserId>,
    pub dims: Vec<Dim>,
    /// For an administrator: rows carry provider cost and margin.
    pub operator: bool,
}

impl Query {
    /// Checks a range and `group_by` (`allowed`: the dimensions the caller
    /// may group by).
    pub fn new(start_day: i64, end_day: i64, user: Option<UserId>, group_by: &str, allowed: &[Dim]) -> Result<Query> {
        if end_day < start_day {
            return Err(Error::invalid("end", "end must not be before start"));
        }
        if end_day - start_day + 1 > RANGE_DAYS_MAX {
            return Err(Error::invalid("end", format!("a report covers at most {RANGE_DAYS_MAX} days")));
        }
        let mut dims = Vec::new();
        for part in group_by.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let d = Dim::parse(part).filter(|d| allowed.contains(d)).ok_or_else(|| {
                let names: Vec<&str> = allowed.iter().map(|d| name(*d)).collect();
                Error::invalid("group_by", format!("group_by takes {} (comma-separated)", names.join(", ")))
            })?;
            if dims.contains(&d) {
                return Err(Error::invalid("group_by", format!("{part} is named twice")));
            }
            if d == Dim::Channel && user.is_some() {
                return Err(Error::invalid("group_by", "channel is grouped over all users only"));
            }
            dims.push(d);
        }
        if dims.contains(&Dim::Channel) && dims.iter().any(|d| matches!(d, Dim::User | Dim::Key)) {
            return Err(Error::invalid("group_by", "channel groups with day and model only"));
        }
        Ok(Query { start_day, end_day, user, dims, operator: false })
    }
}

fn name(d: Dim) -> &'static str {
    match d {
        Dim::Day => "day",
        Dim::Model => "model",
        Dim::User => "user",
        Dim::Key => "key",
        Dim::Channel => "channel",
    }
}

pub fn report(conn: &Conn<'_>, q: &Query) -> Result<Report> {
    let mut data = storage::grouped(conn, q.start_day, q.end_day, q.user, &q.dims, GROUPS_MAX)?.ok_or_else(|| {
        Error::invalid("group_by", format!("more than {GROUPS_MAX} groups: narrow the range or group by less"))
    })?;
    if q.operator {
        for row in &mut data {
            let provider = row.counts.provider_cost_micro;
            row.provider_cost_micro = Some(provider);
            row.margin_micro = Some(row.counts.cost.saturating_mul(1_000_000).saturating_sub(provider));
        }
    }
    Ok(Report {
        object: "list",
        start: day_string(q.start_day),
        end: day_string(q.end_day),
        group_by: q.dims.iter().map(|d| name(*d)).collect(),
        data,
        operator: q.operator,
    })
}

/// The report as CSV: a header, then one line per group.
pub fn csv(r: &Report) -> String {
    let mut out = String::new();
    let mut header: Vec<&str> = r
        .group_by
        .iter()
        .map(|d| {
            if *d == "user" {
                "user_id"
            } else if *d == "key" {
                "api_key_id"
            } else {
                d
            }
        })
        .collect();
    // The provider's cost is the operator's business: in their reports only.
    header.extend(&COUNT_COLUMNS[..COUNTS_N - 1]);
    if r.operator {
        header.extend(["provider_cost_micro", "margin_micro"]);
    }
    out.push_str(&header.join(","));
    out.push('\n');
    for row in &r.data {
        let mut cells: Vec<String> = Vec::new();
        for d in &r.group_by {
            match *d {
                "day" => cells.push(row.day.clone().unwrap_or_default()),
                "model" => cells.push(csv_cell(row.model.as_deref().unwrap_or(""))),
                "user" => cells.push(row.user_id.map(|u| u.to_string()).unwrap_or_default()),
                "key" => cells.push(row.api_key_id.flatten().map(|k| k.to_string()).unwrap_or_default()),
                "channel" => cells.push(csv_cell(row.channel.as_deref().unwrap_or(""))),
                _ => {}
            }
        }
        for n in &row.counts.array()[..COUNTS_N - 1] {
            cells.push(n.to_string());
        }
        if let (Some(p), Some(m)) = (row.provider_cost_micro, row.margin_micro) {
            cells.extend([p.to_string(), m.to_string()]);
        }
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// A cell quoted when it holds a comma, quote or line break, and defused
/// when a spreadsheet would read it as a formula.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_owned() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, Role};
    use crate::storage::Synchronous;

    fn spent(m: &str, cost: i64) -> Counted {
        Metered::model(m).request(None, Credits(cost))
    }

    #[test]
    fn range_totals_by_user_match_the_daily_rows_whatever_order_days_are_written_in() {
        let (_dir, db) = crate::storage::temp_db(Synchronous::Normal);
        let (a, b) = db
            .write(|c| {
                let a = crate::users::insert(c, &Email::parse("a@example.com").unwrap(), "x", Role::User)?.id;
                let b = crate::users::insert(c, &Email::parse("b@example.com").unwrap(), "x", Role::User)?.id;
                // Days out of order: a hold settled for day 10 after day 12
                // had spend, and a day before every other.
                for (u, day, cost) in
                    [(a, 10, 5), (a, 12, 7), (a, 10, 3), (b, 11, 2), (a, 8, 1), (a, 12, 4), (b, 30, 9)]
                {
                    count(c, u, day, &spent("m", cost))?;
                }
                Ok::<_, Error>((a, b))
            })
            .unwrap();
        let all = [Dim::Day, Dim::Model, Dim::User, Dim::Key];
        for (start, end) in [(0, 100), (9, 11), (10, 10), (11, 12), (13, 29), (12, 30), (8, 8)] {
            let fast = db.read(|c| report(c, &Query::new(start, end, None, "user", &all)?)).unwrap();
            // The same grouping from the daily rows (user, model: summed here).
            let slow = db.read(|c| report(c, &Query::new(start, end, None, "user,model", &all)?)).unwrap();
            let costs = |r: &Report| {
                r.data.iter().map(|x| (x.user_id.unwrap(), x.counts.cost, x.counts.requests)).collect::<Vec<_>>()
            };
            assert_eq!(costs(&fast), costs(&slow), "range {start}..={end}");
        }
        let whole = db.read(|c| report(c, &Query::new(0, 100, None, "user", &all)?)).unwrap();
        assert_eq!(
            whole.data.iter().map(|r| (r.user_id.unwrap(), r.counts.cost)).collect::<Vec<_>>(),
            [(a, 20), (b, 11)]
        );
    }

    /// A report answers exactly `GROUPS_MAX` groups, and refuses one more
    /// rather than cutting the answer short.
    #[test]
    fn a_report_of_groups_max_groups_answers_and_one_more_is_refused() {
        let (_dir, db) = crate::storage::temp_db(Synchronous::Normal);
        let user = db
            .write(|c| {
                let u = crate::users::insert(c, &Email::parse("g@example.com").unwrap(), "x", Role::User)?.id;
                for day in 0..100 {
                    for m in 0..(GROUPS_MAX as i64 / 100) {
                        count(c, u, day, &spent(&format!("m{m}"), 1))?;
                    }
                }
                Ok::<_, Error>(u)
            })
            .unwrap();
        let all = [Dim::Day, Dim::Model, Dim::User, Dim::Key];
        let q = Query::new(0, 99, Some(user), "day,model", &all).unwrap();
        let at_limit = db.read(|c| report(c, &q)).unwrap();
        assert_eq!(at_limit.data.len(), GROUPS_MAX);
        db.write(move |c| count(c, user, 50, &spent("one-more", 1))).unwrap();
        let past = db.read(|c| report(c, &q)).unwrap_err();
        assert!(matches!(&past, Error::Invalid { param: Some(p), .. } if p == "group_by"), "{past:?}");
    }
}
