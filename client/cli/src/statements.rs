//! What SQL text holds, as SQLite tells: where a statement ends
//! (`sqlite3_complete`), whether it reads or writes (`sqlite3_stmt_readonly`),
//! whether it is transaction control (the authorizer), and how its parameters are
//! numbered (`sqlite3_bind_parameter_index`). No decision here is made by reading
//! the text ourselves: the one text scan below only skips comments to find the
//! line a statement starts on, for messages.

use std::ffi::CString;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization, TransactionOperation};
use rusqlite::{Connection, OpenFlags};

/// Whether `sql` ends with a complete statement, as SQLite's own shell decides
/// it (a `;` outside strings, comments and trigger bodies).
pub(crate) fn is_complete(sql: &str) -> bool {
    // A NUL byte cannot pass to SQLite; such text is "complete" so that it is
    // sent on and refused with the broker's or SQLite's message.
    let Ok(text) = CString::new(sql) else { return true };
    // SAFETY: sqlite3_complete reads the NUL-terminated string and keeps no
    // pointer to it; `text` lives across the call.
    unsafe { rusqlite::ffi::sqlite3_complete(text.as_ptr()) != 0 }
}

/// One statement of a script: its text (with its `;`) and the 1-based line of
/// the script it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) sql: String,
    pub(crate) line: usize,
}

/// Splits the complete statements off the front of `text`, which starts on
/// line `first_line`; returns them and the unfinished rest. Each cut is at a
/// `;` where SQLite says the text so far is complete, so a `;` inside a string
/// or a trigger body never cuts. Pieces without a statement (only comments or
/// `;`) are dropped.
pub(crate) fn split_complete(text: &str, first_line: usize) -> (Vec<Chunk>, &str) {
    let mut out = Vec::new();
    let mut start = 0;
    let mut line = first_line;
    for (i, _) in text.match_indices(';') {
        if i < start {
            continue;
        }
        let piece = &text[start..=i];
        if is_complete(piece) {
            if has_statements(piece) {
                let lead = leading_comments(piece);
                out.push(Chunk { sql: piece.to_owned(), line: line + count_lines(&piece[..lead]) });
            }
            line += count_lines(piece);
            start = i + 1;
        }
    }
    (out, &text[start..])
}

fn count_lines(s: &str) -> usize {
    s.bytes().filter(|&b| b == b'\n').count()
}

/// Whether `sql` holds more than whitespace, comments and `;`.
pub(crate) fn has_statements(sql: &str) -> bool {
    leading_comments(sql) < sql.len()
}

/// The length of the whitespace, comments and `;` at the start of `sql`.
fn leading_comments(sql: &str) -> usize {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(r) = rest.strip_prefix("/*") {
            // SQLite ends an unterminated comment at the end of the input.
            rest = r.split_once("*/").map_or("", |(_, after)| after);
        } else {
            return sql.len() - rest.len();
        }
    }
}

/// What a statement is, as SQLite reports it while preparing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Reads only: it may run on the local read-only connection.
    Read,
    /// Changes the database or its connection (ATTACH, DETACH, savepoints): it
    /// goes to the broker.
    Write,
    /// `BEGIN …`: opens a write session.
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` (not `ROLLBACK TO`, which is a savepoint).
    Rollback,
}

/// What the authorizer saw while one statement was prepared.
#[derive(Debug, Default)]
struct Seen {
    transaction: Option<TransactionOperation>,
    pragma: Option<(String, Option<String>)>,
    connection_change: bool,
    savepoint: bool,
}

/// A read-only connection used only to prepare statements and ask SQLite about
/// them; it never steps one, so it holds no read transaction between calls.
///
/// It is not the [`litebroker_client::Reader`]'s connection because rusqlite
/// installs an authorizer through `&mut Connection`, which the reader does not
/// hand out.
pub(crate) struct Classifier {
    conn: Connection,
    seen: Arc<Mutex<Seen>>,
}

/// What preparing a statement told.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) kind: Kind,
    /// A PRAGMA's name and value, as SQLite read them.
    pub(crate) pragma: Option<(String, Option<String>)>,
    /// `parameter_name(i)` for i in 1..=count: `None` for `?`, else the name as
    /// written (`?3`, `:a`, `@a`, `$a`).
    pub(crate) params: Vec<Option<String>>,
}

impl Classifier {
    /// Opens the classifier on an existing database file.
    pub(crate) fn open(db: &Path) -> rusqlite::Result<Classifier> {
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(litebroker_client::READER_BUSY_TIMEOUT)?;
        Classifier::on(conn)
    }

    /// A classifier on an empty in-memory database: for statements that need
    /// no schema (PRAGMA, transaction control).
    pub(crate) fn open_in_memory() -> rusqlite::Result<Classifier> {
        Classifier::on(Connection::open_in_memory()?)
    }

    fn on(mut conn: Connection) -> rusqlite::Result<Classifier> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = Arc::clone(&seen);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            let mut s = record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match ctx.action {
                // Only the top-level statement counts, not a trigger's body.
                AuthAction::Transaction { operation } if ctx.accessor.is_none() => {
                    s.transaction = Some(operation);
                }
                AuthAction::Attach { .. } | AuthAction::Detach { .. } => s.connection_change = true,
                AuthAction::Savepoint { .. } => s.savepoint = true,
                AuthAction::Pragma { pragma_name, pragma_value } if ctx.accessor.is_none() => {
                    s.pragma = Some((pragma_name.to_owned(), pragma_value.map(str::to_owned)));
                }
                _ => {}
            }
            Authorization::Allow
        }))?;
        Ok(Classifier { conn, seen })
    }

    /// Prepares one statement and tells what it is.
    ///
    /// # Errors
    /// SQLite's error when the statement cannot be prepared here (a syntax
    /// error, a table that does not exist in the committed schema, or more than
    /// one statement).
    pub(crate) fn prepare(&self, sql: &str) -> rusqlite::Result<Prepared> {
        *self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Seen::default();
        // Not the statement cache: the authorizer runs only while preparing.
        let stmt = self.conn.prepare(sql)?;
        let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let kind = match seen.transaction {
            Some(TransactionOperation::Begin) => Kind::Begin,
            Some(TransactionOperation::Rollback) => Kind::Rollback,
            // SQLite says "COMMIT" (also for END), which rusqlite does not name.
            Some(_) => Kind::Commit,
            // ATTACH, DETACH and savepoints count as read-only for SQLite (they
            // change the connection, not the file). On the local connection a
            // SAVEPOINT would open a transaction that pins the WAL; all of them
            // belong to the broker's policy.
            None if seen.connection_change || seen.savepoint => Kind::Write,
            None if stmt.readonly() => Kind::Read,
            None => Kind::Write,
        };
        let params =
            (1..=stmt.parameter_count()).map(|i| stmt.parameter_name(i).map(str::to_owned)).collect();
        Ok(Prepared { kind, params, pragma: seen.pragma })
    }

    /// Prepares each statement of `sql` in turn (the text may hold several)
    /// and returns what each told. Fails when one cannot be prepared on its own
    /// here, e.g. because it uses a table an earlier statement creates.
    pub(crate) fn prepare_all(&self, sql: &str) -> rusqlite::Result<Vec<Prepared>> {
        let mut out = Vec::new();
        let (chunks, rest) = split_complete(sql, 1);
        for c in chunks {
            out.push(self.prepare(&c.sql)?);
        }
        if has_statements(rest) {
            out.push(self.prepare(rest)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE t (a, b); CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;")
            .unwrap();
        (dir, path)
    }

    #[test]
    fn statements_end_where_sqlite_says_they_do() {
        let text = "SELECT ';';\n-- a; comment\nCREATE TRIGGER x AFTER INSERT ON t BEGIN\n  SELECT 1;\nEND;\nSELECT 2";
        let (chunks, rest) = split_complete(text, 1);
        let lines: Vec<usize> = chunks.iter().map(|c| c.line).collect();
        assert_eq!(lines, [1, 3], "{chunks:?}");
        assert!(chunks[1].sql.trim_start().starts_with("-- a; comment\nCREATE TRIGGER"));
        assert!(chunks[1].sql.ends_with("END;"));
        assert_eq!(rest, "\nSELECT 2");
        assert!(!is_complete("SELECT 'a;"));
        assert!(is_complete("SELECT 1; -- done\n"));
        let (chunks, rest) = split_complete(" ;; /* x */ ;", 5);
        assert!(chunks.is_empty() && rest.is_empty());
    }

    #[test]
    fn sqlite_tells_reads_writes_and_transaction_control() {
        let (_d, path) = db();
        let c = Classifier::open(&path).unwrap();
        let kind = |sql: &str| c.prepare(sql).unwrap().kind;
        assert_eq!(kind("SELECT * FROM t"), Kind::Read);
        assert_eq!(kind("WITH x AS (SELECT 1) SELECT * FROM x"), Kind::Read);
        assert_eq!(kind("INSERT INTO t VALUES (1, 2)"), Kind::Write);
        assert_eq!(kind("INSERT INTO t VALUES (1, 2) RETURNING a"), Kind::Write);
        assert_eq!(kind("CREATE TABLE u (x)"), Kind::Write);
        assert_eq!(kind("PRAGMA user_version = 3"), Kind::Write);
        assert_eq!(kind("begin immediate transaction"), Kind::Begin);
        assert_eq!(kind("END"), Kind::Commit);
        assert_eq!(kind("COMMIT TRANSACTION"), Kind::Commit);
        assert_eq!(kind("ROLLBACK"), Kind::Rollback);
        assert_eq!(kind("ROLLBACK TO sp"), Kind::Write, "a savepoint, not the transaction");
        assert_eq!(kind("SAVEPOINT sp"), Kind::Write);
        assert_eq!(kind("RELEASE sp"), Kind::Write);
        assert_eq!(kind("ATTACH 'x.db' AS x"), Kind::Write);
        assert!(c.prepare("SELECT * FROM nope").is_err());
    }

    #[test]
    fn parameters_are_numbered_by_sqlite() {
        let (_d, path) = db();
        let c = Classifier::open(&path).unwrap();
        let p = c.prepare("SELECT :a, ?, @b, :a, $c, ?5").unwrap();
        let names: Vec<Option<&str>> = p.params.iter().map(Option::as_deref).collect();
        assert_eq!(names, [Some(":a"), None, Some("@b"), Some("$c"), Some("?5")]);
        let all = c.prepare_all("SELECT :x; SELECT ?, :y").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].params, [None, Some(":y".to_owned())]);
    }
}
