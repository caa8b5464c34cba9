//! A request's deadline, as its connection keeps it: the connection hands the
//! request's job to the writer and waits for the answer until the deadline (now +
//! the request's timeout, `--default-timeout-secs` when it states none).
//!
//! It waits in slices of at most a second. When the deadline passes while the job
//! still waits in the queue, the job is cancelled (the writer will skip it: one
//! compare-and-swap decides, see `crate::job`) and the caller learns who holds
//! the writer, with nothing applied. Once the writer has taken the job, its answer
//! is awaited: the writer bounds its own work by the same deadline (the lock
//! wait, the statement deadline). A writer that is gone (shutdown) ends the wait
//! with `shutting_down`.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use litebroker_protocol::{ErrorInfo, Response, WriteOptions};

use crate::config::Config;
use crate::job::{Job, JobKind, JobLine, JobState, Reply, Tagged};
use crate::shared::{ClientEntry, Shared};
use crate::texts;
use crate::writer::{WriterGone, WriterHandle};

/// The timeout a request states, or the default for one that states none (0).
pub(super) fn timeout_of(ms: u32, config: &Config) -> Duration {
    if ms == 0 {
        config.default_timeout
    } else {
        Duration::from_millis(u64::from(ms))
    }
}

/// The answer to a request cancelled while queued: who holds the writer.
pub(super) fn timed_out(timeout: Duration, shared: &Shared) -> Response {
    Response::Error(texts::timed_out(timeout, &shared.describe_contention()))
}

/// A connection's way to the writer: its jobs, one at a time, and their answers.
pub(super) struct Jobs {
    line: JobLine,
    replies: Receiver<Tagged>,
    writer: Arc<WriterHandle>,
    shared: Arc<Shared>,
}

impl Jobs {
    /// Jobs made by `line`, whose replies arrive on `replies`.
    pub(super) fn new(
        line: JobLine,
        replies: Receiver<Tagged>,
        writer: Arc<WriterHandle>,
        shared: Arc<Shared>,
    ) -> Jobs {
        Jobs { line, replies, writer, shared }
    }

    /// The broker's shared state.
    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The connection's next job, queued; its caller waits until `deadline`.
    pub(super) fn next(
        &mut self,
        kind: JobKind,
        opts: WriteOptions,
        client: &Arc<ClientEntry>,
        deadline: Instant,
    ) -> Job {
        self.line.next(kind, opts, client, deadline)
    }

    /// Queues a one-shot write, serving the queue on this thread when the writer is
    /// free (see `WriterHandle::send_and_serve`).
    ///
    /// # Errors
    /// [`WriterGone`] once the writer thread has exited.
    pub(super) fn start_write(&self, job: Job) -> Result<(), WriterGone> {
        self.writer.send_and_serve(job)
    }

    /// Queues a job for the writer thread (disconnects, sessions, admin jobs).
    ///
    /// # Errors
    /// [`WriterGone`] once the writer thread has exited.
    pub(super) fn send(&self, job: Job) -> Result<(), WriterGone> {
        self.writer.send(job)
    }

    /// Cancels job `seq` if the writer has not taken it yet.
    pub(super) fn cancel(&self, seq: u64) -> bool {
        self.line.cancel(seq)
    }

    /// The reply of the job in flight, if it is there.
    pub(super) fn try_reply(&self) -> Option<Reply> {
        self.try_tagged().map(|(_, r)| r)
    }

    /// The next reply of the jobs in flight, with its job's sequence number, if
    /// one is there.
    pub(super) fn try_tagged(&self) -> Option<Tagged> {
        match self.replies.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => unreachable!("the connection's job line holds a sender"),
        }
    }

    /// The reply of the job in flight, waiting for it until `deadline` (at least 1
    /// ms, at most 1 s); None when it did not come.
    pub(super) fn wait_reply(&self, deadline: Instant) -> Option<Reply> {
        self.wait_tagged(deadline).map(|(_, r)| r)
    }

    /// The next reply of the jobs in flight, with its job's sequence number,
    /// waiting for it as [`Jobs::wait_reply`] does.
    pub(super) fn wait_tagged(&self, deadline: Instant) -> Option<Tagged> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.replies.recv_timeout(left.clamp(Duration::from_millis(1), Duration::from_secs(1))) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => unreachable!("the connection's job line holds a sender"),
        }
    }

    /// Hands a job to the writer and waits for its answer within `timeout` (see
    /// the module's doc).
    pub(super) fn submit(
        &mut self,
        client: &Arc<ClientEntry>,
        kind: JobKind,
        opts: WriteOptions,
        timeout: Duration,
    ) -> Response {
        match self.hand_over(client, kind, opts, timeout) {
            Ok(sent) => self.answer_of(sent),
            Err(refused) => Response::Error(refused),
        }
    }

    /// Hands a job to the writer without waiting for it: its answer is then
    /// awaited with [`Jobs::answer_of`] before the connection's next job.
    ///
    /// # Errors
    /// `shutting_down` when the job could not be queued.
    pub(super) fn hand_over(
        &mut self,
        client: &Arc<ClientEntry>,
        kind: JobKind,
        opts: WriteOptions,
        timeout: Duration,
    ) -> Result<Sent, ErrorInfo> {
        if self.shared.is_shutting_down() {
            return Err(texts::shutting_down());
        }
        let deadline = Instant::now() + timeout;
        let job = self.line.next(kind, opts, client, deadline);
        let seq = job.seq;
        let queued = if matches!(job.kind, JobKind::Write(_)) {
            self.writer.send_and_serve(job)
        } else {
            self.writer.send(job)
        };
        if queued.is_err() {
            return Err(texts::shutting_down());
        }
        Ok(Sent { seq, deadline, timeout })
    }

    /// Queues a pipelined one-shot write for the writer thread without waiting
    /// for it and without serving the queue here: this thread goes back to
    /// reading the client's next requests, and the writer commits what the
    /// connection queued meanwhile together. Gives the job's sequence number,
    /// state and deadline.
    ///
    /// # Errors
    /// `shutting_down` when the job could not be queued.
    pub(super) fn queue_pipelined(
        &mut self,
        client: &Arc<ClientEntry>,
        kind: JobKind,
        opts: WriteOptions,
        timeout: Duration,
    ) -> Result<(u64, JobState, Instant), ErrorInfo> {
        if self.shared.is_shutting_down() {
            return Err(texts::shutting_down());
        }
        let deadline = Instant::now() + timeout;
        let job = self.line.next(kind, opts, client, deadline);
        let (seq, state) = (job.seq, job.state.clone());
        self.writer.send(job).map_err(|_| texts::shutting_down())?;
        Ok((seq, state, deadline))
    }

    /// The newest job's state (the armed direct write's, when it joins a pipeline).
    pub(super) fn newest(&self) -> JobState {
        self.line.newest()
    }

    /// Waits for the answer of a job handed over, until its deadline (see the
    /// module's doc).
    pub(super) fn answer_of(&mut self, sent: Sent) -> Response {
        let Sent { seq, deadline, timeout } = sent;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left.clamp(Duration::from_millis(1), Duration::from_secs(1))) {
                Ok((_, Reply::Response(resp))) => return resp,
                Ok((_, other)) => return Response::Error(texts::unexpected_reply(&other)),
                Err(RecvTimeoutError::Timeout) => {
                    if Instant::now() >= deadline && self.line.cancel(seq) {
                        return timed_out(timeout, &self.shared);
                    }
                    if !self.shared.writer_alive.load(Ordering::SeqCst) {
                        return Response::Error(texts::shutting_down());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Response::Error(texts::writer_gone()),
            }
        }
    }
}

/// A job handed to the writer whose answer is still to be awaited.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    seq: u64,
    deadline: Instant,
    timeout: Duration,
}
