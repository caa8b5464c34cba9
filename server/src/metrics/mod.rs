//! The broker's figures over time, for `litebroker metrics`, `litebroker top` and
//! the optional HTTP endpoint (`--metrics-listen`).
//!
//! - [`Metrics`] (here): what only the metrics report — requests by kind and
//!   outcome, the latency histograms, sessions, checkpoints, backups, the HTTP
//!   endpoint's own answers. `status` shares its histograms (their count and sum
//!   are `status`'s queue-wait, commit and group figures); the figures `status`
//!   already had stay in `shared::Counters` and are read from there.
//! - [`histogram`]: fixed buckets, counted with atomics.
//! - [`report`]: the report on the wire (`Request::Metrics`), read from both, with
//!   each family's name, type and help text; the process's own figures from
//!   [`process`].
//! - [`http`]: `GET /metrics` on a loopback address, one small thread.
//!
//! **Counting costs nothing measurable.** Every figure is a relaxed atomic
//! addition made where the event happens (a histogram: two), by whichever thread
//! sees it; nothing on the write path takes a lock or allocates for it. Reading
//! the figures (a scrape) loads the atomics, takes the short locks `status` takes
//! too, and looks at the WAL file's size and the process in `/proc`: it never
//! touches the writer or the job queue.

pub(crate) mod histogram;
pub(crate) mod http;
mod process;
pub(crate) mod report;

use std::sync::atomic::{AtomicU64, Ordering};

use litebroker_protocol::{CheckpointMode, ErrorKind, Request, Response};

use self::histogram::{Histogram, GROUP_SIZE, HOLD_US, LATENCY_US};

/// The request kinds counted, by index (`Request::kind`'s names), then frames that
/// did not decode as any request.
pub(crate) const KINDS: &[&str] = &[
    "hello",
    "ping",
    "execute",
    "batch",
    "status",
    "shutdown",
    "begin-session",
    "commit",
    "rollback",
    "connections",
    "stats",
    "verify",
    "checkpoint",
    "backup",
    "restore",
    "migrate",
    "health",
    "watch",
    "feed-stats",
    "metrics",
    "replication",
    "many-begin",
    "many-rows",
    "many-end",
    "batch-begin",
    "batch-part",
    "unknown",
];

/// The outcomes counted, by index: `ok` (any answer but an error), each error
/// kind, then `other` for an error kind this list does not know yet.
pub(crate) const OUTCOMES: &[&str] = &[
    "ok",
    "sql",
    "constraint",
    "locked",
    "timeout",
    "shutting_down",
    "protocol",
    "incompatible",
    "limit_exceeded",
    "not_allowed",
    "lease_expired",
    "session_state",
    "disk_full",
    "internal",
    "verification_failed",
    "schema_mismatch",
    "writes_stopped",
    "other",
];

const N_KINDS: usize = 27;
const N_OUTCOMES: usize = 18;

/// A request's kind, as counted (an index into [`KINDS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestKind(u8);

impl RequestKind {
    /// A one-shot `Execute` (the answer-on-the-socket shortcut counts its answers).
    pub(crate) const EXECUTE: RequestKind = RequestKind(2);
    /// A frame that did not decode as a request.
    pub(crate) const UNKNOWN: RequestKind = RequestKind(26);

    /// The kind of `req`.
    pub(crate) fn of(req: &Request) -> RequestKind {
        RequestKind(match req {
            Request::Hello(_) => 0,
            Request::Ping => 1,
            Request::Execute { .. } => 2,
            Request::Batch { .. } => 3,
            Request::Status => 4,
            Request::Shutdown => 5,
            Request::BeginSession { .. } => 6,
            Request::Commit => 7,
            Request::Rollback => 8,
            Request::Connections => 9,
            Request::Stats => 10,
            Request::Verify => 11,
            Request::Checkpoint { .. } => 12,
            Request::Backup { .. } => 13,
            Request::Restore { .. } => 14,
            Request::Migrate { .. } => 15,
            Request::Health => 16,
            Request::Watch { .. } => 17,
            Request::FeedStats => 18,
            Request::Metrics => 19,
            Request::Replication => 20,
            Request::ManyBegin { .. } => 21,
            Request::ManyRows { .. } => 22,
            Request::ManyEnd { .. } => 23,
            Request::BatchBegin { .. } => 24,
            Request::BatchPart { .. } => 25,
        })
    }
}

/// The outcome index of an answer (see [`OUTCOMES`]).
fn outcome_of(resp: &Response) -> usize {
    let Response::Error(e) = resp else { return 0 };
    match e.kind {
        ErrorKind::Sql => 1,
        ErrorKind::Constraint => 2,
        ErrorKind::Locked => 3,
        ErrorKind::Timeout => 4,
        ErrorKind::ShuttingDown => 5,
        ErrorKind::Protocol => 6,
        ErrorKind::Incompatible => 7,
        ErrorKind::LimitExceeded => 8,
        ErrorKind::NotAllowed => 9,
        ErrorKind::LeaseExpired => 10,
        ErrorKind::SessionState => 11,
        ErrorKind::DiskFull => 12,
        ErrorKind::Internal => 13,
        ErrorKind::VerificationFailed => 14,
        ErrorKind::SchemaMismatch => 15,
        ErrorKind::WritesStopped => 16,
        _ => N_OUTCOMES - 1,
    }
}

/// The checkpoint modes counted, by index.
pub(crate) const CHECKPOINT_MODES: [CheckpointMode; 4] =
    [CheckpointMode::Passive, CheckpointMode::Full, CheckpointMode::Restart, CheckpointMode::Truncate];

/// How a checkpoint ended, by index: it moved every frame, readers (or another
/// writer) kept it from completing, or it failed.
pub(crate) const CHECKPOINT_RESULTS: [&str; 3] = ["complete", "blocked", "failed"];

/// The HTTP status codes the endpoint answers with, by index.
pub(crate) const HTTP_CODES: [u16; 6] = [200, 400, 404, 405, 408, 431];

/// The figures only the metrics report (see the module's doc). Every field is
/// counted with relaxed atomics.
#[derive(Debug)]
pub struct Metrics {
    requests: [[AtomicU64; N_OUTCOMES]; N_KINDS],
    /// How long one-shot writes waited in the queue for the writer (µs).
    pub queue_wait: Histogram,
    /// A one-shot write's part of its group transaction, from its turn to the
    /// next request's or the COMMIT: savepoint, request-id lookup and record,
    /// statements; each run counted (a re-run group runs them again) (µs).
    pub execute: Histogram,
    /// How long the `COMMIT` of a group-commit transaction took (µs).
    pub commit: Histogram,
    /// One-shot writes from queued until their answer was sent, committed or
    /// failed on their own (µs).
    pub write_latency: Histogram,
    /// Requests per group-commit transaction.
    pub group_size: Histogram,
    /// Group waits taken (`--group-wait-us`): how long each waited for the
    /// writers known to be coming before its transaction began (µs).
    pub group_wait: Histogram,
    /// Requests that joined a group during its wait.
    pub group_wait_joined: AtomicU64,
    /// Clients a group waited for that did not come in time (each is not waited
    /// for again until it writes again).
    pub group_wait_missed: AtomicU64,
    /// How long write sessions held the writer (µs).
    pub session_hold: Histogram,
    /// Write sessions rolled back because they outlasted their lease.
    pub lease_expiries: AtomicU64,
    /// Groups whose transaction failed and whose requests ran again.
    pub group_reruns: AtomicU64,
    /// Statements stopped at their deadline (`--max-statement-secs` or the
    /// request's timeout).
    pub interrupted: AtomicU64,
    /// Request ids recorded with their answer (committed).
    pub request_ids_recorded: AtomicU64,
    checkpoints: [[AtomicU64; 3]; 4],
    backups: [AtomicU64; 2],
    /// Bytes of the backups written.
    pub backup_bytes: AtomicU64,
    /// WAL frames after the last commit or checkpoint, as the writer last saw them.
    pub wal_frames: AtomicU64,
    /// Clients disconnected for stalling in the middle of a frame or not reading
    /// their answers (`--io-timeout-secs`).
    pub stalled_clients: AtomicU64,
    /// Connections refused at accept: too many clients, or a peer not allowed.
    pub refused_connections: AtomicU64,
    http: [AtomicU64; 6],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            queue_wait: Histogram::new(LATENCY_US),
            execute: Histogram::new(LATENCY_US),
            commit: Histogram::new(LATENCY_US),
            write_latency: Histogram::new(LATENCY_US),
            group_size: Histogram::new(GROUP_SIZE),
            group_wait: Histogram::new(LATENCY_US),
            group_wait_joined: AtomicU64::new(0),
            group_wait_missed: AtomicU64::new(0),
            session_hold: Histogram::new(HOLD_US),
            lease_expiries: AtomicU64::new(0),
            group_reruns: AtomicU64::new(0),
            interrupted: AtomicU64::new(0),
            request_ids_recorded: AtomicU64::new(0),
            checkpoints: Default::default(),
            backups: Default::default(),
            backup_bytes: AtomicU64::new(0),
            wal_frames: AtomicU64::new(0),
            stalled_clients: AtomicU64::new(0),
            refused_connections: AtomicU64::new(0),
            http: Default::default(),
        }
    }
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// A request of `kind` was answered with `resp` (counted before it is sent,
    /// so a client that has its answer finds it counted).
    pub(crate) fn answered(&self, kind: RequestKind, resp: &Response) {
        bump(&self.requests[usize::from(kind.0)][outcome_of(resp)]);
    }

    /// Requests of kind index `kind` answered with outcome index `outcome`.
    pub(crate) fn requests(&self, kind: usize, outcome: usize) -> u64 {
        self.requests[kind][outcome].load(Ordering::Relaxed)
    }

    /// A checkpoint in `mode` ended: `Ok(blocked)`, or failed.
    pub(crate) fn checkpointed(&self, mode: CheckpointMode, result: Result<bool, ()>) {
        let m = CHECKPOINT_MODES.iter().position(|x| *x == mode).unwrap_or(0);
        let r = match result {
            Ok(false) => 0,
            Ok(true) => 1,
            Err(()) => 2,
        };
        bump(&self.checkpoints[m][r]);
    }

    /// Checkpoints of mode index `mode` that ended with result index `result`.
    pub(crate) fn checkpoints(&self, mode: usize, result: usize) -> u64 {
        self.checkpoints[mode][result].load(Ordering::Relaxed)
    }

    /// A backup ended; `bytes` written when it succeeded.
    pub(crate) fn backed_up(&self, bytes: Option<u64>) {
        bump(&self.backups[usize::from(bytes.is_none())]);
        if let Some(b) = bytes {
            self.backup_bytes.fetch_add(b, Ordering::Relaxed);
        }
    }

    /// Backups that succeeded (index 0) or failed (index 1).
    pub(crate) fn backups(&self, failed: bool) -> u64 {
        self.backups[usize::from(failed)].load(Ordering::Relaxed)
    }

    /// The HTTP endpoint answered with `code` (one of [`HTTP_CODES`]).
    pub(crate) fn http_answered(&self, code: u16) {
        if let Some(i) = HTTP_CODES.iter().position(|c| *c == code) {
            bump(&self.http[i]);
        }
    }

    /// HTTP answers with the code of index `i` in [`HTTP_CODES`].
    pub(crate) fn http(&self, i: usize) -> u64 {
        self.http[i].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use litebroker_protocol::{ErrorInfo, Statement, WriteOptions};

    use super::*;

    #[test]
    fn each_request_kind_is_counted_under_its_protocol_name() {
        let requests = [
            Request::Hello(litebroker_protocol::Hello {
                protocol: 1,
                minor: 2,
                client_name: String::new(),
                pid: 0,
                expected_schema: None,
            }),
            Request::Ping,
            Request::Execute { stmt: Statement::new("", Vec::new()), opts: WriteOptions::default() },
            Request::Batch { statements: Vec::new(), opts: WriteOptions::default() },
            Request::Status,
            Request::Shutdown,
            Request::BeginSession { timeout_ms: 0 },
            Request::Commit,
            Request::Rollback,
            Request::Connections,
            Request::Stats,
            Request::Verify,
            Request::Checkpoint { mode: CheckpointMode::Full },
            Request::Backup { label: String::new(), keep: 0 },
            Request::Restore { path: String::new(), timeout_ms: 0 },
            Request::Migrate { migrations: Vec::new(), timeout_ms: 0 },
            Request::Health,
            Request::Watch { tables: Vec::new(), since: None },
            Request::FeedStats,
            Request::Metrics,
            Request::Replication,
            Request::ManyBegin { sql: String::new(), opts: WriteOptions::default() },
            Request::ManyRows { rows: Vec::new() },
            Request::ManyEnd { rows: 0, commit: false },
            Request::BatchBegin { opts: WriteOptions::default() },
            Request::BatchPart { statements: Vec::new() },
        ];
        assert_eq!((KINDS.len(), OUTCOMES.len()), (N_KINDS, N_OUTCOMES));
        for (i, r) in requests.iter().enumerate() {
            assert_eq!(usize::from(RequestKind::of(r).0), i);
            assert_eq!(KINDS[i], r.kind());
        }
        assert_eq!(KINDS[usize::from(RequestKind::UNKNOWN.0)], "unknown");
        assert_eq!(RequestKind::of(&requests[2]), RequestKind::EXECUTE);
    }

    #[test]
    fn each_error_kind_is_counted_under_its_own_name() {
        let kinds = [
            ErrorKind::Sql,
            ErrorKind::Constraint,
            ErrorKind::Locked,
            ErrorKind::Timeout,
            ErrorKind::ShuttingDown,
            ErrorKind::Protocol,
            ErrorKind::Incompatible,
            ErrorKind::LimitExceeded,
            ErrorKind::NotAllowed,
            ErrorKind::LeaseExpired,
            ErrorKind::SessionState,
            ErrorKind::DiskFull,
            ErrorKind::Internal,
            ErrorKind::VerificationFailed,
            ErrorKind::SchemaMismatch,
            ErrorKind::WritesStopped,
        ];
        assert_eq!(OUTCOMES[outcome_of(&Response::Pong)], "ok");
        for k in kinds {
            assert_eq!(OUTCOMES[outcome_of(&Response::Error(ErrorInfo::new(k, "x")))], k.as_str());
        }
        let m = Metrics::default();
        m.answered(RequestKind::EXECUTE, &Response::error(ErrorKind::Constraint, "UNIQUE"));
        assert_eq!(m.requests(2, 2), 1);
    }
}
