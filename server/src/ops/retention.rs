//! Deleting backups: the debris that interrupted copies leave in the backups
//! folder, and the finished backups beyond what the retention keeps.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::backup::{
    backup_dir, db_stem, is_backup_name, list_backups, sidecar, temp_writer, SIDECARS, TEMP_STALE_AFTER,
};
use super::files::file_size;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    use crate::ops::backup::{new_backup_path, write_backup};
    use crate::ops::test_db::{blobs, filled, names};

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
