//! Every decision the broker makes by reading SQL text, in one place.
//!
//! What a statement *is* (transaction control, a savepoint, a PRAGMA, DDL) comes
//! from SQLite, never from here: the authorizer reports it while SQLite prepares
//! each statement (`sql::authorizer`). The text is read only where a guess costs
//! nothing if it is wrong, or where SQLite tells the authorizer nothing; each
//! function below says which, and why it is safe:
//!
//! - [`small_answer`]: picks the answer-on-the-socket shortcut; a wrong guess
//!   only sends one answer the ordinary way, or makes a full socket take the rest
//!   of an answer from the connection thread.
//! - [`maybe_several_statements`]: picks the statement-by-statement path over the
//!   cached single statement; that path is right for any text.
//! - [`mentions_reserved`]: keeps text away from the statement cache; a false
//!   positive only costs the cache.
//! - [`check_vacuum`]: `VACUUM` shows the authorizer nothing; SQLite refuses it
//!   inside the broker's transaction anyway, this gives the refusal its reason.

use litebroker_protocol::ErrorInfo;

use crate::texts;

/// The one prefix of the broker's own names: its tables, indexes, triggers and
/// views (clients may read them, never write, create, alter or drop them), its
/// savepoint (`_litebroker_req`), and the marker comment `/* _litebroker */` that
/// every other statement the broker runs itself carries, so that each of its
/// cached statements names the prefix (see [`mentions_reserved`]).
pub const RESERVED_PREFIX: &str = "_litebroker";

/// The prefix without its underscore: the broker's savepoint was once named
/// `litebroker_req`, so savepoints named `litebroker…` stay refused (an old client
/// that sends them learns so), and [`mentions_reserved`] looks for it, which
/// covers [`RESERVED_PREFIX`] too.
pub const LEGACY_SAVEPOINT_PREFIX: &str = "litebroker";

/// Whether a savepoint name is reserved for the broker (either prefix, any case).
pub fn reserved_savepoint(name: &str) -> bool {
    has_prefix(name, RESERVED_PREFIX) || has_prefix(name, LEGACY_SAVEPOINT_PREFIX)
}

/// Whether `name` starts with `prefix`, in any case (SQLite's names are
/// case-insensitive for ASCII).
pub fn has_prefix(name: &str, prefix: &str) -> bool {
    name.as_bytes().get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Whether SQL text may name one of the broker's objects or savepoints, or be
/// one of its own statements. Such text is never served from the statement cache,
/// where the broker's own statements (each of which contains [`RESERVED_PREFIX`])
/// are kept authorized for the broker: a client sending the very same text must
/// be prepared, and authorized, afresh. Safe because it is a superset test: it
/// looks for [`LEGACY_SAVEPOINT_PREFIX`], which [`RESERVED_PREFIX`] contains, in
/// any case, anywhere (quoted, bracketed, in a comment); a false positive only
/// costs the cache.
pub fn mentions_reserved(sql: &str) -> bool {
    let p = LEGACY_SAVEPOINT_PREFIX.as_bytes();
    sql.as_bytes().windows(p.len()).any(|w| w.eq_ignore_ascii_case(p))
}

/// Whether `sql` may hold more than one statement, guessed from its `;`s (one
/// before trailing whitespace and semicolons). Safe because statements are
/// separated by `;`, so `false` is certain (text without such a `;` holds one
/// statement at most: it takes the cached single-statement path), and `true` only
/// picks the statement-by-statement path (a `;` in a string or a comment), which
/// is right for any text.
pub fn maybe_several_statements(sql: &str) -> bool {
    sql.trim_end().trim_end_matches(';').contains(';')
}

/// True when the answer to `sql` is certainly small: a single INSERT, UPDATE,
/// DELETE or REPLACE without RETURNING answers with a fixed-size result (or an
/// error message), which a socket always takes without blocking when the client
/// reads its answers. Safe because it only picks who writes the answer (the
/// answer-on-the-socket shortcut, `conn::direct`): any `;` or the word
/// `returning` anywhere (even in a string) says no, and an answer the socket does
/// not take at once is finished by the connection thread.
pub fn small_answer(sql: &str) -> bool {
    let s = sql.trim();
    let s = s.strip_suffix(';').unwrap_or(s);
    let starts = |kw: &str| s.get(..kw.len()).is_some_and(|p| p.eq_ignore_ascii_case(kw));
    (starts("INSERT") || starts("UPDATE") || starts("DELETE") || starts("REPLACE"))
        && !s.contains(';')
        && !s.as_bytes().windows(9).any(|w| w.eq_ignore_ascii_case(b"returning"))
}

/// Refuses `VACUUM` (with or without `INTO`), which makes no authorizer call while
/// it is prepared. Safety does not rest on it (SQLite refuses VACUUM inside the
/// broker's transaction, and the authorizer refuses the ATTACH of `VACUUM INTO`);
/// it gives the refusal a clear reason. Only the first keyword is looked at,
/// after whitespace and comments, and only for statements the authorizer was not
/// asked about.
///
/// # Errors
/// `not_allowed` naming the statement.
pub fn check_vacuum(sql: &str) -> Result<(), ErrorInfo> {
    if first_keyword(sql).eq_ignore_ascii_case("VACUUM") {
        return Err(texts::vacuum_refused());
    }
    Ok(())
}

/// The first word of `sql` after whitespace and SQL comments (ASCII letters only).
fn first_keyword(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after);
        } else {
            break;
        }
    }
    let end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guesses_lean_to_the_safe_side() {
        assert!(small_answer(" insert into t values (1);  "));
        assert!(small_answer("REPLACE INTO t VALUES (1)"));
        assert!(!small_answer("INSERT INTO t VALUES (1) RETURNING id"));
        assert!(!small_answer("INSERT INTO t VALUES ('returning')"));
        assert!(!small_answer("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)"));
        assert!(!small_answer("SELECT 1"));
        assert!(!small_answer("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x"));
        assert!(maybe_several_statements("SELECT 1; SELECT 2"));
        assert!(maybe_several_statements("SELECT ';'"));
        assert!(!maybe_several_statements("SELECT 1;; \n"));
        assert!(mentions_reserved("RELEASE \"_LiteBroker_req\""));
        assert!(mentions_reserved("RELEASE litebroker_req"));
        assert!(mentions_reserved("COMMIT /* _litebroker */"));
        assert!(!mentions_reserved("SELECT 'lite broker'"));
        assert!(reserved_savepoint("_LITEBROKER_req") && reserved_savepoint("litebroker_x"));
        assert!(!reserved_savepoint("mine") && !reserved_savepoint("lite"));
        assert!(check_vacuum("  /* c */ -- x\n vacuum INTO 'f'").is_err());
        assert!(check_vacuum("VACUUMED").is_ok());
        assert!(check_vacuum("SELECT 'VACUUM'").is_ok());
    }
}
