//! The writer: the only connection that writes the database, and who may use it.
//!
//! Connection threads queue [`Job`]s in one bounded FIFO (`crate::queue`). Without
//! a write session the writer commits the one-shot writes queued behind one
//! another as one transaction ([`group`]); a write session holds the writer
//! exclusively while other jobs wait, parked, in FIFO order ([`session`]).
//! Checkpoints, migrations and restores are jobs of the same queue; the idle
//! writer does its upkeep ([`maintenance`]).
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
//! `internal()` flag and denial reason, `job::in_doubt`) belongs to the thread
//! that runs it.

mod core;
mod db;
mod failpoints;
mod group;
mod lock_wait;
mod maintenance;
mod many;
mod migrate;
pub(crate) mod open;
mod recover;
mod restore;
mod session;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use litebroker_protocol::{CheckpointMode, Response};
use rusqlite::Connection;
use tracing::{info, warn};

use self::core::Core;
use self::db::WriterDb;
use self::failpoints::Failpoints;
use self::group::GroupCommit;
use self::maintenance::{checkpoint, Maintenance, IDLE_WAKE};
use self::session::Sessions;
use crate::job::{Job, JobKind, JobState, Stage};
use crate::queue::JobQueue;
use crate::shared::{lock, Shared, StopReason};
use crate::texts;

pub use self::maintenance::set_up_request_ids;

/// How often the idle writer looks at `PRAGMA data_version` while anyone watches
/// the change feed.
const FEED_IDLE_WAKE: Duration = Duration::from_millis(250);

/// The writer's state.
pub struct Writer {
    core: Core,
    queue: Arc<JobQueue>,
    sessions: Sessions,
    group: GroupCommit,
    /// Shutdown began: later sessions and restores are refused.
    stopping: bool,
}

impl Writer {
    /// Wraps an open writer connection (see [`open::open_writer`]) that serves
    /// the jobs of `queue`.
    pub fn new(conn: Connection, shared: Arc<Shared>, queue: Arc<JobQueue>) -> Writer {
        let db = WriterDb::new(conn, shared.config.busy_timeout, shared.config.feed_rowids_cap);
        Writer {
            core: Core { db, shared, upkeep: Maintenance::new(), failpoints: Failpoints::from_env() },
            queue,
            sessions: Sessions::default(),
            group: GroupCommit::default(),
            stopping: false,
        }
    }

    /// Set-up the writer thread does before serving: request ids (set up before
    /// the broker listens, see [`set_up_request_ids`]), pruning, the schema
    /// version, the files in use.
    pub(crate) fn start(&mut self) {
        let Core { db, shared, upkeep, .. } = &mut self.core;
        upkeep.start(db, shared);
        self.core.refresh_schema_version();
        // Takes note of the file's data_version: later changes by others show.
        self.core.check_external_writes();
    }

    /// The writer connection (tests and the harness read the file through it).
    pub(crate) fn connection(&self) -> &Connection {
        self.core.db.conn()
    }

    /// Commits `jobs` (already taken) as one group (the harness and tests).
    pub(crate) fn execute_group(&mut self, jobs: &[Job]) {
        self.group.execute(&mut self.core, jobs);
    }

    /// The next job the writer can take without waiting: parked jobs once no
    /// session holds the writer, then the queue's. Ends an expired session first.
    fn next_ready(&mut self) -> Option<Job> {
        self.sessions.expire_if_due(&self.core);
        self.sessions.unpark().or_else(|| self.queue.try_recv())
    }

    /// How long the writer thread may sleep: until the session's lease ends, or
    /// until the idle checkpoint is due after commits; without a deadline else.
    fn idle_timeout(&self) -> Option<Duration> {
        if let Some(lease_deadline) = self.sessions.lease_deadline() {
            return Some(lease_deadline.saturating_duration_since(Instant::now()));
        }
        let upkeep = self.core.upkeep.idle_timeout(&self.core.shared);
        // Watchers learn of another program's writes within a second.
        if self.core.shared.feed.subscribers() > 0 {
            return Some(upkeep.map_or(FEED_IDLE_WAKE, |t| t.min(FEED_IDLE_WAKE)));
        }
        upkeep
    }

    /// The idle spell's upkeep, unless a session holds the writer.
    fn idle(&mut self) {
        if !self.sessions.is_active() {
            self.core.check_external_writes();
            let Core { db, shared, upkeep, .. } = &mut self.core;
            upkeep.idle(db, shared);
        }
    }

    /// Runs one job, or parks it behind the write session holding the writer.
    pub(crate) fn dispatch(&mut self, job: Job) {
        self.core.upkeep.took_job();
        let holder = self.sessions.holder();
        let mine = holder.is_some() && holder == Some(job.client_id());
        match job.kind {
            JobKind::Stop => unreachable!("handled by run"),
            JobKind::Disconnected => {
                if mine {
                    self.sessions.disconnected(&mut self.core, &job);
                }
                self.core.finished(1);
            }
            JobKind::SessionWrite(_) | JobKind::EndSession { .. } if mine => {
                self.sessions.run(&mut self.core, job)
            }
            // The session ended (lease expired, shutdown) after the client sent this.
            JobKind::SessionWrite(_) | JobKind::EndSession { .. } => {
                self.sessions.refuse_stale(&self.core, job)
            }
            JobKind::ManyPart(_) | JobKind::ManyEnd { .. } if mine => {
                many::run(&mut self.core, &mut self.sessions, job)
            }
            // The stream was rolled back (deadline, shutdown) after the client sent this.
            JobKind::ManyPart(_) | JobKind::ManyEnd { .. } => many::refuse_stale(&self.core, job),
            _ if holder.is_some() => self.sessions.park(job),
            JobKind::ManyBegin { .. } => many::begin(&mut self.core, &mut self.sessions, job, self.stopping),
            JobKind::Write(_) => self.group.run(&mut self.core, &mut self.sessions, &self.queue, job),
            JobKind::BeginSession => self.sessions.begin(&mut self.core, job, self.stopping),
            JobKind::Checkpoint(mode) => {
                if job.claim() {
                    let wait = self.core.shared.config.busy_timeout.min(job.remaining());
                    let Core { db, shared, .. } = &mut self.core;
                    job.answer(match checkpoint(db, shared, mode, wait) {
                        Ok(r) => Response::Checkpoint(r),
                        Err(e) => Response::Error(e),
                    });
                }
                self.core.finished(1);
            }
            JobKind::Migrate(ref migrations) => {
                if job.claim() {
                    let r = migrate::migrate(&mut self.core, migrations, job.deadline);
                    job.answer(r.map_or_else(Response::Error, Response::Migrated));
                }
                self.core.finished(1);
            }
            JobKind::Restore(ref path) => {
                if job.claim() {
                    let r = if self.stopping {
                        Err(texts::shutting_down())
                    } else {
                        restore::restore(&mut self.core, path)
                    };
                    job.answer(r.map_or_else(Response::Error, Response::Restored));
                }
                self.core.finished(1);
            }
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
                    self.core.finished(1);
                }
                return;
            }
            if self.sessions.is_active() || self.sessions.has_parked() {
                return;
            }
            match self.queue.try_recv_write() {
                Some(job) => self.group.run(&mut self.core, &mut self.sessions, &self.queue, job),
                None => return,
            }
        }
    }

    /// After a failure inside the broker while a job ran (see `recover`).
    fn recover(&mut self) {
        self.group.reset();
        recover::recover(&mut self.core, &mut self.sessions);
    }

    /// A PASSIVE checkpoint if the WAL grew large (sessions, migrations and
    /// restores commit too).
    fn checkpoint_if_large(&mut self) {
        let Core { db, shared, upkeep, .. } = &mut self.core;
        upkeep.checkpoint_if_large(db, shared);
    }

    // ----- the writer's part of shutdown, in the order `shutdown::finish_writer` runs it

    /// Later sessions and restores are refused, and so are the one-shot writes
    /// connection threads find after the writer thread stopped; a session in
    /// progress is rolled back.
    pub(crate) fn begin_stopping(&mut self) {
        self.stopping = true;
        self.sessions.roll_back_for_shutdown(&self.core);
    }

    /// The queue refuses every later job.
    pub(crate) fn close_queue(&self) {
        self.queue.close();
    }

    /// Runs (or refuses) what was parked and queued before, in FIFO order.
    pub(crate) fn finish_queued(&mut self) {
        while let Some(job) = self.sessions.unpark().or_else(|| self.queue.try_recv()) {
            match job.kind {
                JobKind::Stop => {}
                _ => self.dispatch(job),
            }
        }
    }

    /// A TRUNCATE checkpoint waiting up to busy_timeout for readers: every
    /// committed write moves into the database file.
    pub(crate) fn final_checkpoint(&mut self) {
        let wait = self.core.shared.config.busy_timeout;
        let Core { db, shared, .. } = &mut self.core;
        let mode = if shared.config.replication.is_some() {
            CheckpointMode::Passive
        } else {
            CheckpointMode::Truncate
        };
        match checkpoint(db, shared, mode, wait) {
            Ok(r) => info!(
                blocked = r.blocked,
                wal_frames = r.wal_frames,
                checkpointed = r.checkpointed_frames,
                "final checkpoint"
            ),
            Err(e) => warn!("final checkpoint failed: {}", e.message),
        }
    }

    /// Stops the supervised Litestream after its final sync, when replicating.
    pub(crate) fn stop_replication(&self) {
        if let Some(r) = self.core.shared.replication.get() {
            r.stop();
        }
    }

    /// Closes the database file.
    pub(crate) fn close_database(&mut self) {
        self.core.db.close();
    }
}

/// The writer thread has exited: no more jobs are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterGone;

/// The writer, shared by the writer thread and the connection threads.
pub struct WriterHandle {
    writer: Mutex<Writer>,
    queue: Arc<JobQueue>,
    shared: Arc<Shared>,
}

impl WriterHandle {
    /// Starts `writer` ([`Writer::start`]) and shares it. Starting here, before
    /// any thread can reach it, matters: a connection thread may serve a write
    /// itself ([`WriterHandle::send_and_serve`]) before the writer thread first
    /// runs, and a write served before request-id recording is on would not be
    /// recorded, so its resend would be applied twice.
    pub fn new(mut writer: Writer) -> WriterHandle {
        writer.start();
        let (queue, shared) = (writer.queue.clone(), writer.core.shared.clone());
        WriterHandle { writer: Mutex::new(writer), queue, shared }
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
        let guard = match self.writer.try_lock() {
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
            committed = w.core.upkeep.dirty();
        }
        // Whatever this thread did not serve waits for the writer thread.
        self.queue.kick(committed);
        Ok(())
    }

    /// Starts the writer thread ([`WriterHandle::run`]). A failure it cannot
    /// recover from ends the thread, and stops the broker (`Fatal`).
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(self: &Arc<Self>, at_stop: fn(&mut Writer)) -> io::Result<JoinHandle<()>> {
        let writer = self.clone();
        thread::Builder::new().name("lb-writer".into()).spawn(move || {
            let shared = writer.shared.clone();
            // `run` recovers from a failure of one request; one it cannot recover
            // from ends the thread, and the broker.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || writer.run(at_stop)));
            if r.is_err() {
                shared.writer_alive.store(false, Ordering::SeqCst);
                shared.request_stop(StopReason::Fatal("the writer thread failed".into()));
            }
        })
    }

    /// The writer thread: serves jobs until a `Stop` job, then runs `at_stop`
    /// (the writer's part of shutdown, `shutdown::finish_writer`). Sleeps without
    /// holding the writer, so that connection threads can serve their writes
    /// meanwhile.
    pub fn run(&self, at_stop: fn(&mut Writer)) {
        // `Writer::start` ran in `WriterHandle::new`.
        let mut w = lock(&self.writer);
        loop {
            match w.next_ready() {
                Some(job) if matches!(job.kind, JobKind::Stop) => {
                    at_stop(&mut w);
                    break;
                }
                Some(job) => {
                    let group = matches!(job.kind, JobKind::Write(_));
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        w.dispatch(job);
                        w.checkpoint_if_large();
                    }));
                    if ran.is_err() {
                        w.recover();
                        // A group counts its own jobs (see `group::GroupCommit::run`).
                        if !group {
                            w.core.finished(1);
                        }
                    }
                }
                None => {
                    w.idle();
                    // Without a deadline of its own, the writer still wakes now and
                    // then to look at its files and retry request-id set-up.
                    let (timeout, untimed) = match w.idle_timeout() {
                        Some(t) => (t, false),
                        None => (IDLE_WAKE, true),
                    };
                    drop(w);
                    self.queue.wait(timeout, untimed);
                    w = lock(&self.writer);
                }
            }
        }
        self.shared.writer_alive.store(false, Ordering::SeqCst);
    }
}
