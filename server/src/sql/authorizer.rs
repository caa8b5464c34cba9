//! What client SQL may do on the broker's writer connection.
//!
//! The writer connection is shared by every client and holds the only write lock,
//! so anything a client statement leaves on it is seen by every later client. The
//! authorizer, which SQLite calls while it parses each statement with the action
//! the statement would take (whatever its spelling, quoting, comments or case),
//! refuses with [`ErrorKind::NotAllowed`] and a message naming the action:
//!
//! - reaching other files: `ATTACH` (also the one `VACUUM INTO` makes), extensions;
//! - **connection-scoped state**: every schema action in the `temp` database,
//!   whatever SQLite's action code (`CREATE TRIGGER temp.x … ON main_table` is
//!   reported as a plain `SQLITE_CREATE_TRIGGER` with database `temp`), writes to
//!   it, and every PRAGMA that sets something of the connection — except
//!   `defer_foreign_keys = ON`, which the broker turns off again after the request
//!   (turning it *off* is refused: SQLite then forgets the pending violations);
//! - savepoints named like the broker's own (`_litebroker…`, and `litebroker…`,
//!   its former name), by the name SQLite
//!   reports after unquoting;
//! - writes, DDL, triggers and indexes on the broker's objects (`_litebroker…`).
//!
//! SQLite also reports transaction control (`SQLITE_TRANSACTION`: BEGIN, COMMIT,
//! ROLLBACK) and savepoints (`SQLITE_SAVEPOINT`) here. Those are let through the
//! parse and recorded in [`Seen`], so that the statement loop (`sql::exec`)
//! learns from SQLite what each statement is: a client's BEGIN/COMMIT/ROLLBACK is
//! never executed on the shared connection, only honoured (or refused) by the
//! broker, and statements the broker needs to notice (a `user_version` write) are
//! flagged the same way.
//!
//! `VACUUM` makes no authorizer call while it is prepared. It cannot run inside
//! the broker's transaction anyway (SQLite refuses it there), and the `ATTACH`
//! that `VACUUM INTO` makes is refused; `sql::text::check_vacuum` only gives it a
//! clearer message, from its first keyword (every check made from SQL text is in
//! `sql::text`, named as such).
//!
//! The wording of every refusal is in `crate::texts`.
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

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization, TransactionOperation};
use rusqlite::Connection;

use crate::sql::text::{self, has_prefix, LEGACY_SAVEPOINT_PREFIX, RESERVED_PREFIX};
use crate::texts;

/// Transaction control, as SQLite reports it for a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatement {
    /// `BEGIN [DEFERRED|IMMEDIATE|EXCLUSIVE] [TRANSACTION]`.
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` of the whole transaction.
    Rollback,
}

/// What a client's savepoint statement does, as SQLite reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavepointOp {
    /// `SAVEPOINT name`.
    Begin,
    /// `RELEASE name`.
    Release,
    /// `ROLLBACK TO name`.
    RollbackTo,
}

/// The savepoint statement last prepared on this thread (see [`Seen::savepoint`]),
/// with its name as SQLite reports it (unquoted).
pub fn take_savepoint() -> Option<(SavepointOp, String)> {
    SAVEPOINT.with(|s| s.borrow_mut().take())
}

/// What SQLite told the authorizer about the client statement last prepared on
/// this thread (see [`start_statement`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// The statement is transaction control: the broker honours it, never runs it.
    pub tx: Option<TxStatement>,
    /// The statement is a savepoint (`SAVEPOINT`, `RELEASE`, `ROLLBACK TO`) of a
    /// client's own name; it nests inside the broker's transaction.
    pub savepoint: bool,
    /// The statement writes `PRAGMA user_version` (the schema version).
    pub sets_user_version: bool,
    /// The statement turns `PRAGMA defer_foreign_keys` on.
    pub defers_foreign_keys: bool,
    /// The statement is a PRAGMA (or reads a `pragma_…` table).
    pub pragma: bool,
    /// The statement creates, alters or drops a schema object (the only way to
    /// put anything into the temp schema).
    pub schema: bool,
    /// How many actions SQLite asked about (0 for `VACUUM`, which asks nothing).
    pub actions: u32,
}

impl Seen {
    /// True when the statement is more than ordinary DDL/DML: such statements
    /// are never kept in the statement cache, so that each use is reported again.
    pub fn noteworthy(&self) -> bool {
        self.tx.is_some()
            || self.savepoint
            || self.sets_user_version
            || self.defers_foreign_keys
            || self.pragma
            || self.schema
    }
}

thread_local! {
    // Thread-local rather than per connection: the authorizer runs synchronously on
    // the thread that prepares or steps a statement, and the writer connection is
    // used by one thread at a time (the writer thread, or a connection thread
    // serving the queue, always under the writer's mutex), so the flag, the
    // denial and what was seen belong to the thread running the statement.
    static INTERNAL: Cell<u32> = const { Cell::new(0) };
    static DENIAL: RefCell<Option<String>> = const { RefCell::new(None) };
    static SAVEPOINT: RefCell<Option<(SavepointOp, String)>> = const { RefCell::new(None) };
    static SEEN: Cell<Seen> = const {
        Cell::new(Seen {
            tx: None,
            savepoint: false,
            sets_user_version: false,
            defers_foreign_keys: false,
            pragma: false,
            schema: false,
            actions: 0,
        })
    };
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

/// Forgets what the authorizer saw and any stale denial: call before preparing a
/// client statement, then read [`seen`] after.
pub fn start_statement() {
    DENIAL.with(|d| d.borrow_mut().take());
    SAVEPOINT.with(|s| s.borrow_mut().take());
    SEEN.with(|s| s.set(Seen::default()));
}

/// What the authorizer saw since [`start_statement`].
pub fn seen() -> Seen {
    SEEN.with(Cell::get)
}

fn note(f: impl FnOnce(&mut Seen)) {
    SEEN.with(|s| {
        let mut v = s.get();
        f(&mut v);
        s.set(v);
    });
}

/// The reason of the last denial on this thread, consumed by the error mapping
/// (`sql::exec::sql_error`), which otherwise only has SQLite's "not authorized".
pub fn take_denial() -> Option<String> {
    DENIAL.with(|d| d.borrow_mut().take())
}

/// Client statements refused, counted once per statement (the metrics report it).
/// Process-wide, as the thread-local state above is: a broker has one writer
/// connection.
static DENIALS: AtomicU64 = AtomicU64::new(0);

/// Client statements the authorizer refused so far.
pub fn denials() -> u64 {
    DENIALS.load(Ordering::Relaxed)
}

fn record(reason: String) {
    // The first denial names the cause; SQLite may keep parsing and ask again.
    DENIAL.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            DENIALS.fetch_add(1, Ordering::Relaxed);
            *d = Some(reason);
        }
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
        note(|s| s.actions = s.actions.saturating_add(1));
        match decide(&ctx) {
            Ok(()) => Authorization::Allow,
            Err(reason) => {
                record(reason);
                Authorization::Deny
            }
        }
    }))
}

fn reserved(name: &str) -> bool {
    has_prefix(name, RESERVED_PREFIX)
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
];

/// SQLite's spellings of "on" for a boolean PRAGMA.
fn truthy(value: &str) -> bool {
    let v = value.trim().trim_matches(|c| c == '\'' || c == '"');
    ["1", "on", "true", "yes"].iter().any(|t| v.eq_ignore_ascii_case(t))
}

/// The schema table's names (`sqlite_master` and its aliases, in `temp` too).
fn is_schema_table(name: &str) -> bool {
    ["sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"]
        .iter()
        .any(|t| name.eq_ignore_ascii_case(t))
}

/// A schema action and the names it touches, for the checks shared by all of them.
fn schema_action<'a>(action: &AuthAction<'a>) -> Option<(&'static str, &'a str, Option<&'a str>, bool)> {
    // (what, object name, table it is on, a TEMP variant of the action code)
    Some(match *action {
        AuthAction::CreateTable { table_name } => ("CREATE TABLE", table_name, None, false),
        AuthAction::CreateTempTable { table_name } => ("CREATE TABLE", table_name, None, true),
        AuthAction::CreateIndex { index_name, table_name } => {
            ("CREATE INDEX", index_name, Some(table_name), false)
        }
        AuthAction::CreateTempIndex { index_name, table_name } => {
            ("CREATE INDEX", index_name, Some(table_name), true)
        }
        AuthAction::CreateTrigger { trigger_name, table_name } => {
            ("CREATE TRIGGER", trigger_name, Some(table_name), false)
        }
        AuthAction::CreateTempTrigger { trigger_name, table_name } => {
            ("CREATE TRIGGER", trigger_name, Some(table_name), true)
        }
        AuthAction::CreateView { view_name } => ("CREATE VIEW", view_name, None, false),
        AuthAction::CreateTempView { view_name } => ("CREATE VIEW", view_name, None, true),
        AuthAction::CreateVtable { table_name, .. } => ("CREATE VIRTUAL TABLE", table_name, None, false),
        AuthAction::DropTable { table_name } => ("DROP TABLE", table_name, None, false),
        AuthAction::DropTempTable { table_name } => ("DROP TABLE", table_name, None, true),
        AuthAction::DropIndex { index_name, table_name } => {
            ("DROP INDEX", index_name, Some(table_name), false)
        }
        AuthAction::DropTempIndex { index_name, table_name } => {
            ("DROP INDEX", index_name, Some(table_name), true)
        }
        AuthAction::DropTrigger { trigger_name, table_name } => {
            ("DROP TRIGGER", trigger_name, Some(table_name), false)
        }
        AuthAction::DropTempTrigger { trigger_name, table_name } => {
            ("DROP TRIGGER", trigger_name, Some(table_name), true)
        }
        AuthAction::DropView { view_name } => ("DROP VIEW", view_name, None, false),
        AuthAction::DropTempView { view_name } => ("DROP VIEW", view_name, None, true),
        AuthAction::DropVtable { table_name, .. } => ("DROP TABLE", table_name, None, false),
        AuthAction::AlterTable { table_name, .. } => ("ALTER TABLE", table_name, None, false),
        _ => return None,
    })
}

/// The authorizer's policy for a client statement.
fn decide(ctx: &AuthContext<'_>) -> Result<(), String> {
    let deny_reserved = |what: &str, name: &str| -> Result<(), String> {
        if reserved(name) {
            Err(texts::reserved_object(what, name, RESERVED_PREFIX))
        } else {
            Ok(())
        }
    };
    let in_temp = ctx.database_name.is_some_and(|d| d.eq_ignore_ascii_case("temp"));
    if let AuthAction::Insert { table_name }
    | AuthAction::Delete { table_name }
    | AuthAction::Update { table_name, .. } = ctx.action
    {
        if is_schema_table(table_name) {
            note(|s| s.schema = true);
        }
    }
    if let Some((what, name, on_table, temp_code)) = schema_action(&ctx.action) {
        note(|s| s.schema = true);
        if temp_code || in_temp {
            return Err(texts::temp_schema(&format!("{what} {name}")));
        }
        deny_reserved(what, name)?;
        if let Some(table) = on_table {
            deny_reserved(&format!("{what} on"), table)?;
        }
        return Ok(());
    }
    match ctx.action {
        AuthAction::Attach { filename } => Err(texts::attach(filename)),
        AuthAction::Detach { database_name } => Err(texts::detach(database_name)),
        AuthAction::Function { function_name } if function_name.eq_ignore_ascii_case("load_extension") => {
            Err(texts::LOAD_EXTENSION.into())
        }
        AuthAction::Pragma { pragma_name, pragma_value } => {
            note(|s| s.pragma = true);
            let name = pragma_name.to_ascii_lowercase();
            let allowed = match pragma_value {
                // Reading a setting is harmless, but this one checkpoints when asked.
                None => name != "wal_checkpoint",
                Some(_) if in_temp => return Err(texts::temp_schema(&format!("PRAGMA {name}"))),
                Some(v) if name == "defer_foreign_keys" => {
                    let on = truthy(v);
                    if on {
                        note(|s| s.defers_foreign_keys = true);
                    }
                    on
                }
                Some(_) => {
                    if name == "user_version" {
                        note(|s| s.sets_user_version = true);
                    }
                    PRAGMAS_WITH_ARGUMENT.contains(&name.as_str())
                }
            };
            if allowed {
                return Ok(());
            }
            let shown = match pragma_value {
                Some(v) => format!("PRAGMA {name} = {v}"),
                None => format!("PRAGMA {name}"),
            };
            Err(texts::pragma(&shown, &name))
        }
        AuthAction::Transaction { operation } => {
            // Let through the parse only: the statement loop honours it without
            // running it (see the module docs).
            let tx = match operation {
                TransactionOperation::Begin => TxStatement::Begin,
                TransactionOperation::Rollback => TxStatement::Rollback,
                // SQLite says "COMMIT", which rusqlite does not name.
                _ => TxStatement::Commit,
            };
            note(|s| s.tx = Some(tx));
            Ok(())
        }
        AuthAction::Savepoint { savepoint_name, operation } => {
            if text::reserved_savepoint(savepoint_name) {
                return Err(texts::reserved_savepoint(
                    savepoint_name,
                    &format!("'{RESERVED_PREFIX}' (or '{LEGACY_SAVEPOINT_PREFIX}')"),
                ));
            }
            note(|s| s.savepoint = true);
            let op = match operation {
                TransactionOperation::Begin => Some(SavepointOp::Begin),
                TransactionOperation::Release => Some(SavepointOp::Release),
                TransactionOperation::Rollback => Some(SavepointOp::RollbackTo),
                _ => None,
            };
            // The change feed forgets what a ROLLBACK TO undoes (`sql::exec`).
            SAVEPOINT.with(|s| *s.borrow_mut() = op.map(|op| (op, savepoint_name.to_owned())));
            Ok(())
        }
        // SQLite's own bookkeeping of schema actions in the temp schema table.
        // An INSERT there creates a temp object — also one whose action SQLite
        // reports under the main schema (`CREATE TRIGGER temp.x … ON main_table`
        // is asked as a main trigger): refused. UPDATE and DELETE there are the
        // fix-ups SQLite makes when a main table is renamed or dropped (the temp
        // schema is empty, so they change nothing).
        AuthAction::Insert { table_name } if in_temp && is_schema_table(table_name) => {
            Err(texts::temp_schema("creating an object"))
        }
        AuthAction::Delete { table_name } | AuthAction::Update { table_name, .. }
            if in_temp && is_schema_table(table_name) =>
        {
            Ok(())
        }
        AuthAction::Insert { table_name }
        | AuthAction::Delete { table_name }
        | AuthAction::Update { table_name, .. }
            if in_temp =>
        {
            Err(texts::temp_schema(&format!("writing {table_name}")))
        }
        AuthAction::Insert { table_name } => deny_reserved("INSERT INTO", table_name),
        AuthAction::Update { table_name, .. } => deny_reserved("UPDATE of", table_name),
        AuthAction::Delete { table_name } => deny_reserved("DELETE FROM", table_name),
        AuthAction::Unknown { code, .. } => Err(texts::unknown_action(code)),
        _ => Ok(()),
    }
}
#[cfg(test)]
mod tests {
    use litebroker_protocol::{ErrorInfo, ErrorKind};

    use super::*;
    use crate::sql::exec::{run_sql, ExecLimits, Mode, Tracker};
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

    fn limits(max_rows: usize) -> ExecLimits {
        ExecLimits {
            max_rows,
            max_answer_bytes: 1 << 20,
            max_statements: 1000,
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(60),
        }
    }

    fn run(c: &Connection, sql: &str) -> Result<ExecResult, ErrorInfo> {
        let mut out = ExecResult::default();
        let mut t = Tracker::new(Mode::OneShot);
        run_sql(c, sql, &[], &mut t, &limits(100), &mut out).map(|()| out)
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
            "INSERT INTO skus (sku, qty) VALUES ('A1', 5), ('A2', 50)",
            "UPDATE skus SET qty = qty + 1 RETURNING sku, qty",
            "DELETE FROM skus WHERE sku = 'A1'",
            "ALTER TABLE skus ADD COLUMN note TEXT",
            "ALTER TABLE skus RENAME TO items",
            "DROP VIEW big",
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
        denied(&c, "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM t; END", &["temp schema"]);
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
        let e = run_sql(&c, sql, &[vec![3u8].into()], &mut t, &limits(1), &mut out).unwrap_err();
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
