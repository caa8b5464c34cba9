//! The app's own read-only connection: reads never wait for the broker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use litebroker_protocol::rendezvous::canonical_db_path;
use litebroker_protocol::sql::{bind_params, collect_rows};
use litebroker_protocol::Value;
use rusqlite::{Connection, OpenFlags};

use crate::error::{ClientError, Result};
use crate::tracking::Tracked;

/// The busy_timeout of every connection to the database (5 s), readers too: WAL
/// readers can still meet a lock in rare cases (recovery, the last connection
/// cleaning up).
pub const READER_BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// Column names and rows of a query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    /// Column names.
    pub columns: Vec<String>,
    /// Row values, in column order.
    pub rows: Vec<Vec<Value>>,
}

/// A read-only connection to the database, independent of the broker: it works
/// while no broker runs (read-only mode) and never waits for the writer.
///
/// Opened with `SQLITE_OPEN_READ_ONLY` (a read-write connection that closes last
/// could checkpoint and delete the WAL under other processes) and
/// `PRAGMA query_only`. Every query runs to completion and resets its statement,
/// so no read transaction is left open to pin the WAL.
#[derive(Debug)]
pub struct Reader {
    conn: Connection,
    path: PathBuf,
    _tracked: Tracked,
}

impl Reader {
    /// Opens a read-only connection to `db`.
    ///
    /// # Errors
    /// When the database file does not exist or cannot be opened.
    pub fn open(db: impl AsRef<Path>) -> Result<Reader> {
        let db = db.as_ref();
        let path = canonical_db_path(db)?;
        if !path.exists() {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "database {} does not exist yet; start the broker to create it: litebrokerd --db {}",
                    path.display(),
                    db.display()
                ),
            )));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(READER_BUSY_TIMEOUT)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(Reader { conn, path, _tracked: Tracked::new() })
    }

    /// The canonical path of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a read query with positional parameters and returns all rows.
    ///
    /// # Errors
    /// SQLite's error (syntax, missing table, an attempt to write: "attempt to
    /// write a readonly database").
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Rows> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        bind_params(&mut stmt, params)?;
        let (columns, rows) = collect_rows(&mut stmt, usize::MAX, no_row_limit)?;
        Ok(Rows { columns, rows })
    }

    /// The first column of the first row, if any row came back.
    ///
    /// # Errors
    /// As [`Reader::query`].
    pub fn query_value(&self, sql: &str, params: &[Value]) -> Result<Option<Value>> {
        let rows = self.query(sql, params)?;
        Ok(rows.rows.into_iter().next().and_then(|r| r.into_iter().next()))
    }

    /// The underlying rusqlite connection, for code that wants rusqlite's API.
    /// Finish (or drop) every statement promptly: an unfinished statement keeps a
    /// read transaction open, which pins the WAL and blocks checkpoints.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// Readers have no row limit; `collect_rows` never calls this.
fn no_row_limit() -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure("row limit".into())
}
