//! Schema migrations, applied by the writer: each migration whose version is
//! above `PRAGMA user_version` runs, in order, in its own transaction that also
//! sets `user_version`, so a migration is applied exactly once however many
//! callers ask for it. A migration may take long (an index over a big table): it
//! is bounded by its caller's deadline, not by `--max-statement-secs`.

use std::time::Instant;

use litebroker_protocol::{ErrorInfo, ExecResult, Migration, MigrationReport};
use tracing::info;

use super::core::Core;
use crate::guard;
use crate::sql::authorizer;
use crate::sql::exec::{run_sql, sql_error, Mode, Tracker};
use crate::texts;

/// Applies the migrations above the database's version (see the module's doc).
///
/// # Errors
/// The first failing migration's error (it was rolled back; those before it stay
/// applied), or why writes are refused.
pub(super) fn migrate(
    core: &mut Core,
    migrations: &[Migration],
    deadline: Instant,
) -> Result<MigrationReport, ErrorInfo> {
    let from_version = core.db.user_version();
    let mut applied = Vec::new();
    for m in migrations.iter().filter(|m| m.version > from_version) {
        if let Some(e) = core.writes_refused() {
            return Err(e);
        }
        core.begin_immediate(deadline)?;
        let limits = core.limits(deadline);
        let mut tracker = Tracker::new(Mode::OneShot);
        let mut out = ExecResult::default();
        let db = &core.db;
        db.arm_deadline(Some(deadline));
        let r = run_sql(db.conn(), &m.sql, &[], &mut tracker, &limits, &mut out)
            .and_then(|()| tracker.finish())
            .and_then(|()| {
                authorizer::internal(|| {
                    db.conn().execute_batch(&format!("PRAGMA user_version = {} /* _litebroker */", m.version))
                })
                .map_err(|e| sql_error(&e))
            })
            .and_then(|()| guard::connection_state(db.conn(), true).map_err(|what| texts::state_left(&what)))
            .and_then(|()| db.commit().map_err(|e| sql_error(&e)));
        db.arm_deadline(None);
        if let Err(e) = r {
            db.rollback_if_open();
            core.refresh_schema_version();
            return Err(texts::migration_failed(e, m.version, &m.name, core.db.user_version()));
        }
        info!(version = m.version, name = %m.name, "migration applied");
        applied.push(m.version);
        core.committed();
        core.refresh_schema_version();
    }
    core.db.conn().flush_prepared_statement_cache();
    Ok(MigrationReport { from_version, to_version: core.db.user_version(), applied })
}
