//! Streamed executemany, through the real processes: many parameter rows for one
//! statement, sent in chunks and run while they arrive, in one transaction with
//! one answer. Whole or nothing — also when the client or the broker dies
//! mid-stream, or the client stalls past its deadline — and exactly once under
//! one request id.
//!
//! The big streams are 1,000,000 rows, as the throughput issue's checks say (the
//! whole file runs in well under a minute in a debug build); their speed is
//! `lbbench`'s to measure.

use std::time::Duration;

use litebroker_client::{Client, ClientError, ConnectOptions, Db, ErrorKind, Value, WriteOptions};
use litebroker_tests::*;

/// Rows of the big streams (see the module's doc).
const ROWS: u64 = 1_000_000;

const SCHEMA: &str = "CREATE TABLE many (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, payload TEXT);
CREATE TABLE other (v INTEGER);";

const INSERT: &str = "INSERT INTO many (seq, payload) VALUES (?1, ?2)";

fn row(seq: u64) -> Vec<Value> {
    vec![Value::Integer(seq as i64), Value::Text(format!("row {seq}"))]
}

fn rows(n: u64) -> impl Iterator<Item = litebroker_client::Result<Vec<Value>>> {
    (0..n).map(|i| Ok(row(i)))
}

fn count(db: &std::path::Path) -> i64 {
    query_i64(db, "SELECT count(*) FROM many")
}

fn setup() -> (TestDir, Broker) {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &[]);
    assert_exit(&cli(&t.db(), &["exec", SCHEMA]), 0);
    (t, b)
}

#[test]
fn a_streamed_executemany_lands_whole_and_answers_with_a_summary() {
    let (t, b) = setup();
    let mut c = b.client("many");
    let s = c.execute_many(INSERT, (0..ROWS).map(row)).expect("the stream commits");
    assert_eq!((s.rows, s.changes, s.last_insert_rowid), (ROWS, ROWS, ROWS as i64));
    assert_eq!(count(&t.db()), ROWS as i64);
    assert_eq!(query_i64(&t.db(), "SELECT sum(seq) FROM many"), (ROWS * (ROWS - 1) / 2) as i64);
    // The connection serves ordinary requests after a stream.
    assert_eq!(c.execute("INSERT INTO other VALUES (1)", &[]).unwrap().changes, 1);
    // An empty stream is a valid one.
    let s = c.execute_many(INSERT, std::iter::empty::<Vec<Value>>()).unwrap();
    assert_eq!(s.rows, 0);
}

#[test]
fn a_failing_row_is_named_by_its_index_and_nothing_is_applied() {
    let (t, _b) = setup();
    let db = Db::open(t.db()).unwrap();
    let bad = 500_000;
    // Row `bad` repeats row 0's unique seq.
    let stream = (0..ROWS).map(|i| if i == bad { row(0) } else { row(i) });
    let err = db.execute_many(INSERT, stream).unwrap_err();
    let ClientError::RowFailed { row: failed, ref error } = err else { panic!("not a row failure: {err}") };
    assert_eq!(failed, bad);
    assert_eq!(error.kind, ErrorKind::Constraint);
    assert!(error.message.contains("row 500000 (counting from 0)"), "{}", error.message);
    assert!(error.message.contains("UNIQUE constraint failed: many.seq"), "{}", error.message);
    assert_eq!(count(&t.db()), 0, "nothing of the stream was applied");
    // The writer is free again, and the next stream commits.
    assert_eq!(db.execute_many(INSERT, (0..10).map(row)).unwrap().rows, 10);
}

#[test]
fn a_statement_that_is_not_one_ordinary_statement_is_refused() {
    let (t, b) = setup();
    let mut c = b.client("many");
    for sql in ["INSERT INTO other VALUES (?1); INSERT INTO other VALUES (?1)", "COMMIT", "SAVEPOINT x"] {
        let e = c.execute_many(sql, (0..3).map(|i| vec![Value::Integer(i)])).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::NotAllowed), "{sql}: {e}");
    }
    let e = c.execute_many("INSERT INTO other VALUES (?1)", [vec![Value::Integer(1)], vec![]]).unwrap_err();
    assert!(matches!(e, ClientError::RowFailed { row: 1, .. }), "{e}");
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM other"), 0);
}

#[test]
fn a_client_killed_mid_stream_applies_nothing_and_the_next_writer_is_served() {
    let (t, _b) = setup();
    let db = t.db();
    let rows = ROWS.to_string();
    let mut tool = Proc::lbtool(&db, &["many", "--rows", &rows, "--stall-at", "500000"]);
    assert_eq!(tool.json_line(Duration::from_secs(60))["stalled"], 500_000);
    // Its stream holds the writer now: a write from another client waits.
    let waiting = std::thread::spawn({
        let db = db.clone();
        move || cli(&db, &["--timeout", "30", "exec", "INSERT INTO other VALUES (1)"])
    });
    tool.kill9();
    // The broker rolls the dead client's stream back and serves the waiting write.
    assert_exit(&waiting.join().unwrap(), 0);
    assert_eq!(count(&db), 0);
    assert_eq!(query_i64(&db, "SELECT count(*) FROM other"), 1);
}

#[test]
fn a_client_stalled_past_its_deadline_is_rolled_back_and_frees_the_writer() {
    let (t, b) = setup();
    let db = t.db();
    let mut tool = Proc::lbtool(&db, &["many", "--rows", "10000", "--stall-at", "5000", "--timeout", "2"]);
    assert_eq!(tool.json_line(Duration::from_secs(30))["stalled"], 5000);
    // Another writer gets the writer once the stalled stream's 2 s deadline passed.
    assert_exit(&cli(&db, &["--timeout", "30", "exec", "INSERT INTO other VALUES (1)"]), 0);
    tool.close_stdin();
    let end = tool.json_line(Duration::from_secs(30));
    assert_eq!(end["ok"], false, "{end}");
    assert_eq!(end["kind"], "timeout", "{end}");
    assert!(tool.wait_exit(Duration::from_secs(10)).is_some());
    assert_eq!(count(&db), 0);
    assert!(b.log().contains("or was not complete by its deadline; rolled back"), "{}", b.log());
}

#[test]
fn a_stream_that_sends_no_rows_for_a_lease_is_rolled_back_whatever_deadline_it_asked_for() {
    let t = TestDir::new();
    let db = t.db();
    let b = Broker::start(&db, &["--lease-secs", "2"]);
    assert_exit(&cli(&db, &["exec", SCHEMA]), 0);
    // The stream asks for ten minutes, then stalls after its first chunks.
    let mut tool = Proc::lbtool(&db, &["many", "--rows", "10000", "--stall-at", "5000", "--timeout", "600"]);
    assert_eq!(tool.json_line(Duration::from_secs(30))["stalled"], 5000);
    // The broker's lease (2 s without a chunk) frees the writer for the next writer.
    assert_exit(&cli(&db, &["--timeout", "30", "exec", "INSERT INTO other VALUES (1)"]), 0);
    tool.close_stdin();
    let end = tool.json_line(Duration::from_secs(30));
    assert_eq!((end["ok"].clone(), end["kind"].clone()), (false.into(), "timeout".into()), "{end}");
    assert_eq!(count(&db), 0);
    assert!(b.log().contains("or was not complete by its deadline; rolled back"), "{}", b.log());
}

#[test]
fn a_broker_killed_mid_stream_applies_nothing_and_the_resend_applies_once() {
    let (t, mut b) = setup();
    let db = t.db();
    let mut c = b.client("many");
    let id = litebroker_client::new_request_id();
    let opts = || WriteOptions { request_id: Some(id), ..WriteOptions::default() };
    let stream = (0..ROWS).map(|i| {
        if i == ROWS / 2 {
            b.kill9();
        }
        Ok(row(i))
    });
    let err = c.execute_many_with(INSERT, stream, opts()).unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost { sent: false, .. }), "{err}");
    assert_eq!(count(&db), 0, "nothing of the cut stream was applied");

    let _b = Broker::start(&db, &[]);
    let mut c = Client::connect_with(&ConnectOptions::new(&db)).unwrap();
    let s = c.execute_many_with(INSERT, rows(ROWS), opts()).expect("the resend commits");
    assert_eq!(s.rows, ROWS);
    // Sent once more under the same id: answered from the record, applied once.
    let again = c.execute_many_with(INSERT, rows(ROWS), opts()).expect("answered from the record");
    assert_eq!(again, s);
    assert_eq!(count(&db), ROWS as i64);
}

#[test]
fn an_answer_lost_after_commit_is_answered_from_the_record_on_resend() {
    let t = TestDir::new();
    let db = t.db();
    let mut first = Broker::start(&db, &[]);
    assert_exit(&cli(&db, &["exec", SCHEMA]), 0);
    assert_exit(&cli(&db, &["shutdown"]), 0);
    first.wait_exit(Duration::from_secs(20));
    // This broker aborts right after committing the stream, before answering.
    let mut crashing = Broker::spawn_with(&db, &[], |c| {
        c.env("LITEBROKER_FAILPOINT", "crash-after-commit:1");
    })
    .ready();
    let id = litebroker_client::new_request_id();
    let opts = || WriteOptions { request_id: Some(id), ..WriteOptions::default() };
    let mut c = Client::connect(&db).unwrap();
    let err = c.execute_many_with(INSERT, rows(1000), opts()).unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost { sent: true, .. }), "{err}");
    assert!(err.to_string().contains("send the same rows again with request id"), "{err}");
    assert!(crashing.wait_exit(Duration::from_secs(30)).is_some(), "the failpoint did not fire");
    assert_eq!(count(&db), 1000, "the stream had committed");

    let _b = Broker::start(&db, &[]);
    let mut c = Client::connect(&db).unwrap();
    let s = c.execute_many_with(INSERT, rows(1000), opts()).expect("answered from the record");
    assert_eq!((s.rows, s.changes, s.last_insert_rowid), (1000, 1000, 1000));
    assert_eq!(count(&db), 1000, "applied once");
    let stats = json_out(&cli(&db, &["--json", "stats"]));
    assert_eq!(stats["broker"]["deduplicated"], 1, "{stats}");
}
