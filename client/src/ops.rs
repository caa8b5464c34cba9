//! Operations shared by the broker and the CLI: database statistics, verification,
//! backup files (naming, listing, retention) and checks of a file to restore.
//! They work on plain read-only connections, so the CLI can run them without a
//! broker and the broker runs them without stalling its writer.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
const SIDECARS: [&str; 3] = ["-journal", "-wal", "-shm"];

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

fn sidecar(main: &Path, suffix: &str) -> PathBuf {
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
fn is_backup_name(prefix: &str, name: &str) -> bool {
    let stamp = name.get(prefix.len()..prefix.len() + 15).unwrap_or("");
    name.starts_with(prefix)
        && name.ends_with(".db")
        && stamp.len() == 15
        && stamp.bytes().enumerate().all(|(i, b)| if i == 8 { b == b'_' } else { b.is_ascii_digit() })
}

/// The writer's pid of a temporary backup name (`<final name>.tmp-<pid>-<n>`).
fn temp_writer(prefix: &str, name: &str) -> Option<u32> {
    let (main, rest) = name.split_once(TEMP_INFIX)?;
    let (pid, n) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !is_backup_name(prefix, &format!("{main}.db")) || !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

/// `name` without a `-journal`/`-wal`/`-shm` suffix, when it has one.
fn sidecar_of(name: &str) -> Option<&str> {
    SIDECARS.iter().find_map(|s| name.strip_suffix(s))
}

/// A file's age since its last modification; zero when unknown.
fn age(p: &Path) -> Duration {
    fs::metadata(p).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).unwrap_or_default()
}

/// Deletes what interrupted backups left in the backups folder of `db_path` and
/// returns what it removed:
///
/// - temporary files of [`write_backup`] whose writer process is gone, or that
///   did not change for [`TEMP_STALE_AFTER`] (its pid may belong to another
///   process by now), with their `-journal`;
/// - `-journal`, `-wal` and `-shm` files of backups that are not in use: SQLite
///   settles them first (a hot journal is rolled back: a copy interrupted by a
///   crash becomes empty and is deleted, a finished backup that someone modified
///   gets its content back), then leftovers are deleted.
///
/// Files another process is using are left alone. Removal is best effort: a file
/// that cannot be deleted stays for the next sweep.
///
/// # Errors
/// When the folder exists but cannot be read.
pub fn sweep_backup_debris(db_path: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = backup_dir(db_path);
    let prefix = format!("{}_", db_stem(db_path));
    let names: Vec<String> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    let remove = |p: PathBuf, removed: &mut Vec<PathBuf>| {
        if fs::remove_file(&p).is_ok() {
            removed.push(p);
        }
    };
    for name in &names {
        if let Some(pid) = temp_writer(&prefix, name) {
            let p = dir.join(name);
            if !litebroker_protocol::host::pid_alive(pid) || age(&p) > TEMP_STALE_AFTER {
                remove(p, &mut removed);
            }
        }
    }
    let mut settled = Vec::new();
    for name in &names {
        let Some(main) = sidecar_of(name) else { continue };
        let is_temp = temp_writer(&prefix, main).is_some();
        if !is_temp && !is_backup_name(&prefix, main) {
            continue;
        }
        let main_path = dir.join(main);
        if !main_path.exists() {
            // A temporary file always outlives its journal, so this is an orphan.
            remove(dir.join(name), &mut removed);
        } else if !is_temp && !settled.iter().any(|m| m == main) {
            settled.push(main.to_owned());
            removed.extend(settle_backup(&main_path));
        }
    }
    Ok(removed)
}

/// Lets SQLite settle a backup that has `-journal`/`-wal`/`-shm` files beside it
/// and deletes what is left over; returns the files that are gone. A hot journal
/// is rolled back: a copy interrupted by a crash, which began as an empty file,
/// becomes empty again and is deleted. A WAL is checkpointed and removed by
/// SQLite when it closes its last connection. Nothing happens when another
/// connection writes it.
fn settle_backup(main: &Path) -> Vec<PathBuf> {
    let before: Vec<PathBuf> = SIDECARS.iter().map(|s| sidecar(main, s)).filter(|p| p.exists()).collect();
    let Ok(conn) = Connection::open_with_flags(
        main,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return Vec::new();
    };
    // In use means busy: never wait for it.
    if conn.busy_timeout(Duration::ZERO).is_err() {
        return Vec::new();
    }
    // Taking the write lock rolls back a hot journal, fails at once when a writer
    // is active, and keeps any other from starting while leftovers are removed.
    if conn.execute_batch("BEGIN IMMEDIATE").is_err() {
        return Vec::new();
    }
    let interrupted = file_size(main) == 0;
    let wal = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
        .is_ok_and(|m| m.eq_ignore_ascii_case("wal"));
    if !wal {
        // Nobody else writes while the lock is held, so a journal is a cold
        // leftover, and a database in rollback mode does not use an -shm.
        for p in &before {
            let _ = fs::remove_file(p);
        }
    }
    let _ = conn.execute_batch("ROLLBACK");
    drop(conn);
    let mut gone: Vec<PathBuf> = before.into_iter().filter(|p| !p.exists()).collect();
    if interrupted && fs::remove_file(main).is_ok() {
        gone.push(main.to_path_buf());
    }
    gone
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

/// Deletes the debris of interrupted backups ([`sweep_backup_debris`]), then all
/// but the newest `keep` finished backups; returns the backups removed.
///
/// # Errors
/// When listing or deleting fails.
pub fn apply_retention(db_path: &Path, keep: usize) -> io::Result<Vec<PathBuf>> {
    sweep_backup_debris(db_path)?;
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

    /// A database of `rows` rows of 1 kB in `path`.
    fn filled(path: &Path, rows: u32) {
        let c = Connection::open(path).unwrap();
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)").unwrap();
        c.execute(&format!("INSERT INTO t (v) {}", blobs(rows)), []).unwrap();
    }

    /// A SELECT of `n` random 1 kB blobs.
    fn blobs(n: u32) -> String {
        format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) SELECT randomblob(1000) FROM n")
    }

    /// Copies `main` and its journal to `to` while `change` runs inside a write
    /// transaction whose pages spilled to the file: what a crash at that moment leaves.
    fn crash_copy(main: &Path, to: &Path, change: &str) {
        let c = Connection::open(main).unwrap();
        c.execute_batch("PRAGMA cache_size = 10; BEGIN").unwrap();
        c.execute_batch(change).unwrap();
        assert!(sidecar(main, "-journal").exists(), "no journal: the change did not spill");
        fs::copy(main, to).unwrap();
        fs::copy(sidecar(main, "-journal"), sidecar(to, "-journal")).unwrap();
        c.execute_batch("ROLLBACK").unwrap();
    }

    fn names(paths: &[PathBuf]) -> Vec<String> {
        let mut v: Vec<String> =
            paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        v.sort();
        v
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

    #[test]
    fn debris_of_interrupted_backups_is_swept_and_never_listed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        filled(&db, 300);
        let bdir = backup_dir(&db);
        let good = write_backup(&db, &new_backup_path(&db, "good").unwrap(), &mut |_, _| {}).unwrap().path;
        let stem = |label: &str| format!("app_20260101_000000_{label}");

        // Temporary files: of a writer that is gone (no such pid), of this live
        // process, and of a live pid but untouched for too long.
        let dead = bdir.join(format!("{}.db.tmp-4000000001-1", stem("dead")));
        fs::write(&dead, b"partial").unwrap();
        fs::write(sidecar(&dead, "-journal"), b"journal").unwrap();
        let live = bdir.join(format!("{}.db.tmp-{}-7", stem("live"), std::process::id()));
        fs::write(&live, b"partial").unwrap();
        let stale = bdir.join(format!("{}.db.tmp-{}-8", stem("stale"), std::process::id()));
        fs::write(&stale, b"partial").unwrap();
        let old = SystemTime::now() - TEMP_STALE_AFTER - Duration::from_secs(60);
        fs::OpenOptions::new().write(true).open(&stale).unwrap().set_modified(old).unwrap();

        // A copy written straight to a backup's name and cut off by a crash: full
        // size, with a hot journal (what `VACUUM INTO` leaves).
        let empty = dir.path().join("empty.db");
        fs::write(&empty, b"").unwrap();
        let cut = bdir.join(format!("{}.db", stem("cut")));
        crash_copy(&empty, &cut, &format!("CREATE TABLE t (v BLOB); INSERT INTO t {}", blobs(300)));
        // A finished backup that someone changed, crashing mid-transaction: its
        // hot journal gives the backup back.
        let changed = bdir.join(format!("{}.db", stem("changed")));
        crash_copy(&good, &changed, "UPDATE t SET v = randomblob(1000)");
        // Strays: a journal without its database, a -wal/-shm beside a backup in
        // rollback mode.
        fs::write(bdir.join(format!("{}.db-journal", stem("gone"))), b"j").unwrap();
        fs::write(sidecar(&good, "-wal"), b"w").unwrap();
        fs::write(sidecar(&good, "-shm"), b"s").unwrap();

        let listed = |db: &Path| list_backups(db).unwrap().into_iter().map(|b| b.path).collect::<Vec<_>>();
        assert_eq!(
            names(&listed(&db)),
            names(std::slice::from_ref(&good)),
            "unfinished files are never listed"
        );

        let removed = sweep_backup_debris(&db).unwrap();
        let want = vec![
            dead.clone(),
            sidecar(&dead, "-journal"),
            stale.clone(),
            cut.clone(),
            sidecar(&cut, "-journal"),
            sidecar(&changed, "-journal"),
            bdir.join(format!("{}.db-journal", stem("gone"))),
            sidecar(&good, "-wal"),
            sidecar(&good, "-shm"),
        ];
        assert_eq!(names(&removed), names(&want));
        assert!(live.exists(), "a live writer's temporary file stays");
        assert!(!cut.exists() && !sidecar(&cut, "-journal").exists());
        assert!(!sidecar(&changed, "-journal").exists(), "the hot journal was rolled back");
        assert_eq!(names(&listed(&db)), names(&[good.clone(), changed.clone()]));
        let c = Connection::open(&changed).unwrap();
        assert_eq!(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 300);

        // A backup in use by a writer is left alone.
        let busy = Connection::open(&changed).unwrap();
        busy.execute_batch("PRAGMA cache_size = 10; BEGIN; UPDATE t SET v = randomblob(1000)").unwrap();
        assert!(sweep_backup_debris(&db).unwrap().is_empty());
        assert!(sidecar(&changed, "-journal").exists());
        busy.execute_batch("ROLLBACK").unwrap();
    }
}
