//! The change feed: every committed transaction, published once after its COMMIT
//! succeeded, pushed to the connections that watch it.
//!
//! - **What a transaction changed** is recorded at the writer ([`capture`]) from
//!   SQLite's preupdate hook, per request, and merged into the transaction's only
//!   when the request's savepoint is released.
//! - **Publishing** ([`Feed::publish`]) is O(event) under one short lock: the
//!   event gets the next sequence number, goes into the ring of recent events
//!   (bounded by `--feed-ring-events` and `--feed-ring-bytes`), and a reference
//!   to it into the bounded buffer of each subscriber that watches one of its
//!   tables. The writer never waits for a subscriber and never encodes anything
//!   for one: each subscriber's connection thread filters, encodes and sends.
//! - **A subscriber that falls behind** (its buffer holds
//!   `--watch-buffer-events`) has its backlog dropped and gets one resync
//!   (`fell_behind`) instead; one that stops reading is cut off by the I/O
//!   timeout of its connection.
//! - **Resyncs** are events too: a `since` cursor older than the ring or of
//!   another epoch, a write by another program (seen through `PRAGMA
//!   data_version`), a restore.

pub(crate) mod capture;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use litebroker_protocol::{ChangeEvent, Cursor, FeedFigures, ResyncReason, TableChange};

use crate::config::Config;
use crate::lock::lock;

/// Now, in microseconds since the Unix epoch.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// One published event, shared by the ring and the subscribers' buffers.
#[derive(Debug)]
pub struct Event {
    /// Sequence number within the epoch (from 1).
    pub seq: u64,
    /// Commit time, µs since the Unix epoch.
    pub at_us: u64,
    /// What the transaction changed (empty for a resync).
    pub tables: Vec<TableChange>,
    /// Set for a resync.
    pub resync: Option<ResyncReason>,
    /// Estimated size, for the ring's byte bound.
    bytes: usize,
}

impl Event {
    fn touches(&self, filter: &[String]) -> bool {
        self.resync.is_some()
            || filter.is_empty()
            || self.tables.iter().any(|t| filter.iter().any(|f| f.eq_ignore_ascii_case(&t.table)))
    }
}

/// The feed's bounds.
#[derive(Debug, Clone, Copy)]
pub struct FeedLimits {
    /// Most events in the ring.
    pub ring_events: usize,
    /// Most estimated bytes in the ring.
    pub ring_bytes: usize,
    /// Most events waiting in one subscriber's buffer.
    pub subscriber_events: usize,
}

impl FeedLimits {
    fn of(cfg: &Config) -> FeedLimits {
        FeedLimits {
            ring_events: cfg.feed_ring_events.max(1),
            ring_bytes: cfg.feed_ring_bytes.max(1),
            subscriber_events: cfg.watch_buffer_events.max(1),
        }
    }
}

struct Inner {
    head: u64,
    ring: VecDeque<Arc<Event>>,
    ring_bytes: usize,
    subscribers: Vec<Arc<Subscriber>>,
    next_id: u64,
}

/// The broker's change feed.
pub struct Feed {
    epoch: u64,
    limits: FeedLimits,
    inner: Mutex<Inner>,
    published: AtomicU64,
    resyncs: AtomicU64,
    dropped: AtomicU64,
}

/// What a subscriber's connection thread takes at once.
#[derive(Default)]
pub struct Batch {
    /// A resync to send first: (its sequence number, why).
    pub resync: Option<(u64, ResyncReason)>,
    /// Then these events, in order.
    pub events: Vec<Arc<Event>>,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<Arc<Event>>,
    resync: Option<(u64, ResyncReason)>,
}

/// One watching connection.
pub struct Subscriber {
    id: u64,
    filter: Vec<String>,
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Subscriber {
    /// Waits up to `wait` for events and takes them all.
    pub fn take(&self, wait: Duration) -> Batch {
        let mut q = lock(&self.queue);
        if q.events.is_empty() && q.resync.is_none() {
            q = self.ready.wait_timeout(q, wait).map_or_else(|p| p.into_inner().0, |r| r.0);
        }
        Batch { resync: q.resync.take(), events: q.events.drain(..).collect() }
    }

    /// The watched tables (empty: all).
    pub fn filter(&self) -> &[String] {
        &self.filter
    }
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("epoch", &self.epoch)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// A new feed: a new epoch (the start time in microseconds), nothing published.
    pub fn new(cfg: &Config) -> Feed {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Feed {
            epoch,
            limits: FeedLimits::of(cfg),
            inner: Mutex::new(Inner {
                head: 0,
                ring: VecDeque::new(),
                ring_bytes: 0,
                subscribers: Vec::new(),
                next_id: 1,
            }),
            published: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// The broker's epoch.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Subscribers connected now.
    pub fn subscribers(&self) -> usize {
        lock(&self.inner).subscribers.len()
    }

    /// Publishes one committed transaction's changes (nothing when empty);
    /// `at_us` is when its COMMIT returned.
    pub fn publish(&self, at_us: u64, tables: Vec<TableChange>) {
        if !tables.is_empty() {
            self.push(at_us, tables, None);
        }
    }

    /// Publishes a resync for every subscriber (another program wrote the file, a
    /// restore).
    pub fn publish_resync(&self, reason: ResyncReason) {
        self.push(unix_us(), Vec::new(), Some(reason));
    }

    fn push(&self, at_us: u64, tables: Vec<TableChange>, resync: Option<ResyncReason>) {
        let bytes = 64 + tables.iter().map(|t| 64 + t.table.len() + 8 * t.rowids.len()).sum::<usize>();
        let mut inner = lock(&self.inner);
        inner.head += 1;
        let event = Arc::new(Event { seq: inner.head, at_us, tables, resync, bytes });
        inner.ring_bytes += bytes;
        inner.ring.push_back(event.clone());
        while inner.ring.len() > 1
            && (inner.ring.len() > self.limits.ring_events || inner.ring_bytes > self.limits.ring_bytes)
        {
            if let Some(old) = inner.ring.pop_front() {
                inner.ring_bytes -= old.bytes;
            }
        }
        self.published.fetch_add(1, Ordering::Relaxed);
        for sub in &inner.subscribers {
            if !event.touches(&sub.filter) {
                continue;
            }
            let mut q = lock(&sub.queue);
            if q.events.len() >= self.limits.subscriber_events {
                // Behind: the backlog goes, one resync replaces it.
                q.events.clear();
                q.resync = Some((event.seq, ResyncReason::FellBehind));
                self.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                q.events.push_back(event.clone());
            }
            drop(q);
            sub.ready.notify_one();
        }
    }

    /// Subscribes to `tables` (empty: all), resuming after `since` when the ring
    /// still holds what came after it. Returns the subscriber and the cursor the
    /// stream starts from; a resync is queued first when `since` cannot be
    /// honoured.
    pub fn subscribe(&self, tables: Vec<String>, since: Option<Cursor>) -> (Arc<Subscriber>, Cursor) {
        let mut inner = lock(&self.inner);
        let head = inner.head;
        let mut q = Queue::default();
        let start = match since {
            None => head,
            Some(c) if c.epoch != self.epoch || c.seq > head => {
                q.resync = Some((head, ResyncReason::OtherEpoch));
                head
            }
            Some(c) => {
                let oldest = inner.ring.front().map_or(head + 1, |e| e.seq);
                if c.seq + 1 < oldest {
                    q.resync = Some((head, ResyncReason::CursorTooOld));
                    head
                } else {
                    q.events
                        .extend(inner.ring.iter().filter(|e| e.seq > c.seq && e.touches(&tables)).cloned());
                    c.seq
                }
            }
        };
        let id = inner.next_id;
        inner.next_id += 1;
        let sub = Arc::new(Subscriber { id, filter: tables, queue: Mutex::new(q), ready: Condvar::new() });
        inner.subscribers.push(sub.clone());
        (sub, Cursor { epoch: self.epoch, seq: start })
    }

    /// Forgets a subscriber (its connection ended).
    pub fn unsubscribe(&self, sub: &Subscriber) {
        lock(&self.inner).subscribers.retain(|s| s.id != sub.id);
    }

    /// A resync was sent to a subscriber.
    pub fn count_resync(&self) {
        self.resyncs.fetch_add(1, Ordering::Relaxed);
    }

    /// The event as one subscriber sees it: only the tables it watches.
    pub fn event_for(&self, event: &Event, filter: &[String]) -> ChangeEvent {
        let tables = event
            .tables
            .iter()
            .filter(|t| filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(&t.table)))
            .cloned()
            .collect();
        ChangeEvent {
            cursor: Cursor { epoch: self.epoch, seq: event.seq },
            committed_unix_us: event.at_us,
            tables,
            resync: event.resync,
        }
    }

    /// A resync event at `seq`.
    pub fn resync_event(&self, seq: u64, reason: ResyncReason) -> ChangeEvent {
        ChangeEvent {
            cursor: Cursor { epoch: self.epoch, seq },
            committed_unix_us: unix_us(),
            tables: Vec::new(),
            resync: Some(reason),
        }
    }

    /// The feed's figures (`status`, `stats`).
    pub fn figures(&self) -> FeedFigures {
        let inner = lock(&self.inner);
        let cursor = |seq| Cursor { epoch: self.epoch, seq };
        FeedFigures {
            epoch: self.epoch,
            head: cursor(inner.head),
            subscribers: inner.subscribers.len() as u32,
            ring_events: inner.ring.len() as u64,
            ring_bytes: inner.ring_bytes as u64,
            ring_max_events: self.limits.ring_events as u64,
            ring_max_bytes: self.limits.ring_bytes as u64,
            oldest: inner.ring.front().map(|e| cursor(e.seq)),
            published: self.published.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            dropped_backlogs: self.dropped.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(ring: usize, buffer: usize) -> Feed {
        let mut c = Config::new("x.db");
        c.feed_ring_events = ring;
        c.watch_buffer_events = buffer;
        Feed::new(&c)
    }

    fn change(table: &str) -> Vec<TableChange> {
        vec![TableChange {
            table: table.into(),
            inserted: 1,
            updated: 0,
            deleted: 0,
            rowids: vec![1],
            rowids_capped: false,
        }]
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        b.events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn since_replays_exactly_what_came_after_it_filtered() {
        let f = feed(100, 100);
        for t in ["a", "b", "a", "a"] {
            f.publish(1, change(t));
        }
        let (sub, start) = f.subscribe(vec!["A".into()], Some(Cursor { epoch: f.epoch(), seq: 1 }));
        assert_eq!(start.seq, 1);
        let b = sub.take(Duration::ZERO);
        assert!(b.resync.is_none());
        assert_eq!(seqs(&b), [3, 4]);
        f.publish(1, change("b"));
        f.publish(1, change("a"));
        assert_eq!(seqs(&sub.take(Duration::ZERO)), [6]);
    }

    #[test]
    fn old_cursor_or_other_epoch_gets_one_resync_at_the_head() {
        let f = feed(2, 100);
        for _ in 0..5 {
            f.publish(1, change("a"));
        }
        let (sub, start) = f.subscribe(vec![], Some(Cursor { epoch: f.epoch(), seq: 1 }));
        assert_eq!(start.seq, 5);
        assert_eq!(sub.take(Duration::ZERO).resync, Some((5, ResyncReason::CursorTooOld)));
        let (sub, _) = f.subscribe(vec![], Some(Cursor { epoch: f.epoch() + 1, seq: 5 }));
        assert_eq!(sub.take(Duration::ZERO).resync, Some((5, ResyncReason::OtherEpoch)));
        // The oldest event kept is 4: resuming after 3 loses nothing.
        let (sub, _) = f.subscribe(vec![], Some(Cursor { epoch: f.epoch(), seq: 3 }));
        let b = sub.take(Duration::ZERO);
        assert!(b.resync.is_none());
        assert_eq!(seqs(&b), [4, 5]);
    }

    #[test]
    fn a_subscriber_that_falls_behind_gets_its_backlog_dropped_and_one_resync() {
        let f = feed(100, 3);
        let (sub, _) = f.subscribe(vec![], None);
        for _ in 0..5 {
            f.publish(1, change("a"));
        }
        let b = sub.take(Duration::ZERO);
        assert_eq!(b.resync, Some((4, ResyncReason::FellBehind)));
        assert_eq!(seqs(&b), [5]);
        assert_eq!(f.figures().dropped_backlogs, 1);
        f.unsubscribe(&sub);
        assert_eq!(f.subscribers(), 0);
    }
}
