//! Operations on a database that need no writer: statistics, verification,
//! backup files (naming, writing, listing, retention) and the checks of a file to
//! restore. They work on plain read-only connections, so the broker runs them
//! without stalling its writer, and the `litebroker` CLI runs them when no broker
//! serves the database.

mod backup;
mod files;
mod retention;
mod stats;
#[cfg(test)]
mod test_db;
mod verify;

pub use backup::{
    backup_dir, civil_from_days, clean_label, list_backups, new_backup_path, utc_stamp, write_backup,
    BackupError, BackupFile, WrittenBackup, TEMP_HEARTBEAT, TEMP_STALE_AFTER,
};
pub use files::{file_size, open_read_only, wal_path};
pub use retention::{apply_retention, sweep_backup_debris};
pub use stats::{db_stats, wal_warning, DEFAULT_WAL_WARN_BYTES};
pub use verify::{check_restore_source, verify};
