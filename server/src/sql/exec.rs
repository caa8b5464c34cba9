//! Running client SQL on the writer connection: one statement at a time as SQLite
//! reads them, transaction control as SQLite reports it, parameters, results
//! bounded while they are collected, error mapping.
//!
//! What a statement *is* comes from SQLite, never from reading the text here:
//! each statement is prepared on its own (SQLite says where it ends), and the
//! authorizer reports while it is prepared whether it is transaction control,
//! a savepoint or a schema-version write (`sql::authorizer::Seen`). A client's
//! `BEGIN`/`COMMIT`/`ROLLBACK` is never executed on the shared connection: the
//! [`Tracker`] honours it (a wrapping `BEGIN … COMMIT`, the end of a write
//! session) or refuses it.
//!
//! Time and memory are bounded here too: the request's deadline is checked
//! between statements (the progress handler interrupts inside one), the number
//! of statements is limited, and rows are counted, in number and in bytes, while
//! they are collected, so an answer that cannot be sent stops the request early
//! with nothing applied instead of being built first.

use std::time::Instant;

use litebroker_protocol::sql::{bind_params, from_value_ref};
use litebroker_protocol::{ErrorInfo, ErrorKind, ExecResult, ManySummary, SqliteCode, Statement, Value};
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::{Batch, CachedStatement, Connection};

use crate::sql::authorizer::{self, Seen, TxStatement};
use crate::sql::text;
use crate::texts;

/// Where the SQL runs, which decides what transaction control means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A one-shot request: already atomic; a wrapping `BEGIN … COMMIT` is accepted.
    OneShot,
    /// Inside a write session: `COMMIT`/`ROLLBACK` end the session.
    Session {
        /// No statement ran in the session yet (a leading `BEGIN` is then a no-op).
        fresh: bool,
    },
}

/// What the request asks of the session after its statements ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionEnd {
    /// Nothing: the session goes on.
    #[default]
    None,
    /// A `COMMIT`/`END` statement ended it.
    Commit,
    /// A `ROLLBACK` statement ended it.
    Rollback,
}

/// Limits applied while executing one request.
#[derive(Debug, Clone, Copy)]
pub struct ExecLimits {
    /// Maximum rows returned by one request.
    pub max_rows: usize,
    /// Maximum size of the answer, in encoded bytes (about): the frame limit.
    pub max_answer_bytes: usize,
    /// Maximum statements one request may hold (in one SQL text or a batch).
    pub max_statements: usize,
    /// No statement starts after this; the progress handler stops one that runs past it.
    pub deadline: Instant,
}

/// Tracks one request across its statements: transaction control, what SQLite
/// reported of them, and how much of the limits they used.
#[derive(Debug)]
pub struct Tracker {
    mode: Mode,
    statements: usize,
    /// Statements of the current part of a stream (of the request otherwise):
    /// what the statement limit bounds.
    in_part: usize,
    /// Rows statements return are stepped through and dropped (a streamed
    /// batch answers with a summary), so nothing is charged to the answer.
    summary: bool,
    wrapped: bool,
    closed: bool,
    answer_bytes: usize,
    /// Set when the request ends the session.
    pub end: SessionEnd,
    /// The request wrote `PRAGMA user_version`.
    pub sets_user_version: bool,
    /// The request turned `PRAGMA defer_foreign_keys` on: the broker turns it off
    /// again once the request's pending violations were checked.
    pub defers_foreign_keys: bool,
    /// The request ran a PRAGMA or changed the schema: what it may have left on
    /// the connection is checked before its transaction commits.
    pub needs_state_check: bool,
}

impl Tracker {
    /// A tracker for one request.
    pub fn new(mode: Mode) -> Tracker {
        Tracker {
            mode,
            statements: 0,
            in_part: 0,
            summary: false,
            wrapped: false,
            closed: false,
            answer_bytes: 0,
            end: SessionEnd::None,
            sets_user_version: false,
            defers_foreign_keys: false,
            needs_state_check: false,
        }
    }

    /// A tracker for a streamed batch: one for the whole stream, so that a
    /// `BEGIN … COMMIT` around all its parts is honoured as in one request; the
    /// statement limit applies per part ([`Tracker::next_part`]); returned rows
    /// are dropped.
    pub fn summarising(mode: Mode) -> Tracker {
        Tracker { summary: true, ..Tracker::new(mode) }
    }

    /// The stream's next part starts: the statement limit counts afresh.
    pub fn next_part(&mut self) {
        self.in_part = 0;
    }

    /// Takes note of the next statement, as SQLite reported it, before it runs.
    /// `Ok(true)` = execute it, `Ok(false)` = it was honoured without executing.
    fn admit(&mut self, seen: Seen, limits: &ExecLimits) -> Result<bool, ErrorInfo> {
        let first = self.statements == 0;
        self.statements += 1;
        self.in_part += 1;
        if self.in_part > limits.max_statements {
            return Err(texts::limit(
                "statements in one request",
                limits.max_statements,
                "--max-batch-statements",
            ));
        }
        if Instant::now() >= limits.deadline {
            return Err(texts::ran_past_deadline());
        }
        self.sets_user_version |= seen.sets_user_version;
        self.defers_foreign_keys |= seen.defers_foreign_keys;
        self.needs_state_check |= seen.pragma || seen.schema;
        if self.closed || self.end != SessionEnd::None {
            return Err(texts::tx_control(texts::AFTER_END));
        }
        let Some(tx) = seen.tx else { return Ok(true) };
        match (tx, self.mode) {
            (TxStatement::Begin, Mode::OneShot) if first => {
                self.wrapped = true;
                Ok(false)
            }
            (TxStatement::Begin, Mode::OneShot) => Err(texts::tx_control(texts::BEGIN_NOT_FIRST)),
            (TxStatement::Commit, Mode::OneShot) if self.wrapped => {
                self.closed = true;
                Ok(false)
            }
            (TxStatement::Commit, Mode::OneShot) => Err(texts::tx_control(texts::COMMIT_WITHOUT_BEGIN)),
            (TxStatement::Rollback, Mode::OneShot) => Err(texts::tx_control(texts::ROLLBACK_ONE_SHOT)),
            (TxStatement::Begin, Mode::Session { fresh }) if fresh && first => Ok(false),
            (TxStatement::Begin, Mode::Session { .. }) => Err(texts::tx_control(texts::BEGIN_IN_SESSION)),
            (TxStatement::Commit, Mode::Session { .. }) => {
                self.end = SessionEnd::Commit;
                Ok(false)
            }
            (TxStatement::Rollback, Mode::Session { .. }) => {
                self.end = SessionEnd::Rollback;
                Ok(false)
            }
        }
    }

    /// Counts `bytes` more of the answer against the frame limit.
    fn charge(&mut self, bytes: usize, limits: &ExecLimits) -> Result<(), ErrorInfo> {
        if self.summary {
            return Ok(());
        }
        self.answer_bytes = self.answer_bytes.saturating_add(bytes);
        if self.answer_bytes > limits.max_answer_bytes {
            return Err(texts::rows_too_large(limits.max_answer_bytes));
        }
        Ok(())
    }

    /// Checks the request as a whole once all its statements ran.
    ///
    /// # Errors
    /// A `BEGIN` without its `COMMIT`.
    pub fn finish(&self) -> Result<(), ErrorInfo> {
        if self.wrapped && !self.closed {
            return Err(texts::tx_control(texts::BEGIN_WITHOUT_COMMIT));
        }
        Ok(())
    }
}

/// Maps a rusqlite error to the wire error, keeping SQLite's codes and message.
pub fn sql_error(e: &rusqlite::Error) -> ErrorInfo {
    match e {
        rusqlite::Error::SqliteFailure(err, msg) => {
            let primary = err.extended_code & 0xff;
            let kind = match primary {
                rusqlite::ffi::SQLITE_CONSTRAINT => ErrorKind::Constraint,
                rusqlite::ffi::SQLITE_BUSY | rusqlite::ffi::SQLITE_LOCKED => ErrorKind::Locked,
                rusqlite::ffi::SQLITE_INTERRUPT => ErrorKind::Timeout,
                rusqlite::ffi::SQLITE_FULL => ErrorKind::DiskFull,
                rusqlite::ffi::SQLITE_AUTH => ErrorKind::NotAllowed,
                rusqlite::ffi::SQLITE_NOMEM | rusqlite::ffi::SQLITE_TOOBIG => ErrorKind::LimitExceeded,
                _ => ErrorKind::Sql,
            };
            let mut message = msg.clone().unwrap_or_else(|| err.to_string());
            match primary {
                // SQLite only says "not authorized"; the authorizer knows what and why.
                rusqlite::ffi::SQLITE_AUTH => message = authorizer::take_denial().unwrap_or(message),
                rusqlite::ffi::SQLITE_NOMEM => message = texts::out_of_memory(&message),
                rusqlite::ffi::SQLITE_TOOBIG => message = texts::value_too_big(&message),
                _ => {}
            }
            ErrorInfo { kind, message, sqlite: Some(SqliteCode { primary, extended: err.extended_code }) }
        }
        // A denied function call is a plain SQLITE_ERROR pointing at the token.
        rusqlite::Error::SqlInputError { error, msg, .. }
            if error.extended_code & 0xff == rusqlite::ffi::SQLITE_AUTH
                || msg.starts_with("not authorized") =>
        {
            ErrorInfo {
                kind: ErrorKind::NotAllowed,
                message: authorizer::take_denial().unwrap_or_else(|| e.to_string()),
                sqlite: Some(SqliteCode {
                    primary: rusqlite::ffi::SQLITE_AUTH,
                    extended: error.extended_code,
                }),
            }
        }
        other => ErrorInfo::new(ErrorKind::Sql, other.to_string()),
    }
}

/// Refuses text SQLite would stop reading early: everything after a NUL byte
/// would be silently ignored (and a text filter would see other statements than
/// SQLite runs).
fn check_no_nul(sql: &str) -> Result<(), ErrorInfo> {
    match sql.bytes().position(|b| b == 0) {
        None => Ok(()),
        Some(at) => Err(texts::nul_byte(at)),
    }
}

/// Runs one SQL text (one or several statements) with positional parameters,
/// adding its effects to `out`. `conn` must have the broker's authorizer
/// installed (`authorizer::install`): it tells what each statement is.
///
/// # Errors
/// The first failing statement's error; the caller rolls the request back.
pub fn run_sql(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    tracker: &mut Tracker,
    limits: &ExecLimits,
    out: &mut ExecResult,
) -> Result<(), ErrorInfo> {
    check_no_nul(sql)?;
    if let Some(mut stmt) = prepare_single(conn, sql)? {
        tracker.admit(Seen::default(), limits)?;
        if stmt.parameter_count() != params.len() {
            return Err(texts::param_count(stmt.parameter_count(), params.len()));
        }
        return run_one(conn, &mut stmt, params, tracker, limits, out);
    }
    // Statement by statement, as SQLite reads them: a later statement may depend
    // on an earlier one (CREATE TABLE t …; CREATE INDEX … ON t) and cannot be
    // prepared before that ran. The text gets its terminating NUL once, so that
    // SQLite reads each statement in place instead of copying the rest of the
    // text for each one (which made many statements quadratic).
    let mut terminated = String::with_capacity(sql.len() + 1);
    terminated.push_str(sql);
    terminated.push('\0');
    let mut batch = Batch::new(conn, &terminated);
    let mut used = 0;
    loop {
        authorizer::start_statement();
        let next = batch.next();
        let seen = authorizer::seen();
        let mut stmt = match next {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) => return Err(sql_error(&e)),
        };
        if seen.actions == 0 {
            text::check_vacuum(&stmt.expanded_sql().unwrap_or_default())?;
        }
        if !tracker.admit(seen, limits)? {
            continue;
        }
        let savepoint = if seen.savepoint { authorizer::take_savepoint() } else { None };
        let n = stmt.parameter_count();
        let Some(p) = params.get(used..used + n) else {
            return Err(texts::param_count(used + n, params.len()));
        };
        used += n;
        run_one(conn, &mut stmt, p, tracker, limits, out)?;
        // What the client's own savepoint undid never happened for the feed.
        if let Some((op, name)) = savepoint {
            crate::feed::capture::client_savepoint(conn, op, &name);
        }
    }
    if used != params.len() {
        return Err(texts::param_count(used, params.len()));
    }
    Ok(())
}

/// The fast path: a single ordinary statement, prepared once and kept in the
/// statement cache across requests; `None` for text that must run statement by
/// statement (see `sql::text::maybe_several_statements`).
fn prepare_single<'c>(conn: &'c Connection, sql: &str) -> Result<Option<CachedStatement<'c>>, ErrorInfo> {
    if text::maybe_several_statements(sql) || text::mentions_reserved(sql) {
        return Ok(None);
    }
    authorizer::start_statement();
    let stmt = conn.prepare_cached(sql).map_err(|e| sql_error(&e))?;
    let seen = authorizer::seen();
    // A cached statement is authorized once, when first prepared: what must be
    // seen by SQLite each time (transaction control, savepoints, the schema
    // version) never stays in the cache; VACUUM is refused by its first word.
    if seen.noteworthy() || (seen.actions == 0 && text::check_vacuum(sql).is_err()) {
        stmt.discard();
        return Ok(None);
    }
    Ok(Some(stmt))
}

/// Where a batch's results go: one each (`Batch`), or summed (a streamed batch,
/// whose answer is a summary).
pub trait BatchResults {
    /// The result of the next statement.
    fn add(&mut self, r: ExecResult);
}

impl BatchResults for Vec<ExecResult> {
    fn add(&mut self, r: ExecResult) {
        self.push(r);
    }
}

/// Changes and statements counted; the caller sets the last rowid from the
/// connection (a statement honoured without running, e.g. a wrapping `COMMIT`,
/// reports none).
impl BatchResults for ManySummary {
    fn add(&mut self, r: ExecResult) {
        self.changes += r.changes;
        self.rows += 1;
    }
}

/// Runs the statements of a batch request in order, each result added to `out`
/// (so a failing statement's index is the number of results added before it).
/// Consecutive statements with the same SQL text share one prepared statement
/// (checked and authorized once), as a bulk load sends the same INSERT thousands
/// of times.
///
/// # Errors
/// The first failing statement's error; the caller rolls the request back.
pub fn run_batch(
    conn: &Connection,
    stmts: &[Statement],
    tracker: &mut Tracker,
    limits: &ExecLimits,
    out: &mut impl BatchResults,
) -> Result<(), ErrorInfo> {
    let mut last: Option<(&str, CachedStatement<'_>)> = None;
    for s in stmts {
        let mut r = ExecResult::default();
        // Each result costs a few bytes of the answer even without rows.
        tracker.charge(RESULT_OVERHEAD, limits)?;
        match &mut last {
            Some((sql, stmt)) if *sql == s.sql => {
                tracker.admit(Seen::default(), limits)?;
                if stmt.parameter_count() != s.params.len() {
                    return Err(texts::param_count(stmt.parameter_count(), s.params.len()));
                }
                run_one(conn, stmt, &s.params, tracker, limits, &mut r)?;
            }
            _ => {
                // Back to the cache before anything else is prepared.
                last = None;
                check_no_nul(&s.sql)?;
                match prepare_single(conn, &s.sql)? {
                    Some(mut stmt) => {
                        tracker.admit(Seen::default(), limits)?;
                        if stmt.parameter_count() != s.params.len() {
                            return Err(texts::param_count(stmt.parameter_count(), s.params.len()));
                        }
                        run_one(conn, &mut stmt, &s.params, tracker, limits, &mut r)?;
                        last = Some((&s.sql, stmt));
                    }
                    None => run_sql(conn, &s.sql, &s.params, tracker, limits, &mut r)?,
                }
            }
        }
        out.add(r);
    }
    Ok(())
}

/// The statement of a streamed executemany: one ordinary statement, prepared and
/// authorized once and kept in the statement cache, so that every chunk of rows
/// runs the same prepared statement.
///
/// # Errors
/// SQLite's error; `not_allowed` for text that is not one ordinary statement
/// (several statements, transaction control, a savepoint, a schema-version
/// write, VACUUM), which an executemany cannot hold.
pub fn prepare_many<'c>(conn: &'c Connection, sql: &str) -> Result<CachedStatement<'c>, ErrorInfo> {
    check_no_nul(sql)?;
    prepare_single(conn, sql)?.ok_or_else(texts::many_needs_one_statement)
}

/// Runs `stmt` once per row of `rows`, adding what it did to `sum`. Rows a
/// statement returns (`RETURNING`) are stepped through and dropped: an
/// executemany answers with a summary only.
///
/// # Errors
/// The index in `rows` of the first failing row, with its error; the caller
/// rolls the whole stream back.
pub fn run_rows(
    conn: &Connection,
    stmt: &mut rusqlite::Statement<'_>,
    rows: &[Vec<Value>],
    sum: &mut ManySummary,
) -> Result<(), (usize, ErrorInfo)> {
    let wanted = stmt.parameter_count();
    let returns_rows = stmt.column_count() > 0;
    for (i, row) in rows.iter().enumerate() {
        if row.len() != wanted {
            return Err((i, texts::param_count(wanted, row.len())));
        }
        bind_params(stmt, row).map_err(|e| (i, sql_error(&e)))?;
        let before = conn.total_changes();
        if returns_rows {
            let mut out = stmt.raw_query();
            while out.next().map_err(|e| (i, sql_error(&e)))?.is_some() {}
        } else {
            stmt.raw_execute().map_err(|e| (i, sql_error(&e)))?;
        }
        // As in `run_one`: sqlite3_changes() is only trusted when this row changed something.
        if conn.total_changes() > before {
            sum.changes += conn.changes();
        }
        sum.rows += 1;
    }
    sum.last_insert_rowid = conn.last_insert_rowid();
    Ok(())
}

/// Encoded bytes of an `ExecResult` without rows, and of a row or value besides
/// its text or blob bytes (bincode: a tag, varint lengths, up to 9-byte numbers).
const RESULT_OVERHEAD: usize = 32;
const ITEM_OVERHEAD: usize = 10;

fn value_bytes(v: &Value) -> usize {
    ITEM_OVERHEAD
        + match v {
            Value::Text(t) => t.len(),
            Value::Blob(b) => b.len(),
            _ => 0,
        }
}

fn run_one(
    conn: &Connection,
    stmt: &mut rusqlite::Statement<'_>,
    params: &[Value],
    tracker: &mut Tracker,
    limits: &ExecLimits,
    out: &mut ExecResult,
) -> Result<(), ErrorInfo> {
    bind_params(stmt, params).map_err(|e| sql_error(&e))?;
    let before = conn.total_changes();
    if stmt.column_count() > 0 && tracker.summary {
        let mut rows = stmt.raw_query();
        while rows.next().map_err(|e| sql_error(&e))?.is_some() {}
    } else if stmt.column_count() > 0 {
        let room = limits.max_rows.saturating_sub(out.rows.len());
        let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
        tracker.charge(columns.iter().map(|c| c.len() + ITEM_OVERHEAD).sum(), limits)?;
        let ncol = columns.len();
        let mut collected = Vec::new();
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(|e| sql_error(&e))? {
            if collected.len() >= room {
                return Err(texts::limit("rows returned", limits.max_rows, "--max-rows"));
            }
            let mut r = Vec::with_capacity(ncol);
            let mut bytes = ITEM_OVERHEAD;
            for i in 0..ncol {
                let v = from_value_ref(row.get_ref(i).map_err(|e| sql_error(&e))?);
                bytes += value_bytes(&v);
                r.push(v);
            }
            tracker.charge(bytes, limits)?;
            collected.push(r);
        }
        out.columns = columns;
        out.rows = collected;
    } else {
        stmt.raw_execute().map_err(|e| sql_error(&e))?;
    }
    // sqlite3_changes() keeps the previous statement's count after DDL, so it is only
    // trusted when this statement changed something (triggers aside).
    if conn.total_changes() > before {
        out.changes += conn.changes();
    }
    out.last_insert_rowid = conn.last_insert_rowid();
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Transaction control is recognised by SQLite, whatever the spelling.
    #[test]
    fn transaction_control_is_what_sqlite_says_it_is() {
        let c = conn();
        run(&c, "CREATE TABLE t(v)", &[], Mode::OneShot).unwrap();
        for (sql, kind) in [
            ("BEGIN IMMEDIATE; INSERT INTO t VALUES (1); COMMIT", None),
            ("  -- hi\n begin transaction; INSERT INTO t VALUES (1); /* x */END", None),
            ("BeGiN /* c */ DEFERRED\t; INSERT INTO t VALUES (1);\ncommit transaction", None),
            ("COMMIT", Some(ErrorKind::SessionState)),
            ("end;", Some(ErrorKind::SessionState)),
            ("/**/COMMIT/**/", Some(ErrorKind::SessionState)),
            ("ROLLBACK", Some(ErrorKind::SessionState)),
            ("rollback transaction", Some(ErrorKind::SessionState)),
            ("INSERT INTO t VALUES (1); COMMIT", Some(ErrorKind::SessionState)),
            ("INSERT INTO t VALUES ('BEGIN')", None),
            ("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END", None),
        ] {
            let r = run(&c, sql, &[], Mode::OneShot);
            assert_eq!(r.as_ref().err().map(|e| e.kind), kind, "{sql}: {r:?}");
            assert!(!c.is_autocommit() || c.is_autocommit(), "never ends the broker's transaction");
        }
    }

    /// A connection with the broker's authorizer, which tells what statements are.
    fn conn() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        authorizer::install(&mut c).unwrap();
        c
    }

    fn run(
        conn: &Connection,
        sql: &str,
        params: &[Value],
        mode: Mode,
    ) -> Result<(ExecResult, Tracker), ErrorInfo> {
        let mut t = Tracker::new(mode);
        let mut out = ExecResult::default();
        run_sql(conn, sql, params, &mut t, &limits(3), &mut out)?;
        t.finish()?;
        Ok((out, t))
    }

    fn limits(max_rows: usize) -> ExecLimits {
        ExecLimits {
            max_rows,
            max_answer_bytes: 1 << 20,
            max_statements: 1000,
            deadline: Instant::now() + std::time::Duration::from_secs(60),
        }
    }

    #[test]
    fn runs_statements_with_distributed_parameters() {
        let c = conn();
        run(&c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", &[], Mode::OneShot).unwrap();
        let (r, _) = run(
            &c,
            "INSERT INTO t(v) VALUES (?); INSERT INTO t(v) VALUES (?), (?)",
            &[1.into(), 2.into(), 3.into()],
            Mode::OneShot,
        )
        .unwrap();
        assert_eq!(r.changes, 3);
        assert_eq!(r.last_insert_rowid, 3);
        let (r, _) = run(&c, "UPDATE t SET v = v + 1 RETURNING id", &[], Mode::OneShot).unwrap();
        assert_eq!(r.columns, ["id"]);
        assert_eq!(r.rows.len(), 3);
        assert_eq!(r.changes, 3);
        let e = run(&c, "INSERT INTO t(v) VALUES (?)", &[], Mode::OneShot).unwrap_err();
        assert!(e.message.contains("1 parameter placeholder(s) but 0"), "{e}");
        let e = run(&c, "SELECT 1; SELECT ?", &[1.into(), 2.into()], Mode::OneShot).unwrap_err();
        assert!(e.message.contains("1 parameter placeholder(s) but 2"), "{e}");
        let e =
            run(&c, "INSERT INTO t(v) VALUES (1),(2),(3),(4) RETURNING id", &[], Mode::OneShot).unwrap_err();
        assert_eq!(e.kind, ErrorKind::LimitExceeded);
        assert!(e.message.contains("--max-rows"));
    }

    #[test]
    fn later_statements_may_depend_on_earlier_ones() {
        let c = conn();
        let (r, _) = run(
            &c,
            "CREATE TABLE a(id INTEGER PRIMARY KEY, t TEXT); CREATE TABLE b(a_id REFERENCES a(id)); CREATE INDEX bi ON b(a_id); INSERT INTO a(t) VALUES (';');",
            &[],
            Mode::OneShot,
        )
        .unwrap();
        assert_eq!(r.changes, 1);
        let (r, _) = run(&c, "SELECT ';' AS semi;", &[], Mode::OneShot).unwrap();
        assert_eq!(r.rows, vec![vec![Value::Text(";".into())]]);
    }

    #[test]
    fn batches_reuse_statements_and_keep_per_statement_results() {
        let c = conn();
        let ins = |v: i64| Statement::new("INSERT INTO t(v) VALUES (?)", vec![v.into()]);
        let stmts = vec![
            Statement::new("CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)", vec![]),
            ins(1),
            ins(2),
            Statement::new("UPDATE t SET v = v * 10 RETURNING v", vec![]),
            ins(3),
            Statement::new(
                "INSERT INTO t(v) VALUES (?); INSERT INTO t(v) VALUES (?)",
                vec![4.into(), 5.into()],
            ),
            ins(6),
        ];
        let mut t = Tracker::new(Mode::OneShot);
        let mut out = Vec::new();
        run_batch(&c, &stmts, &mut t, &limits(10), &mut out).unwrap();
        let ids: Vec<i64> = out.iter().map(|r| r.last_insert_rowid).collect();
        assert_eq!(ids, [0, 1, 2, 2, 3, 5, 6]);
        assert_eq!(out[3].rows, [[Value::Integer(10)], [Value::Integer(20)]]);
        assert_eq!(out[5].changes, 2);
        let e = run_batch(
            &c,
            &[ins(7), Statement::new("INSERT INTO t(v) VALUES (?)", vec![])],
            &mut t,
            &limits(10),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(e.message.contains("1 parameter placeholder(s) but 0"), "{e}");
        let e = run_batch(&c, &[ins(8), ins(8)], &mut t, &limits(10), &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Constraint);
        // Repeats of a refused statement are refused too (checked on the first).
        let vacuum = Statement::new("VACUUM", vec![]);
        let e = run_batch(&c, &[vacuum.clone(), vacuum], &mut t, &limits(10), &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotAllowed);
    }

    #[test]
    fn a_streamed_batch_is_tracked_across_parts_and_limited_per_part() {
        let c = conn();
        run(&c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", &[], Mode::OneShot).unwrap();
        let mut t = Tracker::summarising(Mode::OneShot);
        let mut limits = limits(1);
        limits.max_statements = 3;
        let ins = |v: i64| Statement::new("INSERT INTO t(v) VALUES (?) RETURNING id", vec![v.into()]);
        let mut sum = ManySummary::default();
        // A BEGIN in the first part, its COMMIT in the last; each part within the limit.
        for part in [vec![Statement::new("BEGIN", vec![]), ins(1), ins(2)], vec![ins(3), ins(4)]] {
            t.next_part();
            run_batch(&c, &part, &mut t, &limits, &mut sum).unwrap();
        }
        assert!(t.finish().is_err(), "the BEGIN is not closed yet");
        t.next_part();
        run_batch(&c, &[Statement::new("COMMIT", vec![])], &mut t, &limits, &mut sum).unwrap();
        t.finish().unwrap();
        // Returned rows were dropped, past --max-rows (1) without an error.
        assert_eq!((sum.rows, sum.changes), (6, 4));
        // A part over the limit fails, however few the stream ran before it.
        let mut t = Tracker::summarising(Mode::OneShot);
        let four = vec![ins(5), ins(6), ins(7), ins(8)];
        let e = run_batch(&c, &four, &mut t, &limits, &mut sum).unwrap_err();
        assert!(e.message.contains("--max-batch-statements"), "{e}");
    }

    #[test]
    fn maps_sqlite_errors_to_kinds() {
        let c = conn();
        run(&c, "CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE)", &[], Mode::OneShot).unwrap();
        run(&c, "INSERT INTO t(v) VALUES (1)", &[], Mode::OneShot).unwrap();
        let e = run(&c, "INSERT INTO t(v) VALUES (1)", &[], Mode::OneShot).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Constraint);
        assert_eq!(e.sqlite, Some(SqliteCode { primary: 19, extended: 2067 }));
        let e = run(&c, "INSER INTO t", &[], Mode::OneShot).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Sql);
        assert!(e.message.contains("syntax error"), "{e}");
    }

    #[test]
    fn honours_wrapping_begin_commit_and_session_control() {
        let c = conn();
        run(&c, "CREATE TABLE t(v)", &[], Mode::OneShot).unwrap();
        let (r, _) =
            run(&c, "BEGIN IMMEDIATE; INSERT INTO t VALUES (1); COMMIT;", &[], Mode::OneShot).unwrap();
        assert_eq!(r.changes, 1);
        let e = run(&c, "BEGIN; INSERT INTO t VALUES (1);", &[], Mode::OneShot).unwrap_err();
        assert!(e.message.contains("without a matching COMMIT"));
        let e = run(&c, "INSERT INTO t VALUES (1); BEGIN", &[], Mode::OneShot).unwrap_err();
        assert_eq!(e.kind, ErrorKind::SessionState);
        assert!(run(&c, "COMMIT", &[], Mode::OneShot).is_err());
        assert!(run(&c, "ROLLBACK", &[], Mode::OneShot).is_err());
        let e = run(&c, "BEGIN; COMMIT; INSERT INTO t VALUES (1)", &[], Mode::OneShot).unwrap_err();
        assert!(e.message.contains("after COMMIT"));
        let (_, t) =
            run(&c, "INSERT INTO t VALUES (2); COMMIT", &[], Mode::Session { fresh: false }).unwrap();
        assert_eq!(t.end, SessionEnd::Commit);
        let (_, t) = run(&c, "ROLLBACK", &[], Mode::Session { fresh: false }).unwrap();
        assert_eq!(t.end, SessionEnd::Rollback);
        assert!(run(&c, "BEGIN IMMEDIATE", &[], Mode::Session { fresh: true }).is_ok());
        assert!(run(&c, "BEGIN IMMEDIATE", &[], Mode::Session { fresh: false }).is_err());
        for reserved in ["SAVEPOINT _litebroker_req", "SAVEPOINT litebroker_req", "RELEASE \"_LiteBroker_x\""]
        {
            let e = run(&c, reserved, &[], Mode::OneShot).unwrap_err();
            assert_eq!(e.kind, ErrorKind::NotAllowed, "{reserved}");
            assert!(e.message.contains("reserved"), "{reserved}: {}", e.message);
        }
        run(&c, "SAVEPOINT mine; INSERT INTO t VALUES (3); RELEASE mine", &[], Mode::OneShot).unwrap();
    }
}
