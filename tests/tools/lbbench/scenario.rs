//! What is measured: the scenarios (how the rows are written), the `synchronous`
//! settings, the row every scenario writes, and the plan of a run.

use clap::ValueEnum;

/// The statement every scenario runs.
pub const INSERT: &str = "INSERT INTO bench (v) VALUES (?1)";
/// The table every scenario writes.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, v TEXT NOT NULL)";
/// Rows per transaction of the bulk scenarios.
pub const BULK_ROWS: usize = 100_000;
/// Bytes of each row's text.
const ROW_BYTES: usize = 96;

/// PRAGMA synchronous of a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyncMode {
    Normal,
    Full,
}

impl SyncMode {
    /// Its name in PRAGMAs, flags and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Normal => "normal",
            SyncMode::Full => "full",
        }
    }
}

/// How the rows are written (the module docs of `lbbench` describe each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Inprocess,
    InprocessBulk,
    DirectImmediate,
    DirectDeferred,
    Broker,
    /// `broker` with request ids off (`--request-id-retention-hours 0`): what
    /// recording them costs.
    #[value(name = "broker-noids")]
    BrokerNoIds,
    BrokerBulk,
    /// `broker`'s one-row write through the app-facing `Db` handle (pool,
    /// parameters through `ToSql`, the handle's request id and retry policy)
    /// instead of a raw `Client`: what the friendlier API costs.
    #[value(name = "db-api")]
    DbApi,
    /// `broker`'s writers (NORMAL, 8 clients) while [`WATCHERS`] watcher
    /// processes follow the change feed: commit → delivery latency, and the
    /// writers' writes/s next to `broker`'s at 8 clients in the same run.
    Watch,
    /// A watcher process of the `watch` scenario (never planned on its own).
    Watcher,
    /// N clients sending `Ping` through the broker in a closed loop (NORMAL; no
    /// writer, no SQLite): the IPC ceiling one-row writes are measured against.
    Ping,
    /// `broker` with the group wait on (`--group-wait-us 1000`), next to `broker`
    /// with the broker's default (off).
    #[value(name = "broker-wait")]
    BrokerWait,
    /// One-row writes pipelined through litebroker: each client keeps
    /// [`PIPELINE_IN_FLIGHT`] writes unanswered (`Client::pipeline`).
    Pipeline,
}

/// Writes each client of the `pipeline` scenario keeps in flight.
pub const PIPELINE_IN_FLIGHT: usize = 64;

/// Watcher processes of the `watch` scenario.
pub const WATCHERS: usize = 4;
/// Writer processes of the `watch` scenario.
pub const WATCH_WRITERS: usize = 8;

impl Mode {
    /// The scenario name in the report.
    pub fn scenario(self) -> &'static str {
        match self {
            Mode::Inprocess | Mode::InprocessBulk => "inprocess",
            Mode::DirectImmediate => "direct-immediate",
            Mode::DirectDeferred => "direct-deferred",
            Mode::Broker => "broker",
            Mode::BrokerNoIds => "broker-noids",
            Mode::BrokerBulk => "broker-bulk",
            Mode::DbApi => "db-api",
            Mode::Watch => "watch",
            Mode::Watcher => "watcher",
            Mode::Ping => "ping",
            Mode::BrokerWait => "broker-wait",
            Mode::Pipeline => "pipeline",
        }
    }

    /// Its name on a worker's command line.
    pub fn worker_arg(self) -> &'static str {
        match self {
            Mode::Inprocess => "inprocess",
            Mode::InprocessBulk => "inprocess-bulk",
            Mode::DirectImmediate => "direct-immediate",
            Mode::DirectDeferred => "direct-deferred",
            Mode::Broker => "broker",
            Mode::BrokerNoIds => "broker-noids",
            Mode::BrokerBulk => "broker-bulk",
            Mode::DbApi => "db-api",
            Mode::Watch => "watch",
            Mode::Watcher => "watcher",
            Mode::Ping => "ping",
            Mode::BrokerWait => "broker-wait",
            Mode::Pipeline => "pipeline",
        }
    }

    /// The broker's flags besides `--db` and `--synchronous`.
    pub fn broker_args(self) -> &'static [&'static str] {
        match self {
            Mode::BrokerNoIds => &["--request-id-retention-hours", "0"],
            Mode::BrokerWait => &["--group-wait-us", "1000"],
            _ => &[],
        }
    }

    /// Rows per transaction.
    pub fn batch(self) -> usize {
        if self.is_bulk() {
            BULK_ROWS
        } else {
            1
        }
    }

    pub fn is_bulk(self) -> bool {
        matches!(self, Mode::InprocessBulk | Mode::BrokerBulk)
    }

    pub fn uses_broker(self) -> bool {
        matches!(
            self,
            Mode::Broker
                | Mode::BrokerNoIds
                | Mode::BrokerBulk
                | Mode::DbApi
                | Mode::Watch
                | Mode::Ping
                | Mode::BrokerWait
                | Mode::Pipeline
        )
    }
}

/// The 96-byte text a worker writes in every row.
pub fn payload(client: usize) -> String {
    let mut s = format!("lbbench client {client} ");
    while s.len() < ROW_BYTES {
        s.push((b'a' + (s.len() % 26) as u8) as char);
    }
    s
}

/// Every measurement of a run, in order: for each `synchronous` setting the floors,
/// the multi-client scenarios for each client count, then the bulk scenarios last.
/// `only` keeps the scenarios named there (by report or worker name).
pub fn plan(only: &[String], syncs: &[SyncMode], clients: &[usize]) -> Vec<(Mode, SyncMode, usize)> {
    let mut v = Vec::new();
    let wanted = |m: Mode| only.is_empty() || only.iter().any(|o| o == m.scenario() || o == m.worker_arg());
    for &sync in syncs {
        if wanted(Mode::Inprocess) {
            v.push((Mode::Inprocess, sync, 1));
        }
        for mode in [Mode::DirectImmediate, Mode::DirectDeferred, Mode::Broker] {
            if wanted(mode) {
                for &n in clients {
                    v.push((mode, sync, n));
                }
            }
        }
        // Extra rows, NORMAL only (with FULL the fsync hides them): the
        // headline `broker` rows run with the broker's defaults. `ping` is the
        // IPC ceiling of `broker`'s one-row writes (it does not depend on
        // `synchronous`).
        for mode in [Mode::BrokerNoIds, Mode::DbApi, Mode::Ping] {
            if sync == SyncMode::Normal && wanted(mode) {
                for &n in clients {
                    v.push((mode, sync, n));
                }
            }
        }
        // The group wait (off by default), both settings: it is for FULL's fsync.
        if wanted(Mode::BrokerWait) {
            for &n in clients {
                v.push((Mode::BrokerWait, sync, n));
            }
        }
        // The change feed: 8 writers with the watchers, next to `broker` with 8
        // writers alone (added when not planned already), in the same rounds.
        if sync == SyncMode::Normal && wanted(Mode::Watch) {
            if !v.contains(&(Mode::Broker, sync, WATCH_WRITERS)) {
                v.push((Mode::Broker, sync, WATCH_WRITERS));
            }
            v.push((Mode::Watch, sync, WATCH_WRITERS));
        }
        // Pipelining clients, 1 and 8, next to what their targets compare them
        // with: one closed-loop `broker` client, 8 `direct-immediate` writers.
        if wanted(Mode::Pipeline) {
            for (mode, n) in [(Mode::Broker, 1), (Mode::DirectImmediate, 8)] {
                if !v.contains(&(mode, sync, n)) {
                    v.push((mode, sync, n));
                }
            }
            v.push((Mode::Pipeline, sync, 1));
            v.push((Mode::Pipeline, sync, 8));
        }
    }
    // The bulk scenarios come last: the write-back of their large WAL files and
    // checkpoints would otherwise slow the fsyncs of whatever runs next.
    for &sync in syncs {
        for mode in [Mode::InprocessBulk, Mode::BrokerBulk] {
            if wanted(mode) {
                v.push((mode, sync, 1));
            }
        }
    }
    v
}
