//! The client library's errors: [`ClientError`], and the two kinds of failure it
//! carries whole, [`Untrusted`] (whom the client refused to talk to) and
//! [`AutoStartError`] (why a broker could not be started on demand). They are here,
//! below the code that raises them, so that the error type names them without
//! importing from above.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use litebroker_protocol::stream::ExchangeError;
use litebroker_protocol::{ErrorInfo, ErrorKind, FrameError, Response};

use crate::env::{BROKER_ENV, TRUST_UID_ENV};

/// What the user is told when another process held the database locked through
/// the whole retry schedule: what happened, the likely causes, what to do.
pub const LOCKED_USER_TEXT: &str = "Error: Database is locked

This may occur if:
  1. Another application instance is accessing the database
  2. A previous connection was not properly closed
  3. The database is on a network drive (not recommended)

Action: Close all other connections and retry. If issue persists, restart the application.";

/// Anything that can go wrong talking to the broker or reading the database.
///
/// Act on its class, not its text: [`ClientError::is_locked`] (another program
/// held the database through the whole retry schedule; nothing was applied),
/// [`ClientError::is_broker_unavailable`] (no broker serves writes now; reads still
/// work), [`ClientError::kind`] and [`ClientError::sqlite_code`] for the rest.
///
/// ```no_run
/// use litebroker_client::{Db, ErrorKind};
/// let db = Db::open("data/app.db")?;
/// match db.execute("INSERT INTO skus (sku, qty) VALUES (?1, ?2)", ("A1", 5)) {
///     Ok(done) => println!("row {}", done.last_insert_rowid),
///     Err(e) if e.is_locked() => eprintln!("{e}"), // "Database is locked: …"
///     Err(e) if e.is_broker_unavailable() => eprintln!("read-only for now: {e}"),
///     Err(e) if e.kind() == Some(ErrorKind::Constraint) => eprintln!("A1 exists already"),
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), litebroker_client::ClientError>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No broker listens for this database. Reads still work through a
    /// [`crate::Reader`] (read-only mode).
    #[error("no broker is serving {}: nothing listens on {socket} ({source})", db.display())]
    NotRunning {
        /// Canonical database path.
        db: PathBuf,
        /// The socket or pipe that was tried.
        socket: String,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// The broker answered with an error.
    #[error("{0}")]
    Broker(ErrorInfo),
    /// The connection broke or timed out. `sent` tells whether the request had been
    /// fully sent: when false the broker never saw it and a retry is always safe;
    /// when true its outcome is unknown.
    #[error("connection to the broker lost ({reason}); the request {}", if *sent { "may or may not have been applied" } else { "was not sent" })]
    ConnectionLost {
        /// Whether the request was fully written before the failure.
        sent: bool,
        /// What happened.
        reason: String,
    },
    /// The broker sent something this client cannot read.
    #[error("protocol error: {0}")]
    Frame(#[from] FrameError),
    /// The broker sent a valid but unexpected answer.
    #[error("unexpected answer from the broker: {0}")]
    Unexpected(String),
    /// A failure of the local read-only connection.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A local I/O failure (resolving paths, opening files).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// No broker ran and starting one on demand failed (see [`crate::autostart`]).
    /// Boxed: its paths and log excerpt would otherwise make every `Result` large.
    #[error("{0}")]
    AutoStart(Box<AutoStartError>),
    /// What listens on the broker's socket (or pipe) is not this user's broker of this
    /// database; the connection was dropped before any request was sent.
    /// Boxed for the same reason as [`ClientError::AutoStart`].
    #[error("{0}")]
    Untrusted(Box<Untrusted>),
    /// A parameter could not be given to the statement (a `u64` above `i64::MAX`,
    /// a name the statement does not have, a parameter left without a value).
    #[error("parameter: {0}")]
    Parameter(String),
    /// A column of a row could not be read as asked (no such column, a value of
    /// another type or out of range).
    #[error("column: {0}")]
    Column(String),
    /// Every broker connection of a [`crate::Db`] stayed busy until the call's
    /// deadline.
    #[error("{0}")]
    PoolExhausted(String),
    /// A row of an executemany failed at the broker: nothing of the executemany
    /// was applied. `row` counts from 0 in the order the rows were given.
    #[error("{error}")]
    RowFailed {
        /// Index of the failing row, counting from 0.
        row: u64,
        /// The broker's error for it (SQLite's message, prefixed with the row).
        error: ErrorInfo,
    },
    /// A statement of a streamed batch failed at the broker: nothing of the
    /// batch was applied. `index` counts from 0 in the order the statements
    /// were given.
    #[error("{error}")]
    StatementFailed {
        /// Index of the failing statement, counting from 0.
        index: u64,
        /// The broker's error for it (SQLite's message, prefixed with the index).
        error: ErrorInfo,
    },
}

/// Why the client refused to talk to what listens on the socket: every check runs
/// before the first request, so nothing was sent to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Untrusted {
    /// The folder of a socket this client derived (not one given explicitly) could
    /// have been prepared by another user.
    #[error(
        "refusing the socket folder {}: {problem} (owner uid {owner}, mode {mode:o}; this user is uid {me}). \
         Whoever can write there can put a socket of theirs under your broker's name, so nothing was sent. \
         {advice}",
        folder.display()
    )]
    SocketFolder {
        /// The socket's folder.
        folder: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// Its permission bits.
        mode: u32,
        /// This process's effective uid.
        me: u32,
        /// What is wrong with it.
        problem: String,
        /// What to do about it.
        advice: String,
    },
    /// The listening process runs as a user this client does not trust.
    #[error(
        "refusing the listener on {socket}: it runs as uid {uid}, not as this user (uid {me}) or root, \
         so it is not your broker and nothing was sent. If it is a broker you trust (e.g. a service \
         user's broker started with --allow-uid {me}), trust that uid explicitly \
         ({TRUST_UID_ENV}={uid}, or ConnectOptions::trust_broker_uid({uid})); otherwise find out who \
         started it"
    )]
    PeerUser {
        /// The socket.
        socket: String,
        /// The listener's effective uid.
        uid: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// Windows: the pipe belongs to another user.
    #[error(
        "refusing the pipe {socket}: it is owned by {owner}, not by this user ({me}), so it is not your \
         broker and nothing was sent; find out who created it (the pipe exists while its process runs)"
    )]
    PipeOwner {
        /// The pipe name.
        socket: String,
        /// The pipe's owner SID.
        owner: String,
        /// This user's SID.
        me: String,
    },
    /// The operating system could not tell who listens.
    #[error(
        "refusing the listener on {socket}: cannot tell which user runs it ({detail}); nothing was sent"
    )]
    PeerUnknown {
        /// The socket or pipe.
        socket: String,
        /// Why the check could not be made.
        detail: String,
    },
    /// A trusted broker answered, but it serves another database file.
    #[error(
        "the broker on {socket} (pid {pid}) serves {served}, not {}: refusing to send it this \
         database's requests. Stop that broker or give the socket of the right one (--socket)",
        expected.display()
    )]
    WrongDatabase {
        /// The socket or pipe.
        socket: String,
        /// The canonical database path this client asked for.
        expected: PathBuf,
        /// The database the broker says it serves.
        served: String,
        /// The broker's pid, as it reported it.
        pid: u32,
    },
}

/// Why the on-demand start could not produce a connection (see [`crate::autostart`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AutoStartError {
    /// No `litebrokerd` executable was found.
    #[error(
        "cannot start a broker: no litebrokerd executable found (looked at: {}); \
         set {BROKER_ENV} to its path, put it on PATH, or install it next to this program",
        list(searched)
    )]
    NotFound {
        /// Every path tried, in order.
        searched: Vec<PathBuf>,
    },
    /// The executable could not be started (or its log file not opened).
    #[error("cannot start the broker {}: {source}", path.display())]
    Spawn {
        /// The broker executable (or the log file, when that failed).
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The started broker exited with a failure and no other broker answers.
    #[error(
        "the started broker {} exited with {status} and no other broker serves the database; \
         the end of its log {}:\n{tail}",
        path.display(), log.display()
    )]
    Failed {
        /// The broker executable.
        path: PathBuf,
        /// How it exited.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// No broker answered within [`crate::AutoStart::start_timeout`].
    #[error(
        "no broker answered for {} within {waited:?} after starting {}; see its log {}",
        db.display(), path.display(), log.display()
    )]
    NotReady {
        /// The database.
        db: PathBuf,
        /// The broker executable.
        path: PathBuf,
        /// How long was waited.
        waited: Duration,
        /// Its log file.
        log: PathBuf,
    },
}

fn list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing: no PATH and no program folder".into();
    }
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

impl From<Untrusted> for ClientError {
    fn from(e: Untrusted) -> Self {
        ClientError::Untrusted(Box::new(e))
    }
}

impl From<AutoStartError> for ClientError {
    fn from(e: AutoStartError) -> Self {
        ClientError::AutoStart(Box::new(e))
    }
}

/// Result alias of the client library.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    /// The broker's error class, when the broker reported the failure.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Broker(info)
            | ClientError::RowFailed { error: info, .. }
            | ClientError::StatementFailed { error: info, .. } => Some(info.kind),
            _ => None,
        }
    }

    /// The broker's error details, when the broker reported the failure.
    pub fn info(&self) -> Option<&ErrorInfo> {
        match self {
            ClientError::Broker(info)
            | ClientError::RowFailed { error: info, .. }
            | ClientError::StatementFailed { error: info, .. } => Some(info),
            _ => None,
        }
    }

    /// True for "database locked": another process held a lock through the whole
    /// retry schedule (at the broker, or on the local read connection).
    pub fn is_locked(&self) -> bool {
        match self {
            ClientError::Broker(info) => info.kind == ErrorKind::Locked,
            ClientError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }

    /// True when no broker could serve the call: none runs, it is shutting down,
    /// refuses writes, or the connection to it broke. Reads still work then.
    pub fn is_broker_unavailable(&self) -> bool {
        matches!(self, ClientError::NotRunning { .. } | ClientError::ConnectionLost { .. })
            || matches!(self.kind(), Some(ErrorKind::ShuttingDown | ErrorKind::WritesStopped))
    }

    /// SQLite's extended result code, when SQLite reported the failure (at the
    /// broker or on this process's read connection).
    pub fn sqlite_code(&self) -> Option<i32> {
        match self {
            ClientError::Broker(info)
            | ClientError::RowFailed { error: info, .. }
            | ClientError::StatementFailed { error: info, .. } => info.sqlite.map(|c| c.extended),
            ClientError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => Some(e.extended_code),
            _ => None,
        }
    }

    /// True when the request certainly never reached the broker, so retrying it
    /// cannot apply it twice.
    pub fn never_reached_broker(&self) -> bool {
        matches!(self, ClientError::NotRunning { .. } | ClientError::ConnectionLost { sent: false, .. })
    }
}

/// A failed exchange in this library's terms; `sent` tells the retry rules
/// whether the broker can have seen the request.
pub(crate) fn exchange_error(e: ExchangeError) -> ClientError {
    let lost = |sent, reason| ClientError::ConnectionLost { sent, reason };
    match e {
        ExchangeError::Encode(f) | ExchangeError::Malformed(f) => ClientError::Frame(f),
        ExchangeError::Refused(info) => ClientError::Broker(info),
        ExchangeError::Send(io) => lost(false, describe_io(&io)),
        ExchangeError::Receive(io) => lost(true, describe_io(&io)),
        ExchangeError::Closed => lost(true, "the broker closed the connection before answering".into()),
        ExchangeError::Truncated(f) => lost(true, f.to_string()),
        ExchangeError::TimedOut { sent } => lost(sent, "no answer from the broker in time".into()),
        // A variant added later: the stream's state is unknown, as for the others.
        other => lost(true, other.to_string()),
    }
}

fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "no answer from the broker in time".to_owned(),
        _ => e.to_string(),
    }
}

/// The broker answered `what` with a valid answer of another kind.
pub(crate) fn unexpected(what: &str, resp: &Response) -> ClientError {
    ClientError::Unexpected(format!("{what} answered with {resp:?}"))
}
