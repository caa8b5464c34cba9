//! Database figures (file and WAL sizes, pages, the journal mode, tables and
//! indexes with row counts; without the broker's own figures) and the warning for
//! a WAL that readers keep pinned.

use std::path::Path;

use litebroker_protocol::{DbStats, TableCount};
use rusqlite::Connection;

use super::files::{file_size, wal_path};

/// The default WAL size of concern (100 MB, `--wal-warn-mb`): a WAL that stays
/// above it after checkpoints is being pinned by readers (an open read transaction
/// or an unfinished statement), which keeps it from being reset.
pub const DEFAULT_WAL_WARN_BYTES: u64 = 100_000_000;

/// Database figures: sizes, pages, journal mode, schema version, the tables (the
/// broker's own `_litebroker…` ones left out) with their row counts, and the
/// warnings (a WAL over `wal_warn_bytes`).
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
