//! The four stop conditions of litebroker's writes, which must hold whatever the
//! load: (1) two writers never see "database is locked"; (2) an external lock is
//! waited out with the backoff, then reported; (3) connections are tracked and
//! return to zero (`connection_tracking.rs`, a binary of its own); (4) integrity
//! holds after a lock. Plus lease expiry and disconnect rollback of write sessions.
//! Real broker process, real client processes, the real `sqlite3` CLI holding locks.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use litebroker_client::{ConnectOptions, ConnectionFactory, ErrorKind, Value};
use litebroker_tests::*;

const SCHEMA: &str = "CREATE TABLE skus (id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE, description TEXT);
     CREATE TABLE transactions (id INTEGER PRIMARY KEY, sku_id INTEGER NOT NULL REFERENCES skus(id), qty INTEGER NOT NULL);";

fn setup(args: &[&str]) -> (TestDir, Broker) {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), args);
    assert_exit(&cli(&t.db(), &["exec", SCHEMA]), 0);
    (t, b)
}

fn factory(db: &Path, name: &str) -> ConnectionFactory {
    ConnectionFactory::with_options(ConnectOptions::new(db).client_name(name))
}

fn count(db: &Path, sql: &str) -> i64 {
    query_i64(db, sql)
}

/// The `sqlite3` CLI holding `BEGIN EXCLUSIVE` on `db` for `hold` seconds, then
/// committing its own row `ext`. Returns once the lock is held.
fn sqlite3_holding(db: &Path, hold: f64, ext: &str) -> Proc {
    let mut cmd = Command::new("sqlite3");
    cmd.arg(db);
    let mut p = Proc::spawn(cmd);
    p.send(&format!(
        "BEGIN EXCLUSIVE;\nINSERT INTO skus (sku) VALUES ('{ext}');\n.print LOCKED\n.shell sleep {hold}\nCOMMIT;\n.print RELEASED"
    ));
    assert_eq!(p.line(Duration::from_secs(20)).as_deref(), Some("LOCKED"), "sqlite3 did not take the lock");
    p
}

/// Stop condition 1: two writers never see "database is locked". Two sessions
/// started at once take turns; a waiter whose timeout runs out is told who holds
/// the writer, and nothing of its own is applied.
#[test]
fn two_writers_take_turns_and_never_see_database_is_locked() {
    let (t, b) = setup(&[]);
    let db = t.db();

    // Two sessions started at once, each inserting and holding the writer for 2 s:
    // the second waits for the first, then succeeds.
    let start = Arc::new(Barrier::new(2));
    let handles: Vec<_> = ["SKU1", "SKU2"]
        .into_iter()
        .map(|sku| {
            let (db, start) = (db.clone(), start.clone());
            thread::spawn(move || {
                let f = factory(&db, &format!("writer-{sku}"));
                start.wait();
                let mut w = f.writer(Some(Duration::from_secs(10))).expect("writer");
                let got = Instant::now();
                w.execute("INSERT INTO skus (sku, description) VALUES (?1, 'Test')", &[sku.into()]).unwrap();
                thread::sleep(Duration::from_secs(2)); // hold the writer: the other must wait
                let waited = w.waited();
                // The broker can hand the writer on only after it got this commit, so
                // the next session cannot have started before this moment.
                let committing = Instant::now();
                w.commit().expect("commit");
                (got, committing, waited)
            })
        })
        .collect();
    let mut spans: Vec<(Instant, Instant, Duration)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    spans.sort_by_key(|s| s.0);
    assert!(spans[0].1 <= spans[1].0, "the two sessions overlapped: single-writer discipline broken");
    assert!(spans[1].2 >= Duration::from_millis(1500), "the second writer waited only {:?}", spans[1].2);
    assert_eq!(count(&db, "SELECT count(*) FROM skus WHERE sku IN ('SKU1', 'SKU2')"), 2);

    // With a 1 s timeout the waiter fails with the typed timeout naming the holder.
    let (tx, rx) = std::sync::mpsc::channel();
    let holder = {
        let db = db.clone();
        thread::spawn(move || {
            let f = factory(&db, "stop1-holder");
            let mut w = f.writer(None).expect("writer");
            w.execute("INSERT INTO skus (sku) VALUES ('SKU3')", &[]).unwrap();
            tx.send(()).unwrap();
            thread::sleep(Duration::from_secs(2));
            w.commit().expect("holder commits");
        })
    };
    rx.recv_timeout(Duration::from_secs(10)).expect("holder started");
    let t0 = Instant::now();
    let err = factory(&db, "stop1-waiter").writer(Some(Duration::from_secs(1))).map(|_| ()).unwrap_err();
    let took = t0.elapsed();
    assert_eq!(err.kind(), Some(ErrorKind::Timeout), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("stop1-holder") && msg.contains("held by"),
        "message does not name the holder: {msg}"
    );
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "timed out after {took:?}");
    holder.join().unwrap();
    // All-or-nothing: the holder's row is there, nothing of the waiter's.
    assert_eq!(count(&db, "SELECT count(*) FROM skus"), 3);
    assert!(b.log().contains("listening on"));
    assert_exit(&cli(&db, &["status"]), 0);
}

/// Stop condition 2: an external lock is waited out with the backoff, then
/// reported. Busy_timeout first, then retries after 0.5 s, 1 s and 2 s (doubling,
/// capped at 5 s, 3 retries); a lock that outlasts them all is "Database is
/// locked" with what to do (exit 4) and nothing applied; one released in time
/// lets the write through.
#[test]
#[cfg_attr(litebroker_wine, ignore = "needs the sqlite3 CLI, a Linux program that Wine cannot start")]
fn an_external_lock_is_waited_out_with_the_backoff_then_reported() {
    // Short busy_timeout so the whole schedule takes seconds, not the default 23.5 s:
    // 1 s busy wait, then 0.5 s, 1 s, 2 s backoff with a 1 s busy wait after each.
    let (t, b) = setup(&["--busy-timeout-ms", "1000", "--lock-retries", "3"]);
    let db = t.db();

    // (a) Held longer than the whole retry budget: exit 4, and the locked text says
    // what happened, the likely causes and what to do.
    let mut sq = sqlite3_holding(&db, 30.0, "ext-a");
    let t0 = Instant::now();
    let o = cli(&db, &["exec", "INSERT INTO skus (sku) VALUES ('mine-a')"]);
    let took = t0.elapsed();
    assert_exit(&o, 4);
    let err = stderr(&o);
    assert!(err.contains("Database is locked"), "{err}");
    assert!(err.contains("Another application instance is accessing the database"), "{err}");
    assert!(err.contains("Close all other connections and retry"), "{err}");
    // 4 busy waits of 1 s + 0.5 + 1 + 2 s of backoff = 7.5 s.
    assert!(took >= Duration::from_millis(7000) && took < Duration::from_secs(15), "gave up after {took:?}");
    let log = b.log();
    for line in ["retry 1 of 3 in 500 ms", "retry 2 of 3 in 1000 ms", "retry 3 of 3 in 2000 ms", "giving up"]
    {
        assert!(log.contains(line), "broker log lacks '{line}':\n{log}");
    }
    sq.kill9();

    // (b) Released mid-way: the write succeeds on a retry.
    let retries_before = b.log().matches("retry 1 of 3").count();
    // Held 4 s: well inside the 7.5 s schedule, and long enough that the write
    // still meets the lock when this test reads LOCKED late on a loaded machine.
    let mut sq = sqlite3_holding(&db, 4.0, "ext-b");
    let t0 = Instant::now();
    let o = cli(&db, &["exec", "INSERT INTO skus (sku) VALUES ('mine-b')"]);
    assert_exit(&o, 0);
    assert!(t0.elapsed() >= Duration::from_secs(1), "the write did not wait for the lock");
    assert!(b.log().matches("retry 1 of 3").count() > retries_before, "no retry was logged");
    assert_eq!(sq.line(Duration::from_secs(20)).as_deref(), Some("RELEASED"));
    sq.wait_exit(Duration::from_secs(10));

    let skus = query_texts(&db, "SELECT sku FROM skus ORDER BY sku");
    assert_eq!(skus, ["ext-b", "mine-b"], "(a) must leave nothing, (b) both writers' rows");
    assert_eq!(integrity(&db), "ok");
}

/// Stop condition 4: integrity holds after a lock. A write stopped by another
/// process's lock, a session killed half-way and a write that breaks a foreign key
/// leave no partial rows, and `integrity_check` and `foreign_key_check` pass.
#[test]
#[cfg_attr(litebroker_wine, ignore = "needs the sqlite3 CLI, a Linux program that Wine cannot start")]
fn integrity_holds_after_a_lock_a_killed_session_and_a_broken_foreign_key() {
    let (t, b) = setup(&["--busy-timeout-ms", "200", "--lock-retries", "1", "--retry-base-ms", "100"]);
    let db = t.db();
    let parent_and_children = "INSERT INTO skus (sku) VALUES ('P1');
        INSERT INTO transactions (sku_id, qty) SELECT id, 5 FROM skus WHERE sku = 'P1';
        INSERT INTO transactions (sku_id, qty) SELECT id, 6 FROM skus WHERE sku = 'P1';";

    // A lock held by another process when a multi-statement write starts. (In WAL
    // mode the broker holds the write lock from BEGIN IMMEDIATE to COMMIT, so that is
    // the only place another process's lock can stop it.)
    let mut sq = sqlite3_holding(&db, 30.0, "ext");
    let o = cli(&db, &["exec", parent_and_children]);
    assert_exit(&o, 4);
    sq.kill9();

    // A write session killed in the middle, after the parent and one child.
    let mut s = Proc::lbtool(
        &db,
        &[
            "session",
            "--sql",
            "INSERT INTO skus (sku) VALUES ('P2')",
            "--sql",
            "INSERT INTO transactions (sku_id, qty) SELECT id, 1 FROM skus WHERE sku = 'P2'",
        ],
    );
    assert_eq!(s.json_line(Duration::from_secs(20))["in_session"], true);
    s.kill9();
    assert!(
        wait_until(Duration::from_secs(10), || b.log().contains("disconnected during its write session")),
        "the broker did not roll back the killed client's session:\n{}",
        b.log()
    );

    // A multi-statement write whose last statement breaks the foreign key.
    let o = cli(
        &db,
        &[
            "exec",
            "INSERT INTO skus (sku) VALUES ('P3'); INSERT INTO transactions (sku_id, qty) VALUES (999, 1);",
        ],
    );
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("FOREIGN KEY constraint failed"), "{}", stderr(&o));

    assert_eq!(integrity(&db), "ok");
    assert_eq!(foreign_key_violations(&db), 0);
    assert_eq!(
        count(&db, "SELECT count(*) FROM skus WHERE sku IN ('P1', 'P2', 'P3')"),
        0,
        "partial parent rows"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM transactions"), 0, "orphaned or partial child rows");
    // The writer is free and the database usable.
    assert_exit(&cli(&db, &["exec", parent_and_children]), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM transactions"), 2);
}

#[test]
fn lease_expiry_rolls_back_the_session() {
    let (t, b) = setup(&["--lease-secs", "1"]);
    let db = t.db();
    let f = factory(&db, "slow-session");
    let mut w = f.writer(None).expect("writer");
    w.execute("INSERT INTO skus (sku) VALUES ('L1')", &[]).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || b.log().contains("lease; rolled back")),
        "lease did not expire:\n{}",
        b.log()
    );
    // The writer is free for others at once.
    let mut other = f.client().unwrap();
    other.execute("INSERT INTO skus (sku) VALUES ('L2')", &[]).expect("others write after the expiry");
    // The holder learns it, and nothing of its session is visible.
    let err = w.execute("INSERT INTO skus (sku) VALUES ('L3')", &[]).unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::LeaseExpired), "{err}");
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert!(w.commit().is_err(), "a rolled-back session cannot commit");
    let skus = f.reader().unwrap().query("SELECT sku FROM skus ORDER BY sku", &[]).unwrap().rows;
    assert_eq!(skus, vec![vec![Value::Text("L2".into())]]);
}

#[test]
fn dropping_a_session_without_commit_rolls_back() {
    let (t, _b) = setup(&[]);
    let f = factory(&t.db(), "dropper");
    {
        let mut w = f.writer(None).unwrap();
        w.execute("INSERT INTO skus (sku) VALUES ('gone')", &[]).unwrap();
    }
    let mut w = f.writer(Some(Duration::from_secs(2))).expect("writer free after drop");
    w.execute("INSERT INTO skus (sku) VALUES ('kept')", &[]).unwrap();
    w.commit().unwrap();
    assert_eq!(count(&t.db(), "SELECT group_concat(sku) = 'kept' FROM skus"), 1);
}

#[test]
fn disconnect_rolls_back_the_session_and_frees_the_writer() {
    let (t, b) = setup(&[]);
    let db = t.db();
    let mut s = Proc::lbtool(&db, &["session", "--sql", "INSERT INTO skus (sku) VALUES ('D1')"]);
    assert_eq!(s.json_line(Duration::from_secs(20))["in_session"], true);
    // A second writer queues behind the session.
    let waiter = {
        let db = db.clone();
        thread::spawn(move || {
            let mut c = factory(&db, "queued").client().unwrap();
            let t0 = Instant::now();
            let r = c.execute("INSERT INTO skus (sku) VALUES ('D2')", &[]);
            (r.map(|_| ()).map_err(|e| e.to_string()), t0.elapsed())
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || stdout(&cli(&db, &["--json", "status"]))
            .contains("\"queue_depth\":1")),
        "the second write never queued"
    );
    s.kill9();
    let (r, waited) = waiter.join().unwrap();
    assert_eq!(r, Ok(()));
    assert!(
        waited < Duration::from_secs(20),
        "the queued write waited {waited:?}: the session was not rolled back at disconnect"
    );
    assert!(b.log().contains("disconnected during its write session; rolled back"), "{}", b.log());
    assert_eq!(count(&db, "SELECT group_concat(sku) = 'D2' FROM skus"), 1);
}
