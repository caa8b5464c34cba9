//! What the writer does with a decoded request: statement splitting, transaction
//! control, parameter distribution and the authorizer, on a connection set up as
//! the broker's writer. The first byte picks the input's form: a bincode request
//! (odd) or raw SQL text (even), so SQL is explored without the codec in the way.
//! Nothing may panic, no denied action may take effect, and the writer must stay
//! usable.
#![no_main]

use std::cell::RefCell;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use litebroker_protocol::{decode_payload, ExecResult, Request, Statement};
use litebroker_server::sql::exec::{run_sql, ExecLimits, Mode, Tracker};
use rusqlite::Connection;

thread_local! {
    static CONN: RefCell<Connection> = RefCell::new(writer());
}

fn writer() -> Connection {
    let mut c = Connection::open_in_memory().unwrap();
    c.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA max_page_count = 4096;
         CREATE TABLE t (a INTEGER PRIMARY KEY, b);
         CREATE TABLE _litebroker_requests (id BLOB PRIMARY KEY, result BLOB);",
    )
    .unwrap();
    // SAFETY: a plain limit on a connection this thread owns.
    unsafe {
        rusqlite::ffi::sqlite3_limit(c.handle(), rusqlite::ffi::SQLITE_LIMIT_LENGTH, 1_000_000);
    }
    litebroker_server::sql::authorizer::install(&mut c).unwrap();
    c
}

fn statements(data: &[u8]) -> Vec<(Statement, Mode)> {
    let Some((&form, rest)) = data.split_first() else { return Vec::new() };
    if form % 2 == 0 {
        return vec![(Statement::new(String::from_utf8_lossy(rest), vec![]), Mode::OneShot)];
    }
    let mode = if form & 2 != 0 { Mode::Session { fresh: form & 4 != 0 } } else { Mode::OneShot };
    match decode_payload::<Request>(rest) {
        Ok(Request::Execute { stmt, .. }) => vec![(stmt, mode)],
        Ok(Request::Batch { statements, .. }) => statements.into_iter().map(|s| (s, mode)).collect(),
        _ => Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let stmts = statements(data);
    if stmts.is_empty() {
        return;
    }
    CONN.with(|c| {
        let mut c = c.borrow_mut();
        // A runaway statement is interrupted as in the broker.
        let deadline = Instant::now() + Duration::from_millis(50);
        c.progress_handler(1000, Some(move || Instant::now() >= deadline)).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        for (stmt, mode) in &stmts {
            let mut tracker = Tracker::new(*mode);
            let mut out = ExecResult::default();
            let limits =
                ExecLimits { max_rows: 100, max_answer_bytes: 1 << 20, max_statements: 10_000, deadline };
            let r = run_sql(&c, &stmt.sql, &stmt.params, &mut tracker, &limits, &mut out)
                .and_then(|()| tracker.finish());
            if r.is_err() {
                break;
            }
        }
        if !c.is_autocommit() {
            c.execute_batch("ROLLBACK").unwrap();
        }
        c.progress_handler(0, None::<fn() -> bool>).unwrap();
        // Whatever ran, the broker's settings and its one database are intact.
        let (fk, dbs): (i64, i64) = c
            .query_row("SELECT (SELECT foreign_keys FROM pragma_foreign_keys), (SELECT count(*) FROM pragma_database_list)", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(fk, 1, "foreign keys were switched off");
        assert!(dbs <= 2, "a database was attached");
    });
});
