//! Pipelined writes: a client may send one-shot writes (`Execute`, `Batch`
//! outside a session) without reading their answers first. The connection queues
//! each as a job at once, for the writer thread (never serving the queue itself:
//! it goes back to reading, and the writer commits what was queued meanwhile as
//! one group), and writes the answers in request order, each once.
//!
//! # Rules
//!
//! - **Order.** Answers leave in the order the requests came. A reply that comes
//!   early (a failing request of a group is answered before its group commits) is
//!   kept in its entry until every answer before it was written. Any other
//!   request (status, a session, a stream) waits until the pipeline is empty, so
//!   it is answered after every write sent before it, and sees them committed.
//! - **Bounded.** At most [`PIPELINE_DEPTH`] writes in flight, and at most
//!   [`BUDGET`] bytes of their SQL and parameters (one larger write alone is
//!   still taken): when full, the connection stops reading until the oldest is
//!   answered, and the client blocks on its full socket. Answers are written by
//!   the connection thread within `--io-timeout-secs`, so a client that does not
//!   read them is disconnected as any other; the broker never holds more than
//!   the pipeline's answers for it.
//! - **Deadlines.** Each write keeps its own: one still queued when it passes is
//!   cancelled and answered "timed out", the others go on.
//! - **The shortcut.** A write is answered on the socket (`conn::direct`) only
//!   when nothing else is in flight; when the client sends the next write before
//!   that answer came, the armed write becomes the pipeline's first entry and its
//!   note (sent, or the rest to write) is taken in its turn.
//!
//! A client that sends one request at a time never has more than one entry here.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use litebroker_protocol::{FrameError, Request, Response};

use super::deadline::{timed_out, Jobs};
use super::direct::Direct;
use super::io::FrameIo;
use crate::job::{InFlight, JobState, Reply, PIPELINE_DEPTH};
use crate::metrics::RequestKind;
use crate::shared::{session_state, ClientEntry};
use crate::texts;

/// Most bytes of SQL and parameters (as `WriteBody::weight` counts them) of the
/// writes a connection has in flight, bounding what a pipelining client makes the
/// broker hold beyond its answers.
pub(super) const BUDGET: usize = 16 << 20;

/// Whether `req` of `client` may join a pipeline: a one-shot write (`Execute`,
/// `Batch`) outside a write session. A session's writes run one at a time in
/// it, and the other requests wait for the pipeline to empty.
pub(super) fn pipelinable(req: &Request, client: &ClientEntry) -> bool {
    matches!(req, Request::Execute { .. } | Request::Batch { .. })
        && client.session.load(Ordering::SeqCst) == session_state::NONE
}

/// One request of the pipeline, in request order.
struct Entry {
    /// Its job's sequence number and state; None for an answer given at once (a
    /// refusal before the writer), which still waits for its turn.
    job: Option<(u64, JobState)>,
    deadline: Instant,
    timeout: Duration,
    kind: RequestKind,
    weight: usize,
    /// Its answer is armed on the socket (`conn::direct`), which holds its guard.
    direct: bool,
    in_flight: Option<InFlight>,
    reply: Option<Reply>,
}

/// A connection's writes in flight, answered in order.
#[derive(Default)]
pub(super) struct Pipeline {
    entries: VecDeque<Entry>,
    weight: usize,
}

impl Pipeline {
    /// Whether nothing is in flight here.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn has_room(&self, weight: usize) -> bool {
        self.entries.is_empty() || (self.entries.len() < PIPELINE_DEPTH && self.weight + weight <= BUDGET)
    }

    /// Adds the write armed on the socket, if any: it is older than anything the
    /// client sends now.
    pub(super) fn adopt_direct(&mut self, direct: &mut Direct, jobs: &Jobs) {
        if let Some((seq, deadline, timeout)) = direct.take_pending() {
            self.entries.push_back(Entry {
                job: Some((seq, jobs.newest())),
                deadline,
                timeout,
                kind: RequestKind::EXECUTE,
                weight: 0,
                direct: true,
                in_flight: None,
                reply: None,
            });
        }
    }

    /// Adds a write queued for the writer.
    pub(super) fn push_job(
        &mut self,
        (seq, state, deadline): (u64, JobState, Instant),
        timeout: Duration,
        kind: RequestKind,
        weight: usize,
        in_flight: InFlight,
    ) {
        self.weight += weight;
        self.entries.push_back(Entry {
            job: Some((seq, state)),
            deadline,
            timeout,
            kind,
            weight,
            direct: false,
            in_flight: Some(in_flight),
            reply: None,
        });
    }

    /// Adds a request answered at once, to be written in its turn.
    pub(super) fn push_answer(&mut self, resp: Response, kind: RequestKind, in_flight: InFlight) {
        self.entries.push_back(Entry {
            job: None,
            deadline: Instant::now(),
            timeout: Duration::ZERO,
            kind,
            weight: 0,
            direct: false,
            in_flight: Some(in_flight),
            reply: Some(Reply::Response(resp)),
        });
    }

    /// Writes the answers that are due, then, while the pipeline is full for a
    /// write of `weight` bytes or the client has sent nothing more, waits for the
    /// oldest answer and writes it. Returns with room for the next write, and
    /// either an empty pipeline or a frame to read.
    ///
    /// # Errors
    /// The socket's failure while writing an answer.
    pub(super) fn progress(
        &mut self,
        weight: usize,
        io: &mut FrameIo,
        jobs: &Jobs,
        direct: &Direct,
    ) -> Result<(), FrameError> {
        self.collect(jobs);
        self.send_due(io, jobs, direct)?;
        while !self.entries.is_empty() && (!self.has_room(weight) || !io.frame_ready()) {
            self.wait_oldest(jobs, direct);
            self.send_due(io, jobs, direct)?;
        }
        Ok(())
    }

    /// Writes every answer, waiting for each (before any other request is
    /// answered, and when the client leaves or the broker stops).
    ///
    /// # Errors
    /// The socket's failure while writing an answer.
    pub(super) fn drain(&mut self, io: &mut FrameIo, jobs: &Jobs, direct: &Direct) -> Result<(), FrameError> {
        while !self.entries.is_empty() {
            self.collect(jobs);
            self.send_due(io, jobs, direct)?;
            if !self.entries.is_empty() {
                self.wait_oldest(jobs, direct);
            }
        }
        Ok(())
    }

    /// Files the replies that came into their entries. Only while something is
    /// in flight here: otherwise a reply that comes is the armed write's note,
    /// which is `conn::direct`'s.
    fn collect(&mut self, jobs: &Jobs) {
        if self.entries.is_empty() {
            return;
        }
        while let Some((seq, reply)) = jobs.try_tagged() {
            self.file(seq, reply);
        }
    }

    fn file(&mut self, seq: u64, reply: Reply) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.job.as_ref().is_some_and(|(s, _)| *s == seq)) {
            e.reply = Some(reply);
        }
    }

    /// Waits (at most a second) for the next reply; when none came, cancels each
    /// write still queued whose deadline passed (or all of them when the writer
    /// is gone), answering it so.
    fn wait_oldest(&mut self, jobs: &Jobs, direct: &Direct) {
        let Some(first) = self.entries.iter().find(|e| e.reply.is_none()) else { return };
        if let Some((seq, reply)) = jobs.wait_tagged(first.deadline) {
            self.file(seq, reply);
            return;
        }
        let now = Instant::now();
        let shared = jobs.shared();
        let writer_gone = !shared.writer_alive.load(Ordering::SeqCst);
        for e in self.entries.iter_mut().filter(|e| e.reply.is_none()) {
            let Some((seq, state)) = &e.job else { continue };
            if (now >= e.deadline || writer_gone) && state.cancel(*seq) {
                if e.direct {
                    e.in_flight = direct.disarm();
                    e.direct = false;
                }
                let resp = if now >= e.deadline {
                    timed_out(e.timeout, shared)
                } else {
                    Response::Error(texts::shutting_down())
                };
                e.reply = Some(Reply::Response(resp));
            }
        }
    }

    /// Writes the answers at the front that have come.
    fn send_due(&mut self, io: &mut FrameIo, jobs: &Jobs, direct: &Direct) -> Result<(), FrameError> {
        while self.entries.front().is_some_and(|e| e.reply.is_some()) {
            let Some(mut e) = self.entries.pop_front() else { break };
            self.weight -= e.weight;
            let sent = match e.reply.take() {
                None | Some(Reply::Sent) => Ok(()),
                Some(Reply::Rest(bytes, in_flight)) => {
                    let sent = io.send_rest(&bytes);
                    drop(in_flight);
                    sent
                }
                Some(Reply::Response(resp)) => {
                    if e.direct {
                        e.in_flight = direct.disarm();
                    }
                    jobs.shared().metrics.answered(e.kind, &resp);
                    io.send(&resp)
                }
            };
            drop(e.in_flight.take());
            sent?;
        }
        Ok(())
    }
}
