//! Operations through the real binaries: stats, verify, backup/backups/restore,
//! checkpoint (manual, idle, WAL warning) and doctor.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use litebroker_client::{Reader, Value};
use litebroker_tests::*;
use serde_json::Value as Json;

const ROWS: &str = "CREATE TABLE rows (client INTEGER NOT NULL, seq INTEGER NOT NULL, payload TEXT, PRIMARY KEY (client, seq));";

#[test]
fn stats_reports_schema_sizes_rows_and_broker_figures() {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &[]);
    let db = t.db();
    assert_exit(
        &cli(
            &db,
            &[
                "exec",
                "CREATE TABLE skus (id INTEGER PRIMARY KEY, sku TEXT UNIQUE); CREATE TABLE sales (id INTEGER PRIMARY KEY, sku_id REFERENCES skus(id));
                 CREATE INDEX sales_sku ON sales(sku_id); PRAGMA user_version = 3;",
            ],
        ),
        0,
    );
    assert_exit(
        &cli(&db, &["exec", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1250) INSERT INTO skus (sku) SELECT 'S' || x FROM c"]),
        0,
    );
    let o = cli(&db, &["--json", "stats"]);
    assert_exit(&o, 0);
    let j = json_out(&o);
    assert_eq!(j["schema_version"], 3);
    assert_eq!(j["tables"], 2);
    assert_eq!(j["indices"], 2, "sales_sku plus the automatic index of UNIQUE");
    assert_eq!(j["row_counts"]["skus"], 1250);
    assert_eq!(j["row_counts"]["sales"], 0);
    assert_eq!(j["journal_mode"], "wal");
    assert!(j["page_size"].as_u64().unwrap() >= 512);
    assert_eq!(j["broker"]["pid"], b.pid());
    assert!(j["broker"]["commits"].as_u64().unwrap() >= 2);
    assert!(j["broker"]["max_requests_per_commit"].as_u64().unwrap() >= 1);
    assert_eq!(j["broker"]["lock_waits"], 0);

    let text = stdout(&cli(&db, &["stats"]));
    for want in [
        "Schema version: 3",
        "Tables: 2",
        "Indices: 2",
        "skus: 1,250",
        "Database size:",
        "WAL size:",
        "Requests per commit:",
    ] {
        assert!(text.contains(want), "stats text lacks '{want}':\n{text}");
    }
}

#[test]
#[cfg_attr(litebroker_wine, ignore = "needs the sqlite3 CLI, a Linux program that Wine cannot start")]
fn verify_reports_ok_then_each_problem_with_exit_5() {
    let t = TestDir::new();
    let mut b = Broker::start(&t.db(), &[]);
    let db = t.db();
    assert_exit(
        &cli(&db, &["exec", "CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE c (id INTEGER PRIMARY KEY, p_id REFERENCES p(id)); INSERT INTO p VALUES (1); INSERT INTO c VALUES (1, 1);"]),
        0,
    );
    let o = cli(&db, &["verify"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("integrity_check: OK") && stdout(&o).contains("foreign_key_check: OK"));

    // An orphan written behind the broker's back (foreign keys off in the sqlite3 CLI).
    let st = Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA foreign_keys=OFF; INSERT INTO c VALUES (2, 42);")
        .status()
        .unwrap();
    assert!(st.success());
    let o = cli(&db, &["--json", "verify"]);
    assert_exit(&o, 5);
    let j = json_out(&o);
    assert_eq!(j["ok"], false);
    assert_eq!(j["checked_by"], "broker");
    assert_eq!(j["foreign_key_problems"][0], "c row 2 references a missing row of p");

    // A corrupted page, checked without a broker (local, read-only).
    assert_exit(&cli(&db, &["exec", "DELETE FROM c WHERE id = 2; CREATE TABLE big (x TEXT); CREATE INDEX big_x ON big(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) INSERT INTO big SELECT printf('%050d', i) FROM n;"]), 0);
    assert_exit(&cli(&db, &["shutdown"]), 0);
    b.wait_exit(Duration::from_secs(20)).expect("broker stops");
    let page_size = query_i64(&db, "PRAGMA page_size") as u64;
    let pages = query_i64(&db, "PRAGMA page_count") as u64;
    let mut bytes = std::fs::read(&db).unwrap();
    let victim = (pages - 3) * page_size;
    for b in &mut bytes[victim as usize + 100..victim as usize + 400] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let o = cli(&db, &["verify"]);
    assert_exit(&o, 5);
    assert!(stdout(&o).contains("integrity_check: FAIL"), "{}", stdout(&o));
    assert!(stdout(&o).contains("restore from a backup"), "{}", stdout(&o));
}

fn rows_in(db: &Path) -> Vec<(i64, i64)> {
    let c = open_ro(db);
    let mut st = c.prepare("SELECT client, seq FROM rows ORDER BY client, seq").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

#[test]
fn backup_under_write_load_then_restore_seen_by_other_readers() {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &[]);
    let db = t.db();
    assert_exit(&cli(&db, &["exec", ROWS]), 0);
    let writers: Vec<Proc> = (1..=3)
        .map(|c| Proc::lbtool(&db, &["write", "--client", &c.to_string(), "--count", "1500"]))
        .collect();
    let reader = Reader::open(&db).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || matches!(
            reader.query_value("SELECT count(*) FROM rows", &[]),
            Ok(Some(Value::Integer(n))) if n >= 300
        )),
        "writers made no progress"
    );
    // Every row acknowledged before the backup starts is committed, so visible here.
    let acked_before = rows_in(&db);
    let o = cli(&db, &["--json", "backup", "during-load"]);
    assert_exit(&o, 0);
    let j = json_out(&o);
    let path = j["path"].as_str().unwrap().to_owned();
    let name = Path::new(&path).file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("app_") && name.ends_with("_during-load.db"), "{name}");
    assert_eq!(Path::new(&path).parent().unwrap(), db.parent().unwrap().join("backups"));
    assert_eq!(integrity(Path::new(&path)), "ok");
    let in_backup = rows_in(Path::new(&path));
    for r in &acked_before {
        assert!(in_backup.binary_search(r).is_ok(), "acknowledged row {r:?} missing from the backup");
    }
    for mut w in writers {
        assert_eq!(w.json_line(Duration::from_secs(120))["errors"], 0, "a writer failed during the backup");
        w.wait_exit(Duration::from_secs(30));
    }
    assert_eq!(rows_in(&db).len(), 4500);

    // Restore the backup: this process's reader (opened long before) sees it next read.
    let o = cli(&db, &["--json", "restore", &path]);
    assert_exit(&o, 0);
    let r = json_out(&o);
    let safety = r["safety_backup"].as_str().unwrap().to_owned();
    assert!(safety.ends_with("_pre-restore.db"), "{safety}");
    assert_eq!(rows_in(Path::new(&safety)).len(), 4500, "the safety backup holds the database as it was");
    let seen = reader.query_value("SELECT count(*) FROM rows", &[]).unwrap();
    assert_eq!(seen, Some(Value::Integer(in_backup.len() as i64)));
    assert_eq!(integrity(&db), "ok");
    assert_eq!(query_i64(&db, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), 1);
    // And the broker keeps writing.
    assert_exit(&cli(&db, &["exec", "INSERT INTO rows VALUES (9, 1, 'after restore')"]), 0);
    assert!(b.log().contains("database restored"));

    let o = cli(&db, &["--json", "backups"]);
    assert_exit(&o, 0);
    assert_eq!(json_out(&o)["backups"].as_array().unwrap().len(), 2, "the backup and the safety copy");
}

#[test]
fn restore_refuses_corrupt_or_foreign_files_and_changes_nothing() {
    let t = TestDir::new();
    let _b = Broker::start(&t.db(), &[]);
    let db = t.db();
    assert_exit(&cli(&db, &["exec", "CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);"]), 0);
    let junk = t.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
    let o = cli(&db, &["restore", junk.to_str().unwrap()]);
    assert_exit(&o, 5);
    assert!(stderr(&o).contains("not a SQLite database"), "{}", stderr(&o));

    // A real SQLite file with a broken page.
    let bad = t.path().join("bad.db");
    let c = rusqlite::Connection::open(&bad).unwrap();
    c.execute_batch("CREATE TABLE t (x TEXT); CREATE INDEX tx ON t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) INSERT INTO t SELECT printf('%040d', i) FROM n;").unwrap();
    drop(c);
    let mut bytes = std::fs::read(&bad).unwrap();
    let page = 4096; // SQLite's default page size, used by the file above
    assert!(bytes.len() > 12 * page);
    for b in &mut bytes[10 * page..11 * page] {
        *b = 0x5A;
    }
    std::fs::write(&bad, &bytes).unwrap();
    let o = cli(&db, &["restore", bad.to_str().unwrap()]);
    assert_exit(&o, 5);
    assert!(stderr(&o).contains("refusing to restore"), "{}", stderr(&o));

    assert_exit(&cli(&db, &["restore", t.path().join("missing.db").to_str().unwrap()]), 5);
    assert_eq!(query_i64(&db, "SELECT sum(x) FROM t"), 3, "the database changed");
    assert!(!db.parent().unwrap().join("backups").exists(), "a refused restore made no safety backup");
}

#[test]
#[cfg_attr(litebroker_wine, ignore = "needs the sqlite3 CLI, a Linux program that Wine cannot start")]
fn checkpoint_reports_frames_and_readers_that_block_it() {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &["--idle-checkpoint-ms", "600000", "--wal-warn-mb", "0.05"]);
    let db = t.db();
    assert_exit(&cli(&db, &["exec", "CREATE TABLE t (x TEXT)"]), 0);
    // A reader in another process keeps an old snapshot open.
    let mut cmd = Command::new("sqlite3");
    cmd.arg(&db);
    let mut reader = Proc::spawn(cmd);
    reader.send("BEGIN;\nSELECT count(*) FROM t;\n.print READING\n.shell sleep 60\n");
    assert_eq!(reader.line(Duration::from_secs(20)).as_deref(), Some("0"));
    assert_eq!(reader.line(Duration::from_secs(20)).as_deref(), Some("READING"));
    assert_exit(
        &cli(&db, &["exec", "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) INSERT INTO t SELECT printf('%080d', i) FROM n"]),
        0,
    );
    let o = cli(&db, &["--json", "checkpoint", "truncate"]);
    assert_exit(&o, 0);
    let j = json_out(&o);
    assert_eq!(j["mode"], "TRUNCATE");
    assert_eq!(j["blocked_by_readers"], true, "{j}");
    assert!(j["wal_frames"].as_i64().unwrap() > 0);
    assert!(j["wal_bytes_after"].as_u64().unwrap() > 50_000);
    // The WAL stays over the (lowered) threshold: warned in the log and in stats.
    assert!(b.log().contains("readers are keeping it pinned"), "{}", b.log());
    let s = json_out(&cli(&db, &["--json", "stats"]));
    assert!(s["warnings"][0].as_str().unwrap().contains("pinned"), "{s}");
    assert_eq!(s["broker"]["last_checkpoint"]["blocked"], true);

    reader.kill9();
    let o = cli(&db, &["--json", "checkpoint"]);
    assert_exit(&o, 0);
    let j = json_out(&o);
    assert_eq!(j["blocked_by_readers"], false, "{j}");
    assert_eq!(j["wal_bytes_after"], 0);
    let o = cli(&db, &["checkpoint", "passive"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("Checkpoint PASSIVE"), "{}", stdout(&o));
}

#[test]
fn idle_broker_truncates_the_wal_by_itself() {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &["--idle-checkpoint-ms", "200"]);
    let db = t.db();
    assert_exit(&cli(&db, &["exec", "CREATE TABLE t (x); INSERT INTO t VALUES (1);"]), 0);
    let wal = litebroker_server::ops::wal_path(&db);
    assert!(
        wait_until(Duration::from_secs(10), || b.log().contains("idle checkpoint")
            && std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) == 0),
        "no idle checkpoint:\n{}",
        b.log()
    );
    let s = json_out(&cli(&db, &["--json", "stats"]));
    assert_eq!(s["broker"]["last_checkpoint"]["mode"], "TRUNCATE");
}

#[test]
fn backups_keep_only_the_newest() {
    let t = TestDir::new();
    let _b = Broker::start(&t.db(), &[]);
    let db = t.db();
    assert_exit(&cli(&db, &["exec", "CREATE TABLE t (x)"]), 0);
    for label in ["one", "two", "three"] {
        assert_exit(&cli(&db, &["backup", label, "--keep", "2"]), 0);
    }
    let o = cli(&db, &["--json", "backups"]);
    let list = json_out(&o)["backups"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert!(list[0]["path"].as_str().unwrap().ends_with("_two.db"), "{list:?}");
    assert!(list[1]["path"].as_str().unwrap().ends_with("_three.db"), "{list:?}");
    assert!(stdout(&cli(&db, &["backups"])).contains("(2 backups)"));
}

#[test]
fn doctor_is_healthy_with_a_broker_and_reports_a_stopped_one() {
    let t = TestDir::new();
    let mut b = Broker::start(&t.db(), &[]);
    let db = t.db();
    assert_exit(&cli(&db, &["exec", "CREATE TABLE t (x)"]), 0);
    assert_exit(&cli(&db, &["backup"]), 0);
    let o = cli(&db, &["--json", "doctor"]);
    assert_exit(&o, 0);
    let j = json_out(&o);
    assert_eq!(j["healthy"], true, "{j}");
    let status = |j: &Json, check: &str| {
        j["findings"].as_array().unwrap().iter().find(|f| f["check"] == check).map(|f| f["status"].clone())
    };
    for check in ["broker", "connections", "wal", "permissions", "filesystem", "quick_check", "backups"] {
        assert_eq!(status(&j, check), Some(Json::from("ok")), "{check}: {j}");
    }
    assert!(stdout(&cli(&db, &["doctor"])).contains(&format!("pid {}", b.pid())));

    assert_exit(&cli(&db, &["shutdown"]), 0);
    b.wait_exit(Duration::from_secs(20)).expect("broker stops");
    let o = cli(&db, &["--json", "doctor"]);
    assert_exit(&o, 3);
    let j = json_out(&o);
    assert_eq!(j["broker_running"], false);
    assert_eq!(status(&j, "broker"), Some(Json::from("problem")));
    assert_eq!(status(&j, "quick_check"), Some(Json::from("ok")), "the other checks still ran");
    let text = stdout(&cli(&db, &["doctor"]));
    assert!(
        text.contains("no broker is serving this database") && text.contains("litebrokerd --db"),
        "{text}"
    );
}

/// The files in the backups folder, sorted.
fn backup_folder(db: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(db.parent().unwrap().join("backups"))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_backup_cut_by_kill_9_is_never_listed_and_its_debris_is_swept() {
    let t = TestDir::new();
    let db = t.db();
    // Big enough that its copy takes over a second here: written before the broker
    // starts, with indexes that `VACUUM INTO` rebuilds row by row.
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE big (id INTEGER PRIMARY KEY, a BLOB, b TEXT);
         CREATE INDEX big_a ON big(a); CREATE INDEX big_b ON big(b);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 150000)
         INSERT INTO big (a, b) SELECT randomblob(100), hex(randomblob(40)) FROM n;",
    )
    .unwrap();
    drop(c);
    let mut b = Broker::start(&db, &[]);
    let started = std::time::Instant::now();
    let backup = Command::new(bin("litebroker"))
        .arg("--db")
        .arg(&db)
        .args(["--json", "backup", "cut"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed once the copy is under way: its temporary file has grown.
    let backups = db.parent().unwrap().join("backups");
    let copying = wait_until(Duration::from_secs(60), || {
        backup_folder(&db).iter().any(|n| n.contains(".db.tmp-") && file_len(&backups.join(n)) > 0)
    });
    assert!(copying, "no temporary file grew; backups folder: {:?}", backup_folder(&db));
    b.kill9();
    let o = wait_output(backup, Duration::from_secs(60), "the cut backup");
    // Exit 0 here means the backup finished before the kill: make the database bigger.
    assert_exit(&o, 3);
    let debris = backup_folder(&db);
    assert!(!debris.is_empty(), "the kill after {:?} left nothing", started.elapsed());
    assert!(
        debris.iter().all(|n| n.contains(".db.tmp-")),
        "an unfinished copy under a backup's name: {debris:?}"
    );

    // Listed: nothing. Deleted: all of it (its writer is gone).
    let o = cli(&db, &["--json", "backups"]);
    assert_exit(&o, 0);
    let j = json_out(&o);
    assert_eq!(j["backups"], serde_json::json!([]), "{j}");
    let mut removed: Vec<String> = j["removed_debris"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Path::new(p.as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    removed.sort();
    assert_eq!(removed, debris);
    assert!(backup_folder(&db).is_empty(), "{:?}", backup_folder(&db));

    // A new broker backs up and restores as ever.
    let _b = Broker::start(&db, &[]);
    assert_exit(&cli(&db, &["exec", "DELETE FROM big WHERE id > 100"]), 0);
    let o = cli(&db, &["--json", "backup", "after"]);
    assert_exit(&o, 0);
    let path = json_out(&o)["path"].as_str().unwrap().to_owned();
    let listed = json_out(&cli(&db, &["--json", "backups"]))["backups"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["path"], path.as_str());
    assert_exit(&cli(&db, &["exec", "DELETE FROM big"]), 0);
    assert_exit(&cli(&db, &["restore", &path]), 0);
    assert_eq!(query_i64(&db, "SELECT count(*) FROM big"), 100);
    assert_eq!(integrity(&db), "ok");
    assert!(backup_folder(&db).iter().all(|n| !n.contains(".tmp-") && !n.ends_with("-journal")));
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}
