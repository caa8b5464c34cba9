//! Databases and listings for the operations' unit tests.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// A database of `rows` rows of 1 kB in `path`.
pub(super) fn filled(path: &Path, rows: u32) {
    let c = Connection::open(path).unwrap();
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)").unwrap();
    c.execute(&format!("INSERT INTO t (v) {}", blobs(rows)), []).unwrap();
}

/// The sorted file names of `paths`.
pub(super) fn names(paths: &[PathBuf]) -> Vec<String> {
    let mut v: Vec<String> =
        paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// A SELECT of `n` random 1 kB blobs.
pub(super) fn blobs(n: u32) -> String {
    format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) SELECT randomblob(1000) FROM n")
}
