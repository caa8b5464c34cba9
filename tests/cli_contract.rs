//! The `litebroker` CLI's contract with scripts: how parameters are typed, which
//! exit code each failure gets (and its JSON document with `--json`), what `exec`
//! and `batch` print, and that `status`, `stats` and `doctor` say when a guarantee
//! is off.

use std::path::Path;

use litebroker_tests::*;
use serde_json::{json, Value as Json};

/// `(value, typeof(value))` of every row of `codes`, in insertion order.
fn codes(db: &Path) -> Vec<(String, String)> {
    let c = open_ro(db);
    let mut st = c.prepare("SELECT quote(c), typeof(c) FROM codes ORDER BY rowid").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

#[test]
fn parameters_keep_what_was_typed_and_hyphens_are_parameters() {
    let t = TestDir::new();
    let db = t.db();
    let _b = Broker::start(&db, &[]);
    assert_exit(&cli(&db, &["exec", "CREATE TABLE codes (c UNIQUE)"]), 0);
    // Two 20-digit barcodes: as REALs they would round to the same number and collide.
    for code in ["12345678901234567890", "12345678901234567891", "-99999999999999999999"] {
        assert_exit(&cli(&db, &["exec", "INSERT INTO codes VALUES (?)", code]), 0);
    }
    // Everything after the SQL is a parameter, even what looks like a flag.
    for p in ["-5", "-1.5e3", "4.5", "-", "--x", "--json", "--", "--help", "\"--y\"", "9223372036854775807"] {
        let o = cli(&db, &["exec", "INSERT INTO codes VALUES (?)", p]);
        assert_exit(&o, 0);
    }
    let text = |s: &str| (format!("'{s}'"), "text".to_owned());
    assert_eq!(
        codes(&db),
        vec![
            text("12345678901234567890"),
            text("12345678901234567891"),
            text("-99999999999999999999"),
            ("-5".to_owned(), "integer".to_owned()),
            ("-1500.0".to_owned(), "real".to_owned()),
            ("4.5".to_owned(), "real".to_owned()),
            text("-"),
            text("--x"),
            text("--json"),
            text("--"),
            text("--help"),
            text("--y"),
            ("9223372036854775807".to_owned(), "integer".to_owned()),
        ]
    );
    // query takes its parameters the same way; flags go before the SQL.
    let o = cli(
        &db,
        &["--json", "query", "SELECT typeof(?), typeof(?), ?", "-7", "12345678901234567890", "--json"],
    );
    assert_exit(&o, 0);
    assert_eq!(json_out(&o)["rows"], json!([["integer", "text", "--json"]]));
}

#[test]
fn usage_errors_exit_2_with_one_json_document() {
    let t = TestDir::new();
    let db = t.db();
    // No broker is needed to refuse these.
    let missing = t.path().join("missing.sql");
    let msg = assert_json_error(&cli(&db, &["--json", "batch", missing.to_str().unwrap()]), 2, "usage");
    assert!(msg.contains("missing.sql"), "{msg}");
    let o = cli(&db, &["batch", missing.to_str().unwrap()]);
    assert_exit(&o, 2);
    assert!(stdout(&o).is_empty() && stderr(&o).contains("cannot read"), "{}", stderr(&o));

    let comments = t.path().join("comments.sql");
    std::fs::write(&comments, "-- nothing to do yet\n/* not even this */ ;\n").unwrap();
    let msg = assert_json_error(&cli(&db, &["--json", "batch", comments.to_str().unwrap()]), 2, "usage");
    assert!(msg.contains("no statements"), "{msg}");
    let empty = t.path().join("empty.sql");
    std::fs::write(&empty, "\n  \n").unwrap();
    assert_json_error(&cli(&db, &["--json", "batch", empty.to_str().unwrap()]), 2, "usage");
    assert_json_error(
        &cli_with_stdin(&db, &["--json", "batch", "-"], Some("-- only a comment\n")),
        2,
        "usage",
    );
    assert_json_error(&cli(&db, &["--json", "exec", "-- only a comment"]), 2, "usage");

    // clap's own refusals come as the same document.
    let msg = assert_json_error(&cli(&db, &["--json", "exec"]), 2, "usage");
    assert!(msg.contains("<SQL>"), "{msg}");
    assert_json_error(&cli(&db, &["--json", "frobnicate"]), 2, "usage");
    assert_json_error(&cli(&db, &["--json", "checkpoint", "sideways"]), 2, "usage");
    let o = cli(&db, &["frobnicate"]);
    assert_exit(&o, 2);
    assert!(stdout(&o).is_empty(), "without --json nothing goes to stdout: {}", stdout(&o));
    // Help is not an error.
    let o = cli(&db, &["--json", "--help"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("Exit codes:") && stdout(&o).contains("6 limit exceeded"), "{}", stdout(&o));
}

#[test]
fn limits_exit_6_not_the_sql_error_code() {
    let t = TestDir::new();
    let db = t.db();
    let _b = Broker::start(&db, &["--max-params", "2", "--max-rows", "3", "--max-clients", "2"]);
    assert_exit(&cli(&db, &["exec", "CREATE TABLE t (v)"]), 0);
    let msg = assert_json_error(
        &cli(&db, &["--json", "exec", "SELECT ?, ?, ?", "1", "2", "3"]),
        6,
        "limit_exceeded",
    );
    assert!(msg.contains("--max-params"), "{msg}");
    let o = cli(
        &db,
        &[
            "exec",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) SELECT i FROM n",
        ],
    );
    assert_exit(&o, 6);
    assert!(stderr(&o).contains("--max-rows"), "{}", stderr(&o));
    // Too many clients: two held, the CLI is the third.
    // The broker may still count the CLI's last connection for a moment.
    let mut held = Vec::new();
    let connected = wait_until(std::time::Duration::from_secs(10), || {
        if let Ok(c) = litebroker_client::Client::connect(&db) {
            held.push(c);
        }
        held.len() == 2
    });
    assert!(connected, "two clients could not connect");
    let msg =
        assert_json_error(&cli(&db, &["--json", "exec", "INSERT INTO t VALUES (1)"]), 6, "limit_exceeded");
    assert!(msg.contains("too many clients"), "{msg}");
    drop(held);
    // A real SQL error keeps exit 1 (once the broker has seen the two held
    // connections close: until then the CLI is still one too many).
    let mut o = cli(&db, &["--json", "exec", "INSERT INTO nowhere VALUES (1)"]);
    wait_until(std::time::Duration::from_secs(10), || {
        o = cli(&db, &["--json", "exec", "INSERT INTO nowhere VALUES (1)"]);
        !stdout(&o).contains("too many clients")
    });
    assert_json_error(&o, 1, "sql");
    assert_eq!(query_i64(&db, "SELECT count(*) FROM t"), 0);
}

#[test]
fn exec_and_batch_print_their_result_once() {
    let t = TestDir::new();
    let db = t.db();
    let _b = Broker::start(&db, &[]);
    assert_exit(&cli(&db, &["exec", "CREATE TABLE t (id INTEGER PRIMARY KEY, v)"]), 0);
    let file = t.path().join("load.sql");
    std::fs::write(&file, "INSERT INTO t (v) VALUES ('a');\nINSERT INTO t (v) VALUES ('b');\n").unwrap();
    let o = cli(&db, &["batch", file.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "changes: 2, last insert rowid: 2, statements: 2\n");

    // Rows alone: no counters after the table (the rowid would be the last insert's).
    let o = cli(&db, &["exec", "SELECT v FROM t ORDER BY id"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "v\n-\na\nb\n(2 rows)\n");
    // Rows of a statement that changed something: table, then counters.
    let o = cli(&db, &["exec", "UPDATE t SET v = upper(v) WHERE id = 1 RETURNING v"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "v\n-\nA\n(1 row)\nchanges: 1, last insert rowid: 2\n");
    // JSON keeps every field.
    let o = cli(&db, &["--json", "exec", "SELECT count(*) AS n FROM t"]);
    assert_exit(&o, 0);
    assert_eq!(json_out(&o), json!({"changes": 0, "last_insert_rowid": 2, "columns": ["n"], "rows": [[2]]}));
}

#[test]
fn status_stats_and_doctor_say_when_exactly_once_is_off_and_why() {
    let t = TestDir::new();
    let db = t.db();
    let mut b = Broker::start(&db, &[]);
    let o = cli(&db, &["status"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("exactly-once: on") && stdout(&o).contains("writes:       accepted"),
        "{}",
        stdout(&o)
    );
    let o = cli(&db, &["--json", "status"]);
    assert_eq!(
        json_out(&o)["health"],
        json!({"exactly_once": true, "exactly_once_off": null, "writes_stopped": null})
    );
    let o = cli(&db, &["--json", "doctor"]);
    let j = json_out(&o);
    let finding = |j: &Json, check: &str| {
        j["findings"].as_array().unwrap().iter().find(|f| f["check"] == check).cloned().unwrap_or(Json::Null)
    };
    assert_eq!(finding(&j, "exactly_once")["status"], "ok", "{j}");
    assert_eq!(finding(&j, "writes")["status"], "ok", "{j}");
    assert_exit(&cli(&db, &["shutdown"]), 0);
    b.wait_exit(std::time::Duration::from_secs(20)).expect("broker stops");

    let _b = Broker::start(&db, &["--request-id-retention-hours", "0"]);
    let why = "disabled by --request-id-retention-hours 0";
    let o = cli(&db, &["status"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains(&format!("exactly-once: OFF: {why}")), "{}", stdout(&o));
    let j = json_out(&cli(&db, &["--json", "status"]));
    assert_eq!(j["health"]["exactly_once"], false, "{j}");
    assert_eq!(j["health"]["exactly_once_off"], why, "{j}");
    let o = cli(&db, &["stats"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains(&format!("Exactly-once writes: OFF: {why}")), "{}", stdout(&o));
    assert!(stdout(&o).contains("Writes: accepted"), "{}", stdout(&o));
    let j = json_out(&cli(&db, &["--json", "stats"]));
    assert_eq!(j["broker"]["health"]["exactly_once_off"], why, "{j}");

    let o = cli(&db, &["--json", "doctor"]);
    assert_exit(&o, 5);
    let j = json_out(&o);
    let f = finding(&j, "exactly_once");
    assert_eq!(f["status"], "problem", "{j}");
    assert!(f["detail"].as_str().unwrap().contains(why), "{f}");
    assert!(f["action"].as_str().unwrap().contains("without --request-id-retention-hours 0"), "{f}");
    let o = cli(&db, &["doctor"]);
    assert_exit(&o, 5);
    assert!(stdout(&o).contains("[problem]  exactly_once: off"), "{}", stdout(&o));
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "needs /proc to see the broker's open files, and deleting files a process holds open (not possible on Windows)"
)]
fn doctor_finds_a_wal_deleted_under_the_broker() {
    let t = TestDir::new();
    let db = t.db();
    let b = Broker::start(&db, &[]);
    assert_exit(&cli(&db, &["exec", "CREATE TABLE t (v); INSERT INTO t VALUES (1)"]), 0);
    let j = json_out(&cli(&db, &["--json", "doctor"]));
    let wal_files = |j: &Json| {
        j["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == "wal_files")
            .cloned()
            .expect("wal_files")
    };
    assert_eq!(wal_files(&j)["status"], "ok", "{j}");
    assert!(wal_files(&j)["detail"].as_str().unwrap().contains("app.db-wal"), "{j}");

    let data = db.parent().unwrap();
    std::fs::remove_file(data.join("app.db-wal")).unwrap();
    std::fs::remove_file(data.join("app.db-shm")).unwrap();
    // The broker goes on writing to the deleted WAL, unless it notices and stops
    // writes (exit 3), which the finding below must not depend on.
    let o = cli(&db, &["exec", "INSERT INTO t VALUES (2)"]);
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}{}", stdout(&o), stderr(&o));

    let o = cli(&db, &["--json", "doctor"]);
    assert_exit(&o, 5);
    let f = wal_files(&json_out(&o));
    assert_eq!(f["status"], "problem", "{f}");
    let detail = f["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("pid {}", b.pid())), "{detail}");
    assert!(detail.contains("app.db-wal (deleted)") && detail.contains("app.db-shm (deleted)"), "{detail}");
    assert!(f["action"].as_str().unwrap().contains("litebroker shutdown"), "{f}");
    let o = cli(&db, &["doctor"]);
    assert_exit(&o, 5);
    assert!(stdout(&o).contains("[problem]  wal_files:"), "{}", stdout(&o));
}

/// Deletes files the broker holds open, which Windows does not allow.
#[cfg(unix)]
#[test]
fn writes_refused_by_the_broker_exit_3_with_its_reason() {
    let t = TestDir::new();
    let db = t.db();
    let _b = Broker::start(&db, &[]);
    assert_exit(&cli(&db, &["exec", "CREATE TABLE t (v); INSERT INTO t VALUES (1)"]), 0);
    // In the database file, so that readers still see it once the WAL is gone.
    assert_exit(&cli(&db, &["checkpoint"]), 0);
    let data = db.parent().unwrap();
    std::fs::remove_file(data.join("app.db-wal")).unwrap();
    std::fs::remove_file(data.join("app.db-shm")).unwrap();
    let ok = wait_until(std::time::Duration::from_secs(10), || {
        cli(&db, &["exec", "INSERT INTO t VALUES (2)"]).status.code() == Some(3)
    });
    assert!(ok, "writes were not refused");
    let msg =
        assert_json_error(&cli(&db, &["--json", "exec", "INSERT INTO t VALUES (3)"]), 3, "writes_stopped");
    assert!(msg.contains("Reads still work"), "{msg}");
    let j = json_out(&cli(&db, &["--json", "status"]));
    assert!(j["health"]["writes_stopped"].is_string(), "{j}");
    assert_exit(&cli(&db, &["query", "SELECT count(*) FROM t"]), 0);
}
