//! Exactly-once writes: the broker's table of request ids.
//!
//! A write that carries a client-generated 128-bit request id is recorded — id,
//! time, encoded answer — in `_litebroker_requests` **in the same transaction** as
//! the write, so the record exists exactly when the write committed. A request
//! whose id is already recorded is not executed again: the stored answer is
//! returned. A client whose answer was lost (broker crash, broken connection) can
//! therefore resend the same request safely. Records older than the retention
//! (default 24 h) are pruned when the broker is idle.
//!
//! Ids begin with their creation time, a big-endian Unix time in milliseconds
//! (48 bits, as in a UUIDv7; `litebroker_client::new_request_id` makes them so). The
//! table is keyed by the id alone, so retention reads that prefix and a new record
//! lands at the table's end: one B-tree and, in a group, one page per commit,
//! instead of a random page plus a time index per request.

use std::time::Duration;

use litebroker_protocol::{
    decode_payload, encode_frame, RequestId, Response, FRAME_HEADER_LEN, HARD_MAX_FRAME,
};
use rusqlite::{Connection, OptionalExtension};

// The table is the broker's own: the authorizer refuses writes to it unless they
// run as the broker's (`internal`).
use crate::sql::authorizer::internal;
use crate::texts;

/// The table's name; clients may not write it (the authorizer refuses).
pub const TABLE: &str = "_litebroker_requests";

/// Why request ids cannot be set up in a database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// SQLite failed (e.g. another process holds the write lock).
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Objects with the broker's reserved names that the broker did not make.
    #[error("{0}")]
    Foreign(String),
}

impl SetupError {
    /// True when another process's lock was in the way (worth retrying).
    pub fn is_locked(&self) -> bool {
        matches!(self, SetupError::Sqlite(e) if matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        ))
    }
}

/// Creates the table if missing. A table of that name the broker did not make
/// (other columns), or other objects with the broker's reserved names (a
/// trigger on its table would run on every write), are refused: the broker would
/// fail every write on them, or run someone else's code.
///
/// # Errors
/// [`SetupError::Foreign`] naming the objects; SQLite's error.
pub fn ensure_table(conn: &Connection) -> Result<(), SetupError> {
    if let Some(what) = foreign_objects(conn)? {
        return Err(SetupError::Foreign(what));
    }
    internal(|| {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS main._litebroker_requests (
             id BLOB PRIMARY KEY,
             created_ms INTEGER NOT NULL,
             answer BLOB NOT NULL
         ) WITHOUT ROWID;
         DROP INDEX IF EXISTS main._litebroker_requests_created;",
        )
    })?;
    Ok(())
}

/// Objects in `conn`'s main database that carry the broker's reserved names (or
/// hang on its table) but are not the broker's, described for a message; None
/// when there are none.
///
/// # Errors
/// SQLite's error.
pub fn foreign_objects(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let mut found = Vec::new();
    internal(|| -> rusqlite::Result<()> {
        let mut stmt = conn.prepare(
            "SELECT type, name FROM main.sqlite_schema \
             WHERE (name LIKE '\\_litebroker%' ESCAPE '\\' OR tbl_name LIKE '\\_litebroker%' ESCAPE '\\') \
               AND NOT (type = 'table' AND name = '_litebroker_requests') \
               AND NOT (type = 'index' AND name = '_litebroker_requests_created') \
               AND NOT (type = 'index' AND name LIKE 'sqlite\\_autoindex\\_\\_litebroker\\_requests%' ESCAPE '\\')",
        )?;
        let rows =
            stmt.query_map([], |r| Ok(format!("{} {}", r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            found.push(row?);
        }
        let columns: Vec<(String, i64)> = conn
            .prepare("SELECT name, pk FROM pragma_table_info('_litebroker_requests', 'main') ORDER BY cid")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let ours = [("id".to_owned(), 1), ("created_ms".to_owned(), 0), ("answer".to_owned(), 0)];
        if !columns.is_empty() && columns != ours {
            let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
            found.push(format!(
                "table {TABLE} with columns ({}) that the broker did not make",
                names.join(", ")
            ));
        }
        Ok(())
    })?;
    Ok((!found.is_empty()).then(|| texts::foreign_reserved_objects(&found)))
}

/// The stored answer of `id`, if that request already committed.
///
/// # Errors
/// SQLite's error.
pub fn lookup(conn: &Connection, id: &RequestId) -> rusqlite::Result<Option<Response>> {
    let stored: Option<Vec<u8>> = conn
        .prepare_cached("SELECT answer FROM main._litebroker_requests WHERE id = ?1")?
        .query_row([&id[..]], |r| r.get(0))
        .optional()?;
    Ok(stored.and_then(|bytes| decode_payload::<Response>(&bytes).ok()))
}

/// Records `id` with its answer; call inside the write's transaction.
///
/// # Errors
/// SQLite's error (then the write must roll back with it).
pub fn record(
    conn: &Connection,
    id: &RequestId,
    answer: &Response,
    now_ms: u64,
    buf: &mut Vec<u8>,
) -> rusqlite::Result<()> {
    encode_frame(answer, buf, HARD_MAX_FRAME)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    internal(|| {
        conn.prepare_cached(
            "INSERT INTO main._litebroker_requests (id, created_ms, answer) VALUES (?1, ?2, ?3)",
        )?
        .execute(rusqlite::params![&id[..], now_ms as i64, &buf[FRAME_HEADER_LEN..]])
    })?;
    Ok(())
}

/// Deletes records older than `retention`, at most `limit` per call so the writer
/// is never held long; returns how many went.
///
/// # Errors
/// SQLite's error.
pub fn prune(conn: &Connection, retention: Duration, now_ms: u64, limit: u32) -> rusqlite::Result<usize> {
    // Every id whose 6-byte time prefix is below the cutoff's sorts before it (BLOBs
    // compare bytewise); an id with the same prefix is longer, so it sorts after.
    let cutoff = now_ms.saturating_sub(retention.as_millis() as u64).to_be_bytes();
    internal(|| {
        conn.prepare_cached(
            "DELETE FROM main._litebroker_requests WHERE id IN
                 (SELECT id FROM main._litebroker_requests WHERE id < ?1 ORDER BY id LIMIT ?2)",
        )?
        .execute(rusqlite::params![&cutoff[2..], limit])
    })
}

/// Records held now.
///
/// # Errors
/// SQLite's error.
pub fn count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM main._litebroker_requests", [], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use litebroker_protocol::ExecResult;

    #[test]
    fn records_are_found_and_pruned() {
        let c = Connection::open_in_memory().unwrap();
        ensure_table(&c).unwrap();
        ensure_table(&c).unwrap();
        // Ids start with their time in ms, big-endian: this one at 1 000 ms.
        let mut id = [9u8; 16];
        id[..6].copy_from_slice(&1_000u64.to_be_bytes()[2..]);
        assert_eq!(lookup(&c, &id).unwrap(), None);
        let answer =
            Response::Executed(ExecResult { changes: 1, last_insert_rowid: 42, ..Default::default() });
        record(&c, &id, &answer, 1_000, &mut Vec::new()).unwrap();
        assert_eq!(lookup(&c, &id).unwrap(), Some(answer.clone()));
        assert!(record(&c, &id, &answer, 1_000, &mut Vec::new()).is_err(), "an id is recorded once");
        let mut recent = [1u8; 16];
        recent[..6].copy_from_slice(&90_000u64.to_be_bytes()[2..]);
        record(&c, &recent, &answer, 90_000, &mut Vec::new()).unwrap();
        assert_eq!(count(&c).unwrap(), 2);
        assert_eq!(prune(&c, Duration::from_secs(60), 100_000, 10).unwrap(), 1);
        assert_eq!(lookup(&c, &id).unwrap(), None);
        assert_eq!(count(&c).unwrap(), 1);
    }
}
