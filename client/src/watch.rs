//! The change feed from the app's side: [`Db::watch`](crate::Db::watch) and
//! [`Db::watch_all`](crate::Db::watch_all) return a [`Watch`], a blocking
//! iterator of [`ChangeEvent`]s on a broker connection of its own.
//!
//! - **Committed only, in commit order.** Each event is one committed
//!   transaction that touched a watched table: its cursor, commit time, and per
//!   table the rows inserted, updated and deleted with their rowids (up to the
//!   broker's cap, `rowids_capped` past it).
//! - **Reconnects by itself.** When the connection breaks or the broker
//!   restarts, the watch connects again (backing off while no broker runs) and
//!   resumes after the last cursor it returned: the broker replays what was
//!   missed from its ring, and events already returned are skipped by cursor, so
//!   each is returned once.
//! - **Resync.** When the broker cannot say what changed (the cursor is older
//!   than its ring, the broker restarted, another program wrote the file, a
//!   restore, this watcher fell behind) the event [`is_resync`](ChangeEvent::is_resync):
//!   reload what you show.
//!
//! ```no_run
//! # fn main() -> litebroker_client::Result<()> {
//! let db = litebroker_client::Db::open("data/app.db")?;
//! for event in db.watch(&["skus"]) {
//!     let event = event?;
//!     if event.is_resync() {
//!         // reload everything shown
//!     } else if let Some(skus) = event.table("skus") {
//!         println!("{} skus changed: {:?}", skus.inserted + skus.updated + skus.deleted, skus.rowids);
//!     }
//! }
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use litebroker_protocol::{ChangeEvent, Cursor, ErrorKind, Request, Response};

use crate::client::Client;
use crate::connect::RECONNECT;
use crate::error::{ClientError, Result};
use crate::options::ConnectOptions;

/// A subscription to the change feed (see the module's documentation).
#[derive(Debug)]
pub struct Watch {
    opts: ConnectOptions,
    tables: Vec<String>,
    client: Option<Client>,
    last: Option<Cursor>,
    started: Option<Cursor>,
    retry_at: Option<Instant>,
    /// Failed attempts since the last subscription (the backoff's step).
    failures: u32,
    subscriptions: u64,
}

impl Watch {
    /// A watch of `tables` (empty: all) on the broker `opts` reaches; nothing is
    /// connected before the first [`Watch::subscribe`] or [`Watch::next_timeout`].
    /// [`Db::watch`](crate::Db::watch) is the usual way in.
    pub fn new(opts: ConnectOptions, tables: Vec<String>) -> Watch {
        Watch {
            opts,
            tables,
            client: None,
            last: None,
            started: None,
            retry_at: None,
            failures: 0,
            subscriptions: 0,
        }
    }

    /// Resumes after `cursor` (e.g. saved by a previous run) instead of from now.
    pub fn since(mut self, cursor: Cursor) -> Watch {
        self.last = Some(cursor);
        self
    }

    /// The watched tables (empty: all).
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    /// The cursor of the last event returned (resume from it with [`Watch::since`]).
    pub fn cursor(&self) -> Option<Cursor> {
        self.last
    }

    /// Where the current subscription started (the broker's answer to it).
    pub fn started_at(&self) -> Option<Cursor> {
        self.started
    }

    /// How many times the watch subscribed (1 + reconnections).
    pub fn subscriptions(&self) -> u64 {
        self.subscriptions
    }

    /// Connects and subscribes now unless subscribed already; returns where the
    /// stream starts. [`Watch::next_timeout`] does this by itself.
    ///
    /// # Errors
    /// As [`Client::connect_with`]; the broker's refusal (a broker too old for
    /// the change feed answers with a protocol error).
    pub fn subscribe(&mut self) -> Result<Cursor> {
        if let (Some(_), Some(c)) = (&self.client, self.started) {
            return Ok(c);
        }
        let mut client = Client::connect_with(&self.opts)?;
        let req = Request::Watch { tables: self.tables.clone(), since: self.last };
        let wait = client.timeout();
        match client.round_trip(&req, wait)? {
            Response::Watching { cursor } => {
                self.client = Some(client);
                self.started = Some(cursor);
                self.subscriptions += 1;
                self.failures = 0;
                self.retry_at = None;
                if self.last.is_none_or(|l| l.epoch == cursor.epoch && l.seq <= cursor.seq) {
                    // A fresh watch, or one that resumes: events after `cursor` follow.
                    self.last = self.last.or(Some(cursor));
                }
                Ok(cursor)
            }
            other => Err(ClientError::Unexpected(format!("{other:?} to a watch request"))),
        }
    }

    /// Waits up to `wait` for the next event: `Ok(None)` when none came. Connects
    /// again by itself when the connection breaks or no broker runs yet.
    ///
    /// # Errors
    /// What reconnecting cannot cure: the broker refused the watch, a
    /// connection refused for trust reasons, an answer this client cannot read.
    pub fn next_timeout(&mut self, wait: Duration) -> Result<Option<ChangeEvent>> {
        let deadline = Instant::now() + wait;
        loop {
            if self.client.is_none() {
                if let Some(at) = self.retry_at {
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at.min(deadline) - now);
                        if at > deadline {
                            return Ok(None);
                        }
                    }
                }
                if let Err(e) = self.subscribe() {
                    if !transient(&e) {
                        return Err(e);
                    }
                    self.retry_at = Some(Instant::now() + RECONNECT.delay(self.failures));
                    self.failures = self.failures.saturating_add(1);
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                    continue;
                }
            }
            let Some(client) = self.client.as_mut() else { continue };
            let left = deadline.saturating_duration_since(Instant::now());
            match client.next_response(left) {
                Ok(None) => return Ok(None),
                Ok(Some(Response::Change(event))) => {
                    let seen =
                        self.last.is_some_and(|l| l.epoch == event.cursor.epoch && event.cursor.seq <= l.seq);
                    if seen && !event.is_resync() {
                        continue;
                    }
                    self.last = Some(event.cursor);
                    return Ok(Some(event));
                }
                Ok(Some(Response::Error(info))) => {
                    self.client = None;
                    return Err(ClientError::Broker(info));
                }
                Ok(Some(other)) => {
                    self.client = None;
                    return Err(ClientError::Unexpected(format!("{other:?} in a watch stream")));
                }
                Err(_) => {
                    // The connection broke (or the broker stopped): resume after
                    // the last cursor on a new one, at once the first time.
                    self.client = None;
                    self.started = None;
                    self.retry_at = None;
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

/// Failures a later attempt may not meet: no broker yet, a broken connection,
/// a broker stopping.
fn transient(e: &ClientError) -> bool {
    matches!(e, ClientError::NotRunning { .. } | ClientError::ConnectionLost { .. } | ClientError::Io(_))
        || matches!(e.kind(), Some(ErrorKind::ShuttingDown))
}

impl Iterator for Watch {
    type Item = Result<ChangeEvent>;

    /// Blocks until the next event (reconnecting as needed); `Some(Err)` for a
    /// failure reconnecting cannot cure.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_timeout(Duration::from_secs(3600)) {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
