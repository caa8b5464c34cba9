//! Finding a database's broker: canonical database path, socket (or pipe) name,
//! and the broker's lock/info file next to the database.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use interprocess::local_socket::Name;
use serde::{Deserialize, Serialize};

/// The default database, relative to the working directory (the notes' layout).
pub const DEFAULT_DB: &str = "data/app.db";

/// Environment variable that overrides the default database path.
pub const DB_ENV: &str = "LITEBROKER_DB";

/// Where a database's broker lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Canonical path of the database file.
    pub db_path: PathBuf,
    /// Socket file path (Unix) or pipe name (Windows).
    pub socket: String,
    /// True when the socket was given explicitly rather than derived.
    pub explicit_socket: bool,
    /// The broker's lock file, which also records its pid and socket.
    pub lock_path: PathBuf,
}

impl Location {
    /// Resolves the location of `db`'s broker. The database need not exist, but its
    /// folder must (see [`Location::resolve_creating`] for the broker's variant).
    ///
    /// # Errors
    /// When the folder of `db` does not exist or cannot be read.
    pub fn resolve(db: &Path, socket: Option<&str>) -> io::Result<Location> {
        let db_path = canonical_db_path(db)?;
        Ok(Self::for_canonical(db_path, socket))
    }

    /// As [`Location::resolve`], creating the database's folder when missing.
    ///
    /// # Errors
    /// When the folder cannot be created or read.
    pub fn resolve_creating(db: &Path, socket: Option<&str>) -> io::Result<Location> {
        if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        Self::resolve(db, socket)
    }

    fn for_canonical(db_path: PathBuf, socket: Option<&str>) -> Location {
        let mut lock_name = db_path.file_name().unwrap_or_default().to_os_string();
        lock_name.push("-broker.lock");
        let lock_path = db_path.with_file_name(lock_name);
        let (socket, explicit_socket) = match socket {
            Some(s) => (s.to_owned(), true),
            None => (default_socket_for(&db_path), false),
        };
        Location { db_path, socket, explicit_socket, lock_path }
    }

    /// The broker info recorded in the lock file, if a broker wrote one.
    pub fn read_info(&self) -> Option<BrokerInfo> {
        let text = fs::read_to_string(&self.lock_path).ok()?;
        serde_json::from_str(text.trim()).ok()
    }
}

/// What a running broker records in its lock file, for clients and `doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Broker process id.
    pub pid: u32,
    /// Socket path or pipe name it listens on.
    pub socket: String,
    /// Canonical database path.
    pub db: String,
    /// Start time, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Broker version.
    pub version: String,
    /// Major protocol version.
    pub protocol: u32,
}

/// The canonical path of a database file that may not exist yet: its folder is
/// canonicalized (symlinks resolved) and the file name appended.
///
/// # Errors
/// When the folder does not exist or cannot be read.
pub fn canonical_db_path(db: &Path) -> io::Result<PathBuf> {
    if let Ok(p) = canonicalize(db) {
        return Ok(p);
    }
    let file = db.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a file path", db.display()))
    })?;
    let parent = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = canonicalize(parent)
        .map_err(|e| io::Error::new(e.kind(), format!("database folder {}: {e}", parent.display())))?;
    Ok(parent.join(file))
}

/// `fs::canonicalize`, without Windows' verbatim prefix (`\\?\C:\…` becomes
/// `C:\…`, `\\?\UNC\server\share` becomes `\\server\share`) so that paths shown
/// to users, and compared, look as users write them.
///
/// # Errors
/// As `fs::canonicalize`.
pub fn canonicalize(p: &Path) -> io::Result<PathBuf> {
    let c = fs::canonicalize(p)?;
    if cfg!(windows) {
        let s = c.to_string_lossy();
        if let Some(rest) = s.strip_prefix(r"\\?\UNC\") {
            return Ok(PathBuf::from(format!(r"\\{rest}")));
        }
        if let Some(rest) = s.strip_prefix(r"\\?\") {
            if rest.as_bytes().get(1) == Some(&b':') {
                return Ok(PathBuf::from(rest));
            }
        }
    }
    Ok(c)
}

/// The per-user folder that holds broker sockets (Unix): `$XDG_RUNTIME_DIR/litebroker`
/// when set, else `<temp dir>/litebroker-<uid>`. On Windows pipes need no folder and
/// this is unused.
pub fn default_socket_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR") {
        let xdg = PathBuf::from(xdg);
        if xdg.is_absolute() && xdg.is_dir() {
            return xdg.join("litebroker");
        }
    }
    std::env::temp_dir().join(format!("litebroker-{}", current_uid()))
}

/// The effective user id of this process (0 on Windows, where it is not used).
pub fn current_uid() -> u32 {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }
    #[cfg(not(unix))]
    {
        0
    }
}

fn default_socket_for(db_path: &Path) -> String {
    let name = litebroker_protocol::socket_file_name(&db_path.to_string_lossy());
    if cfg!(windows) {
        name
    } else {
        default_socket_dir().join(name).to_string_lossy().into_owned()
    }
}

/// Turns a socket string into an `interprocess` name: a file path on Unix, a pipe
/// name on Windows. The Linux abstract namespace is never used: it has no
/// permissions.
///
/// # Errors
/// When the string is not a valid name on this platform.
pub fn socket_name(socket: &str) -> io::Result<Name<'_>> {
    #[cfg(windows)]
    {
        use interprocess::local_socket::{GenericNamespaced, ToNsName};
        let pipe = socket.strip_prefix(r"\\.\pipe\").unwrap_or(socket);
        pipe.to_ns_name::<GenericNamespaced>()
    }
    #[cfg(not(windows))]
    {
        use interprocess::local_socket::{GenericFilePath, ToFsName};
        socket.to_fs_name::<GenericFilePath>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_db_file_resolves_through_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let loc = Location::resolve(&db, None).unwrap();
        assert_eq!(loc.db_path, canonicalize(dir.path()).unwrap().join("x.db"));
        assert!(loc.lock_path.to_string_lossy().ends_with("x.db-broker.lock"));
        assert!(!loc.explicit_socket);
        fs::write(&db, b"").unwrap();
        assert_eq!(Location::resolve(&db, None).unwrap(), loc, "same name before and after creation");
    }

    #[test]
    fn missing_folder_is_an_error_unless_created() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sub/deeper/x.db");
        assert!(Location::resolve(&db, None).is_err());
        let loc = Location::resolve_creating(&db, Some("/tmp/explicit.sock")).unwrap();
        assert_eq!(loc.socket, "/tmp/explicit.sock");
        assert!(loc.explicit_socket);
    }
}
