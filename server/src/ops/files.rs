//! A database's files as operations see them: a read-only connection of their
//! own, the `-wal` beside the database, file sizes.

use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

/// Opens `path` read-only for an operation (no `query_only`: `VACUUM INTO` must
/// still be able to write its *output* file).
///
/// # Errors
/// SQLite's error when the file cannot be opened.
pub fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(c)
}

/// `<db>-wal`.
pub fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push("-wal");
    db.with_file_name(name)
}

/// Size of a file, 0 when it does not exist.
pub fn file_size(p: &Path) -> u64 {
    fs::metadata(p).map_or(0, |m| m.len())
}
