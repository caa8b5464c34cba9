//! The client library's error type.

use std::io;
use std::path::PathBuf;

use litebroker_protocol::{ErrorInfo, ErrorKind, FrameError};

/// The notes' user text for a database locked by someone else.
pub const LOCKED_USER_TEXT: &str = "Error: Database is locked

This may occur if:
  1. Another application instance is accessing the database
  2. A previous connection was not properly closed
  3. The database is on a network drive (not recommended)

Action: Close all other connections and retry. If issue persists, restart the application.";

/// Anything that can go wrong talking to the broker or reading the database.
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
    AutoStart(Box<crate::autostart::AutoStartError>),
}

impl From<crate::autostart::AutoStartError> for ClientError {
    fn from(e: crate::autostart::AutoStartError) -> Self {
        ClientError::AutoStart(Box::new(e))
    }
}

/// Result alias of the client library.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    /// The broker's error class, when the broker reported the failure.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Broker(info) => Some(info.kind),
            _ => None,
        }
    }

    /// The broker's error details, when the broker reported the failure.
    pub fn info(&self) -> Option<&ErrorInfo> {
        match self {
            ClientError::Broker(info) => Some(info),
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

    /// True when the request certainly never reached the broker, so retrying it
    /// cannot apply it twice.
    pub fn never_reached_broker(&self) -> bool {
        matches!(self, ClientError::NotRunning { .. } | ClientError::ConnectionLost { sent: false, .. })
    }
}
