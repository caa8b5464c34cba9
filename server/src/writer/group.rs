//! Group commit: the one-shot writes queued behind one another commit in one
//! transaction, each request in the broker's savepoint, so that a request that
//! fails rolls back alone.
//!
//! - **The group.** The first job and the one-shot writes right behind it, in
//!   arrival order (parked jobs first), up to `--max-group-requests` and 8 MiB of
//!   SQL and parameters; a job that is not a one-shot write ends it. Each job is
//!   claimed (`Queued → Running`); one its connection cancelled is skipped. A
//!   group never waits to fill, except once, briefly, for the writers known to be
//!   coming back (clients the last groups answered; never for a lone writer,
//!   never past a deadline; off unless `--group-wait-us`): see [`wait`].
//! - **Each request**, in order: one whose deadline passed is answered `timeout`
//!   and not run. Otherwise, inside `SAVEPOINT _litebroker_req` (a lone request
//!   runs without one): if its request id is recorded, the recorded answer is its
//!   answer; else its statements run and the id is recorded with the answer in the
//!   same transaction. A deferred foreign-key violation is checked as the
//!   request's own COMMIT would; then `defer_foreign_keys` is turned off again, so
//!   that the next request does not inherit it.
//! - **Before COMMIT** the connection's state is checked (`crate::guard`).
//! - **COMMIT**, then every caller is answered. From the COMMIT until the last
//!   answer the group is "in doubt" (`job::set_in_doubt`): a failure meanwhile exits
//!   the process rather than guess.
//! - **When the transaction fails before its COMMIT succeeded**, nothing of it was
//!   applied and the requests can run again ([`GroupCommit::rerun`]).
//! - **A failure inside the broker** (a panic) while running the group: the writer
//!   recovers (`recover`), and the other requests run again, each alone, so that
//!   only the one that failed fails.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use litebroker_protocol::host::unix_ms;
use litebroker_protocol::{ErrorInfo, ErrorKind, Response};
use tracing::warn;

use self::wait::GroupWait;
use super::core::{run_body, Core};
use super::db::WriterDb;
use super::failpoints::Failpoints;
use super::recover::recover;
use super::session::{Parked, Sessions};
use crate::guard;
use crate::job::{set_in_doubt, Job, JobKind};
use crate::queue::JobQueue;
use crate::request_ids;
use crate::shared::Shared;
use crate::sql::exec::{sql_error, Mode, Tracker};
use crate::texts;

mod wait;

/// Largest request-id encoding buffer kept between requests.
const ID_BUF_KEEP: usize = 64 * 1024;

/// Group commit's scratch, kept between groups so that a group allocates nothing.
#[derive(Default)]
pub(super) struct GroupCommit {
    jobs: Vec<Job>,
    results: Vec<Result<Response, ErrorInfo>>,
    /// Requests of the running group answered from their request-id record.
    dedup: u64,
    /// Encoding buffer of the answers recorded with request ids.
    id_buf: Vec<u8>,
    /// Waiting for the writers known to be coming before a group begins.
    wait: GroupWait,
}

/// What a request of a group runs with while the group lends the connection to
/// its savepoint.
struct Env<'a> {
    shared: &'a Shared,
    failpoints: &'a Failpoints,
    request_ids: bool,
}

impl GroupCommit {
    /// Forgets the running group's scratch after a failure inside the broker.
    pub(super) fn reset(&mut self) {
        self.dedup = 0;
        self.results.clear();
    }

    /// Gathers a group behind `first` (see the module's doc) and commits it.
    pub(super) fn run(&mut self, core: &mut Core, sessions: &mut Sessions, queue: &JobQueue, first: Job) {
        core.upkeep.took_job();
        let cfg = &core.shared.config;
        let (max_n, max_bytes) = (cfg.max_group_requests.max(1), cfg.max_group_bytes);
        let group_wait = cfg.group_wait;
        let mut group = std::mem::take(&mut self.jobs);
        let mut bytes = 0;
        let mut next = Some(first);
        // Set once the group waited for writers known to be coming (see `wait`):
        // when, and how many requests it held then.
        let mut waited: Option<(Instant, usize)> = None;
        loop {
            let mut full = false;
            let mut parked = false;
            while let Some(job) = next.take() {
                if job.claim() {
                    note_queue_wait(&core.shared, &job);
                    if let JobKind::Write(body) = &job.kind {
                        bytes += body.weight();
                    }
                    group.push(job);
                } else {
                    core.finished(1);
                }
                if group.len() >= max_n || bytes >= max_bytes {
                    full = true;
                    break;
                }
                // FIFO: older jobs parked behind a session come before the queue's, and
                // a job that is not a one-shot write ends the group.
                next = match sessions.unpark_write() {
                    Parked::Write(job) => Some(job),
                    Parked::Other => {
                        parked = true;
                        None
                    }
                    Parked::Empty => queue.try_recv_write(),
                };
            }
            // One wait per group, for a group that ended only because nothing more
            // was queued yet.
            if full || parked || waited.is_some() || group.is_empty() {
                break;
            }
            let Some(since) = self.wait.wait(group_wait, &group, max_n - group.len(), queue) else {
                break;
            };
            waited = Some((since, group.len()));
            next = queue.try_recv_write();
        }
        if let Some((since, held)) = waited {
            self.wait.waited(&core.shared.metrics, since, group.len() - held, &group);
        }
        if !group.is_empty() {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.execute(core, &group)));
            if ran.is_err() {
                self.reset();
                recover(core, sessions);
                // Nothing of the group was applied: the others run again, each in
                // its own transaction, so that only the request that failed fails.
                if group.len() > 1 {
                    for job in group.iter().filter(|j| j.unanswered()) {
                        let one = std::slice::from_ref(job);
                        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            self.execute(core, one)
                        }));
                        if ran.is_err() {
                            self.reset();
                            recover(core, sessions);
                        }
                    }
                }
            }
            core.finished(group.len());
        }
        // A job still unanswered here was cut short by a failure; dropping it
        // answers it (see `Job`'s `Drop`), now that its transaction rolled back.
        group.clear();
        self.jobs = group;
    }

    /// Commits `group` (jobs already claimed) as one transaction and answers each
    /// of its requests.
    pub(super) fn execute(&mut self, core: &mut Core, group: &[Job]) {
        if let Some(reason) = core.writes_refused() {
            for job in group {
                job.answer(Response::Error(reason.clone()));
            }
            return;
        }
        let deadline = group.iter().map(|j| j.deadline).max().unwrap_or_else(Instant::now);
        if let Err(e) = core.begin_immediate(deadline) {
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
        // A request's part of the transaction runs from its turn to the next one's
        // (or to the COMMIT): timed with the clock reads the deadlines take anyway,
        // as a read costs up to a quarter of a microsecond on virtual machines.
        let mut turn: Option<Instant> = None;
        for job in group {
            let now = Instant::now();
            if let Some(t) = turn.take() {
                core.shared.metrics.execute.observe_duration(now - t);
            }
            if now >= job.deadline {
                results.push(Err(texts::deadline_passed_before_run()));
                continue;
            }
            turn = Some(now);
            let mut tracker = Tracker::new(Mode::OneShot);
            let Core { db, shared, failpoints, upkeep } = &mut *core;
            let env = Env { shared, failpoints, request_ids: upkeep.request_ids() };
            let r = if single {
                let r = self.run_write(db, &env, job, &mut tracker);
                // Settled now, before the setting is turned off below (which would
                // make SQLite forget the violations its COMMIT should refuse).
                if r.is_ok() && tracker.defers_foreign_keys && db.deferred_fk_pending() {
                    Err(texts::deferred_fk())
                } else {
                    r
                }
            } else {
                db.in_savepoint(|db| {
                    let r = self.run_write(db, &env, job, &mut tracker);
                    // A deferred foreign key is checked at COMMIT, which this request
                    // shares with the group: check it as the request's own COMMIT
                    // would, so that only this request fails.
                    if r.is_ok() && db.deferred_fk_pending() {
                        return Err(texts::deferred_fk());
                    }
                    r
                })
            };
            // The request's pending violations are settled (checked, or rolled back
            // with its savepoint), so turning the setting off, which forgets them,
            // hides nothing; the next request must not inherit it.
            if tracker.defers_foreign_keys && !db.is_autocommit() {
                if let Err(e) = db.defer_fk_off() {
                    aborted = Some((results.len(), sql_error(&e)));
                    break;
                }
            }
            touches_schema |= tracker.sets_user_version;
            check_state |= tracker.needs_state_check;
            // Some errors (disk full, I/O, an interrupted statement, out of memory)
            // make SQLite roll back the whole transaction, not only the savepoint.
            if db.is_autocommit() {
                let cause = r.as_ref().err().cloned().unwrap_or_else(texts::transaction_ended);
                aborted = Some((results.len(), cause));
                break;
            }
            results.push(r);
        }
        // What the clients' statements left on the shared connection is checked
        // before anything of theirs commits (see `crate::guard`).
        if aborted.is_none() && results.iter().any(Result::is_ok) {
            if let Err(what) = guard::connection_state(core.db.conn(), check_state) {
                let culprit = single.then_some(0);
                aborted = Some((culprit.unwrap_or(usize::MAX), texts::state_left(&what)));
            }
        }
        let mut commit_time = Duration::ZERO;
        let mut committed_at = None;
        let outcome = match aborted {
            Some((at, cause)) => {
                core.db.rollback_if_open();
                Err((Some(at).filter(|&i| i < group.len()), cause))
            }
            None if single && results[0].is_err() => {
                core.db.rollback().ok();
                Ok(())
            }
            None => {
                let t = Instant::now();
                if let Some(turn) = turn.take() {
                    core.shared.metrics.execute.observe_duration(t - turn);
                }
                // From here until every caller is answered, a failure inside the
                // broker cannot say whether the group committed (see `in_doubt`).
                set_in_doubt(true);
                let r = core.db.commit();
                commit_time = t.elapsed();
                committed_at = Some(t + commit_time);
                r.map_err(|e| {
                    set_in_doubt(false);
                    core.db.rollback().ok();
                    (None, sql_error(&e))
                })
            }
        };
        // The last request's turn, when it ended without a COMMIT (a failure).
        if let Some(turn) = turn {
            core.shared.metrics.execute.observe_duration(turn.elapsed());
        }
        match outcome {
            Ok(()) => {
                let committed = results.iter().any(Result::is_ok);
                if committed {
                    core.failpoints.after_commit();
                    core.upkeep.committed(&core.db, &core.shared);
                    let (c, m) = (&core.shared.counters, &core.shared.metrics);
                    c.commits.fetch_add(1, Ordering::Relaxed);
                    c.last_commit_unix_ms.store(litebroker_protocol::host::unix_ms(), Ordering::Relaxed);
                    m.group_size.observe(group.len() as u64);
                    c.max_group.fetch_max(group.len() as u64, Ordering::Relaxed);
                    m.commit.observe_duration(commit_time);
                    c.max_commit_us.fetch_max(commit_time.as_micros() as u64, Ordering::Relaxed);
                    if core.upkeep.request_ids() {
                        // Each request with an id that succeeded was either answered
                        // from its record or recorded now (one that failed rolled
                        // back with its savepoint).
                        let with_ids = group
                            .iter()
                            .zip(&results)
                            .filter(|(j, r)| r.is_ok() && j.opts.request_id.is_some());
                        let recorded = (with_ids.count() as u64).saturating_sub(self.dedup);
                        m.request_ids_recorded.fetch_add(recorded, Ordering::Relaxed);
                    }
                    c.deduplicated.fetch_add(std::mem::take(&mut self.dedup), Ordering::Relaxed);
                    if touches_schema {
                        core.refresh_schema_version();
                    }
                }
                self.dedup = 0;
                // Counted before the answers go out, so that a caller who has its
                // answer finds its write counted; the COMMIT's end is the moment.
                let answered = committed_at.unwrap_or_else(Instant::now);
                if committed {
                    let enabled = !core.shared.config.group_wait.is_zero();
                    self.wait.committed(enabled, group, commit_time, answered);
                }
                for job in group {
                    core.shared.metrics.write_latency.observe_duration(answered - job.enqueued);
                }
                for (job, r) in group.iter().zip(results.drain(..)) {
                    job.answer(r.unwrap_or_else(Response::Error));
                }
                set_in_doubt(false);
                self.results = results;
                // After the answers: the feed never delays a writer.
                core.publish();
                core.upkeep.checkpoint_if_large(&mut core.db, &core.shared);
            }
            Err((at, cause)) if !single => {
                results.clear();
                self.results = results;
                self.dedup = 0;
                core.shared.metrics.group_reruns.fetch_add(1, Ordering::Relaxed);
                self.rerun(core, group, at, cause);
            }
            Err((_, cause)) => {
                self.dedup = 0;
                warn!("write transaction failed, nothing committed: {}", cause.message);
                group[0].answer(Response::Error(cause));
                results.clear();
                self.results = results;
                core.verify_clean();
            }
        }
    }

    /// A group transaction failed before anyone was answered, and nothing of it
    /// committed, so its requests can run again; request ids are safe to re-run
    /// too, since their records rolled back with the transaction. An interrupted
    /// runaway statement (`--max-statement-secs`) or an answer over its limits is
    /// known to be its request's fault: that request fails alone and the others run
    /// again as a group, in their order. Any other cause (a failed COMMIT, SQLite
    /// rolling back the transaction part-way for disk full or I/O, a request that
    /// left state on the connection) cannot be pinned on one request: each runs
    /// again in its own transaction, so only those that fail on their own get an
    /// error; a COMMIT that keeps failing fails every request and applies nothing.
    fn rerun(&mut self, core: &mut Core, group: &[Job], at: Option<usize>, cause: ErrorInfo) {
        match at {
            Some(culprit) if matches!(cause.kind, ErrorKind::Timeout | ErrorKind::LimitExceeded) => {
                warn!(
                    requests = group.len(),
                    "a request was stopped ({}); re-running the rest of its group", cause.message
                );
                group[culprit].answer(Response::Error(cause));
                for rest in [&group[..culprit], &group[culprit + 1..]] {
                    if !rest.is_empty() {
                        self.execute(core, rest);
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
                    self.execute(core, std::slice::from_ref(job));
                }
            }
        }
    }

    /// Runs a one-shot write. With a request id it is exactly-once: an id already
    /// recorded returns its stored answer without running again; otherwise the id
    /// and answer are recorded in the same transaction as the write.
    fn run_write(
        &mut self,
        db: &WriterDb,
        env: &Env<'_>,
        job: &Job,
        tracker: &mut Tracker,
    ) -> Result<Response, ErrorInfo> {
        let JobKind::Write(body) = &job.kind else { unreachable!("groups hold writes") };
        let id = job.opts.request_id.filter(|_| env.request_ids);
        if let Some(id) = &id {
            if let Some(stored) = request_ids::lookup(db.conn(), id).map_err(|e| sql_error(&e))? {
                // Counted once its group commits: a group that fails runs again.
                self.dedup += 1;
                return Ok(stored);
            }
        }
        let resp = run_body(db, env.shared, env.failpoints, body, tracker, job.deadline)?;
        if let Some(id) = &id {
            let recorded = request_ids::record(db.conn(), id, &resp, unix_ms(), &mut self.id_buf)
                .map_err(|e| sql_error(&e));
            // One big answer must not keep its buffer for the broker's lifetime.
            if self.id_buf.capacity() > ID_BUF_KEEP {
                self.id_buf = Vec::new();
            }
            recorded?;
        }
        Ok(resp)
    }
}

/// Counts how long a one-shot write waited in the queue (for `status` and the
/// metrics).
fn note_queue_wait(shared: &Shared, job: &Job) {
    let waited = job.enqueued.elapsed();
    shared.metrics.queue_wait.observe_duration(waited);
    shared.counters.max_queue_wait_us.fetch_max(waited.as_micros() as u64, Ordering::Relaxed);
}
