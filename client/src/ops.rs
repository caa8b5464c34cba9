//! Operations shared by the broker and the CLI: database statistics, verification,
//! backup files (naming, listing, retention) and checks of a file to restore.
//! They work on plain read-only connections, so the CLI can run them without a
//! broker and the broker runs them without stalling its writer.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use litebroker_protocol::{DbStats, TableCount, VerifyReport};
use rusqlite::{Connection, OpenFlags};

/// The notes' WAL size of concern: above it, readers are probably pinning the WAL.
pub const DEFAULT_WAL_WARN_BYTES: u64 = 100_000_000;

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

/// Database figures of the notes' `db.py stats` (without broker figures).
///
/// # Errors
/// SQLite's error.
pub fn db_stats(conn: &Connection, db_path: &Path, wal_warn_bytes: u64) -> rusqlite::Result<DbStats> {
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    let schema_version = u32::try_from(pragma("user_version")?).unwrap_or(0);
    let page_size = pragma("page_size")? as u64;
    let page_count = pragma("page_count")? as u64;
    let free_pages = pragma("freelist_count")? as u64;
    let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    let names: Vec<String> = {
        let mut st = conn.prepare(
            // The broker's own tables (`_litebroker_…`) are reported apart.
            r"SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\'
                AND name NOT LIKE '\_litebroker%' ESCAPE '\' ORDER BY name",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let indices: i64 = conn.query_row(
        r"SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name NOT LIKE '\_litebroker%' ESCAPE '\'",
        [],
        |r| r.get(0),
    )?;
    let mut row_counts = Vec::with_capacity(names.len());
    for name in &names {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let rows: i64 = conn.query_row(&format!("SELECT count(*) FROM {quoted}"), [], |r| r.get(0))?;
        row_counts.push(TableCount { name: name.clone(), rows: rows as u64 });
    }
    let wal_bytes = file_size(&wal_path(db_path));
    let mut warnings = Vec::new();
    if wal_bytes > wal_warn_bytes {
        warnings.push(wal_warning(wal_bytes, wal_warn_bytes));
    }
    Ok(DbStats {
        db_path: db_path.to_string_lossy().into_owned(),
        schema_version,
        tables: names.len() as u32,
        indices: indices as u32,
        db_bytes: file_size(db_path),
        wal_bytes,
        page_size,
        page_count,
        free_pages,
        journal_mode,
        row_counts,
        warnings,
        broker: None,
        writer: None,
    })
}

/// The warning for a WAL that grew past the threshold.
pub fn wal_warning(wal_bytes: u64, threshold: u64) -> String {
    format!(
        "the WAL is {:.1} MB (over {:.0} MB): readers are keeping it pinned (an open read \
         transaction or an unfinished statement); finish or close long readers, then run \
         `litebroker checkpoint truncate`",
        wal_bytes as f64 / 1e6,
        threshold as f64 / 1e6
    )
}

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

/// `<db folder>/backups`.
pub fn backup_dir(db_path: &Path) -> PathBuf {
    db_path.parent().unwrap_or_else(|| Path::new(".")).join("backups")
}

fn db_stem(db_path: &Path) -> String {
    db_path.file_stem().map_or_else(|| "db".into(), |s| s.to_string_lossy().into_owned())
}

/// Keeps a label safe inside a file name.
pub fn clean_label(label: &str) -> String {
    let l: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .take(64)
        .collect();
    if l.is_empty() {
        "manual".into()
    } else {
        l
    }
}

/// `YYYYMMDD_HHMMSS` in UTC for Unix seconds (proleptic Gregorian calendar).
pub fn utc_stamp(unix_secs: u64) -> String {
    let (y, m, d) = civil_from_days((unix_secs / 86_400) as i64);
    let secs = unix_secs % 86_400;
    format!("{y:04}{m:02}{d:02}_{:02}{:02}{:02}", secs / 3600, (secs / 60) % 60, secs % 60)
}

/// (year, month, day) of a count of days since 1970-01-01, after Howard Hinnant's
/// `civil_from_days` (proleptic Gregorian calendar).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A fresh backup path `<db folder>/backups/<stem>_<YYYYMMDD_HHMMSS>_<label>.db`
/// (UTC), with a numeric suffix when that name is taken. Creates the folder.
///
/// # Errors
/// When the folder cannot be created.
pub fn new_backup_path(db_path: &Path, label: &str) -> io::Result<PathBuf> {
    let dir = backup_dir(db_path);
    fs::create_dir_all(&dir)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let base = format!("{}_{}_{}", db_stem(db_path), utc_stamp(now), clean_label(label));
    let mut p = dir.join(format!("{base}.db"));
    let mut n = 2;
    while p.exists() {
        p = dir.join(format!("{base}-{n}.db"));
        n += 1;
    }
    Ok(p)
}

/// A backup file of a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile {
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Last modification, seconds since the Unix epoch.
    pub modified_unix: u64,
}

/// The backups of `db_path`, oldest first.
///
/// # Errors
/// When the folder exists but cannot be read.
pub fn list_backups(db_path: &Path) -> io::Result<Vec<BackupFile>> {
    let dir = backup_dir(db_path);
    let prefix = format!("{}_", db_stem(db_path));
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut order = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `<stem>_YYYYMMDD_HHMMSS_<label>.db`: the date must follow the stem, so
        // backups of `app_x.db` are not mistaken for those of `app.db`.
        let stamp = name.get(prefix.len()..prefix.len() + 15).unwrap_or("");
        let is_backup = name.starts_with(&prefix)
            && name.ends_with(".db")
            && stamp.bytes().enumerate().all(|(i, b)| if i == 8 { b == b'_' } else { b.is_ascii_digit() })
            && stamp.len() == 15;
        if !is_backup {
            continue;
        }
        let meta = entry.metadata()?;
        let modified =
            meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
        // The name's timestamp has one-second resolution; within a second the
        // file's modification time orders them.
        order.push((name[prefix.len()..prefix.len() + 15].to_owned(), modified, out.len()));
        out.push(BackupFile { path: entry.path(), bytes: meta.len(), modified_unix: modified.as_secs() });
    }
    order.sort();
    Ok(order.into_iter().map(|(_, _, i)| out[i].clone()).collect())
}

/// Deletes all but the newest `keep` backups; returns what was removed.
///
/// # Errors
/// When listing or deleting fails.
pub fn apply_retention(db_path: &Path, keep: usize) -> io::Result<Vec<PathBuf>> {
    let all = list_backups(db_path)?;
    let excess = all.len().saturating_sub(keep);
    let mut removed = Vec::with_capacity(excess);
    for b in all.into_iter().take(excess) {
        fs::remove_file(&b.path)?;
        removed.push(b.path);
    }
    Ok(removed)
}

/// `1234567` → `1,234,567` (the notes' sample output).
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_separators() {
        assert_eq!(utc_stamp(0), "19700101_000000");
        assert_eq!(utc_stamp(951_782_400), "20000229_000000");
        assert_eq!(utc_stamp(1_798_761_599), "20261231_235959");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_250), "1,250");
        assert_eq!(thousands(123_456), "123,456");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(clean_label("before bulk/delete"), "before-bulk-delete");
        assert_eq!(clean_label(""), "manual");
    }

    #[test]
    fn backups_are_named_listed_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let mut made = Vec::new();
        for label in ["a", "b", "c"] {
            let p = new_backup_path(&db, label).unwrap();
            fs::write(&p, b"x").unwrap();
            made.push(p);
        }
        fs::write(backup_dir(&db).join("other_20260101_000000_x.db"), b"x").unwrap();
        fs::write(backup_dir(&db).join("app_notes.txt"), b"x").unwrap();
        let names: Vec<_> = list_backups(&db).unwrap().into_iter().map(|b| b.path).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        let removed = apply_retention(&db, 1).unwrap();
        assert_eq!(removed.len(), 2);
        assert_eq!(list_backups(&db).unwrap().len(), 1);
        let name = made[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("app_") && name.ends_with("_a.db"), "{name}");
    }

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
