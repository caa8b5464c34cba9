//! What every kind of job of the writer works with — the connection, the
//! broker's shared state, the upkeep, the failpoints — and running one request's
//! statements under its deadlines and limits.
//!
//! A request's statements run until the earlier of its deadline and now +
//! `--max-statement-secs`: the statement loop checks it between statements
//! (`sql::exec`), SQLite's progress handler inside one (`open`). Its rows are
//! bounded by `--max-rows` and by the answer's size (the frame less
//! [`ANSWER_HEADROOM`]), its statements by `--max-batch-statements`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use litebroker_protocol::{ErrorInfo, ErrorKind, ExecResult, Response};

use super::db::WriterDb;
use super::failpoints::Failpoints;
use super::lock_wait;
use super::maintenance::Maintenance;
use crate::config::Config;
use crate::job::WriteBody;
use crate::shared::Shared;
use crate::sql::exec::{run_batch, run_sql, ExecLimits, Tracker};
use crate::texts;

/// Room kept in a frame for the answer's own fields besides the rows.
const ANSWER_HEADROOM: usize = 4096;

/// The writer's parts every job uses.
pub(super) struct Core {
    /// The writer connection.
    pub(super) db: WriterDb,
    /// The broker's shared state.
    pub(super) shared: Arc<Shared>,
    /// Checkpoints, request ids, the file watch.
    pub(super) upkeep: Maintenance,
    /// Fault injection (tests).
    pub(super) failpoints: Failpoints,
}

impl Core {
    /// `n` jobs taken from the queue are done (for `status`'s queue depth).
    pub(super) fn finished(&self, n: usize) {
        self.shared.counters.queued.fetch_sub(n, Ordering::Relaxed);
    }

    /// Why writes are refused now, if they are.
    pub(super) fn writes_refused(&mut self) -> Option<ErrorInfo> {
        self.upkeep.writes_refused(&self.shared)
    }

    /// A transaction other than a group committed (a session, a migration, a
    /// restore): counted, and the idle checkpoint is due after it.
    pub(super) fn committed(&mut self) {
        self.upkeep.committed(&self.db, &self.shared);
        self.shared.counters.commits.fetch_add(1, Ordering::Relaxed);
        self.shared
            .counters
            .last_commit_unix_ms
            .store(litebroker_protocol::host::unix_ms(), Ordering::Relaxed);
        self.publish();
    }

    /// Publishes what the transactions committed since the last call changed
    /// (one event each; after their COMMIT succeeded).
    pub(super) fn publish(&mut self) {
        for (at_us, tables) in self.db.take_committed() {
            self.shared.feed.publish(at_us, tables);
        }
    }

    /// Publishes a resync when another program wrote the database since the
    /// writer last looked (`PRAGMA data_version`).
    pub(super) fn check_external_writes(&mut self) {
        if self.db.written_by_others() {
            tracing::info!("another program wrote the database; watchers get a resync");
            self.shared.feed.publish_resync(litebroker_protocol::ResyncReason::ExternalWrite);
        }
    }

    /// Publishes the schema version for the connections.
    pub(super) fn refresh_schema_version(&self) {
        self.db.refresh_schema_version(&self.shared);
    }

    /// `BEGIN IMMEDIATE`, waiting out other processes' locks within `deadline`
    /// (see `lock_wait`).
    ///
    /// # Errors
    /// `locked`, or SQLite's error.
    pub(super) fn begin_immediate(&mut self, deadline: Instant) -> Result<(), ErrorInfo> {
        lock_wait::begin_immediate(&mut self.db, &self.shared, deadline)?;
        // Before this transaction's own changes: what others wrote comes first.
        self.check_external_writes();
        Ok(())
    }

    /// The checks of the connection's state outside a transaction (see
    /// `WriterDb::verify_clean`).
    pub(super) fn verify_clean(&self) {
        self.db.verify_clean(&self.shared);
    }

    /// The limits of one request whose statements may run until `deadline`.
    pub(super) fn limits(&self, deadline: Instant) -> ExecLimits {
        limits(&self.shared.config, deadline)
    }
}

/// The limits of one request whose statements may run until `deadline`.
fn limits(cfg: &Config, deadline: Instant) -> ExecLimits {
    ExecLimits {
        max_rows: cfg.max_rows,
        max_answer_bytes: (cfg.max_frame as usize).saturating_sub(ANSWER_HEADROOM),
        max_statements: cfg.max_batch_statements,
        deadline,
    }
}

/// Runs a request's statements (inside the transaction or savepoint the caller
/// opened) until the earlier of `deadline` and the statement limit. Takes the
/// parts it needs rather than the [`Core`]: a group lends the connection to its
/// savepoint meanwhile.
///
/// # Errors
/// The first failing statement's error; an interrupted statement says why.
pub(super) fn run_body(
    db: &WriterDb,
    shared: &Shared,
    failpoints: &Failpoints,
    body: &WriteBody,
    tracker: &mut Tracker,
    deadline: Instant,
) -> Result<Response, ErrorInfo> {
    failpoints.before_sql(body);
    let cfg = &shared.config;
    let stmt_deadline = deadline.min(Instant::now() + cfg.max_statement_time);
    let limits = limits(cfg, stmt_deadline);
    db.arm_deadline(Some(stmt_deadline));
    let r = match body {
        WriteBody::Execute(stmt) => {
            let mut out = ExecResult::default();
            run_sql(db.conn(), &stmt.sql, &stmt.params, tracker, &limits, &mut out)
                .and_then(|()| tracker.finish())
                .map(|()| Response::Executed(out))
        }
        WriteBody::Batch(stmts) => {
            let mut all = Vec::with_capacity(stmts.len().min(4096));
            run_batch(db.conn(), stmts, tracker, &limits, &mut all)
                .and_then(|()| tracker.finish())
                .map(|()| Response::Batch(all))
        }
    };
    db.arm_deadline(None);
    r.map_err(|mut e| {
        if e.kind == ErrorKind::Timeout {
            shared.metrics.interrupted.fetch_add(1, Ordering::Relaxed);
            e.message = texts::statement_interrupted(cfg.max_statement_time);
        }
        e
    })
}
