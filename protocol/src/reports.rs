//! The reports the broker answers operations with: its status, its
//! connections, checkpoint, statistics, verify, backup, restore, migrations and
//! health. Part of the wire contract: a struct's field order is its encoding
//! (fields are appended only in a new minor, and only where the message says so).

use serde::{Deserialize, Serialize};

/// What the broker reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerStatus {
    /// Broker process id.
    pub pid: u32,
    /// Socket (or pipe) name.
    pub socket: String,
    /// Canonical database path.
    pub db_path: String,
    /// Major protocol version.
    pub protocol: u32,
    /// Minor protocol version.
    pub minor: u32,
    /// Broker crate version.
    pub broker_version: String,
    /// Milliseconds since the broker started.
    pub uptime_ms: u64,
    /// Clients connected now.
    pub clients: u32,
    /// Requests served since start.
    pub requests: u64,
    /// Write transactions committed since start.
    pub commits: u64,
    /// Write requests waiting for the writer now.
    pub queue_depth: u32,
    /// `normal` or `full`.
    pub synchronous: String,
    /// Who holds the writer in a write session, if anyone.
    pub writer_holder: Option<String>,
    /// Whether the broker records request ids, making writes that carry one
    /// exactly-once (a client resends a write after a lost answer only then).
    pub request_ids: bool,
    /// Group-commit transactions committed since start (one-shot writes only:
    /// write sessions, migrations and restores are not counted).
    pub group_commits: u64,
    /// Requests in those transactions: `group_requests / group_commits` is the mean
    /// number of requests per commit.
    pub group_requests: u64,
    /// The most requests committed in one transaction.
    pub max_group: u64,
    /// Requests whose queue wait was measured (every one-shot write the writer took).
    pub queue_waits: u64,
    /// Total time those requests waited in the queue for the writer, microseconds.
    pub queue_wait_us: u64,
    /// The longest such wait, microseconds.
    pub max_queue_wait_us: u64,
    /// Total time spent in the `COMMIT` of group transactions (the fsync with
    /// `synchronous=full`), microseconds.
    pub commit_us: u64,
    /// The longest such `COMMIT`, microseconds.
    pub max_commit_us: u64,
}

/// One connected client, as listed by [`Request::Connections`](crate::Request::Connections).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Broker-assigned connection id.
    pub id: u64,
    /// Name the client gave in its handshake.
    pub name: String,
    /// The client's pid (from the OS where it tells, else from the handshake).
    pub pid: u32,
    /// Connection time, milliseconds since the Unix epoch.
    pub connected_unix_ms: u64,
    /// Requests served on this connection.
    pub requests: u64,
    /// Whether this client holds the writer in a write session now.
    pub holds_writer: bool,
}

/// The outcome of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointReport {
    /// The mode run.
    pub mode: CheckpointMode,
    /// True when readers (or another writer) kept it from completing.
    pub blocked: bool,
    /// Frames in the WAL (-1 when not in WAL mode).
    pub wal_frames: i64,
    /// Frames copied into the database (-1 when not in WAL mode).
    pub checkpointed_frames: i64,
    /// WAL file size afterwards.
    pub wal_bytes_after: u64,
    /// When it ran, ms since the Unix epoch.
    pub at_unix_ms: u64,
}

/// Rows of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    /// Table name.
    pub name: String,
    /// Row count.
    pub rows: u64,
}

/// The writer's own figures, reported with [`DbStats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterFigures {
    /// Write requests committed.
    pub committed_requests: u64,
    /// Largest number of requests committed in one transaction.
    pub max_requests_per_commit: u64,
    /// Times another process's lock made the writer wait.
    pub lock_waits: u64,
    /// Backoff retries made because of such locks.
    pub lock_retries: u64,
    /// The last checkpoint the broker ran (manual, idle or final).
    pub last_checkpoint: Option<CheckpointReport>,
    /// WAL size above which the broker warns.
    pub wal_warn_bytes: u64,
    /// Request ids recorded now (the `_litebroker_requests` table's rows).
    pub request_ids_recorded: u64,
    /// Writes answered from that table instead of running again (resends).
    pub deduplicated: u64,
}

/// Database figures (size, pages, WAL, tables and their row counts), plus the broker's when a broker
/// served the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbStats {
    /// Canonical database path.
    pub db_path: String,
    /// `PRAGMA user_version`.
    pub schema_version: u32,
    /// User tables.
    pub tables: u32,
    /// Indices (including automatic ones).
    pub indices: u32,
    /// Main database file size.
    pub db_bytes: u64,
    /// WAL file size.
    pub wal_bytes: u64,
    /// `PRAGMA page_size`.
    pub page_size: u64,
    /// `PRAGMA page_count`.
    pub page_count: u64,
    /// `PRAGMA freelist_count`.
    pub free_pages: u64,
    /// `PRAGMA journal_mode`.
    pub journal_mode: String,
    /// Rows per user table, by name.
    pub row_counts: Vec<TableCount>,
    /// Things worth attention (e.g. a WAL pinned by readers).
    pub warnings: Vec<String>,
    /// The broker's status, when a broker answered.
    pub broker: Option<BrokerStatus>,
    /// The writer's figures, when a broker answered.
    pub writer: Option<WriterFigures>,
}

/// The outcome of `integrity_check` and `foreign_key_check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Canonical path of the file checked.
    pub path: String,
    /// Problems `PRAGMA integrity_check` reported (empty when it said "ok").
    pub integrity_problems: Vec<String>,
    /// Violations `PRAGMA foreign_key_check` reported, one line each.
    pub foreign_key_problems: Vec<String>,
}

impl VerifyReport {
    /// True when both checks found nothing.
    pub fn ok(&self) -> bool {
        self.integrity_problems.is_empty() && self.foreign_key_problems.is_empty()
    }
}

/// A finished backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReport {
    /// Path of the copy.
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// Time taken by the copy and its check, in milliseconds.
    pub duration_ms: u64,
    /// Backups removed by the retention rule.
    pub removed: Vec<String>,
}

/// A finished restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// The file restored from.
    pub restored_from: String,
    /// The safety copy of the database as it was before.
    pub safety_backup: String,
    /// Pages copied.
    pub pages: u64,
    /// Time the writer was held, in milliseconds.
    pub duration_ms: u64,
}

/// One numbered schema migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// Its version: `PRAGMA user_version` after it is applied.
    pub version: u32,
    /// A short name, for messages.
    pub name: String,
    /// The SQL (several `;`-separated statements allowed).
    pub sql: String,
}

impl Migration {
    /// A migration from embedded SQL (e.g. `include_str!`).
    pub fn new(version: u32, name: impl Into<String>, sql: impl Into<String>) -> Self {
        Migration { version, name: name.into(), sql: sql.into() }
    }
}

/// The outcome of a [`Request::Migrate`](crate::Request::Migrate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// Schema version before.
    pub from_version: u32,
    /// Schema version after.
    pub to_version: u32,
    /// Versions applied by this request (empty when already up to date).
    pub applied: Vec<u32>,
}

/// Whether the broker's guarantees hold now, answered to [`Request::Health`](crate::Request::Health). A
/// guarantee the broker cannot keep is reported here, with its reason, rather
/// than lost silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Writes carrying a request id are exactly-once (the broker records ids).
    pub exactly_once: bool,
    /// Why exactly-once is off, when it is (disabled by the operator, or the
    /// broker could not set up its table; the broker keeps retrying the latter).
    pub exactly_once_off: Option<String>,
    /// Why the broker refuses writes, when it does (see [`ErrorKind::WritesStopped`](crate::ErrorKind::WritesStopped)).
    pub writes_stopped: Option<String>,
}

/// `PRAGMA wal_checkpoint` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointMode {
    /// Checkpoint what can be without waiting for readers or writers.
    Passive,
    /// Wait for readers of old snapshots, then checkpoint everything.
    Full,
    /// As `Full`, then make the next writer restart the WAL from its beginning.
    Restart,
    /// As `Restart`, then truncate the WAL file to zero bytes.
    Truncate,
}

impl CheckpointMode {
    /// The PRAGMA argument.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointMode::Passive => "PASSIVE",
            CheckpointMode::Full => "FULL",
            CheckpointMode::Restart => "RESTART",
            CheckpointMode::Truncate => "TRUNCATE",
        }
    }
}
