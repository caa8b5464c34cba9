//! Jobs: what a connection asks of the writer, how far each has got, and where
//! its answer goes.
//!
//! A [`Job`] carries what to do ([`JobKind`]), the request's options, its client,
//! its deadline, when it was queued, its [`Stage`] and where its answer goes
//! ([`ReplyTx`]). A connection's jobs are made by its [`JobLine`], numbered in
//! request order; it has one in flight, or up to [`PIPELINE_DEPTH`] one-shot
//! writes when its client pipelines them (`conn::pipeline`). Each job's stage is
//! one atomic word of its own, shared with the connection, which moves `Queued →
//! Running → Answered`, or `Queued → Cancelled` when the connection gave up on it
//! first. Each step is one compare-and-swap, so a job is
//! run at most once and answered at most once, and a cancelled job is skipped.
//! A job taken by the writer and dropped unanswered (a failure inside the broker)
//! answers itself with an `internal` error saying nothing was applied.
//!
//! Every request read from a connection is counted [`InFlight`] until its answer
//! was written: shutdown waits for that count to reach zero before it removes the
//! socket.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use litebroker_protocol::{CheckpointMode, ErrorKind, Migration, Response, Statement, Value, WriteOptions};

use crate::shared::{ClientEntry, Shared};
use crate::texts;

/// Most one-shot writes a connection may have in flight at once (pipelined by its
/// client); beyond them the connection stops reading until the oldest is answered.
pub const PIPELINE_DEPTH: usize = 64;

/// A reply with the sequence number of the job it answers, as it travels to the
/// connection: answers of pipelined writes may come out of order (a failing
/// request of a group is answered before the group commits).
pub type Tagged = (u64, Reply);

/// What the writer is asked to do.
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
    Migrate(Vec<Migration>),
    /// Finish what is queued and stop. Not answered.
    Stop,
    /// Open a streamed executemany or batch for the job's client: `BEGIN
    /// IMMEDIATE`, an executemany's statement prepared, the writer held for the
    /// stream (see `writer::session`). Answered `SessionStarted` when open, or
    /// with the recorded summary when the request id already committed.
    ManyBegin(StreamOf),
    /// The next part of the client's stream. Answered `ExecutedMany` with the
    /// running total, or `ManyFailed`.
    ManyPart(Part),
    /// The end of the client's stream: commit (when `rows` arrived) or abandon.
    ManyEnd {
        /// Which stream, for the answer when the broker already ended it.
        words: texts::StreamWords,
        /// Rows the client says it sent.
        rows: u64,
        /// Commit (true) or abandon.
        commit: bool,
    },
}

/// What a stream runs: one statement per parameter row (`ManyBegin`), or
/// statements (`BatchBegin`).
#[derive(Debug, Clone)]
pub enum StreamOf {
    /// A streamed executemany of this one statement.
    Rows {
        /// The one statement.
        sql: String,
    },
    /// A streamed batch.
    Statements,
}

impl Part {
    /// The words messages use for the stream this part belongs to.
    pub fn words(&self) -> texts::StreamWords {
        match self {
            Part::Rows(_) => texts::EXECUTEMANY,
            Part::Statements(_) => texts::STREAMED_BATCH,
        }
    }
}

impl StreamOf {
    /// The words messages use for this stream.
    pub fn words(&self) -> texts::StreamWords {
        match self {
            StreamOf::Rows { .. } => texts::EXECUTEMANY,
            StreamOf::Statements => texts::STREAMED_BATCH,
        }
    }
}

/// One part of a stream, as one frame carried it.
#[derive(Debug)]
pub enum Part {
    /// Parameter rows of an executemany.
    Rows(Vec<Vec<Value>>),
    /// Statements of a streamed batch.
    Statements(Vec<Statement>),
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

/// How far a job has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting in the queue.
    Queued = 0,
    /// Taken by the writer: it will answer.
    Running = 1,
    /// Given up by the connection (deadline passed): the writer must skip it.
    Cancelled = 2,
    /// Answered by the writer.
    Answered = 3,
}

/// A job's stage, shared by the job and its connection's [`JobLine`]: one atomic
/// word packing the stage with the job's sequence number on its connection, so
/// that a stale (cancelled) job can never be mistaken for the connection's
/// current one.
#[derive(Debug, Clone, Default)]
pub struct JobState(Arc<AtomicU64>);

impl JobState {
    fn pack(seq: u64, stage: Stage) -> u64 {
        (seq << 2) | stage as u64
    }

    /// Job `seq` is now at `stage`, whatever it was.
    fn set(&self, seq: u64, stage: Stage) {
        self.0.store(Self::pack(seq, stage), Ordering::SeqCst);
    }

    /// Moves job `seq` from `from` to `to`; false when it is not at `from` (or
    /// is not the connection's current job).
    pub fn advance(&self, seq: u64, from: Stage, to: Stage) -> bool {
        self.0
            .compare_exchange(Self::pack(seq, from), Self::pack(seq, to), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether job `seq` is at `stage`.
    pub fn is(&self, seq: u64, stage: Stage) -> bool {
        self.0.load(Ordering::Acquire) == Self::pack(seq, stage)
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

/// A unit of work for the writer.
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
    /// Shared with the connection: see [`JobState`].
    pub state: JobState,
    /// This job's sequence number on its connection.
    pub seq: u64,
    /// Where the answer goes (None: nobody waits for one).
    reply: Option<ReplyTx>,
}

impl Job {
    fn new(
        kind: JobKind,
        opts: WriteOptions,
        client: Option<Arc<ClientEntry>>,
        deadline: Instant,
        (state, seq): (JobState, u64),
        reply: Option<ReplyTx>,
    ) -> Job {
        Job { kind, opts, client, deadline, enqueued: Instant::now(), state, seq, reply }
    }

    /// A job nobody waits for (`Stop`, `Disconnected`): never answered.
    pub fn notice(kind: JobKind, client: Option<Arc<ClientEntry>>) -> Job {
        Job::new(kind, WriteOptions::default(), client, Instant::now(), (JobState::default(), 0), None)
    }

    /// Claims the job for execution; false when the connection already gave up on it.
    pub fn claim(&self) -> bool {
        self.state.advance(self.seq, Stage::Queued, Stage::Running)
    }

    /// Sends the answer (see [`ReplyTx::send`]); never blocks. A job is answered
    /// once: a second answer is dropped (the connection may have moved on to its
    /// next request, which must not receive it).
    pub fn answer(&self, resp: Response) {
        if !self.state.advance(self.seq, Stage::Running, Stage::Answered) {
            return;
        }
        if let Some(tx) = &self.reply {
            let minor = self.client.as_ref().map_or(litebroker_protocol::PROTOCOL_MINOR, |c| c.minor);
            tx.send(self.seq, for_minor(resp, minor));
        }
    }

    /// Taken by the writer and not answered yet.
    pub fn unanswered(&self) -> bool {
        self.state.is(self.seq, Stage::Running)
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

/// `resp` in a form a client speaking protocol minor `minor` can decode: error
/// kinds appended in a later minor become `Internal`, their message kept; a
/// session's start loses its lease (minor 2).
pub fn for_minor(resp: Response, minor: u32) -> Response {
    match resp {
        Response::SessionLeased { waited_ms, .. } if minor < 2 => Response::SessionStarted { waited_ms },
        Response::Error(mut e) if minor < 1 && e.kind == ErrorKind::WritesStopped => {
            e.kind = ErrorKind::Internal;
            Response::Error(e)
        }
        other => other,
    }
}

/// A connection's jobs: each gets the next sequence number and a [`JobState`] of
/// its own (the line keeps the newest one's), and its answer comes back through
/// the line's reply path.
#[derive(Debug)]
pub struct JobLine {
    state: JobState,
    seq: u64,
    reply: ReplyTx,
}

impl JobLine {
    /// A line whose jobs are answered through `reply`.
    pub fn new(reply: ReplyTx) -> JobLine {
        JobLine { state: JobState::default(), seq: 0, reply }
    }

    /// The next job of this connection, queued; the caller waits for its answer
    /// until `deadline`.
    pub fn next(
        &mut self,
        kind: JobKind,
        opts: WriteOptions,
        client: &Arc<ClientEntry>,
        deadline: Instant,
    ) -> Job {
        self.seq += 1;
        // A state of its own: the jobs before it may still be in flight (pipelined).
        self.state = JobState::default();
        self.state.set(self.seq, Stage::Queued);
        let ticket = (self.state.clone(), self.seq);
        Job::new(kind, opts, Some(client.clone()), deadline, ticket, Some(self.reply.clone()))
    }

    /// Cancels job `seq`, the newest, if the writer has not taken it yet: the
    /// writer will skip it.
    pub fn cancel(&self, seq: u64) -> bool {
        self.state.advance(seq, Stage::Queued, Stage::Cancelled)
    }

    /// The newest job's state, for a connection that keeps it in flight with others.
    pub fn newest(&self) -> JobState {
        self.state.clone()
    }
}

impl JobState {
    /// Cancels job `seq` if the writer has not taken it yet: the writer will skip it.
    pub fn cancel(&self, seq: u64) -> bool {
        self.advance(seq, Stage::Queued, Stage::Cancelled)
    }
}

/// What a connection thread receives for its job.
// It moves once through a one-slot channel; boxing the answer would allocate per
// request instead.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Reply {
    /// The answer, for the connection thread to send.
    Response(Response),
    /// The answer was sent on the socket (the answer-on-the-socket shortcut,
    /// `conn::direct`).
    Sent,
    /// The start of the answer was sent on the socket; these bytes remain, for the
    /// connection thread to send (the client's socket buffer was full: it is not
    /// reading). The request stays in flight until they are.
    Rest(Vec<u8>, InFlight),
}

/// A connection's own way to send a job's answer on its socket, bypassing the
/// channel: the answer-on-the-socket shortcut (`conn::direct`, where its rules are).
pub trait SocketAnswer: Send + Sync + fmt::Debug {
    /// Sends the answer of job `seq` on the socket if the connection armed the
    /// socket for that job, without blocking, and returns the note for the
    /// connection thread; otherwise gives the answer back.
    ///
    /// # Errors
    /// `resp` itself when the socket is not armed for job `seq`.
    // The answer moves back once, unboxed, as it moves through the reply slot.
    #[allow(clippy::result_large_err)]
    fn answer(&self, seq: u64, resp: Response) -> Result<Reply, Response>;
}

/// A connection's reply path, cloned into each of its jobs: a channel with room
/// for a reply per job the connection may have in flight ([`PIPELINE_DEPTH`],
/// and one more), and, on Unix, the socket.
#[derive(Debug, Clone)]
pub struct ReplyTx {
    tx: SyncSender<Tagged>,
    socket: Option<Arc<dyn SocketAnswer>>,
}

impl ReplyTx {
    /// A reply path through the channel `tx` only.
    pub fn new(tx: SyncSender<Tagged>) -> ReplyTx {
        ReplyTx { tx, socket: None }
    }

    /// A reply path through `tx`, or through `socket` for the jobs it is armed for.
    pub fn with_socket(tx: SyncSender<Tagged>, socket: Arc<dyn SocketAnswer>) -> ReplyTx {
        ReplyTx { tx, socket: Some(socket) }
    }

    /// Delivers the answer of job `seq`. Never blocks: the channel has room for
    /// every job its connection may have in flight, each answered once, and an
    /// answer on the socket is sent without waiting.
    pub fn send(&self, seq: u64, resp: Response) {
        let resp = match &self.socket {
            Some(socket) => match socket.answer(seq, resp) {
                Ok(note) => {
                    let _ = self.tx.try_send((seq, note));
                    return;
                }
                Err(resp) => resp,
            },
            None => resp,
        };
        let _ = self.tx.try_send((seq, Reply::Response(resp)));
    }
}

/// A request counted in flight (`Counters::in_flight`) from when it was read until
/// its answer was written (or its connection is gone): dropping the guard counts
/// it out, so no path can forget to.
#[derive(Debug)]
#[must_use = "the request is counted in flight until this guard is dropped"]
pub struct InFlight(Arc<Shared>);

impl InFlight {
    /// Counts one request in flight.
    pub fn new(shared: &Arc<Shared>) -> InFlight {
        shared.counters.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use litebroker_protocol::{decode_payload, encode_frame, FRAME_HEADER_LEN, HARD_MAX_FRAME};

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

    #[test]
    fn a_job_runs_once_is_answered_once_and_a_cancelled_one_is_skipped() {
        let (stop_tx, _) = mpsc::channel();
        let shared =
            Arc::new(Shared::new(crate::Config::new("unused.db"), String::new(), String::new(), stop_tx));
        let client = shared.register("t".into(), 1, None, litebroker_protocol::PROTOCOL_MINOR);
        let (tx, rx) = mpsc::sync_channel(1);
        let mut line = JobLine::new(ReplyTx::new(tx));
        let deadline = Instant::now() + Duration::from_secs(5);
        let job = line.next(JobKind::BeginSession, WriteOptions::default(), &client, deadline);
        assert!(job.state.is(job.seq, Stage::Queued) && job.claim() && !job.claim());
        assert!(!line.cancel(job.seq), "a running job cannot be cancelled");
        job.answer(Response::Pong);
        job.answer(Response::ShuttingDown);
        assert!(matches!(rx.try_recv(), Ok((1, Reply::Response(Response::Pong)))));
        assert!(rx.try_recv().is_err(), "answered once");
        let next = line.next(JobKind::BeginSession, WriteOptions::default(), &client, deadline);
        assert!(next.state.is(next.seq, Stage::Queued), "{next:?}");
        assert!(
            !job.unanswered() && !job.state.is(job.seq, Stage::Queued),
            "the old job is not the current one"
        );
        assert!(line.cancel(next.seq) && !next.claim());
        drop(next);
        assert!(rx.try_recv().is_err(), "a cancelled job is not answered");
        {
            let _counted = InFlight::new(&shared);
            assert_eq!(shared.counters.in_flight.load(Ordering::SeqCst), 1);
        }
        assert_eq!(shared.counters.in_flight.load(Ordering::SeqCst), 0);
    }
}
