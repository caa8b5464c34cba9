//! One broker per database: lock → probe → stale-socket cleanup → bind, in that
//! order, never displacing a live listener; the socket folder's safety; peer checks.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use interprocess::local_socket::prelude::*;
use interprocess::local_socket::{Listener, ListenerOptions, Stream};
use litebroker_protocol::host::{current_uid, unix_ms};
use litebroker_protocol::rendezvous::{socket_name, BrokerInfo, Location};
use litebroker_protocol::stream::FrameStream;
use litebroker_protocol::{write_frame, ErrorKind, HelloAck, Response, PROTOCOL_VERSION};
use named_lock::{NamedLock, NamedLockGuard};
use tracing::{info, warn};

use crate::config::Config;
use crate::BrokerError;

/// Claims the database for this broker, in this order: resolves its canonical
/// path (creating its folder) and the socket name, checks `--db`
/// ([`check_db_file`]), prepares the socket folder, takes the single-instance
/// lock, and with the lock held clears a stale socket (a live listener is never
/// displaced). The socket is bound later ([`bind`]), once the database is open.
///
/// # Errors
/// [`BrokerError::Config`] (exit 2), [`BrokerError::AlreadyRunning`] (exit 3),
/// or an I/O failure.
pub fn claim(config: &Config) -> Result<(Location, InstanceLock), BrokerError> {
    let location = Location::resolve_creating(&config.db, config.socket.as_deref())
        .map_err(crate::io_err(format!("cannot use database path {}", config.db.display())))?;
    check_db_file(&location)?;
    prepare_socket_folder(&location)?;
    let held = lock(&location)?;
    clear_stale_socket(&location)?;
    Ok((location, held))
}

/// The database's single-instance lock, held for the broker's lifetime.
pub struct InstanceLock {
    _guard: NamedLockGuard,
}

#[cfg(unix)]
fn config_err(msg: String) -> BrokerError {
    BrokerError::Config(msg)
}

/// Makes sure the per-user socket folder exists, belongs to us and is private
/// (mode 0700). An explicit socket's folder is only created when missing.
///
/// # Errors
/// [`BrokerError::Config`] (exit 2) for a folder of another user or with looser
/// permissions.
pub fn prepare_socket_folder(location: &Location) -> Result<(), BrokerError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let Some(dir) = Path::new(&location.socket).parent() else { return Ok(()) };
        if location.explicit_socket {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(crate::io_err(format!("cannot create socket folder {}", dir.display())))?;
            }
            return Ok(());
        }
        if let Err(e) = fs::DirBuilder::new().mode(0o700).create(dir) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(crate::io_err(format!("cannot create socket folder {}", dir.display()))(e));
            }
        }
        let meta = fs::symlink_metadata(dir)
            .map_err(crate::io_err(format!("cannot inspect socket folder {}", dir.display())))?;
        let me = current_uid();
        let mode = meta.permissions().mode() & 0o777;
        if !meta.is_dir() {
            return Err(config_err(format!(
                "socket folder {} is not a folder (a symlink or file is in its place); remove it",
                dir.display()
            )));
        }
        if meta.uid() != me {
            return Err(config_err(format!(
                "socket folder {} belongs to uid {}, not to this user (uid {me}); refusing to use it. \
                 Remove it, or set XDG_RUNTIME_DIR/TMPDIR to a private folder",
                dir.display(),
                meta.uid()
            )));
        }
        if mode & 0o077 != 0 {
            return Err(config_err(format!(
                "socket folder {} has mode {mode:o}; it must be private (0700) so other users cannot \
                 reach the broker. Fix it with: chmod 700 {}",
                dir.display(),
                dir.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = location;
    Ok(())
}

/// Makes sure `--db` names a file a broker may serve, before anything is created
/// next to it: a regular file with one name, or a path to create. A device, fifo,
/// folder or socket would start a broker that fails every write (and leave a lock
/// file beside, say, `/dev/null`). A second name (hard link) would let a second
/// broker serve the same file under it: the lock file, the socket and SQLite's
/// `-wal` and `-shm` files all go by name, so the two would not exclude each other
/// and each would overwrite the other's commits.
///
/// # Errors
/// [`BrokerError::Config`] (exit 2) saying what the path is and what to do.
pub fn check_db_file(location: &Location) -> Result<(), BrokerError> {
    let db = &location.db_path;
    let meta = match fs::metadata(db) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(BrokerError::Config(format!(
                "cannot inspect the database {}: {e}; the broker's user must be able to read it",
                db.display()
            )))
        }
    };
    if !meta.is_file() {
        return Err(BrokerError::Config(format!(
            "--db {} is {}, not a regular file: a broker serves an SQLite database file. Give the path \
             of a database, or of a file to create in an existing folder",
            db.display(),
            kind_of(&meta)
        )));
    }
    let links = litebroker_protocol::host::link_count(db)
        .map_err(crate::io_err(format!("cannot count the names (hard links) of {}", db.display())))?;
    if links > 1 {
        return Err(BrokerError::Config(format!(
            "the database {} has {links} hard links (other names for the same file): a broker under another \
             name would not see this one's lock, and each would overwrite the other's commits. Remove the \
             other names (to find them: {}) and start the broker again",
            db.display(),
            if cfg!(windows) {
                format!("fsutil hardlink list {}", db.display())
            } else {
                format!("find / -samefile {} 2>/dev/null", db.display())
            }
        )));
    }
    Ok(())
}

fn kind_of(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a fifo";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// Takes the database's broker lock. The lock belongs to the database (a file next
/// to it on Unix, a global mutex named from its path on Windows), so two users or
/// two temp folders can never both serve one file.
///
/// # Errors
/// [`BrokerError::AlreadyRunning`] naming the running broker.
pub fn lock(location: &Location) -> Result<InstanceLock, BrokerError> {
    // named-lock reports a failed create through its fallback open ("No such file or
    // directory"), hiding the real cause; creating the file first keeps it.
    #[cfg(unix)]
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&location.lock_path)
        .map_err(|e| lock_file_error(location, e))?;
    #[cfg(unix)]
    let named = NamedLock::with_path(&location.lock_path);
    #[cfg(windows)]
    let named = NamedLock::create(&format!(
        "litebroker-{:016x}",
        litebroker_protocol::rendezvous::fnv1a64(
            location.db_path.to_string_lossy().to_lowercase().as_bytes()
        )
    ));
    let named = named.map_err(|e| {
        BrokerError::Database(format!("cannot create the broker lock {}: {e}", location.lock_path.display()))
    })?;
    match named.try_lock() {
        Ok(guard) => Ok(InstanceLock { _guard: guard }),
        Err(named_lock::Error::WouldBlock) => Err(BrokerError::AlreadyRunning(describe_running(location))),
        Err(e) => Err(BrokerError::Database(format!(
            "cannot take the broker lock {}: {e}",
            location.lock_path.display()
        ))),
    }
}

/// Why the lock file could not be created or opened, and what to do about it.
#[cfg(unix)]
fn lock_file_error(location: &Location, e: io::Error) -> BrokerError {
    use std::os::unix::fs::MetadataExt;
    let lock = location.lock_path.display();
    if e.kind() != io::ErrorKind::PermissionDenied {
        return BrokerError::Io { context: format!("cannot create the broker lock {lock}"), source: e };
    }
    let folder = location.lock_path.parent().unwrap_or_else(|| Path::new("."));
    let (verb, what, target) = if location.lock_path.exists() {
        ("open", "write to the lock file", location.lock_path.as_path())
    } else {
        ("create", "create files in the database folder", folder)
    };
    let owner = fs::metadata(target)
        .map(|m| format!(" (owner uid {}, mode {:o})", m.uid(), m.mode() & 0o7777))
        .unwrap_or_default();
    BrokerError::Config(format!(
        "cannot {verb} the broker lock {lock}: permission denied: {} may not {what} {}{owner}. \
         The broker creates its lock file there and SQLite its -wal and -shm files: run litebrokerd as \
         the user who owns the database, give this user write access (chown or chmod), or keep the \
         database in a folder of this user",
        user_label(current_uid()),
        target.display(),
    ))
}

/// "user NAME (uid N)", or "uid N" when the name cannot be looked up.
#[cfg(unix)]
fn user_label(uid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: getpwuid_r writes into `pwd` and `buf` (whose length it is given) and
    // sets `found` to `pwd` or null; pw_name points into `buf`, read while it lives.
    let name = unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut found);
        if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
            None
        } else {
            Some(std::ffi::CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned())
        }
    };
    match name {
        Some(n) => format!("user {n} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

impl InstanceLock {
    /// Records pid and socket in the lock file for clients and `doctor`.
    pub fn record(&self, location: &Location) {
        let info = BrokerInfo {
            pid: std::process::id(),
            socket: location.socket.clone(),
            db: location.db_path.to_string_lossy().into_owned(),
            started_unix_ms: unix_ms(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: PROTOCOL_VERSION,
        };
        let json = serde_json::to_string(&info).unwrap_or_default();
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&location.lock_path)
            .and_then(|mut f| f.write_all(json.as_bytes()));
        if let Err(e) = written {
            warn!("cannot record broker info in {}: {e}", location.lock_path.display());
        }
    }

    /// Clears the recorded info and releases the lock.
    pub fn release(self, location: &Location) {
        if let Ok(f) = fs::OpenOptions::new().write(true).open(&location.lock_path) {
            let _ = f.set_len(0);
        }
        drop(self);
    }
}

/// How long the start-up probe waits for a handshake answer.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// What listens on a broker's socket (or pipe), as the start-up probe finds it.
enum Probe {
    /// A broker of this database answered the handshake.
    Live(Box<HelloAck>),
    /// Nothing accepts connections there.
    Nobody,
    /// Something accepted the connection but did not answer as a broker.
    Unresponsive(String),
    /// A listener that is not this user's broker of this database. It is never
    /// displaced either.
    Foreign(Foreign),
}

/// Why a listener is not this user's broker of this database.
enum Foreign {
    /// Unix: the listener runs as another user (neither this one nor root).
    #[cfg(unix)]
    User { uid: u32 },
    /// Windows: the pipe was created by another user (neither this one nor the system).
    #[cfg(windows)]
    PipeOwner { owner: String },
    /// The system could not tell who listens.
    Unknown { detail: String },
    /// A broker answered, but it serves another database.
    OtherDatabase { served: String, pid: u32 },
}

/// Asks whoever listens on `socket` for a handshake, as a client would, after
/// checking who listens: another user's listener is never sent anything.
fn probe(location: &Location, socket: &str) -> Probe {
    let Ok(mut stream) = FrameStream::connect(socket) else { return Probe::Nobody };
    if let Err(foreign) = check_listener(&stream) {
        return Probe::Foreign(foreign);
    }
    match stream.handshake("litebrokerd (startup probe)", None, PROBE_WAIT) {
        Ok(Response::Hello(ack)) if serves(&ack, &location.db_path) => Probe::Live(Box::new(ack)),
        Ok(Response::Hello(ack)) => {
            Probe::Foreign(Foreign::OtherDatabase { served: ack.db_path, pid: ack.pid })
        }
        Ok(Response::Error(info)) => Probe::Unresponsive(info.to_string()),
        Ok(other) => Probe::Unresponsive(format!("it answered the handshake with {other:?}")),
        Err(e) if e.timed_out() => {
            Probe::Unresponsive(format!("no answer to the handshake within {} s", PROBE_WAIT.as_secs()))
        }
        Err(e) => Probe::Unresponsive(e.to_string()),
    }
}

/// Whether the listener runs as this user or as the system (root on Unix).
fn check_listener(stream: &FrameStream) -> Result<(), Foreign> {
    let unknown = |e: io::Error| Foreign::Unknown { detail: e.to_string() };
    #[cfg(unix)]
    {
        match stream.peer_uid().map_err(unknown)? {
            Some(uid) if uid == current_uid() || uid == 0 => Ok(()),
            Some(uid) => Err(Foreign::User { uid }),
            None => Err(Foreign::Unknown {
                detail: "the system gives no user id for the peer of a local socket on this platform".into(),
            }),
        }
    }
    #[cfg(windows)]
    {
        let owner = stream.pipe_owner_sid().map_err(unknown)?;
        let me = litebroker_protocol::host::current_user_sid().map_err(unknown)?;
        if owner.eq_ignore_ascii_case(&me) || litebroker_protocol::host::is_system_sid(&owner) {
            Ok(())
        } else {
            Err(Foreign::PipeOwner { owner })
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = (stream, unknown);
        Ok(())
    }
}

/// Whether a broker's handshake names `db` (Windows paths compare case-insensitively).
fn serves(ack: &HelloAck, db: &Path) -> bool {
    let db = db.to_string_lossy();
    if cfg!(windows) {
        db.to_lowercase() == ack.db_path.to_lowercase()
    } else {
        db == ack.db_path
    }
}

fn describe_running(location: &Location) -> String {
    let db = location.db_path.display();
    let info = location.read_info();
    let socket = info.as_ref().map_or(location.socket.as_str(), |i| i.socket.as_str());
    match probe(location, socket) {
        Probe::Live(ack) => format!("another broker (pid {}) already serves {db} on {}", ack.pid, ack.socket),
        _ => match info {
            Some(i) => format!(
                "another broker (pid {}, socket {}) holds the lock of {db} ({}) but does not answer \
                 yet; if it is hung, stop it ({} {})",
                i.pid,
                i.socket,
                location.lock_path.display(),
                if cfg!(windows) { "taskkill /F /PID" } else { "kill" },
                i.pid
            ),
            None => format!(
                "another process holds the broker lock {} of {db}; a broker is probably starting",
                location.lock_path.display()
            ),
        },
    }
}

/// With the lock held: if the socket file exists, a live listener there is never
/// displaced; a dead one (left by a killed broker) is removed.
///
/// # Errors
/// [`BrokerError::AlreadyRunning`] when something live listens on the socket.
pub fn clear_stale_socket(location: &Location) -> Result<(), BrokerError> {
    if cfg!(windows) {
        // Pipes vanish with their process: nothing can be stale. A pipe of this
        // name that exists belongs to a live process: never join or displace it.
        // (`FILE_FLAG_FIRST_PIPE_INSTANCE` refuses it again at bind time, against
        // a pipe created after this probe.)
        return match probe(location, &location.socket) {
            Probe::Nobody => Ok(()),
            Probe::Live(ack) => Err(BrokerError::AlreadyRunning(format!(
                "another broker (pid {}) already listens on {} (serving {})",
                ack.pid, ack.socket, ack.db_path
            ))),
            Probe::Unresponsive(e) => Err(BrokerError::AlreadyRunning(format!(
                "another process already serves the pipe {} and does not answer as a broker ({e}); \
                 not joining it",
                location.socket
            ))),
            Probe::Foreign(e) => Err(foreign_listener(&location.socket, &e)),
        };
    }
    let path = Path::new(&location.socket);
    let Ok(meta) = fs::symlink_metadata(path) else { return Ok(()) };
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(config_err(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    match probe(location, &location.socket) {
        Probe::Live(ack) => Err(BrokerError::AlreadyRunning(format!(
            "another broker (pid {}) already listens on {} (serving {})",
            ack.pid, ack.socket, ack.db_path
        ))),
        Probe::Unresponsive(e) => Err(BrokerError::AlreadyRunning(format!(
            "something listens on {} but does not answer as a broker ({e}); not displacing it",
            location.socket
        ))),
        Probe::Foreign(e) => Err(foreign_listener(&location.socket, &e)),
        Probe::Nobody => {
            fs::remove_file(path)
                .map_err(crate::io_err(format!("cannot remove stale socket {}", path.display())))?;
            info!("removed stale socket {} left by a broker that did not shut down cleanly", path.display());
            Ok(())
        }
    }
}

fn foreign_listener(socket: &str, why: &Foreign) -> BrokerError {
    let me =
        if cfg!(windows) { "this user".to_owned() } else { format!("this user (uid {})", current_uid()) };
    BrokerError::AlreadyRunning(match why {
        Foreign::OtherDatabase { served, pid } => {
            format!("another broker (pid {pid}) already listens on {socket}, serving {served}")
        }
        #[cfg(unix)]
        Foreign::User { uid } => format!(
            "{socket} is taken by a process of uid {uid}, not of {me}: it is not this user's broker, and it \
             is never displaced. Find out who started it, or use another socket"
        ),
        #[cfg(windows)]
        Foreign::PipeOwner { owner } => format!(
            "the pipe {socket} was created by {owner}, not by {me}: it is not this user's broker, and it is \
             never joined. Find out who started it"
        ),
        Foreign::Unknown { detail } => format!(
            "something listens on {socket} that this broker cannot vouch for (cannot tell which user runs \
             it: {detail}); not displacing it"
        ),
    })
}

/// Binds the listener (never overwriting a live one) and makes the socket private.
///
/// # Errors
/// [`BrokerError::AlreadyRunning`] when the name is taken, else I/O errors.
pub fn bind(location: &Location) -> Result<Listener, BrokerError> {
    let name = socket_name(&location.socket)
        .map_err(crate::io_err(format!("invalid socket name {}", location.socket)))?;
    let options = ListenerOptions::new().name(name).reclaim_name(true);
    // Windows: the pipe admits the current user only (see `windows.rs`).
    #[cfg(windows)]
    let options = {
        use interprocess::os::windows::local_socket::ListenerOptionsExt;
        let sd = crate::windows::pipe_security_descriptor()
            .map_err(crate::io_err("cannot build the pipe's security descriptor"))?;
        options.security_descriptor(sd)
    };
    let listener = options.create_sync().map_err(|e| {
        // A pipe that already exists refuses a first instance with "access denied".
        if e.kind() == io::ErrorKind::AddrInUse
            || (cfg!(windows) && e.kind() == io::ErrorKind::PermissionDenied)
        {
            BrokerError::AlreadyRunning(format!(
                "socket {} is already in use by another process",
                location.socket
            ))
        } else {
            BrokerError::Io { context: format!("cannot listen on {}", location.socket), source: e }
        }
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&location.socket, fs::Permissions::from_mode(0o600))
            .map_err(crate::io_err(format!("cannot restrict permissions of {}", location.socket)))?;
    }
    Ok(listener)
}

/// Removes the socket file if it is still there (the listener normally does).
pub fn remove_socket_file(location: &Location) {
    if cfg!(unix) {
        let _ = fs::remove_file(&location.socket);
    }
}

/// Checks the peer's credentials: only the broker's own user, or users listed with
/// `--allow-uid`, may connect. Returns the peer's pid when the OS tells it.
///
/// # Errors
/// A message naming the refused peer.
pub fn check_peer(stream: &Stream, config: &Config) -> Result<Option<u32>, String> {
    let creds = match stream.peer_creds() {
        Ok(c) => c,
        // No credentials on this platform: the private socket folder is the guard.
        Err(_) => return Ok(None),
    };
    // The pid type is i32 on Unix and already u32 on Windows.
    #[allow(clippy::useless_conversion)]
    let pid = creds.pid().and_then(|p| u32::try_from(p).ok());
    #[cfg(unix)]
    if let Some(uid) = creds.euid() {
        let me = current_uid();
        if uid != me && !config.allow_uids.contains(&uid) {
            return Err(crate::texts::peer_not_allowed(uid, pid, me));
        }
    }
    #[cfg(not(unix))]
    let _ = config;
    Ok(pid)
}

/// Tells a refused peer why, best effort, and closes the connection.
pub fn refuse(stream: Stream, config: &Config, kind: ErrorKind, msg: String) {
    let _ = stream.set_send_timeout(Some(Duration::from_secs(1)));
    let mut buf = Vec::new();
    let _ = write_frame(&mut &stream, &Response::error(kind, msg), &mut buf, config.max_frame);
}
