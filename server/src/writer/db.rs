//! The writer connection as the broker uses it: its own statements (transaction
//! control, the savepoint around each request of a group), the busy_timeout in
//! force, the statement deadline, the deferred foreign-key probe, the check that
//! the connection is still the broker's, and closing it.
//!
//! Every statement the broker runs itself names the reserved prefix
//! (`sql::text::RESERVED_PREFIX`): clients may not use savepoints of that name, and
//! no client text is served these cached, broker-authorized statements (see
//! `sql::text::mentions_reserved`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use litebroker_protocol::ErrorInfo;
use rusqlite::Connection;
use tracing::warn;

use super::open::{install_hooks, user_version, StatementDeadline};
use crate::feed::capture::{self, Capture};
use crate::guard;
use crate::shared::Shared;
use crate::sql::authorizer;
use crate::sql::exec::sql_error;
use crate::texts;

const BEGIN_SQL: &str = "BEGIN IMMEDIATE /* _litebroker */";
const BEGIN_DEFERRED_SQL: &str = "BEGIN /* _litebroker */";
const COMMIT_SQL: &str = "COMMIT /* _litebroker */";
const ROLLBACK_SQL: &str = "ROLLBACK /* _litebroker */";
const SAVEPOINT_SQL: &str = "SAVEPOINT _litebroker_req";
const RELEASE_SQL: &str = "RELEASE _litebroker_req";
const ROLLBACK_TO_SQL: &str = "ROLLBACK TO _litebroker_req";
const DEFER_FK_OFF_SQL: &str = "PRAGMA defer_foreign_keys = OFF /* _litebroker */";
const DATA_VERSION_SQL: &str = "PRAGMA data_version /* _litebroker */";
const WITHOUT_ROWID_SQL: &str =
    "SELECT wr FROM pragma_table_list /* _litebroker */ WHERE schema = 'main' AND name = ?1";

/// The writer connection and what the broker keeps with it.
pub(crate) struct WriterDb {
    conn: Connection,
    /// busy_timeout in force (set only when it changes).
    busy_timeout: Duration,
    deadline: StatementDeadline,
    /// Frames in the WAL after the last commit (from the WAL hook).
    wal_frames: Arc<AtomicU64>,
    /// What the running request and transaction changed (the preupdate hook's
    /// record, see `crate::feed::capture`). After `conn`: the hook is removed
    /// before this is dropped.
    capture: Arc<Mutex<Capture>>,
    /// `PRAGMA data_version` when last read: another value means another program
    /// committed to the file since.
    data_version: Option<i64>,
}

impl WriterDb {
    /// Takes the opened writer connection (see `open::open_writer`), whose
    /// busy_timeout is `busy_timeout`, and installs its hooks.
    pub(crate) fn new(mut conn: Connection, busy_timeout: Duration, rowids_cap: usize) -> WriterDb {
        let (wal_frames, deadline) = install_hooks(&mut conn);
        let capture = Capture::install(&conn, rowids_cap);
        WriterDb { conn, busy_timeout, deadline, wal_frames, capture, data_version: None }
    }

    /// Whether another program committed to the database since the last call
    /// (`PRAGMA data_version` changed; the broker's own commits do not change it).
    /// The first call only takes note.
    pub(super) fn written_by_others(&mut self) -> bool {
        let now = authorizer::internal(|| {
            self.conn
                .prepare_cached(DATA_VERSION_SQL)
                .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        });
        let Ok(now) = now else { return false };
        let before = self.data_version.replace(now);
        before.is_some_and(|b| b != now)
    }

    /// Forgets the last `data_version` (after a restore, which writes through
    /// this connection): the next read only takes note.
    pub(super) fn reset_data_version(&mut self) {
        self.data_version = None;
        self.written_by_others();
    }

    /// The changes of the transactions committed since the last call, oldest
    /// first, ready to publish.
    pub(super) fn take_committed(&self) -> Vec<(u64, Vec<litebroker_protocol::TableChange>)> {
        let mut out = Vec::new();
        capture::with(&self.capture, |c| {
            out = c.take_committed(|table| {
                authorizer::internal(|| {
                    self.conn
                        .prepare_cached(WITHOUT_ROWID_SQL)
                        .and_then(|mut s| s.query_row([table], |r| r.get::<_, bool>(0)))
                        .unwrap_or(false)
                })
            });
        });
        out
    }

    /// The connection.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The connection, for SQLite's backup API (a restore writes into it).
    pub(super) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Whether no transaction is open.
    pub(super) fn is_autocommit(&self) -> bool {
        self.conn.is_autocommit()
    }

    /// Sets busy_timeout: how long a statement waits for another process's lock.
    pub(super) fn set_busy_timeout(&mut self, wait: Duration) {
        if wait != self.busy_timeout {
            self.conn.busy_timeout(wait).ok();
            self.busy_timeout = wait;
        }
    }

    /// Sets (or clears) the deadline inside statements.
    pub(super) fn arm_deadline(&self, deadline: Option<Instant>) {
        self.deadline.arm(deadline);
    }

    /// Frames in the WAL after the last commit.
    pub(super) fn wal_frames(&self) -> u64 {
        self.wal_frames.load(Ordering::Relaxed)
    }

    /// Runs one of the broker's own statements (cached: each names the reserved
    /// prefix, so no client text is ever served these copies).
    pub(super) fn exec_internal(&self, sql: &str) -> rusqlite::Result<()> {
        authorizer::internal(|| self.conn.prepare_cached(sql)?.raw_execute().map(|_| ()))
    }

    /// `BEGIN IMMEDIATE`, once (see `lock_wait` for waiting out other processes).
    pub(super) fn begin(&self) -> rusqlite::Result<()> {
        capture::with(&self.capture, Capture::clear);
        self.exec_internal(BEGIN_SQL)
    }

    /// `COMMIT`; once it succeeded, the transaction's changes wait to be
    /// published (see [`WriterDb::take_committed`]).
    pub(super) fn commit(&self) -> rusqlite::Result<()> {
        self.exec_internal(COMMIT_SQL)?;
        let at = crate::feed::unix_us();
        capture::with(&self.capture, |c| c.commit(at));
        Ok(())
    }

    /// `ROLLBACK`.
    pub(super) fn rollback(&self) -> rusqlite::Result<()> {
        capture::with(&self.capture, Capture::clear);
        self.exec_internal(ROLLBACK_SQL)
    }

    /// Rolls back the open transaction, if one is open.
    pub(super) fn rollback_if_open(&self) {
        if !self.conn.is_autocommit() {
            self.rollback().ok();
        }
    }

    /// Turns `defer_foreign_keys` off. SQLite then forgets pending violations: call
    /// it only once they are settled (checked, or rolled back).
    pub(super) fn defer_fk_off(&self) -> rusqlite::Result<()> {
        self.exec_internal(DEFER_FK_OFF_SQL)
    }

    /// True while the transaction holds a deferred foreign-key violation that its
    /// COMMIT would reject.
    pub(super) fn deferred_fk_pending(&self) -> bool {
        let (mut current, mut highwater) = (0, 0);
        // SAFETY: the handle is valid while `self.conn` lives, and the caller holds
        // the writer, so nobody else uses the connection; sqlite3_db_status only
        // reads a counter.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_db_status(
                self.conn.handle(),
                rusqlite::ffi::SQLITE_DBSTATUS_DEFERRED_FKS,
                &mut current,
                &mut highwater,
                0,
            )
        };
        rc == rusqlite::ffi::SQLITE_OK && current != 0
    }

    /// Runs `f` inside the broker's savepoint (`_litebroker_req`): released on
    /// success, rolled back to on failure, so that one request's failure does not
    /// touch the others of its group.
    ///
    /// # Errors
    /// `f`'s error, or the savepoint's own failure.
    pub(super) fn in_savepoint<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ErrorInfo>,
    ) -> Result<T, ErrorInfo> {
        // What ran before the savepoint belongs to the transaction.
        capture::with(&self.capture, Capture::keep);
        self.exec_internal(SAVEPOINT_SQL).map_err(|e| sql_error(&e))?;
        let r = f(self);
        if self.conn.is_autocommit() {
            capture::with(&self.capture, Capture::clear);
            return r;
        }
        if r.is_err() {
            capture::with(&self.capture, Capture::discard);
            self.exec_internal(ROLLBACK_TO_SQL).map_err(|e| sql_error(&e))?;
        }
        self.exec_internal(RELEASE_SQL).map_err(|e| sql_error(&e))?;
        capture::with(&self.capture, Capture::keep);
        r
    }

    /// `PRAGMA user_version`.
    pub(super) fn user_version(&self) -> u32 {
        user_version(&self.conn)
    }

    /// Publishes the schema version (`PRAGMA user_version`) for the connections.
    pub(super) fn refresh_schema_version(&self, shared: &Shared) {
        shared.schema_version.store(self.user_version(), Ordering::Relaxed);
    }

    /// Outside a transaction (after a rollback, when idle) the connection must be
    /// as the broker set it up: the clients' temp objects and settings roll back
    /// with their transaction, except what SQLite keeps outside it. If that check
    /// fails, writes stop.
    pub(super) fn verify_clean(&self, shared: &Shared) {
        if !self.conn.is_autocommit() {
            return;
        }
        let r = self
            .exec_internal(BEGIN_DEFERRED_SQL)
            .map_err(|e| e.to_string())
            .and_then(|()| guard::connection_state(&self.conn, true));
        self.rollback().ok();
        if let Err(what) = r {
            let reason = texts::connection_not_restored(&what);
            tracing::error!("{reason}");
            shared.stop_writes(reason);
        }
    }

    /// Closes the database (shutdown): connection threads keep the writer itself
    /// alive until they notice the shutdown, but the file must be left clean.
    pub(super) fn close(&mut self) {
        Capture::uninstall(&self.conn);
        if let Ok(placeholder) = Connection::open_in_memory() {
            if let Err((_, e)) = std::mem::replace(&mut self.conn, placeholder).close() {
                warn!("closing the database failed: {e}");
            }
        }
    }
}
