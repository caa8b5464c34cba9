//! Streams: a streamed executemany (one statement run once per parameter row,
//! the rows arriving in chunks while the statement runs) or a streamed batch
//! (statements arriving in parts, each run as a one-shot request runs its SQL,
//! one `Tracker` across the parts so that a `BEGIN … COMMIT` around the whole
//! stream is honoured and the statement limit applies per part), all in one
//! transaction, answered with a summary.
//!
//! The stream holds the writer the way a write session does (`session`): its
//! `ManyBegin` job runs `BEGIN IMMEDIATE` (waiting out other processes' locks as
//! any write does), prepares an executemany's statement once (kept in the
//! statement cache, so every chunk runs the same prepared statement), and records the client as the
//! holder; every other job is parked until the stream ends. Its lease runs to
//! the earlier of the request's own deadline and `--lease-secs` from its last
//! chunk (renewed by each chunk): the writer thread sleeps at most until then and
//! rolls back a stream that is not complete by it, so a client that stalls keeps
//! the writer from the others neither past its deadline nor, whatever deadline
//! it asked for, longer than one lease without sending rows. A client that
//! disconnects is rolled back as a session is.
//!
//! - **Exactly once.** A request id covers the whole stream: `ManyBegin` looks it
//!   up first, and a recorded id is answered with its recorded summary at once
//!   (the connection then drains the stream's frames and runs none of them); at
//!   the end the id is recorded with the summary in the stream's transaction.
//! - **A failing row** (or statement) rolls the whole stream back and frees the
//!   writer; the answer names its index in the stream (counting from 0).
//! - **Memory.** A chunk is one frame; the connection hands the writer one chunk
//!   at a time and decodes the next meanwhile, so the broker holds at most two
//!   chunks of a stream.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use litebroker_protocol::host::unix_ms;
use litebroker_protocol::{ErrorInfo, ManySummary, Response};
use tracing::warn;

use super::core::Core;
use super::session::{ManyStream, Sessions, StreamBody};
use crate::job::{Job, JobKind, Part, StreamOf};
use crate::request_ids;
use crate::sql::exec::{prepare_many, run_batch, run_rows, sql_error, Mode, Tracker};
use crate::texts;

/// The stream's lease from now: `--lease-secs`, within its request's deadline.
fn lease(core: &Core, deadline: Instant) -> Instant {
    deadline.min(Instant::now() + core.shared.config.lease)
}

/// Opens the stream of the job's client (see the module's doc); refused while
/// stopping. The job is answered `SessionStarted` when the stream is open.
pub(super) fn begin(core: &mut Core, sessions: &mut Sessions, job: Job, stopping: bool) {
    if !job.claim() {
        core.finished(1);
        return;
    }
    let JobKind::ManyBegin(of) = &job.kind else { unreachable!("only ManyBegin comes here") };
    let Some(client) = job.client.clone() else {
        core.finished(1);
        return;
    };
    let r = if stopping {
        Err(texts::shutting_down())
    } else if let Some(e) = core.writes_refused() {
        Err(e)
    } else {
        core.begin_immediate(job.deadline)
    };
    if let Err(e) = r {
        job.answer(Response::Error(e));
        core.finished(1);
        return;
    }
    let request_id = job.opts.request_id.filter(|_| core.upkeep.request_ids());
    let opened = request_id
        .as_ref()
        .map_or(Ok(None), |id| request_ids::lookup(core.db.conn(), id).map_err(|e| sql_error(&e)))
        .and_then(|stored| match stored {
            // Committed before: its recorded answer is the answer; nothing runs.
            Some(stored) => Ok(Some(stored)),
            None => match of {
                StreamOf::Rows { sql } => prepare_many(core.db.conn(), sql).map(|_| None),
                StreamOf::Statements => Ok(None),
            },
        });
    match opened {
        Ok(None) => {
            let body = match of {
                StreamOf::Rows { sql } => StreamBody::Rows { sql: sql.clone() },
                StreamOf::Statements => StreamBody::Statements(Tracker::summarising(Mode::OneShot)),
            };
            let stream = ManyStream { body, request_id, sum: ManySummary::default(), deadline: job.deadline };
            sessions.open(core, Arc::clone(&client), lease(core, job.deadline), Some(stream));
            job.answer(Response::SessionStarted { waited_ms: job.enqueued.elapsed().as_millis() as u64 });
        }
        Ok(Some(stored)) => {
            core.db.rollback().ok();
            core.shared.counters.deduplicated.fetch_add(1, Ordering::Relaxed);
            job.answer(stored);
        }
        Err(e) => {
            core.db.rollback().ok();
            job.answer(Response::Error(e));
        }
    }
    core.finished(1);
}

/// A chunk or the end of the holder's stream.
pub(super) fn run(core: &mut Core, sessions: &mut Sessions, job: Job) {
    if !job.claim() {
        core.finished(1);
        return;
    }
    let answer = match &job.kind {
        JobKind::ManyPart(part) => chunk(core, sessions, part, job.deadline),
        JobKind::ManyEnd { words, rows, commit } => end(core, sessions, *words, *rows, *commit),
        _ => unreachable!("only stream jobs come here"),
    };
    job.answer(answer);
    core.finished(1);
}

/// A chunk of a stream the broker already ended (deadline passed, shutdown, an
/// internal failure): nothing of the stream was applied.
pub(super) fn refuse_stale(core: &Core, job: Job) {
    if job.claim() {
        let words = match &job.kind {
            JobKind::ManyPart(part) => part.words(),
            JobKind::ManyEnd { words, .. } => *words,
            _ => texts::EXECUTEMANY,
        };
        job.answer(Response::Error(texts::many_rolled_back(words)));
    }
    core.finished(1);
}

/// Runs one part; a failing row or statement ends the stream (rolled back,
/// writer freed).
fn chunk(core: &mut Core, sessions: &mut Sessions, part: &Part, deadline: Instant) -> Response {
    if let Some(e) = core.writes_refused() {
        sessions.drop_session(core, crate::shared::session_state::NONE);
        return Response::Error(e);
    }
    let Some(stream) = sessions.many_mut() else {
        return Response::Error(texts::many_rolled_back(part.words()));
    };
    let words = stream.body.words();
    let cfg = &core.shared.config;
    let deadline = deadline.min(Instant::now() + cfg.max_statement_time);
    let first = stream.sum.rows;
    let conn = core.db.conn();
    core.db.arm_deadline(Some(deadline));
    let ran = match (&mut stream.body, part) {
        (StreamBody::Rows { sql }, Part::Rows(rows)) => prepare_many(conn, sql)
            .map_err(|e| (0, e))
            .and_then(|mut stmt| run_rows(conn, &mut stmt, rows, &mut stream.sum)),
        (StreamBody::Statements(tracker), Part::Statements(stmts)) => {
            tracker.next_part();
            let r = run_batch(conn, stmts, tracker, &core.limits(deadline), &mut stream.sum);
            stream.sum.last_insert_rowid = conn.last_insert_rowid();
            // The failing statement is the one after those that ran.
            r.map_err(|e| ((stream.sum.rows - first) as usize, e))
        }
        // The connection sends a stream only the parts of its kind.
        _ => Err((0, texts::many_out_of_place(words, "a part of another stream"))),
    };
    core.db.arm_deadline(None);
    match ran {
        Ok(()) => {
            let (sum, renewed) = (stream.sum, lease(core, stream.deadline));
            sessions.renew_lease(renewed);
            Response::ExecutedMany(sum)
        }
        Err((i, mut e)) => {
            if e.kind == litebroker_protocol::ErrorKind::Timeout {
                core.shared.metrics.interrupted.fetch_add(1, Ordering::Relaxed);
                e.message = texts::statement_interrupted(cfg.max_statement_time);
            }
            let row = first + i as u64;
            sessions.drop_session(core, crate::shared::session_state::NONE);
            Response::ManyFailed { row, error: texts::many_row_failed(words, row, e) }
        }
    }
}

/// Ends the stream: abandoned, or the row count checked (and a streamed batch's
/// wrapping `BEGIN` closed), the request id recorded with the summary, and
/// committed (as a session's commit: deferred foreign keys, the connection's
/// state, then `COMMIT`).
fn end(
    core: &mut Core,
    sessions: &mut Sessions,
    words: texts::StreamWords,
    announced: u64,
    commit: bool,
) -> Response {
    let Some(stream) = sessions.many_mut() else { return Response::Error(texts::many_rolled_back(words)) };
    let sum = stream.sum;
    let id = stream.request_id;
    let unclosed = match &stream.body {
        StreamBody::Statements(tracker) => tracker.finish().err(),
        StreamBody::Rows { .. } => None,
    };
    let refused: Option<ErrorInfo> = if !commit {
        Some(texts::many_abandoned(words))
    } else if announced != sum.rows {
        Some(texts::many_row_count(words, announced, sum.rows))
    } else {
        unclosed
    };
    if let Some(e) = refused {
        sessions.drop_session(core, crate::shared::session_state::NONE);
        return Response::Error(e);
    }
    let answer = Response::ExecutedMany(sum);
    if let Some(id) = &id {
        let mut buf = Vec::new();
        if let Err(e) = request_ids::record(core.db.conn(), id, &answer, unix_ms(), &mut buf) {
            sessions.drop_session(core, crate::shared::session_state::NONE);
            return Response::Error(sql_error(&e));
        }
    }
    match sessions.end(core, true, crate::shared::session_state::NONE) {
        Ok(()) => {
            core.failpoints.after_commit();
            answer
        }
        Err(e) => {
            warn!("the commit of a {} failed, nothing of it applied: {}", words.name, e.message);
            Response::Error(e)
        }
    }
}
