//! What the writer does besides jobs: checkpoints, the idle spell's work, the
//! request-id table (set up at start, retried while off, pruned), and the watch
//! on its own `-wal`/`-shm` files.
//!
//! - **Checkpoints.** The WAL hook only counts frames (see `open`); after the
//!   group that took the WAL to [`CHECKPOINT_FRAMES`] was answered, a `PASSIVE`
//!   checkpoint runs (if readers keep it from completing, the next try waits for
//!   as many new frames again). After `--idle-checkpoint-ms` without a job
//!   following commits, a `TRUNCATE` checkpoint runs without waiting for readers
//!   (while replicating, only once the replica holds every commit, else
//!   `PASSIVE`: see `crate::replication`).
//! - **The idle spell** (no session, no job for `--idle-checkpoint-ms`): a look at
//!   the `-wal`/`-shm` files, a retry of the request-id set-up every
//!   [`ID_SETUP_RETRY`] while it is off, and after commits: the full check of the
//!   connection, pruning request ids past their retention (at most every
//!   [`PRUNE_EVERY`]), the truncating checkpoint. With nothing due, the writer
//!   thread still wakes every [`IDLE_WAKE`].
//! - **Its files.** Deleted or replaced `-wal`/`-shm` files split readers from the
//!   writer: writes stop for good (see `crate::guard`). They are looked at at most
//!   once a second while busy, and at every idle spell.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use litebroker_protocol::host::unix_ms;
use litebroker_protocol::{CheckpointMode, CheckpointReport, ErrorInfo};
use rusqlite::Connection;
use tracing::{debug, info, warn};

use super::db::WriterDb;
use crate::config::Config;
use crate::guard::WalFiles;
use crate::ops;
use crate::request_ids;
use crate::shared::Shared;
use crate::sql::authorizer;
use crate::sql::exec::sql_error;
use crate::texts;

/// WAL frames that trigger a checkpoint after answering (SQLite's own default
/// threshold for its automatic checkpoint, which the writer replaces).
pub(super) const CHECKPOINT_FRAMES: u64 = 1000;

/// How often the idle writer prunes old request ids.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How often the writer tries again to set up request ids while they are off.
const ID_SETUP_RETRY: Duration = Duration::from_secs(10);

/// Longest the idle writer sleeps.
pub(super) const IDLE_WAKE: Duration = Duration::from_secs(5);

/// Records deleted per transaction when pruning request ids.
const PRUNE_BATCH: u32 = 1000;

/// Creates the request-id table before the broker listens, waiting out another
/// process's lock with the same schedule as writes (busy_timeout, then the
/// backoff). On failure the broker serves without exactly-once, says so
/// (`status`, `doctor`), and keeps trying when idle; the error is the reason it
/// reports.
///
/// # Errors
/// Why request ids are off.
pub fn set_up_request_ids(conn: &Connection, config: &Config) -> Result<(), String> {
    let mut retry = 0;
    loop {
        let e = match request_ids::ensure_table(conn) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if e.is_locked() && retry < config.lock_retries {
            let delay = config.backoff(retry);
            retry += 1;
            warn!(
                attempt = retry,
                "cannot set up request ids: another process holds a lock on the database; retry {retry} of {} in {} ms",
                config.lock_retries,
                delay.as_millis()
            );
            thread::sleep(delay);
            continue;
        }
        let reason = if e.is_locked() {
            texts::ids_locked_at_start(retry + 1, request_ids::TABLE, &e)
        } else {
            texts::ids_setup_failed(request_ids::TABLE, &e)
        };
        warn!("request ids are off: {reason}");
        return Err(reason);
    }
}

/// Runs `PRAGMA wal_checkpoint(mode)`, waiting at most `wait` for readers, and
/// records the outcome; warns when the WAL stays above `--wal-warn-mb`.
///
/// # Errors
/// SQLite's error.
pub(super) fn checkpoint(
    db: &mut WriterDb,
    shared: &Shared,
    mode: CheckpointMode,
    wait: Duration,
) -> Result<CheckpointReport, ErrorInfo> {
    db.set_busy_timeout(wait);
    let ran = authorizer::internal(|| {
        db.conn().query_row(&format!("PRAGMA wal_checkpoint({})", mode.as_str()), [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
    });
    let (busy, log, done) = ran.map_err(|e| {
        shared.metrics.checkpointed(mode, Err(()));
        sql_error(&e)
    })?;
    let wal_bytes_after = ops::file_size(&ops::wal_path(Path::new(&shared.db_path)));
    let report = CheckpointReport {
        mode,
        blocked: busy != 0 || done < log,
        wal_frames: log,
        checkpointed_frames: done,
        wal_bytes_after,
        at_unix_ms: unix_ms(),
    };
    shared.metrics.checkpointed(mode, Ok(report.blocked));
    // A complete TRUNCATE empties the WAL; otherwise it holds what it held (the
    // next commit restarts it from the beginning once it was all checkpointed).
    let frames_now = if wal_bytes_after == 0 { 0 } else { log.max(0) as u64 };
    shared.metrics.wal_frames.store(frames_now, Ordering::Relaxed);
    let warn_at = shared.config.wal_warn_bytes;
    if wal_bytes_after > warn_at {
        warn!("{}", ops::wal_warning(wal_bytes_after, warn_at));
    }
    shared.set_last_checkpoint(report.clone());
    Ok(report)
}

/// The writer's upkeep: what it remembers between jobs for the work above.
#[derive(Debug)]
pub(super) struct Maintenance {
    /// Something was committed since the last idle checkpoint.
    dirty: bool,
    /// When the writer last took a job: the idle checkpoint waits for
    /// `--idle-checkpoint-ms` without one.
    last_job: Instant,
    /// WAL size at which the next PASSIVE checkpoint runs.
    checkpoint_at: u64,
    /// Request ids are recorded (the table exists and retention is on).
    request_ids: bool,
    last_prune: Option<Instant>,
    /// When setting up request ids was last tried, while they are wanted but off.
    last_id_setup: Instant,
    /// The `-wal`/`-shm` files in use.
    wal_files: Option<WalFiles>,
}

impl Maintenance {
    pub(super) fn new() -> Maintenance {
        Maintenance {
            dirty: false,
            last_job: Instant::now(),
            checkpoint_at: CHECKPOINT_FRAMES,
            request_ids: false,
            last_prune: None,
            last_id_setup: Instant::now(),
            wal_files: None,
        }
    }

    /// Before serving: request ids as set up before the broker listened (so the
    /// first client that asks, a reconnecting one deciding whether it may resend,
    /// gets the truth), a first pruning, the files in use.
    pub(super) fn start(&mut self, db: &WriterDb, shared: &Shared) {
        self.request_ids = shared.request_ids.load(Ordering::Relaxed);
        self.prune_request_ids(db, shared);
        self.wal_files = Some(WalFiles::record(Path::new(&shared.db_path)));
    }

    /// Whether request ids are recorded.
    pub(super) fn request_ids(&self) -> bool {
        self.request_ids
    }

    /// The writer took a job.
    pub(super) fn took_job(&mut self) {
        self.last_job = Instant::now();
    }

    /// Something was committed: the idle checkpoint is due after it, and the WAL's
    /// size is published for the metrics (here rather than from the WAL hook
    /// inside the COMMIT; a checkpoint publishes its own).
    pub(super) fn committed(&mut self, db: &WriterDb, shared: &Shared) {
        self.dirty = true;
        shared.metrics.wal_frames.store(db.wal_frames(), Ordering::Relaxed);
    }

    /// Whether something was committed since the last idle checkpoint.
    pub(super) fn dirty(&self) -> bool {
        self.dirty
    }

    /// Why writes are refused now, if they are: the broker found its files
    /// replaced, or its connection in a state it cannot vouch for.
    pub(super) fn writes_refused(&mut self, shared: &Shared) -> Option<ErrorInfo> {
        self.check_wal_files(shared);
        shared.writes_stopped().map(texts::writes_stopped)
    }

    /// How long the writer thread may sleep without a session: until the idle
    /// checkpoint is due after commits; without a deadline else.
    pub(super) fn idle_timeout(&self, shared: &Shared) -> Option<Duration> {
        self.dirty.then(|| shared.config.idle_checkpoint_after.saturating_sub(self.last_job.elapsed()))
    }

    /// The idle spell's work (see the module's doc); the caller makes sure no
    /// session holds the writer.
    pub(super) fn idle(&mut self, db: &mut WriterDb, shared: &Shared) {
        if self.last_job.elapsed() < shared.config.idle_checkpoint_after {
            return;
        }
        self.check_wal_files(shared);
        self.retry_request_id_setup(db, shared);
        if !self.dirty {
            return;
        }
        self.dirty = false;
        // The full check of the connection, once per idle spell after commits.
        db.verify_clean(shared);
        if self.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            db.set_busy_timeout(Duration::ZERO);
            self.prune_request_ids(db, shared);
        }
        // While replicating, the WAL is cut only once the replica holds every
        // commit (see `crate::replication`).
        let mode = match shared.replication.get() {
            Some(r) if !r.caught_up() => CheckpointMode::Passive,
            _ => CheckpointMode::Truncate,
        };
        match checkpoint(db, shared, mode, Duration::ZERO) {
            Ok(r) => debug!(
                blocked = r.blocked,
                wal_frames = r.wal_frames,
                checkpointed = r.checkpointed_frames,
                "idle checkpoint"
            ),
            Err(e) => debug!("idle checkpoint failed: {}", e.message),
        }
    }

    /// A PASSIVE checkpoint once the WAL holds [`CHECKPOINT_FRAMES`] frames, run
    /// after the group that crossed it was answered. When readers keep it from
    /// completing, the next try waits for as many new frames again instead of
    /// running after every commit.
    pub(super) fn checkpoint_if_large(&mut self, db: &mut WriterDb, shared: &Shared) {
        let frames = db.wal_frames();
        if frames < self.checkpoint_at {
            if frames < CHECKPOINT_FRAMES {
                // The WAL was reset (restarted from its beginning).
                self.checkpoint_at = CHECKPOINT_FRAMES;
            }
            return;
        }
        match checkpoint(db, shared, CheckpointMode::Passive, Duration::ZERO) {
            Ok(r) if !r.blocked => self.checkpoint_at = CHECKPOINT_FRAMES,
            _ => self.checkpoint_at = frames + CHECKPOINT_FRAMES,
        }
    }

    /// After a restore: the WAL may have been recreated, and a file the broker did
    /// not make lacks its request-id table: installs it now, or says loudly that
    /// writes are not exactly-once until it can.
    pub(super) fn restored(&mut self, db: &WriterDb, shared: &Shared) {
        self.wal_files = Some(WalFiles::record(Path::new(&shared.db_path)));
        if shared.config.request_id_retention.is_none() {
            return;
        }
        match request_ids::ensure_table(db.conn()) {
            Ok(()) => {
                self.request_ids = true;
                shared.set_exactly_once_off(None);
            }
            Err(e) => {
                warn!("request ids are off after the restore: {e}");
                self.request_ids = false;
                self.last_id_setup = Instant::now();
                shared.set_exactly_once_off(Some(texts::ids_setup_failed_after_restore(
                    request_ids::TABLE,
                    &e,
                )));
            }
        }
    }

    /// Looks at the `-wal`/`-shm` files, at most once a second; writes stop for
    /// good when they are not the ones in use.
    fn check_wal_files(&mut self, shared: &Shared) {
        let Some(files) = self.wal_files.as_mut() else { return };
        if let Err(reason) = files.check_now_and_then() {
            if shared.writes_stopped().is_none() {
                tracing::error!("{reason}");
            }
            shared.stop_writes(reason);
        }
    }

    /// Request ids are wanted (retention set) but could not be set up, e.g. another
    /// process held a lock when the broker started: tries again, now and then,
    /// when idle.
    fn retry_request_id_setup(&mut self, db: &WriterDb, shared: &Shared) {
        let wanted = shared.config.request_id_retention.is_some();
        if !wanted || self.request_ids || self.last_id_setup.elapsed() < ID_SETUP_RETRY {
            return;
        }
        self.last_id_setup = Instant::now();
        match request_ids::ensure_table(db.conn()) {
            Ok(()) => {
                info!("request ids are recorded again: writes carrying one are exactly-once");
                shared.set_exactly_once_off(None);
                self.request_ids = true;
            }
            Err(e) => debug!("request ids still off: {e}"),
        }
    }

    /// Deletes request ids past their retention, in small transactions.
    fn prune_request_ids(&mut self, db: &WriterDb, shared: &Shared) {
        let Some(retention) = shared.config.request_id_retention.filter(|_| self.request_ids) else {
            return;
        };
        self.last_prune = Some(Instant::now());
        let now = unix_ms();
        loop {
            if db.begin().is_err() {
                return;
            }
            let done = match request_ids::prune(db.conn(), retention, now, PRUNE_BATCH) {
                Ok(n) if db.commit().is_ok() => {
                    if n > 0 {
                        debug!(pruned = n, "request ids past their retention deleted");
                    }
                    n < PRUNE_BATCH as usize
                }
                _ => {
                    db.rollback().ok();
                    true
                }
            };
            if done {
                return;
            }
        }
    }
}
