//! The change feed's messages: cursors, the events a watch stream carries,
//! resync reasons and the feed's figures. Part of the wire contract: a type's
//! field and variant order is its encoding (append only).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A position in the broker's change feed: the broker's epoch (a new one at each
/// start) and the sequence number of an event within it. Text form
/// `<epoch>-<seq>` (both decimal), see [`Cursor::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    /// Identifies one run of the broker (its start time in microseconds since the
    /// Unix epoch): cursors of another epoch cannot be resumed from.
    pub epoch: u64,
    /// The event's number within the epoch, from 1; 0 is "before any event".
    pub seq: u64,
}

impl Cursor {
    /// Parses the text form `<epoch>-<seq>`.
    ///
    /// # Errors
    /// A message saying what is wrong with the text.
    pub fn parse(text: &str) -> Result<Cursor, String> {
        let bad =
            || format!("'{text}' is not a cursor (expected <epoch>-<seq>, as printed by `litebroker watch`)");
        let (e, s) = text.trim().split_once('-').ok_or_else(bad)?;
        Ok(Cursor { epoch: e.parse().map_err(|_| bad())?, seq: s.parse().map_err(|_| bad())? })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cursor::parse(s)
    }
}

/// What one committed transaction did to one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableChange {
    /// The table's name.
    pub table: String,
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows deleted.
    pub deleted: u64,
    /// The rowids of the rows inserted, updated or deleted, in first-touched
    /// order, each once, up to the broker's cap per table and transaction.
    pub rowids: Vec<i64>,
    /// True when `rowids` is not the whole list: the cap was reached, or the
    /// table has no rowids (`WITHOUT ROWID`).
    pub rowids_capped: bool,
}

/// Why a watcher must reload what it shows instead of applying events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ResyncReason {
    /// The `since` cursor is older than the broker's ring of recent events.
    CursorTooOld,
    /// The `since` cursor is from another run of the broker (it restarted).
    OtherEpoch,
    /// Another program wrote the database file (seen through `PRAGMA data_version`).
    ExternalWrite,
    /// The database was restored from a backup.
    Restore,
    /// This subscriber did not keep up: its backlog was dropped.
    FellBehind,
}

impl ResyncReason {
    /// Stable lower-case name, used in JSON output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncReason::CursorTooOld => "cursor_too_old",
            ResyncReason::OtherEpoch => "other_epoch",
            ResyncReason::ExternalWrite => "external_write",
            ResyncReason::Restore => "restore",
            ResyncReason::FellBehind => "fell_behind",
        }
    }
}

impl fmt::Display for ResyncReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event of the change feed: a committed transaction, or a resync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The event's position: resume after it with [`Request::Watch`](crate::Request::Watch)'s `since`.
    pub cursor: Cursor,
    /// When the transaction's COMMIT returned (or the resync was decided),
    /// microseconds since the Unix epoch.
    pub committed_unix_us: u64,
    /// The watched tables the transaction changed (empty for a resync).
    pub tables: Vec<TableChange>,
    /// Set for a resync: what the watcher knows may be stale; reload.
    pub resync: Option<ResyncReason>,
}

impl ChangeEvent {
    /// Whether this event is a resync (reload what you show).
    pub fn is_resync(&self) -> bool {
        self.resync.is_some()
    }

    /// The change to `table`, if the transaction changed it.
    pub fn table(&self, table: &str) -> Option<&TableChange> {
        self.tables.iter().find(|t| t.table == table)
    }
}

/// The change feed's figures, answered to [`Request::FeedStats`](crate::Request::FeedStats).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedFigures {
    /// The broker's epoch (see [`Cursor`]).
    pub epoch: u64,
    /// The newest event's cursor (seq 0: none yet).
    pub head: Cursor,
    /// Subscribers connected now.
    pub subscribers: u32,
    /// Events in the ring now.
    pub ring_events: u64,
    /// Their estimated size in bytes.
    pub ring_bytes: u64,
    /// The ring's bounds (`--feed-ring-events`, `--feed-ring-bytes`).
    pub ring_max_events: u64,
    /// See `ring_max_events`.
    pub ring_max_bytes: u64,
    /// The oldest event still in the ring (a `since` older than it gets a resync).
    pub oldest: Option<Cursor>,
    /// Events published since start (commits and resyncs).
    pub published: u64,
    /// Resyncs sent to subscribers since start (all reasons).
    pub resyncs: u64,
    /// Subscribers whose backlog was dropped because they fell behind.
    pub dropped_backlogs: u64,
}
