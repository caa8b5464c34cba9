//! State shared by the accept loop, the connection threads and the writer thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use litebroker_protocol::host::unix_ms;
use litebroker_protocol::{
    CheckpointMode, CheckpointReport, HealthReport, Response, Statement, WriteOptions,
};

use crate::config::Config;
use crate::reply::ReplyTx;
use crate::texts;

/// Why the broker stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Ctrl-C, SIGTERM or SIGHUP.
    Signal,
    /// A client sent the `shutdown` request.
    Request {
        /// Who asked.
        client: String,
    },
    /// The writer or acceptor failed and the broker cannot go on.
    Fatal(String),
}

/// Session state of one connection, written by the writer thread and read by the
/// connection's thread to route its requests.
pub mod session_state {
    /// No write session.
    pub const NONE: u8 = 0;
    /// This connection holds the writer.
    pub const ACTIVE: u8 = 1;
    /// The broker rolled the session back (lease expired, shutdown); the client
    /// has not been told yet.
    pub const EXPIRED: u8 = 2;
}

/// One connected client.
#[derive(Debug)]
pub struct ClientEntry {
    /// Broker-assigned id.
    pub id: u64,
    /// Name from the handshake.
    pub name: String,
    /// Process id (from the OS where available).
    pub pid: u32,
    /// Connection time, ms since the epoch.
    pub connected_unix_ms: u64,
    /// Requests served.
    pub requests: AtomicU64,
    /// See [`session_state`].
    pub session: AtomicU8,
    /// The schema version the client was built for, if it said.
    pub expected_schema: Option<u32>,
    /// The protocol minor version the client speaks: answers use only what it knows.
    pub minor: u32,
}

impl ClientEntry {
    /// "name (pid N, client #id)" for messages and logs.
    pub fn describe(&self) -> String {
        format!("'{}' (pid {}, client #{})", self.name, self.pid, self.id)
    }
}

/// Guarantees the broker could not keep, each with its reason, so that they are
/// reported (`Request::Health`, `status`, `doctor`) instead of lost silently.
#[derive(Debug, Clone, Default)]
struct Degraded {
    exactly_once_off: Option<String>,
    writes_stopped: Option<String>,
}

/// Who holds the writer in a write session.
#[derive(Debug, Clone)]
pub struct Holder {
    /// The holding client.
    pub client: Arc<ClientEntry>,
    /// Since when.
    pub since: Instant,
}

/// Counters reported by `status`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests served (all kinds).
    pub requests: AtomicU64,
    /// Write transactions committed (groups, sessions, migrations, restores).
    pub commits: AtomicU64,
    /// Group-commit transactions committed (one-shot writes only).
    pub group_commits: AtomicU64,
    /// Write requests committed in them (sum of group sizes).
    pub committed_requests: AtomicU64,
    /// Largest group committed.
    pub max_group: AtomicU64,
    /// One-shot writes taken by the writer (their queue wait is measured).
    pub queue_waits: AtomicU64,
    /// Sum of their queue waits, µs.
    pub queue_wait_us: AtomicU64,
    /// Longest queue wait, µs.
    pub max_queue_wait_us: AtomicU64,
    /// Sum of group `COMMIT` durations, µs.
    pub commit_us: AtomicU64,
    /// Longest group `COMMIT`, µs.
    pub max_commit_us: AtomicU64,
    /// Jobs in the writer's queue or being run: counted under the queue's lock as
    /// they are queued, uncounted once done.
    pub queued: AtomicUsize,
    /// Times the writer found the database locked by another process.
    pub lock_waits: AtomicU64,
    /// Backoff retries made because of such locks.
    pub lock_retries: AtomicU64,
    /// Requests whose answer has not been written yet (for a clean shutdown).
    pub in_flight: AtomicUsize,
    /// Requests answered from the request-id table instead of running again.
    pub deduplicated: AtomicU64,
}

/// Everything shared between the broker's threads.
#[derive(Debug)]
pub struct Shared {
    /// The configuration in force.
    pub config: Config,
    /// Canonical database path.
    pub db_path: String,
    /// The socket or pipe name.
    pub socket: String,
    /// Start time.
    pub started: Instant,
    /// Start time, ms since the epoch.
    pub started_unix_ms: u64,
    /// Set once shutdown began: no new work is accepted.
    pub shutting_down: AtomicBool,
    /// False once the writer thread has exited.
    pub writer_alive: AtomicBool,
    /// Counters.
    pub counters: Counters,
    /// `PRAGMA user_version`, refreshed by the writer after commits that touch it.
    pub schema_version: AtomicU32,
    /// Connections accepted and not yet closed (handshake done or not).
    pub connections: AtomicUsize,
    /// Whether the writer records request ids (exactly-once writes).
    pub request_ids: AtomicBool,
    clients: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
    next_client_id: AtomicU64,
    holder: Mutex<Option<Holder>>,
    /// Guarantees the broker cannot keep now, with their reasons.
    degraded: Mutex<Degraded>,
    last_checkpoint: Mutex<Option<CheckpointReport>>,
    stop_tx: Mutex<Option<Sender<StopReason>>>,
}

/// Locks a mutex, recovering from poisoning: the data behind these mutexes stays
/// consistent even if a holder panicked, and the broker must keep serving.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Shared state for a broker that serves `db_path` on `socket`.
    pub fn new(config: Config, db_path: String, socket: String, stop_tx: Sender<StopReason>) -> Shared {
        Shared {
            config,
            db_path,
            socket,
            started: Instant::now(),
            started_unix_ms: unix_ms(),
            shutting_down: AtomicBool::new(false),
            writer_alive: AtomicBool::new(true),
            counters: Counters::default(),
            schema_version: AtomicU32::new(0),
            connections: AtomicUsize::new(0),
            request_ids: AtomicBool::new(false),
            clients: Mutex::new(BTreeMap::new()),
            next_client_id: AtomicU64::new(1),
            holder: Mutex::new(None),
            degraded: Mutex::new(Degraded::default()),
            last_checkpoint: Mutex::new(None),
            stop_tx: Mutex::new(Some(stop_tx)),
        }
    }

    /// Starts the one shutdown path (idempotent).
    pub fn request_stop(&self, reason: StopReason) {
        if let Some(tx) = lock(&self.stop_tx).as_ref() {
            let _ = tx.send(reason);
        }
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Registers a client after its handshake.
    pub fn register(
        &self,
        name: String,
        pid: u32,
        expected_schema: Option<u32>,
        minor: u32,
    ) -> Arc<ClientEntry> {
        let id = self.next_client_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(ClientEntry {
            id,
            name,
            pid,
            connected_unix_ms: unix_ms(),
            requests: AtomicU64::new(0),
            session: AtomicU8::new(session_state::NONE),
            expected_schema,
            minor,
        });
        lock(&self.clients).insert(id, entry.clone());
        entry
    }

    /// Forgets a client that disconnected.
    pub fn unregister(&self, id: u64) {
        lock(&self.clients).remove(&id);
    }

    /// Clients connected now.
    pub fn client_count(&self) -> usize {
        lock(&self.clients).len()
    }

    /// A snapshot of the connected clients.
    pub fn clients(&self) -> Vec<Arc<ClientEntry>> {
        lock(&self.clients).values().cloned().collect()
    }

    /// Records (or clears) the write-session holder.
    pub fn set_holder(&self, holder: Option<Holder>) {
        *lock(&self.holder) = holder;
    }

    /// The current write-session holder.
    pub fn holder(&self) -> Option<Holder> {
        lock(&self.holder).clone()
    }

    /// Records why exactly-once writes are off (None: they are on). Request ids
    /// are then not recorded, and clients do not resend after a lost answer.
    pub fn set_exactly_once_off(&self, reason: Option<String>) {
        self.request_ids.store(reason.is_none(), Ordering::SeqCst);
        lock(&self.degraded).exactly_once_off = reason;
    }

    /// Stops accepting writes for good (until a restart), for `reason`.
    pub fn stop_writes(&self, reason: String) {
        lock(&self.degraded).writes_stopped.get_or_insert(reason);
    }

    /// Why writes are refused, if they are.
    pub fn writes_stopped(&self) -> Option<String> {
        lock(&self.degraded).writes_stopped.clone()
    }

    /// The answer to `Request::Health`.
    pub fn health(&self) -> HealthReport {
        let d = lock(&self.degraded).clone();
        HealthReport {
            exactly_once: self.request_ids.load(Ordering::SeqCst),
            exactly_once_off: d.exactly_once_off,
            writes_stopped: d.writes_stopped,
        }
    }

    /// Records the last checkpoint the writer ran.
    pub fn set_last_checkpoint(&self, report: CheckpointReport) {
        *lock(&self.last_checkpoint) = Some(report);
    }

    /// The last checkpoint the writer ran.
    pub fn last_checkpoint(&self) -> Option<CheckpointReport> {
        lock(&self.last_checkpoint).clone()
    }

    /// Why a waiter did not get the writer in time, for its error message.
    pub fn describe_contention(&self) -> String {
        match self.holder() {
            Some(h) => texts::held_by_session(&h.client.describe(), h.since.elapsed()),
            None => texts::writer_busy(self.counters.queued.load(Ordering::Relaxed)),
        }
    }
}

/// A job's lifecycle, packed with a per-connection sequence number so that a stale
/// (cancelled) job can never be mistaken for the connection's current one.
pub mod job_state {
    /// Waiting in the queue.
    pub const QUEUED: u64 = 0;
    /// Taken by the writer: it will answer.
    pub const RUNNING: u64 = 1;
    /// Given up by the connection (deadline passed): the writer must skip it.
    pub const CANCELLED: u64 = 2;
    /// Answered by the writer.
    pub const ANSWERED: u64 = 3;

    /// Packs a sequence number and a state.
    pub fn pack(seq: u64, state: u64) -> u64 {
        (seq << 2) | state
    }
}

/// What the writer thread is asked to do.
#[derive(Debug)]
pub enum JobKind {
    /// A one-shot write: one or several statements, committed atomically.
    Write(WriteBody),
    /// Open a write session for the job's client.
    BeginSession,
    /// Run a write inside the client's session.
    SessionWrite(WriteBody),
    /// End the client's session.
    EndSession {
        /// Commit (true) or roll back.
        commit: bool,
    },
    /// The client's connection closed: roll back its session, if any. Not answered.
    Disconnected,
    /// Run a WAL checkpoint on the writer connection.
    Checkpoint(CheckpointMode),
    /// Replace the database's content with a verified file, holding the writer.
    Restore(std::path::PathBuf),
    /// Apply the schema migrations above the database's version.
    Migrate(Vec<litebroker_protocol::Migration>),
    /// Finish what is queued and stop. Not answered.
    Stop,
}

/// The statements of a write request.
#[derive(Debug)]
pub enum WriteBody {
    /// `Request::Execute`: one SQL text (possibly several statements).
    Execute(Statement),
    /// `Request::Batch`: a list of statements.
    Batch(Vec<Statement>),
}

impl WriteBody {
    /// The statements, in order.
    pub fn statements(&self) -> impl Iterator<Item = &Statement> {
        match self {
            WriteBody::Execute(s) => std::slice::from_ref(s).iter(),
            WriteBody::Batch(v) => v.iter(),
        }
    }

    /// Bytes of SQL and parameters, for group limits.
    pub fn weight(&self) -> usize {
        fn one(s: &Statement) -> usize {
            s.sql.len() + s.params.len() * 16
        }
        match self {
            WriteBody::Execute(s) => one(s),
            WriteBody::Batch(v) => v.iter().map(one).sum(),
        }
    }
}

thread_local! {
    // Set by the thread running a group from just before its COMMIT until every
    // caller was answered: a failure inside the broker meanwhile cannot tell the
    // callers whether their writes committed.
    static IN_DOUBT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks (or clears) the span in which an unanswered job may have committed.
pub fn set_in_doubt(v: bool) {
    IN_DOUBT.with(|d| d.set(v));
}

/// Whether this thread is inside such a span (see [`set_in_doubt`]).
pub fn in_doubt() -> bool {
    IN_DOUBT.with(std::cell::Cell::get)
}

/// A unit of work for the writer thread.
#[derive(Debug)]
pub struct Job {
    /// What to do.
    pub kind: JobKind,
    /// Options of the request (request id, idempotency).
    pub opts: WriteOptions,
    /// The submitting client (None for broker-internal jobs).
    pub client: Option<Arc<ClientEntry>>,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// When it was queued.
    pub enqueued: Instant,
    /// Shared with the connection: see [`job_state`].
    pub state: Arc<AtomicU64>,
    /// This job's sequence number on its connection.
    pub seq: u64,
    /// Where the answer goes.
    pub reply: Option<ReplyTx>,
}

impl Job {
    /// Claims the job for execution; false when the connection already gave up on it.
    pub fn claim(&self) -> bool {
        self.state
            .compare_exchange(
                job_state::pack(self.seq, job_state::QUEUED),
                job_state::pack(self.seq, job_state::RUNNING),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Sends the answer (see [`ReplyTx::send`]); never blocks. A job is answered
    /// once: a second answer is dropped (the connection may have moved on to its
    /// next request, which must not receive it).
    pub fn answer(&self, resp: Response) {
        let answering = self.state.compare_exchange(
            job_state::pack(self.seq, job_state::RUNNING),
            job_state::pack(self.seq, job_state::ANSWERED),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if answering.is_err() {
            return;
        }
        if let Some(tx) = &self.reply {
            let minor = self.client.as_ref().map_or(litebroker_protocol::PROTOCOL_MINOR, |c| c.minor);
            tx.send(self.seq, for_minor(resp, minor));
        }
    }

    /// Taken by the writer and not answered yet.
    pub fn unanswered(&self) -> bool {
        self.state.load(Ordering::Acquire) == job_state::pack(self.seq, job_state::RUNNING)
    }

    /// The client id, or 0 for internal jobs.
    pub fn client_id(&self) -> u64 {
        self.client.as_ref().map_or(0, |c| c.id)
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// `resp` in a form a client speaking protocol minor `minor` can decode: error
/// kinds appended in a later minor become `Internal`, their message kept.
pub fn for_minor(resp: Response, minor: u32) -> Response {
    match resp {
        Response::Error(mut e) if minor < 1 && e.kind == litebroker_protocol::ErrorKind::WritesStopped => {
            e.kind = litebroker_protocol::ErrorKind::Internal;
            Response::Error(e)
        }
        other => other,
    }
}

impl Drop for Job {
    /// A job taken by the writer is always answered. One dropped unanswered was
    /// cut short by a failure inside the broker (a panic while running it): its
    /// caller learns that, unless the failure came between a COMMIT and the
    /// answers, when nobody can say what was applied and the broker exits instead
    /// (its callers resend with their request ids).
    fn drop(&mut self) {
        if self.reply.is_none() || !self.unanswered() || in_doubt() {
            return;
        }
        tracing::error!(
            "a request was cut short by an internal failure of the broker; answering with an error"
        );
        self.answer(Response::Error(texts::cut_short()));
    }
}

#[cfg(test)]
mod tests {
    use litebroker_protocol::{decode_payload, encode_frame, ErrorKind, FRAME_HEADER_LEN, HARD_MAX_FRAME};

    use super::*;

    #[test]
    fn a_client_of_minor_0_gets_an_error_kind_it_can_decode() {
        let stopped = Response::error(ErrorKind::WritesStopped, "the -wal file was deleted");
        let Response::Error(old) = for_minor(stopped.clone(), 0) else { panic!("not an error") };
        assert_eq!((old.kind, old.message.as_str()), (ErrorKind::Internal, "the -wal file was deleted"));
        // Its bytes use only minor 0's error kinds (index 12, Internal).
        let mut buf = Vec::new();
        encode_frame(&Response::Error(old), &mut buf, HARD_MAX_FRAME).unwrap();
        assert_eq!(buf[FRAME_HEADER_LEN + 1], 12);
        assert!(decode_payload::<Response>(&buf[FRAME_HEADER_LEN..]).is_ok());
        assert_eq!(for_minor(stopped.clone(), 1), stopped);
    }
}
