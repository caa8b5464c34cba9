//! Where replication stands: fed by Litestream's log lines and by the files it
//! keeps next to the database, read by `Request::Replication` and by the
//! writer's checkpoint rule.
//!
//! - **Replica position**: the `maxTXID` of Litestream's "ltx file uploaded"
//!   lines (level 0), and the `txid.replica` of its "replica sync" lines.
//! - **Local position**: the newest level-0 LTX file in Litestream's folder next
//!   to the database (`.<name>-litestream/ltx/0/<min>-<max>.ltx`), read from the
//!   file names.
//! - **Lag**: the age of the oldest commit the replica does not hold yet. The
//!   supervisor marks the first commit after the replica was last caught up;
//!   each position the replica confirms moves that mark to the time Litestream
//!   cut the confirmed file (later commits cannot be older). Caught up means the
//!   replica holds the newest local position and that file was cut after the
//!   broker's last commit.
//! - **Last error**: Litestream's `ERROR` lines and the way it exited, cleared
//!   once the replica confirms a new position.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use litebroker_protocol::host::unix_ms;
use litebroker_protocol::replication::{ReplicationReport, ReplicationState};

use crate::lock::lock;

/// Replication status shared by the supervisor, the connection threads and the
/// writer.
#[derive(Debug)]
pub struct Status {
    inner: Mutex<Inner>,
    /// First commit not known to be on the replica, ms since the epoch (0: none).
    first_pending_ms: AtomicU64,
    ltx_dir: PathBuf,
    secrets: Vec<String>,
}

#[derive(Debug)]
struct Inner {
    state: ReplicationState,
    replica_url: String,
    program: String,
    pid: Option<u32>,
    restarts: u32,
    replica_txid: u64,
    last_sync_unix_ms: Option<u64>,
    last_error: Option<String>,
    last_error_unix_ms: Option<u64>,
    sync_interval_ms: u64,
}

/// Litestream's level-0 folder for `db`: `<dir>/.<name>-litestream/ltx/0`.
pub fn ltx_dir(db: &Path) -> PathBuf {
    let name = db.file_name().unwrap_or_default().to_string_lossy();
    db.with_file_name(format!(".{name}-litestream")).join("ltx").join("0")
}

/// The newest level-0 LTX file in `dir`: (max txid, when it was written, ms).
fn newest_ltx(dir: &Path) -> Option<(u64, u64)> {
    let mut best: Option<(u64, PathBuf)> = None;
    for e in fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name();
        let Some(max) = ltx_max_txid(&name.to_string_lossy()) else { continue };
        if best.as_ref().is_none_or(|(b, _)| max > *b) {
            best = Some((max, e.path()));
        }
    }
    let (max, path) = best?;
    Some((max, mtime_ms(&path).unwrap_or(0)))
}

/// When the level-0 file holding `txid` in `dir` was written, ms since the epoch.
fn ltx_time(dir: &Path, txid: u64) -> Option<u64> {
    let name = format!("{txid:016x}-{txid:016x}.ltx");
    mtime_ms(&dir.join(name))
}

fn mtime_ms(p: &Path) -> Option<u64> {
    let t = fs::metadata(p).ok()?.modified().ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

/// `0000000000000004-0000000000000007.ltx` → 7.
fn ltx_max_txid(name: &str) -> Option<u64> {
    let (_, max) = name.strip_suffix(".ltx")?.split_once('-')?;
    u64::from_str_radix(max, 16).ok()
}

fn hex_txid(v: Option<&serde_json::Value>) -> Option<u64> {
    u64::from_str_radix(v?.as_str()?, 16).ok()
}

impl Status {
    /// The status of replication of `db` to `replica_url` (masked) through `program`.
    pub fn new(db: &Path, url: &str, program: &Path, sync_interval_ms: u64) -> Status {
        Status {
            inner: Mutex::new(Inner {
                state: ReplicationState::Restarting,
                replica_url: super::config::mask_url(url),
                program: program.display().to_string(),
                pid: None,
                restarts: 0,
                replica_txid: 0,
                last_sync_unix_ms: None,
                last_error: None,
                last_error_unix_ms: None,
                sync_interval_ms,
            }),
            first_pending_ms: AtomicU64::new(0),
            ltx_dir: ltx_dir(db),
            secrets: super::config::secrets_of(url),
        }
    }

    /// `text` with the replica URL's secrets blanked out.
    pub fn mask(&self, text: &str) -> String {
        let mut t = text.to_owned();
        for s in &self.secrets {
            t = t.replace(s.as_str(), "***");
        }
        t
    }

    /// The process started.
    pub fn started(&self, pid: u32, restart: bool) {
        let mut i = lock(&self.inner);
        i.state = ReplicationState::Running;
        i.pid = Some(pid);
        if restart {
            i.restarts += 1;
        }
    }

    /// The process exited or could not start: `why`, and whether it will be
    /// started again.
    pub fn ended(&self, why: Option<String>, again: bool) {
        let mut i = lock(&self.inner);
        i.state = if again { ReplicationState::Restarting } else { ReplicationState::Stopped };
        i.pid = None;
        if let Some(why) = why {
            i.last_error = Some(self.mask(&why));
            i.last_error_unix_ms = Some(unix_ms());
        }
    }

    /// Whether the process runs now.
    pub fn running(&self) -> bool {
        lock(&self.inner).state == ReplicationState::Running
    }

    /// Takes what one JSON log line of Litestream says about positions and errors;
    /// `level` is its log level (the line's first `level` key: a second one, the
    /// compaction level, wins in `line`).
    pub fn take_line(&self, level: &str, line: &serde_json::Value) {
        let msg = line.get("msg").and_then(|m| m.as_str()).unwrap_or("");
        let confirmed = match msg {
            "ltx file uploaded" if line.get("level").and_then(|l| l.as_u64()) == Some(0) => {
                hex_txid(line.get("maxTXID"))
            }
            "ltx file uploaded" => None,
            "replica sync" => hex_txid(line.get("txid").and_then(|t| t.get("replica"))),
            _ => None,
        };
        let mut i = lock(&self.inner);
        if let Some(txid) = confirmed {
            if txid > i.replica_txid || i.last_sync_unix_ms.is_none() {
                i.replica_txid = i.replica_txid.max(txid);
                i.last_sync_unix_ms = Some(unix_ms());
                i.last_error = None;
                i.last_error_unix_ms = None;
            }
        }
        if level == "ERROR" {
            let err = line.get("error").and_then(|e| e.as_str()).map(str::to_owned);
            let text = match err {
                Some(e) => format!("{msg}: {e}"),
                None => msg.to_owned(),
            };
            i.last_error = Some(self.mask(&text));
            i.last_error_unix_ms = Some(unix_ms());
        }
    }

    /// Brings the lag mark up to date, given the broker's last commit (ms since
    /// the epoch, 0: none). Returns whether the replica holds every commit.
    pub fn refresh(&self, last_commit_ms: u64) -> bool {
        let replica = lock(&self.inner).replica_txid;
        let local = newest_ltx(&self.ltx_dir);
        let caught_up = match local {
            Some((txid, cut_ms)) => replica >= txid && cut_ms >= last_commit_ms,
            None => last_commit_ms == 0,
        };
        if caught_up {
            self.first_pending_ms.store(0, Ordering::Relaxed);
            return true;
        }
        let pending = self.first_pending_ms.load(Ordering::Relaxed);
        let floor = ltx_time(&self.ltx_dir, replica).unwrap_or(0);
        let mark = if pending == 0 { last_commit_ms.max(floor) } else { pending.max(floor) };
        self.first_pending_ms.store(mark.min(last_commit_ms.max(1)), Ordering::Relaxed);
        false
    }

    /// Whether the replica holds every commit (see [`Status::refresh`]) and the
    /// process runs: only then may a checkpoint cut the WAL.
    pub fn caught_up(&self, last_commit_ms: u64) -> bool {
        self.running() && self.refresh(last_commit_ms)
    }

    /// The answer to `Request::Replication`.
    pub fn report(&self, last_commit_ms: u64) -> ReplicationReport {
        self.refresh(last_commit_ms);
        let local_txid = newest_ltx(&self.ltx_dir).map_or(0, |(t, _)| t);
        let pending = self.first_pending_ms.load(Ordering::Relaxed);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let i = lock(&self.inner);
        ReplicationReport {
            state: i.state,
            replica_url: i.replica_url.clone(),
            program: i.program.clone(),
            pid: i.pid,
            restarts: i.restarts,
            local_txid,
            replica_txid: i.replica_txid,
            lag_ms: if pending == 0 { 0 } else { now.saturating_sub(pending) },
            last_sync_unix_ms: i.last_sync_unix_ms,
            last_error: i.last_error.clone(),
            last_error_unix_ms: i.last_error_unix_ms,
            sync_interval_ms: i.sync_interval_ms,
        }
    }
}

/// The report of a broker started without `--replicate`.
pub fn off() -> ReplicationReport {
    ReplicationReport {
        state: ReplicationState::Off,
        replica_url: String::new(),
        program: String::new(),
        pid: None,
        restarts: 0,
        local_txid: 0,
        replica_txid: 0,
        lag_ms: 0,
        last_sync_unix_ms: None,
        last_error: None,
        last_error_unix_ms: None,
        sync_interval_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_come_from_upload_lines_and_errors_clear_on_progress() {
        let s = Status::new(Path::new("/nowhere/a.db"), "sftp://u:pw123@h/p", Path::new("ls"), 1000);
        let line = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
        s.take_line(
            "ERROR",
            &line(r#"{"level":"ERROR","msg":"monitor error","error":"dial sftp://u:pw123@h: refused"}"#),
        );
        let r = s.report(0);
        assert_eq!(r.last_error.as_deref(), Some("monitor error: dial sftp://u:***@h: refused"));
        assert_eq!(r.replica_url, "sftp://u:***@h/p");
        s.take_line(
            "DEBUG",
            &line(r#"{"level":"DEBUG","msg":"ltx file uploaded","level":0,"maxTXID":"000000000000001f"}"#),
        );
        let r = s.report(0);
        assert_eq!((r.replica_txid, r.last_error), (31, None));
        assert_eq!(ltx_max_txid("0000000000000004-0000000000000007.ltx"), Some(7));
        assert_eq!(ltx_dir(Path::new("/d/a.db")), Path::new("/d/.a.db-litestream/ltx/0"));
    }
}
