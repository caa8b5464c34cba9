//! One measurement of one scenario: a fresh database (and broker, for the broker
//! scenarios), N worker processes started together for one window, and the
//! figures taken from their reports and the broker's counters.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use litebroker_client::protocol::{BrokerStatus, MetricValue};
use litebroker_tests::TestDir;
use serde_json::Value as Json;

use crate::scenario::{Mode, SyncMode, SCHEMA, WATCHERS};
use crate::worker::open_direct;

/// One measurement of one scenario.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub writes_per_s: f64,
    pub errors: BTreeMap<String, u64>,
    pub fairness: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub busy_per_commit: f64,
    pub busy_snapshot_per_commit: f64,
    pub rows_per_commit: Option<f64>,
    pub queue_wait_us: Option<f64>,
    pub commit_us: Option<f64>,
    pub rss_kb: Option<u64>,
    /// Share of the machine's CPU other processes used meanwhile.
    pub foreign: f64,
    /// `watch`: commit → delivery at the watchers (the worst watcher's), µs.
    pub delivery_p50_us: Option<f64>,
    /// See `delivery_p50_us`.
    pub delivery_p99_us: Option<f64>,
    /// `watch`: events the watchers received, and resyncs among them.
    pub watch_events: Option<(u64, u64)>,
    /// Group waits taken per group committed (`litebroker_group_wait_seconds`).
    pub waits_per_commit: Option<f64>,
    /// Requests that joined a group during its wait, per wait.
    pub joined_per_wait: Option<f64>,
    /// Mean group wait, µs.
    pub wait_us: Option<f64>,
    /// Mean turn of a one-shot write in its group transaction (savepoint,
    /// request id, statement), µs.
    pub execute_us: Option<f64>,
}

/// Figures from the broker's metrics, read before and after a measurement.
#[derive(Debug, Clone, Copy, Default)]
struct WriterFigures {
    /// Group waits taken, their total time (s), requests that joined during them.
    waits: u64,
    wait_s: f64,
    joined: u64,
    /// Turns of one-shot writes in their group transactions, their total time (s).
    turns: u64,
    turn_s: f64,
}

fn writer_figures(c: &mut litebroker_client::Client) -> Result<WriterFigures> {
    let m = c.metrics()?;
    let value = |name: &str| m.families.iter().find(|f| f.name == name).and_then(|f| f.series.first());
    let histogram = |name: &str| match value(name).map(|s| &s.value) {
        Some(MetricValue::Histogram(h)) => (h.counts.iter().sum(), h.sum),
        _ => (0, 0.0),
    };
    let (waits, wait_s) = histogram("litebroker_group_wait_seconds");
    let (turns, turn_s) = histogram("litebroker_write_execute_seconds");
    let joined = match value("litebroker_group_wait_joined_total").map(|s| &s.value) {
        Some(MetricValue::Number(n)) => *n as u64,
        _ => 0,
    };
    Ok(WriterFigures { waits, wait_s, joined, turns, turn_s })
}

/// The mean of what was added to a sum over what was added to its count.
fn delta_mean(sum: (f64, f64), count: (u64, u64)) -> Option<f64> {
    let n = count.1.saturating_sub(count.0);
    (n > 0).then(|| (sum.1 - sum.0) / n as f64)
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
}

/// Lines from the workers' stdout: (worker index, line).
type Lines = mpsc::Receiver<(usize, String)>;

fn spawn_workers(mode: Mode, db: &Path, sync: SyncMode, n: usize) -> Result<(Vec<Worker>, Lines)> {
    let exe = std::env::current_exe()?;
    let (tx, rx) = mpsc::channel();
    let mut workers = Vec::new();
    for i in 0..n {
        let mut child = Command::new(&exe)
            .args(["worker", "--mode", mode.worker_arg(), "--sync", sync.as_str()])
            .arg("--db")
            .arg(db)
            .arg("--client")
            .arg(i.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawn a worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((i, line)).is_err() {
                    break;
                }
            }
        });
        workers.push(Worker { child, stdin });
    }
    Ok((workers, rx))
}

/// Collects one line from each worker within `timeout`.
fn collect(rx: &Lines, n: usize, timeout: Duration, what: &str) -> Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut got: Vec<Option<String>> = vec![None; n];
    while got.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, line)) => got[i] = Some(line),
            Err(_) => bail!("workers did not report {what} in time"),
        }
    }
    Ok(got.into_iter().flatten().collect())
}

fn num(j: &Json, k: &str) -> f64 {
    j[k].as_f64().unwrap_or(0.0)
}

fn delta_ratio(a: u64, b: u64, c: u64, d: u64) -> Option<f64> {
    let (n, m) = (b.saturating_sub(a), d.saturating_sub(c));
    (m > 0).then(|| n as f64 / m as f64)
}

/// Measures `mode` with `n` clients for `window`, in a fresh folder under `work`.
pub fn measure(mode: Mode, sync: SyncMode, n: usize, window: Duration, work: &Path) -> Result<Sample> {
    // Start every measurement with no dirty pages left by the previous one: their
    // write-back would slow this one's fsyncs.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let dir = TestDir::new_in(work);
    let db = dir.db();
    std::fs::create_dir_all(db.parent().context("the database's folder")?)?;
    {
        let c = open_direct(&db, sync)?;
        c.execute_batch(SCHEMA)?;
    }
    let mut broker = None;
    if mode.uses_broker() {
        broker = Some(crate::broker::start(&db, sync, mode.broker_args())?);
    }
    // The `watch` scenario's watchers subscribe before the writers start.
    let mut watchers = None;
    if mode == Mode::Watch {
        let (w, wrx) = spawn_workers(Mode::Watcher, &db, sync, WATCHERS)?;
        let ready = collect(&wrx, WATCHERS, Duration::from_secs(60), "ready")?;
        if let Some(bad) = ready.iter().find(|l| l.as_str() != "ready") {
            bail!("a watcher said {bad:?} instead of ready");
        }
        watchers = Some((w, wrx));
    }
    let (mut workers, rx) = spawn_workers(mode, &db, sync, n)?;
    let ready = collect(&rx, n, Duration::from_secs(60), "ready")?;
    if let Some(bad) = ready.iter().find(|l| l.as_str() != "ready") {
        bail!("a worker said {bad:?} instead of ready");
    }
    let before: Option<BrokerStatus> = broker.as_mut().map(|b| b.client.status()).transpose()?;
    let waits_before = broker.as_mut().map(|b| writer_figures(&mut b.client)).transpose()?;
    let start = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() + 100_000_000;
    for w in workers.iter_mut().chain(watchers.iter_mut().flat_map(|(w, _)| w.iter_mut())) {
        writeln!(w.stdin, "go {start} {}", window.as_nanos())?;
        w.stdin.flush()?;
    }
    // Deferred writers may retry for 5 s and immediate ones wait out busy_timeout
    // past the window; bulk batches may take long on a slow disk.
    let results = collect(&rx, n, window + Duration::from_secs(120), "results")?;
    for w in &mut workers {
        let st = w.child.wait()?;
        if !st.success() {
            bail!("a {} worker failed ({st})", mode.worker_arg());
        }
    }
    let after: Option<BrokerStatus> = broker.as_mut().map(|b| b.client.status()).transpose()?;
    let waits_after = broker.as_mut().map(|b| writer_figures(&mut b.client)).transpose()?;
    let mut s = Sample::default();
    if let Some((mut w, wrx)) = watchers {
        let lines = collect(&wrx, WATCHERS, window + Duration::from_secs(60), "watcher results")?;
        for c in &mut w {
            if !c.child.wait()?.success() {
                bail!("a watcher failed");
            }
        }
        let parsed: Vec<Json> = lines
            .iter()
            .map(|l| serde_json::from_str(l))
            .collect::<Result<_, _>>()
            .context("watcher output")?;
        let worst = |k: &str| parsed.iter().map(|j| num(j, k)).fold(0.0, f64::max) / 1000.0;
        s.delivery_p50_us = Some(worst("p50_ns"));
        s.delivery_p99_us = Some(worst("p99_ns"));
        let sum = |k: &str| parsed.iter().map(|j| j[k].as_u64().unwrap_or(0)).sum::<u64>();
        s.watch_events = Some((sum("events"), sum("resyncs")));
    }
    let parsed: Vec<Json> =
        results.iter().map(|l| serde_json::from_str(l)).collect::<Result<_, _>>().context("worker output")?;
    let writes: Vec<f64> = parsed.iter().map(|j| num(j, "writes")).collect();
    let total: f64 = writes.iter().sum();
    s.writes_per_s = if mode.is_bulk() {
        let busy: f64 = parsed.iter().map(|j| num(j, "busy_time_s")).sum();
        if busy > 0.0 {
            total / busy
        } else {
            0.0
        }
    } else {
        total / window.as_secs_f64()
    };
    let (lo, hi) = writes.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &w| (lo.min(w), hi.max(w)));
    s.fairness = if hi > 0.0 { lo / hi } else { 0.0 };
    let worst = |k: &str| parsed.iter().map(|j| num(j, k)).fold(0.0, f64::max) / 1000.0;
    s.p50_us = worst("p50_ns");
    s.p99_us = worst("p99_ns");
    s.max_us = worst("max_ns");
    for j in &parsed {
        if let Some(m) = j["errors"].as_object() {
            for (k, v) in m {
                *s.errors.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
    }
    if total > 0.0 {
        s.busy_per_commit = parsed.iter().map(|j| num(j, "busy")).sum::<f64>() / total;
        s.busy_snapshot_per_commit = parsed.iter().map(|j| num(j, "busy_snapshot")).sum::<f64>() / total;
    }
    if let (Some(a), Some(b)) = (before, after) {
        s.rows_per_commit = delta_ratio(a.group_requests, b.group_requests, a.group_commits, b.group_commits);
        s.queue_wait_us = delta_ratio(a.queue_wait_us, b.queue_wait_us, a.queue_waits, b.queue_waits);
        s.commit_us = delta_ratio(a.commit_us, b.commit_us, a.group_commits, b.group_commits);
        if let (Some(wa), Some(wb)) = (waits_before, waits_after) {
            s.waits_per_commit = delta_ratio(wa.waits, wb.waits, a.group_commits, b.group_commits);
            s.joined_per_wait = delta_ratio(wa.joined, wb.joined, wa.waits, wb.waits);
            s.wait_us = delta_mean((wa.wait_s, wb.wait_s), (wa.waits, wb.waits)).map(|v| v * 1e6);
            s.execute_us = delta_mean((wa.turn_s, wb.turn_s), (wa.turns, wb.turns)).map(|v| v * 1e6);
        }
    }
    if let Some(b) = broker {
        s.rss_kb = Some(b.peak_rss_kb());
        b.stop()?;
    }
    Ok(s)
}
