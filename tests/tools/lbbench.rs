//! `lbbench`: litebroker's benchmark. `lbbench run` measures every scenario back to
//! back (each several seconds, repeated: median and range), prints a table and one
//! JSON line, and saves both under `target/bench/`. It spawns itself as the worker
//! processes (`lbbench worker …`, `lbbench echo …`) and the real `litebrokerd` from
//! its own target folder. `scripts/bench.sh [--quick]` builds and runs it.
//!
//! Scenarios (all write a 96-byte text row into `bench(id INTEGER PRIMARY KEY, v TEXT)`,
//! with the broker's PRAGMAs):
//! - `inprocess`: one connection in one process, `BEGIN IMMEDIATE; INSERT; COMMIT`
//!   (batch 1), or 100,000 rows in one transaction (batch 100000): the floors.
//! - `direct-immediate`: N processes writing the file themselves, `BEGIN IMMEDIATE`,
//!   busy_timeout 5000.
//! - `direct-deferred`: N processes, `BEGIN; SELECT max(id); INSERT; COMMIT`, retrying
//!   at once on `SQLITE_BUSY` / `SQLITE_BUSY_SNAPSHOT` (counted) for up to 5 s.
//! - `broker`: N client processes, one-row writes through litebroker, closed loop,
//!   with the broker's defaults: each write carries a request id, which the broker
//!   records in `_litebroker_requests` in the same transaction (exactly-once).
//! - `broker-noids` (NORMAL only): the same with request ids off
//!   (`--request-id-retention-hours 0`), to show what recording them costs.
//! - `db-api` (NORMAL only): `broker`'s write through the app-facing `Db` handle
//!   (`db.execute(INSERT, [&text])`) instead of a raw `Client`: what the handle adds.
//! - `watch` (NORMAL, 8 clients): `broker`'s 8 writers while 4 watcher processes
//!   follow the change feed (`Db::watch_all`): commit → delivery p50/p99 at the
//!   watchers, and the writers' writes/s next to `broker`'s 8 clients alone
//!   (always planned with it, in the same rounds).
//! - `ping` (NORMAL): N clients sending `Ping` through the broker in a closed loop
//!   (no writer, no SQLite): the IPC ceiling of `broker`'s one-row writes.
//! - `broker-wait`: `broker` with the group wait on (`--group-wait-us 1000`),
//!   next to `broker` with the broker's default (off).
//! - `pipeline`: 1 and 8 client processes, one-row writes through litebroker,
//!   each keeping 64 unanswered (`Client::pipeline`); latency is each write's,
//!   from its send to its answer. Planned with `broker` at 1 client and
//!   `direct-immediate` at 8, which its targets compare it with.
//! - `broker-bulk`: one client sending 100,000 rows for one INSERT as one streamed
//!   executemany (`Client::execute_many_with`): one transaction, one summary.
//! - `import` and `batch` (the synchronous setting NORMAL, or the first asked
//!   for): a 1,000,000-row CSV loaded by `litebroker import` and by the sqlite3
//!   CLI's `.import`, and a 1,000,000-INSERT SQL file by `litebroker batch` and
//!   by the sqlite3 CLI's `.read`, same file, same run: rows/s of both, their
//!   ratio, the broker's peak RSS (module `load`).
//!
//! Latency figures are those of the worst client: for p50, p99 and max, the largest
//! value any client saw. Fairness is the smallest per-client write count divided by
//! the largest.
//!
//! The modules, by responsibility: `scenario` (what is measured: the modes, the
//! plan of a run), `worker` (one worker process's closed loop and its tally),
//! `measure` (one measurement: the broker, the workers, their start signal, the
//! figures), `probes` (the machine's own figures: socket round trip, fdatasync,
//! broker ping), `quiet` (waiting until other processes leave the CPUs idle),
//! `report` (medians, the targets, the table and the saved files), `run` (the
//! rounds of a whole run), `stats` (percentile and median), `broker` (the broker
//! under test, started through the test kit's `Broker`).

#[cfg(unix)]
#[path = "lbbench/broker.rs"]
mod broker;
#[cfg(unix)]
#[path = "lbbench/load.rs"]
mod load;
#[cfg(unix)]
#[path = "lbbench/measure.rs"]
mod measure;
#[cfg(unix)]
#[path = "lbbench/probes.rs"]
mod probes;
#[cfg(unix)]
#[path = "lbbench/quiet.rs"]
mod quiet;
#[cfg(unix)]
#[path = "lbbench/report.rs"]
mod report;
#[cfg(unix)]
#[path = "lbbench/run.rs"]
mod run;
#[cfg(unix)]
#[path = "lbbench/scenario.rs"]
mod scenario;
#[cfg(unix)]
#[path = "lbbench/stats.rs"]
mod stats;
#[cfg(unix)]
#[path = "lbbench/worker.rs"]
mod worker;

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    use std::process::ExitCode;

    use clap::Parser;

    let args = Args::parse();
    let r = match args.cmd {
        Cmd::Run(a) => run::run(a),
        Cmd::Worker { mode, db, sync, client } => worker::worker(mode, &db, sync, client),
        Cmd::Echo { socket } => probes::echo(&socket),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lbbench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!("lbbench: the benchmark runs on Unix only (it uses Unix sockets and /proc)");
    std::process::ExitCode::from(2)
}

#[cfg(unix)]
#[derive(Debug, clap::Parser)]
#[command(name = "lbbench")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[cfg(unix)]
#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Run every scenario and report.
    Run(run::RunArgs),
    /// One worker process (spawned by `run`).
    Worker {
        #[arg(long, value_enum)]
        mode: scenario::Mode,
        #[arg(long)]
        db: std::path::PathBuf,
        #[arg(long, value_enum)]
        sync: scenario::SyncMode,
        #[arg(long)]
        client: usize,
    },
    /// The far end of the socket round-trip measurement (spawned by `run`).
    Echo {
        #[arg(long)]
        socket: std::path::PathBuf,
    },
}
