//! The bounded FIFO of jobs for the writer.
//!
//! Unlike a channel, any thread holding the writer can take jobs from it: a
//! connection thread that finds the writer free serves the queue itself instead
//! of handing its request to the writer thread and back (two thread wake-ups per
//! request). The writer thread is woken only when a job needs it, or once after
//! connection threads committed while it slept without a deadline (it then
//! schedules the idle checkpoint).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::job::{Job, JobKind};
use crate::shared::lock;

#[derive(Debug, Default)]
struct State {
    jobs: VecDeque<Job>,
    /// The writer thread sleeps in [`JobQueue::wait`].
    writer_waiting: bool,
    /// ... and without a deadline.
    writer_untimed: bool,
    /// A connection thread committed since the writer thread last looked.
    served: bool,
    /// Senders blocked because the queue is full.
    senders_waiting: usize,
    /// The writer is shutting down: no job is taken any more.
    closed: bool,
    /// Whoever holds the writer waits (see [`JobQueue::wait_for_jobs`]) until this
    /// many jobs are queued; 0: nobody waits.
    group_want: usize,
}

/// Jobs waiting for the writer, oldest first.
#[derive(Debug)]
pub struct JobQueue {
    state: Mutex<State>,
    /// The writer thread waits here for work.
    work: Condvar,
    /// Senders wait here for room.
    room: Condvar,
    /// The holder of the writer waits here for a group's writers to arrive.
    arrivals: Condvar,
    capacity: usize,
}

impl JobQueue {
    /// A queue holding at most `capacity` jobs; senders block when it is full.
    pub fn new(capacity: usize) -> JobQueue {
        JobQueue {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            room: Condvar::new(),
            arrivals: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Appends a job; `wake` also wakes the writer thread if it sleeps. Returns
    /// how many jobs were queued before it. `depth`, when given, is incremented
    /// under the queue's lock, so whoever sees it grow knows the job holds its
    /// place in the queue (and the writer, which decrements it once the job is
    /// done, can only do so afterwards).
    ///
    /// # Errors
    /// Gives the job back once the queue is closed (shutdown): nobody would run it.
    pub fn push(&self, job: Job, wake: bool, depth: Option<&AtomicUsize>) -> Result<usize, Box<Job>> {
        let mut st = lock(&self.state);
        while st.jobs.len() >= self.capacity && !st.closed {
            st.senders_waiting += 1;
            st = self.room.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
            st.senders_waiting -= 1;
        }
        if st.closed {
            return Err(Box::new(job));
        }
        let ahead = st.jobs.len();
        let write = matches!(job.kind, JobKind::Write(_));
        st.jobs.push_back(job);
        if let Some(d) = depth {
            d.fetch_add(1, Ordering::Relaxed);
        }
        if wake {
            self.wake_writer(&mut st);
        }
        // One wake-up for a group's wait, when its writers are all here (or when a
        // job that would end the group anyway came).
        if st.group_want > 0 && (st.jobs.len() >= st.group_want || !write) {
            self.arrived(&mut st);
        }
        Ok(ahead)
    }

    /// Queues the stop job behind everything queued, whatever the queue's
    /// capacity or state: stopping must never wait.
    pub fn push_stop(&self, job: Job) {
        let mut st = lock(&self.state);
        st.jobs.push_back(job);
        self.wake_writer(&mut st);
        self.arrived(&mut st);
    }

    /// Refuses every later job (shutdown); the jobs already queued stay, for the
    /// writer to finish or refuse. Senders blocked on a full queue are released.
    pub fn close(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        self.room.notify_all();
        self.arrived(&mut st);
    }

    fn arrived(&self, st: &mut State) {
        if st.group_want > 0 {
            st.group_want = 0;
            self.arrivals.notify_one();
        }
    }

    /// Whoever holds the writer waits until `want` jobs are queued, a job that is
    /// not a one-shot write is first in the queue (it would end the group), or
    /// `until` passes. Sleeps, so the clients it waits for get the CPU. Returns
    /// whether the jobs it waited for came (false: it waited until `until`).
    pub fn wait_for_jobs(&self, want: usize, until: Instant) -> bool {
        let mut st = lock(&self.state);
        loop {
            let ended = st.closed || st.jobs.front().is_some_and(|j| !matches!(j.kind, JobKind::Write(_)));
            if st.jobs.len() >= want || ended {
                st.group_want = 0;
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                st.group_want = 0;
                return false;
            }
            st.group_want = want;
            st = self.arrivals.wait_timeout(st, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
    }

    fn wake_writer(&self, st: &mut State) {
        if st.writer_waiting {
            st.writer_waiting = false;
            self.work.notify_one();
        }
    }

    fn taken(&self, st: &State) {
        if st.senders_waiting > 0 {
            self.room.notify_one();
        }
    }

    /// Takes the oldest job.
    pub fn try_recv(&self) -> Option<Job> {
        let mut st = lock(&self.state);
        let job = st.jobs.pop_front();
        self.taken(&st);
        job
    }

    /// Takes the oldest job if it is a one-shot write (what a group may hold).
    pub fn try_recv_write(&self) -> Option<Job> {
        let mut st = lock(&self.state);
        if !matches!(st.jobs.front(), Some(Job { kind: JobKind::Write(_), .. })) {
            return None;
        }
        let job = st.jobs.pop_front();
        self.taken(&st);
        job
    }

    /// Called by a connection thread after it served the queue: wakes the writer
    /// thread if jobs still wait, or if `committed` and the writer thread sleeps
    /// without a deadline (so that it schedules the idle checkpoint).
    pub fn kick(&self, committed: bool) {
        let mut st = lock(&self.state);
        if committed {
            st.served = true;
        }
        if !st.jobs.is_empty() || (committed && st.writer_untimed) {
            self.wake_writer(&mut st);
        }
    }

    /// The writer thread sleeps until jobs wait for it or `timeout` passes.
    /// `untimed`: nothing is due before `timeout` (no idle checkpoint is
    /// scheduled); it then does not sleep after connection threads committed, but
    /// returns at once to compute the idle checkpoint's deadline.
    pub fn wait(&self, timeout: Duration, untimed: bool) {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.state);
        let served = std::mem::take(&mut st.served);
        if !st.jobs.is_empty() || (served && untimed) {
            return;
        }
        st.writer_waiting = true;
        st.writer_untimed = untimed;
        while st.writer_waiting {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self.work.wait_timeout(st, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        st.writer_waiting = false;
        st.writer_untimed = false;
    }
}
