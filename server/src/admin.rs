//! Operations that need no writer: statistics, verification and backups run on
//! their own read-only connections in the requesting client's thread, so the
//! writer is never stalled by them.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use litebroker_client::ops;
use litebroker_protocol::{
    BackupReport, BrokerStatus, DbStats, ErrorInfo, ErrorKind, VerifyReport, WriterFigures,
};
use tracing::info;

use crate::shared::Shared;

fn internal(what: &str, e: impl std::fmt::Display) -> ErrorInfo {
    ErrorInfo::new(ErrorKind::Internal, format!("{what}: {e}"))
}

/// Database figures plus the broker's own.
///
/// # Errors
/// When the database cannot be read.
pub fn stats(shared: &Shared, status: BrokerStatus) -> Result<DbStats, ErrorInfo> {
    let db = Path::new(&shared.db_path);
    let conn = ops::open_read_only(db).map_err(|e| internal("stats", e))?;
    let mut stats =
        ops::db_stats(&conn, db, shared.config.wal_warn_bytes).map_err(|e| internal("stats", e))?;
    let c = &shared.counters;
    stats.broker = Some(status);
    stats.writer = Some(WriterFigures {
        committed_requests: c.committed_requests.load(Ordering::Relaxed),
        max_requests_per_commit: c.max_group.load(Ordering::Relaxed),
        lock_waits: c.lock_waits.load(Ordering::Relaxed),
        lock_retries: c.lock_retries.load(Ordering::Relaxed),
        last_checkpoint: shared.last_checkpoint(),
        wal_warn_bytes: shared.config.wal_warn_bytes,
        // The table is absent when request ids are disabled.
        request_ids_recorded: crate::requests::count(&conn).unwrap_or(0),
        deduplicated: c.deduplicated.load(Ordering::Relaxed),
    });
    Ok(stats)
}

/// `integrity_check` and `foreign_key_check` on a read-only connection.
///
/// # Errors
/// When the database cannot be read.
pub fn verify(shared: &Shared) -> Result<VerifyReport, ErrorInfo> {
    let db = Path::new(&shared.db_path);
    let conn = ops::open_read_only(db).map_err(|e| internal("verify", e))?;
    ops::verify(&conn, db).map_err(|e| internal("verify", e))
}

/// An online, consistent backup with `VACUUM INTO` from a read-only connection:
/// its read transaction is a snapshot, and the writer goes on committing meanwhile.
/// The copy is checked with `integrity_check`, then the retention rule applied.
/// `progress(done_bytes, total_bytes)` is called about every 200 ms; it returns
/// false when the client is gone.
///
/// # Errors
/// When the copy or its check fails (the partial file is removed).
pub fn backup(
    shared: &Shared,
    label: &str,
    keep: u32,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<BackupReport, ErrorInfo> {
    let started = Instant::now();
    let db = Path::new(&shared.db_path);
    let dest = ops::new_backup_path(db, label).map_err(|e| internal("backup folder", e))?;
    let src = ops::open_read_only(db).map_err(|e| internal("backup", e))?;
    let total = src
        .query_row("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| internal("backup", e))? as u64;
    let dest_text = dest.to_string_lossy().into_owned();
    let copied = std::thread::scope(|s| {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        s.spawn(move || {
            let _ = done_tx.send(src.execute("VACUUM INTO ?1", [dest_text]));
        });
        let mut client_gone = false;
        loop {
            // The copy has no progress callback; the growing output file is the
            // measure, sampled while the copy thread works.
            match done_rx.recv_timeout(Duration::from_millis(200)) {
                Ok(r) => break Some(r),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !client_gone => {
                    client_gone = !progress(ops::file_size(&dest).min(total), total);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    });
    let fail = |msg: String| {
        let _ = std::fs::remove_file(&dest);
        ErrorInfo::new(ErrorKind::Internal, msg)
    };
    match copied {
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            let mut info = crate::sqlexec::sql_error(&e);
            info.message = format!("backup to {} failed: {}", dest.display(), info.message);
            let _ = std::fs::remove_file(&dest);
            return Err(info);
        }
        None => return Err(fail(format!("backup to {} failed: the copy thread panicked", dest.display()))),
    }
    let check = ops::open_read_only(&dest).and_then(|c| ops::verify(&c, &dest));
    match check {
        Ok(r) if r.integrity_problems.is_empty() => {}
        Ok(r) => {
            return Err(ErrorInfo::new(
                ErrorKind::VerificationFailed,
                format!(
                    "the backup {} failed its integrity check: {}",
                    dest.display(),
                    r.integrity_problems.join("; ")
                ),
            ))
        }
        Err(e) => return Err(fail(format!("cannot check the backup {}: {e}", dest.display()))),
    }
    let removed = if keep > 0 {
        ops::apply_retention(db, keep as usize).map_err(|e| internal("backup retention", e))?
    } else {
        Vec::new()
    };
    let bytes = ops::file_size(&dest);
    info!(path = %dest.display(), bytes, removed = removed.len(), "backup written");
    Ok(BackupReport {
        path: dest.to_string_lossy().into_owned(),
        bytes,
        duration_ms: started.elapsed().as_millis() as u64,
        removed: removed.into_iter().map(|p| p.to_string_lossy().into_owned()).collect(),
    })
}

/// Checks a file before it is restored: it must exist, not be the database itself,
/// and pass the SQLite header, integrity and foreign-key checks.
///
/// # Errors
/// [`ErrorKind::VerificationFailed`] saying why the file is refused.
pub fn check_restore(shared: &Shared, path: &str) -> Result<PathBuf, ErrorInfo> {
    let refuse = |msg: String| ErrorInfo::new(ErrorKind::VerificationFailed, msg);
    let p = litebroker_client::locate::canonicalize(Path::new(path))
        .map_err(|e| refuse(format!("cannot restore {path}: {e}")))?;
    if p == Path::new(&shared.db_path) {
        return Err(refuse(format!("{path} is the database itself; restore from a backup copy")));
    }
    ops::check_restore_source(&p).map_err(|m| refuse(format!("refusing to restore: {m}")))?;
    Ok(p)
}
