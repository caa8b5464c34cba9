//! Numbered schema migrations: read from a folder, or built from embedded strings
//! with [`Migration::new`], and applied through the broker ([`crate::Client::migrate`]).

use std::fs;
use std::io;
use std::path::Path;

pub use litebroker_protocol::{Migration, MigrationReport};

/// Reads the migrations of a folder: every `*.sql` file whose name starts with its
/// version number (`0001_init.sql`, `2-add_sales.sql`), sorted by version.
///
/// # Errors
/// When the folder cannot be read, a `.sql` file has no leading number, or two
/// files share a version.
pub fn migrations_from_dir(dir: &Path) -> io::Result<Vec<Migration>> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("sql") {
            continue;
        }
        let stem = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        let digits: String = stem.chars().take_while(char::is_ascii_digit).collect();
        let version: u32 = digits.parse().map_err(|_| {
            invalid(format!("{}: a migration file name must start with its version number", path.display()))
        })?;
        if version == 0 {
            return Err(invalid(format!("{}: versions start at 1 (0 is an empty database)", path.display())));
        }
        let name = stem[digits.len()..].trim_start_matches(['_', '-', ' ', '.']).to_owned();
        let sql = fs::read_to_string(&path)?;
        out.push(Migration { version, name: if name.is_empty() { stem.clone() } else { name }, sql });
    }
    out.sort_by_key(|m| m.version);
    if let Some(w) = out.windows(2).find(|w| w[0].version == w[1].version) {
        return Err(invalid(format!(
            "two migrations have version {}: {} and {}",
            w[0].version, w[0].name, w[1].name
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_folder_in_version_order() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("0002_add_sales.sql"), "CREATE TABLE sales (x);").unwrap();
        fs::write(d.path().join("1-init.sql"), "CREATE TABLE skus (x);").unwrap();
        fs::write(d.path().join("10.sql"), "SELECT 1;").unwrap();
        fs::write(d.path().join("README.md"), "not a migration").unwrap();
        let m = migrations_from_dir(d.path()).unwrap();
        let got: Vec<(u32, &str)> = m.iter().map(|m| (m.version, m.name.as_str())).collect();
        assert_eq!(got, [(1, "init"), (2, "add_sales"), (10, "10")]);
        fs::write(d.path().join("02_again.sql"), "").unwrap();
        assert!(migrations_from_dir(d.path())
            .unwrap_err()
            .to_string()
            .contains("two migrations have version 2"));
    }

    #[test]
    fn refuses_unnumbered_files() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("init.sql"), "").unwrap();
        assert!(migrations_from_dir(d.path()).is_err());
    }
}
