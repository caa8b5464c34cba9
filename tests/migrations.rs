//! Schema migrations through the broker: applied once, in order, each in one
//! transaction; concurrent callers wait; an app built for a newer schema is told
//! and its writes are refused until the migrations ran.

use std::path::Path;
use std::process::{Command, Stdio};

use litebroker_client::{Client, ConnectOptions, ErrorKind, Migration};
use litebroker_tests::*;

fn write_migrations(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, sql) in files {
        std::fs::write(dir.join(name), sql).unwrap();
    }
}

const INIT: &str = "CREATE TABLE skus (id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE, description TEXT);
CREATE TABLE transactions (id INTEGER PRIMARY KEY, sku_id INTEGER NOT NULL REFERENCES skus(id), qty INTEGER NOT NULL);";
const SALES: &str = "CREATE TABLE sales (date TEXT NOT NULL, sku TEXT NOT NULL REFERENCES skus(sku), qty INTEGER NOT NULL, UNIQUE (date, sku));";

#[test]
fn migrate_applies_each_version_once_in_order() {
    let t = TestDir::new();
    let _b = Broker::start(&t.db(), &[]);
    let dir = t.path().join("migrations");
    write_migrations(&dir, &[("0001_init.sql", INIT), ("0002_sales.sql", SALES), ("notes.txt", "ignored")]);
    let o = cli(&t.db(), &["migrate", dir.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o).trim(), "Migrated from version 0 to 2: applied 1 (init), 2 (sales).");
    assert_eq!(query_i64(&t.db(), "PRAGMA user_version"), 2);
    assert_eq!(
        query_i64(
            &t.db(),
            "SELECT count(*) FROM sqlite_schema WHERE name IN ('skus', 'transactions', 'sales')"
        ),
        3
    );
    let o = cli(&t.db(), &["--json", "migrate", dir.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o).trim(), r#"{"applied":[],"from_version":2,"to_version":2}"#);
}

#[test]
fn concurrent_callers_apply_a_migration_exactly_once() {
    let t = TestDir::new();
    let _b = Broker::start(&t.db(), &[]);
    let dir = t.path().join("migrations");
    // Not idempotent on purpose: applied twice, the log would hold two rows.
    write_migrations(
        &dir,
        &[
            ("0001_init.sql", INIT),
            ("0002_log.sql", "CREATE TABLE migration_log (v TEXT); INSERT INTO migration_log VALUES ('2');"),
        ],
    );
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(bin("litebroker"))
                .args(["--db", t.db().to_str().unwrap(), "--json", "migrate", dir.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied_by = 0;
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_exit(&o, 0);
        let j = json_out(&o);
        assert_eq!(j["to_version"], 2);
        if j["applied"].as_array().unwrap().len() == 2 {
            applied_by += 1;
        } else {
            assert_eq!(j["applied"], serde_json::json!([]), "a caller applied only part: {j}");
        }
    }
    assert_eq!(applied_by, 1, "exactly one caller applies the migrations");
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM migration_log"), 1);
}

#[test]
fn a_failing_migration_rolls_back_and_stops() {
    let t = TestDir::new();
    let _b = Broker::start(&t.db(), &[]);
    let dir = t.path().join("migrations");
    write_migrations(
        &dir,
        &[
            ("0001_init.sql", INIT),
            ("0002_broken.sql", "CREATE TABLE half (x); INSERT INTO nowhere VALUES (1);"),
            ("0003_never.sql", "CREATE TABLE never (x);"),
        ],
    );
    let o = cli(&t.db(), &["migrate", dir.to_str().unwrap()]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("migration 2 (broken) failed and was rolled back")
            && err.contains("no such table: nowhere"),
        "{err}"
    );
    assert!(err.contains("schema version 1"), "{err}");
    assert_eq!(query_i64(&t.db(), "PRAGMA user_version"), 1);
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM sqlite_schema WHERE name IN ('half', 'never')"), 0);
    // Out-of-order versions are refused before anything runs.
    let mut c = Client::connect(t.db()).unwrap();
    let e = c.migrate(&[Migration::new(5, "b", "SELECT 1"), Migration::new(4, "a", "SELECT 1")]).unwrap_err();
    assert!(e.to_string().contains("strictly increasing"), "{e}");
}

#[test]
fn an_app_built_for_a_newer_schema_may_not_write_until_migrated() {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &[]);
    let migrations = [Migration::new(1, "init", INIT), Migration::new(2, "sales", SALES)];
    let mut old = Client::connect(t.db()).unwrap();
    old.migrate(&migrations[..1]).unwrap();

    let opts = ConnectOptions::new(t.db()).client_name("app-v2").expected_schema(2);
    let mut app = Client::connect_with(&opts).unwrap();
    assert_eq!(app.hello().schema_version, 1, "the handshake tells the app the database's version");
    let e = app.execute("INSERT INTO skus (sku) VALUES ('A1')", &[]).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::SchemaMismatch), "{e}");
    assert!(
        e.to_string().contains("built for schema version 2") && e.to_string().contains("at version 1"),
        "{e}"
    );
    assert!(b.log().contains("was built for schema version 2"), "{}", b.log());
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM skus"), 0);

    let r = app.migrate(&migrations).unwrap();
    assert_eq!((r.from_version, r.to_version, r.applied), (1, 2, vec![2]));
    app.execute("INSERT INTO skus (sku) VALUES ('A1')", &[]).expect("writes allowed once migrated");
    // An app built for the current or an older schema writes as before.
    old.execute("INSERT INTO skus (sku) VALUES ('A2')", &[]).unwrap();
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM skus"), 2);
}
