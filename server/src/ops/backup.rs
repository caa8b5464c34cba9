//! Backup files: their names (`<stem>_<YYYYMMDD_HHMMSS>_<label>.db` in the
//! database's `backups/` folder), writing one under a temporary name so that a
//! name always means a complete, checked copy, and listing the finished ones.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use super::files::{file_size, open_read_only};

/// `<db folder>/backups`.
pub fn backup_dir(db_path: &Path) -> PathBuf {
    db_path.parent().unwrap_or_else(|| Path::new(".")).join("backups")
}

pub(super) fn db_stem(db_path: &Path) -> String {
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
    Ok(free_name(&dir.join(format!("{base}.db"))))
}

/// `path` when nothing has that name, else `<stem>-2.db`, `<stem>-3.db`, … .
fn free_name(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
    let mut p = path.to_path_buf();
    let mut n = 2;
    while p.exists() {
        p = path.with_file_name(format!("{stem}-{n}.db"));
        n += 1;
    }
    p
}

/// How long a backup's temporary file may go unchanged before it counts as
/// abandoned even though a process with its writer's pid exists (pids are
/// reused). A writer touches its file at least every [`TEMP_HEARTBEAT`].
pub const TEMP_STALE_AFTER: Duration = Duration::from_secs(300);

/// How often [`write_backup`] touches its temporary file while it works: the
/// integrity check of a large copy writes nothing for minutes.
pub const TEMP_HEARTBEAT: Duration = Duration::from_secs(30);

/// Infix of temporary backup names: `<final name>.tmp-<pid>-<n>`.
const TEMP_INFIX: &str = ".db.tmp-";

/// The files SQLite keeps beside a database.
pub(super) const SIDECARS: [&str; 3] = ["-journal", "-wal", "-shm"];

/// A backup that was written, checked and renamed to its final name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WrittenBackup {
    /// Its final path (the requested one, or a numbered variant when that was
    /// taken meanwhile).
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
}

/// Why [`write_backup`] failed; the temporary file is removed in every case and
/// the final name never appears.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The database to copy could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Source {
        /// The database.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// `VACUUM INTO` failed (a full disk is `SQLITE_FULL` here).
    #[error("backup to {} failed: {source}", path.display())]
    Copy {
        /// The final path that was meant.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The copy could not be checked.
    #[error("cannot check the backup {}: {source}", path.display())]
    Check {
        /// The final path that was meant.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The copy failed its `integrity_check`.
    #[error("the backup {} failed its integrity check: {}", path.display(), problems.join("; "))]
    Integrity {
        /// The final path that was meant.
        path: PathBuf,
        /// What `integrity_check` reported.
        problems: Vec<String>,
    },
    /// Creating, syncing or renaming the file failed.
    #[error("backup to {}: cannot {what}: {source}", path.display())]
    Io {
        /// The step that failed.
        what: &'static str,
        /// The final path that was meant.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The thread running the copy panicked.
    #[error("backup to {}: the copy thread panicked", path.display())]
    Panicked {
        /// The final path that was meant.
        path: PathBuf,
    },
}

impl BackupError {
    /// SQLite's error, when SQLite reported the failure.
    pub fn sqlite(&self) -> Option<&rusqlite::Error> {
        match self {
            BackupError::Source { source, .. }
            | BackupError::Copy { source, .. }
            | BackupError::Check { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Writes a consistent copy of the database at `db` to `dest` (from
/// [`new_backup_path`]): `VACUUM INTO` a temporary name in the same folder
/// (`<dest>.tmp-<pid>-<n>`, never listed by [`list_backups`]), `integrity_check`
/// it, fsync it, then rename it to `dest`. So a file under a backup's name is
/// always complete and checked; an interrupted copy leaves only a temporary file,
/// which [`sweep_backup_debris`] deletes once its writer is gone.
///
/// The copy is read from its own read-only connection: a snapshot, while other
/// connections go on writing. `progress(done_bytes, total_bytes)` is called about
/// every 200 ms from the calling thread.
///
/// # Errors
/// See [`BackupError`]; the temporary file is removed.
pub fn write_backup(
    db: &Path,
    dest: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<WrittenBackup, BackupError> {
    let src = open_read_only(db).map_err(|source| BackupError::Source { path: db.into(), source })?;
    let total = src
        .query_row("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|source| BackupError::Source { path: db.into(), source })? as u64;
    let temp = temp_name(dest);
    let io_err = |what| move |source| BackupError::Io { what, path: dest.to_path_buf(), source };
    // Created before the copy, so that a sweep sees it (and its writer's pid)
    // from the start; VACUUM INTO accepts an empty file.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(io_err("create its temporary file"))?;
    let result = copy_and_check(src, &temp, dest, total, progress).and_then(|()| {
        // Synced before the rename: after a power loss the final name never
        // points at a copy whose pages did not reach the disk.
        fs::OpenOptions::new()
            .write(true)
            .open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(io_err("sync it"))?;
        let path = free_name(dest);
        fs::rename(&temp, &path).map_err(io_err("rename its temporary file"))?;
        sync_dir(dest.parent().unwrap_or_else(|| Path::new(".")));
        Ok(WrittenBackup { bytes: file_size(&path), path })
    });
    if result.is_err() {
        remove_with_sidecars(&temp);
    }
    result
}

/// `<dest>.tmp-<pid>-<n>`, unique within this process too (the broker runs
/// backups on several connection threads).
fn temp_name(dest: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    dest.with_file_name(name)
}

/// VACUUM INTO and integrity_check on a helper thread, while this thread reports
/// progress and keeps the temporary file's modification time fresh.
fn copy_and_check(
    src: Connection,
    temp: &Path,
    dest: &Path,
    total: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), BackupError> {
    let dest_buf = dest.to_path_buf();
    let work = move || -> Result<(), BackupError> {
        let temp_text = temp.to_string_lossy().into_owned();
        src.execute("VACUUM INTO ?1", [temp_text])
            .map_err(|source| BackupError::Copy { path: dest_buf.clone(), source })?;
        drop(src);
        let check = |source| BackupError::Check { path: dest_buf.clone(), source };
        let conn = open_read_only(temp).map_err(check)?;
        let problems: Vec<String> = {
            let mut st = conn.prepare("PRAGMA integrity_check").map_err(check)?;
            let rows = st.query_map([], |r| r.get(0)).map_err(check)?;
            rows.collect::<rusqlite::Result<_>>().map_err(check)?
        };
        if problems.len() == 1 && problems[0] == "ok" {
            Ok(())
        } else {
            Err(BackupError::Integrity { path: dest_buf, problems })
        }
    };
    std::thread::scope(|s| {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        s.spawn(move || {
            let _ = done_tx.send(work());
        });
        let mut touched = Instant::now();
        loop {
            match done_rx.recv_timeout(Duration::from_millis(200)) {
                Ok(r) => break r,
                Err(RecvTimeoutError::Disconnected) => {
                    break Err(BackupError::Panicked { path: dest.to_path_buf() })
                }
                Err(RecvTimeoutError::Timeout) => {
                    // VACUUM INTO has no progress callback; the growing file is the measure.
                    progress(file_size(temp).min(total), total);
                    if touched.elapsed() >= TEMP_HEARTBEAT {
                        touch(temp);
                        touched = Instant::now();
                    }
                }
            }
        }
    })
}

/// Sets a file's modification time to now, without opening it: on Unix, closing
/// any descriptor of a file drops every POSIX lock this process holds on it,
/// SQLite's included.
fn touch(p: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) {
            // SAFETY: a valid NUL-terminated path; a null `times` means "now".
            unsafe {
                libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0);
            }
        }
    }
    #[cfg(not(unix))]
    {
        // Windows locks belong to handles, so a second handle is harmless.
        if let Ok(f) = fs::OpenOptions::new().write(true).open(p) {
            let _ = f.set_modified(SystemTime::now());
        }
    }
}

/// Makes a rename in `dir` durable (Unix; Windows has no directory sync).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

pub(super) fn sidecar(main: &Path, suffix: &str) -> PathBuf {
    let mut name = main.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    main.with_file_name(name)
}

fn remove_with_sidecars(main: &Path) {
    let _ = fs::remove_file(main);
    for s in SIDECARS {
        let _ = fs::remove_file(sidecar(main, s));
    }
}

/// `<stem>_YYYYMMDD_HHMMSS_<label>.db`: the date must follow the stem, so backups
/// of `app_x.db` are not mistaken for those of `app.db`.
pub(super) fn is_backup_name(prefix: &str, name: &str) -> bool {
    let stamp = name.get(prefix.len()..prefix.len() + 15).unwrap_or("");
    name.starts_with(prefix)
        && name.ends_with(".db")
        && stamp.len() == 15
        && stamp.bytes().enumerate().all(|(i, b)| if i == 8 { b == b'_' } else { b.is_ascii_digit() })
}

/// The writer's pid of a temporary backup name (`<final name>.tmp-<pid>-<n>`).
pub(super) fn temp_writer(prefix: &str, name: &str) -> Option<u32> {
    let (main, rest) = name.split_once(TEMP_INFIX)?;
    let (pid, n) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !is_backup_name(prefix, &format!("{main}.db")) || !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
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

/// The finished backups of `db_path`, oldest first: neither temporary files of
/// copies in progress or interrupted, nor backups with a `-journal` beside them
/// (being written, or interrupted; [`sweep_backup_debris`] settles them).
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
        if !is_backup_name(&prefix, &name) || sidecar(&entry.path(), "-journal").exists() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_db::{filled, names};

    #[test]
    fn stamps_and_labels() {
        assert_eq!(utc_stamp(0), "19700101_000000");
        assert_eq!(utc_stamp(951_782_400), "20000229_000000");
        assert_eq!(utc_stamp(1_798_761_599), "20261231_235959");
        assert_eq!(clean_label("before bulk/delete"), "before-bulk-delete");
        assert_eq!(clean_label(""), "manual");
    }

    #[test]
    fn a_backup_appears_under_its_name_only_when_written_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        filled(&db, 500);
        let dest = new_backup_path(&db, "t").unwrap();
        let mut calls = 0;
        let w = write_backup(&db, &dest, &mut |_, _| calls += 1).unwrap();
        assert_eq!(w.path, dest);
        assert_eq!(w.bytes, file_size(&dest));
        let c = Connection::open(&dest).unwrap();
        assert_eq!(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 500);
        let left =
            names(&fs::read_dir(backup_dir(&db)).unwrap().map(|e| e.unwrap().path()).collect::<Vec<_>>());
        assert_eq!(left, names(std::slice::from_ref(&dest)), "only the finished backup remains");

        // A name taken while the copy ran gets a number.
        let w2 = write_backup(&db, &dest, &mut |_, _| {}).unwrap();
        assert_ne!(w2.path, dest);
        assert!(w2.path.to_string_lossy().ends_with("_t-2.db"), "{}", w2.path.display());

        // A failed copy leaves nothing behind.
        let missing = dir.path().join("missing.db");
        assert!(matches!(write_backup(&missing, &dest, &mut |_, _| {}), Err(BackupError::Source { .. })));
        assert_eq!(list_backups(&db).unwrap().len(), 2);
        assert_eq!(fs::read_dir(backup_dir(&db)).unwrap().count(), 2);
    }
}
