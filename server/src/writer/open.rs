//! Opening the writer connection: the file, WAL mode, the PRAGMAs every write
//! relies on, the limits, the authorizer, and the hooks the writer reads (the
//! WAL's size after each commit, the statement deadline).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{Connection, OpenFlags};

use crate::config::Config;
use crate::sql::authorizer;

/// Bounds the memory SQLite may take in this process (`--max-memory-mb`): a
/// statement needing more fails with "out of memory" instead of growing the
/// broker without bound (a sort of big rows is held in memory with
/// `temp_store = MEMORY`). Process-wide, as SQLite's heap limit is.
pub fn limit_sqlite_memory(bytes: u64) {
    let hard = i64::try_from(bytes).unwrap_or(i64::MAX);
    // SAFETY: both calls only set SQLite's process-wide limits.
    unsafe {
        rusqlite::ffi::sqlite3_hard_heap_limit64(hard);
        rusqlite::ffi::sqlite3_soft_heap_limit64(hard / 2);
    }
}

/// Opens (creating) the writer connection: WAL mode (or an error: WAL needs a
/// local filesystem), `synchronous` as configured, foreign keys on, temp storage in
/// memory, a 64 MB page cache, busy_timeout, the value-length limit (the frame
/// size), the authorizer and SQLite's defensive mode.
///
/// # Errors
/// When the file cannot be opened, or WAL mode cannot be enabled (e.g. on a network
/// filesystem).
pub fn open_writer(path: &std::path::Path, config: &Config) -> Result<Connection, String> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    conn.busy_timeout(config.busy_timeout).map_err(|e| e.to_string())?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| format!("cannot set WAL mode on {}: {e}", path.display()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "{} stays in journal mode '{mode}' instead of WAL; WAL needs a local filesystem \
             (network drives are not supported)",
            path.display()
        ));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -64000;",
        config.synchronous.as_str()
    ))
    .map_err(|e| format!("cannot apply PRAGMAs to {}: {e}", path.display()))?;
    conn.set_prepared_statement_cache_capacity(256);
    // A value longer than a frame could never be answered, and one SQLite
    // opcode building a value of SQLite's default 1 GB limit (randomblob, zeroblob,
    // printf, replace, ||) runs for seconds where no progress handler reaches it.
    // SAFETY: sqlite3_limit on the connection this function owns.
    unsafe {
        rusqlite::ffi::sqlite3_limit(
            conn.handle(),
            rusqlite::ffi::SQLITE_LIMIT_LENGTH,
            i32::try_from(config.max_frame).unwrap_or(i32::MAX),
        );
    }
    authorizer::install(&mut conn)
        .map_err(|e| format!("cannot install the SQL authorizer on {}: {e}", path.display()))?;
    Ok(conn)
}

/// The deadline of the running statement, read by SQLite's progress handler,
/// which interrupts a statement that runs past it.
#[derive(Debug)]
pub(super) struct StatementDeadline {
    /// Nanoseconds since `epoch` (0 = none).
    ns: Arc<AtomicU64>,
    epoch: Instant,
}

impl StatementDeadline {
    /// Sets (or clears) the deadline the progress handler enforces.
    pub(super) fn arm(&self, deadline: Option<Instant>) {
        let ns = deadline.map_or(0, |d| d.saturating_duration_since(self.epoch).as_nanos().max(1) as u64);
        self.ns.store(ns, Ordering::Relaxed);
    }
}

/// Installs the writer's hooks on `conn`; returns the WAL's size in frames after
/// the last commit (kept by the WAL hook) and the statement deadline (read by the
/// progress handler).
pub(super) fn install_hooks(conn: &mut Connection) -> (Arc<AtomicU64>, StatementDeadline) {
    // SQLite's automatic checkpoint runs inside the COMMIT that crosses its
    // threshold, so the requests of that group wait for it (with an fsync, even
    // under synchronous=NORMAL). The hook replaces it: it only records the WAL's
    // size, and the writer checkpoints after answering (see `maintenance`).
    let wal_frames = Arc::new(AtomicU64::new(0));
    let frames = wal_frames.clone();
    conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, n: std::ffi::c_int| {
        frames.store(n.max(0) as u64, Ordering::Relaxed);
        Ok(())
    }))
    .ok();
    let deadline = StatementDeadline { ns: Arc::new(AtomicU64::new(0)), epoch: Instant::now() };
    let (ns, epoch) = (deadline.ns.clone(), deadline.epoch);
    // Every 100 virtual-machine steps (a few microseconds): a statement stops
    // soon after its deadline, whatever loop it is in.
    conn.progress_handler(
        100,
        Some(move || {
            let d = ns.load(Ordering::Relaxed);
            d != 0 && epoch.elapsed().as_nanos() as u64 >= d
        }),
    )
    .ok();
    (wal_frames, deadline)
}

/// Reads `PRAGMA user_version`.
pub fn user_version(conn: &Connection) -> u32 {
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map(|v| u32::try_from(v).unwrap_or(0))
        .unwrap_or(0)
}
