//! Restoring the database from a verified file while holding the writer: a safety
//! copy first (`pre-restore`, written under a temporary name and renamed once
//! checked), then SQLite's backup API in one step, which is one write
//! transaction, so a failure leaves the database as it was and other processes'
//! readers see the restored data on their next read. A file whose page size
//! differs (WAL mode cannot change it), or whose `_litebroker…` objects the broker
//! did not make, is refused.

use std::path::{Path, PathBuf};
use std::time::Instant;

use litebroker_protocol::{ErrorInfo, RestoreReport};
use rusqlite::Connection;
use tracing::{info, warn};

use super::core::Core;
use crate::ops;
use crate::request_ids;
use crate::sql::authorizer;
use crate::texts;

/// Replaces the database's content with `source` (checked by the connection that
/// asked, see `admin::check_restore`).
///
/// # Errors
/// Why the file is refused, or what failed (the database is then unchanged).
pub(super) fn restore(core: &mut Core, source: &Path) -> Result<RestoreReport, ErrorInfo> {
    let started = Instant::now();
    let db = PathBuf::from(&core.shared.db_path);
    let internal = texts::restore_failed;
    let src = ops::open_read_only(source).map_err(|e| internal("cannot open the source", &e))?;
    let page_size = |c: &Connection| c.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0));
    let (theirs, ours) = (
        page_size(&src).map_err(|e| internal("cannot read the source", &e))?,
        page_size(core.db.conn()).map_err(|e| internal("cannot read the database", &e))?,
    );
    if theirs != ours {
        return Err(texts::restore_page_size(&source.display().to_string(), theirs, ours));
    }
    // The broker's reserved names must be its own in the file it is to serve.
    match request_ids::foreign_objects(&src) {
        Ok(None) => {}
        Ok(Some(what)) => return Err(texts::restore_refused(&source.display().to_string(), &what)),
        Err(e) => return Err(internal("cannot read the source", &e)),
    }
    // Written under a temporary name and renamed once checked, so that an
    // interrupted restore never leaves a broken file listed as a backup.
    let safety = ops::new_backup_path(&db, "pre-restore").map_err(|e| internal("safety backup", &e))?;
    let safety = ops::write_backup(&db, &safety, &mut |_, _| {})
        .map_err(|e| internal("safety backup failed", &e))?
        .path;
    let pages = {
        let backup = rusqlite::backup::Backup::new(&src, core.db.conn_mut())
            .map_err(|e| internal("cannot start the copy", &e))?;
        match backup.step(-1) {
            Ok(rusqlite::backup::StepResult::Done) => backup.progress().pagecount as u64,
            Ok(other) => return Err(internal("the copy did not finish", &format!("{other:?}"))),
            Err(e) => return Err(internal("the copy failed", &e)),
        }
    };
    // A source in rollback-journal mode carries that mode in its header.
    let mode: String =
        authorizer::internal(|| core.db.conn().query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)))
            .map_err(|e| internal("cannot re-enable WAL", &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        warn!("after the restore the database is in journal mode {mode}, not WAL");
    }
    core.db.conn().flush_prepared_statement_cache();
    core.refresh_schema_version();
    core.committed();
    // Watchers reload: every row may differ now. The copy wrote through this
    // connection, so data_version is read afresh.
    core.db.reset_data_version();
    core.shared.feed.publish_resync(litebroker_protocol::ResyncReason::Restore);
    let Core { db: writer_db, shared, upkeep, .. } = core;
    upkeep.restored(writer_db, shared);
    info!(from = %source.display(), safety = %safety.display(), pages, "database restored");
    Ok(RestoreReport {
        restored_from: source.to_string_lossy().into_owned(),
        safety_backup: safety.to_string_lossy().into_owned(),
        pages,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}
