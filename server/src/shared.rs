//! State shared by the accept loop, the connection threads and the writer thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use litebroker_protocol::host::unix_ms;
use litebroker_protocol::{
    BrokerStatus, CheckpointReport, ClientInfo, HealthReport, PROTOCOL_MINOR, PROTOCOL_VERSION,
};

use crate::config::Config;
use crate::metrics::Metrics;
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

/// Counters reported by `status` (and by the metrics, which read them here). The
/// group-commit figures — transactions, their requests, queue waits and COMMIT
/// times — are the count and sum of the metrics' histograms
/// ([`crate::metrics::Metrics`]), shared rather than counted twice.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests served (all kinds).
    pub requests: AtomicU64,
    /// Write transactions committed (groups, sessions, migrations, restores).
    pub commits: AtomicU64,
    /// When the last write transaction committed, ms since the epoch (0: none
    /// yet); replication measures its lag from it.
    pub last_commit_unix_ms: Arc<AtomicU64>,
    /// Largest group committed.
    pub max_group: AtomicU64,
    /// Longest queue wait, µs.
    pub max_queue_wait_us: AtomicU64,
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
    /// Set once shutdown began: no new work is accepted.
    pub shutting_down: AtomicBool,
    /// False once the writer thread has exited.
    pub writer_alive: AtomicBool,
    /// Counters.
    pub counters: Counters,
    /// The figures only the metrics report, and the histograms `status` shares.
    pub metrics: Metrics,
    /// `PRAGMA user_version`, refreshed by the writer after commits that touch it.
    pub schema_version: AtomicU32,
    /// Connections accepted and not yet closed (handshake done or not).
    pub connections: AtomicUsize,
    /// Whether the writer records request ids (exactly-once writes).
    pub request_ids: AtomicBool,
    /// The change feed.
    pub feed: crate::feed::Feed,
    clients: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
    next_client_id: AtomicU64,
    holder: Mutex<Option<Holder>>,
    /// Guarantees the broker cannot keep now, with their reasons.
    degraded: Mutex<Degraded>,
    last_checkpoint: Mutex<Option<CheckpointReport>>,
    stop_tx: Mutex<Option<Sender<StopReason>>>,
    /// Replication, when the broker was started with `--replicate`.
    pub replication: std::sync::OnceLock<crate::replication::Replicator>,
}

pub use crate::lock::lock;

impl Shared {
    /// The replication report (`Off` without `--replicate`).
    pub fn replication_report(&self) -> litebroker_protocol::replication::ReplicationReport {
        self.replication.get().map_or_else(crate::replication::off, crate::replication::Replicator::report)
    }

    /// Shared state for a broker that serves `db_path` on `socket`.
    pub fn new(config: Config, db_path: String, socket: String, stop_tx: Sender<StopReason>) -> Shared {
        Shared {
            feed: crate::feed::Feed::new(&config),
            config,
            db_path,
            socket,
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
            writer_alive: AtomicBool::new(true),
            counters: Counters::default(),
            metrics: Metrics::default(),
            schema_version: AtomicU32::new(0),
            connections: AtomicUsize::new(0),
            request_ids: AtomicBool::new(false),
            clients: Mutex::new(BTreeMap::new()),
            next_client_id: AtomicU64::new(1),
            holder: Mutex::new(None),
            degraded: Mutex::new(Degraded::default()),
            last_checkpoint: Mutex::new(None),
            stop_tx: Mutex::new(Some(stop_tx)),
            replication: std::sync::OnceLock::new(),
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

    /// The answer to `Request::Status`.
    pub fn status(&self) -> BrokerStatus {
        let c = &self.counters;
        let m = &self.metrics;
        BrokerStatus {
            pid: std::process::id(),
            socket: self.socket.clone(),
            db_path: self.db_path.clone(),
            protocol: PROTOCOL_VERSION,
            minor: PROTOCOL_MINOR,
            broker_version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            clients: self.client_count() as u32,
            requests: c.requests.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            queue_depth: c.queued.load(Ordering::Relaxed) as u32,
            synchronous: self.config.synchronous.as_str().to_owned(),
            writer_holder: self
                .holder()
                .map(|h| format!("{} for {:.1} s", h.client.describe(), h.since.elapsed().as_secs_f64())),
            request_ids: self.request_ids.load(Ordering::Relaxed),
            group_commits: m.group_size.count(),
            group_requests: m.group_size.sum(),
            max_group: c.max_group.load(Ordering::Relaxed),
            queue_waits: m.queue_wait.count(),
            queue_wait_us: m.queue_wait.sum(),
            max_queue_wait_us: c.max_queue_wait_us.load(Ordering::Relaxed),
            commit_us: m.commit.sum(),
            max_commit_us: c.max_commit_us.load(Ordering::Relaxed),
        }
    }

    /// The answer to `Request::Connections`.
    pub fn connections(&self) -> Vec<ClientInfo> {
        self.clients()
            .iter()
            .map(|c| ClientInfo {
                id: c.id,
                name: c.name.clone(),
                pid: c.pid,
                connected_unix_ms: c.connected_unix_ms,
                requests: c.requests.load(Ordering::Relaxed),
                holds_writer: c.session.load(Ordering::SeqCst) == session_state::ACTIVE,
            })
            .collect()
    }

    /// Why a waiter did not get the writer in time, for its error message.
    pub fn describe_contention(&self) -> String {
        match self.holder() {
            Some(h) => texts::held_by_session(&h.client.describe(), h.since.elapsed()),
            None => texts::writer_busy(self.counters.queued.load(Ordering::Relaxed)),
        }
    }
}
