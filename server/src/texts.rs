//! Every refusal and error text the broker sends a client, in one place to read
//! and to change. Each is an [`ErrorInfo`] (kind and message) or, where it is only
//! part of a message or not an error answer, a `String`.
//!
//! What the texts share: a refusal says what was refused, why, whether anything
//! was applied (a caller must know whether to resend), and what to do instead.
//! Clients and tests match on the [`ErrorKind`], and on a few words that this
//! module keeps stable: "not allowed through the broker", "reserved", "Database
//! is locked", "timed out", "malformed frame", "handshake already done",
//! "NUL byte", "answer too large", "shutting down".
//!
//! Not here: SQLite's own messages (passed on with its codes, see
//! `sql::exec::sql_error`), the offline operations' errors (`crate::ops`, shared
//! with the CLI), and the start-up failures `litebrokerd` prints and exits with
//! (`BrokerError`), which no client receives.
//!
//! Over 600 lines on purpose: it is a flat list, grouped by subject, and its point
//! is that nothing of it lives anywhere else.

use std::time::Duration;

use litebroker_protocol::{ErrorInfo, ErrorKind, SqliteCode, PROTOCOL_VERSION};

// ----- shutdown -------------------------------------------------------------------

/// Message of work refused because the broker is stopping. A client may resend it
/// to the next broker: nothing of it was applied.
pub const SHUTTING_DOWN: &str = "the broker is shutting down and accepts no new work; retry once it is back";

/// Work refused because the broker is stopping.
pub fn shutting_down() -> ErrorInfo {
    ErrorInfo::new(ErrorKind::ShuttingDown, SHUTTING_DOWN)
}

// ----- waiting for the writer -----------------------------------------------------

/// A request still queued when its deadline passed (it was cancelled, nothing of
/// it applied); `contention` says who holds the writer (see [`held_by_session`],
/// [`writer_busy`]).
pub fn timed_out(timeout: Duration, contention: &str) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Timeout,
        format!("timed out after {:.1} s waiting for the writer: {contention}", timeout.as_secs_f64()),
    )
}

/// Who holds the writer: a write session.
pub fn held_by_session(client: &str, held: Duration) -> String {
    format!("the writer is held by the write session of {client} for {:.1} s", held.as_secs_f64())
}

/// Who holds the writer: the queue.
pub fn writer_busy(queued: usize) -> String {
    format!("the writer is busy ({queued} requests queued)")
}

/// A request of a group whose deadline passed before the writer reached it.
pub fn deadline_passed_before_run() -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Timeout,
        "the request's deadline passed before the writer reached it; nothing was applied",
    )
}

/// A statement the progress handler interrupted (its request ran past its
/// deadline); replaces SQLite's "interrupted".
pub fn statement_interrupted(max_statement_time: Duration) -> String {
    format!(
        "statement interrupted: the request ran past its deadline (its timeout, or \
         --max-statement-secs {}); the request was rolled back, nothing of it was applied",
        max_statement_time.as_secs_f64()
    )
}

/// The deadline passed between two statements of a request.
pub fn ran_past_deadline() -> ErrorInfo {
    ErrorInfo::new(ErrorKind::Timeout, "the request ran past its deadline")
}

/// What the lock wait was given, for [`locked`].
#[derive(Debug, Clone, Copy)]
pub struct LockWait {
    /// Attempts made (the first and the retries).
    pub attempts: u32,
    /// Time spent waiting.
    pub elapsed: Duration,
    /// SQLite's busy_timeout per attempt.
    pub busy_timeout: Duration,
    /// The first backoff delay (doubling).
    pub retry_base: Duration,
    /// The backoff's cap.
    pub retry_cap: Duration,
}

/// The typed "Database is locked" error: another process held a lock through
/// every attempt of the lock wait (busy_timeout, then the backoff); nothing was
/// applied. SQLite's code is `SQLITE_BUSY`, as a direct user of SQLite would get.
pub fn locked(db_path: &str, wait: &LockWait) -> ErrorInfo {
    ErrorInfo {
        kind: ErrorKind::Locked,
        message: format!(
            "Database is locked: another process (e.g. the sqlite3 CLI or a backup tool) held a \
             lock on {db_path} through {} attempt(s) over {:.1} s (busy_timeout {} ms, then \
             backoff {} ms doubling, capped at {} ms); nothing was applied",
            wait.attempts,
            wait.elapsed.as_secs_f64(),
            wait.busy_timeout.as_millis(),
            wait.retry_base.as_millis(),
            wait.retry_cap.as_millis(),
        ),
        sqlite: Some(SqliteCode {
            primary: rusqlite::ffi::SQLITE_BUSY,
            extended: rusqlite::ffi::SQLITE_BUSY,
        }),
    }
}

// ----- write sessions -------------------------------------------------------------

/// The broker rolled a write session back before its client ended it: the lease
/// ran out, the broker is shutting down, or an internal failure ended it. The
/// client hears it once, at its next call.
pub fn lease_expired(lease: Duration) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::LeaseExpired,
        format!(
            "the write session was rolled back by the broker (it held the writer longer than the \
             {} s lease, the broker is shutting down, or an internal failure ended it); nothing of it \
             was committed",
            lease.as_secs_f64()
        ),
    )
}

/// `Commit` or `Rollback` from a connection that holds no session.
pub fn no_session(commit: bool) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::SessionState,
        format!("{} without an open write session", if commit { "commit" } else { "rollback" }),
    )
}

/// `BeginSession` from a connection that holds one.
pub fn session_already_held() -> ErrorInfo {
    ErrorInfo::new(ErrorKind::SessionState, "this connection already holds a write session")
}

/// A request that needs the writer for itself (`Checkpoint`, `Restore`) from the
/// session's holder.
pub fn needs_the_writer(request: &str) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::SessionState,
        format!("{request} needs the writer: end this connection's write session first"),
    )
}

/// SQLite rolled a session's whole transaction back (disk full, I/O error).
pub fn session_rolled_back(cause: ErrorInfo) -> ErrorInfo {
    ErrorInfo {
        message: format!("{}; the write session was rolled back and is closed", cause.message),
        ..cause
    }
}

/// A session's COMMIT failed; the session was rolled back.
pub fn session_commit_failed(mut cause: ErrorInfo) -> ErrorInfo {
    cause.message = format!("commit failed, the session was rolled back: {}", cause.message);
    cause
}

// ----- streamed executemany and batch ---------------------------------------------

/// How messages name a stream and what it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamWords {
    /// The request: "executemany", "streamed batch".
    pub name: &'static str,
    /// What its index counts: "row", "statement".
    pub item: &'static str,
    /// Its frames, for a protocol error.
    pub frames: &'static str,
}

/// A streamed executemany: one statement, parameter rows.
pub const EXECUTEMANY: StreamWords =
    StreamWords { name: "executemany", item: "row", frames: "ManyBegin, ManyRows…, ManyEnd" };

/// A streamed batch: statements.
pub const STREAMED_BATCH: StreamWords =
    StreamWords { name: "streamed batch", item: "statement", frames: "BatchBegin, BatchPart…, ManyEnd" };

/// Item `row` (counting from 0) of a stream failed: SQLite's error, its message
/// prefixed with the row (or statement); the whole stream was rolled back.
pub fn many_row_failed(w: StreamWords, row: u64, cause: ErrorInfo) -> ErrorInfo {
    ErrorInfo {
        message: format!(
            "{} {row} (counting from 0) failed: {}; nothing of the {} was applied",
            w.item, cause.message, w.name
        ),
        ..cause
    }
}

/// The SQL of an executemany is not one ordinary statement.
pub fn many_needs_one_statement() -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::NotAllowed,
        "executemany takes one ordinary statement (no second statement, transaction control, savepoint, \
         PRAGMA or schema-version write); nothing was applied",
    )
}

/// A stream frame (`ManyRows`, `BatchPart`, `ManyEnd`) outside its stream, or
/// another request inside one.
pub fn many_out_of_place(w: StreamWords, got: &str) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Protocol,
        format!(
            "{got} is out of place: a {} is {} with nothing else between; nothing of the stream was applied",
            w.name, w.frames
        ),
    )
}

/// `ManyEnd` counted other rows (or statements) than the stream carried.
pub fn many_row_count(w: StreamWords, announced: u64, arrived: u64) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Protocol,
        format!(
            "the {} announced {announced} {item}s but {arrived} arrived; nothing of it was applied",
            w.name,
            item = w.item
        ),
    )
}

/// The client abandoned its stream (`ManyEnd` without commit).
pub fn many_abandoned(w: StreamWords) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::SessionState,
        format!("the {} was abandoned by its client; nothing was applied", w.name),
    )
}

/// The stream's transaction was rolled back by the broker before it ended: its
/// deadline passed, it sent nothing for a lease, or the broker is stopping.
pub fn many_rolled_back(w: StreamWords) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Timeout,
        format!(
            "the {} timed out: it was not complete within its deadline or sent no {}s for the broker's \
             lease (--lease-secs), or the broker is shutting down or failed inside; the broker rolled it \
             back and released the writer; nothing of it was applied",
            w.name, w.item
        ),
    )
}

/// A stream inside a write session.
pub fn many_in_session(w: StreamWords) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::SessionState,
        format!("{} runs in a transaction of its own: end this connection's write session first", w.name),
    )
}

// ----- transaction control in a request (what SQLite reports, see sql::exec) -------

/// A transaction-control statement the broker cannot honour where it stands.
pub fn tx_control(msg: &str) -> ErrorInfo {
    ErrorInfo::new(ErrorKind::SessionState, msg)
}

/// Statements after the request's `COMMIT`/`ROLLBACK`.
pub const AFTER_END: &str = "statements after COMMIT/ROLLBACK in the same request; send them separately";
/// A `BEGIN` that is not the request's first statement.
pub const BEGIN_NOT_FIRST: &str =
    "BEGIN is only accepted as the first statement of a request (the request is already one transaction)";
/// `COMMIT` in a one-shot request that did not begin with `BEGIN`.
pub const COMMIT_WITHOUT_BEGIN: &str =
    "COMMIT without BEGIN: a one-shot request commits by itself; use a write session to control the transaction";
/// `ROLLBACK` in a one-shot request.
pub const ROLLBACK_ONE_SHOT: &str =
    "ROLLBACK in a one-shot request: to discard changes, use a write session and roll it back";
/// `BEGIN` inside a session, after its first statement.
pub const BEGIN_IN_SESSION: &str =
    "BEGIN inside a write session: the session is already a transaction (opened with BEGIN IMMEDIATE)";
/// A request that opened with `BEGIN` and never committed.
pub const BEGIN_WITHOUT_COMMIT: &str = "BEGIN without a matching COMMIT in the request; nothing was applied";

/// What SQLite's COMMIT says about a deferred foreign-key violation, with its codes:
/// the broker checks it for each request of a group as that request's own COMMIT
/// would.
pub fn deferred_fk() -> ErrorInfo {
    ErrorInfo {
        kind: ErrorKind::Constraint,
        message: "FOREIGN KEY constraint failed".into(),
        sqlite: Some(SqliteCode {
            primary: rusqlite::ffi::SQLITE_CONSTRAINT,
            extended: rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY,
        }),
    }
}

// ----- the connection's state (the second line, see guard) -------------------------

/// A request left state on the shared connection (the authorizer should have
/// refused it). `what` comes from `guard::connection_state`. Tests recognise the
/// second line by this message's start.
pub fn state_left(what: &str) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::NotAllowed,
        format!(
            "the request left state on the broker's shared connection ({what}), which would reach \
             other clients; it was rolled back and nothing of it was applied"
        ),
    )
}

// ----- writes stopped (reported by Health, answered `writes_stopped`) --------------

/// Why writes stop for good when the connection cannot be restored.
pub fn connection_not_restored(what: &str) -> String {
    format!(
        "the broker's connection could not be restored after a client request ({what}); \
         it refuses writes until restarted so that no client's state leaks into another's"
    )
}

/// Why writes stop for good when a `-wal` or `-shm` file was deleted or replaced.
pub fn wal_file_replaced(path: &str, what: &str) -> String {
    format!(
        "{path} {what} while the broker had it open: readers and the broker no longer share one \
         write-ahead log, so readers miss new writes and a crash would lose acknowledged ones. \
         The broker refuses writes from now on. Stop it cleanly (litebroker shutdown): its final \
         checkpoint moves every committed write into the database file; then start it again"
    )
}

/// The answer to a write while writes are stopped, with the reason recorded.
pub fn writes_stopped(reason: String) -> ErrorInfo {
    ErrorInfo::new(ErrorKind::WritesStopped, reason)
}

// ----- exactly-once (reported by Health) ------------------------------------------

/// Request ids are off because retention is 0.
pub const IDS_DISABLED: &str = "disabled by --request-id-retention-hours 0";

/// Request ids are off because another process held a lock at start-up.
pub fn ids_locked_at_start(attempts: u32, table: &str, e: &dyn std::fmt::Display) -> String {
    format!(
        "another process held a lock on the database through {attempts} attempt(s) while the broker set up \
         its table {table} ({e}); writes are not exactly-once until it succeeds (the broker retries every \
         few seconds while idle)"
    )
}

/// Request ids are off because the table cannot be set up.
pub fn ids_setup_failed(table: &str, e: &dyn std::fmt::Display) -> String {
    format!("the broker cannot set up its table {table}: {e}")
}

/// Request ids are off after a restore.
pub fn ids_setup_failed_after_restore(table: &str, e: &dyn std::fmt::Display) -> String {
    format!("the broker cannot set up its table {table} in the restored database: {e}")
}

/// Objects with the broker's reserved names that it did not make.
pub fn foreign_reserved_objects(found: &[String]) -> String {
    format!(
        "the database holds objects with the broker's reserved names that the broker did not make: {}; \
         rename or drop them (with the sqlite3 CLI) so that the broker can record request ids",
        found.join(", ")
    )
}

// ----- the protocol ---------------------------------------------------------------

/// A client of another major protocol version, refused at its handshake.
pub fn incompatible(client_protocol: u32) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Incompatible,
        format!(
            "incompatible protocol: this client speaks protocol {client_protocol}, the broker \
             (litebrokerd {}, pid {}) speaks protocol {PROTOCOL_VERSION}; use a litebroker \
             client and broker of the same version (restart the broker after upgrading)",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        ),
    )
}

/// The versions of a refused handshake, for the log.
pub fn version_mismatch(client_protocol: u32) -> String {
    format!("it speaks protocol {client_protocol}, this broker speaks protocol {PROTOCOL_VERSION}")
}

/// A first frame that does not decode as a handshake.
pub fn expected_hello_malformed(e: &dyn std::fmt::Display) -> ErrorInfo {
    ErrorInfo::new(ErrorKind::Protocol, format!("expected a handshake (Hello) as the first frame: {e}"))
}

/// A first frame that is another request.
pub fn expected_hello(got: &str) -> ErrorInfo {
    ErrorInfo::new(ErrorKind::Protocol, format!("expected a handshake (Hello) as the first frame, got {got}"))
}

/// `Watch` from a client holding a write session: the connection would become a
/// stream and the session could never end.
pub fn watch_in_session() -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::SessionState,
        "cannot watch on a connection that holds a write session: watch on a connection of its own",
    )
}

/// A second handshake on one connection.
pub fn handshake_again() -> ErrorInfo {
    ErrorInfo::new(ErrorKind::Protocol, "handshake already done on this connection")
}

/// A frame after the handshake that does not decode (`malformed` is the frame
/// error, "malformed frame: …"). From a client of a higher minor than the
/// broker's it is most likely a request appended after the broker's minor: the
/// answer then says so, naming both versions.
pub fn malformed(malformed: &dyn std::fmt::Display, client_minor: u32, broker_minor: u32) -> ErrorInfo {
    let message = if client_minor > broker_minor {
        format!(
            "{malformed} (this client speaks protocol {PROTOCOL_VERSION}.{client_minor}, this broker \
             {PROTOCOL_VERSION}.{broker_minor}: a request added after {PROTOCOL_VERSION}.{broker_minor} is \
             unknown to this broker; upgrade the broker to use it)"
        )
    } else {
        malformed.to_string()
    };
    ErrorInfo::new(ErrorKind::Protocol, message)
}

/// A request appended in protocol minor `needed` from a client that said it speaks
/// an older minor: its answer would be a variant that client cannot decode.
pub fn needs_minor(kind: &str, needed: u32, client_minor: u32) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Protocol,
        format!(
            "the {kind} request needs protocol {PROTOCOL_VERSION}.{needed} or later, and this client said it \
             speaks {PROTOCOL_VERSION}.{client_minor}: its answer is not sent to a client that could not \
             decode it"
        ),
    )
}

// ----- limits -----------------------------------------------------------------------

/// A request frame longer than `--max-frame-bytes` (answered, then the connection
/// is closed: the stream cannot be resynchronised).
pub fn frame_too_large(len: u64, max: u32) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::LimitExceeded,
        format!("frame of {len} bytes exceeds the maximum frame size of {max} bytes (--max-frame-bytes)"),
    )
}

/// Sent instead of an answer that exceeds the maximum frame size.
pub fn answer_too_large(len: u64, max: u32) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::LimitExceeded,
        format!(
            "the answer ({len} bytes) exceeds the maximum frame size of {max} bytes \
             (--max-frame-bytes); if this was a write, it was applied; ask for fewer rows"
        ),
    )
}

/// A request's rows outgrew the answer while they were collected.
pub fn rows_too_large(max_answer_bytes: usize) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::LimitExceeded,
        format!(
            "answer too large: the rows of this request exceed the maximum answer size of {max_answer_bytes} \
             bytes (--max-frame-bytes); it was stopped and nothing of it was applied; ask for fewer rows \
             or smaller values"
        ),
    )
}

/// A count over its limit within one request (statements, rows); nothing applied.
pub fn limit(what: &str, max: usize, flag: &str) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::LimitExceeded,
        format!("{what} exceeds the limit of {max} ({flag}); nothing was applied"),
    )
}

/// Too many parameters in one statement.
pub fn too_many_params(got: usize, max: usize) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::LimitExceeded,
        format!("{got} parameters in one statement exceed the limit of {max} (--max-params)"),
    )
}

/// Too many statements in one batch.
pub fn too_many_batch_statements(got: usize, max: usize) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::LimitExceeded,
        format!("{got} statements in one batch exceed the limit of {max} (--max-batch-statements)"),
    )
}

/// A refused connection: too many clients.
pub fn too_many_clients(open: usize, max: usize) -> String {
    format!("too many clients: {open} connected, the limit is {max} (--max-clients)")
}

/// A refused connection: a peer of another user (Unix: the socket tells who).
#[cfg(unix)]
pub fn peer_not_allowed(uid: u32, pid: Option<u32>, broker_uid: u32) -> String {
    format!(
        "peer uid {uid} (pid {}) is not the broker's user (uid {broker_uid}); allow it with --allow-uid {uid}",
        pid.map_or_else(|| "unknown".into(), |p| p.to_string())
    )
}

/// SQLite ran out of the memory the broker allows it (`sqlite` is its message).
pub fn out_of_memory(sqlite: &str) -> String {
    format!(
        "{sqlite}: the statement needed more memory than the broker allows SQLite \
         (--max-memory-mb); nothing of the request was applied"
    )
}

/// A value longer than SQLite's length limit, the frame size (`sqlite` is its message).
pub fn value_too_big(sqlite: &str) -> String {
    format!(
        "{sqlite}: a value may not exceed the maximum frame size (--max-frame-bytes); \
         nothing of the request was applied"
    )
}

// ----- the SQL text of a request --------------------------------------------------

/// SQL text with a NUL byte: SQLite would stop reading there.
pub fn nul_byte(at: usize) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Sql,
        format!(
            "the SQL text holds a NUL byte at offset {at}: SQLite would stop reading there and \
             ignore the rest; nothing was applied"
        ),
    )
}

/// Placeholders and parameters do not match.
pub fn param_count(wanted: usize, got: usize) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Sql,
        format!("the SQL has {wanted} parameter placeholder(s) but {got} parameter(s) were given"),
    )
}

/// A batch without statements.
pub fn empty_batch() -> ErrorInfo {
    ErrorInfo::new(ErrorKind::Sql, "empty batch: no statements to run")
}

/// A client built for a newer schema than the database's: its writes are refused.
pub fn schema_mismatch(expected: u32, schema: u32) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::SchemaMismatch,
        format!(
            "this client was built for schema version {expected} but the database is at version \
             {schema}: its writes are refused so they cannot corrupt data; apply the migrations \
             first (the app's migrate step, or litebroker migrate DIR)"
        ),
    )
}

// ----- what client SQL may not do (decided by sql::authorizer) ---------------------

/// `VACUUM`, refused by its first keyword (it shows the authorizer nothing).
pub fn vacuum_refused() -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::NotAllowed,
        "VACUUM is not allowed through the broker: VACUUM INTO would write a copy of the \
         database to a file of the client's choosing, and VACUUM cannot run inside the \
         broker's transaction; use `litebroker backup` for a consistent copy",
    )
}

/// A write, DDL, trigger or index on one of the broker's own objects.
pub fn reserved_object(what: &str, name: &str, prefix: &str) -> String {
    format!(
        "{what} {name} is not allowed through the broker: objects named {prefix}… belong to \
         the broker (clients may read them)"
    )
}

/// A savepoint named like the broker's own.
pub fn reserved_savepoint(name: &str, prefixes: &str) -> String {
    format!(
        "savepoint '{name}' is not allowed through the broker: names starting with {prefixes} are \
         reserved for the broker's own savepoints"
    )
}

/// Anything in the temp schema.
pub fn temp_schema(what: &str) -> String {
    format!(
        "{what} in the temp schema is not allowed through the broker: temp objects and settings \
         would live in the broker's one connection, which every client shares, and could shadow \
         or act on other clients' tables; use regular tables"
    )
}

/// `ATTACH`.
pub fn attach(filename: &str) -> String {
    format!(
        "ATTACH is not allowed through the broker: it would let a client reach other files \
         ('{filename}'); only the broker's database is served"
    )
}

/// `DETACH`.
pub fn detach(database: &str) -> String {
    format!(
        "DETACH is not allowed through the broker (database '{database}'): the broker's \
         connection serves its one database only"
    )
}

/// `load_extension()`.
pub const LOAD_EXTENSION: &str =
    "load_extension() is not allowed through the broker: it would load native code into the broker process";

/// An action SQLite reports by a code the broker does not know.
pub fn unknown_action(code: i32) -> String {
    format!("an SQL action SQLite reports as code {code} is not allowed through the broker")
}

/// A PRAGMA that sets something of the connection (`shown` is the statement).
pub fn pragma(shown: &str, name: &str) -> String {
    format!("{shown} is not allowed through the broker: {}", pragma_reason(name))
}

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
        "defer_foreign_keys" => {
            "turning it off makes SQLite forget the foreign-key violations still pending; the broker \
             turns it off itself when the request ends"
        }
        _ => "it would change a setting of the broker's writer connection, which every client's writes share",
    }
}

// ----- migrations and restores ----------------------------------------------------

/// Migration versions out of order.
pub fn migrations_out_of_order(version: u32, name: &str, last: u32) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Sql,
        format!(
            "migration versions must be positive and strictly increasing: {version} ({name}) follows {last}"
        ),
    )
}

/// A migration that failed and was rolled back (`cause` keeps its kind and codes).
pub fn migration_failed(mut cause: ErrorInfo, version: u32, name: &str, now_at: u32) -> ErrorInfo {
    cause.message = format!(
        "migration {version} ({name}) failed and was rolled back: {}; the database is at schema version {now_at}",
        cause.message
    );
    cause
}

/// A restore that failed inside the broker; the database is unchanged.
pub fn restore_failed(what: &str, e: &dyn std::fmt::Display) -> ErrorInfo {
    ErrorInfo::new(ErrorKind::Internal, format!("restore: {what}: {e}; the database is unchanged"))
}

/// A restore source whose page size differs from the database's.
pub fn restore_page_size(source: &str, theirs: i64, ours: i64) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::VerificationFailed,
        format!(
            "cannot restore {source}: its page size ({theirs}) differs from the database's ({ours}), \
             which WAL mode cannot change; the database is unchanged"
        ),
    )
}

/// A restore source refused for `why` (e.g. objects with the broker's reserved names).
pub fn restore_refused(source: &str, why: &str) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::VerificationFailed,
        format!("cannot restore {source}: {why}; the database is unchanged"),
    )
}

/// A restore source whose path cannot be resolved.
pub fn restore_path(path: &str, e: &dyn std::fmt::Display) -> ErrorInfo {
    ErrorInfo::new(ErrorKind::VerificationFailed, format!("cannot restore {path}: {e}"))
}

/// A restore source that is the database itself.
pub fn restore_from_itself(path: &str) -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::VerificationFailed,
        format!("{path} is the database itself; restore from a backup copy"),
    )
}

/// A restore source that failed its checks (`why`: header, integrity, foreign keys).
pub fn restore_unsound(why: &dyn std::fmt::Display) -> ErrorInfo {
    ErrorInfo::new(ErrorKind::VerificationFailed, format!("refusing to restore: {why}"))
}

// ----- failures inside the broker -------------------------------------------------

/// A request cut short by a failure inside the broker (a panic while running it).
pub fn cut_short() -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Internal,
        "the broker failed while running this request (an internal error, in its log); the request \
         was rolled back and nothing of it was applied",
    )
}

/// SQLite ended a transaction the broker still had open, without an error of its own.
pub fn transaction_ended() -> ErrorInfo {
    ErrorInfo::new(ErrorKind::Internal, "the transaction ended unexpectedly")
}

/// A pipelined write that routing turned into something other than a one-shot
/// write (a bug: only writes outside a session are pipelined).
pub fn not_pipelinable() -> ErrorInfo {
    ErrorInfo::new(
        ErrorKind::Internal,
        "this write could not be pipelined (an internal error); nothing of it was applied: send it again",
    )
}

/// A reply of a kind its waiter does not expect.
pub fn unexpected_reply(what: &dyn std::fmt::Debug) -> ErrorInfo {
    ErrorInfo::new(ErrorKind::Internal, format!("unexpected reply {what:?}"))
}

/// The writer thread went away while a connection waited for its answer.
pub fn writer_gone() -> ErrorInfo {
    ErrorInfo::new(ErrorKind::Internal, "the writer thread is gone")
}

/// An operation on a read-only connection of the broker's failed (`what` names it).
pub fn operation_failed(what: &str, e: &dyn std::fmt::Display) -> ErrorInfo {
    ErrorInfo::new(ErrorKind::Internal, format!("{what}: {e}"))
}
