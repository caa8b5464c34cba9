//! The app-facing handle, `Db`, against the real broker: typed parameters and
//! results, sessions that roll back on error or panic, sharing across threads,
//! a broker restarted under it, and a lock held by another program.

use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use litebroker_client::{named_params, params, ClientError, Db, RetryPolicy, Value};
use litebroker_tests::*;

fn db(t: &TestDir) -> Db {
    Db::builder(t.db()).client_name("db-api-test").timeout(Duration::from_secs(20)).open().unwrap()
}

fn setup(t: &TestDir) -> (Broker, Db) {
    let b = Broker::start(&t.db(), &[]);
    let db = db(t);
    db.execute_batch(
        "CREATE TABLE v (id INTEGER PRIMARY KEY, x);
         CREATE TABLE skus (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL);
         INSERT INTO skus VALUES ('A1', 5)",
    )
    .unwrap();
    (b, db)
}

/// Writes `value` through the broker and reads it back through this process's
/// read connection, and through the broker inside a session.
fn round_trip<T>(db: &Db, value: T) -> (Value, Value)
where
    T: litebroker_client::ToSql,
{
    let id = db.execute("INSERT INTO v (x) VALUES (?1)", [value]).unwrap().last_insert_rowid;
    let local: Value = db
        .query_row("SELECT x FROM v WHERE id = ?1", [id], |r| {
            r.get::<_, litebroker_client::rusqlite::types::Value>(0)
        })
        .map(wire)
        .unwrap();
    let remote: Value = db
        .write(|tx| tx.query_map("SELECT x FROM v WHERE id = ?1", [id], |r| Ok(r.values()[0].clone())))
        .unwrap()
        .remove(0);
    (local, remote)
}

fn wire(v: litebroker_client::rusqlite::types::Value) -> Value {
    use litebroker_client::rusqlite::types::Value as V;
    match v {
        V::Null => Value::Null,
        V::Integer(i) => Value::Integer(i),
        V::Real(f) => Value::Real(f),
        V::Text(t) => Value::Text(t),
        V::Blob(b) => Value::Blob(b),
    }
}

#[test]
fn every_parameter_type_round_trips_typed() {
    let t = TestDir::new();
    let (_b, db) = setup(&t);
    for (got, want) in [
        (round_trip(&db, i64::MIN), Value::Integer(i64::MIN)),
        (round_trip(&db, i64::MAX), Value::Integer(i64::MAX)),
        (round_trip(&db, -7_i8), Value::Integer(-7)),
        (round_trip(&db, 65_535_u16), Value::Integer(65_535)),
        (round_trip(&db, u32::MAX), Value::Integer(i64::from(u32::MAX))),
        (round_trip(&db, i64::MAX as u64), Value::Integer(i64::MAX)),
        (round_trip(&db, 1.5_f32), Value::Real(1.5)),
        (round_trip(&db, f64::INFINITY), Value::Real(f64::INFINITY)),
        (round_trip(&db, f64::NEG_INFINITY), Value::Real(f64::NEG_INFINITY)),
        // SQLite stores NaN as NULL.
        (round_trip(&db, f64::NAN), Value::Null),
        (round_trip(&db, true), Value::Integer(1)),
        (round_trip(&db, "a\0b é"), Value::Text("a\0b é".into())),
        (round_trip(&db, String::new()), Value::Text(String::new())),
        (round_trip(&db, Vec::<u8>::new()), Value::Blob(vec![])),
        (round_trip(&db, vec![7_u8; 1 << 20]), Value::Blob(vec![7; 1 << 20])),
        (round_trip(&db, None::<i64>), Value::Null),
        (round_trip(&db, Value::Text("wire".into())), Value::Text("wire".into())),
    ] {
        assert_eq!(got.0, want);
        assert_eq!(got.1, want);
    }
    // Typed reads on both paths.
    let qty: i64 = db.query_row("SELECT qty FROM skus WHERE sku = ?1", ["A1"], |r| r.get(0)).unwrap();
    let small: u8 =
        db.write(|tx| tx.query_row("SELECT qty FROM skus WHERE sku = ?1", ["A1"], |r| r.get(0))).unwrap();
    assert_eq!((qty, small), (5, 5));
    let e = db.write(|tx| tx.query_row("SELECT -1", (), |r| r.get::<_, u8>(0))).unwrap_err();
    assert!(matches!(e, ClientError::Column(_)), "{e}");
    // u64 beyond i64 is refused before anything is sent.
    let e = db.execute("INSERT INTO v (x) VALUES (?1)", [u64::MAX]).unwrap_err();
    assert!(matches!(e, ClientError::Parameter(_)), "{e}");
    let n: i64 = db.query_row("SELECT count(*) FROM v", (), |r| r.get(0)).unwrap();
    assert_eq!(n, 17);
}

#[test]
fn named_parameters_and_tuples() {
    let t = TestDir::new();
    let (_b, db) = setup(&t);
    db.execute("INSERT INTO skus (sku, qty) VALUES (:sku, :qty)", named_params! { ":qty": 3, ":sku": "B2" })
        .unwrap();
    db.execute("UPDATE skus SET qty = qty + ?2 WHERE sku = ?1", ("B2", 4)).unwrap();
    let (sku, qty): (String, i64) = db
        .query_row("SELECT sku, qty FROM skus WHERE sku = @s", named_params! { "@s": "B2" }, |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((sku.as_str(), qty), ("B2", 7));
    let e = db.execute("INSERT INTO skus VALUES (:sku, :qty)", named_params! { ":sku": "C3" }).unwrap_err();
    assert!(e.to_string().contains(":qty"), "{e}");
    let all = db.query_map("SELECT sku FROM skus ORDER BY sku", [0; 0], |r| r.get::<_, String>(0)).unwrap();
    assert_eq!(all, ["A1", "B2"]);
}

#[test]
fn a_session_sees_its_own_writes_and_rolls_back_on_error_or_panic() {
    let t = TestDir::new();
    let (_b, db) = setup(&t);
    let left = db
        .write(|tx| {
            tx.execute("UPDATE skus SET qty = qty - ?1 WHERE sku = ?2", params![2, "A1"])?;
            tx.query_row("SELECT qty FROM skus WHERE sku = ?1", ["A1"], |r| r.get::<_, i64>(0))
        })
        .unwrap();
    assert_eq!(left, 3);
    let e = db
        .write(|tx| -> Result<(), ClientError> {
            tx.execute("UPDATE skus SET qty = 0 WHERE sku = 'A1'", ())?;
            Err(ClientError::Parameter("changed my mind".into()))
        })
        .unwrap_err();
    assert!(e.to_string().contains("changed my mind"));
    let db2 = db.clone();
    let panicked = thread::spawn(move || {
        db2.write(|tx| -> Result<(), ClientError> {
            tx.execute("UPDATE skus SET qty = 0 WHERE sku = 'A1'", ())?;
            panic!("a bug in the app");
        })
    })
    .join();
    assert!(panicked.is_err());
    let qty: i64 = db.query_row("SELECT qty FROM skus WHERE sku = 'A1'", (), |r| r.get(0)).unwrap();
    assert_eq!(qty, 3, "neither the failed nor the panicked session left anything");
    // The writer is free again.
    db.execute("UPDATE skus SET qty = qty + 1 WHERE sku = 'A1'", ()).unwrap();
}

#[test]
fn threads_share_one_db_and_every_write_lands_once() {
    let t = TestDir::new();
    let (_b, db) = setup(&t);
    db.execute("CREATE TABLE rows (thread INT, seq INT, UNIQUE (thread, seq))", ()).unwrap();
    let started = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|th| {
            let db = db.clone();
            thread::spawn(move || {
                for seq in 0..200 {
                    db.execute("INSERT INTO rows VALUES (?1, ?2)", (th, seq)).unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let n: i64 = db.query_row("SELECT count(*) FROM rows", (), |r| r.get(0)).unwrap();
    assert_eq!(n, 1600);
    eprintln!("8 threads × 200 writes through one Db: {:?}", started.elapsed());
    let clients = db.client().unwrap().connections().unwrap();
    let mine = clients.iter().filter(|c| c.name == "db-api-test").count();
    assert!((1..=5).contains(&mine), "{mine} broker connections for one Db (pool of 4 + the admin one)");
}

/// 8 processes × 8 threads, each process with one `Db`: no error, every row once.
#[test]
fn eight_processes_of_eight_threads_each_write_every_row_once() {
    let t = TestDir::new();
    let (_b, db) = setup(&t);
    db.execute(
        "CREATE TABLE db_rows (process INT, thread INT, seq INT, PRIMARY KEY (process, thread, seq))",
        (),
    )
    .unwrap();
    let procs: Vec<_> = (0..8)
        .map(|p| {
            spawn_lbtool(
                &t.db(),
                &["db-writes", "--process", &p.to_string(), "--threads", "8", "--count", "50"],
            )
        })
        .collect();
    for (p, child) in procs.into_iter().enumerate() {
        let s = json_summary(&wait_output(child, Duration::from_secs(120), &format!("process {p}")));
        assert_eq!(s["errors"], 0, "{s}");
        assert_eq!(s["ok"], 400, "{s}");
    }
    let n: i64 = db.query_row("SELECT count(*) FROM db_rows", (), |r| r.get(0)).unwrap();
    assert_eq!(n, 8 * 8 * 50);
}

/// A broker killed and restarted while a `Db` is writing: writes go on after
/// the handle reconnects and resends, none lost or applied twice (the primary
/// key turns a doubled write into an error, which fails the test).
#[test]
fn writes_continue_across_a_broker_restart_none_lost_or_doubled() {
    let t = TestDir::new();
    let (b, db) = setup(&t);
    db.execute("CREATE TABLE rows (seq INT PRIMARY KEY)", ()).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (db, done) = (db.clone(), done.clone());
        thread::spawn(move || {
            for seq in 0..2000 {
                if let Err(e) = db.execute("INSERT INTO rows (seq) VALUES (?1)", [seq]) {
                    panic!("write {seq} failed across the restart: {e}");
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    assert!(wait_until(Duration::from_secs(20), || done.load(std::sync::atomic::Ordering::Relaxed) >= 200));
    drop(b); // SIGKILL, with writes in flight
    let at_kill = done.load(std::sync::atomic::Ordering::Relaxed);
    let _b2 = Broker::start(&t.db(), &[]);
    writer.join().unwrap();
    assert!(at_kill < 2000, "the writes were over before the kill");
    eprintln!("{at_kill} of 2000 writes acknowledged when the broker was killed");
    let n: i64 = db.query_row("SELECT count(*) FROM rows", (), |r| r.get(0)).unwrap();
    assert_eq!(n, 2000);
}

/// Another program holds the write lock: the broker waits its schedule, the
/// handle retries with its policy, and the write is applied once when the lock
/// clears mid-way; a lock that outlasts the deadline is `is_locked()`.
#[cfg_attr(litebroker_wine, ignore = "drives the sqlite3 CLI, a Linux program Wine cannot start")]
#[test]
fn a_held_lock_is_waited_out_once_and_reported_as_locked() {
    let t = TestDir::new();
    let b = Broker::start(
        &t.db(),
        &["--busy-timeout-ms", "200", "--lock-retries", "1", "--retry-base-ms", "100"],
    );
    let db = Db::builder(t.db())
        .timeout(Duration::from_secs(20))
        .retry(RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_millis(400),
        })
        .open()
        .unwrap();
    db.execute("CREATE TABLE t (v TEXT)", ()).unwrap();
    let hold = |secs: f64| {
        let mut c = Command::new("sqlite3");
        c.arg(t.db());
        let mut p = Proc::spawn(c);
        p.send(&format!("BEGIN EXCLUSIVE;\n.print LOCKED\n.shell sleep {secs}\nCOMMIT;\n.print RELEASED"));
        assert_eq!(p.line(Duration::from_secs(20)).as_deref(), Some("LOCKED"));
        p
    };
    let _held = hold(2.0);
    let started = Instant::now();
    db.execute("INSERT INTO t VALUES ('once')", ()).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500), "{:?}", started.elapsed());
    let n: i64 = db.query_row("SELECT count(*) FROM t", (), |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
    let _held = hold(30.0);
    let e =
        db.with_timeout(Duration::from_secs(3)).execute("INSERT INTO t VALUES ('never')", ()).unwrap_err();
    assert!(e.is_locked(), "{e}");
    assert!(e.to_string().contains("Database is locked"), "{e}");
    drop(b);
    let e = Arc::new(db).execute("INSERT INTO t VALUES ('no broker')", ()).unwrap_err();
    assert!(e.is_broker_unavailable(), "{e}");
}
