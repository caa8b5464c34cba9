//! Write sessions: one client holds the writer exclusively, inside one
//! transaction, until it commits, rolls back, disconnects, or its lease runs out.
//!
//! - `BeginSession` runs `BEGIN IMMEDIATE` (waiting out other processes' locks as
//!   any write does), records the holder, and sets the lease deadline (now +
//!   `--lease-secs`).
//! - While a session holds the writer, every other job is parked, in FIFO order;
//!   they run once it ends.
//! - Each call of the holder runs in the broker's savepoint, under the earlier of
//!   its own deadline and the lease's: each call is atomic on its own. A leading
//!   `BEGIN` is a no-op; a `COMMIT` or `ROLLBACK` statement ends the session.
//! - `Commit`: pending deferred foreign-key violations fail it as SQLite's own
//!   COMMIT would; `defer_foreign_keys` is turned off; the connection's state is
//!   checked; then `COMMIT`. A failed commit rolls back.
//! - The lease: the writer thread sleeps at most until the lease deadline; a
//!   session held longer is rolled back, and its client's next call gets
//!   `lease_expired` (as after a shutdown or an internal failure).
//! - A disconnect rolls the session back.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use litebroker_protocol::{ErrorInfo, ManySummary, RequestId, Response};
use tracing::{debug, info, warn};

use super::core::{run_body, Core};
use crate::guard;
use crate::job::{set_in_doubt, Job, JobKind};
use crate::shared::{session_state, ClientEntry, Holder};
use crate::sql::exec::{sql_error, Mode, SessionEnd, Tracker};
use crate::texts;

/// What the writer keeps of an open streamed executemany or batch
/// (`super::many`), which holds the writer as a session does.
#[derive(Debug)]
pub(super) struct ManyStream {
    pub(super) body: StreamBody,
    pub(super) request_id: Option<RequestId>,
    pub(super) sum: ManySummary,
    /// The request's deadline: no lease renewal goes past it.
    pub(super) deadline: Instant,
}

/// What each part of a stream runs.
#[derive(Debug)]
pub(super) enum StreamBody {
    /// An executemany: this one statement per parameter row.
    Rows {
        /// The statement (prepared once, from the statement cache).
        sql: String,
    },
    /// A streamed batch: its statements, tracked across all its parts.
    Statements(Tracker),
}

impl StreamBody {
    /// The words messages use for this stream.
    pub(super) fn words(&self) -> texts::StreamWords {
        match self {
            StreamBody::Rows { .. } => texts::EXECUTEMANY,
            StreamBody::Statements(_) => texts::STREAMED_BATCH,
        }
    }
}

struct ActiveSession {
    client: Arc<ClientEntry>,
    started: Instant,
    lease_deadline: Instant,
    /// No call ran in the session yet (a leading `BEGIN` is then a no-op).
    fresh: bool,
    /// Set when the writer is held by a streamed executemany rather than a
    /// session (see `many`): its end is answered by the stream, so the client is
    /// never told `lease_expired` later.
    many: Option<ManyStream>,
}

/// The parked jobs, as a group sees them.
pub(super) enum Parked {
    /// None are parked.
    Empty,
    /// The oldest was a one-shot write: taken.
    Write(Job),
    /// The oldest is another kind of job: it ends the group.
    Other,
}

/// The write session holding the writer, if any, and the jobs parked behind it.
#[derive(Default)]
pub(super) struct Sessions {
    active: Option<ActiveSession>,
    parked: VecDeque<Job>,
}

impl Sessions {
    /// The client id of the session's holder.
    pub(super) fn holder(&self) -> Option<u64> {
        self.active.as_ref().map(|s| s.client.id)
    }

    /// Whether a session holds the writer.
    pub(super) fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// When the session's lease runs out.
    pub(super) fn lease_deadline(&self) -> Option<Instant> {
        self.active.as_ref().map(|s| s.lease_deadline)
    }

    /// Parks a job until the session ends.
    pub(super) fn park(&mut self, job: Job) {
        self.parked.push_back(job);
    }

    /// Whether jobs wait behind a session.
    pub(super) fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// The oldest parked job, once no session holds the writer.
    pub(super) fn unpark(&mut self) -> Option<Job> {
        if self.active.is_some() {
            return None;
        }
        self.parked.pop_front()
    }

    /// The oldest parked job, taken if it is a one-shot write (what a group may hold).
    pub(super) fn unpark_write(&mut self) -> Parked {
        match self.parked.front() {
            Some(j) if matches!(j.kind, JobKind::Write(_)) => {
                self.parked.pop_front().map_or(Parked::Empty, Parked::Write)
            }
            Some(_) => Parked::Other,
            None => Parked::Empty,
        }
    }

    /// Opens a session for the job's client; refused while stopping.
    pub(super) fn begin(&mut self, core: &mut Core, job: Job, stopping: bool) {
        if !job.claim() {
            core.finished(1);
            return;
        }
        let Some(client) = job.client.clone() else {
            core.finished(1);
            return;
        };
        if stopping {
            job.answer(Response::Error(texts::shutting_down()));
            core.finished(1);
            return;
        }
        match core.begin_immediate(job.deadline) {
            Err(e) => job.answer(Response::Error(e)),
            Ok(()) => {
                let lease_deadline = Instant::now() + core.shared.config.lease;
                self.open(core, client, lease_deadline, None);
                job.answer(Response::SessionLeased {
                    waited_ms: job.enqueued.elapsed().as_millis() as u64,
                    lease_ms: core.shared.config.lease.as_millis() as u64,
                });
            }
        }
        core.finished(1);
    }

    /// Records `client` as the holder of the writer (its transaction is open)
    /// until `lease_deadline`; `many` is set for a streamed executemany.
    pub(super) fn open(
        &mut self,
        core: &Core,
        client: Arc<ClientEntry>,
        lease_deadline: Instant,
        many: Option<ManyStream>,
    ) {
        let now = Instant::now();
        client.session.store(session_state::ACTIVE, Ordering::SeqCst);
        core.shared.set_holder(Some(Holder { client: client.clone(), since: now }));
        debug!("write session opened by {}", client.describe());
        self.active = Some(ActiveSession { client, started: now, lease_deadline, fresh: true, many });
    }

    /// Moves the lease of the session holding the writer to `deadline`.
    pub(super) fn renew_lease(&mut self, deadline: Instant) {
        if let Some(s) = self.active.as_mut() {
            s.lease_deadline = deadline;
        }
    }

    /// The open streamed executemany, if a stream holds the writer.
    pub(super) fn many_mut(&mut self) -> Option<&mut ManyStream> {
        self.active.as_mut().and_then(|s| s.many.as_mut())
    }

    /// A call or the end of the holder's session.
    pub(super) fn run(&mut self, core: &mut Core, job: Job) {
        if !job.claim() {
            core.finished(1);
            return;
        }
        let (fresh, lease_deadline) =
            self.active.as_ref().map_or((false, Instant::now()), |s| (s.fresh, s.lease_deadline));
        match &job.kind {
            JobKind::SessionWrite(body) => {
                let deadline = job.deadline.min(lease_deadline);
                let mut tracker = Tracker::new(Mode::Session { fresh });
                let r = match core.writes_refused() {
                    Some(e) => Err(e),
                    None => {
                        let Core { db, shared, failpoints, .. } = core;
                        db.in_savepoint(|db| run_body(db, shared, failpoints, body, &mut tracker, deadline))
                    }
                };
                let r = r.map(|resp| (resp, tracker.end));
                if core.db.is_autocommit() {
                    // SQLite rolled the whole session back (disk full, I/O error).
                    let cause = r.err().unwrap_or_else(texts::transaction_ended);
                    self.drop_session(core, session_state::NONE);
                    job.answer(Response::Error(texts::session_rolled_back(cause)));
                } else {
                    match r {
                        Ok((resp, end)) => {
                            if let Some(s) = self.active.as_mut() {
                                s.fresh = false;
                            }
                            let answer = match end {
                                SessionEnd::None => resp,
                                SessionEnd::Commit => match self.end(core, true, session_state::NONE) {
                                    Ok(()) => resp,
                                    Err(e) => Response::Error(e),
                                },
                                SessionEnd::Rollback => {
                                    self.end(core, false, session_state::NONE).ok();
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
                match self.end(core, commit, session_state::NONE) {
                    Ok(()) => job.answer(Response::SessionEnded { committed: commit }),
                    Err(e) => job.answer(Response::Error(e)),
                }
            }
            _ => unreachable!("only session jobs come here"),
        }
        core.finished(1);
    }

    /// A call or end of a session that ended (lease expired, shutdown) after the
    /// client sent it: `lease_expired`, and the client holds no session.
    pub(super) fn refuse_stale(&self, core: &Core, job: Job) {
        if job.claim() {
            job.answer(Response::Error(texts::lease_expired(core.shared.config.lease)));
            if let Some(c) = &job.client {
                c.session.store(session_state::NONE, Ordering::SeqCst);
            }
        }
        core.finished(1);
    }

    /// The holder's connection closed: its session is rolled back.
    pub(super) fn disconnected(&mut self, core: &mut Core, job: &Job) {
        let who = job.client.as_ref().map(|c| c.describe()).unwrap_or_default();
        info!("client {who} disconnected during its write session; rolled back");
        self.end(core, false, session_state::NONE).ok();
    }

    /// Commits or rolls back the session and releases the writer. A failed commit
    /// rolls back. `state_after` is what the client's connection learns.
    pub(super) fn end(&mut self, core: &mut Core, commit: bool, state_after: u8) -> Result<(), ErrorInfo> {
        let r = if commit {
            // Pending deferred violations fail the COMMIT, as SQLite's own would;
            // then the setting a session may have turned on can go, and the
            // session's statements must not have left state on the connection.
            let db = &core.db;
            let checked = if db.deferred_fk_pending() {
                Err(texts::deferred_fk())
            } else {
                db.defer_fk_off().map_err(|e| sql_error(&e)).and_then(|()| {
                    guard::connection_state(db.conn(), true).map_err(|what| texts::state_left(&what))
                })
            };
            checked
                .and_then(|()| {
                    set_in_doubt(true);
                    db.commit().map_err(|e| texts::session_commit_failed(sql_error(&e)))
                })
                .inspect_err(|_| {
                    db.rollback().ok();
                })
                // Its one caller is answered right after this returns.
                .inspect(|()| set_in_doubt(false))
                .inspect_err(|_| set_in_doubt(false))
        } else {
            core.db.rollback().map_err(|e| sql_error(&e))
        };
        if commit && r.is_ok() {
            core.committed();
            core.refresh_schema_version();
        }
        self.drop_session(core, state_after);
        r
    }

    /// Forgets the session (rolling back what is open) and frees the writer.
    pub(super) fn drop_session(&mut self, core: &Core, state_after: u8) {
        core.db.rollback_if_open();
        if let Some(s) = self.active.take() {
            // A stream answers its own end; its client holds nothing afterwards.
            let state_after = if s.many.is_some() { session_state::NONE } else { state_after };
            core.shared.metrics.session_hold.observe_duration(s.started.elapsed());
            s.client.session.store(state_after, Ordering::SeqCst);
            debug!(
                "write session of {} ended after {:.3} s",
                s.client.describe(),
                s.started.elapsed().as_secs_f64()
            );
        }
        core.shared.set_holder(None);
    }

    /// Rolls back a session whose lease ran out.
    pub(super) fn expire_if_due(&mut self, core: &Core) {
        let Some(s) = &self.active else { return };
        if Instant::now() < s.lease_deadline {
            return;
        }
        if let Some(m) = &s.many {
            let w = m.body.words();
            warn!(
                "the {} of {} sent no {}s for the {} s lease or was not complete by its deadline; rolled back",
                w.name,
                s.client.describe(),
                w.item,
                core.shared.config.lease.as_secs_f64()
            );
        } else {
            warn!(
                "write session of {} held the writer longer than the {} s lease; rolled back",
                s.client.describe(),
                core.shared.config.lease.as_secs_f64()
            );
        }
        core.shared.metrics.lease_expiries.fetch_add(1, Ordering::Relaxed);
        self.drop_session(core, session_state::EXPIRED);
    }

    /// Shutdown: a session in progress is rolled back; its client later gets
    /// `lease_expired`.
    pub(super) fn roll_back_for_shutdown(&mut self, core: &Core) {
        if let Some(s) = &self.active {
            info!("shutting down: rolling back the write session of {}", s.client.describe());
            self.drop_session(core, session_state::EXPIRED);
        }
    }
}
