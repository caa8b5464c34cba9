//! Streamed batches, through the real processes: `litebroker batch FILE` and
//! `Client::execute_batch_stream` send statements in parts that run while they
//! arrive, in one transaction with one summarising answer. Whole or nothing —
//! also when the client dies mid-stream — exactly once under one request id,
//! the broker's memory bounded by the parts, not the file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use litebroker_client::protocol::{Hello, Request, Response, WriteOptions};
use litebroker_client::{Client, ClientError, ErrorKind, Statement};
use litebroker_tests::*;

/// Statements of the big file.
const ROWS: u64 = 200_000;

/// Bytes of payload in each statement of the big file: 200,000 statements make
/// about 200 MB, three times the broker's page cache (`cache_size` 64 MB, which
/// a transaction this size fills whatever way its statements arrive).
const BIG_PAYLOAD: usize = 900;

const SCHEMA: &str = "CREATE TABLE big (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, payload TEXT);";

fn insert(seq: u64) -> String {
    insert_sized(seq, 40)
}

fn insert_sized(seq: u64, payload: usize) -> String {
    format!("INSERT INTO big (seq, payload) VALUES ({seq}, '{seq:0>12} {}');\n", "x".repeat(payload))
}

fn count(db: &Path) -> i64 {
    query_i64(db, "SELECT count(*) FROM big")
}

fn setup() -> (TestDir, Broker) {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &[]);
    assert_exit(&cli(&t.db(), &["exec", SCHEMA]), 0);
    (t, b)
}

/// Writes `n` INSERTs to `path`, statement `bad_at` (if any) repeating seq 0.
fn write_file(path: &Path, n: u64, bad_at: Option<u64>) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        let seq = if Some(i) == bad_at { 0 } else { i };
        f.write_all(insert_sized(seq, BIG_PAYLOAD).as_bytes()).unwrap();
    }
    f.flush().unwrap();
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads the broker's peak RSS (VmHWM) from /proc, which only Linux has"
)]
fn a_big_file_streams_in_whole_with_the_brokers_memory_far_below_its_size() {
    let (t, b) = setup();
    let file = t.path().join("big.sql");
    write_file(&file, ROWS, None);
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size > 180 << 20, "the file is about 200 MB: {size}");
    let started = Instant::now();
    let out = cli(&t.db(), &["--timeout", "300", "--json", "batch", file.to_str().unwrap()]);
    assert_exit(&out, 0);
    let doc = json_out(&out);
    assert_eq!(doc["statements"], ROWS, "{doc}");
    assert_eq!(doc["changes"], ROWS, "{doc}");
    assert_eq!(doc["last_insert_rowid"], ROWS, "{doc}");
    assert_eq!(count(&t.db()), ROWS as i64);
    // Peak resident memory of the broker over its whole life: its page cache
    // (up to 64 MB) and two parts of the stream, not the file.
    let hwm_kib = proc_status_field(b.pid(), "VmHWM").expect("VmHWM (Linux)");
    eprintln!(
        "{size} bytes, {ROWS} statements in {:.1} s; broker VmHWM {} KiB",
        started.elapsed().as_secs_f64(),
        hwm_kib
    );
    assert!(hwm_kib < 110 * 1024, "the broker's peak RSS {hwm_kib} KiB is bounded by parts, not by the file");
    // The text output keeps the changes / last rowid shape, with the count.
    let out = cli(&t.db(), &["batch", "-"]);
    assert_exit(&out, 2);
    let out = cli_with_stdin(&t.db(), &["batch", "-"], Some("DELETE FROM big WHERE seq < 10;"));
    assert_exit(&out, 0);
    assert_eq!(stdout(&out).trim(), format!("changes: 10, last insert rowid: {ROWS}, statements: 1"));
}

#[test]
fn a_failing_statement_names_its_line_and_nothing_is_applied() {
    let (t, _b) = setup();
    let file = t.path().join("bad.sql");
    // A comment and a statement over two lines shift statements off their lines.
    let mut text = String::from("-- a load\nINSERT INTO big (seq, payload)\n  VALUES (-1, 'first');\n");
    for i in 0..30_000u64 {
        text.push_str(&insert(if i == 25_000 { 7 } else { i }));
    }
    std::fs::write(&file, &text).unwrap();
    // Statement 25,001 (the two-line one is statement 0) starts on line 25,004.
    let out = cli(&t.db(), &["--json", "batch", file.to_str().unwrap()]);
    assert_exit(&out, 1);
    let (_, message) = error_of(&out);
    assert!(message.contains("bad.sql line 25004:"), "{message}");
    assert!(message.contains("UNIQUE constraint failed: big.seq"), "{message}");
    assert_eq!(count(&t.db()), 0, "nothing of the batch was applied");
    // A syntax error: exit code of an SQL error, SQLite's message.
    let out = cli_with_stdin(
        &t.db(),
        &["--json", "batch", "-"],
        Some("INSERT INTO big (seq) VALUES (1);\n\nINSER big;\n"),
    );
    assert_exit(&out, 1);
    let (kind, message) = error_of(&out);
    assert_eq!(kind, "sql");
    assert!(message.contains("stdin line 3:") && message.contains("syntax error"), "{message}");
    // An empty file stays a usage error.
    std::fs::write(&file, "-- nothing\n;\n").unwrap();
    assert_exit(&cli(&t.db(), &["batch", file.to_str().unwrap()]), 2);
    assert_eq!(count(&t.db()), 0);
}

#[test]
fn a_client_killed_mid_stream_applies_nothing_and_the_broker_serves_on() {
    let (t, b) = setup();
    let db = t.db();
    let mut cmd = Command::new(bin("litebroker"));
    cmd.arg("--db").arg(&db).args(["--timeout", "120", "batch", "-"]);
    let mut batch = Proc::spawn(cmd);
    // Parts of 2048 statements go out as the file is read; the rest never comes.
    for i in 0..20_000 {
        batch.send(insert(i).trim_end());
    }
    let mut status = b.client("status");
    let deadline = Instant::now() + Duration::from_secs(60);
    while status.status().unwrap().writer_holder.is_none() {
        assert!(Instant::now() < deadline, "the stream never took the writer");
        std::thread::sleep(Duration::from_millis(20));
    }
    batch.kill9();
    // The broker rolls the dead client's stream back and serves the next write.
    assert_exit(&cli(&db, &["--timeout", "30", "exec", "INSERT INTO big (seq) VALUES (-1)"]), 0);
    assert_eq!(count(&db), 1, "only the later write");
}

#[test]
fn a_stream_resent_after_a_lost_answer_is_applied_once() {
    let t = TestDir::new();
    let db = t.db();
    // This broker aborts right after its first commit, the stream's, before answering.
    let mut crashing = Broker::spawn_with(&db, &[], |c| {
        c.env("LITEBROKER_FAILPOINT", "crash-after-commit:1");
    })
    .ready();
    let id = litebroker_client::new_request_id();
    let opts = || WriteOptions { request_id: Some(id), ..WriteOptions::default() };
    // The schema travels in the stream: one transaction, one commit.
    let statements = || {
        std::iter::once(SCHEMA.to_owned()).chain((0..5000).map(insert)).map(|s| Ok(Statement::new(s, vec![])))
    };
    let mut c = Client::connect(&db).unwrap();
    let err = c.execute_batch_stream_with(statements(), opts()).unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost { sent: true, .. }), "{err}");
    assert!(err.to_string().contains("send the same statements again with request id"), "{err}");
    assert!(crashing.wait_exit(Duration::from_secs(30)).is_some(), "the failpoint did not fire");
    assert_eq!(count(&db), 5000, "the stream had committed");

    let _b = Broker::start(&db, &[]);
    let mut c = Client::connect(&db).unwrap();
    let s = c.execute_batch_stream_with(statements(), opts()).expect("answered from the record");
    assert_eq!((s.rows, s.changes, s.last_insert_rowid), (5001, 5000, 5000));
    assert_eq!(count(&db), 5000, "applied once");
    let stats = json_out(&cli(&db, &["--json", "stats"]));
    assert_eq!(stats["broker"]["deduplicated"], 1, "{stats}");
}

#[test]
#[cfg_attr(litebroker_wine, ignore = "drives the sqlite3 CLI, a Linux program Wine cannot start")]
fn a_wrapped_file_and_a_sqlite3_dump_load() {
    let (t, b) = setup();
    let db = t.db();
    // `BEGIN … COMMIT` around statements that span several parts.
    let mut text = String::from("BEGIN TRANSACTION;\n");
    for i in 0..5000 {
        text.push_str(&insert(i));
    }
    text.push_str("COMMIT;\n");
    let out = cli_with_stdin(&db, &["--json", "batch", "-"], Some(&text));
    assert_exit(&out, 0);
    assert_eq!(json_out(&out)["statements"], 5002);
    assert_eq!(count(&db), 5000);
    // A BEGIN left open applies nothing.
    let out = cli_with_stdin(&db, &["batch", "-"], Some("BEGIN;\nDELETE FROM big;\n"));
    assert_exit(&out, 1);
    assert_eq!(count(&db), 5000);

    // `sqlite3 .dump` of a database with a foreign key, an AUTOINCREMENT table,
    // an index, a trigger and a view, into an empty database.
    let src = t.path().join("src.db");
    let setup_src = "PRAGMA foreign_keys=ON; CREATE TABLE p(id INTEGER PRIMARY KEY, n TEXT); \
        CREATE TABLE c(id INTEGER PRIMARY KEY, p_id REFERENCES p(id)); \
        INSERT INTO p VALUES (1, 'x'), (2, 'semi;colon'); INSERT INTO c VALUES (1, 1), (2, 2); \
        CREATE INDEX ci ON c(p_id); \
        CREATE TRIGGER tr AFTER INSERT ON c BEGIN UPDATE p SET n = n || '!' WHERE id = NEW.p_id; END; \
        CREATE TABLE s(id INTEGER PRIMARY KEY AUTOINCREMENT, v); INSERT INTO s(v) VALUES (1); \
        CREATE VIEW v AS SELECT * FROM p;";
    let made = Command::new("sqlite3").arg(&src).arg(setup_src).output().expect("the sqlite3 CLI");
    assert!(made.status.success(), "{made:?}");
    let dump = Command::new("sqlite3").arg(&src).arg(".dump").output().unwrap();
    let dump = String::from_utf8(dump.stdout).unwrap();
    assert!(dump.starts_with("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;"), "{dump}");
    drop(b);
    let target = t.path().join("copy.db");
    let _b2 = Broker::start(&target, &[]);
    let out = cli_with_stdin(&target, &["batch", "-"], Some(&dump));
    assert_exit(&out, 0);
    assert_eq!(
        query_texts(&target, "SELECT n FROM p ORDER BY id"),
        ["x", "semi;colon"],
        "the trigger did not fire again on load"
    );
    assert_eq!(query_i64(&target, "SELECT seq FROM sqlite_sequence WHERE name = 's'"), 1);
    assert_eq!(query_i64(&target, "SELECT count(*) FROM v"), 2);
    assert_eq!(foreign_key_violations(&target), 0);
    // A dump whose rows break a foreign key fails at COMMIT: the keys are
    // checked once, where sqlite3 would load it unchecked.
    let broken = dump.replace("INSERT INTO p VALUES(2,", "INSERT INTO p VALUES(3,");
    let other = t.path().join("other.db");
    let _b3 = Broker::start(&other, &[]);
    let out = cli_with_stdin(&other, &["batch", "-"], Some(&broken));
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("FOREIGN KEY constraint failed"), "{}", stderr(&out));
    assert_eq!(
        query_i64(&other, "SELECT count(*) FROM sqlite_schema WHERE name IN ('p', 'c', 's', 'v')"),
        0,
        "nothing of it was applied"
    );
}

#[test]
fn watchers_see_one_event_at_the_streams_commit() {
    let (t, _b) = setup();
    let db = litebroker_client::Db::open(t.db()).unwrap();
    let mut watch = db.watch(&["big"]);
    watch.subscribe().unwrap();
    let s = db.execute_batch_stream((0..5000).map(|i| Statement::new(insert(i), vec![]))).unwrap();
    assert_eq!(s.rows, 5000);
    let e = watch.next_timeout(Duration::from_secs(10)).unwrap().expect("the commit's event");
    assert_eq!(e.table("big").map(|c| c.inserted), Some(5000), "{e:?}");
    assert!(watch.next_timeout(Duration::from_millis(500)).unwrap().is_none(), "one event for the stream");
}

#[test]
fn a_minor_2_client_is_refused_a_streamed_batch() {
    let (_t, b) = setup();
    let raw = RawConn::connect(&b.socket);
    raw.handshake_with(Hello { minor: 2, ..hello("old") });
    let (kind, message) =
        answer_error(&raw.round_trip(&Request::BatchBegin { opts: WriteOptions::default() }));
    assert_eq!(kind, ErrorKind::Protocol);
    assert!(message.contains("the batch-begin request needs protocol 1.3"), "{message}");
    // The connection serves on.
    assert!(matches!(raw.round_trip(&Request::Ping), Response::Pong));
}

#[test]
fn the_api_streams_statements_and_names_the_failing_index() {
    let (t, b) = setup();
    let mut c = b.client("api");
    let mut many = String::new();
    for i in 0..3u64 {
        let _ = write!(many, "{}", insert(100_000 + i));
    }
    // One statement text holding three, then a RETURNING whose rows are dropped.
    let stmts = [
        Statement::new(many, vec![]),
        Statement::new("INSERT INTO big (seq) VALUES (?) RETURNING id", vec![7.into()]),
    ];
    let s = c.execute_batch_stream(stmts).unwrap();
    assert_eq!((s.rows, s.changes, s.last_insert_rowid), (2, 4, 4));
    let bad =
        (0..10_000u64).map(|i| Statement::new(insert(if i == 9_000 { 7 } else { 200_000 + i }), vec![]));
    let err = c.execute_batch_stream(bad).unwrap_err();
    let ClientError::StatementFailed { index, ref error } = err else {
        panic!("not a statement failure: {err}")
    };
    assert_eq!(index, 9_000);
    assert_eq!(error.kind, ErrorKind::Constraint);
    assert!(error.message.contains("statement 9000 (counting from 0)"), "{}", error.message);
    assert_eq!(count(&t.db()), 4);
}
