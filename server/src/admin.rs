//! Operations that need no writer: statistics, verification and backups run on
//! their own read-only connections in the requesting client's thread, so the
//! writer is never stalled by them.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::ops;
use litebroker_protocol::{
    BackupReport, BrokerStatus, DbStats, ErrorInfo, ErrorKind, VerifyReport, WriterFigures,
};
use tracing::{info, warn};

use crate::shared::Shared;
use crate::texts;

fn internal(what: &str, e: impl std::fmt::Display) -> ErrorInfo {
    texts::operation_failed(what, &e)
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
        committed_requests: shared.metrics.group_size.sum(),
        max_requests_per_commit: c.max_group.load(Ordering::Relaxed),
        lock_waits: c.lock_waits.load(Ordering::Relaxed),
        lock_retries: c.lock_retries.load(Ordering::Relaxed),
        last_checkpoint: shared.last_checkpoint(),
        wal_warn_bytes: shared.config.wal_warn_bytes,
        // The table is absent when request ids are disabled.
        request_ids_recorded: crate::request_ids::count(&conn).unwrap_or(0),
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

/// An online, consistent backup (see [`ops::write_backup`]): `VACUUM INTO` a
/// temporary name from a read-only connection, whose read transaction is a
/// snapshot while the writer goes on committing; `integrity_check`ed, synced and
/// renamed to its final name. Debris of interrupted backups is swept first, the
/// retention rule applied last. `progress(done_bytes, total_bytes)` is called
/// about every 200 ms; it returns false when the client is gone.
///
/// # Errors
/// When the copy or its check fails (nothing is left under a backup's name).
pub fn backup(
    shared: &Shared,
    label: &str,
    keep: u32,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<BackupReport, ErrorInfo> {
    let started = Instant::now();
    let db = Path::new(&shared.db_path);
    match ops::sweep_backup_debris(db) {
        Ok(debris) if !debris.is_empty() => {
            info!(files = ?debris, "removed the debris of interrupted backups");
        }
        Ok(_) => {}
        Err(e) => warn!("cannot sweep the backups folder: {e}"),
    }
    let dest = ops::new_backup_path(db, label).map_err(|e| internal("backup folder", e))?;
    let mut client_gone = false;
    let written = ops::write_backup(db, &dest, &mut |done, total| {
        if !client_gone {
            client_gone = !progress(done, total);
        }
    })
    .map_err(|e| {
        shared.metrics.backed_up(None);
        backup_error(&e)
    })?;
    shared.metrics.backed_up(Some(written.bytes));
    let removed = if keep > 0 {
        ops::apply_retention(db, keep as usize).map_err(|e| internal("backup retention", e))?
    } else {
        Vec::new()
    };
    info!(path = %written.path.display(), bytes = written.bytes, removed = removed.len(), "backup written");
    Ok(BackupReport {
        path: written.path.to_string_lossy().into_owned(),
        bytes: written.bytes,
        duration_ms: started.elapsed().as_millis() as u64,
        removed: removed.into_iter().map(|p| p.to_string_lossy().into_owned()).collect(),
    })
}

/// The typed answer for a failed backup: SQLite's class when SQLite failed (a
/// full disk stays `DiskFull`), `VerificationFailed` for a copy that failed its check.
pub fn backup_error(e: &ops::BackupError) -> ErrorInfo {
    let kind = match e {
        ops::BackupError::Integrity { .. } => ErrorKind::VerificationFailed,
        e => match e.sqlite() {
            Some(sqlite) => crate::sql::exec::sql_error(sqlite).kind,
            None => ErrorKind::Internal,
        },
    };
    ErrorInfo {
        kind,
        message: e.to_string(),
        sqlite: e.sqlite().and_then(|s| crate::sql::exec::sql_error(s).sqlite),
    }
}

/// Checks a file before it is restored: it must exist, not be the database itself,
/// and pass the SQLite header, integrity and foreign-key checks.
///
/// # Errors
/// [`ErrorKind::VerificationFailed`] saying why the file is refused.
pub fn check_restore(shared: &Shared, path: &str) -> Result<PathBuf, ErrorInfo> {
    let p = litebroker_protocol::rendezvous::canonicalize(Path::new(path))
        .map_err(|e| texts::restore_path(path, &e))?;
    if p == Path::new(&shared.db_path) {
        return Err(texts::restore_from_itself(path));
    }
    ops::check_restore_source(&p).map_err(|m| texts::restore_unsound(&m))?;
    Ok(p)
}
