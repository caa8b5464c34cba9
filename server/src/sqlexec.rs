//! Running client SQL on the writer connection: statement splitting, parameter
//! distribution, transaction-control statements, result collection, error mapping.

use litebroker_client::sqlvalue::{bind_params, collect_rows};
use litebroker_protocol::{ErrorInfo, ErrorKind, ExecResult, SqliteCode, Statement, Value};
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::{Batch, Connection};

/// Name of the savepoint the broker wraps each request of a group in. Clients may
/// not use names with this prefix.
pub const INTERNAL_SAVEPOINT: &str = "litebroker_req";
const RESERVED_PREFIX: &str = "litebroker";

/// A transaction-control statement, recognised so that it is honoured rather than
/// passed blindly into the broker's own transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxControl {
    /// Not transaction control.
    None,
    /// `BEGIN [DEFERRED|IMMEDIATE|EXCLUSIVE] [TRANSACTION]`.
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` (of the whole transaction).
    Rollback,
    /// `SAVEPOINT name`, `RELEASE name`, `ROLLBACK TO name`: nested inside the
    /// broker's transaction, allowed unless the name is reserved.
    Savepoint(String),
}

/// Words of a statement's start, skipping whitespace and comments.
pub(crate) fn words(sql: &str) -> impl Iterator<Item = &str> {
    let mut rest = sql;
    std::iter::from_fn(move || {
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix("--") {
                rest = r.split_once('\n').map_or("", |(_, after)| after);
            } else if let Some(r) = rest.strip_prefix("/*") {
                rest = r.split_once("*/").map_or("", |(_, after)| after);
            } else {
                break;
            }
        }
        if rest.is_empty() {
            return None;
        }
        let end = match rest.as_bytes()[0] {
            q @ (b'"' | b'\'' | b'`' | b'[') => {
                let close = if q == b'[' { b']' } else { q };
                rest[1..].bytes().position(|b| b == close).map_or(rest.len(), |p| p + 2)
            }
            _ => rest
                .find(|c: char| c.is_whitespace() || c == ';' || c == '-' || c == '/')
                .unwrap_or(rest.len())
                .max(1),
        };
        let (w, r) = rest.split_at(end);
        rest = r;
        Some(w)
    })
}

fn unquote(name: &str) -> String {
    let b = name.as_bytes();
    if b.len() >= 2 && matches!(b[0], b'"' | b'\'' | b'`' | b'[') {
        name[1..name.len() - 1].to_owned()
    } else {
        name.to_owned()
    }
}

/// Recognises transaction-control statements by their leading keywords.
pub fn classify(sql: &str) -> TxControl {
    let mut w = words(sql);
    let Some(first) = w.next() else { return TxControl::None };
    let is = |word: &str, kw: &str| word.eq_ignore_ascii_case(kw);
    if is(first, "BEGIN") {
        TxControl::Begin
    } else if is(first, "COMMIT") || is(first, "END") {
        TxControl::Commit
    } else if is(first, "ROLLBACK") {
        let mut next = w.next();
        if next.is_some_and(|n| is(n, "TRANSACTION")) {
            next = w.next();
        }
        match next {
            Some(n) if is(n, "TO") => {
                let mut name = w.next();
                if name.is_some_and(|n| is(n, "SAVEPOINT")) {
                    name = w.next();
                }
                TxControl::Savepoint(name.map(unquote).unwrap_or_default())
            }
            _ => TxControl::Rollback,
        }
    } else if is(first, "SAVEPOINT") {
        TxControl::Savepoint(w.next().map(unquote).unwrap_or_default())
    } else if is(first, "RELEASE") {
        let mut name = w.next();
        if name.is_some_and(|n| is(n, "SAVEPOINT")) {
            name = w.next();
        }
        TxControl::Savepoint(name.map(unquote).unwrap_or_default())
    } else {
        TxControl::None
    }
}

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

/// Tracks transaction control across the statements of one request.
#[derive(Debug)]
pub struct Tracker {
    mode: Mode,
    statements: usize,
    wrapped: bool,
    closed: bool,
    /// Set when the request ends the session.
    pub end: SessionEnd,
}

impl Tracker {
    /// A tracker for one request.
    pub fn new(mode: Mode) -> Tracker {
        Tracker { mode, statements: 0, wrapped: false, closed: false, end: SessionEnd::None }
    }

    /// Decides what to do with the next statement: `Ok(true)` = execute it,
    /// `Ok(false)` = it was honoured without executing.
    fn admit(&mut self, ctl: &TxControl) -> Result<bool, ErrorInfo> {
        let first = self.statements == 0;
        self.statements += 1;
        if self.closed || self.end != SessionEnd::None {
            return Err(state_error(
                "statements after COMMIT/ROLLBACK in the same request; send them separately",
            ));
        }
        match (ctl, self.mode) {
            (TxControl::None, _) => Ok(true),
            (TxControl::Savepoint(name), _) => {
                if name.to_ascii_lowercase().starts_with(RESERVED_PREFIX) {
                    Err(ErrorInfo::new(
                        ErrorKind::NotAllowed,
                        format!("savepoint '{name}' is not allowed through the broker: names starting with '{RESERVED_PREFIX}' are reserved"),
                    ))
                } else {
                    Ok(true)
                }
            }
            (TxControl::Begin, Mode::OneShot) if first => {
                self.wrapped = true;
                Ok(false)
            }
            (TxControl::Begin, Mode::OneShot) => Err(state_error(
                "BEGIN is only accepted as the first statement of a request (the request is already one transaction)",
            )),
            (TxControl::Commit, Mode::OneShot) if self.wrapped => {
                self.closed = true;
                Ok(false)
            }
            (TxControl::Commit, Mode::OneShot) => Err(state_error(
                "COMMIT without BEGIN: a one-shot request commits by itself; use a write session to control the transaction",
            )),
            (TxControl::Rollback, Mode::OneShot) => Err(state_error(
                "ROLLBACK in a one-shot request: to discard changes, use a write session and roll it back",
            )),
            (TxControl::Begin, Mode::Session { fresh }) if fresh && first => Ok(false),
            (TxControl::Begin, Mode::Session { .. }) => Err(state_error(
                "BEGIN inside a write session: the session is already a transaction (opened with BEGIN IMMEDIATE)",
            )),
            (TxControl::Commit, Mode::Session { .. }) => {
                self.end = SessionEnd::Commit;
                Ok(false)
            }
            (TxControl::Rollback, Mode::Session { .. }) => {
                self.end = SessionEnd::Rollback;
                Ok(false)
            }
        }
    }

    /// Checks the request as a whole once all its statements ran.
    ///
    /// # Errors
    /// A `BEGIN` without its `COMMIT`.
    pub fn finish(&self) -> Result<(), ErrorInfo> {
        if self.wrapped && !self.closed {
            return Err(state_error("BEGIN without a matching COMMIT in the request; nothing was applied"));
        }
        Ok(())
    }
}

fn state_error(msg: &str) -> ErrorInfo {
    ErrorInfo::new(ErrorKind::SessionState, msg)
}

/// Limits applied while executing.
#[derive(Debug, Clone, Copy)]
pub struct ExecLimits {
    /// Maximum rows returned by one request.
    pub max_rows: usize,
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
                _ => ErrorKind::Sql,
            };
            let mut message = msg.clone().unwrap_or_else(|| err.to_string());
            if primary == rusqlite::ffi::SQLITE_AUTH {
                // SQLite only says "not authorized"; the authorizer knows what and why.
                message = crate::authorizer::take_denial().unwrap_or(message);
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
                message: crate::authorizer::take_denial().unwrap_or_else(|| e.to_string()),
                sqlite: Some(SqliteCode {
                    primary: rusqlite::ffi::SQLITE_AUTH,
                    extended: error.extended_code,
                }),
            }
        }
        other => ErrorInfo::new(ErrorKind::Sql, other.to_string()),
    }
}

fn limit_error(what: &str, max: usize, flag: &str) -> ErrorInfo {
    ErrorInfo::new(ErrorKind::LimitExceeded, format!("{what} exceeds the limit of {max} ({flag})"))
}

/// Runs one SQL text (one or several statements) with positional parameters,
/// adding its effects to `out`.
///
/// # Errors
/// The first failing statement's error; the caller rolls the request back.
pub fn run_sql(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    tracker: &mut Tracker,
    limits: ExecLimits,
    out: &mut ExecResult,
) -> Result<(), ErrorInfo> {
    // Fast path: one statement, prepared once and cached across requests. Text with
    // an inner `;` takes the statement-by-statement path: a later statement may
    // depend on an earlier one (CREATE TABLE t …; CREATE INDEX … ON t) and cannot be
    // prepared before it ran.
    if let Some(mut stmt) = prepare_single(conn, sql)? {
        tracker.admit(&TxControl::None)?;
        if stmt.parameter_count() != params.len() {
            return Err(param_count_error(stmt.parameter_count(), params.len()));
        }
        return run_one(conn, &mut stmt, params, limits, out);
    }
    let mut batch = Batch::new(conn, sql);
    let mut used = 0;
    loop {
        let mut stmt = match batch.next() {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) => return Err(sql_error(&e)),
        };
        let text = stmt.expanded_sql().unwrap_or_default();
        crate::authorizer::check_text(&text)?;
        let ctl = classify(&text);
        if !tracker.admit(&ctl)? {
            continue;
        }
        let n = stmt.parameter_count();
        let Some(p) = params.get(used..used + n) else {
            return Err(param_count_error(used + n, params.len()));
        };
        used += n;
        run_one(conn, &mut stmt, p, limits, out)?;
    }
    if used != params.len() {
        return Err(param_count_error(used, params.len()));
    }
    Ok(())
}

/// The fast path: a single statement that is not transaction control, prepared
/// once and cached across requests; `None` for text that must run statement by
/// statement.
fn prepare_single<'c>(
    conn: &'c Connection,
    sql: &str,
) -> Result<Option<rusqlite::CachedStatement<'c>>, ErrorInfo> {
    // SQL naming the broker's own tables is never served from the statement cache:
    // a cached copy may have been prepared, and authorized, for the broker itself.
    if classify(sql) != TxControl::None
        || sql.trim_end().trim_end_matches(';').contains(';')
        || crate::authorizer::mentions_reserved(sql)
    {
        return Ok(None);
    }
    crate::authorizer::check_text(sql)?;
    conn.prepare_cached(sql).map(Some).map_err(|e| sql_error(&e))
}

/// Runs the statements of a batch request in order, one result each in `out`.
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
    limits: ExecLimits,
    out: &mut Vec<ExecResult>,
) -> Result<(), ErrorInfo> {
    let mut last: Option<(&str, rusqlite::CachedStatement<'_>)> = None;
    for s in stmts {
        let mut r = ExecResult::default();
        match &mut last {
            Some((sql, stmt)) if *sql == s.sql => {
                tracker.admit(&TxControl::None)?;
                if stmt.parameter_count() != s.params.len() {
                    return Err(param_count_error(stmt.parameter_count(), s.params.len()));
                }
                run_one(conn, stmt, &s.params, limits, &mut r)?;
            }
            _ => {
                // Back to the cache before anything else is prepared.
                last = None;
                match prepare_single(conn, &s.sql)? {
                    Some(mut stmt) => {
                        tracker.admit(&TxControl::None)?;
                        if stmt.parameter_count() != s.params.len() {
                            return Err(param_count_error(stmt.parameter_count(), s.params.len()));
                        }
                        run_one(conn, &mut stmt, &s.params, limits, &mut r)?;
                        last = Some((&s.sql, stmt));
                    }
                    None => run_sql(conn, &s.sql, &s.params, tracker, limits, &mut r)?,
                }
            }
        }
        out.push(r);
    }
    Ok(())
}

fn param_count_error(wanted: usize, got: usize) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Sql,
        format!("the SQL has {wanted} parameter placeholder(s) but {got} parameter(s) were given"),
    )
}

fn run_one(
    conn: &Connection,
    stmt: &mut rusqlite::Statement<'_>,
    params: &[Value],
    limits: ExecLimits,
    out: &mut ExecResult,
) -> Result<(), ErrorInfo> {
    bind_params(stmt, params).map_err(|e| sql_error(&e))?;
    let before = conn.total_changes();
    if stmt.column_count() > 0 {
        let room = limits.max_rows.saturating_sub(out.rows.len());
        let (columns, rows) =
            collect_rows(stmt, room, || rusqlite::Error::ToSqlConversionFailure("row limit".into()))
                .map_err(|e| match e {
                    rusqlite::Error::ToSqlConversionFailure(_) => {
                        limit_error("rows returned", limits.max_rows, "--max-rows")
                    }
                    other => sql_error(&other),
                })?;
        out.columns = columns;
        out.rows = rows;
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

    #[test]
    fn classifies_transaction_control() {
        assert_eq!(classify("BEGIN IMMEDIATE"), TxControl::Begin);
        assert_eq!(classify("  -- hi\n begin transaction;"), TxControl::Begin);
        assert_eq!(classify("/* x */COMMIT"), TxControl::Commit);
        assert_eq!(classify("end"), TxControl::Commit);
        assert_eq!(classify("ROLLBACK"), TxControl::Rollback);
        assert_eq!(classify("rollback transaction"), TxControl::Rollback);
        assert_eq!(classify("ROLLBACK TO sp1"), TxControl::Savepoint("sp1".into()));
        assert_eq!(classify("ROLLBACK TRANSACTION TO SAVEPOINT \"a b\""), TxControl::Savepoint("a b".into()));
        assert_eq!(classify("SAVEPOINT x"), TxControl::Savepoint("x".into()));
        assert_eq!(
            classify("RELEASE SAVEPOINT litebroker_req"),
            TxControl::Savepoint("litebroker_req".into())
        );
        assert_eq!(classify("INSERT INTO t VALUES ('BEGIN')"), TxControl::None);
        assert_eq!(classify("CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END"), TxControl::None);
        assert_eq!(classify(""), TxControl::None);
        assert_eq!(classify("-- only a comment"), TxControl::None);
    }

    fn run(
        conn: &Connection,
        sql: &str,
        params: &[Value],
        mode: Mode,
    ) -> Result<(ExecResult, Tracker), ErrorInfo> {
        let mut t = Tracker::new(mode);
        let mut out = ExecResult::default();
        run_sql(conn, sql, params, &mut t, ExecLimits { max_rows: 3 }, &mut out)?;
        t.finish()?;
        Ok((out, t))
    }

    #[test]
    fn runs_statements_with_distributed_parameters() {
        let c = Connection::open_in_memory().unwrap();
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
        let c = Connection::open_in_memory().unwrap();
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
        let c = Connection::open_in_memory().unwrap();
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
        run_batch(&c, &stmts, &mut t, ExecLimits { max_rows: 10 }, &mut out).unwrap();
        let ids: Vec<i64> = out.iter().map(|r| r.last_insert_rowid).collect();
        assert_eq!(ids, [0, 1, 2, 2, 3, 5, 6]);
        assert_eq!(out[3].rows, [[Value::Integer(10)], [Value::Integer(20)]]);
        assert_eq!(out[5].changes, 2);
        let e = run_batch(
            &c,
            &[ins(7), Statement::new("INSERT INTO t(v) VALUES (?)", vec![])],
            &mut t,
            ExecLimits { max_rows: 10 },
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(e.message.contains("1 parameter placeholder(s) but 0"), "{e}");
        let e = run_batch(&c, &[ins(8), ins(8)], &mut t, ExecLimits { max_rows: 10 }, &mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Constraint);
        // Repeats of a refused statement are refused too (checked on the first).
        let vacuum = Statement::new("VACUUM", vec![]);
        let e =
            run_batch(&c, &[vacuum.clone(), vacuum], &mut t, ExecLimits { max_rows: 10 }, &mut Vec::new())
                .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotAllowed);
    }

    #[test]
    fn maps_sqlite_errors_to_kinds() {
        let c = Connection::open_in_memory().unwrap();
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
        let c = Connection::open_in_memory().unwrap();
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
        let e = run(&c, "SAVEPOINT litebroker_req", &[], Mode::OneShot).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotAllowed);
        run(&c, "SAVEPOINT mine; INSERT INTO t VALUES (3); RELEASE mine", &[], Mode::OneShot).unwrap();
    }
}
