//! What each request and transaction of the writer changed, from SQLite's
//! preupdate hook on the writer connection.
//!
//! # Why the preupdate hook, and what it covers
//! `sqlite3_update_hook` misses three kinds of change (SQLite's documentation of
//! `sqlite3_update_hook`): rows of `WITHOUT ROWID` tables, rows deleted by the
//! truncate optimisation (`DELETE FROM t` without a `WHERE`), and rows deleted
//! because of an `ON CONFLICT REPLACE`. The preupdate hook
//! (`sqlite3_preupdate_hook`, compiled in with `SQLITE_ENABLE_PREUPDATE_HOOK`,
//! see `.cargo/config.toml`) covers all three:
//! - it is invoked for `WITHOUT ROWID` tables too (with both keys 0, as its
//!   documentation says the rowids are undefined there; such tables are reported
//!   with counts and `rowids_capped`, see [`Capture::take_committed`]);
//! - while one is registered SQLite does not use the truncate optimisation
//!   (`sqlite3DeleteFrom`: the optimisation requires `db->xPreUpdateCallback==0`),
//!   so each deleted row is reported;
//! - a REPLACE conflict's delete is reported as a `SQLITE_DELETE` (the code
//!   SQLite generates for it carries an `OP_Delete` with `OPFLAG_ISNOOP` whose only
//!   purpose is this hook).
//!
//! Not reported by either hook: virtual tables and SQLite's own tables
//! (`sqlite_sequence`, `sqlite_stat1`); the broker's own tables (`_litebroker…`)
//! are skipped here.
//!
//! # Rollbacks
//! Changes go into the running request's record; the writer keeps it
//! ([`Capture::keep`]) when the request's savepoint is released and drops it
//! ([`Capture::discard`]) when it is rolled back to; `BEGIN` and `ROLLBACK`
//! forget everything, and only a COMMIT that succeeded hands the transaction's
//! changes over ([`Capture::commit`]) to be published. A client's own
//! savepoints inside its request are followed too ([`client_savepoint`], told by
//! the statement loop from what the authorizer reported): `ROLLBACK TO` restores
//! the record as it was when the savepoint was opened.

use std::collections::HashSet;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Arc, Mutex, Weak};

use litebroker_protocol::TableChange;
use rusqlite::{ffi, Connection};

use crate::shared::lock;
use crate::sql::authorizer::SavepointOp;
use crate::sql::text::{has_prefix, RESERVED_PREFIX};

extern "C" {
    // From sqlite3.h (SQLITE_ENABLE_PREUPDATE_HOOK); rusqlite declares it only
    // with bindings generated at build time.
    fn sqlite3_preupdate_hook(
        db: *mut ffi::sqlite3,
        callback: Option<
            unsafe extern "C" fn(
                *mut c_void,
                *mut ffi::sqlite3,
                c_int,
                *const c_char,
                *const c_char,
                i64,
                i64,
            ),
        >,
        arg: *mut c_void,
    ) -> *mut c_void;
}

/// One table's changes while they are gathered.
#[derive(Debug, Default, Clone)]
struct Acc {
    table: String,
    inserted: u64,
    updated: u64,
    deleted: u64,
    rowids: Vec<i64>,
    /// Rowids listed, for "each once" (kept only past a few).
    seen: Option<HashSet<i64>>,
    capped: bool,
}

impl Acc {
    fn add_rowid(&mut self, id: i64, cap: usize) {
        if self.capped {
            return;
        }
        let known = match &mut self.seen {
            Some(s) => !s.insert(id),
            None if self.rowids.len() < 16 => self.rowids.contains(&id),
            None => {
                let mut s: HashSet<i64> = self.rowids.iter().copied().collect();
                let known = !s.insert(id);
                self.seen = Some(s);
                known
            }
        };
        if known {
            return;
        }
        if self.rowids.len() >= cap {
            self.capped = true;
            return;
        }
        self.rowids.push(id);
    }

    fn merge(&mut self, other: Acc, cap: usize) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.deleted += other.deleted;
        for id in other.rowids {
            self.add_rowid(id, cap);
        }
        self.capped |= other.capped;
    }
}

#[derive(Debug, Default, Clone)]
struct Changes(Vec<Acc>);

impl Changes {
    fn table(&mut self, name: &str) -> &mut Acc {
        let i = match self.0.iter().position(|a| a.table == name) {
            Some(i) => i,
            None => {
                self.0.push(Acc { table: name.to_owned(), ..Acc::default() });
                self.0.len() - 1
            }
        };
        &mut self.0[i]
    }

    fn merge(&mut self, other: Changes, cap: usize) {
        for acc in other.0 {
            let name = acc.table.clone();
            self.table(&name).merge(acc, cap);
        }
    }
}

/// The writer connection's record of changes.
#[derive(Debug)]
pub struct Capture {
    request: Changes,
    /// The client's own savepoints open in the running request, each with the
    /// request's record when it was opened.
    savepoints: Vec<(String, Changes)>,
    txn: Changes,
    committed: Vec<(u64, Changes)>,
    cap: usize,
}

impl Capture {
    /// Installs the preupdate hook on `conn`; `cap` is the most rowids listed per
    /// table and transaction.
    pub(crate) fn install(conn: &Connection, cap: usize) -> Arc<Mutex<Capture>> {
        let capture = Arc::new(Mutex::new(Capture {
            request: Changes::default(),
            savepoints: Vec::new(),
            txn: Changes::default(),
            committed: Vec::new(),
            cap,
        }));
        // SAFETY: the argument points into the Arc the writer keeps for as long as
        // the connection lives (see `uninstall`); the callback only runs on the
        // thread stepping a statement on this connection.
        let handle = unsafe {
            sqlite3_preupdate_hook(conn.handle(), Some(on_preupdate), Arc::as_ptr(&capture) as *mut c_void);
            conn.handle() as usize
        };
        let mut registry = lock(&REGISTRY);
        registry.retain(|(_, w)| w.strong_count() > 0);
        registry.push((handle, Arc::downgrade(&capture)));
        capture
    }

    /// Removes the hook (before the connection is closed or replaced).
    pub(crate) fn uninstall(conn: &Connection) {
        // SAFETY: clears the hook of a valid connection.
        unsafe {
            sqlite3_preupdate_hook(conn.handle(), None, std::ptr::null_mut());
        }
    }

    fn record(&mut self, op: c_int, table: &str, key1: i64, key2: i64) {
        let cap = self.cap;
        let acc = self.request.table(table);
        match op {
            ffi::SQLITE_INSERT => {
                acc.inserted += 1;
                acc.add_rowid(key2, cap);
            }
            ffi::SQLITE_DELETE => {
                acc.deleted += 1;
                acc.add_rowid(key1, cap);
            }
            ffi::SQLITE_UPDATE => {
                acc.updated += 1;
                acc.add_rowid(key1, cap);
                if key2 != key1 {
                    acc.add_rowid(key2, cap);
                }
            }
            _ => {}
        }
    }

    /// The running request's changes belong to the transaction (its savepoint was
    /// released, or it runs without one).
    pub fn keep(&mut self) {
        self.savepoints.clear();
        let req = std::mem::take(&mut self.request);
        if self.txn.0.is_empty() {
            self.txn = req;
        } else {
            self.txn.merge(req, self.cap);
        }
    }

    /// The running request was rolled back: its changes never happened.
    pub fn discard(&mut self) {
        self.savepoints.clear();
        self.request.0.clear();
    }

    /// BEGIN or ROLLBACK: nothing of the transaction counts.
    pub fn clear(&mut self) {
        self.savepoints.clear();
        self.request.0.clear();
        self.txn.0.clear();
    }

    /// The COMMIT succeeded (at `at_us`, µs since the Unix epoch): the
    /// transaction's changes wait to be published.
    pub fn commit(&mut self, at_us: u64) {
        self.keep();
        let txn = std::mem::take(&mut self.txn);
        if !txn.0.is_empty() {
            self.committed.push((at_us, txn));
        }
    }

    /// The committed transactions not yet published, oldest first, each as its
    /// commit time and the event's tables. `without_rowid` says whether a table has no rowids (asked
    /// only for tables where a rowid 0 was seen, which is what the hook reports
    /// for `WITHOUT ROWID` tables).
    pub fn take_committed(
        &mut self,
        mut without_rowid: impl FnMut(&str) -> bool,
    ) -> Vec<(u64, Vec<TableChange>)> {
        std::mem::take(&mut self.committed)
            .into_iter()
            .map(|(at, c)| {
                let tables =
                    c.0.into_iter()
                        .map(|mut a| {
                            if a.rowids.contains(&0) && without_rowid(&a.table) {
                                a.rowids.clear();
                                a.capped = true;
                            }
                            TableChange {
                                table: a.table,
                                inserted: a.inserted,
                                updated: a.updated,
                                deleted: a.deleted,
                                rowids: a.rowids,
                                rowids_capped: a.capped,
                            }
                        })
                        .collect();
                (at, tables)
            })
            .collect()
    }
}

/// The captures of the writer connections of this process, by connection
/// handle, for [`client_savepoint`] (the statement loop knows the connection only).
static REGISTRY: Mutex<Vec<(usize, Weak<Mutex<Capture>>)>> = Mutex::new(Vec::new());

/// A client's savepoint statement ran on `conn`: `ROLLBACK TO` forgets what was
/// recorded since the savepoint was opened, as SQLite undid it; `RELEASE` closes
/// it (and those opened after it). A client savepoint never outlives the request:
/// the broker's own savepoint (or transaction) encloses it.
pub(crate) fn client_savepoint(conn: &Connection, op: SavepointOp, name: &str) {
    // SAFETY: only the handle's address is read, as a key.
    let key = unsafe { conn.handle() } as usize;
    // A closed connection's address may be reused: only a live capture counts.
    let live = lock(&REGISTRY).iter().filter(|(k, _)| *k == key).find_map(|(_, w)| w.upgrade());
    let Some(capture) = live else { return };
    let mut c = lock(&capture);
    let at = c.savepoints.iter().rposition(|(n, _)| n.eq_ignore_ascii_case(name));
    match (op, at) {
        (SavepointOp::Begin, _) => {
            let snapshot = c.request.clone();
            c.savepoints.push((name.to_owned(), snapshot));
        }
        (SavepointOp::Release, Some(i)) => c.savepoints.truncate(i),
        (SavepointOp::RollbackTo, Some(i)) => {
            c.request = c.savepoints[i].1.clone();
            c.savepoints.truncate(i + 1);
        }
        _ => {}
    }
}

/// Locks the capture behind the hook's argument.
pub(crate) fn with(capture: &Mutex<Capture>, f: impl FnOnce(&mut Capture)) {
    f(&mut lock(capture));
}

unsafe extern "C" fn on_preupdate(
    arg: *mut c_void,
    _db: *mut ffi::sqlite3,
    op: c_int,
    db_name: *const c_char,
    table: *const c_char,
    key1: i64,
    key2: i64,
) {
    if arg.is_null() || db_name.is_null() || table.is_null() {
        return;
    }
    // SAFETY: SQLite passes NUL-terminated names valid for the call; `arg` is the
    // capture registered in `install`, alive while the hook is.
    let (db_name, table, capture) =
        unsafe { (CStr::from_ptr(db_name), CStr::from_ptr(table), &*(arg as *const Mutex<Capture>)) };
    if db_name.to_bytes() != b"main" {
        return;
    }
    let Ok(table) = table.to_str() else { return };
    if has_prefix(table, RESERVED_PREFIX) {
        return;
    }
    // A panic must not cross into SQLite.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lock(capture).record(op, table, key1, key2);
    }));
}
