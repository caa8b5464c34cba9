//! What a run reports: each scenario's median and range over its repetitions, the
//! targets as ratios from the same run, the table, the JSON line, and the files
//! they are saved in.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value as Json};

use crate::load::{Load, LoadFigures};
use crate::measure::Sample;
use crate::scenario::{Mode, SyncMode, WATCHERS, WATCH_WRITERS};
use crate::stats::median;

/// Median and range over the repetitions of one scenario.
#[derive(Debug)]
pub struct Summary {
    pub mode: Mode,
    pub sync: SyncMode,
    pub clients: usize,
    pub samples: Vec<Sample>,
}

impl Summary {
    fn med(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(self.samples.iter().map(f).collect())
    }

    fn range(&self, f: impl Fn(&Sample) -> f64) -> (f64, f64) {
        self.samples.iter().map(f).fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
    }

    fn opt_med(&self, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.samples.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(v))
    }

    fn writes(&self) -> f64 {
        self.med(|s| s.writes_per_s)
    }

    fn errors(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for s in &self.samples {
            for (k, v) in &s.errors {
                *all.entry(k.clone()).or_default() += v;
            }
        }
        all
    }

    fn error_count(&self) -> u64 {
        self.errors().values().sum()
    }

    /// The worst latency seen in any repetition.
    fn max_us(&self) -> f64 {
        self.range(|s| s.max_us).1
    }

    fn to_json(&self) -> Json {
        let (lo, hi) = self.range(|s| s.writes_per_s);
        let (flo, _) = self.range(|s| s.fairness);
        let (p99lo, p99hi) = self.range(|s| s.p99_us);
        let mut j = json!({
            "name": self.mode.scenario(),
            "sync": self.sync.as_str(),
            "clients": self.clients,
            "batch": self.mode.batch(),
            "writes_per_s": round(self.writes()),
            "writes_per_s_range": [round(lo), round(hi)],
            "errors": self.error_count(),
            "errors_by_kind": self.errors(),
            "fairness": round3(self.med(|s| s.fairness)),
            "fairness_min": round3(flo),
            "p50_us": round1(self.med(|s| s.p50_us)),
            "p99_us": round1(self.med(|s| s.p99_us)),
            "p99_us_range": [round1(p99lo), round1(p99hi)],
            "max_us": round1(self.max_us()),
            "rows_per_commit": self.opt_med(|s| s.rows_per_commit).map(round2),
            "repeats": self.samples.len(),
        });
        if self.mode == Mode::DirectDeferred {
            j["busy_per_commit"] = json!(round2(self.med(|s| s.busy_per_commit)));
            j["busy_snapshot_per_commit"] = json!(round2(self.med(|s| s.busy_snapshot_per_commit)));
        }
        if self.mode.uses_broker() {
            j["queue_wait_mean_us"] = json!(self.opt_med(|s| s.queue_wait_us).map(round1));
            j["commit_mean_us"] = json!(self.opt_med(|s| s.commit_us).map(round1));
            j["group_waits_per_commit"] = json!(self.opt_med(|s| s.waits_per_commit).map(round2));
            j["group_wait_joined_per_wait"] = json!(self.opt_med(|s| s.joined_per_wait).map(round2));
            j["group_wait_mean_us"] = json!(self.opt_med(|s| s.wait_us).map(round1));
            j["execute_mean_us"] = json!(self.opt_med(|s| s.execute_us).map(round1));
            j["broker_peak_rss_kb"] = json!(self.samples.iter().filter_map(|s| s.rss_kb).max());
        }
        j
    }
}

fn round(v: f64) -> f64 {
    v.round()
}
fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The machine in one line: CPU model, vCPUs, memory, kernel.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cpu}, {cpus} vCPU, {mem_gib:.0} GiB RAM, Linux {}", kernel.trim())
}

fn find(all: &[Summary], mode: Mode, sync: SyncMode, n: usize) -> Option<&Summary> {
    all.iter().find(|s| s.mode == mode && s.sync == sync && s.clients == n)
}

/// The performance targets, as ratios from this run.
fn targets(all: &[Summary], rtt_p50: f64, loads: &[LoadFigures]) -> Vec<Json> {
    let mut out = Vec::new();
    let mut push = |name: String, value: f64, goal: String, met: bool| {
        out.push(json!({ "target": name, "value": round2(value), "goal": goal, "met": met }));
    };
    for (sync, factor) in [(SyncMode::Normal, 1.5), (SyncMode::Full, 5.0)] {
        let (Some(b), Some(d)) =
            (find(all, Mode::Broker, sync, 8), find(all, Mode::DirectImmediate, sync, 8))
        else {
            continue;
        };
        let s = sync.as_str();
        let ratio = b.writes() / d.writes().max(1.0);
        push(
            format!("{s} 8 clients: broker / direct-immediate writes/s"),
            ratio,
            format!(">= {factor}"),
            ratio >= factor,
        );
        let e = b.error_count() as f64;
        push(format!("{s} 8 clients: broker errors"), e, "0".into(), e == 0.0);
        let f = b.range(|x| x.fairness).0;
        push(format!("{s} 8 clients: broker fairness (worst repetition)"), f, ">= 0.8".into(), f >= 0.8);
        if sync == SyncMode::Normal {
            let m = b.max_us() / 1000.0;
            push(format!("{s} 8 clients: broker worst-client max latency, ms"), m, "<= 50".into(), m <= 50.0);
        }
    }
    // The IPC ceiling: one-row writes against `Ping`s through the same broker.
    if let (Some(b), Some(p)) =
        (find(all, Mode::Broker, SyncMode::Normal, 8), find(all, Mode::Ping, SyncMode::Normal, 8))
    {
        let ratio = b.writes() / p.writes().max(1.0);
        push(
            "normal 8 clients: closed-loop one-row writes / ping, per s".into(),
            ratio,
            ">= 0.7".into(),
            ratio >= 0.7,
        );
    }
    // The group wait (off by default) against none, in the same rounds.
    if let (Some(b), Some(w)) =
        (find(all, Mode::Broker, SyncMode::Full, 1), find(all, Mode::BrokerWait, SyncMode::Full, 1))
    {
        let ratio = w.med(|s| s.p50_us) / b.med(|s| s.p50_us).max(0.001);
        push(
            "full 1 client: broker p50 with the group wait / without (noise: ±5%)".into(),
            ratio,
            "<= 1.05".into(),
            ratio <= 1.05,
        );
    }
    if let (Some(b), Some(w)) =
        (find(all, Mode::Broker, SyncMode::Full, 8), find(all, Mode::BrokerWait, SyncMode::Full, 8))
    {
        let ratio = w.writes() / b.writes().max(1.0);
        push(
            "full 8 clients: broker writes/s with the group wait / without".into(),
            ratio,
            ">= 1.0".into(),
            ratio >= 1.0,
        );
        let ratio = w.writes()
            / find(all, Mode::DirectImmediate, SyncMode::Full, 8).map_or(1.0, |d| d.writes().max(1.0));
        push(
            "full 8 clients: broker with the group wait / direct-immediate writes/s".into(),
            ratio,
            ">= 5".into(),
            ratio >= 5.0,
        );
    }
    if let Some(b) = find(all, Mode::Broker, SyncMode::Normal, 1) {
        let p50 = b.med(|s| s.p50_us);
        push(
            "normal 1 client: broker p50 - socket RTT p50, µs".into(),
            p50 - rtt_p50,
            "<= 20".into(),
            p50 - rtt_p50 <= 20.0,
        );
    }
    for n in [1, 8] {
        if let (Some(b), Some(d)) =
            (find(all, Mode::Broker, SyncMode::Normal, n), find(all, Mode::DbApi, SyncMode::Normal, n))
        {
            let extra = d.med(|s| s.p50_us) - b.med(|s| s.p50_us);
            push(
                format!("normal {n} client(s): db-api p50 - broker (raw Client) p50, µs"),
                extra,
                "<= 5".into(),
                extra <= 5.0,
            );
        }
    }
    if let (Some(b), Some(w)) = (
        find(all, Mode::Broker, SyncMode::Normal, WATCH_WRITERS),
        find(all, Mode::Watch, SyncMode::Normal, WATCH_WRITERS),
    ) {
        let p50 = w.med(|s| s.delivery_p50_us.unwrap_or(f64::MAX)) / 1000.0;
        let p99 = w.med(|s| s.delivery_p99_us.unwrap_or(f64::MAX)) / 1000.0;
        push(
            format!("normal watch: commit -> delivery p50 ({WATCHERS} watchers), ms"),
            p50,
            "<= 1".into(),
            p50 <= 1.0,
        );
        push(
            format!("normal watch: commit -> delivery p99 ({WATCHERS} watchers), ms"),
            p99,
            "<= 5".into(),
            p99 <= 5.0,
        );
        let ratio = w.writes() / b.writes().max(1.0);
        push(
            format!("normal {WATCH_WRITERS} clients: writes/s with {WATCHERS} watchers / without"),
            ratio,
            ">= 0.9".into(),
            ratio >= 0.9,
        );
    }
    for sync in [SyncMode::Normal, SyncMode::Full] {
        let s = sync.as_str();
        if let (Some(p), Some(b)) = (find(all, Mode::Pipeline, sync, 1), find(all, Mode::Broker, sync, 1)) {
            let ratio = p.writes() / b.writes().max(1.0);
            push(
                format!("{s} 1 client: pipeline / broker (closed loop) writes/s"),
                ratio,
                ">= 5".into(),
                ratio >= 5.0,
            );
        }
        if let (Some(p), Some(d)) =
            (find(all, Mode::Pipeline, sync, 8), find(all, Mode::DirectImmediate, sync, 8))
        {
            let ratio = p.writes() / d.writes().max(1.0);
            push(
                format!("{s} 8 clients: pipeline / direct-immediate writes/s"),
                ratio,
                ">= 1.0".into(),
                ratio >= 1.0,
            );
            let e = p.error_count() as f64;
            push(format!("{s} 8 clients: pipeline errors"), e, "0".into(), e == 0.0);
            let f = p.range(|x| x.fairness).0;
            push(
                format!("{s} 8 clients: pipeline fairness (worst repetition)"),
                f,
                ">= 0.8".into(),
                f >= 0.8,
            );
        }
    }
    for sync in [SyncMode::Normal, SyncMode::Full] {
        if let (Some(b), Some(i)) =
            (find(all, Mode::BrokerBulk, sync, 1), find(all, Mode::InprocessBulk, sync, 1))
        {
            // The streamed executemany's goal: most of what one process gets alone.
            let ratio = b.writes() / i.writes().max(1.0);
            push(
                format!("{}: broker-bulk / inprocess single-transaction rows/s", sync.as_str()),
                ratio,
                ">= 0.8".into(),
                ratio >= 0.8,
            );
        }
    }
    // The goals are the import's; `batch` is reported without one.
    if let Some(f) = loads.iter().find(|f| f.load == Load::Import) {
        let (_, _, ratio) = f.medians();
        let s = f.sync.as_str();
        push(
            format!("{s}: import rows/s, litebroker import / sqlite3 .import"),
            ratio,
            ">= 0.8".into(),
            ratio >= 0.8,
        );
        let rss = f.peak_rss_mib();
        push(format!("{s}: broker peak RSS during the import, MiB"), rss, "<= 64".into(), rss <= 64.0);
    }
    out
}

fn table(all: &[Summary], rtt: (f64, f64)) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| scenario | sync | N | batch | writes/s (median) | range | errors | fairness | p50 µs | p99 µs | max µs | rows/commit | notes |"
    );
    let _ = writeln!(t, "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|");
    for s in all {
        let (lo, hi) = s.range(|x| x.writes_per_s);
        let errors = s.error_count();
        let errors = if errors == 0 {
            "0".to_owned()
        } else {
            let kinds: Vec<String> = s.errors().iter().map(|(k, v)| format!("{k} {v}")).collect();
            format!("{errors} ({})", kinds.join(", "))
        };
        let mut notes = Vec::new();
        if s.mode == Mode::DirectDeferred {
            notes.push(format!(
                "BUSY/commit {:.2}, BUSY_SNAPSHOT/commit {:.2}",
                s.med(|x| x.busy_per_commit),
                s.med(|x| x.busy_snapshot_per_commit)
            ));
        }
        if s.mode.uses_broker() {
            if let Some(q) = s.opt_med(|x| x.queue_wait_us) {
                notes.push(format!("queue wait {q:.0} µs"));
            }
            if let Some(c) = s.opt_med(|x| x.commit_us) {
                notes.push(format!("COMMIT {c:.0} µs"));
            }
            if let Some(e) = s.opt_med(|x| x.execute_us) {
                notes.push(format!("execute {e:.0} µs/write"));
            }
            if let Some(w) = s.opt_med(|x| x.waits_per_commit).filter(|w| *w > 0.0) {
                let joined = s.opt_med(|x| x.joined_per_wait).unwrap_or(0.0);
                let mean = s.opt_med(|x| x.wait_us).unwrap_or(0.0);
                notes.push(format!("group waits/commit {w:.2}, {mean:.0} µs, joined/wait {joined:.2}"));
            }
            if let Some(r) = s.samples.iter().filter_map(|x| x.rss_kb).max() {
                notes.push(format!("RSS {:.1} MiB", r as f64 / 1024.0));
            }
        }
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {:.0} | {:.0}–{:.0} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {} | {} |",
            s.mode.scenario(),
            s.sync.as_str(),
            s.clients,
            s.mode.batch(),
            s.writes(),
            lo,
            hi,
            errors,
            s.med(|x| x.fairness),
            s.med(|x| x.p50_us),
            s.med(|x| x.p99_us),
            s.max_us(),
            s.opt_med(|x| x.rows_per_commit).map_or("–".into(), |r| format!("{r:.2}")),
            notes.join("; "),
        );
    }
    let _ = writeln!(
        t,
        "\nsocket round trip (small frame, two processes): p50 {:.1} µs, p99 {:.1} µs",
        rtt.0, rtt.1
    );
    t
}

/// Everything a run measured, for [`publish`].
pub struct Run<'a> {
    pub machine: &'a str,
    pub quick: bool,
    pub secs: f64,
    pub repeats: usize,
    /// How long the run took, s.
    pub took_s: f64,
    pub all: &'a [Summary],
    /// Socket round trip p50 and p99, µs.
    pub rtt: (f64, f64),
    /// Broker ping p50, µs.
    pub ping: f64,
    /// fdatasync p50 before and after the run, µs.
    pub fsync: (f64, f64),
    /// Measurements redone because other processes disturbed them.
    pub redone: usize,
    /// The file-load scenarios that ran.
    pub loads: &'a [LoadFigures],
}

/// Prints the report (text, then one JSON line) and saves both under `out`:
/// time-stamped and as `latest-<quick|full>`.
pub fn publish(r: &Run, out: &Path) -> Result<()> {
    let goals = targets(r.all, r.rtt.0, r.loads);
    let mut text = format!(
        "lbbench on {}\n{} s per measurement, {} repetitions (median, range over repetitions; \
         latency = worst client, max = worst repetition); run took {:.0} s\n\n",
        r.machine, r.secs, r.repeats, r.took_s
    );
    let _ = writeln!(
        text,
        "disk: fdatasync of a 4 KiB append p50 {:.0} µs before the run, {:.0} µs after it",
        r.fsync.0, r.fsync.1
    );
    let worst_foreign = r.all.iter().flat_map(|s| &s.samples).map(|s| s.foreign).fold(0.0, f64::max);
    let _ = writeln!(
        text,
        "other processes: at most {:.0}% of the CPUs during a kept measurement; {} disturbed measurement(s) redone\n",
        worst_foreign * 100.0,
        r.redone
    );
    text.push_str(&table(r.all, r.rtt));
    let _ = writeln!(text, "broker ping (Ping request, no writer): p50 {:.1} µs", r.ping);
    for f in r.loads {
        let _ = writeln!(text, "{}", f.line());
    }
    text.push_str("\ntargets:\n");
    for g in &goals {
        let _ = writeln!(
            text,
            "  [{}] {}: {} (goal {})",
            if g["met"].as_bool() == Some(true) { "met" } else { "MISSED" },
            g["target"].as_str().unwrap_or(""),
            g["value"],
            g["goal"].as_str().unwrap_or("")
        );
    }
    let doc = json!({
        "machine": r.machine,
        "quick": r.quick,
        "secs": r.secs,
        "repeats": r.repeats,
        "scenarios": r.all.iter().map(Summary::to_json).collect::<Vec<_>>(),
        "socket_rtt_p50_us": round1(r.rtt.0),
        "socket_rtt_p99_us": round1(r.rtt.1),
        "broker_ping_p50_us": round1(r.ping),
        "fdatasync_p50_us": [round(r.fsync.0), round(r.fsync.1)],
        "other_load_max": round3(worst_foreign),
        "redone": r.redone,
        "import": r.loads.iter().find(|f| f.load == Load::Import).map(LoadFigures::to_json),
        "batch": r.loads.iter().find(|f| f.load == Load::Batch).map(LoadFigures::to_json),
        "targets": goals,
    });
    let line = doc.to_string();
    println!("{text}");
    println!("{line}");
    let stamp = litebroker_client::protocol::host::unix_ms() / 1000;
    let kind = if r.quick { "quick" } else { "full" };
    for (name, body) in [
        (format!("{kind}-{stamp}.txt"), format!("{text}\n{line}\n")),
        (format!("{kind}-{stamp}.json"), format!("{line}\n")),
        (format!("latest-{kind}.txt"), format!("{text}\n{line}\n")),
        (format!("latest-{kind}.json"), format!("{line}\n")),
    ] {
        std::fs::write(out.join(&name), body).with_context(|| format!("write {name}"))?;
    }
    Ok(())
}
