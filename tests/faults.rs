//! Exactly-once writes and crash safety, proven with real faults: `kill -9` of the
//! broker under load, a lost answer after a commit, a killed client in a write
//! session, a full disk, broker restarts under readers.
//!
//! The load test's duration is bounded and configurable: LITEBROKER_FAULT_SECS
//! (default 1) is the load between two kills.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use litebroker_client::{Client, ConnectOptions};
#[cfg(target_os = "linux")]
use litebroker_client::{ErrorKind, Reader, Value};
use litebroker_protocol::{Request, Response, Statement, WriteOptions};
use litebroker_tests::*;

const SCHEMA: &str = "CREATE TABLE counters (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL);
CREATE TABLE batches (marker TEXT NOT NULL, part INTEGER NOT NULL, counter_id INTEGER NOT NULL REFERENCES counters(id), PRIMARY KEY (marker, part));";

fn fault_secs() -> f64 {
    std::env::var("LITEBROKER_FAULT_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(1.0)
}

fn status_json(db: &Path) -> Option<serde_json::Value> {
    let o = cli(db, &["--json", "--timeout", "5", "status"]);
    o.status.success().then(|| serde_json::from_str(stdout(&o).trim()).ok()).flatten()
}

fn commits(db: &Path) -> u64 {
    status_json(db).and_then(|j| j["commits"].as_u64()).unwrap_or(0)
}

#[test]
fn kill_9_of_the_broker_under_load_loses_and_duplicates_nothing() {
    let t = TestDir::new();
    let db = t.db();
    let mut broker = Broker::start(&db, &[]);
    let counters: String = (1..=8).map(|i| format!("({i}, 0)")).collect::<Vec<_>>().join(", ");
    assert_exit(&cli(&db, &["exec", &format!("{SCHEMA} INSERT INTO counters VALUES {counters};")]), 0);

    let stop = t.path().join("stop");
    let clients: Vec<Proc> = (1..=8)
        .map(|c| {
            Proc::lbtool(&db, &["increments", "--client", &c.to_string(), "--until", stop.to_str().unwrap()])
        })
        .collect();
    for c in &clients {
        assert_eq!(c.json_line(Duration::from_secs(30))["started"], true);
    }
    let load = Duration::from_secs_f64(fault_secs());
    for kill in 1..=5 {
        // Let the load commit for a while on this broker, then kill it mid-flight.
        let base = commits(&db);
        assert!(
            wait_until(Duration::from_secs(30), || commits(&db) >= base + 50),
            "no progress before kill {kill}:\n{}",
            broker.log()
        );
        std::thread::sleep(load); // the load itself, not a synchronisation
        broker.kill9();
        broker = Broker::start(&db, &[]);
    }
    let base = commits(&db);
    assert!(
        wait_until(Duration::from_secs(30), || commits(&db) >= base + 50),
        "no progress after the last restart"
    );
    std::fs::write(&stop, b"").unwrap();

    let mut acked_inc = BTreeMap::new();
    let mut acked_markers = BTreeSet::new();
    let mut reconnects = 0;
    for (i, mut c) in clients.into_iter().enumerate() {
        let j = c.json_line(Duration::from_secs(60));
        c.wait_exit(Duration::from_secs(30));
        assert_eq!(j["errors"], 0, "client {} saw errors: {j}", i + 1);
        acked_inc.insert(j["client"].as_i64().unwrap(), j["acked_increments"].as_i64().unwrap());
        for m in j["acked_batches"].as_array().unwrap() {
            acked_markers.insert(m.as_str().unwrap().to_owned());
        }
        reconnects += j["reconnects"].as_u64().unwrap();
    }
    assert!(reconnects >= 8, "the clients did not live through the kills (reconnects {reconnects})");

    let conn = open_ro(&db);
    for (client, acked) in &acked_inc {
        let qty: i64 =
            conn.query_row("SELECT qty FROM counters WHERE id = ?1", [client], |r| r.get(0)).unwrap();
        assert_eq!(qty, *acked, "client {client}: every acknowledged increment applied exactly once");
    }
    let mut st = conn.prepare("SELECT marker, count(*) FROM batches GROUP BY marker").unwrap();
    let in_db: BTreeMap<String, i64> =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    assert!(in_db.values().all(|n| *n == 3), "a batch is partially present: {in_db:?}");
    let present: BTreeSet<String> = in_db.keys().cloned().collect();
    assert_eq!(present, acked_markers, "batches present = batches acknowledged");
    assert_eq!(integrity(&db), "ok");
    assert_eq!(foreign_key_violations(&db), 0);
}

#[test]
fn an_answer_lost_after_commit_is_resent_and_applied_once() {
    let t = TestDir::new();
    let db = t.db();
    let mut b = Broker::start(&db, &[]);
    assert_exit(&cli(&db, &["exec", &format!("{SCHEMA} INSERT INTO counters VALUES (1, 0);")]), 0);
    assert_exit(&cli(&db, &["shutdown"]), 0);
    b.wait_exit(Duration::from_secs(20));
    // This broker aborts right after committing the next write, before answering.
    let mut crashing = Broker::spawn_with(&db, &[], |c| {
        c.env("LITEBROKER_FAILPOINT", "crash-after-commit:1");
    })
    .ready();
    let restart = {
        let db = db.clone();
        std::thread::spawn(move || {
            assert!(crashing.wait_exit(Duration::from_secs(30)).is_some(), "the failpoint did not fire");
            assert!(crashing.log().contains("failpoint crash-after-commit reached"));
            Broker::start(&db, &[])
        })
    };
    let mut client = Client::connect_with(&ConnectOptions::new(&db).client_name("resender")).unwrap();
    let r = client
        .execute("UPDATE counters SET qty = qty + 1 WHERE id = 1", &[])
        .expect("acknowledged after resend");
    assert_eq!(r.changes, 1, "the stored answer of the first attempt");
    assert_eq!(client.reconnects(), 1);
    let broker = restart.join().unwrap();
    assert_eq!(query_i64(&db, "SELECT qty FROM counters WHERE id = 1"), 1, "applied exactly once");
    let stats = json_out(&cli(&db, &["--json", "stats"]));
    assert_eq!(stats["broker"]["deduplicated"], 1, "{stats}");
    assert!(stats["broker"]["request_ids_recorded"].as_u64().unwrap() >= 1);
    drop(broker);
}

/// A write that arrives while the broker is still starting is recorded under its
/// request id like any other: a connection thread may serve a write itself
/// (when the writer is free), and it once could before the writer had turned
/// recording on, so the resend of such a write was applied again (seen as a
/// flaky `an_answer_lost_after_commit…`, about 1 run in 12 on a loaded machine;
/// the window is too narrow to hit on purpose on an idle one, so this test
/// guards the order — start, then share — rather than reproducing the race).
#[test]
fn a_write_sent_the_moment_the_broker_listens_is_recorded_and_its_resend_deduplicated() {
    let t = TestDir::new();
    let db = t.db();
    let first = Broker::start(&db, &[]);
    assert_exit(&cli(&db, &["exec", &format!("{SCHEMA} INSERT INTO counters VALUES (1, 0);")]), 0);
    let socket = first.socket.clone();
    drop(first);
    const ROUNDS: u8 = 8;
    for round in 1..=ROUNDS {
        let b = Broker::spawn(&db, &[]);
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        // Connect as soon as the socket accepts, without waiting for readiness.
        let c = loop {
            if let Ok(c) = RawConn::try_connect(&socket) {
                break c;
            }
            assert!(std::time::Instant::now() < deadline, "the broker never listened:\n{}", b.log());
            std::thread::yield_now();
        };
        c.set_recv_timeout(Some(RawConn::TIMEOUT));
        c.handshake("early-writer");
        let write = Request::Execute {
            stmt: Statement::new("UPDATE counters SET qty = qty + 1 WHERE id = 1", vec![]),
            opts: WriteOptions { request_id: Some([round; 16]), ..WriteOptions::default() },
        };
        for attempt in ["first", "resend"] {
            match c.round_trip(&write) {
                Response::Executed(r) => assert_eq!(r.changes, 1, "round {round}, {attempt}"),
                other => panic!("round {round}, {attempt}: {other:?}"),
            }
        }
        let b = b.ready();
        assert_eq!(
            query_i64(&db, "SELECT qty FROM counters WHERE id = 1"),
            i64::from(round),
            "round {round}: applied exactly once\n{}",
            b.log()
        );
        drop(c);
        drop(b);
    }
}

#[test]
fn with_request_ids_disabled_a_lost_answer_is_reported_not_resent() {
    let t = TestDir::new();
    let db = t.db();
    let mut b = Broker::start(&db, &["--request-id-retention-hours", "0"]);
    assert_exit(&cli(&db, &["exec", &format!("{SCHEMA} INSERT INTO counters VALUES (1, 0);")]), 0);
    assert_exit(&cli(&db, &["shutdown"]), 0);
    b.wait_exit(Duration::from_secs(20));
    let mut crashing = Broker::spawn_with(&db, &["--request-id-retention-hours", "0"], |c| {
        c.env("LITEBROKER_FAILPOINT", "crash-after-commit:1");
    })
    .ready();
    let restart = {
        let db = db.clone();
        std::thread::spawn(move || {
            crashing.wait_exit(Duration::from_secs(30));
            Broker::start(&db, &["--request-id-retention-hours", "0"])
        })
    };
    let mut client = Client::connect(&db).unwrap();
    let err = client.execute("UPDATE counters SET qty = qty + 1 WHERE id = 1", &[]).unwrap_err();
    assert!(err.to_string().contains("may or may not have been applied"), "{err}");
    let _broker = restart.join().unwrap();
    assert_eq!(query_i64(&db, "SELECT qty FROM counters WHERE id = 1"), 1, "applied once, never resent");
}

#[test]
fn kill_9_of_a_client_in_a_write_session_rolls_back_and_spares_the_others() {
    let t = TestDir::new();
    let db = t.db();
    let b = Broker::start(&db, &[]);
    assert_exit(&cli(&db, &["exec", &format!("{SCHEMA} INSERT INTO counters VALUES (1, 0), (2, 0);")]), 0);
    let stop = t.path().join("stop");
    let other = Proc::lbtool(&db, &["increments", "--client", "2", "--until", stop.to_str().unwrap()]);
    assert_eq!(other.json_line(Duration::from_secs(20))["started"], true);
    let mut victim = Proc::lbtool(
        &db,
        &[
            "session",
            "--sql",
            "UPDATE counters SET qty = qty + 1000 WHERE id = 1",
            "--sql",
            "INSERT INTO batches VALUES ('victim', 1, 1)",
        ],
    );
    assert_eq!(victim.json_line(Duration::from_secs(20))["in_session"], true);
    victim.kill9();
    assert!(wait_until(Duration::from_secs(10), || b
        .log()
        .contains("disconnected during its write session")));
    let base = commits(&db);
    assert!(wait_until(Duration::from_secs(20), || commits(&db) >= base + 20), "the other client is stuck");
    std::fs::write(&stop, b"").unwrap();
    let j = other.json_line(Duration::from_secs(30));
    assert_eq!(j["errors"], 0, "{j}");
    assert_eq!(
        query_i64(&db, "SELECT qty FROM counters WHERE id = 1"),
        0,
        "the killed session was rolled back"
    );
    assert_eq!(query_i64(&db, "SELECT count(*) FROM batches WHERE marker = 'victim'"), 0);
    assert_eq!(
        query_i64(&db, "SELECT qty FROM counters WHERE id = 2"),
        j["acked_increments"].as_i64().unwrap()
    );
    assert_eq!(integrity(&db), "ok");
}

/// A small tmpfs mounted for the test (root only), unmounted on drop.
#[cfg(target_os = "linux")]
struct SmallFs(std::path::PathBuf);

#[cfg(target_os = "linux")]
impl SmallFs {
    fn mount(dir: &Path, size: &str) -> Option<SmallFs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallFs(dir.to_path_buf()))
    }
}

#[cfg(target_os = "linux")]
impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_is_a_clear_error_and_writes_resume_once_space_is_freed() {
    let t = TestDir::new();
    let small = t.path().join("small");
    // As root the database goes on a 4 MB tmpfs; otherwise the broker gets a
    // file-size limit (RLIMIT_FSIZE), the other way to run out of room.
    let mounted = SmallFs::mount(&small, "4m");
    let db = small.join("data").join("app.db");
    let filler = small.join("filler");
    let broker = if mounted.is_some() {
        std::fs::write(&filler, vec![0u8; 2_500_000]).unwrap();
        Broker::start(&db, &[])
    } else {
        std::fs::create_dir_all(&small).unwrap();
        Broker::spawn_with(&db, &[], |c| {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; it only limits the child.
            unsafe {
                c.pre_exec(|| {
                    let lim = libc::rlimit { rlim_cur: 1_500_000, rlim_max: libc::RLIM_INFINITY };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        })
        .ready()
    };
    assert_exit(&cli(&db, &["exec", "CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)"]), 0);
    let mut c = Client::connect(&db).unwrap();
    let mut written = 0;
    let err = loop {
        match c.execute("INSERT INTO blobs (b) VALUES (randomblob(20000))", &[]) {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 1000, "the disk never filled");
    };
    assert!(written > 5, "failed too early: {err}");
    if mounted.is_some() {
        assert_eq!(err.kind(), Some(ErrorKind::DiskFull), "{err}");
        assert!(err.to_string().contains("full"), "{err}");
    } else {
        assert!(matches!(err.kind(), Some(ErrorKind::DiskFull | ErrorKind::Sql)), "{err}");
    }
    // Nothing of the failed write is there, and the broker still serves.
    assert_eq!(query_i64(&db, "SELECT count(*) FROM blobs"), written);
    assert!(status_json(&db).is_some(), "status fails after the disk filled");
    let r = Reader::open(&db).unwrap();
    assert_eq!(r.query_value("SELECT count(*) FROM blobs", &[]).unwrap(), Some(Value::Integer(written)));

    if mounted.is_some() {
        std::fs::remove_file(&filler).unwrap();
        c.execute("INSERT INTO blobs (b) VALUES (randomblob(20000))", &[])
            .expect("writes resume after space is freed");
        assert_eq!(query_i64(&db, "SELECT count(*) FROM blobs"), written + 1);
    }
    assert_eq!(integrity(&db), "ok");
    drop(broker);
}

#[test]
fn readers_keep_reading_while_the_broker_restarts() {
    let t = TestDir::new();
    let db = t.db();
    let mut broker = Broker::start(&db, &[]);
    assert_exit(
        &cli(
            &db,
            &[
                "exec",
                "CREATE TABLE rows (client INTEGER, seq INTEGER, payload TEXT, PRIMARY KEY (client, seq))",
            ],
        ),
        0,
    );
    let until = t.path().join("stop");
    let mut readers: Vec<Proc> =
        (0..2).map(|_| Proc::lbtool(&db, &["read-loop", "--until", until.to_str().unwrap()])).collect();
    let writer = Proc::lbtool(&db, &["write", "--client", "1", "--count", "400"]);
    for round in 0..2 {
        assert!(wait_until(Duration::from_secs(30), || query_i64(&db, "SELECT count(*) FROM rows")
            >= 50 * (round + 1)));
        if round == 0 {
            #[cfg(unix)]
            broker.sigterm();
            #[cfg(not(unix))]
            assert_exit(&cli(&db, &["shutdown"]), 0);
            broker.wait_exit(Duration::from_secs(20)).expect("clean stop");
        } else {
            broker.kill9();
        }
        broker = Broker::start(&db, &[]);
    }
    let w = writer.json_line(Duration::from_secs(60));
    assert_eq!(w["errors"], 0, "{w}");
    std::fs::write(&until, b"").unwrap();
    for r in &mut readers {
        let j = r.json_line(Duration::from_secs(30));
        assert_eq!(j["errors"], 0, "a reader failed during the restarts: {j}");
        assert!(j["reads"].as_u64().unwrap() > 10, "{j}");
    }
    assert_eq!(query_i64(&db, "SELECT count(*) FROM rows"), 400);
    drop(broker);
}
