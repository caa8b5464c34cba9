//! What client SQL may do on the broker's writer connection.
//!
//! The writer connection is shared by every client and holds the only write lock,
//! so a statement that would reach other files (ATTACH, VACUUM INTO, extensions),
//! weaken the database for everyone (journal mode, synchronous, foreign keys,
//! locking mode, writable schema, query_only, any other connection setting), or
//! touch the broker's own tables (`_litebroker*`) is refused with
//! [`ErrorKind::NotAllowed`] and a message naming the action. Ordinary DDL and DML
//! stay allowed.
//!
//! Most checks run in an SQLite authorizer, which sees every action while a
//! statement is prepared. `VACUUM` shows the authorizer nothing at prepare time,
//! so [`check_text`] recognises it from the statement's text.
//!
//! # The broker's own statements
//! Statements the broker itself runs on the writer connection and that a client
//! may not (`PRAGMA wal_checkpoint`, restoring WAL mode, writes to
//! `_litebroker_requests`, …) must run inside [`internal`]:
//!
//! ```ignore
//! authorizer::internal(|| conn.prepare_cached(SQL)?.execute(params))
//! ```
//!
//! Wrap the whole use of the statement (prepare **and** step), not only its
//! preparation: SQLite re-prepares a cached statement inside `sqlite3_step` after
//! any schema change, and asks the authorizer again at that moment.
//! `BEGIN`/`COMMIT`/`ROLLBACK`, `SAVEPOINT`/`RELEASE` and reading PRAGMAs
//! (`PRAGMA user_version`, `PRAGMA page_size`) are allowed anyway.

use std::cell::{Cell, RefCell};

use litebroker_protocol::{ErrorInfo, ErrorKind};
use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;

/// Tables, indexes, triggers and views whose names start with this belong to the
/// broker: clients may read them, never write, create, alter or drop them.
pub const RESERVED_PREFIX: &str = "_litebroker";

thread_local! {
    // Thread-local rather than per connection: the authorizer runs synchronously on
    // the thread that prepares or steps a statement, and the writer connection is
    // used by one thread at a time (the writer thread, or a connection thread
    // serving the queue, always under the writer's mutex), so the flag and the
    // denial belong to the thread running the statement.
    static INTERNAL: Cell<u32> = const { Cell::new(0) };
    static DENIAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f` as the broker itself: the authorizer allows everything meanwhile.
/// Nestable; the flag is restored even if `f` panics.
pub fn internal<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            INTERNAL.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    INTERNAL.with(|d| d.set(d.get() + 1));
    let _reset = Reset;
    f()
}

fn is_internal() -> bool {
    INTERNAL.with(Cell::get) > 0
}

/// The reason of the last denial on this thread, consumed by the error mapping
/// (`sqlexec::sql_error`), which otherwise only has SQLite's "not authorized".
pub fn take_denial() -> Option<String> {
    DENIAL.with(|d| d.borrow_mut().take())
}

fn record(reason: String) {
    // The first denial names the cause; SQLite may keep parsing and ask again.
    DENIAL.with(|d| {
        d.borrow_mut().get_or_insert(reason);
    });
}

/// Installs the authorizer and SQLite's defensive mode on the writer connection.
/// Call it after the connection's own PRAGMAs ran.
///
/// # Errors
/// When SQLite refuses either setting.
pub fn install(conn: &mut Connection) -> rusqlite::Result<()> {
    // Defensive mode is SQLite's own guard against deliberate corruption
    // (writable_schema, shadow tables of virtual tables, schema_version writes):
    // a second line behind the authorizer.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.authorizer(Some(|ctx: AuthContext<'_>| {
        if is_internal() {
            return Authorization::Allow;
        }
        match decide(&ctx) {
            Ok(()) => Authorization::Allow,
            Err(reason) => {
                record(reason);
                Authorization::Deny
            }
        }
    }))
}

/// Checks what the authorizer cannot see: `VACUUM` (with or without `INTO`) makes
/// no authorizer call while it is prepared. Also forgets any stale denial.
///
/// # Errors
/// [`ErrorKind::NotAllowed`] naming the statement.
pub fn check_text(sql: &str) -> Result<(), ErrorInfo> {
    DENIAL.with(|d| d.borrow_mut().take());
    let first = crate::sqlexec::words(sql).next().unwrap_or("");
    if first.eq_ignore_ascii_case("VACUUM") {
        return Err(not_allowed(
            "VACUUM is not allowed through the broker: VACUUM INTO would write a copy of the \
             database to a file of the client's choosing, and VACUUM cannot run inside the \
             broker's transaction; use `litebroker backup` for a consistent copy"
                .into(),
        ));
    }
    Ok(())
}

fn not_allowed(message: String) -> ErrorInfo {
    ErrorInfo::new(ErrorKind::NotAllowed, message)
}

/// Whether SQL text may name one of the broker's objects (`_litebroker…`).
pub fn mentions_reserved(sql: &str) -> bool {
    let p = RESERVED_PREFIX.as_bytes();
    sql.as_bytes().windows(p.len()).any(|w| w.eq_ignore_ascii_case(p))
}

fn reserved(name: &str) -> bool {
    name.len() >= RESERVED_PREFIX.len() && name[..RESERVED_PREFIX.len()].eq_ignore_ascii_case(RESERVED_PREFIX)
}

/// PRAGMAs that take an argument yet only report (or act on the data like a
/// statement would), and the settings that belong to the database file or the
/// current transaction rather than to the shared connection.
const PRAGMAS_WITH_ARGUMENT: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_info",
    "index_xinfo",
    "index_list",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
    "incremental_vacuum",
    "optimize",
    "user_version",
    "application_id",
    "defer_foreign_keys",
];

/// Why changing a PRAGMA is refused, for the ones worth a specific word.
fn pragma_reason(name: &str) -> &'static str {
    match name {
        "journal_mode" => {
            "the broker keeps the database in WAL mode, which its readers in other processes rely on"
        }
        "synchronous" => "durability is the broker's setting (litebrokerd --synchronous)",
        "foreign_keys" => "the broker keeps foreign keys enforced for every client",
        "locking_mode" => "EXCLUSIVE locking would shut every other process's readers out",
        "writable_schema" => "it allows editing sqlite_schema directly, which can corrupt the database",
        "query_only" => "it would make the broker's writer read-only for every client",
        "busy_timeout" => "the broker manages lock waits itself (--busy-timeout-ms and its retries)",
        "wal_checkpoint" => "the broker runs checkpoints itself; use `litebroker checkpoint`",
        "wal_autocheckpoint" | "journal_size_limit" => "WAL management is the broker's job",
        "temp_store_directory" | "data_store_directory" => {
            "it would make SQLite write files to another folder"
        }
        "schema_version" => "writing it can corrupt the database",
        "mmap_size" | "cache_size" | "cache_spill" | "soft_heap_limit" | "hard_heap_limit" | "threads" => {
            "it would change the memory use of the broker, which every client shares"
        }
        _ => "it would change a setting of the broker's writer connection, which every client's writes share",
    }
}

/// The authorizer's policy for a client statement.
fn decide(ctx: &AuthContext<'_>) -> Result<(), String> {
    let deny_reserved = |what: &str, name: &str| -> Result<(), String> {
        if reserved(name) {
            Err(format!(
                "{what} {name} is not allowed through the broker: objects named {RESERVED_PREFIX}… belong to \
                 the broker (clients may read them)"
            ))
        } else {
            Ok(())
        }
    };
    match ctx.action {
        AuthAction::Attach { filename } => Err(format!(
            "ATTACH is not allowed through the broker: it would let a client reach other files \
             ('{filename}'); only the broker's database is served"
        )),
        AuthAction::Detach { database_name } => Err(format!(
            "DETACH is not allowed through the broker (database '{database_name}'): the broker's \
             connection serves its one database only"
        )),
        AuthAction::Function { function_name } if function_name.eq_ignore_ascii_case("load_extension") => {
            Err("load_extension() is not allowed through the broker: it would load native code into \
                 the broker process"
                .into())
        }
        AuthAction::Pragma { pragma_name, pragma_value } => {
            let name = pragma_name.to_ascii_lowercase();
            let allowed = match pragma_value {
                // Reading a setting is harmless, but this one checkpoints when asked.
                None => name != "wal_checkpoint",
                Some(_) => PRAGMAS_WITH_ARGUMENT.contains(&name.as_str()),
            };
            if allowed {
                return Ok(());
            }
            let shown = match pragma_value {
                Some(v) => format!("PRAGMA {name} = {v}"),
                None => format!("PRAGMA {name}"),
            };
            Err(format!("{shown} is not allowed through the broker: {}", pragma_reason(&name)))
        }
        AuthAction::CreateTempTrigger { trigger_name, table_name } => {
            deny_reserved("CREATE TRIGGER on", table_name)?;
            Err(format!(
                "CREATE TEMP TRIGGER {trigger_name} is not allowed through the broker: it would live \
                 only in the broker's connection and act unseen on every client's writes; create a \
                 regular trigger"
            ))
        }
        AuthAction::Insert { table_name } => deny_reserved("INSERT INTO", table_name),
        AuthAction::Update { table_name, .. } => deny_reserved("UPDATE of", table_name),
        AuthAction::Delete { table_name } => deny_reserved("DELETE FROM", table_name),
        AuthAction::CreateTable { table_name } | AuthAction::CreateTempTable { table_name } => {
            deny_reserved("CREATE TABLE", table_name)
        }
        AuthAction::CreateIndex { index_name, table_name }
        | AuthAction::CreateTempIndex { index_name, table_name } => {
            deny_reserved("CREATE INDEX", index_name)?;
            deny_reserved("CREATE INDEX on", table_name)
        }
        AuthAction::CreateTrigger { trigger_name, table_name } => {
            deny_reserved("CREATE TRIGGER", trigger_name)?;
            deny_reserved("CREATE TRIGGER on", table_name)
        }
        AuthAction::CreateView { view_name } | AuthAction::CreateTempView { view_name } => {
            deny_reserved("CREATE VIEW", view_name)
        }
        AuthAction::CreateVtable { table_name, .. } => deny_reserved("CREATE VIRTUAL TABLE", table_name),
        AuthAction::DropTable { table_name } | AuthAction::DropTempTable { table_name } => {
            deny_reserved("DROP TABLE", table_name)
        }
        AuthAction::DropIndex { index_name, table_name }
        | AuthAction::DropTempIndex { index_name, table_name } => {
            deny_reserved("DROP INDEX", index_name)?;
            deny_reserved("DROP INDEX on", table_name)
        }
        AuthAction::DropTrigger { trigger_name, table_name }
        | AuthAction::DropTempTrigger { trigger_name, table_name } => {
            deny_reserved("DROP TRIGGER", trigger_name)?;
            deny_reserved("DROP TRIGGER on", table_name)
        }
        AuthAction::DropView { view_name } | AuthAction::DropTempView { view_name } => {
            deny_reserved("DROP VIEW", view_name)
        }
        AuthAction::DropVtable { table_name, .. } => deny_reserved("DROP TABLE", table_name),
        AuthAction::AlterTable { table_name, .. } => deny_reserved("ALTER TABLE", table_name),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlexec::{run_sql, ExecLimits, Mode, Tracker};
    use litebroker_protocol::ExecResult;

    /// A file database set up like the broker's writer, inside its transaction.
    fn writer() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Connection::open(dir.path().join("a.db")).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;
             CREATE TABLE t (id INTEGER PRIMARY KEY, v);
             CREATE TABLE _litebroker_requests (id BLOB PRIMARY KEY, result BLOB);",
        )
        .unwrap();
        install(&mut c).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        (dir, c)
    }

    fn run(c: &Connection, sql: &str) -> Result<ExecResult, ErrorInfo> {
        let mut out = ExecResult::default();
        let mut t = Tracker::new(Mode::OneShot);
        run_sql(c, sql, &[], &mut t, ExecLimits { max_rows: 100 }, &mut out).map(|()| out)
    }

    #[track_caller]
    fn denied(c: &Connection, sql: &str, needles: &[&str]) {
        let e = run(c, sql).expect_err(sql);
        assert_eq!(e.kind, ErrorKind::NotAllowed, "{sql}: {e:?}");
        assert!(e.message.contains("not allowed through the broker"), "{sql}: {}", e.message);
        for n in needles {
            assert!(e.message.contains(n), "{sql}: {:?} lacks {n:?}", e.message);
        }
        // The same text as the second statement of a multi-statement request.
        let e = run(c, &format!("SELECT 1; {sql}")).expect_err(sql);
        assert_eq!(e.kind, ErrorKind::NotAllowed, "{sql} (second statement): {e:?}");
        assert!(e.message.contains(needles[0]), "{sql} (second statement): {}", e.message);
    }

    #[test]
    fn escapes_and_weakening_are_denied_with_the_action_named() {
        let (dir, c) = writer();
        let other = dir.path().join("other.db").to_string_lossy().into_owned();
        denied(&c, &format!("ATTACH '{other}' AS o"), &["ATTACH", "other files", &other]);
        denied(&c, "DETACH main", &["DETACH"]);
        denied(&c, &format!("VACUUM INTO '{other}'"), &["VACUUM", "litebroker backup"]);
        denied(&c, "  /* c */ vacuum", &["VACUUM"]);
        denied(&c, "SELECT load_extension('/tmp/evil.so')", &["load_extension()", "native code"]);
        for (pragma, word) in [
            ("journal_mode = DELETE", "WAL mode"),
            ("main.journal_mode = OFF", "WAL mode"),
            ("synchronous = OFF", "--synchronous"),
            ("synchronous=0", "--synchronous"),
            ("foreign_keys = OFF", "foreign keys"),
            ("locking_mode = EXCLUSIVE", "EXCLUSIVE"),
            ("writable_schema = ON", "corrupt"),
            ("query_only = 1", "read-only"),
            ("busy_timeout = 0", "lock waits"),
            ("wal_checkpoint(TRUNCATE)", "litebroker checkpoint"),
            ("wal_checkpoint", "litebroker checkpoint"),
            ("temp_store_directory = '/tmp'", "another folder"),
            ("cache_size = 100000000", "memory"),
            ("recursive_triggers = ON", "every client"),
        ] {
            let name = pragma.split(['=', '(', ' ']).next().unwrap().trim_start_matches("main.");
            denied(&c, &format!("PRAGMA {pragma}"), &[&format!("PRAGMA {name}"), word]);
        }
        assert!(take_denial().is_none(), "every denial was reported");
        // Nothing was changed behind the error.
        let fk: i64 = c.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
        let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!((fk, sync), (1, 2));
        let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        assert!(!dir.path().join("other.db").exists());
    }

    #[test]
    fn the_brokers_tables_are_read_only_for_clients() {
        let (_dir, c) = writer();
        let t = "_litebroker_requests";
        denied(&c, &format!("INSERT INTO {t} VALUES (x'01', NULL)"), &["INSERT INTO _litebroker_requests"]);
        denied(&c, &format!("UPDATE {t} SET result = NULL"), &["UPDATE of _litebroker_requests"]);
        denied(&c, &format!("DELETE FROM {t}"), &["DELETE FROM _litebroker_requests"]);
        denied(&c, &format!("DROP TABLE {t}"), &["DROP TABLE _litebroker_requests"]);
        denied(&c, &format!("ALTER TABLE {t} ADD COLUMN x"), &["ALTER TABLE _litebroker_requests"]);
        denied(&c, &format!("CREATE INDEX i ON {t}(result)"), &["CREATE INDEX on _litebroker_requests"]);
        denied(&c, "CREATE TABLE _LiteBroker_other (x)", &["CREATE TABLE _LiteBroker_other"]);
        denied(&c, "CREATE TABLE IF NOT EXISTS _litebroker_requests (x)", &["CREATE TABLE"]);
        denied(&c, "CREATE VIEW _litebroker_v AS SELECT 1", &["CREATE VIEW _litebroker_v"]);
        denied(
            &c,
            &format!("CREATE TRIGGER tr AFTER INSERT ON {t} BEGIN SELECT 1; END"),
            &["CREATE TRIGGER on _litebroker_requests"],
        );
        // A trigger of the client's own that would write the broker's table.
        run(&c, &format!("CREATE TRIGGER sneaky AFTER INSERT ON t BEGIN DELETE FROM {t}; END")).unwrap();
        denied(&c, "INSERT INTO t (v) VALUES (1)", &["DELETE FROM _litebroker_requests"]);
        // Reads are fine.
        let r = run(&c, &format!("SELECT count(*) FROM {t}")).unwrap();
        assert_eq!(r.rows.len(), 1);
        // The broker itself may write it.
        let n = internal(|| c.execute(&format!("INSERT INTO {t} VALUES (x'02', NULL)"), [])).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn ordinary_ddl_dml_and_harmless_pragmas_stay_allowed() {
        let (_dir, c) = writer();
        for sql in [
            "CREATE TABLE skus (id INTEGER PRIMARY KEY, sku TEXT UNIQUE, qty INT, p REFERENCES t(id))",
            "CREATE INDEX skus_qty ON skus (qty)",
            "CREATE VIEW big AS SELECT * FROM skus WHERE qty > 10",
            "CREATE TRIGGER keep AFTER DELETE ON skus BEGIN INSERT INTO t (v) VALUES (old.sku); END",
            "CREATE VIRTUAL TABLE docs USING fts5(body)",
            "CREATE TEMP TABLE scratch (x)",
            "INSERT INTO skus (sku, qty) VALUES ('A1', 5), ('A2', 50)",
            "UPDATE skus SET qty = qty + 1 RETURNING sku, qty",
            "DELETE FROM skus WHERE sku = 'A1'",
            "ALTER TABLE skus ADD COLUMN note TEXT",
            "ALTER TABLE skus RENAME TO items",
            "DROP VIEW big",
            "DROP TABLE scratch",
            "SAVEPOINT mine",
            "RELEASE mine",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 5) SELECT x FROM c",
            "PRAGMA user_version = 7",
            "PRAGMA application_id = 42",
            "PRAGMA defer_foreign_keys = ON",
            "PRAGMA journal_mode",
            "PRAGMA foreign_keys",
            "PRAGMA table_info(items)",
            "SELECT * FROM pragma_table_info('items')",
            "PRAGMA index_list(items)",
            "PRAGMA foreign_key_check",
            "PRAGMA integrity_check(10)",
            "PRAGMA optimize",
            "SELECT * FROM _litebroker_requests",
            "ANALYZE",
        ] {
            if let Err(e) = run(&c, sql) {
                panic!("{sql}: {e:?}");
            }
        }
        assert_eq!(c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).unwrap(), 7);
    }

    #[test]
    fn temp_triggers_are_denied() {
        let (_dir, c) = writer();
        denied(&c, "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM t; END", &["TEMP TRIGGER tr"]);
    }

    #[test]
    fn internal_statements_pass_even_when_reprepared_after_a_schema_change() {
        let (_dir, c) = writer();
        let sql = "INSERT INTO _litebroker_requests (id) VALUES (?1)";
        internal(|| c.prepare_cached(sql)?.execute([vec![1u8]])).unwrap();
        // A client changes the schema: the cached statement is re-prepared (and
        // re-authorized) inside its next step.
        run(&c, "CREATE TABLE later (x)").unwrap();
        run(&c, "ALTER TABLE t ADD COLUMN w").unwrap();
        internal(|| c.prepare_cached(sql)?.execute([vec![2u8]])).unwrap();
        // A client sending the very text of the cached statement does not get the
        // broker's authorized copy from the cache.
        let mut out = ExecResult::default();
        let mut t = Tracker::new(Mode::OneShot);
        let e =
            run_sql(&c, sql, &[vec![3u8].into()], &mut t, ExecLimits { max_rows: 1 }, &mut out).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotAllowed, "{e:?}");
        assert!(e.message.contains("INSERT INTO _litebroker_requests"), "{e:?}");
        let n: i64 = c.query_row("SELECT count(*) FROM _litebroker_requests", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2);
        c.execute_batch("COMMIT").unwrap();
        let checkpoint =
            internal(|| c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0)));
        assert!(checkpoint.is_ok(), "{checkpoint:?}");
        // The flag is restored after a panic inside `internal`.
        let _ = std::panic::catch_unwind(|| internal(|| panic!("boom")));
        assert!(!is_internal());
    }
}
