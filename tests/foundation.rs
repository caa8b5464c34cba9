//! The walking skeleton end to end: real `litebrokerd` and `litebroker` processes,
//! real files in temp dirs.

use std::path::Path;
use std::time::{Duration, Instant};

use litebroker_tests::*;

fn create_table(db: &Path) {
    let o = cli(db, &["exec", "CREATE TABLE skus (id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE, qty INTEGER NOT NULL DEFAULT 0)"]);
    assert_exit(&o, 0);
}

#[test]
fn exec_then_query_round_trip() {
    let t = TestDir::new();
    let _b = Broker::start(&t.db(), &[]);
    create_table(&t.db());
    let o = cli(&t.db(), &["--json", "exec", "INSERT INTO skus (sku, qty) VALUES (?, ?)", "A1", "5"]);
    assert_exit(&o, 0);
    assert_eq!(json_out(&o), serde_json::json!({"changes": 1, "last_insert_rowid": 1}));
    // "42" as a JSON string stays text; 4.5 is a real; null is NULL.
    let o = cli(&t.db(), &["exec", "INSERT INTO skus (sku, qty) VALUES (?, ?)", "\"42\"", "7"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("changes: 1"), "{}", stdout(&o));
    let o = cli(&t.db(), &["--json", "query", "SELECT sku, qty, typeof(sku) FROM skus ORDER BY id"]);
    assert_exit(&o, 0);
    assert_eq!(
        json_out(&o),
        serde_json::json!({"columns": ["sku", "qty", "typeof(sku)"], "rows": [["A1", 5, "text"], ["42", 7, "text"]]})
    );
    let o = cli(&t.db(), &["query", "SELECT sku FROM skus WHERE qty > ?", "6"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("42") && !stdout(&o).contains("A1"), "{}", stdout(&o));
}

#[test]
fn returning_rows_come_back() {
    let t = TestDir::new();
    let _b = Broker::start(&t.db(), &[]);
    create_table(&t.db());
    let o = cli(
        &t.db(),
        &["--json", "exec", "INSERT INTO skus (sku, qty) VALUES ('B1', 3), ('B2', 4) RETURNING id, sku"],
    );
    assert_exit(&o, 0);
    let j = json_out(&o);
    assert_eq!(j["columns"], serde_json::json!(["id", "sku"]));
    assert_eq!(j["rows"], serde_json::json!([[1, "B1"], [2, "B2"]]));
    assert_eq!(j["changes"], 2);
}

#[test]
fn bad_sql_exits_1_with_sqlite_message() {
    let t = TestDir::new();
    let _b = Broker::start(&t.db(), &[]);
    let o = cli(&t.db(), &["exec", "INSER INTO nowhere VALUES (1)"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("syntax error"), "{}", stderr(&o));
    let o = cli(&t.db(), &["--json", "exec", "INSERT INTO nowhere VALUES (1)"]);
    assert_exit(&o, 1);
    assert_eq!(json_out(&o)["error"]["kind"], "sql");
    assert!(stderr(&o).contains("no such table: nowhere"), "{}", stderr(&o));
}

#[test]
fn constraint_violation_exits_1_and_writes_nothing() {
    let t = TestDir::new();
    let _b = Broker::start(&t.db(), &[]);
    create_table(&t.db());
    assert_exit(&cli(&t.db(), &["exec", "INSERT INTO skus (sku) VALUES ('A1')"]), 0);
    // The second statement violates UNIQUE: the first must not survive either.
    let o = cli(
        &t.db(),
        &["--json", "exec", "INSERT INTO skus (sku) VALUES ('A2'); INSERT INTO skus (sku) VALUES ('A1')"],
    );
    assert_exit(&o, 1);
    assert_eq!(json_out(&o)["error"]["kind"], "constraint");
    assert!(stderr(&o).contains("UNIQUE constraint failed: skus.sku"), "{}", stderr(&o));
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM skus"), 1);
    // The same through `batch` from stdin.
    let o = cli_with_stdin(
        &t.db(),
        &["batch"],
        Some("INSERT INTO skus (sku) VALUES ('A3');\nINSERT INTO skus (sku) VALUES (NULL);\n"),
    );
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("NOT NULL constraint failed"), "{}", stderr(&o));
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM skus"), 1);
}

#[test]
fn batch_file_is_one_transaction_and_accepts_begin_commit() {
    let t = TestDir::new();
    let _b = Broker::start(&t.db(), &[]);
    create_table(&t.db());
    let file = t.path().join("load.sql");
    std::fs::write(
        &file,
        "BEGIN IMMEDIATE;\nINSERT INTO skus (sku, qty) VALUES ('X', 1);\nUPDATE skus SET qty = qty + 1;\nCOMMIT;\n",
    )
    .unwrap();
    let o = cli(&t.db(), &["--json", "batch", file.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_eq!(json_out(&o)["changes"], 2);
    assert_eq!(query_i64(&t.db(), "SELECT qty FROM skus WHERE sku = 'X'"), 2);
}

#[test]
fn no_broker_reads_work_and_writes_exit_3_fast() {
    let t = TestDir::new();
    // Create a database, then stop its broker.
    let mut b = Broker::start(&t.db(), &[]);
    create_table(&t.db());
    assert_exit(&cli(&t.db(), &["exec", "INSERT INTO skus (sku) VALUES ('R1')"]), 0);
    assert_exit(&cli(&t.db(), &["shutdown"]), 0);
    assert_eq!(b.wait_exit(Duration::from_secs(20)).and_then(|s| s.code()), Some(0));

    let o = cli(&t.db(), &["--json", "query", "SELECT sku FROM skus"]);
    assert_exit(&o, 0);
    assert_eq!(json_out(&o)["rows"], serde_json::json!([["R1"]]));

    let started = Instant::now();
    let o = cli(&t.db(), &["exec", "INSERT INTO skus (sku) VALUES ('R2')"]);
    let took = started.elapsed();
    assert_exit(&o, 3);
    assert!(took < Duration::from_secs(1), "exec took {took:?} without a broker");
    let err = stderr(&o);
    assert!(err.contains("read-only mode"), "{err}");
    assert!(err.contains("litebrokerd --db"), "{err}");
}

#[test]
fn second_broker_exits_3_naming_the_first() {
    let t = TestDir::new();
    let first = Broker::start(&t.db(), &[]);
    let mut second = Broker::spawn(&t.db(), &[]);
    let status = second.wait_exit(Duration::from_secs(20)).expect("second broker exits");
    assert_eq!(status.code(), Some(3), "log:\n{}", second.log());
    let log = second.log();
    assert!(log.contains(&format!("pid {}", first.pid())), "{log}");
    assert!(log.contains(&first.socket), "{log}");
}

#[cfg(unix)]
#[test]
fn sigterm_is_a_clean_shutdown_that_removes_the_socket() {
    let t = TestDir::new();
    let mut b = Broker::start(&t.db(), &[]);
    create_table(&t.db());
    assert!(Path::new(&b.socket).exists());
    b.sigterm();
    let status = b.wait_exit(Duration::from_secs(20)).expect("broker exits on SIGTERM");
    assert_eq!(status.code(), Some(0), "log:\n{}", b.log());
    assert!(!Path::new(&b.socket).exists(), "socket left behind");
    assert!(b.log().contains("stopped cleanly"));
}

#[cfg(unix)]
#[test]
fn sigkill_leaves_a_stale_socket_that_the_next_start_recovers() {
    let t = TestDir::new();
    let mut b = Broker::start(&t.db(), &[]);
    create_table(&t.db());
    let socket = b.socket.clone();
    b.kill9();
    assert!(Path::new(&socket).exists(), "SIGKILL should leave the socket file");
    let b2 = Broker::start(&t.db(), &[]);
    assert_eq!(b2.socket, socket);
    assert!(b2.log().contains("removed stale socket"), "{}", b2.log());
    assert_exit(&cli(&t.db(), &["exec", "INSERT INTO skus (sku) VALUES ('after')"]), 0);
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM skus"), 1);
}

#[test]
fn status_reports_pid_socket_and_protocol() {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &[]);
    let o = cli(&t.db(), &["--json", "status"]);
    assert_exit(&o, 0);
    let j = json_out(&o);
    assert_eq!(j["pid"], b.pid());
    assert_eq!(j["socket"], b.socket.as_str());
    assert_eq!(j["protocol"], litebroker_protocol::PROTOCOL_VERSION);
    assert!(j["db"].as_str().unwrap().ends_with("app.db"));
}
