//! One worker process (`lbbench worker`): warms up, says `ready`, waits for the
//! common start, writes in a closed loop until the window ends, and prints what it
//! measured as one JSON line.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use litebroker_client::{Client, ClientError, ConnectOptions, Db, Value, WriteOptions};
use rusqlite::Connection;
use serde_json::{json, Value as Json};

use crate::scenario::{payload, Mode, SyncMode, BULK_ROWS, INSERT, PIPELINE_IN_FLIGHT};
use crate::stats::percentile;

/// Each worker's untimed warm-up writes (page cache, statement cache, connection).
const WARMUP: usize = 20;
/// How long a deferred writer keeps retrying one transaction (the busy_timeout).
const DEFERRED_GIVE_UP: Duration = Duration::from_secs(5);

/// What one worker measured.
#[derive(Debug, Default)]
struct Tally {
    /// Rows written by operations that completed inside the window.
    writes: u64,
    /// Bulk modes: time spent in the timed operations.
    busy_time: Duration,
    errors: BTreeMap<String, u64>,
    busy: u64,
    busy_snapshot: u64,
    /// Per operation, ns (all operations started inside the window).
    lat: Vec<u64>,
}

impl Tally {
    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    fn report(&mut self) -> Json {
        self.lat.sort_unstable();
        json!({
            "writes": self.writes,
            "busy_time_s": self.busy_time.as_secs_f64(),
            "errors": self.errors,
            "busy": self.busy,
            "busy_snapshot": self.busy_snapshot,
            "p50_ns": percentile(&self.lat, 50.0),
            "p99_ns": percentile(&self.lat, 99.0),
            "max_ns": self.lat.last().copied().unwrap_or(0),
            "ops": self.lat.len(),
        })
    }
}

fn sqlite_kind(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.extended_code {
            rusqlite::ffi::SQLITE_BUSY => "busy".into(),
            rusqlite::ffi::SQLITE_BUSY_SNAPSHOT => "busy_snapshot".into(),
            rusqlite::ffi::SQLITE_LOCKED => "locked".into(),
            c => format!("sqlite_{c}"),
        },
        other => format!("other: {other}"),
    }
}

fn client_kind(e: &ClientError) -> String {
    match e {
        ClientError::Broker(info) => info.kind.as_str().to_owned(),
        ClientError::ConnectionLost { .. } => "connection_lost".into(),
        _ => "client".into(),
    }
}

/// A connection with the PRAGMAs of the broker's writer connection, for the
/// scenarios that write the file themselves (and to create the schema).
pub fn open_direct(db: &Path, sync: SyncMode) -> Result<Connection> {
    let c = Connection::open(db).with_context(|| format!("open {}", db.display()))?;
    c.busy_timeout(Duration::from_millis(5000))?;
    let mode: String = c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("journal mode stays {mode}");
    }
    c.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; \
         PRAGMA cache_size = -64000;",
        sync.as_str()
    ))?;
    Ok(c)
}

/// Waits for `go <start_unix_ns> <window_ns>` on stdin; returns the window.
fn await_go() -> Result<(Instant, Instant)> {
    println!("ready");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let mut it = line.split_whitespace();
    if it.next() != Some("go") {
        bail!("expected 'go', got {line:?}");
    }
    let start_unix: u128 = it.next().context("start")?.parse()?;
    let window: u64 = it.next().context("window")?.parse()?;
    let now_unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let start = Instant::now() + Duration::from_nanos(start_unix.saturating_sub(now_unix) as u64);
    while Instant::now() < start {
        std::thread::sleep(start.saturating_duration_since(Instant::now()).min(Duration::from_millis(5)));
    }
    Ok((start, start + Duration::from_nanos(window)))
}

/// Runs one worker of `mode` as client number `client` and prints its tally.
pub fn worker(mode: Mode, db: &Path, sync: SyncMode, client: usize) -> Result<()> {
    let text = payload(client);
    let mut t = Tally::default();
    match mode {
        Mode::Inprocess | Mode::DirectImmediate => {
            let c = open_direct(db, sync)?;
            let once = |c: &Connection| -> rusqlite::Result<()> {
                c.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
                c.prepare_cached(INSERT)?.execute([&text])?;
                c.prepare_cached("COMMIT")?.execute([])?;
                Ok(())
            };
            for _ in 0..WARMUP {
                once(&c)?;
            }
            let (_, end) = await_go()?;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = once(&c);
                let done = Instant::now();
                t.lat.push((done - t0).as_nanos() as u64);
                match r {
                    Ok(()) if done <= end => t.writes += 1,
                    Ok(()) => {}
                    Err(e) => {
                        t.error(sqlite_kind(&e));
                        if !c.is_autocommit() {
                            c.execute_batch("ROLLBACK").ok();
                        }
                    }
                }
            }
        }
        Mode::DirectDeferred => {
            let c = open_direct(db, sync)?;
            let once = |c: &Connection| -> rusqlite::Result<()> {
                c.prepare_cached("BEGIN")?.execute([])?;
                let _max: Option<i64> =
                    c.prepare_cached("SELECT max(id) FROM bench")?.query_row([], |r| r.get(0))?;
                c.prepare_cached(INSERT)?.execute([&text])?;
                c.prepare_cached("COMMIT")?.execute([])?;
                Ok(())
            };
            for _ in 0..WARMUP {
                // Warm-up may collide with other workers' warm-up: retry.
                while once(&c).is_err() {
                    if !c.is_autocommit() {
                        c.execute_batch("ROLLBACK").ok();
                    }
                }
            }
            let (_, end) = await_go()?;
            'ops: loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                loop {
                    let r = once(&c);
                    if r.is_err() && !c.is_autocommit() {
                        c.execute_batch("ROLLBACK").ok();
                    }
                    match r {
                        Ok(()) => {
                            let done = Instant::now();
                            t.lat.push((done - t0).as_nanos() as u64);
                            if done <= end {
                                t.writes += 1;
                            }
                            continue 'ops;
                        }
                        Err(e) => {
                            let kind = sqlite_kind(&e);
                            let retry = match kind.as_str() {
                                "busy" => {
                                    t.busy += 1;
                                    true
                                }
                                "busy_snapshot" => {
                                    t.busy_snapshot += 1;
                                    true
                                }
                                _ => false,
                            };
                            if !retry || t0.elapsed() >= DEFERRED_GIVE_UP {
                                t.lat.push(t0.elapsed().as_nanos() as u64);
                                t.error(kind);
                                continue 'ops;
                            }
                        }
                    }
                }
            }
        }
        Mode::InprocessBulk => {
            let c = open_direct(db, sync)?;
            let (_, end) = await_go()?;
            loop {
                let t0 = Instant::now();
                let r = (|| -> rusqlite::Result<()> {
                    c.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
                    let mut ins = c.prepare_cached(INSERT)?;
                    for _ in 0..BULK_ROWS {
                        ins.execute([&text])?;
                    }
                    drop(ins);
                    c.prepare_cached("COMMIT")?.execute([])?;
                    Ok(())
                })();
                let took = t0.elapsed();
                t.lat.push(took.as_nanos() as u64);
                match r {
                    Ok(()) => {
                        t.writes += BULK_ROWS as u64;
                        t.busy_time += took;
                    }
                    Err(e) => {
                        t.error(sqlite_kind(&e));
                        if !c.is_autocommit() {
                            c.execute_batch("ROLLBACK").ok();
                        }
                    }
                }
                if Instant::now() >= end {
                    break;
                }
            }
        }
        Mode::Watcher => return watcher(db, client),
        Mode::Ping => {
            let mut c = connect(db, client)?;
            for _ in 0..WARMUP {
                c.ping()?;
            }
            let (_, end) = await_go()?;
            closed_loop(&mut t, &mut c, end, db, client, |c| c.ping().map(drop))?;
        }
        Mode::Broker | Mode::BrokerNoIds | Mode::BrokerWait | Mode::Watch => {
            let mut c = connect(db, client)?;
            let params = [Value::Text(text.clone())];
            for _ in 0..WARMUP {
                c.execute(INSERT, &params)?;
            }
            let (_, end) = await_go()?;
            closed_loop(&mut t, &mut c, end, db, client, |c| c.execute(INSERT, &params).map(drop))?;
        }
        Mode::Pipeline => {
            let mut c = connect(db, client)?;
            let params = [Value::Text(text.clone())];
            for _ in 0..WARMUP {
                c.execute(INSERT, &params)?;
            }
            let (_, end) = await_go()?;
            let mut p = c.pipeline().with_depth(PIPELINE_IN_FLIGHT);
            // Each write's handle and when it was sent: its latency runs to its answer.
            let mut sent: std::collections::VecDeque<(litebroker_client::Pending, Instant)> =
                std::collections::VecDeque::with_capacity(PIPELINE_IN_FLIGHT);
            loop {
                let t0 = Instant::now();
                let full = sent.len() >= PIPELINE_IN_FLIGHT;
                if full || t0 >= end {
                    let Some((h, at)) = sent.pop_front() else { break };
                    let r = p.wait(h);
                    let done = Instant::now();
                    t.lat.push((done - at).as_nanos() as u64);
                    match r {
                        Ok(_) if done <= end => t.writes += 1,
                        Ok(_) => {}
                        Err(e) => t.error(client_kind(&e)),
                    }
                    continue;
                }
                match p.submit(INSERT, &params) {
                    Ok(h) => sent.push_back((h, t0)),
                    Err(e) => bail!("pipeline broke: {e}"),
                }
            }
        }
        Mode::DbApi => {
            let d = Db::builder(db).client_name(format!("lbbench-{client}")).open()?;
            for _ in 0..WARMUP {
                d.execute(INSERT, [&text])?;
            }
            let (_, end) = await_go()?;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = d.execute(INSERT, [&text]);
                let done = Instant::now();
                t.lat.push((done - t0).as_nanos() as u64);
                match r {
                    Ok(_) if done <= end => t.writes += 1,
                    Ok(_) => {}
                    // The handle reconnects by itself on its next call.
                    Err(e) => t.error(client_kind(&e)),
                }
            }
        }
        Mode::BrokerBulk => {
            let mut c = connect(db, client)?;
            c.set_timeout(Duration::from_secs(120));
            let (_, end) = await_go()?;
            loop {
                // A streamed executemany: the rows are made while they are sent
                // (an app streaming from its own source does the same), so making
                // them is inside the timed span, as the in-process loop binds each.
                let rows = (0..BULK_ROWS).map(|_| Ok(vec![Value::Text(text.clone())]));
                let t0 = Instant::now();
                let r = c.execute_many_with(INSERT, rows, WriteOptions::default());
                let took = t0.elapsed();
                t.lat.push(took.as_nanos() as u64);
                match r {
                    Ok(_) => {
                        t.writes += BULK_ROWS as u64;
                        t.busy_time += took;
                    }
                    Err(e) => t.error(client_kind(&e)),
                }
                if Instant::now() >= end {
                    break;
                }
            }
        }
    }
    println!("{}", t.report());
    Ok(())
}

/// A watcher of the `watch` scenario: subscribes to every table, then for each
/// event of a transaction committed inside the window takes the delay from its
/// commit (the broker's clock when COMMIT returned) to its arrival here.
fn watcher(db: &Path, client: usize) -> Result<()> {
    let d = Db::builder(db).client_name(format!("lbbench-watcher-{client}")).open()?;
    let mut w = d.watch_all();
    w.subscribe().context("subscribe")?;
    let (start, end) = await_go()?;
    // The window's ends on the wall clock the broker stamps commits with.
    let window_us = |i: Instant| {
        let (now, now_us) = (
            Instant::now(),
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |x| x.as_micros() as u64),
        );
        if i >= now {
            now_us + (i - now).as_micros() as u64
        } else {
            now_us.saturating_sub((now - i).as_micros() as u64)
        }
    };
    let (from_us, to_us) = (window_us(start), window_us(end));
    let (mut lat, mut events, mut resyncs) = (Vec::new(), 0u64, 0u64);
    // Events of the window's last commits arrive after it: a short grace.
    let stop = end + Duration::from_millis(500);
    while Instant::now() < stop {
        let Some(e) = w.next_timeout(stop.saturating_duration_since(Instant::now()))? else { break };
        let now_us = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64;
        events += 1;
        if e.is_resync() {
            resyncs += 1;
        } else if (from_us..to_us).contains(&e.committed_unix_us) {
            lat.push(now_us.saturating_sub(e.committed_unix_us) * 1000);
        }
    }
    lat.sort_unstable();
    println!(
        "{}",
        json!({
            "watcher": true,
            "events": events,
            "measured": lat.len(),
            "resyncs": resyncs,
            "p50_ns": percentile(&lat, 50.0),
            "p99_ns": percentile(&lat, 99.0),
            "max_ns": lat.last().copied().unwrap_or(0),
        })
    );
    Ok(())
}

/// One broker client's closed loop until `end`: each call timed, counted when
/// answered before `end`, its error kind tallied, the connection made again
/// when it broke.
fn closed_loop(
    t: &mut Tally,
    c: &mut Client,
    end: Instant,
    db: &Path,
    client: usize,
    mut call: impl FnMut(&mut Client) -> std::result::Result<(), ClientError>,
) -> Result<()> {
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            return Ok(());
        }
        let r = call(c);
        let done = Instant::now();
        t.lat.push((done - t0).as_nanos() as u64);
        match r {
            Ok(()) if done <= end => t.writes += 1,
            Ok(()) => {}
            Err(e) => {
                t.error(client_kind(&e));
                if c.is_broken() {
                    *c = connect(db, client)?;
                }
            }
        }
    }
}

fn connect(db: &Path, client: usize) -> Result<Client> {
    let opts = ConnectOptions::new(db).client_name(format!("lbbench-{client}"));
    Client::connect_with(&opts).context("connect to the broker")
}
