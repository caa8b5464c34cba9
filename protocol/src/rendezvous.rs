//! The rendezvous: how a client and a broker find each other from the database
//! path alone, without configuration. The database's canonical path names the
//! socket (Unix: a file in a private per-user folder) or pipe (Windows), and the
//! broker's lock file beside the database records where it actually listens.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use interprocess::local_socket::Name;
use serde::{Deserialize, Serialize};

use crate::host::current_uid;
use crate::PROTOCOL_VERSION;

/// The default database, relative to the working directory: an app keeps its data in `data/app.db`.
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

fn default_socket_for(db_path: &Path) -> String {
    let name = socket_file_name(&db_path.to_string_lossy());
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

/// Prefix of Windows pipe names (`\\.\pipe\litebroker-…`).
pub const PIPE_PREFIX: &str = "litebroker-";

/// 64-bit FNV-1a. Chosen because it is stable across Rust releases and platforms
/// (std's hasher is not), and socket names must agree between builds.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The socket file name (Unix) or pipe name (Windows) for a database, from its
/// canonical path: a readable stem, a hash of the whole path, and the protocol's
/// major version, e.g. `app-3f2a9c0d11e4b7a2.v1.sock`.
pub fn socket_file_name(canonical_db_path: &str) -> String {
    // Windows paths compare case-insensitively; so must their hash.
    let key = if cfg!(windows) { canonical_db_path.to_lowercase() } else { canonical_db_path.to_owned() };
    let hash = fnv1a64(key.as_bytes());
    let file = canonical_db_path.rsplit(['/', '\\']).next().unwrap_or("db");
    let stem = file.split('.').next().unwrap_or("db");
    // Unix socket paths are limited to ~104 bytes, so the stem is kept short.
    let stem: String =
        stem.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').take(24).collect();
    let stem = if stem.is_empty() { "db".to_owned() } else { stem };
    if cfg!(windows) {
        format!("{PIPE_PREFIX}{stem}-{hash:016x}.v{PROTOCOL_VERSION}")
    } else {
        format!("{stem}-{hash:016x}.v{PROTOCOL_VERSION}.sock")
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

    #[test]
    fn names_are_stable_and_distinct() {
        // FNV-1a test vector: the hash must never change between builds.
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let a = socket_file_name("/home/u/app/data/app.db");
        let b = socket_file_name("/home/u/other/data/app.db");
        assert_ne!(a, b);
        assert!(a.contains(&format!(".v{PROTOCOL_VERSION}")));
        assert!(a.starts_with("app-") || a.starts_with("litebroker-app-"));
        assert_eq!(a, socket_file_name("/home/u/app/data/app.db"));
    }

    #[test]
    fn odd_file_names_stay_short_and_safe() {
        let n = socket_file_name("/x/a very long name with spaces and ünïcode and more and more.db");
        assert!(n.len() < 64, "{n}");
        assert!(!n.contains(' '));
        assert!(socket_file_name("/x/.hidden").contains("db-"));
    }
}
