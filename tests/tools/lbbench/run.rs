//! A whole run (`lbbench run`): the machine's own figures first, then rounds in
//! which every scenario is measured once, each when other processes are quiet,
//! then the report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::load::{self, Load};
use crate::measure::measure;
use crate::probes::{broker_ping, fsync_probe, socket_rtt};
use crate::quiet::{wait_quiet, Foreign, QUIET};
use crate::report::{machine, publish, Run, Summary};
use crate::scenario::{plan, SyncMode};
use crate::stats::median;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The short version: fewer, shorter repetitions (same scenarios and output shape).
    #[arg(long)]
    quick: bool,
    /// Seconds per measurement (default 3, quick 1).
    #[arg(long)]
    secs: Option<f64>,
    /// Repetitions per scenario (default 3, quick 2).
    #[arg(long)]
    repeats: Option<usize>,
    /// Client counts for the multi-client scenarios.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    clients: Vec<usize>,
    /// synchronous settings to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "normal,full")]
    sync: Vec<SyncMode>,
    /// Only these scenarios (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Output folder (default: `bench/` in the target folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Longest wait, in seconds, for other processes to leave the CPUs idle
    /// before each measurement.
    #[arg(long, default_value_t = 60)]
    max_quiet_wait: u64,
    /// Total seconds the run may spend waiting for quiet and redoing disturbed
    /// measurements (default 300, quick 20); then it measures as things are.
    #[arg(long)]
    quiet_budget: Option<u64>,
}

pub fn run(a: RunArgs) -> Result<()> {
    let secs = a.secs.unwrap_or(if a.quick { 1.0 } else { 3.0 });
    let repeats = a.repeats.unwrap_or(if a.quick { 2 } else { 3 }).max(1);
    let window = Duration::try_from_secs_f64(secs).map_err(|e| anyhow!("--secs: {e}"))?;
    let out = match &a.out {
        Some(o) => o.clone(),
        None => {
            let exe = std::env::current_exe()?;
            exe.parent().and_then(Path::parent).context("target folder")?.join("bench")
        }
    };
    let work = out.join("work");
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let machine = machine();
    let started = Instant::now();
    eprintln!("lbbench: {machine}; {secs} s per measurement, {repeats} repetitions");

    let probe_quiet = Duration::from_secs(a.max_quiet_wait.min(if a.quick { 5 } else { 30 }));
    let rtt_runs: Vec<(f64, f64)> = (0..repeats)
        .map(|_| {
            wait_quiet(probe_quiet);
            socket_rtt(&work, window.min(Duration::from_secs(2)))
        })
        .collect::<Result<_>>()?;
    let rtt =
        (median(rtt_runs.iter().map(|r| r.0).collect()), median(rtt_runs.iter().map(|r| r.1).collect()));
    eprintln!("socket round trip: p50 {:.1} µs, p99 {:.1} µs", rtt.0, rtt.1);
    let pings: Vec<f64> = (0..repeats)
        .map(|_| {
            wait_quiet(probe_quiet);
            broker_ping(&work, window.min(Duration::from_secs(2)))
        })
        .collect::<Result<_>>()?;
    let ping = median(pings);
    eprintln!("broker ping: p50 {ping:.1} µs");

    let fsync_before = fsync_probe(&work)?;
    let mut all: Vec<Summary> = plan(&a.only, &a.sync, &a.clients)
        .into_iter()
        .map(|(mode, sync, clients)| Summary { mode, sync, clients, samples: Vec::new() })
        .collect();
    // Rounds: every scenario once per round. The disk's fsync cost drifts over
    // minutes, so interleaving keeps the scenarios compared in one run under the
    // same conditions.
    let mut redone = 0;
    let budget_end =
        Instant::now() + Duration::from_secs(a.quiet_budget.unwrap_or(if a.quick { 20 } else { 300 }));
    let patience =
        |max: u64| Duration::from_secs(max).min(budget_end.saturating_duration_since(Instant::now()));
    for round in 1..=repeats {
        for sum in &mut all {
            let (mode, sync, n) = (sum.mode, sum.sync, sum.clients);
            // This machine may be shared: measure when other processes are
            // quiet, and redo a measurement they disturbed (a few times).
            let mut attempt = 0;
            let s = loop {
                attempt += 1;
                wait_quiet(patience(a.max_quiet_wait));
                let f = Foreign::start();
                let mut s = measure(mode, sync, n, window, &work)
                    .with_context(|| format!("{} {} N={n}", mode.worker_arg(), sync.as_str()))?;
                s.foreign = f.fraction();
                if s.foreign < QUIET || attempt > 2 || Instant::now() >= budget_end {
                    break s;
                }
                redone += 1;
                eprintln!(
                    "round {round}: {} {} N={n}: other processes used {:.0}% of the CPUs, measuring again",
                    mode.scenario(),
                    sync.as_str(),
                    s.foreign * 100.0
                );
            };
            eprintln!(
                "round {round}/{repeats} {:<17} {:<6} N={n:<2} batch={:<6} {:>9.0} writes/s  errors {}  fairness {:.2}  p50 {:.1} µs  p99 {:.1} µs  max {:.1} µs  rows/commit {}  other load {:.0}%",
                mode.scenario(),
                sync.as_str(),
                mode.batch(),
                s.writes_per_s,
                s.errors.values().sum::<u64>(),
                s.fairness,
                s.p50_us,
                s.p99_us,
                s.max_us,
                s.rows_per_commit.map_or("-".into(), |r| format!("{r:.2}")),
                s.foreign * 100.0,
            );
            if let (Some(p50), Some(p99), Some((events, resyncs))) =
                (s.delivery_p50_us, s.delivery_p99_us, s.watch_events)
            {
                eprintln!(
                    "                  watchers: commit -> delivery p50 {p50:.1} µs  p99 {p99:.1} µs  events {events}  resyncs {resyncs}"
                );
            }
            sum.samples.push(s);
        }
    }
    // The file loads last: their large files would slow whatever runs next.
    let mut loads = Vec::new();
    for l in [Load::Import, Load::Batch] {
        if a.only.is_empty() || a.only.iter().any(|o| o == l.name()) {
            let sync = if a.sync.contains(&SyncMode::Normal) { SyncMode::Normal } else { a.sync[0] };
            wait_quiet(patience(a.max_quiet_wait));
            loads.push(load::measure(l, &work, sync, repeats).context(l.name())?);
        }
    }
    let fsync_after = fsync_probe(&work)?;
    let run = Run {
        machine: &machine,
        quick: a.quick,
        secs,
        repeats,
        took_s: started.elapsed().as_secs_f64(),
        all: &all,
        rtt,
        ping,
        fsync: (fsync_before, fsync_after),
        redone,
        loads: &loads,
    };
    publish(&run, &out)?;
    std::fs::remove_dir_all(&work).ok();
    eprintln!("saved under {}", out.display());
    Ok(())
}
