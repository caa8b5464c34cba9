//! Messages exchanged on a broker connection.
//!
//! Every [`Request`] variant's documentation names the [`Response`] variant that
//! answers it; any request may also be answered with [`Response::Error`].
//!
//! The requests and answers are read here in one place, because the order of
//! each enum's variants is its encoding (append only). The reports they carry
//! live in `reports.rs` and the change feed's types in `feed.rs`: their field
//! order is their encoding too.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::feed::{ChangeEvent, Cursor, FeedFigures};
use crate::metrics::MetricsReport;
use crate::reports::{
    BackupReport, BrokerStatus, CheckpointMode, CheckpointReport, ClientInfo, DbStats, HealthReport,
    Migration, MigrationReport, RestoreReport, VerifyReport,
};

/// A SQLite value as it crosses the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit IEEE float.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Raw bytes.
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One SQL statement (or several `;`-separated ones) with its positional parameters.
///
/// When `sql` holds several statements, the parameters are consumed in order: each
/// statement takes as many as it has placeholders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// The SQL text.
    pub sql: String,
    /// Positional parameters (`?`, `?NNN`).
    pub params: Vec<Value>,
}

impl Statement {
    /// A statement with parameters.
    pub fn new(sql: impl Into<String>, params: Vec<Value>) -> Self {
        Statement { sql: sql.into(), params }
    }
}

/// 128-bit client-generated id that makes a write exactly-once (see
/// [`WriteOptions::request_id`]).
pub type RequestId = [u8; 16];

/// Per-request options of a write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOptions {
    /// How long the caller waits for the answer, in milliseconds; the broker never
    /// works on the request past this. 0 means the broker's default.
    pub timeout_ms: u32,
    /// When set, the broker records the id with the result in the same transaction
    /// as the write and never applies the same id twice.
    pub request_id: Option<RequestId>,
    /// The caller states that applying the request twice has the same effect as
    /// applying it once (e.g. an UPSERT with a unique key).
    pub idempotent: bool,
}

/// The client's half of the handshake. Frozen layout (see the crate docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Major protocol version the client speaks ([`crate::PROTOCOL_VERSION`]).
    pub protocol: u32,
    /// Minor protocol version the client speaks ([`crate::PROTOCOL_MINOR`]).
    pub minor: u32,
    /// A human-readable name for the client (shown in `connections`).
    pub client_name: String,
    /// The client's process id.
    pub pid: u32,
    /// The schema version (`PRAGMA user_version`) the client was built for, if it
    /// cares: a broker serving an older schema tells it so.
    pub expected_schema: Option<u32>,
}

/// The broker's half of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloAck {
    /// Major protocol version of the broker.
    pub protocol: u32,
    /// Minor protocol version of the broker.
    pub minor: u32,
    /// The broker's crate version.
    pub broker_version: String,
    /// Canonical path of the database the broker serves.
    pub db_path: String,
    /// The socket (or pipe) name the broker listens on.
    pub socket: String,
    /// The broker's process id.
    pub pid: u32,
    /// The broker-assigned id of this connection.
    pub client_id: u64,
    /// The database's schema version (`PRAGMA user_version`) at connect time.
    pub schema_version: u32,
}

/// A request from a client to the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Handshake; must be the first frame. Answered by [`Response::Hello`].
    Hello(Hello),
    /// Liveness check. Answered by [`Response::Pong`].
    Ping,
    /// Run `sql` (one or several `;`-separated statements, atomically) through the
    /// writer. Inside a write session it runs in the session. Answered by
    /// [`Response::Executed`].
    Execute {
        /// SQL and parameters.
        stmt: Statement,
        /// Timeout, request id, idempotency.
        opts: WriteOptions,
    },
    /// Run a list of statements as one all-or-nothing transaction. Answered by
    /// [`Response::Batch`] with one result per statement.
    Batch {
        /// The statements, in order.
        statements: Vec<Statement>,
        /// Timeout, request id, idempotency.
        opts: WriteOptions,
    },
    /// Broker status. Answered by [`Response::Status`].
    Status,
    /// Ask the broker to shut down cleanly. Answered by [`Response::ShuttingDown`].
    Shutdown,
    /// Open an exclusive write session (`BEGIN IMMEDIATE` at the broker), waiting
    /// up to `timeout_ms` for the writer. Answered by [`Response::SessionLeased`]
    /// (a client of minor 0 or 1: [`Response::SessionStarted`]).
    BeginSession {
        /// How long to wait for the writer, in milliseconds (0 = broker default).
        timeout_ms: u32,
    },
    /// Commit the open write session. Answered by [`Response::SessionEnded`].
    Commit,
    /// Roll back the open write session. Answered by [`Response::SessionEnded`].
    Rollback,
    /// The broker's connected clients. Answered by [`Response::Connections`].
    Connections,
    /// Database and broker figures. Answered by [`Response::Stats`].
    Stats,
    /// `PRAGMA integrity_check` and `foreign_key_check`. Answered by [`Response::Verify`].
    Verify,
    /// Run a WAL checkpoint now. Answered by [`Response::Checkpoint`].
    Checkpoint {
        /// The checkpoint mode.
        mode: CheckpointMode,
    },
    /// An online, consistent copy into the database's `backups/` folder, then
    /// checked. Answered by zero or more [`Response::Progress`] frames, then
    /// [`Response::Backup`].
    Backup {
        /// Label in the file name (`<stem>_<YYYYMMDD_HHMMSS>_<label>.db`).
        label: String,
        /// Keep only the newest `keep` backups of this database (0 = keep all).
        keep: u32,
    },
    /// Replace the database's content with the file at `path` (verified first,
    /// after a safety backup), holding the writer. Answered by zero or more
    /// [`Response::Progress`] frames, then [`Response::Restored`].
    Restore {
        /// Path of the SQLite file to restore from, as the broker sees it.
        path: String,
        /// How long to wait for the writer, in milliseconds (0 = broker default).
        timeout_ms: u32,
    },
    /// Apply numbered schema migrations (`PRAGMA user_version` tracks the last one
    /// applied), each in its own transaction; those at or below the database's
    /// version are skipped, so concurrent callers apply each exactly once.
    /// Answered by [`Response::Migrated`].
    Migrate {
        /// The migrations, in increasing version order.
        migrations: Vec<Migration>,
        /// How long to wait for the writer, in milliseconds (0 = broker default).
        timeout_ms: u32,
    },
    /// Whether the broker's guarantees hold right now: exactly-once writes, and
    /// whether it still accepts writes at all. Protocol minor 1. Answered by
    /// [`Response::Health`].
    Health,
    /// Subscribe to the change feed: this connection becomes a stream. Answered by
    /// [`Response::Watching`], then one [`Response::Change`] per committed
    /// transaction that touched a watched table (and resyncs), until the client
    /// disconnects. No other request is served on the connection afterwards.
    /// Protocol minor 2.
    Watch {
        /// Tables to watch (empty: all tables).
        tables: Vec<String>,
        /// Resume after this cursor (the last one the client saw): the events it
        /// missed are replayed from the broker's ring, or a resync says why they
        /// cannot be.
        since: Option<Cursor>,
    },
    /// The change feed's figures (subscribers, the ring). Answered by
    /// [`Response::FeedStats`]. Protocol minor 2.
    FeedStats,
    /// The broker's figures (requests, latencies, queue, sessions, locks, WAL,
    /// checkpoints, process) in the Prometheus data model. Protocol minor 2: a
    /// broker answers it only to clients that said minor 2 or later. Answered by
    /// [`Response::Metrics`].
    Metrics,
    /// Replication status: the supervised Litestream process, the replica's and the
    /// local positions, lag, the last error. Protocol minor 2: a client sends it only
    /// to a broker that said minor 2 or later. Answered by [`Response::Replication`].
    Replication,
    /// Opens a streamed executemany (protocol minor 2): `sql`, one statement, runs
    /// once per parameter row; the rows follow in [`Request::ManyRows`] frames and
    /// [`Request::ManyEnd`] closes the stream, all in one transaction holding the
    /// writer. Not answered on its own: the stream has one answer, sent after
    /// `ManyEnd`: [`Response::ExecutedMany`], [`Response::ManyFailed`] or an error.
    /// The client sends the whole stream without waiting for an answer.
    ManyBegin {
        /// The one statement (no transaction control, no second statement).
        sql: String,
        /// Timeout of the whole stream, request id, idempotency.
        opts: WriteOptions,
    },
    /// The next chunk of a streamed executemany's parameter rows, in order (each
    /// row holds the statement's positional parameters). Not answered on its own.
    ManyRows {
        /// The rows of this chunk.
        rows: Vec<Vec<Value>>,
    },
    /// Ends a streamed executemany: `rows` is how many rows the client sent (the
    /// broker checks it), `commit` false abandons the stream (nothing applied).
    /// Answered by [`Response::ExecutedMany`], [`Response::ManyFailed`] or an error.
    ManyEnd {
        /// Rows sent in all the stream's [`Request::ManyRows`] frames.
        rows: u64,
        /// Commit (true) or abandon (false) the stream.
        commit: bool,
    },
    /// Opens a streamed batch (protocol minor 3): statements follow in
    /// [`Request::BatchPart`] frames and [`Request::ManyEnd`] closes the stream
    /// (its `rows` counting the statements sent), all in one transaction holding
    /// the writer. Each [`Statement`] may hold several `;`-separated statements
    /// (run as [`Request::Execute`] runs them), and a wrapping `BEGIN … COMMIT`
    /// around the whole stream is honoured as in one request. Rows statements
    /// return are dropped. Not answered on its own: the stream has one answer,
    /// after `ManyEnd`: [`Response::ExecutedMany`] (its `rows` counting the
    /// statements applied), [`Response::ManyFailed`] (its `row` the index of the
    /// failing statement in the stream) or an error. The client sends the whole
    /// stream without waiting for an answer.
    BatchBegin {
        /// Timeout of the whole stream, request id, idempotency.
        opts: WriteOptions,
    },
    /// The next part of a streamed batch's statements, in order. The broker's
    /// statement limit (`--max-batch-statements`) applies per part. Not answered
    /// on its own.
    BatchPart {
        /// The statements of this part.
        statements: Vec<Statement>,
    },
}

impl Request {
    /// Short name of the request kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Hello(_) => "hello",
            Request::Ping => "ping",
            Request::Execute { .. } => "execute",
            Request::Batch { .. } => "batch",
            Request::Status => "status",
            Request::Shutdown => "shutdown",
            Request::BeginSession { .. } => "begin-session",
            Request::Commit => "commit",
            Request::Rollback => "rollback",
            Request::Connections => "connections",
            Request::Stats => "stats",
            Request::Verify => "verify",
            Request::Checkpoint { .. } => "checkpoint",
            Request::Backup { .. } => "backup",
            Request::Restore { .. } => "restore",
            Request::Migrate { .. } => "migrate",
            Request::Health => "health",
            Request::Watch { .. } => "watch",
            Request::FeedStats => "feed-stats",
            Request::Metrics => "metrics",
            Request::Replication => "replication",
            Request::ManyBegin { .. } => "many-begin",
            Request::ManyRows { .. } => "many-rows",
            Request::ManyEnd { .. } => "many-end",
            Request::BatchBegin { .. } => "batch-begin",
            Request::BatchPart { .. } => "batch-part",
        }
    }

    /// The protocol minor that appended this request. A broker answers it only
    /// to a client that said it speaks that minor or later: the answer is a
    /// variant an older client could not decode.
    pub fn since_minor(&self) -> u32 {
        match self {
            Request::BatchBegin { .. } | Request::BatchPart { .. } => 3,
            Request::Watch { .. }
            | Request::FeedStats
            | Request::Metrics
            | Request::Replication
            | Request::ManyBegin { .. }
            | Request::ManyRows { .. }
            | Request::ManyEnd { .. } => 2,
            Request::Health => 1,
            _ => 0,
        }
    }
}

/// The outcome of one executed statement (or `;`-separated group of statements).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Rows inserted, updated or deleted (summed over the statements).
    pub changes: u64,
    /// `last_insert_rowid()` after the statements ran.
    pub last_insert_rowid: i64,
    /// Column names of the last statement that returned rows (e.g. `RETURNING`).
    pub columns: Vec<String>,
    /// The rows of that statement.
    pub rows: Vec<Vec<Value>>,
}

/// SQLite's primary and extended result codes of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqliteCode {
    /// Primary result code (e.g. 19 = `SQLITE_CONSTRAINT`).
    pub primary: i32,
    /// Extended result code (e.g. 2067 = `SQLITE_CONSTRAINT_UNIQUE`).
    pub extended: i32,
}

/// The class of a failure, so callers can act on it without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// SQL failed (syntax, missing table, type mismatch…); see the SQLite codes.
    Sql,
    /// A constraint (UNIQUE, FOREIGN KEY, NOT NULL, CHECK) rejected the write.
    Constraint,
    /// Another process holds a lock on the database file and kept it through the
    /// whole retry schedule.
    Locked,
    /// The request's deadline passed (waiting for the writer, or running).
    Timeout,
    /// The broker is shutting down and refuses new work.
    ShuttingDown,
    /// A malformed, oversize or unexpected frame.
    Protocol,
    /// Client and broker speak incompatible protocol versions.
    Incompatible,
    /// A configured limit was exceeded; the message names it.
    LimitExceeded,
    /// The statement is not allowed through the broker; the message names the action.
    NotAllowed,
    /// The write session was rolled back by the broker (lease expired, broker
    /// restart); nothing of it was committed.
    LeaseExpired,
    /// Commit/rollback without an open write session, or a session request that
    /// cannot be honoured in the current state.
    SessionState,
    /// The disk (or file-size limit) is full; nothing of the request was written.
    DiskFull,
    /// An unexpected failure inside the broker.
    Internal,
    /// A verification failed: a corrupt or non-SQLite file, a failed
    /// integrity check (CLI exit 5).
    VerificationFailed,
    /// The client was built for a newer schema than the database has: its writes
    /// are refused until the migrations are applied.
    SchemaMismatch,
    /// The broker stopped accepting writes to protect the data (for example its
    /// `-wal`/`-shm` files were deleted or replaced under it); reads still work.
    /// The message says why and what to do. Protocol minor 1.
    WritesStopped,
}

impl ErrorKind {
    /// Stable lower-case name, used in JSON output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Sql => "sql",
            ErrorKind::Constraint => "constraint",
            ErrorKind::Locked => "locked",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Incompatible => "incompatible",
            ErrorKind::LimitExceeded => "limit_exceeded",
            ErrorKind::NotAllowed => "not_allowed",
            ErrorKind::LeaseExpired => "lease_expired",
            ErrorKind::SessionState => "session_state",
            ErrorKind::DiskFull => "disk_full",
            ErrorKind::Internal => "internal",
            ErrorKind::VerificationFailed => "verification_failed",
            ErrorKind::SchemaMismatch => "schema_mismatch",
            ErrorKind::WritesStopped => "writes_stopped",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure reported by the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The class of failure.
    pub kind: ErrorKind,
    /// Human-readable explanation (SQLite's message for SQL errors).
    pub message: String,
    /// SQLite's result codes, when SQLite reported the failure.
    pub sqlite: Option<SqliteCode>,
}

impl ErrorInfo {
    /// An error without SQLite codes.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorInfo { kind, message: message.into(), sqlite: None }
    }
}

impl fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ErrorInfo {}

/// A response from the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Hello`]. Frozen layout.
    Hello(HelloAck),
    /// Any request may fail with this. Frozen layout.
    Error(ErrorInfo),
    /// Answer to [`Request::Ping`].
    Pong,
    /// Answer to [`Request::Execute`].
    Executed(ExecResult),
    /// Answer to [`Request::Batch`]: one result per statement.
    Batch(Vec<ExecResult>),
    /// Answer to [`Request::Status`].
    Status(BrokerStatus),
    /// Answer to [`Request::Shutdown`]: the broker is stopping.
    ShuttingDown,
    /// Answer to [`Request::BeginSession`]: the session holds the writer.
    SessionStarted {
        /// How long the session waited for the writer, in milliseconds.
        waited_ms: u64,
    },
    /// Answer to [`Request::Commit`] and [`Request::Rollback`].
    SessionEnded {
        /// True when the session's changes were committed.
        committed: bool,
    },
    /// Answer to [`Request::Connections`].
    Connections(Vec<ClientInfo>),
    /// Answer to [`Request::Stats`].
    Stats(Box<DbStats>),
    /// Answer to [`Request::Verify`].
    Verify(VerifyReport),
    /// Answer to [`Request::Checkpoint`].
    Checkpoint(CheckpointReport),
    /// Progress of a long [`Request::Backup`] or [`Request::Restore`]; more frames
    /// follow.
    Progress {
        /// Units done (bytes or pages).
        done: u64,
        /// Units in all (an estimate for backups).
        total: u64,
    },
    /// Answer to [`Request::Backup`].
    Backup(BackupReport),
    /// Answer to [`Request::Restore`].
    Restored(RestoreReport),
    /// Answer to [`Request::Migrate`].
    Migrated(MigrationReport),
    /// Answer to [`Request::Health`].
    Health(HealthReport),
    /// Answer to [`Request::Watch`]: subscribed; events after `cursor` follow.
    Watching {
        /// Where the stream starts: the client's `since` when it can be honoured,
        /// else the newest event's cursor (a resync follows in that case).
        cursor: Cursor,
    },
    /// One event of a watch stream (see [`Request::Watch`]); more follow.
    Change(ChangeEvent),
    /// Answer to [`Request::FeedStats`].
    FeedStats(FeedFigures),
    /// Answer to [`Request::Metrics`]. Protocol minor 2.
    Metrics(MetricsReport),
    /// Answer to [`Request::Replication`]. Protocol minor 2.
    Replication(crate::replication::ReplicationReport),
    /// Answer to [`Request::BeginSession`] for a client of protocol minor 2 or
    /// later: the session holds the writer, and the broker rolls it back when it
    /// is held longer than `lease_ms` (older clients get
    /// [`Response::SessionStarted`]).
    SessionLeased {
        /// How long the session waited for the writer, in milliseconds.
        waited_ms: u64,
        /// How long the broker lets the session hold the writer, from its start.
        lease_ms: u64,
    },
    /// Answer to a streamed executemany or batch ([`Request::ManyEnd`]): what the
    /// whole stream did, committed. Protocol minor 2.
    ExecutedMany(ManySummary),
    /// Answer to a streamed executemany whose row `row` failed (of a streamed
    /// batch: whose statement `row` failed): nothing of the stream was applied.
    /// Protocol minor 2.
    ManyFailed {
        /// Index of the failing row (or statement) in the stream, counting from 0.
        row: u64,
        /// SQLite's error for that row (its message names the row too).
        error: ErrorInfo,
    },
}

impl Response {
    /// An error response.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response::Error(ErrorInfo::new(kind, message))
    }
}

/// What a streamed executemany (or batch) did, in place of one result per row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManySummary {
    /// Rows inserted, updated or deleted, summed over every parameter row.
    pub changes: u64,
    /// `last_insert_rowid()` after the last row ran.
    pub last_insert_rowid: i64,
    /// Parameter rows applied (each ran the statement once); of a streamed
    /// batch, statements applied.
    pub rows: u64,
}
