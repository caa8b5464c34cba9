//! How to reach the broker of a database: [`ConnectOptions`], and its opt-in
//! [`AutoStart`] settings for starting a broker when none runs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::env::trusted_uids_from_env;

/// The total wait: how long a request may take by default, waiting for the writer
/// and any lock included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an on-demand start waits by default for the started broker to answer.
/// Generous: a debug build on a loaded 2-vCPU machine starting ten brokers at once
/// takes well under a second, but a cold disk can take longer.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(15);

/// How to reach the broker of a database.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The database file (the broker is found from it).
    pub db: PathBuf,
    /// An explicit socket path (Unix) or pipe name (Windows) instead of the derived one.
    pub socket: Option<String>,
    /// Name shown in the broker's `connections` list.
    pub client_name: String,
    /// Schema version this client was built for, if it cares.
    pub expected_schema: Option<u32>,
    /// Time allowed for connecting and the handshake.
    pub connect_timeout: Duration,
    /// Default timeout of each request.
    pub request_timeout: Duration,
    /// Give every write that is not marked idempotent a request id, so that it can
    /// be resent after a lost answer and still apply exactly once (default on).
    pub auto_request_ids: bool,
    /// Reconnect and resend when the broker goes away in the middle of a one-shot
    /// request, within the request's timeout (default on). Only requests that cannot
    /// apply twice are resent: never sent, idempotent, or carrying a request id.
    pub reconnect: bool,
    /// Opt-in on-demand start: when no broker runs, start one (see [`crate::autostart`]).
    pub autostart: Option<AutoStart>,
    /// Unix: more users whose broker this client talks to, besides its own user and
    /// root (the counterpart of the broker's `--allow-uid`). Starts with the uids in
    /// [`crate::TRUST_UID_ENV`]. Ignored on Windows, where the pipe's owner must be
    /// this user or the system.
    pub trusted_broker_uids: Vec<u32>,
}

impl ConnectOptions {
    /// Options for `db` with defaults: derived socket, the program's name, 5 s to
    /// connect, 30 s per request.
    pub fn new(db: impl AsRef<Path>) -> Self {
        ConnectOptions {
            db: db.as_ref().to_path_buf(),
            socket: None,
            client_name: default_client_name(),
            expected_schema: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: DEFAULT_TIMEOUT,
            auto_request_ids: true,
            reconnect: true,
            autostart: None,
            trusted_broker_uids: trusted_uids_from_env(),
        }
    }

    /// Also talks to a broker run by `uid` (e.g. a service user's broker started with
    /// `--allow-uid <this user>`); by default only this user's and root's are trusted.
    pub fn trust_broker_uid(mut self, uid: u32) -> Self {
        self.trusted_broker_uids.push(uid);
        self
    }

    /// Sets an explicit socket (or pipe) name.
    pub fn socket(mut self, socket: impl Into<String>) -> Self {
        self.socket = Some(socket.into());
        self
    }

    /// Sets the client name shown by the broker.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// Sets the default request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the schema version this client was built for.
    pub fn expected_schema(mut self, version: u32) -> Self {
        self.expected_schema = Some(version);
        self
    }

    /// Starts a broker when none runs (opt-in; see [`crate::autostart`]).
    pub fn autostart(mut self, auto: AutoStart) -> Self {
        self.autostart = Some(auto);
        self
    }
}

fn default_client_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "client".to_owned())
}

/// Opt-in settings of the on-demand start (see [`crate::autostart`]).
#[derive(Debug, Clone)]
pub struct AutoStart {
    /// The `litebrokerd` to start; `None` searches as [`crate::autostart::find_broker`]
    /// describes.
    pub broker_path: Option<PathBuf>,
    /// Extra arguments after `--db <db>` (e.g. `--synchronous full`).
    pub extra_args: Vec<OsString>,
    /// Where the broker's stderr is appended; `None` means `<db>-broker.log` next to
    /// the database (beside its `<db>-broker.lock`).
    pub log_file: Option<PathBuf>,
    /// How long to wait for a started broker to answer.
    pub start_timeout: Duration,
}

impl Default for AutoStart {
    fn default() -> Self {
        AutoStart {
            broker_path: None,
            extra_args: Vec::new(),
            log_file: None,
            start_timeout: DEFAULT_START_TIMEOUT,
        }
    }
}

impl AutoStart {
    /// Start this `litebrokerd` instead of searching for one.
    pub fn broker_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.broker_path = Some(path.into());
        self
    }

    /// Passes one more argument to the broker.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Appends the broker's log to this file.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// Sets how long to wait for a started broker.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }
}
