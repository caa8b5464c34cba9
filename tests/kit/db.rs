//! The database read directly, as a test checks what the broker wrote: a
//! read-only connection of its own, never through the broker.

use std::path::Path;

/// Opens the database directly (read-only) for assertions.
pub fn open_ro(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open db read-only")
}

/// `PRAGMA integrity_check` result joined into one string ("ok" when healthy).
pub fn integrity(db: &Path) -> String {
    query_texts(db, "PRAGMA integrity_check").join("; ")
}

/// Number of rows `PRAGMA foreign_key_check` reports.
pub fn foreign_key_violations(db: &Path) -> usize {
    let c = open_ro(db);
    let mut st = c.prepare("PRAGMA foreign_key_check").expect("prepare");
    let n = st.query_map([], |_| Ok(())).expect("query").count();
    n
}

/// A single integer from a query on a direct read-only connection.
pub fn query_i64(db: &Path, sql: &str) -> i64 {
    open_ro(db).query_row(sql, [], |r| r.get(0)).expect("query_i64")
}

/// The first column of every row of a query, as text, in the query's order.
pub fn query_texts(db: &Path, sql: &str) -> Vec<String> {
    let c = open_ro(db);
    let mut st = c.prepare(sql).expect("prepare");
    let rows = st.query_map([], |r| r.get::<_, String>(0)).expect("query");
    rows.map(|r| r.expect("row")).collect()
}
