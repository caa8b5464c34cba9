//! How a command fails: its exit code, the error kind named in `--json`, and
//! the message, mapped once from the client library's errors (the exit-code
//! contract of OPERATIONS.md).

use litebroker_client::protocol::FrameError;
use litebroker_client::{ClientError, ErrorKind, LOCKED_USER_TEXT};

use crate::Cli;

/// A failure with its exit code.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
    /// The command already printed its result document (e.g. a failed `verify`):
    /// with `--json`, no second (error) document follows it.
    pub(crate) reported: bool,
}

pub(crate) fn fail(code: u8, kind: &'static str, message: impl Into<String>) -> Failure {
    Failure { code, kind, message: message.into(), reported: false }
}

/// A failure whose details the command already printed.
pub(crate) fn reported(code: u8, kind: &'static str, message: impl Into<String>) -> Failure {
    Failure { reported: true, ..fail(code, kind, message) }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        // Errors from the client library keep their exit code through the context chain.
        if let Some(ce) = e.downcast_ref::<ClientError>() {
            let mut f = client_failure(ce, None);
            f.message = format!("{e:#}");
            return f;
        }
        fail(1, "error", format!("{e:#}"))
    }
}

/// A report the broker may be too old to give: None then (the client library
/// says so with `Unexpected`, before sending anything).
pub(crate) fn if_known<T>(r: Result<T, ClientError>) -> Result<Option<T>, ClientError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ClientError::Unexpected(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn client_failure(e: &ClientError, cli: Option<&Cli>) -> Failure {
    match e {
        ClientError::NotRunning { .. } => {
            let db = cli.map_or_else(|| "data/app.db".into(), |c| c.db.display().to_string());
            fail(
                3,
                "not_running",
                format!(
                    "{e}.\nReads still work without it (read-only mode): litebroker --db {db} query \"SELECT …\"\n\
                     Start the broker with: litebrokerd --db {db}"
                ),
            )
        }
        ClientError::ConnectionLost { .. } => fail(3, "connection_lost", e.to_string()),
        ClientError::AutoStart(_) => fail(3, "autostart_failed", e.to_string()),
        ClientError::Frame(FrameError::TooLarge { .. }) => fail(6, "limit_exceeded", e.to_string()),
        ClientError::Untrusted(_) => fail(3, "untrusted_broker", e.to_string()),
        ClientError::Broker(info) => match info.kind {
            ErrorKind::VerificationFailed => fail(5, "verification_failed", info.message.clone()),
            ErrorKind::LimitExceeded => fail(6, "limit_exceeded", info.message.clone()),
            ErrorKind::WritesStopped => {
                let db = cli.map_or_else(|| "data/app.db".into(), |c| c.db.display().to_string());
                fail(
                    3,
                    "writes_stopped",
                    format!("{}\nReads still work: litebroker --db {db} query \"SELECT …\"", info.message),
                )
            }
            ErrorKind::SchemaMismatch => fail(1, "schema_mismatch", info.message.clone()),
            ErrorKind::Locked => {
                fail(4, "locked", format!("{LOCKED_USER_TEXT}\n\nDetails: {}", info.message))
            }
            ErrorKind::Timeout => fail(4, "timeout", info.message.clone()),
            ErrorKind::ShuttingDown | ErrorKind::Incompatible => {
                fail(3, info.kind.as_str(), info.message.clone())
            }
            k => fail(1, k.as_str(), info.message.clone()),
        },
        e if e.is_locked() => fail(4, "locked", format!("{LOCKED_USER_TEXT}\n\nDetails: {e}")),
        other => fail(1, "error", other.to_string()),
    }
}
