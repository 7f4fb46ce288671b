//! One SQL interface over both engines, SQLite and PostgreSQL.
//!
//! Storage modules write their statements once, with SQLite's numbered
//! parameters (`?1`), bind anything rusqlite can bind (`params![...]`, our
//! typed ids and amounts included) and read columns into anything rusqlite
//! can read. On PostgreSQL the text is rewritten (`?1` -> `$1`), each
//! argument is converted to the type the server asks for, and each cell is
//! handed to the same `FromSql` impls as SQLite's, so a typed id reads the
//! same on both engines. Where the dialects differ (`MAX(a, b)` against
//! `GREATEST(a, b)`), a statement names both texts with [`Sql::each`].
//!
//! Rules for text that runs on both: a parameter PostgreSQL cannot type
//! from its context is cast (`CAST(?1 AS TEXT) IS NULL OR email = ?1`); an
//! aggregate of integers is cast back (`CAST(SUM(x) AS BIGINT)`, since
//! PostgreSQL's SUM of BIGINT is NUMERIC); a new row's id comes from
//! `RETURNING id`, not `last_insert_rowid()`; upserts are `ON CONFLICT`.
//!
//! This module owns statement text rewriting, argument and cell conversion,
//! and PostgreSQL's per-connection statement cache. It never opens
//! transactions (that is the writer's and the pool's job) and knows nothing
//! about any table.

use super::StorageError;
use bytes::BytesMut;
use postgres::types::{IsNull, Type, to_sql_checked};
use rusqlite::types::{FromSql, ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, ToSql};
use std::cell::RefCell;
use std::collections::HashMap;

/// Prepared statements kept per PostgreSQL connection. Past it the cache
/// starts over: statements built at run time (log filters) must not grow it
/// without bound.
pub const PG_STATEMENTS_PER_CONNECTION_MAX: usize = 256;

/// The arguments of one statement: `params![a, b]` or `&[]`.
pub type Params<'p> = &'p [&'p dyn ToSql];

/// Arguments built at run time (a list of values) as [`Params`].
pub fn dyn_params(values: &[rusqlite::types::Value]) -> Vec<&dyn ToSql> {
    values.iter().map(|v| v as &dyn ToSql).collect()
}

/// The VALUES list of a multi-row INSERT, `(?1, ?2), (?3, ?4)` for 2 rows
/// of 2 columns: the parameters numbered row by row.
pub fn values_list(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 6);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('?');
            sql.push_str(&(row * columns + c + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

/// Which engine a connection talks to, for the few statements whose text
/// differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A statement's text: one for both engines (any `&str` converts), or one
/// per engine.
#[derive(Debug, Clone, Copy)]
pub struct Sql<'s> {
    sqlite: &'s str,
    pg: &'s str,
}

impl<'s> Sql<'s> {
    pub const fn each(sqlite: &'s str, pg: &'s str) -> Sql<'s> {
        Sql { sqlite, pg }
    }

    fn text(&self, engine: Engine) -> &'s str {
        match engine {
            Engine::Sqlite => self.sqlite,
            Engine::Postgres => self.pg,
        }
    }
}

impl<'s> From<&'s str> for Sql<'s> {
    fn from(s: &'s str) -> Sql<'s> {
        Sql { sqlite: s, pg: s }
    }
}

impl<'s> From<&'s String> for Sql<'s> {
    fn from(s: &'s String) -> Sql<'s> {
        Sql::from(s.as_str())
    }
}

/// A write statement (INSERT, UPDATE or DELETE, no WITH of its own, no
/// RETURNING read back) with its values, numbered `?1..?N` for its own N
/// values: several run together with [`Conn::execute_together`].
#[derive(Debug, Clone)]
pub struct Write {
    sql: Sql<'static>,
    values: Vec<Value>,
}

impl Write {
    pub fn new(sql: impl Into<Sql<'static>>, values: Vec<Value>) -> Write {
        Write { sql: sql.into(), values }
    }

    /// A write bound with `params![...]` as any statement is.
    pub fn of(sql: impl Into<Sql<'static>>, params: Params<'_>) -> Result<Write, StorageError> {
        Ok(Write { sql: sql.into(), values: owned_values(params)? })
    }
}

/// A PostgreSQL connection with the statements it has prepared.
pub struct PgClient {
    client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
    /// A statement failed because a concurrent transaction conflicted with
    /// this one: the caller's error may have been mapped to anything, so
    /// the transaction runner asks here whether to run it again.
    conflict: Option<String>,
    /// Statements sent so far (each one round trip to the server).
    round_trips: u64,
}

impl PgClient {
    pub fn new(client: postgres::Client) -> PgClient {
        PgClient { client, statements: HashMap::new(), conflict: None, round_trips: 0 }
    }

    /// Statements this connection has sent through [`Conn`] (a prepare
    /// that was cached sends nothing).
    pub fn round_trips(&self) -> u64 {
        self.round_trips
    }

    /// Why the current transaction conflicted, if it did (and forgets it).
    pub fn take_conflict(&mut self) -> Option<StorageError> {
        self.conflict.take().map(StorageError::Conflict)
    }

    /// Notes a conflict in a statement's result, then passes it on.
    fn note<T>(&mut self, r: Result<T, postgres::Error>) -> Result<T, StorageError> {
        self.round_trips += 1;
        r.map_err(|e| {
            let e = StorageError::from(e);
            if e.is_retryable() {
                self.conflict = Some(e.to_string());
            }
            e
        })
    }

    pub fn client(&mut self) -> &mut postgres::Client {
        &mut self.client
    }

    fn prepare(&mut self, sql: &str) -> Result<postgres::Statement, StorageError> {
        let text = pg_text(sql);
        if let Some(st) = self.statements.get(&text) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(&text);
        let st = self.note(st)?;
        if self.statements.len() >= PG_STATEMENTS_PER_CONNECTION_MAX {
            self.statements.clear();
        }
        self.statements.insert(text, st.clone());
        Ok(st)
    }
}

/// The handle every storage function takes: a connection (inside the
/// caller's transaction, when writing) of either engine.
pub enum Conn<'a> {
    Sqlite(&'a Connection),
    Pg(RefCell<&'a mut PgClient>),
}

/// One result row of either engine.
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Pg(&'r postgres::Row),
}

impl Row<'_> {
    /// Column `i` as text borrowed from the row (no copy): for walks over
    /// millions of rows.
    pub fn get_str(&self, i: usize) -> Result<&str, StorageError> {
        match self {
            Row::Sqlite(r) => r.get_ref(i)?.as_str().map_err(|e| StorageError::Column(format!("column {i}: {e}"))),
            Row::Pg(r) => Ok(r.try_get::<_, &str>(i)?),
        }
    }

    /// Column `i` (from 0) as a borrowed string, or `None` for NULL.
    pub fn get_opt_str(&self, i: usize) -> Result<Option<&str>, StorageError> {
        match self {
            Row::Sqlite(r) => match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => Ok(None),
                v => v.as_str().map(Some).map_err(|e| StorageError::Column(format!("column {i}: {e}"))),
            },
            Row::Pg(r) => Ok(r.try_get::<_, Option<&str>>(i)?),
        }
    }

    /// Column `i` (from 0) as `T`, through `T`'s rusqlite `FromSql` on both
    /// engines.
    pub fn get<T: FromSql>(&self, i: usize) -> Result<T, StorageError> {
        match self {
            Row::Sqlite(r) => Ok(r.get(i)?),
            Row::Pg(r) => {
                let cell = pg_cell(r, i)?;
                T::column_result(ValueRef::from(&cell))
                    .map_err(|e| StorageError::Column(format!("column {i} ({}): {e}", r.columns()[i].name())))
            }
        }
    }
}

impl<'a> Conn<'a> {
    /// Runs `f` in one read transaction, so that every statement sees the
    /// same snapshot (the audit compares caches with the ledger walk).
    /// Never commits anything.
    pub fn snapshot<T, E: From<StorageError>>(&self, f: impl FnOnce(&Conn<'a>) -> Result<T, E>) -> Result<T, E> {
        self.batch(match self.engine() {
            Engine::Sqlite => "BEGIN",
            Engine::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        })?;
        let out = f(self);
        self.batch("ROLLBACK")?;
        out
    }

    pub fn pg(client: &'a mut PgClient) -> Conn<'a> {
        Conn::Pg(RefCell::new(client))
    }

    pub fn engine(&self) -> Engine {
        match self {
            Conn::Sqlite(_) => Engine::Sqlite,
            Conn::Pg(_) => Engine::Postgres,
        }
    }

    /// The SQLite connection, for code that is about SQLite itself (the
    /// writer's and checkpointer's tests, query plans): on PostgreSQL it
    /// fails cleanly instead of running SQLite's SQL.
    pub fn sqlite(&self) -> rusqlite::Result<&'a Connection> {
        match self {
            Conn::Sqlite(c) => Ok(c),
            Conn::Pg(_) => Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
                Some("SQLite-only code called on a PostgreSQL connection".to_owned()),
            )),
        }
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute<'s>(&self, sql: impl Into<Sql<'s>>, params: Params<'_>) -> Result<usize, StorageError> {
        let sql = sql.into();
        match self {
            Conn::Sqlite(c) => Ok(c.prepare_cached(sql.text(Engine::Sqlite))?.execute(params)?),
            Conn::Pg(c) => {
                let mut c = c.borrow_mut();
                let st = c.prepare(sql.text(Engine::Postgres))?;
                let args = pg_args(params)?;
                let r = c.client.execute(&st, &pg_refs(&args));
                let n = c.note(r)?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs writes that do not read each other's effects (each sees the
    /// data as it was before any of them). On PostgreSQL they go as one
    /// statement, the first ones as data-modifying `WITH` parts of the
    /// last, so they cost one round trip instead of one each; on SQLite,
    /// where a statement costs no round trip, one after another.
    pub fn execute_together(&self, writes: &[Write]) -> Result<(), StorageError> {
        match (self, writes) {
            (_, []) => Ok(()),
            (Conn::Sqlite(c), _) => {
                for w in writes {
                    c.prepare_cached(w.sql.text(Engine::Sqlite))?.execute(rusqlite::params_from_iter(&w.values))?;
                }
                Ok(())
            }
            (Conn::Pg(_), [one]) => self.execute(one.sql, &dyn_params(&one.values)).map(|_| ()),
            (Conn::Pg(_), [parts @ .., last]) => {
                let (text, values) = joined(parts, last);
                self.execute(&text, &dyn_params(&values)).map(|_| ())
            }
        }
    }

    /// [`Conn::execute_together`] and then `last`, a statement answering
    /// one row (`RETURNING`), read with `f`: on PostgreSQL the writes are
    /// `WITH` parts of `last`, so all of them cost one round trip. `last`
    /// sees the rows as they were before the writes, as they see each
    /// other; on SQLite it runs after them.
    pub fn query_together<T>(
        &self,
        writes: &[Write],
        last: &Write,
        f: impl FnMut(&Row<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        match self {
            Conn::Sqlite(_) => {
                self.execute_together(writes)?;
                self.query_one(last.sql, &dyn_params(&last.values), f)
            }
            Conn::Pg(_) => {
                let (text, values) = joined(writes, last);
                self.query_one(text.as_str(), &dyn_params(&values), f)
            }
        }
    }

    /// The first row, if any.
    pub fn query_opt<'s, T>(
        &self,
        sql: impl Into<Sql<'s>>,
        params: Params<'_>,
        mut f: impl FnMut(&Row<'_>) -> Result<T, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        let sql = sql.into();
        match self {
            Conn::Sqlite(c) => {
                let mut st = c.prepare_cached(sql.text(Engine::Sqlite))?;
                let mut rows = st.query(params)?;
                match rows.next()? {
                    Some(r) => Ok(Some(f(&Row::Sqlite(r))?)),
                    None => Ok(None),
                }
            }
            Conn::Pg(c) => {
                let rows = pg_query(c, sql.text(Engine::Postgres), params)?;
                rows.first().map(|r| f(&Row::Pg(r))).transpose()
            }
        }
    }

    /// The one row a statement must return (an aggregate, a `RETURNING`).
    pub fn query_one<'s, T>(
        &self,
        sql: impl Into<Sql<'s>>,
        params: Params<'_>,
        f: impl FnMut(&Row<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.query_opt(sql, params, f)?.ok_or(StorageError::NoRow)
    }

    /// Every row, in order. `f` may query the same connection (PostgreSQL's
    /// rows are all read before `f` sees the first).
    pub fn query_all<'s, T>(
        &self,
        sql: impl Into<Sql<'s>>,
        params: Params<'_>,
        mut f: impl FnMut(&Row<'_>) -> Result<T, StorageError>,
    ) -> Result<Vec<T>, StorageError> {
        let sql = sql.into();
        match self {
            Conn::Sqlite(_) => {
                let mut out = Vec::new();
                self.query_each(sql, params, |r| {
                    out.push(f(r)?);
                    Ok(true)
                })?;
                Ok(out)
            }
            Conn::Pg(c) => {
                let rows = pg_query(c, sql.text(Engine::Postgres), params)?;
                rows.iter().map(|r| f(&Row::Pg(r))).collect()
            }
        }
    }

    /// Streams rows through `f` without holding them all (the audit's walk
    /// of the ledger) until `f` answers false. `f` must not query this
    /// connection: on PostgreSQL it is busy with the stream.
    pub fn query_each<'s>(
        &self,
        sql: impl Into<Sql<'s>>,
        params: Params<'_>,
        mut f: impl FnMut(&Row<'_>) -> Result<bool, StorageError>,
    ) -> Result<(), StorageError> {
        let sql = sql.into();
        match self {
            Conn::Sqlite(c) => {
                let mut st = c.prepare_cached(sql.text(Engine::Sqlite))?;
                let mut rows = st.query(params)?;
                while let Some(r) = rows.next()? {
                    if !f(&Row::Sqlite(r))? {
                        break;
                    }
                }
                Ok(())
            }
            Conn::Pg(c) => {
                use postgres::fallible_iterator::FallibleIterator;
                let mut c = c.borrow_mut();
                let st = c.prepare(sql.text(Engine::Postgres))?;
                let args = pg_args(params)?;
                let mut rows = c.client.query_raw(&st, pg_refs(&args))?;
                while let Some(r) = rows.next()? {
                    if !f(&Row::Pg(&r))? {
                        break;
                    }
                }
                drop(rows);
                Ok(())
            }
        }
    }

    /// Runs statements without parameters or results (DDL, pragmas).
    pub fn batch(&self, sql: &str) -> Result<(), StorageError> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg(c) => {
                let mut c = c.borrow_mut();
                let r = c.client.batch_execute(sql);
                c.note(r)
            }
        }
    }
}

/// Every row of one PostgreSQL statement, read in full.
fn pg_query(c: &RefCell<&mut PgClient>, sql: &str, params: Params<'_>) -> Result<Vec<postgres::Row>, StorageError> {
    let mut c = c.borrow_mut();
    let st = c.prepare(sql)?;
    let args = pg_args(params)?;
    let r = c.client.query(&st, &pg_refs(&args));
    c.note(r)
}

/// Rewrites SQLite's parameters for PostgreSQL: `?N` -> `$N`, and a bare
/// `?` -> the next number. Quoted text is left alone.
pub fn pg_text(sql: &str) -> String {
    map_params(sql, |n| format!("${n}"))
}

/// `parts` as data-modifying `WITH` parts of `last` (PostgreSQL), the
/// parameters of each numbered after the ones before; and all the values.
fn joined(parts: &[Write], last: &Write) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut offset = 0;
    for (i, w) in parts.iter().enumerate() {
        text.push_str(if i == 0 { "WITH " } else { ", " });
        text.push_str(&format!("w{i} AS ({})", shift_params(w.sql.text(Engine::Postgres), offset)));
        offset += w.values.len();
    }
    if !parts.is_empty() {
        text.push(' ');
    }
    text.push_str(&shift_params(last.sql.text(Engine::Postgres), offset));
    let values = parts.iter().chain(std::iter::once(last)).flat_map(|w| w.values.iter().cloned()).collect();
    (text, values)
}

/// Moves a statement's numbered parameters `offset` places on (`?1` ->
/// `?{1 + offset}`), for statements joined into one.
fn shift_params(sql: &str, offset: usize) -> String {
    map_params(sql, |n| format!("?{}", n + offset))
}

/// Replaces each parameter outside quotes with `to(its number)`; a bare `?`
/// is the one after the last bare one.
fn map_params(sql: &str, to: impl Fn(usize) -> String) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 0usize;
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(ch) = chars.next() {
        if let Some(q) = quote {
            out.push(ch);
            if ch == q {
                quote = None;
            }
            continue;
        }
        match ch {
            '\'' | '"' => {
                quote = Some(ch);
                out.push(ch);
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = match digits.parse() {
                    Ok(n) => n,
                    Err(_) => {
                        next += 1;
                        next
                    }
                };
                out.push_str(&to(n));
            }
            _ => out.push(ch),
        }
    }
    out
}

/// One argument as rusqlite would bind it, ready for PostgreSQL.
#[derive(Debug)]
struct PgArg(Value);

fn pg_args(params: Params<'_>) -> Result<Vec<PgArg>, StorageError> {
    Ok(owned_values(params)?.into_iter().map(PgArg).collect())
}

/// Each argument as the value rusqlite would bind.
fn owned_values(params: Params<'_>) -> Result<Vec<Value>, StorageError> {
    params
        .iter()
        .map(|p| match p.to_sql()? {
            ToSqlOutput::Borrowed(v) => owned(v),
            ToSqlOutput::Owned(v) => Ok(v),
            other => Err(StorageError::Column(format!("cannot bind {other:?}"))),
        })
        .collect()
}

fn owned(v: ValueRef<'_>) -> Result<Value, StorageError> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(
            String::from_utf8(t.to_vec()).map_err(|_| StorageError::Column("text argument is not UTF-8".to_owned()))?,
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

fn pg_refs(args: &[PgArg]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn postgres::types::ToSql + Sync)).collect()
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl postgres::types::ToSql for PgArg {
    /// Converts to the type the server inferred for the parameter: our
    /// integers go to any integer column (checked), 0/1 to a boolean.
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        use postgres::types::ToSql as Pg;
        match (&self.0, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Integer(i), &Type::INT8) => Pg::to_sql(&i, ty, out),
            (Value::Integer(i), &Type::INT4) => Pg::to_sql(&i32::try_from(*i)?, ty, out),
            (Value::Integer(i), &Type::INT2) => Pg::to_sql(&i16::try_from(*i)?, ty, out),
            (Value::Integer(i), &Type::BOOL) => Pg::to_sql(&(*i != 0), ty, out),
            #[allow(clippy::cast_precision_loss)]
            (Value::Integer(i), &Type::FLOAT8) => Pg::to_sql(&(*i as f64), ty, out),
            (Value::Real(f), &Type::FLOAT8) => Pg::to_sql(&f, ty, out),
            (Value::Text(s), _) if <&str as postgres::types::ToSql>::accepts(ty) => Pg::to_sql(&s.as_str(), ty, out),
            (Value::Blob(b), &Type::BYTEA) => Pg::to_sql(&b.as_slice(), ty, out),
            (v, _) => Err(format!("cannot bind {v:?} to a PostgreSQL {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql`, which knows what it holds.
        true
    }

    to_sql_checked!();
}

/// One PostgreSQL cell as the value SQLite would have returned.
fn pg_cell(r: &postgres::Row, i: usize) -> Result<Value, StorageError> {
    let col = r.columns().get(i).ok_or_else(|| StorageError::Column(format!("no column {i}")))?;
    let v = match *col.type_() {
        Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Integer),
        Type::INT4 => r.try_get::<_, Option<i32>>(i)?.map(|v| Value::Integer(v.into())),
        Type::INT2 => r.try_get::<_, Option<i16>>(i)?.map(|v| Value::Integer(v.into())),
        Type::BOOL => r.try_get::<_, Option<bool>>(i)?.map(|v| Value::Integer(v.into())),
        Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(Value::Real),
        Type::FLOAT4 => r.try_get::<_, Option<f32>>(i)?.map(|v| Value::Real(v.into())),
        Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        ref t if <String as postgres::types::FromSql>::accepts(t) => {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        }
        ref t => {
            return Err(StorageError::Column(format!(
                "column {} is a PostgreSQL {t}; CAST it (a SUM of BIGINT is NUMERIC: CAST(SUM(x) AS BIGINT))",
                col.name()
            )));
        }
    };
    Ok(v.unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_values_list_numbers_the_parameters_row_by_row() {
        assert_eq!(values_list(1, 1), "(?1)");
        assert_eq!(values_list(2, 3), "(?1, ?2, ?3), (?4, ?5, ?6)");
    }

    /// Statements built at run time cannot grow a connection's cache past
    /// its limit, and statements keep working when it starts over.
    #[test]
    fn the_statement_cache_stops_at_its_limit_and_starts_over() {
        let Some(url) = crate::storage::pg::test_database() else { return };
        let mut client = PgClient::new(url.parse::<postgres::Config>().unwrap().connect(postgres::NoTls).unwrap());
        for i in 0..PG_STATEMENTS_PER_CONNECTION_MAX {
            let n: i64 = Conn::pg(&mut client)
                .query_one(&format!("SELECT {i} + ?1"), rusqlite::params![1], |r| r.get(0))
                .unwrap();
            assert_eq!(n, i as i64 + 1);
        }
        assert_eq!(client.statements.len(), PG_STATEMENTS_PER_CONNECTION_MAX);
        let n: i64 = Conn::pg(&mut client).query_one("SELECT -1 + ?1", rusqlite::params![1], |r| r.get(0)).unwrap();
        assert_eq!((n, client.statements.len()), (0, 1), "one past the limit: the cache started over");
    }

    #[test]
    fn writes_joined_into_one_statement_have_their_parameters_moved_on() {
        assert_eq!(
            shift_params("UPDATE t SET a = ?1, b = '?2' WHERE id = ?2", 3),
            "UPDATE t SET a = ?4, b = '?2' WHERE id = ?5"
        );
        assert_eq!(pg_text(&shift_params("VALUES (?, ?)", 2)), "VALUES ($3, $4)");
    }

    #[test]
    fn parameters_are_rewritten_outside_quotes() {
        assert_eq!(pg_text("SELECT a FROM t WHERE b = ?1 AND c = ?12"), "SELECT a FROM t WHERE b = $1 AND c = $12");
        assert_eq!(pg_text("VALUES (?, ?, '?1', \"a?\")"), "VALUES ($1, $2, '?1', \"a?\")");
        assert_eq!(pg_text("LIKE ?3 ESCAPE '\\'"), "LIKE $3 ESCAPE '\\'");
    }
}
