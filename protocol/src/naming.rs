//! Where a broker listens, derived from the database path alone, so that every
//! client finds the broker of a database without configuration.

use crate::PROTOCOL_VERSION;

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
