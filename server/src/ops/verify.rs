//! Verification: `integrity_check` and `foreign_key_check` of a database, and the
//! checks a file must pass before it may be restored.

use std::fs;
use std::io;
use std::path::Path;

use litebroker_protocol::VerifyReport;
use rusqlite::Connection;

use super::files::open_read_only;

/// `PRAGMA integrity_check` and `PRAGMA foreign_key_check`.
///
/// # Errors
/// SQLite's error (e.g. "file is not a database").
pub fn verify(conn: &Connection, path: &Path) -> rusqlite::Result<VerifyReport> {
    let integrity: Vec<String> = {
        let mut st = conn.prepare("PRAGMA integrity_check")?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let integrity_problems =
        if integrity.len() == 1 && integrity[0] == "ok" { Vec::new() } else { integrity };
    let foreign_key_problems: Vec<String> = {
        let mut st = conn.prepare("PRAGMA foreign_key_check")?;
        let rows = st.query_map([], |r| {
            let table: String = r.get(0)?;
            let rowid: Option<i64> = r.get(1)?;
            let parent: String = r.get(2)?;
            Ok(format!(
                "{table} row {} references a missing row of {parent}",
                rowid.map_or_else(|| "?".into(), |v| v.to_string())
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    Ok(VerifyReport { path: path.to_string_lossy().into_owned(), integrity_problems, foreign_key_problems })
}

/// Checks that `path` is a healthy SQLite database (header, integrity, foreign
/// keys) before it is restored.
///
/// # Errors
/// A message saying why the file is refused.
pub fn check_restore_source(path: &Path) -> Result<VerifyReport, String> {
    let mut header = [0u8; 16];
    let read = fs::File::open(path).and_then(|mut f| io::Read::read_exact(&mut f, &mut header));
    match read {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(format!(
                "{} is not a SQLite database (shorter than a database header)",
                path.display()
            ))
        }
        Err(e) => return Err(format!("{} cannot be read: {e}", path.display())),
        Ok(()) => {}
    }
    if &header != b"SQLite format 3\0" {
        return Err(format!("{} is not a SQLite database (wrong header)", path.display()));
    }
    let conn = open_read_only(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let report = verify(&conn, path).map_err(|e| format!("{} failed verification: {e}", path.display()))?;
    if !report.ok() {
        let mut problems = report.integrity_problems.clone();
        problems.extend(report.foreign_key_problems.iter().cloned());
        return Err(format!("{} failed verification: {}", path.display(), problems.join("; ")));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_sources_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.db");
        fs::write(&junk, b"this is not a database at all, not even close").unwrap();
        assert!(check_restore_source(&junk).unwrap_err().contains("not a SQLite database"));
        let good = dir.path().join("good.db");
        Connection::open(&good)
            .unwrap()
            .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        assert!(check_restore_source(&good).is_ok());
        assert!(check_restore_source(&dir.path().join("missing.db")).is_err());
    }
}
