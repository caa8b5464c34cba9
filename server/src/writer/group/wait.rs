//! The group wait: before a group's transaction begins, whoever holds the writer
//! may wait a little for the writers known to be coming, so that they join this
//! group instead of forming the next one.
//!
//! Why: a client with one write in flight (it sends the next once answered)
//! comes back while the next group's COMMIT runs. With `synchronous = FULL` that
//! COMMIT is an fsync, so such clients split into two cohorts taking turns, each
//! group holding about half of them and paying an fsync of its own. Waiting for
//! the cohort just answered merges them: one fsync per round for all.
//!
//! - **Who is coming**: the clients answered by a group within the last
//!   [`RECENT`] plus two COMMITs, less those already in the group. A lone client
//!   has nobody to wait for: it is never delayed. A client waited for in vain is
//!   forgotten until it writes again, so a client that went quiet costs at most
//!   one wait.
//! - **How long**: at most `--group-wait-us`, at most half the recent COMMIT time
//!   (smoothed; waiting longer than the fsync it may save loses more than it
//!   gains), never past the earliest deadline in the group; not at all when that
//!   comes to less than [`MIN_WAIT`].
//! - **Until** every writer expected has queued, a job that would end the group
//!   queued, or the bound passed (`JobQueue::wait_for_jobs`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::job::Job;
use crate::metrics::Metrics;
use crate::queue::JobQueue;

/// How long after its answer a client still counts as coming back, besides two
/// COMMITs: a client that writes in a loop is back within a round trip.
const RECENT: Duration = Duration::from_millis(1);
/// The shortest wait worth a sleep and a wake-up.
const MIN_WAIT: Duration = Duration::from_micros(10);

/// What the group wait knows between groups.
#[derive(Debug, Default)]
pub(super) struct GroupWait {
    /// Clients answered by a group, and when.
    recent: HashMap<u64, Instant>,
    /// The COMMIT's duration, smoothed over the last groups.
    commit: Duration,
    /// The group's clients, sorted (scratch).
    members: Vec<u64>,
}

impl GroupWait {
    /// Before `group`'s transaction begins, with room for `room` more requests:
    /// waits for the writers known to be coming (see the module's doc), at most
    /// `max`. Returns when it began waiting, if it did; the caller then takes what
    /// queued. Reads no clock when the wait is off or nobody else wrote lately.
    pub(super) fn wait(
        &mut self,
        max: Duration,
        group: &[Job],
        room: usize,
        queue: &JobQueue,
    ) -> Option<Instant> {
        if max.is_zero() || room == 0 || self.recent.is_empty() {
            return None;
        }
        let now = Instant::now();
        let window = RECENT + self.commit * 2;
        self.recent.retain(|_, at| now.saturating_duration_since(*at) <= window);
        self.members.clear();
        self.members.extend(group.iter().map(Job::client_id));
        self.members.sort_unstable();
        let members = &self.members;
        let coming = self.recent.keys().filter(|id| members.binary_search(id).is_err()).count();
        let want = coming.min(room);
        if want == 0 {
            return None;
        }
        let earliest = group.iter().map(|j| j.deadline).min().unwrap_or(now);
        let until = (now + max.min(self.commit / 2)).min(earliest);
        if until.saturating_duration_since(now) < MIN_WAIT {
            return None;
        }
        // `want` counts jobs queued behind the group; none is when the wait begins
        // (the group took them all), or the group would not have stopped.
        queue.wait_for_jobs(want, until);
        Some(now)
    }

    /// After a wait, once the group is gathered: counts it, and forgets the
    /// clients that were expected and did not come (see the module's doc).
    pub(super) fn waited(&mut self, metrics: &Metrics, since: Instant, joined: usize, group: &[Job]) {
        metrics.group_wait.observe_duration(since.elapsed());
        metrics.group_wait_joined.fetch_add(joined as u64, Ordering::Relaxed);
        self.members.clear();
        self.members.extend(group.iter().map(Job::client_id));
        self.members.sort_unstable();
        let members = &self.members;
        let before = self.recent.len();
        self.recent.retain(|id, _| members.binary_search(id).is_ok());
        if self.recent.len() < before {
            metrics.group_wait_missed.fetch_add((before - self.recent.len()) as u64, Ordering::Relaxed);
        }
    }

    /// A group committed in `commit` and its clients are answered `at`: they are
    /// the writers the next groups may wait for.
    pub(super) fn committed(&mut self, enabled: bool, group: &[Job], commit: Duration, at: Instant) {
        // Smoothed: an eighth of each new COMMIT.
        self.commit = if self.commit.is_zero() { commit } else { (self.commit * 7 + commit) / 8 };
        if enabled {
            for id in group.iter().map(Job::client_id).filter(|&id| id != 0) {
                self.recent.insert(id, at);
            }
        }
    }
}
