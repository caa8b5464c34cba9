//! The writer thread: the only connection that writes the database.
//!
//! Connection threads hand it [`Job`]s through one bounded channel. Without a
//! write session it commits everything that queued while the previous transaction
//! ran as one transaction (group commit): `BEGIN IMMEDIATE`, a `SAVEPOINT` per
//! request so a failing request rolls back only itself, `COMMIT`, then every caller
//! is answered. A write session holds the writer exclusively; jobs of other clients
//! wait in FIFO order meanwhile.
//!
//! The [`Writer`] sits behind a mutex in [`WriterHandle`]: a connection thread that
//! queues a one-shot write while nothing is queued and finds the writer free runs
//! the queued writes itself (in FIFO order, as the writer thread would) until its
//! own is answered, which spares the hand-off to the writer thread and back.
//! Everything else (sessions and the writes parked behind them, lease expiry,
//! admin jobs, disconnects, the idle checkpoint and request-id pruning, shutdown,
//! and writes queued while the writer is busy) is served by the writer thread,
//! which sleeps while the queue is empty. Whichever thread runs a statement, it
//! runs it under the mutex, so the connection is never used by two at once, and
//! the thread-local state SQLite's callbacks rely on (the authorizer's
//! `internal()` flag and denial reason) belongs to the thread that runs it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use litebroker_protocol::host::unix_ms;
use litebroker_protocol::{
    CheckpointMode, CheckpointReport, ErrorInfo, ErrorKind, ExecResult, Migration, MigrationReport, Response,
    RestoreReport, WriteOptions,
};
use rusqlite::{Connection, OpenFlags};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::guard::{self, WalFiles};
use crate::job::{in_doubt, set_in_doubt, Job, JobKind, JobState, Stage, WriteBody};
use crate::ops;
use crate::queue::JobQueue;
use crate::request_ids;
use crate::shared::{lock, session_state, ClientEntry, Holder, Shared};
use crate::sql::authorizer;
use crate::sql::exec::{run_batch, run_sql, sql_error, ExecLimits, Mode, SessionEnd, Tracker};
use crate::texts;

/// Opens the writer connection with the notes' PRAGMAs.
///
/// # Errors
/// When the file cannot be opened, or WAL mode cannot be enabled (e.g. on a network
/// filesystem).
pub fn open_writer(path: &std::path::Path, config: &Config) -> Result<Connection, String> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    conn.busy_timeout(config.busy_timeout).map_err(|e| e.to_string())?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| format!("cannot set WAL mode on {}: {e}", path.display()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "{} stays in journal mode '{mode}' instead of WAL; WAL needs a local filesystem \
             (network drives are not supported)",
            path.display()
        ));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -64000;",
        config.synchronous.as_str()
    ))
    .map_err(|e| format!("cannot apply PRAGMAs to {}: {e}", path.display()))?;
    conn.set_prepared_statement_cache_capacity(256);
    // A value longer than a frame could never be answered, and one SQLite
    // opcode building a value of SQLite's default 1 GB limit (randomblob, zeroblob,
    // printf, replace, ||) runs for seconds where no progress handler reaches it.
    // SAFETY: sqlite3_limit on the connection this function owns.
    unsafe {
        rusqlite::ffi::sqlite3_limit(
            conn.handle(),
            rusqlite::ffi::SQLITE_LIMIT_LENGTH,
            i32::try_from(config.max_frame).unwrap_or(i32::MAX),
        );
    }
    authorizer::install(&mut conn)
        .map_err(|e| format!("cannot install the SQL authorizer on {}: {e}", path.display()))?;
    Ok(conn)
}

/// Reads `PRAGMA user_version`.
pub fn user_version(conn: &Connection) -> u32 {
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map(|v| u32::try_from(v).unwrap_or(0))
        .unwrap_or(0)
}

struct ActiveSession {
    client: Arc<ClientEntry>,
    started: Instant,
    lease_deadline: Instant,
    fresh: bool,
}

/// The writer thread's state.
pub struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    queue: Arc<JobQueue>,
    pending: VecDeque<Job>,
    session: Option<ActiveSession>,
    stopping: bool,
    /// Something was committed since the last idle checkpoint.
    dirty: bool,
    /// Frames in the WAL after the last commit (from the WAL hook).
    wal_pages: Arc<AtomicU64>,
    /// WAL size at which the next PASSIVE checkpoint runs.
    checkpoint_at: u64,
    /// When the writer last took a job: the idle checkpoint waits for
    /// `--idle-checkpoint-ms` without one.
    last_job: Instant,
    /// Request ids are recorded (the table exists and retention is on).
    request_ids: bool,
    last_prune: Option<Instant>,
    id_buf: Vec<u8>,
    failpoints: Failpoints,
    /// Deadline of the running statement in ns since `epoch` (0 = none), read by the
    /// progress handler to interrupt runaway statements.
    deadline_ns: Arc<AtomicU64>,
    epoch: Instant,
    busy_timeout: Duration,
    group: Vec<Job>,
    results: Vec<Result<Response, ErrorInfo>>,
    /// Requests of the running group answered from their request-id record.
    group_dedup: u64,
    /// The `-wal`/`-shm` files in use, checked now and then (see `crate::guard`).
    wal_files: Option<WalFiles>,
    /// When setting up request ids was last tried, while they are wanted but off.
    last_id_setup: Instant,
}

impl Writer {
    /// Wraps an open writer connection that serves the jobs of `queue`.
    pub fn new(mut conn: Connection, shared: Arc<Shared>, queue: Arc<JobQueue>) -> Writer {
        // SQLite's automatic checkpoint runs inside the COMMIT that crosses its
        // threshold, so the requests of that group wait for it (with an fsync, even
        // under synchronous=NORMAL). The hook replaces it: it only records the WAL's
        // size, and the writer checkpoints after answering (`checkpoint_if_large`).
        let wal_pages = Arc::new(AtomicU64::new(0));
        let pages = wal_pages.clone();
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, n: std::ffi::c_int| {
            pages.store(n.max(0) as u64, Ordering::Relaxed);
            Ok(())
        }))
        .ok();
        let deadline_ns = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let dl = deadline_ns.clone();
        // Every 100 virtual-machine steps (a few microseconds): a statement stops
        // soon after its deadline, whatever loop it is in.
        conn.progress_handler(
            100,
            Some(move || {
                let d = dl.load(Ordering::Relaxed);
                d != 0 && epoch.elapsed().as_nanos() as u64 >= d
            }),
        )
        .ok();
        let busy_timeout = shared.config.busy_timeout;
        Writer {
            conn,
            shared,
            queue,
            pending: VecDeque::new(),
            session: None,
            stopping: false,
            dirty: false,
            wal_pages,
            checkpoint_at: CHECKPOINT_PAGES,
            last_job: Instant::now(),
            request_ids: false,
            last_prune: None,
            id_buf: Vec::new(),
            failpoints: Failpoints::from_env(),
            deadline_ns,
            epoch,
            busy_timeout,
            group: Vec::new(),
            results: Vec::new(),
            group_dedup: 0,
            wal_files: None,
            last_id_setup: Instant::now(),
        }
    }

    /// Set-up the writer thread does before serving: request ids (set up by
    /// `crate::run` before the broker listens, so the first client that asks — a
    /// reconnecting one deciding whether it may resend — gets the truth), pruning,
    /// the schema version.
    pub(crate) fn start(&mut self) {
        self.request_ids = self.shared.request_ids.load(Ordering::Relaxed);
        self.prune_request_ids();
        self.refresh_schema_version();
        self.wal_files = Some(WalFiles::record(Path::new(&self.shared.db_path)));
    }

    /// The writer connection (tests and the harness read the file through it).
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Looks at the `-wal`/`-shm` files (`force`: now, else at most once a
    /// second); writes stop for good when they are not the ones in use.
    fn check_wal_files(&mut self, force: bool) {
        let Some(files) = self.wal_files.as_mut() else { return };
        let r = if force { files.check() } else { files.check_now_and_then() };
        if let Err(reason) = r {
            if self.shared.writes_stopped().is_none() {
                tracing::error!("{reason}");
            }
            self.shared.stop_writes(reason);
        }
    }

    /// Request ids are wanted (retention set) but could not be set up, e.g. another
    /// process held a lock when the broker started: tries again, now and then,
    /// when idle.
    fn retry_request_id_setup(&mut self) {
        let wanted = self.shared.config.request_id_retention.is_some();
        if !wanted || self.request_ids || self.last_id_setup.elapsed() < ID_SETUP_RETRY {
            return;
        }
        self.last_id_setup = Instant::now();
        match request_ids::ensure_table(&self.conn) {
            Ok(()) => {
                info!("request ids are recorded again: writes carrying one are exactly-once");
                self.shared.set_exactly_once_off(None);
                self.request_ids = true;
            }
            Err(e) => debug!("request ids still off: {e}"),
        }
    }

    /// The next job the writer can take without waiting: parked jobs once no
    /// session holds the writer, then the queue's. Ends an expired session first.
    fn next_ready(&mut self) -> Option<Job> {
        if self.session.as_ref().is_some_and(|s| Instant::now() >= s.lease_deadline) {
            self.expire_session();
        }
        if self.session.is_none() {
            if let Some(j) = self.pending.pop_front() {
                return Some(j);
            }
        }
        self.queue.try_recv()
    }

    /// How long the writer thread may sleep: until the session's lease ends, or
    /// until the idle checkpoint is due after commits; without a deadline else.
    fn idle_timeout(&self) -> Option<Duration> {
        if let Some(s) = &self.session {
            return Some(s.lease_deadline.saturating_duration_since(Instant::now()));
        }
        self.dirty.then(|| self.shared.config.idle_checkpoint_after.saturating_sub(self.last_job.elapsed()))
    }

    /// Idle after commits: truncate the WAL while nobody writes, and now and then
    /// prune request ids past their retention.
    fn idle_maintenance(&mut self) {
        let idle = self.last_job.elapsed() >= self.shared.config.idle_checkpoint_after;
        if self.session.is_some() || !idle {
            return;
        }
        self.check_wal_files(false);
        self.retry_request_id_setup();
        if !self.dirty {
            return;
        }
        self.dirty = false;
        // The full check of the connection, once per idle spell after commits.
        self.verify_connection_clean();
        if self.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            self.busy_timeout = Duration::ZERO;
            self.conn.busy_timeout(Duration::ZERO).ok();
            self.prune_request_ids();
        }
        match self.checkpoint(CheckpointMode::Truncate, Duration::ZERO) {
            Ok(r) => debug!(
                blocked = r.blocked,
                wal_frames = r.wal_frames,
                checkpointed = r.checkpointed_frames,
                "idle checkpoint"
            ),
            Err(e) => debug!("idle checkpoint failed: {}", e.message),
        }
    }

    /// Runs queued one-shot writes, in FIFO order, until the job `own` is no longer
    /// queued (it was answered). Stops early when something else must run first (a
    /// session holds the writer, jobs are parked behind one, or a job that is not
    /// a one-shot write is next): the writer thread does that.
    fn serve_writes(&mut self, own: &JobState, own_seq: u64) {
        while own.is(own_seq, Stage::Queued) {
            if self.stopping {
                // The writer thread ran what was queued before the stop and closed
                // the database: what came later is refused.
                while let Some(job) = self.queue.try_recv_write() {
                    if job.claim() {
                        job.answer(Response::Error(texts::shutting_down()));
                    }
                    self.finished(1);
                }
                return;
            }
            if self.session.is_some() || !self.pending.is_empty() {
                return;
            }
            match self.queue.try_recv_write() {
                Some(job) => self.run_group(job),
                None => return,
            }
        }
    }

    /// A PASSIVE checkpoint once the WAL holds `CHECKPOINT_PAGES` frames (SQLite's
    /// own default threshold), run after the group that crossed it was answered.
    /// When readers keep it from completing, the next try waits for as many new
    /// frames again instead of running after every commit.
    fn checkpoint_if_large(&mut self) {
        let pages = self.wal_pages.load(Ordering::Relaxed);
        if pages < self.checkpoint_at {
            if pages < CHECKPOINT_PAGES {
                // The WAL was reset (restarted from its beginning).
                self.checkpoint_at = CHECKPOINT_PAGES;
            }
            return;
        }
        match self.checkpoint(CheckpointMode::Passive, Duration::ZERO) {
            Ok(r) if !r.blocked => self.checkpoint_at = CHECKPOINT_PAGES,
            _ => self.checkpoint_at = pages + CHECKPOINT_PAGES,
        }
    }

    /// Runs `PRAGMA wal_checkpoint(mode)`, waiting at most `wait` for readers, and
    /// records the outcome; warns when the WAL stays above the threshold.
    fn checkpoint(&mut self, mode: CheckpointMode, wait: Duration) -> Result<CheckpointReport, ErrorInfo> {
        if wait != self.busy_timeout {
            self.conn.busy_timeout(wait).ok();
            self.busy_timeout = wait;
        }
        let (busy, log, done) = authorizer::internal(|| {
            self.conn.query_row(&format!("PRAGMA wal_checkpoint({})", mode.as_str()), [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })
        })
        .map_err(|e| sql_error(&e))?;
        let wal_bytes_after = ops::file_size(&ops::wal_path(Path::new(&self.shared.db_path)));
        let report = CheckpointReport {
            mode,
            blocked: busy != 0 || done < log,
            wal_frames: log,
            checkpointed_frames: done,
            wal_bytes_after,
            at_unix_ms: unix_ms(),
        };
        let warn_at = self.shared.config.wal_warn_bytes;
        if wal_bytes_after > warn_at {
            warn!("{}", ops::wal_warning(wal_bytes_after, warn_at));
        }
        self.shared.set_last_checkpoint(report.clone());
        Ok(report)
    }

    fn note_queue_wait(&self, job: &Job) {
        let us = job.enqueued.elapsed().as_micros() as u64;
        let c = &self.shared.counters;
        c.queue_waits.fetch_add(1, Ordering::Relaxed);
        c.queue_wait_us.fetch_add(us, Ordering::Relaxed);
        c.max_queue_wait_us.fetch_max(us, Ordering::Relaxed);
    }

    fn finished(&self, n: usize) {
        self.shared.counters.queued.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn dispatch(&mut self, job: Job) {
        self.last_job = Instant::now();
        let holder = self.session.as_ref().map(|s| s.client.id);
        let mine = holder.is_some() && holder == Some(job.client_id());
        match job.kind {
            JobKind::Stop => unreachable!("handled by run"),
            JobKind::Disconnected => {
                if mine {
                    let who = job.client.as_ref().map(|c| c.describe()).unwrap_or_default();
                    info!("client {who} disconnected during its write session; rolled back");
                    self.end_session(false, session_state::NONE).ok();
                }
                self.finished(1);
            }
            JobKind::SessionWrite(_) | JobKind::EndSession { .. } if mine => self.session_job(job),
            JobKind::SessionWrite(_) | JobKind::EndSession { .. } => {
                // The session ended (lease expired, shutdown) after the client sent this.
                if job.claim() {
                    job.answer(Response::Error(texts::lease_expired(self.shared.config.lease)));
                    if let Some(c) = &job.client {
                        c.session.store(session_state::NONE, Ordering::SeqCst);
                    }
                }
                self.finished(1);
            }
            _ if holder.is_some() => self.pending.push_back(job),
            JobKind::Write(_) => self.run_group(job),
            JobKind::BeginSession => self.begin_session(job),
            JobKind::Checkpoint(mode) => {
                if job.claim() {
                    let wait = self.shared.config.busy_timeout.min(job.remaining());
                    job.answer(match self.checkpoint(mode, wait) {
                        Ok(r) => Response::Checkpoint(r),
                        Err(e) => Response::Error(e),
                    });
                }
                self.finished(1);
            }
            JobKind::Migrate(ref migrations) => {
                if job.claim() {
                    let r = self.migrate(migrations, job.deadline);
                    job.answer(r.map_or_else(Response::Error, Response::Migrated));
                }
                self.finished(1);
            }
            JobKind::Restore(ref path) => {
                if job.claim() {
                    let r = if self.stopping { Err(texts::shutting_down()) } else { self.restore(path) };
                    job.answer(r.map_or_else(Response::Error, Response::Restored));
                }
                self.finished(1);
            }
        }
    }

    /// Applies, in order, each migration whose version is above `PRAGMA
    /// user_version`, each in its own transaction that also sets `user_version`, so
    /// a migration is applied exactly once however many callers ask for it.
    fn migrate(&mut self, migrations: &[Migration], deadline: Instant) -> Result<MigrationReport, ErrorInfo> {
        let from_version = user_version(&self.conn);
        let mut applied = Vec::new();
        for m in migrations.iter().filter(|m| m.version > from_version) {
            if let Some(e) = self.writes_refused() {
                return Err(e);
            }
            self.begin_immediate(deadline)?;
            let limits = self.limits(deadline);
            let mut tracker = Tracker::new(Mode::OneShot);
            let mut out = ExecResult::default();
            // A migration may take long (an index over a big table): it is bounded
            // by its caller's deadline, not by --max-statement-secs.
            self.arm_deadline(Some(deadline));
            let r = run_sql(&self.conn, &m.sql, &[], &mut tracker, &limits, &mut out)
                .and_then(|()| tracker.finish())
                .and_then(|()| {
                    authorizer::internal(|| {
                        self.conn
                            .execute_batch(&format!("PRAGMA user_version = {} /* _litebroker */", m.version))
                    })
                    .map_err(|e| sql_error(&e))
                })
                .and_then(|()| {
                    guard::connection_state(&self.conn, true).map_err(|what| texts::state_left(&what))
                })
                .and_then(|()| self.exec_internal(COMMIT_SQL).map_err(|e| sql_error(&e)));
            self.arm_deadline(None);
            if let Err(e) = r {
                if !self.conn.is_autocommit() {
                    self.exec_internal(ROLLBACK_SQL).ok();
                }
                self.refresh_schema_version();
                return Err(texts::migration_failed(e, m.version, &m.name, user_version(&self.conn)));
            }
            info!(version = m.version, name = %m.name, "migration applied");
            applied.push(m.version);
            self.dirty = true;
            self.shared.counters.commits.fetch_add(1, Ordering::Relaxed);
            self.refresh_schema_version();
        }
        self.conn.flush_prepared_statement_cache();
        Ok(MigrationReport { from_version, to_version: user_version(&self.conn), applied })
    }

    /// Replaces the database's content with `source` (verified by the caller)
    /// while holding the writer: a safety copy first, then SQLite's backup API in
    /// one step, which is one write transaction, so a failure leaves the database
    /// as it was and other processes' readers see the restored data on their next
    /// read.
    fn restore(&mut self, source: &Path) -> Result<RestoreReport, ErrorInfo> {
        let started = Instant::now();
        let db = PathBuf::from(&self.shared.db_path);
        let internal = texts::restore_failed;
        let src = ops::open_read_only(source).map_err(|e| internal("cannot open the source", &e))?;
        let page_size = |c: &Connection| c.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0));
        let (theirs, ours) = (
            page_size(&src).map_err(|e| internal("cannot read the source", &e))?,
            page_size(&self.conn).map_err(|e| internal("cannot read the database", &e))?,
        );
        if theirs != ours {
            return Err(texts::restore_page_size(&source.display().to_string(), theirs, ours));
        }
        // The broker's reserved names must be its own in the file it is to serve.
        match request_ids::foreign_objects(&src) {
            Ok(None) => {}
            Ok(Some(what)) => return Err(texts::restore_refused(&source.display().to_string(), &what)),
            Err(e) => return Err(internal("cannot read the source", &e)),
        }
        // Written under a temporary name and renamed once checked, so that an
        // interrupted restore never leaves a broken file listed as a backup.
        let safety = ops::new_backup_path(&db, "pre-restore").map_err(|e| internal("safety backup", &e))?;
        let safety = ops::write_backup(&db, &safety, &mut |_, _| {})
            .map_err(|e| internal("safety backup failed", &e))?
            .path;
        let pages = {
            let backup = rusqlite::backup::Backup::new(&src, &mut self.conn)
                .map_err(|e| internal("cannot start the copy", &e))?;
            match backup.step(-1) {
                Ok(rusqlite::backup::StepResult::Done) => backup.progress().pagecount as u64,
                Ok(other) => return Err(internal("the copy did not finish", &format!("{other:?}"))),
                Err(e) => return Err(internal("the copy failed", &e)),
            }
        };
        // A source in rollback-journal mode carries that mode in its header.
        let mode: String =
            authorizer::internal(|| self.conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)))
                .map_err(|e| internal("cannot re-enable WAL", &e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            warn!("after the restore the database is in journal mode {mode}, not WAL");
        }
        self.conn.flush_prepared_statement_cache();
        self.refresh_schema_version();
        self.dirty = true;
        self.shared.counters.commits.fetch_add(1, Ordering::Relaxed);
        // The WAL may have been recreated when the mode was set again.
        self.wal_files = Some(WalFiles::record(&db));
        // A file the broker did not make lacks its request-id table: install it
        // now, or say loudly that writes are not exactly-once until it can.
        if self.shared.config.request_id_retention.is_some() {
            match request_ids::ensure_table(&self.conn) {
                Ok(()) => {
                    self.request_ids = true;
                    self.shared.set_exactly_once_off(None);
                }
                Err(e) => {
                    warn!("request ids are off after the restore: {e}");
                    self.request_ids = false;
                    self.last_id_setup = Instant::now();
                    self.shared.set_exactly_once_off(Some(texts::ids_setup_failed_after_restore(
                        request_ids::TABLE,
                        &e,
                    )));
                }
            }
        }
        info!(from = %source.display(), safety = %safety.display(), pages, "database restored");
        Ok(RestoreReport {
            restored_from: source.to_string_lossy().into_owned(),
            safety_backup: safety.to_string_lossy().into_owned(),
            pages,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    // ----- group commit -------------------------------------------------------

    fn run_group(&mut self, first: Job) {
        self.last_job = Instant::now();
        let cfg = &self.shared.config;
        let (max_n, max_bytes) = (cfg.max_group_requests.max(1), cfg.max_group_bytes);
        let mut group = std::mem::take(&mut self.group);
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            if job.claim() {
                self.note_queue_wait(&job);
                if let JobKind::Write(body) = &job.kind {
                    bytes += body.weight();
                }
                group.push(job);
            } else {
                self.finished(1);
            }
            if group.len() >= max_n || bytes >= max_bytes {
                break;
            }
            // FIFO: older jobs parked in `pending` come before the queue's, and a
            // job that is not a one-shot write ends the group.
            next = match self.pending.front() {
                Some(j) if matches!(j.kind, JobKind::Write(_)) => self.pending.pop_front(),
                Some(_) => None,
                None => self.queue.try_recv_write(),
            };
        }
        if !group.is_empty() {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.execute_group(&group)));
            if ran.is_err() {
                self.recover();
                // Nothing of the group was applied: the others run again, each in
                // its own transaction, so that only the request that failed fails.
                if group.len() > 1 {
                    for job in group.iter().filter(|j| j.unanswered()) {
                        let one = std::slice::from_ref(job);
                        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            self.execute_group(one)
                        }));
                        if ran.is_err() {
                            self.recover();
                        }
                    }
                }
            }
            self.finished(group.len());
        }
        // A job still unanswered here was cut short by a failure; dropping it
        // answers it (see `Job`'s `Drop`), now that its transaction rolled back.
        group.clear();
        self.group = group;
    }

    /// After a failure (a panic) while running a request: rolls back what it
    /// did, forgets a write session it was part of, and goes on serving; its
    /// caller is told by the job's `Drop`. When the failure came after a COMMIT
    /// whose callers were not all answered, or the connection cannot be rolled
    /// back, nothing can be said for sure: the broker exits at once with code 1
    /// (its supervisor restarts it; clients resend with their request ids).
    fn recover(&mut self) {
        let doubt = in_doubt();
        if doubt {
            tracing::error!(
                "internal failure after a COMMIT whose callers were not all answered; exiting so that \
                 they learn the outcome by resending"
            );
            eprintln!("litebrokerd: internal failure after a commit; exiting");
            std::process::exit(1);
        }
        tracing::error!("internal failure while running a request; rolling it back and serving on");
        self.arm_deadline(None);
        self.group_dedup = 0;
        self.results.clear();
        if self.session.is_some() {
            self.drop_session(session_state::EXPIRED);
        }
        if !self.conn.is_autocommit() && self.exec_internal(ROLLBACK_SQL).is_err() {
            tracing::error!("cannot roll back after an internal failure; exiting");
            eprintln!("litebrokerd: cannot roll back after an internal failure; exiting");
            std::process::exit(1);
        }
        self.verify_connection_clean();
    }

    pub(crate) fn execute_group(&mut self, group: &[Job]) {
        if let Some(reason) = self.writes_refused() {
            for job in group {
                job.answer(Response::Error(reason.clone()));
            }
            return;
        }
        let deadline = group.iter().map(|j| j.deadline).max().unwrap_or_else(Instant::now);
        if let Err(e) = self.begin_immediate(deadline) {
            for job in group {
                job.answer(Response::Error(e.clone()));
            }
            return;
        }
        let single = group.len() == 1;
        let mut results = std::mem::take(&mut self.results);
        results.clear();
        let mut touches_schema = false;
        let mut check_state = false;
        let mut aborted: Option<(usize, ErrorInfo)> = None;
        for job in group {
            let JobKind::Write(body) = &job.kind else { unreachable!("groups hold writes") };
            if Instant::now() >= job.deadline {
                results.push(Err(texts::deadline_passed_before_run()));
                continue;
            }
            let mut tracker = Tracker::new(Mode::OneShot);
            let r = if single {
                let r = self.run_write(body, &job.opts, job.deadline, &mut tracker);
                // Settled now, before the setting is turned off below (which would
                // make SQLite forget the violations its COMMIT should refuse).
                if r.is_ok() && tracker.defers_foreign_keys && self.deferred_fk_pending() {
                    Err(texts::deferred_fk())
                } else {
                    r
                }
            } else {
                self.in_savepoint(|w| {
                    let r = w.run_write(body, &job.opts, job.deadline, &mut tracker);
                    // A deferred foreign key is checked at COMMIT, which this request
                    // shares with the group: check it as the request's own COMMIT
                    // would, so that only this request fails.
                    if r.is_ok() && w.deferred_fk_pending() {
                        return Err(texts::deferred_fk());
                    }
                    r
                })
            };
            // The request's pending violations are settled (checked, or rolled back
            // with its savepoint), so turning the setting off, which forgets them,
            // hides nothing; the next request must not inherit it.
            if tracker.defers_foreign_keys && !self.conn.is_autocommit() {
                if let Err(e) = self.exec_internal(DEFER_FK_OFF_SQL) {
                    aborted = Some((results.len(), sql_error(&e)));
                    break;
                }
            }
            touches_schema |= tracker.sets_user_version;
            check_state |= tracker.needs_state_check;
            // Some errors (disk full, I/O, an interrupted statement, out of memory)
            // make SQLite roll back the whole transaction, not only the savepoint.
            if self.conn.is_autocommit() {
                let cause = r.as_ref().err().cloned().unwrap_or_else(texts::transaction_ended);
                aborted = Some((results.len(), cause));
                break;
            }
            results.push(r);
        }
        // What the clients' statements left on the shared connection is checked
        // before anything of theirs commits (see `crate::guard`).
        if aborted.is_none() && results.iter().any(Result::is_ok) {
            if let Err(what) = guard::connection_state(&self.conn, check_state) {
                let culprit = single.then_some(0);
                aborted = Some((culprit.unwrap_or(usize::MAX), texts::state_left(&what)));
            }
        }
        let mut commit_time = Duration::ZERO;
        let outcome = match aborted {
            Some((at, cause)) => {
                if !self.conn.is_autocommit() {
                    self.exec_internal(ROLLBACK_SQL).ok();
                }
                Err((Some(at).filter(|&i| i < group.len()), cause))
            }
            None if single && results[0].is_err() => {
                self.exec_internal(ROLLBACK_SQL).ok();
                Ok(())
            }
            None => {
                let t = Instant::now();
                // From here until every caller is answered, a failure inside the
                // broker cannot say whether the group committed (see `in_doubt`).
                set_in_doubt(true);
                let r = self.exec_internal(COMMIT_SQL);
                commit_time = t.elapsed();
                r.map_err(|e| {
                    set_in_doubt(false);
                    self.exec_internal(ROLLBACK_SQL).ok();
                    (None, sql_error(&e))
                })
            }
        };
        match outcome {
            Ok(()) => {
                let committed = results.iter().any(Result::is_ok);
                if committed {
                    self.failpoint_after_commit();
                    self.dirty = true;
                    let c = &self.shared.counters;
                    c.commits.fetch_add(1, Ordering::Relaxed);
                    c.group_commits.fetch_add(1, Ordering::Relaxed);
                    c.committed_requests.fetch_add(group.len() as u64, Ordering::Relaxed);
                    c.max_group.fetch_max(group.len() as u64, Ordering::Relaxed);
                    let us = commit_time.as_micros() as u64;
                    c.commit_us.fetch_add(us, Ordering::Relaxed);
                    c.max_commit_us.fetch_max(us, Ordering::Relaxed);
                    c.deduplicated.fetch_add(std::mem::take(&mut self.group_dedup), Ordering::Relaxed);
                    if touches_schema {
                        self.refresh_schema_version();
                    }
                }
                self.group_dedup = 0;
                for (job, r) in group.iter().zip(results.drain(..)) {
                    job.answer(r.unwrap_or_else(Response::Error));
                }
                set_in_doubt(false);
                self.results = results;
                self.checkpoint_if_large();
            }
            Err((at, cause)) if !single => {
                results.clear();
                self.results = results;
                self.group_dedup = 0;
                self.rerun(group, at, cause);
            }
            Err((_, cause)) => {
                self.group_dedup = 0;
                warn!("write transaction failed, nothing committed: {}", cause.message);
                group[0].answer(Response::Error(cause));
                results.clear();
                self.results = results;
                self.verify_connection_clean();
            }
        }
    }

    /// Why writes are refused now, if they are: the broker found its files
    /// replaced, or its connection in a state it cannot vouch for.
    fn writes_refused(&mut self) -> Option<ErrorInfo> {
        self.check_wal_files(false);
        self.shared.writes_stopped().map(texts::writes_stopped)
    }

    /// Outside a transaction (after a rollback, when idle) the connection must be
    /// as the broker set it up: the clients' temp objects and settings roll back
    /// with their transaction, except what SQLite keeps outside it. If that check
    /// fails, writes stop.
    fn verify_connection_clean(&mut self) {
        if !self.conn.is_autocommit() {
            return;
        }
        let r = authorizer::internal(|| self.conn.execute_batch("BEGIN /* _litebroker */"))
            .map_err(|e| e.to_string())
            .and_then(|()| guard::connection_state(&self.conn, true));
        self.exec_internal(ROLLBACK_SQL).ok();
        if let Err(what) = r {
            let reason = texts::connection_not_restored(&what);
            tracing::error!("{reason}");
            self.shared.stop_writes(reason);
        }
    }

    /// A group transaction failed before anyone was answered, and nothing of it
    /// committed, so its requests can run again; request ids are safe to re-run
    /// too, since their records rolled back with the transaction. An interrupted
    /// runaway statement (`--max-statement-secs`) is known to be its request's
    /// fault: that request fails alone and the others run again as a group, in
    /// their order. Any other cause (a failed COMMIT, SQLite rolling back the
    /// transaction part-way for disk full or I/O, a request that left state on the
    /// connection) cannot be pinned on one request: each runs again in its own
    /// transaction, so only those that fail on their own get an error; a COMMIT
    /// that keeps failing fails every request and applies nothing.
    fn rerun(&mut self, group: &[Job], at: Option<usize>, cause: ErrorInfo) {
        match at {
            Some(culprit) if matches!(cause.kind, ErrorKind::Timeout | ErrorKind::LimitExceeded) => {
                warn!(
                    requests = group.len(),
                    "a request was stopped ({}); re-running the rest of its group", cause.message
                );
                group[culprit].answer(Response::Error(cause));
                for rest in [&group[..culprit], &group[culprit + 1..]] {
                    if !rest.is_empty() {
                        self.execute_group(rest);
                    }
                }
            }
            _ => {
                warn!(
                    requests = group.len(),
                    "group transaction failed, nothing committed ({}); re-running each request in its own transaction",
                    cause.message
                );
                for job in group {
                    self.execute_group(std::slice::from_ref(job));
                }
            }
        }
    }

    /// True while the transaction holds a deferred foreign-key violation that its
    /// COMMIT would reject.
    fn deferred_fk_pending(&self) -> bool {
        let (mut current, mut highwater) = (0, 0);
        // SAFETY: the handle is valid while `self.conn` lives, and the caller holds
        // the writer, so nobody else uses the connection; sqlite3_db_status only
        // reads a counter.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_db_status(
                self.conn.handle(),
                rusqlite::ffi::SQLITE_DBSTATUS_DEFERRED_FKS,
                &mut current,
                &mut highwater,
                0,
            )
        };
        rc == rusqlite::ffi::SQLITE_OK && current != 0
    }

    /// Runs `f` inside the internal savepoint: released on success, rolled back to
    /// on failure, so one request's failure does not touch the others.
    fn in_savepoint<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, ErrorInfo>) -> Result<T, ErrorInfo> {
        self.exec_internal(SAVEPOINT_SQL).map_err(|e| sql_error(&e))?;
        let r = f(self);
        if self.conn.is_autocommit() {
            return r;
        }
        if r.is_err() {
            self.exec_internal(ROLLBACK_TO_SQL).map_err(|e| sql_error(&e))?;
        }
        self.exec_internal(RELEASE_SQL).map_err(|e| sql_error(&e))?;
        r
    }

    /// Runs a one-shot write. With a request id it is exactly-once: an id already
    /// recorded returns its stored answer without running again; otherwise the id
    /// and answer are recorded in the same transaction as the write.
    fn run_write(
        &mut self,
        body: &WriteBody,
        opts: &WriteOptions,
        deadline: Instant,
        tracker: &mut Tracker,
    ) -> Result<Response, ErrorInfo> {
        let id = opts.request_id.filter(|_| self.request_ids);
        if let Some(id) = &id {
            if let Some(stored) = request_ids::lookup(&self.conn, id).map_err(|e| sql_error(&e))? {
                // Counted once its group commits: a group that fails runs again.
                self.group_dedup += 1;
                return Ok(stored);
            }
        }
        let resp = self.run_body(body, tracker, deadline)?;
        if let Some(id) = &id {
            let recorded = request_ids::record(&self.conn, id, &resp, unix_ms(), &mut self.id_buf)
                .map_err(|e| sql_error(&e));
            // One big answer must not keep its buffer for the broker's lifetime.
            if self.id_buf.capacity() > ID_BUF_KEEP {
                self.id_buf = Vec::new();
            }
            recorded?;
        }
        Ok(resp)
    }

    /// Fault injection after a COMMIT, before answering (see [`Failpoints`]).
    fn failpoint_after_commit(&mut self) {
        let due = |n: &mut Option<u64>| {
            n.as_mut().is_some_and(|n| {
                *n = n.saturating_sub(1);
                *n == 0
            })
        };
        if due(&mut self.failpoints.crash_after_commit) {
            eprintln!("litebrokerd: failpoint crash-after-commit reached; aborting before answering");
            std::process::abort();
        }
        if due(&mut self.failpoints.panic_after_commit) {
            panic!("failpoint panic-after-commit reached");
        }
    }

    /// Deletes request ids past their retention, in small transactions, when idle.
    fn prune_request_ids(&mut self) {
        let Some(retention) = self.shared.config.request_id_retention.filter(|_| self.request_ids) else {
            return;
        };
        self.last_prune = Some(Instant::now());
        let now = unix_ms();
        loop {
            if self.exec_internal(BEGIN_SQL).is_err() {
                return;
            }
            let r = request_ids::prune(&self.conn, retention, now, 1000);
            let done = match r {
                Ok(n) if self.exec_internal(COMMIT_SQL).is_ok() => {
                    if n > 0 {
                        debug!(pruned = n, "request ids past their retention deleted");
                    }
                    n < 1000
                }
                _ => {
                    self.exec_internal(ROLLBACK_SQL).ok();
                    true
                }
            };
            if done {
                return;
            }
        }
    }

    /// Runs one of the broker's own statements (cached: each names `_litebroker`,
    /// so no client text is ever served these copies).
    fn exec_internal(&self, sql: &str) -> rusqlite::Result<()> {
        authorizer::internal(|| self.conn.prepare_cached(sql)?.raw_execute().map(|_| ()))
    }

    /// Sets the deadline the progress handler enforces inside statements.
    fn arm_deadline(&self, deadline: Option<Instant>) {
        let ns = deadline.map_or(0, |d| d.saturating_duration_since(self.epoch).as_nanos().max(1) as u64);
        self.deadline_ns.store(ns, Ordering::Relaxed);
    }

    /// The limits of one request whose statements may run until `deadline`.
    fn limits(&self, deadline: Instant) -> ExecLimits {
        let cfg = &self.shared.config;
        ExecLimits {
            max_rows: cfg.max_rows,
            max_answer_bytes: (cfg.max_frame as usize).saturating_sub(ANSWER_HEADROOM),
            max_statements: cfg.max_batch_statements,
            deadline,
        }
    }

    fn run_body(
        &mut self,
        body: &WriteBody,
        tracker: &mut Tracker,
        deadline: Instant,
    ) -> Result<Response, ErrorInfo> {
        if let Some(text) = &self.failpoints.panic_on_sql {
            if body.statements().any(|s| s.sql.contains(text.as_str())) {
                panic!("failpoint panic-on-sql reached");
            }
        }
        let cfg = &self.shared.config;
        let stmt_deadline = deadline.min(Instant::now() + cfg.max_statement_time);
        let limits = self.limits(stmt_deadline);
        self.arm_deadline(Some(stmt_deadline));
        let r = match body {
            WriteBody::Execute(stmt) => {
                let mut out = ExecResult::default();
                run_sql(&self.conn, &stmt.sql, &stmt.params, tracker, &limits, &mut out)
                    .and_then(|()| tracker.finish())
                    .map(|()| Response::Executed(out))
            }
            WriteBody::Batch(stmts) => {
                let mut all = Vec::with_capacity(stmts.len().min(4096));
                run_batch(&self.conn, stmts, tracker, &limits, &mut all)
                    .and_then(|()| tracker.finish())
                    .map(|()| Response::Batch(all))
            }
        };
        self.arm_deadline(None);
        r.map_err(|mut e| {
            if e.kind == ErrorKind::Timeout {
                e.message = texts::statement_interrupted(cfg.max_statement_time);
            }
            e
        })
    }

    /// `BEGIN IMMEDIATE`, waiting for locks held by other processes: busy_timeout
    /// first, then the notes' backoff (base doubling, capped), within `deadline`.
    fn begin_immediate(&mut self, deadline: Instant) -> Result<(), ErrorInfo> {
        let cfg = &self.shared.config;
        let started = Instant::now();
        let mut retry = 0u32;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let wait = cfg.busy_timeout.min(remaining);
            if wait != self.busy_timeout {
                self.conn.busy_timeout(wait).ok();
                self.busy_timeout = wait;
            }
            let e = match self.exec_internal(BEGIN_SQL) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let info = sql_error(&e);
            if info.kind != ErrorKind::Locked {
                return Err(info);
            }
            let counters = &self.shared.counters;
            if retry == 0 {
                counters.lock_waits.fetch_add(1, Ordering::Relaxed);
            }
            let delay = cfg.backoff(retry);
            if retry >= cfg.lock_retries || Instant::now() + delay >= deadline {
                let attempts = retry + 1;
                warn!(
                    attempts,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "database locked by another process; giving up"
                );
                let wait = texts::LockWait {
                    attempts,
                    elapsed: started.elapsed(),
                    busy_timeout: cfg.busy_timeout,
                    retry_base: cfg.retry_base,
                    retry_cap: cfg.retry_cap,
                };
                return Err(texts::locked(&self.shared.db_path, &wait));
            }
            retry += 1;
            counters.lock_retries.fetch_add(1, Ordering::Relaxed);
            warn!(
                attempt = retry,
                max_attempts = cfg.lock_retries,
                delay_ms = delay.as_millis() as u64,
                "database locked by another process; retry {retry} of {} in {} ms",
                cfg.lock_retries,
                delay.as_millis()
            );
            std::thread::sleep(delay);
        }
    }

    fn refresh_schema_version(&self) {
        self.shared.schema_version.store(user_version(&self.conn), Ordering::Relaxed);
    }

    // ----- write sessions -----------------------------------------------------

    fn begin_session(&mut self, job: Job) {
        if !job.claim() {
            self.finished(1);
            return;
        }
        let Some(client) = job.client.clone() else {
            self.finished(1);
            return;
        };
        if self.stopping {
            job.answer(Response::Error(texts::shutting_down()));
            self.finished(1);
            return;
        }
        match self.begin_immediate(job.deadline) {
            Err(e) => job.answer(Response::Error(e)),
            Ok(()) => {
                let now = Instant::now();
                client.session.store(session_state::ACTIVE, Ordering::SeqCst);
                self.shared.set_holder(Some(Holder { client: client.clone(), since: now }));
                debug!("write session opened by {}", client.describe());
                self.session = Some(ActiveSession {
                    client,
                    started: now,
                    lease_deadline: now + self.shared.config.lease,
                    fresh: true,
                });
                job.answer(Response::SessionStarted { waited_ms: job.enqueued.elapsed().as_millis() as u64 });
            }
        }
        self.finished(1);
    }

    fn session_job(&mut self, job: Job) {
        if !job.claim() {
            self.finished(1);
            return;
        }
        let (fresh, lease_deadline) =
            self.session.as_ref().map_or((false, Instant::now()), |s| (s.fresh, s.lease_deadline));
        match &job.kind {
            JobKind::SessionWrite(body) => {
                let deadline = job.deadline.min(lease_deadline);
                let mut tracker = Tracker::new(Mode::Session { fresh });
                let r = match self.writes_refused() {
                    Some(e) => Err(e),
                    None => self.in_savepoint(|w| w.run_body(body, &mut tracker, deadline)),
                };
                let r = r.map(|resp| (resp, tracker.end));
                if self.conn.is_autocommit() {
                    // SQLite rolled the whole session back (disk full, I/O error).
                    let cause = r.err().unwrap_or_else(texts::transaction_ended);
                    self.drop_session(session_state::NONE);
                    job.answer(Response::Error(texts::session_rolled_back(cause)));
                } else {
                    match r {
                        Ok((resp, end)) => {
                            if let Some(s) = self.session.as_mut() {
                                s.fresh = false;
                            }
                            let answer = match end {
                                SessionEnd::None => resp,
                                SessionEnd::Commit => match self.end_session(true, session_state::NONE) {
                                    Ok(()) => resp,
                                    Err(e) => Response::Error(e),
                                },
                                SessionEnd::Rollback => {
                                    self.end_session(false, session_state::NONE).ok();
                                    resp
                                }
                            };
                            job.answer(answer);
                        }
                        Err(e) => job.answer(Response::Error(e)),
                    }
                }
            }
            JobKind::EndSession { commit } => {
                let commit = *commit;
                match self.end_session(commit, session_state::NONE) {
                    Ok(()) => job.answer(Response::SessionEnded { committed: commit }),
                    Err(e) => job.answer(Response::Error(e)),
                }
            }
            _ => unreachable!("only session jobs come here"),
        }
        self.finished(1);
    }

    /// Commits or rolls back the session and releases the writer. A failed commit
    /// rolls back.
    fn end_session(&mut self, commit: bool, state_after: u8) -> Result<(), ErrorInfo> {
        let r = if commit {
            // Pending deferred violations fail the COMMIT, as SQLite's own would;
            // then the setting a session may have turned on can go, and the
            // session's statements must not have left state on the connection.
            let checked = if self.deferred_fk_pending() {
                Err(texts::deferred_fk())
            } else {
                self.exec_internal(DEFER_FK_OFF_SQL).map_err(|e| sql_error(&e)).and_then(|()| {
                    guard::connection_state(&self.conn, true).map_err(|what| texts::state_left(&what))
                })
            };
            checked
                .and_then(|()| {
                    set_in_doubt(true);
                    self.exec_internal(COMMIT_SQL).map_err(|e| texts::session_commit_failed(sql_error(&e)))
                })
                .inspect_err(|_| {
                    self.exec_internal(ROLLBACK_SQL).ok();
                })
                // Its one caller is answered right after this returns.
                .inspect(|()| set_in_doubt(false))
                .inspect_err(|_| set_in_doubt(false))
        } else {
            self.exec_internal(ROLLBACK_SQL).map_err(|e| sql_error(&e))
        };
        if commit && r.is_ok() {
            self.dirty = true;
            self.shared.counters.commits.fetch_add(1, Ordering::Relaxed);
            self.refresh_schema_version();
        }
        self.drop_session(state_after);
        r
    }

    fn drop_session(&mut self, state_after: u8) {
        if !self.conn.is_autocommit() {
            self.exec_internal(ROLLBACK_SQL).ok();
        }
        if let Some(s) = self.session.take() {
            s.client.session.store(state_after, Ordering::SeqCst);
            debug!(
                "write session of {} ended after {:.3} s",
                s.client.describe(),
                s.started.elapsed().as_secs_f64()
            );
        }
        self.shared.set_holder(None);
    }

    fn expire_session(&mut self) {
        if let Some(s) = &self.session {
            warn!(
                "write session of {} held the writer longer than the {} s lease; rolled back",
                s.client.describe(),
                self.shared.config.lease.as_secs_f64()
            );
        }
        self.drop_session(session_state::EXPIRED);
    }

    // ----- shutdown -----------------------------------------------------------

    fn stop(&mut self) {
        self.stopping = true;
        if let Some(s) = &self.session {
            info!("shutting down: rolling back the write session of {}", s.client.describe());
            self.drop_session(session_state::EXPIRED);
        }
        // Answer what was queued before the stop (writes run; sessions are refused);
        // what comes later is refused when it is sent (connection threads answer
        // "shutting down" at once instead of waiting for a writer that is gone).
        self.queue.close();
        while let Some(job) = self.pending.pop_front().or_else(|| self.queue.try_recv()) {
            match job.kind {
                JobKind::Stop => {}
                _ => self.dispatch(job),
            }
        }
        let wait = self.shared.config.busy_timeout;
        match self.checkpoint(CheckpointMode::Truncate, wait) {
            Ok(r) => info!(
                blocked = r.blocked,
                wal_frames = r.wal_frames,
                checkpointed = r.checkpointed_frames,
                "final checkpoint"
            ),
            Err(e) => warn!("final checkpoint failed: {}", e.message),
        }
        // Close the database now: connection threads keep the writer itself alive
        // until they notice the shutdown, but the file must be left clean.
        if let Ok(placeholder) = Connection::open_in_memory() {
            if let Err((_, e)) = std::mem::replace(&mut self.conn, placeholder).close() {
                warn!("closing the database failed: {e}");
            }
        }
    }
}

/// The writer thread has exited: no more jobs are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterGone;

/// The writer, shared by the writer thread and the connection threads.
pub struct WriterHandle {
    core: Mutex<Writer>,
    queue: Arc<JobQueue>,
    shared: Arc<Shared>,
}

impl WriterHandle {
    /// Shares `writer`.
    pub fn new(writer: Writer) -> WriterHandle {
        let (queue, shared) = (writer.queue.clone(), writer.shared.clone());
        WriterHandle { core: Mutex::new(writer), queue, shared }
    }

    /// Queues a job for the writer thread.
    ///
    /// # Errors
    /// [`WriterGone`] when the writer thread has exited (the job is dropped).
    pub fn send(&self, job: Job) -> Result<(), WriterGone> {
        if !self.shared.writer_alive.load(Ordering::SeqCst) {
            return Err(WriterGone);
        }
        self.queue.push(job, true, Some(&self.shared.counters.queued)).map(drop).map_err(|_| WriterGone)
    }

    /// Tells the writer thread to finish what is queued and stop. Never blocks,
    /// whatever state the writer is in.
    pub fn stop(&self) {
        self.queue.push_stop(Job::notice(JobKind::Stop, None));
    }

    /// Queues a one-shot write and, when nothing was queued before it and the
    /// writer is free, serves the queue on this thread until that write is
    /// answered. Otherwise whoever holds the writer (or the writer thread, woken
    /// here) serves it.
    ///
    /// # Errors
    /// [`WriterGone`] when the writer thread has exited (the job is dropped).
    pub fn send_and_serve(&self, job: Job) -> Result<(), WriterGone> {
        if !self.shared.writer_alive.load(Ordering::SeqCst) {
            return Err(WriterGone);
        }
        let (own, own_seq) = (job.state.clone(), job.seq);
        if self.queue.push(job, false, Some(&self.shared.counters.queued)).map_err(|_| WriterGone)? > 0 {
            // Others wait already: the writer is busy, and the writer thread
            // commits them all together (larger groups) without this thread.
            self.queue.kick(false);
            return Ok(());
        }
        let guard = match self.core.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        let mut committed = false;
        if let Some(mut w) = guard {
            let served =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.serve_writes(&own, own_seq)));
            if served.is_err() {
                w.recover();
            }
            committed = w.dirty;
        }
        // Whatever this thread did not serve waits for the writer thread.
        self.queue.kick(committed);
        Ok(())
    }

    /// The writer thread: serves jobs until a `Stop` job, then checkpoints and
    /// closes the database. Sleeps without holding the writer, so that connection
    /// threads can serve their writes meanwhile.
    pub fn run(&self) {
        let mut w = lock(&self.core);
        w.start();
        loop {
            match w.next_ready() {
                Some(job) if matches!(job.kind, JobKind::Stop) => {
                    w.stop();
                    break;
                }
                Some(job) => {
                    let group = matches!(job.kind, JobKind::Write(_));
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        w.dispatch(job);
                        // Sessions, migrations and restores commit too.
                        w.checkpoint_if_large();
                    }));
                    if ran.is_err() {
                        w.recover();
                        // A group counts its own jobs (see `run_group`).
                        if !group {
                            w.finished(1);
                        }
                    }
                }
                None => {
                    w.idle_maintenance();
                    // Without a deadline of its own, the writer still wakes now and
                    // then to look at its files and retry request-id set-up.
                    let (timeout, untimed) = match w.idle_timeout() {
                        Some(t) => (t, false),
                        None => (IDLE_WAKE, true),
                    };
                    drop(w);
                    self.queue.wait(timeout, untimed);
                    w = lock(&self.core);
                }
            }
        }
        self.shared.writer_alive.store(false, Ordering::SeqCst);
    }
}

// The broker's own transaction statements. Each names the reserved prefix
// `_litebroker`: clients may not use savepoints of that name, and no client text
// is served these cached, broker-authorized statements (see
// `sql::text::mentions_reserved`).
const BEGIN_SQL: &str = "BEGIN IMMEDIATE /* _litebroker */";
const COMMIT_SQL: &str = "COMMIT /* _litebroker */";
const ROLLBACK_SQL: &str = "ROLLBACK /* _litebroker */";
const SAVEPOINT_SQL: &str = "SAVEPOINT _litebroker_req";
const RELEASE_SQL: &str = "RELEASE _litebroker_req";
const ROLLBACK_TO_SQL: &str = "ROLLBACK TO _litebroker_req";
const DEFER_FK_OFF_SQL: &str = "PRAGMA defer_foreign_keys = OFF /* _litebroker */";

/// Room kept in a frame for the answer's own fields besides the rows.
const ANSWER_HEADROOM: usize = 4096;

/// Largest request-id encoding buffer kept between requests.
const ID_BUF_KEEP: usize = 64 * 1024;

/// WAL frames that trigger a checkpoint after answering (SQLite's default).
const CHECKPOINT_PAGES: u64 = 1000;

/// How often the idle writer prunes old request ids.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How often the writer tries again to set up request ids while they are off.
const ID_SETUP_RETRY: Duration = Duration::from_secs(10);

/// Longest the idle writer sleeps.
const IDLE_WAKE: Duration = Duration::from_secs(5);

/// Fault injection for the tests of what the broker promises when it fails, from
/// `LITEBROKER_FAILPOINT` (inert unless set): `crash-after-commit:N` aborts the
/// process right after the Nth committed group, before answering (the "answer
/// lost after commit" case a `kill -9` only hits by chance);
/// `panic-after-commit:N` fails there instead, as a bug would;
/// `panic-on-sql:TEXT` fails while running a request whose SQL contains TEXT.
#[derive(Debug, Default)]
struct Failpoints {
    crash_after_commit: Option<u64>,
    panic_after_commit: Option<u64>,
    panic_on_sql: Option<String>,
}

impl Failpoints {
    fn from_env() -> Failpoints {
        let mut f = Failpoints::default();
        let Ok(v) = std::env::var("LITEBROKER_FAILPOINT") else { return f };
        let count = |n: &str| n.parse::<u64>().ok().filter(|n| *n > 0);
        if let Some(n) = v.strip_prefix("crash-after-commit:") {
            f.crash_after_commit = count(n);
        } else if let Some(n) = v.strip_prefix("panic-after-commit:") {
            f.panic_after_commit = count(n);
        } else if let Some(text) = v.strip_prefix("panic-on-sql:") {
            f.panic_on_sql = Some(text.to_owned());
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc::{self, Receiver};

    use litebroker_protocol::Statement;

    use super::*;
    use crate::job::{JobLine, Reply, ReplyTx};

    fn writer(dir: &Path) -> Writer {
        let config = Config::new(dir.join("w.db"));
        let conn = open_writer(&config.db, &config).expect("open");
        request_ids::ensure_table(&conn).expect("request-id table");
        let (stop_tx, _) = mpsc::channel();
        let shared = Arc::new(Shared::new(config, "w.db".into(), "w.sock".into(), stop_tx));
        let mut w = Writer::new(conn, shared, Arc::new(JobQueue::new(16)));
        w.request_ids = true;
        w
    }

    /// A one-shot write as the writer holds it once it put it in a group (taken).
    fn job(w: &Writer, sql: &str, id: Option<u8>) -> (Job, Receiver<Reply>) {
        let (tx, rx) = mpsc::sync_channel(1);
        let client = w.shared.register("test".into(), 1, None, litebroker_protocol::PROTOCOL_MINOR);
        let kind = JobKind::Write(WriteBody::Execute(Statement::new(sql, vec![])));
        let opts = WriteOptions { request_id: id.map(|b| [b; 16]), ..Default::default() };
        let job = JobLine::new(ReplyTx::new(tx)).next(
            kind,
            opts,
            &client,
            Instant::now() + Duration::from_secs(10),
        );
        assert!(job.claim());
        (job, rx)
    }

    /// Runs `sqls` as one group (the i-th with request id `[i; 16]`) and returns
    /// each answer.
    fn group(w: &mut Writer, sqls: &[&str]) -> Vec<Response> {
        let (jobs, replies): (Vec<Job>, Vec<_>) =
            sqls.iter().enumerate().map(|(i, s)| job(w, s, Some(i as u8 + 1))).unzip();
        w.execute_group(&jobs);
        replies
            .iter()
            .map(|r| match r.try_recv().expect("every request is answered") {
                Reply::Response(resp) => resp,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn count(w: &Writer, sql: &str) -> i64 {
        w.conn.query_row(sql, [], |r| r.get(0)).expect("count")
    }

    /// Makes the next `n` COMMITs fail (a commit hook turns them into ROLLBACKs).
    fn fail_commits(w: &mut Writer, n: usize) {
        let left = AtomicUsize::new(n);
        w.conn
            .commit_hook(Some(move || {
                left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1)).is_ok()
            }))
            .expect("commit hook");
    }

    fn group_commits(w: &Writer) -> u64 {
        w.shared.counters.group_commits.load(Ordering::Relaxed)
    }

    #[test]
    fn a_failed_commit_reruns_each_request_in_its_own_transaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = writer(dir.path());
        let (create, _r) = job(&w, "CREATE TABLE t (v UNIQUE)", None);
        w.execute_group(std::slice::from_ref(&create));
        fail_commits(&mut w, 1);
        let answers = group(
            &mut w,
            &["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)", "INSERT INTO t VALUES (3)"],
        );
        assert!(answers.iter().all(|a| matches!(a, Response::Executed(r) if r.changes == 1)), "{answers:?}");
        assert_eq!(count(&w, "SELECT count(*) FROM t"), 3);
        // The request ids recorded in the failed transaction rolled back with it:
        // each is recorded once, by its re-run.
        assert_eq!(count(&w, "SELECT count(*) FROM _litebroker_requests"), 3);
        // The create, then one transaction per re-run request.
        assert_eq!(group_commits(&w), 4);
    }

    #[test]
    fn a_commit_that_keeps_failing_fails_every_request_and_applies_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = writer(dir.path());
        let (create, _r) = job(&w, "CREATE TABLE t (v UNIQUE)", None);
        w.execute_group(std::slice::from_ref(&create));
        fail_commits(&mut w, usize::MAX);
        let answers = group(&mut w, &["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)"]);
        for a in &answers {
            let Response::Error(e) = a else { panic!("answered before a successful COMMIT: {a:?}") };
            assert_eq!(e.kind, ErrorKind::Constraint, "{e:?}");
        }
        w.conn.commit_hook(None::<fn() -> bool>).expect("remove hook");
        assert_eq!(count(&w, "SELECT count(*) FROM t"), 0);
        assert_eq!(count(&w, "SELECT count(*) FROM _litebroker_requests"), 0);
        assert_eq!(group_commits(&w), 1);
    }

    #[test]
    fn a_deferred_violation_fails_only_its_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = writer(dir.path());
        let (create, _r) = job(
            &w,
            "CREATE TABLE p (id INTEGER PRIMARY KEY);
             CREATE TABLE t (p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED);
             INSERT INTO p VALUES (1)",
            None,
        );
        w.execute_group(std::slice::from_ref(&create));
        let answers = group(
            &mut w,
            &[
                "INSERT INTO t VALUES (1)",
                "INSERT INTO t VALUES (2)",
                "INSERT INTO t VALUES (2); INSERT INTO p VALUES (2)",
            ],
        );
        assert!(matches!(answers[0], Response::Executed(_)), "{answers:?}");
        assert!(
            matches!(&answers[1], Response::Error(e) if e.message == "FOREIGN KEY constraint failed"),
            "{answers:?}"
        );
        assert!(matches!(answers[2], Response::Executed(_)), "{answers:?}");
        assert_eq!(count(&w, "SELECT count(*) FROM t"), 2);
        // The failed request's id was not recorded: a resend runs it again.
        assert_eq!(count(&w, "SELECT count(*) FROM _litebroker_requests"), 2);
        // One transaction: the violation never reached the COMMIT.
        assert_eq!(group_commits(&w), 2);
    }

    #[test]
    fn a_resend_answered_from_its_record_is_counted_once_even_when_its_group_reruns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = writer(dir.path());
        let (create, _r) = job(&w, "CREATE TABLE t (v)", None);
        w.execute_group(std::slice::from_ref(&create));
        group(&mut w, &["INSERT INTO t VALUES (1)"]);
        fail_commits(&mut w, 1);
        // Id [1; 16] again: answered from its record, in a group whose COMMIT fails.
        let answers = group(&mut w, &["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)"]);
        assert!(answers.iter().all(|a| matches!(a, Response::Executed(_))), "{answers:?}");
        assert_eq!(count(&w, "SELECT count(*) FROM t"), 2);
        assert_eq!(w.shared.counters.deduplicated.load(Ordering::Relaxed), 1);
    }
}
