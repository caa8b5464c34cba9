//! The broker checks its own connection and files instead of trusting that
//! nothing changed them: safety must not rest on the authorizer alone, nor on
//! nobody touching the database's files behind the broker.
//!
//! - [`connection_state`]: after client statements ran and before their
//!   transaction commits, the `temp` schema is empty and the connection's
//!   settings are still the broker's. A request that breaks this fails (its group
//!   runs again without it); a connection that stays broken stops writes.
//! - [`WalFiles`]: the `-wal` and `-shm` files on disk are still the ones SQLite
//!   has open. Someone deleting or replacing them under a running broker splits
//!   readers from the writer (readers go stale, acknowledged writes are lost on a
//!   crash); the broker then stops writing and says so, and a clean shutdown
//!   still checkpoints what it has into the database file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::Connection;

use crate::sql::authorizer;
use crate::texts;

/// The temp schema's objects. The text names `_litebroker`, so no client text can
/// be served this cached, broker-authorized statement.
const TEMP_SQL: &str = "SELECT count(*) FROM temp.sqlite_schema /* _litebroker */";

/// The settings only a PRAGMA can change. Each `pragma_…` table runs a PRAGMA of
/// its own (a parse each time), so this is read only when needed.
const SETTINGS_SQL: &str = "SELECT (SELECT defer_foreign_keys FROM pragma_defer_foreign_keys), \
     (SELECT query_only FROM pragma_query_only), \
     (SELECT recursive_triggers FROM pragma_recursive_triggers) /* _litebroker */";

/// Checks the writer connection's state; call inside the transaction, after the
/// clients' statements and before `COMMIT`. The flags SQLite exposes directly
/// (foreign keys, defensive mode) are read always, at no cost. `full` adds the
/// temp schema and the settings only a PRAGMA changes: needed after a request
/// that changed the schema or ran a PRAGMA (no other statement can put anything
/// there, and SQLite reports both while preparing), and when the writer is idle.
///
/// # Errors
/// What differs from the broker's settings.
pub fn connection_state(conn: &Connection, full: bool) -> Result<(), String> {
    let read = |e: rusqlite::Error| format!("cannot read the connection's state: {e}");
    let mut wrong = Vec::new();
    if !conn.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FKEY).unwrap_or(false) {
        wrong.push("foreign keys are off".to_owned());
    }
    if !conn.db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE).unwrap_or(false) {
        wrong.push("defensive mode is off".to_owned());
    }
    if full {
        let temp_objects: i64 =
            authorizer::internal(|| conn.prepare_cached(TEMP_SQL)?.query_row([], |r| r.get(0)))
                .map_err(read)?;
        if temp_objects != 0 {
            wrong.push(format!("{temp_objects} object(s) in the temp schema"));
        }
        let (defer_fk, query_only, recursive): (i64, i64, i64) = authorizer::internal(|| {
            conn.prepare_cached(SETTINGS_SQL)?.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        })
        .map_err(read)?;
        for (on, what) in [
            (defer_fk, "defer_foreign_keys is on"),
            (query_only, "query_only is on"),
            (recursive, "recursive_triggers is on"),
        ] {
            if on != 0 {
                wrong.push(what.to_owned());
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join(", "))
    }
}

/// The identity of a file: device and inode (Unix). Elsewhere files SQLite has
/// open cannot be deleted, and nothing is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(path: &Path) -> std::io::Result<Option<FileId>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Some(FileId { dev: m.dev(), ino: m.ino() }))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

/// How often a busy writer looks at its `-wal`/`-shm` files (an idle one looks
/// when it goes idle).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The `-wal` and `-shm` files the writer uses, as they were when it opened them.
#[derive(Debug)]
pub struct WalFiles {
    files: Vec<(PathBuf, Option<FileId>)>,
    last_check: Instant,
}

impl WalFiles {
    /// Records the files of `db` as they are now (call once the writer has used
    /// the database, so that both exist).
    pub fn record(db: &Path) -> WalFiles {
        let files = ["-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut name = db.as_os_str().to_owned();
                name.push(suffix);
                let path = PathBuf::from(name);
                let id = file_id(&path).ok().flatten();
                (path, id)
            })
            .collect();
        WalFiles { files, last_check: Instant::now() }
    }

    /// As [`WalFiles::check`], at most once per second.
    ///
    /// # Errors
    /// As [`WalFiles::check`].
    pub fn check_now_and_then(&mut self) -> Result<(), String> {
        if self.last_check.elapsed() < CHECK_EVERY {
            return Ok(());
        }
        self.check()
    }

    /// Whether the files on disk are still the ones recorded. A file that did not
    /// exist when recorded is recorded when it first appears.
    ///
    /// # Errors
    /// Which file was deleted or replaced, and what to do.
    pub fn check(&mut self) -> Result<(), String> {
        self.last_check = Instant::now();
        for (path, recorded) in &mut self.files {
            let now = match file_id(path) {
                Ok(id) => id,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if recorded.is_none() {
                        continue;
                    }
                    return Err(replaced(path, "was deleted"));
                }
                Err(_) => continue,
            };
            match (*recorded, now) {
                (None, now) => *recorded = now,
                (Some(a), Some(b)) if a != b => return Err(replaced(path, "was replaced by another file")),
                _ => {}
            }
        }
        Ok(())
    }
}

fn replaced(path: &Path, what: &str) -> String {
    texts::wal_file_replaced(&path.display().to_string(), what)
}
