//! `doctor`: the troubleshooting steps, automated. Each finding comes with a
//! suggested action.

use std::collections::BTreeMap;
use std::path::Path;

use litebroker_client::protocol::host::{link_count, pid_alive};
use litebroker_client::{Client, ClientError, ConnectOptions, Location};
use litebroker_server::ops::{self, DEFAULT_WAL_WARN_BYTES};
use serde_json::json;

use crate::{fail, ms_to_text, reported, Cli, Failure};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok,
    Warning,
    Problem,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Problem => "problem",
        }
    }
}

struct Finding {
    check: &'static str,
    level: Level,
    detail: String,
    action: Option<String>,
}

fn finding(check: &'static str, level: Level, detail: impl Into<String>, action: Option<String>) -> Finding {
    Finding { check, level, detail: detail.into(), action }
}

pub fn doctor(cli: &Cli) -> Result<(), Failure> {
    let loc = Location::resolve(&cli.db, cli.socket.as_deref())
        .map_err(|e| fail(1, "error", format!("{}: {e}", cli.db.display())))?;
    let db = loc.db_path.clone();
    let db_arg = cli.db.display().to_string();
    let mut findings = Vec::new();
    let mut broker_running = false;

    // 1. Is a broker serving this database, or is its lock held by something else?
    let mut opts = ConnectOptions::new(&cli.db).client_name("litebroker-doctor");
    opts.socket = cli.socket.clone();
    opts.connect_timeout = opts.connect_timeout.min(std::time::Duration::from_secs_f64(cli.timeout));
    let checked = Client::connect_with(&opts).and_then(|mut c| {
        Ok((c.status()?, c.connections()?, crate::ops::health(&mut c)?, crate::replication::report(&mut c)?))
    });
    match checked {
        Ok((status, clients, health, repl)) => {
            broker_running = true;
            findings.push(finding(
                "broker",
                Level::Ok,
                format!(
                    "litebrokerd {} (pid {}) serves this database on {}, up {}",
                    status.broker_version,
                    status.pid,
                    status.socket,
                    ms_to_text(status.uptime_ms)
                ),
                None,
            ));
            // 2. Active connections: more than 5 per app suggests a leak.
            let mut per_pid: BTreeMap<u32, (String, usize)> = BTreeMap::new();
            for c in &clients {
                per_pid.entry(c.pid).or_insert_with(|| (c.name.clone(), 0)).1 += 1;
            }
            let leaky: Vec<String> = per_pid
                .iter()
                .filter(|(_, (_, n))| *n > 5)
                .map(|(pid, (name, n))| format!("{name} (pid {pid}) has {n}"))
                .collect();
            let holder = clients
                .iter()
                .find(|c| c.holds_writer)
                .map(|c| format!("; {} (pid {}) holds the writer", c.name, c.pid));
            let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
            let detail = format!(
                "{} from {}{}",
                plural(clients.len(), "broker connection", "broker connections"),
                plural(per_pid.len(), "process", "processes"),
                holder.unwrap_or_default()
            );
            if leaky.is_empty() {
                findings.push(finding("connections", Level::Ok, detail, None));
            } else {
                findings.push(finding(
                    "connections",
                    Level::Warning,
                    format!("{detail}; possible connection leak: {}", leaky.join(", ")),
                    Some("close connections when done (drop clients/readers; use the factory's scoped helpers)".into()),
                ));
            }
            findings.extend(guarantees(health.as_ref(), &status.broker_version, &db_arg));
            findings.push(wal_files(&db, status.pid));
            // The replica: an error reaching it, or Litestream not running, is a problem.
            if let Some((problem, detail, action)) = repl.as_ref().and_then(crate::replication::doctor) {
                let level = if problem { Level::Problem } else { Level::Ok };
                findings.push(finding("replication", level, detail, action));
            }
        }
        Err(ClientError::NotRunning { socket, .. }) => {
            let recorded = loc.read_info().filter(|i| pid_alive(i.pid));
            let (level, detail, action) = match recorded {
                Some(i) => (
                    Level::Problem,
                    format!("the lock file records broker pid {} (alive) on {}, but nothing answers on {socket}", i.pid, i.socket),
                    format!("the broker may be hung or starting; if it stays so, stop it (kill {}) and start litebrokerd --db {db_arg}", i.pid),
                ),
                None => (
                    Level::Problem,
                    format!("no broker is serving this database (nothing listens on {socket}); writes fail, reads still work (read-only mode)"),
                    format!("start it: litebrokerd --db {db_arg} (or install the login service: scripts/install-service.sh)"),
                ),
            };
            findings.push(finding("broker", level, detail, Some(action)));
        }
        Err(e) => findings.push(finding(
            "broker",
            Level::Problem,
            format!("a broker answers but the check failed: {e}"),
            Some("restart the broker; check its log".into()),
        )),
    }

    if !db.exists() {
        findings.push(finding(
            "database",
            Level::Problem,
            format!("{} does not exist", db.display()),
            Some(format!("start the broker to create it: litebrokerd --db {db_arg}")),
        ));
        return report(cli, &db, findings, broker_running);
    }

    // 3. WAL size: a large app.db-wal, > 100 MB, means checkpoints are blocked.
    let wal = ops::file_size(&ops::wal_path(&db));
    if wal > DEFAULT_WAL_WARN_BYTES {
        findings.push(finding(
            "wal",
            Level::Warning,
            ops::wal_warning(wal, DEFAULT_WAL_WARN_BYTES),
            Some("litebroker checkpoint truncate (after closing long-running readers)".into()),
        ));
    } else {
        findings.push(finding("wal", Level::Ok, format!("{:.1} MB", wal as f64 / 1e6), None));
    }

    // 4. File and folder permissions for the current user.
    findings.push(permissions(&db));

    findings.push(hard_links(&db));

    // 5. Network filesystem: WAL needs all processes on one host.
    findings.push(filesystem(&db));

    // 6. quick_check.
    match ops::open_read_only(&db).and_then(|c| c.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))) {
        Ok(s) if s == "ok" => findings.push(finding("quick_check", Level::Ok, "ok", None)),
        Ok(s) => findings.push(finding(
            "quick_check",
            Level::Problem,
            s,
            Some("the database may be corrupted: run litebroker verify, then restore a backup (litebroker backups; litebroker restore FILE)".into()),
        )),
        Err(e) => findings.push(finding("quick_check", Level::Problem, e.to_string(), Some("check the file and its permissions".into()))),
    }

    // Backups, for the recovery actions above.
    match ops::list_backups(&db) {
        Ok(list) if list.is_empty() => findings.push(finding(
            "backups",
            Level::Warning,
            "no backups yet",
            Some("litebroker backup manual (before risky operations: a copy to go back to)".into()),
        )),
        Ok(list) => {
            let last = list.last().map(|b| b.path.display().to_string()).unwrap_or_default();
            findings.push(finding(
                "backups",
                Level::Ok,
                format!("{} backup{}, newest {last}", list.len(), if list.len() == 1 { "" } else { "s" }),
                None,
            ));
        }
        Err(e) => {
            findings.push(finding("backups", Level::Warning, format!("cannot list backups: {e}"), None))
        }
    }
    report(cli, &db, findings, broker_running)
}

fn report(cli: &Cli, db: &Path, findings: Vec<Finding>, broker_running: bool) -> Result<(), Failure> {
    let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    let other_problems = findings.iter().any(|f| f.level == Level::Problem && f.check != "broker");
    if cli.json {
        let items: Vec<_> = findings
            .iter()
            .map(|f| json!({ "check": f.check, "status": f.level.as_str(), "detail": f.detail, "action": f.action }))
            .collect();
        println!(
            "{}",
            json!({ "db": db.to_string_lossy(), "healthy": worst != Level::Problem, "broker_running": broker_running, "findings": items })
        );
    } else {
        println!("litebroker doctor — {}", db.display());
        for f in &findings {
            let tag = format!("[{}]", f.level.as_str());
            println!("  {tag:<10} {}: {}", f.check, f.detail);
            if let Some(a) = &f.action {
                println!("  {:<10}   -> {a}", "");
            }
        }
        println!(
            "{}",
            match worst {
                Level::Ok => "Healthy.",
                Level::Warning => "Healthy, with warnings.",
                Level::Problem => "Problems found: see the actions above.",
            }
        );
    }
    if other_problems {
        Err(reported(5, "problems_found", "doctor found problems"))
    } else if !broker_running {
        Err(reported(3, "not_running", "no broker is serving this database"))
    } else {
        Ok(())
    }
}

fn permissions(db: &Path) -> Finding {
    let folder = db.parent().unwrap_or_else(|| Path::new("."));
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    let candidates = [db.to_path_buf(), ops::wal_path(db), {
        let mut n = db.file_name().unwrap_or_default().to_os_string();
        n.push("-shm");
        db.with_file_name(n)
    }];
    for p in candidates.iter().filter(|p| p.exists()) {
        let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        match access(p) {
            (true, true) => seen.push(format!("{name} rw")),
            (true, false) => problems.push(format!("{name} is read-only for this user")),
            (false, _) => problems.push(format!("{name} is not readable by this user")),
        }
    }
    match access(folder) {
        (_, true) => seen.push("folder writable".into()),
        _ => problems.push(format!(
            "folder {} is not writable (SQLite creates -wal/-shm files there)",
            folder.display()
        )),
    }
    if problems.is_empty() {
        finding("permissions", Level::Ok, seen.join(", "), None)
    } else {
        finding(
            "permissions",
            Level::Problem,
            problems.join("; "),
            Some(format!("ls -l {}* and give this user read/write access (chmod/chown)", db.display())),
        )
    }
}

/// (readable, writable) for the current user.
fn access(p: &Path) -> (bool, bool) {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else { return (false, false) };
        // SAFETY: a valid NUL-terminated path.
        unsafe { (libc::access(c.as_ptr(), libc::R_OK) == 0, libc::access(c.as_ptr(), libc::W_OK) == 0) }
    }
    #[cfg(not(unix))]
    {
        match std::fs::metadata(p) {
            Ok(m) => (true, !m.permissions().readonly()),
            Err(_) => (false, false),
        }
    }
}

/// A second name (hard link) for the database lets a second broker serve the same
/// file under it, since the lock, the socket and SQLite's -wal go by name; the broker
/// refuses such a file, and this says why before anyone tries.
fn hard_links(db: &Path) -> Finding {
    match link_count(db) {
        Ok(n) if n > 1 => finding(
            "hard_links",
            Level::Problem,
            format!(
                "the database file has {n} hard links (other names): two brokers could serve it under two names \
                 and overwrite each other's commits, so litebrokerd refuses to start on it"
            ),
            Some(if cfg!(windows) {
                format!("remove the other names (fsutil hardlink list {})", db.display())
            } else {
                format!("remove the other names (find them: find / -samefile {} 2>/dev/null)", db.display())
            }),
        ),
        Ok(_) => finding("hard_links", Level::Ok, "one name", None),
        Err(e) => finding("hard_links", Level::Warning, format!("cannot count its names: {e}"), None),
    }
}

fn filesystem(db: &Path) -> Finding {
    match fs_type(db) {
        Some((name, true)) => finding(
            "filesystem",
            Level::Problem,
            format!("the database is on a network filesystem ({name}): SQLite's WAL needs all processes on one host, and locks over SMB/NFS are unreliable"),
            Some("move the database to a local disk (e.g. /home/user/app/data/app.db or C:\\app\\data\\app.db)".into()),
        ),
        Some((name, false)) => finding("filesystem", Level::Ok, format!("{name} (local)"), None),
        None => finding("filesystem", Level::Ok, "type unknown on this platform; keep the database on a local disk", None),
    }
}

/// The filesystem type of `p` and whether it is a network filesystem.
fn fs_type(p: &Path) -> Option<(String, bool)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
        // SAFETY: statfs fills the zeroed struct for a valid path.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        #[allow(clippy::unnecessary_cast)]
        let magic = st.f_type as u64 & 0xffff_ffff;
        let (name, network) = match magic {
            0x6969 => ("nfs", true),
            0x517b => ("smb", true),
            0xff53_4d42 => ("cifs", true),
            0xfe53_4d42 => ("smb2", true),
            0x0102_1997 => ("9p", true),
            0x5346_414f => ("afs", true),
            0x00c3_6400 => ("ceph", true),
            0x6573_5546 => ("fuse (possibly sshfs or another network mount)", true),
            0xef53 => ("ext2/3/4", false),
            0x5846_5342 => ("xfs", false),
            0x9123_683e => ("btrfs", false),
            0x0102_1994 => ("tmpfs", false),
            0x794c_7630 => ("overlayfs", false),
            0x2fc1_2fc1 => ("zfs", false),
            0x4d44 => ("vfat", false),
            0x5346_544e => ("ntfs", false),
            other => return Some((format!("type 0x{other:x}"), false)),
        };
        Some((name.to_owned(), network))
    }
    #[cfg(windows)]
    {
        let s = p.to_string_lossy();
        let unc = s.starts_with(r"\\") && !s.starts_with(r"\\?\") || s.starts_with(r"\\?\UNC\");
        Some((if unc { "network share (UNC path)".into() } else { "local drive".into() }, unc))
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = p;
        None
    }
}

/// Exactly-once writes and whether the broker accepts writes, from its health.
fn guarantees(
    health: Option<&litebroker_client::protocol::HealthReport>,
    version: &str,
    db_arg: &str,
) -> Vec<Finding> {
    let Some(h) = health else {
        let detail = format!("not reported by litebrokerd {version} (it predates the health request)");
        return vec![finding("guarantees", Level::Ok, detail, None)];
    };
    let mut out = Vec::new();
    if h.exactly_once && h.exactly_once_off.is_none() {
        out.push(finding("exactly_once", Level::Ok, "on: writes with request ids are applied once", None));
    } else {
        let why = h.exactly_once_off.as_deref().unwrap_or("no reason given");
        out.push(finding(
            "exactly_once",
            Level::Problem,
            format!(
                "off ({why}): a write whose answer is lost is reported as \"may or may not have been applied\", not resent"
            ),
            Some(format!(
                "restart the broker without --request-id-retention-hours 0 (litebroker shutdown; litebrokerd --db {db_arg}); \
                 if its table could not be created, resolve what blocks it (a lock held by another process, a read-only file) and restart"
            )),
        ));
    }
    match &h.writes_stopped {
        None => out.push(finding("writes", Level::Ok, "accepted", None)),
        Some(why) => out.push(finding(
            "writes",
            Level::Problem,
            format!("the broker refuses writes to protect the data: {why}; reads still work"),
            Some(format!(
                "do what the reason above says; usually stop the broker cleanly (litebroker shutdown) and start it again (litebrokerd --db {db_arg})"
            )),
        )),
    }
    out
}

/// Whether the `-wal` and `-shm` files the broker (pid `pid`) has open are the
/// ones on disk. When they were deleted or replaced, other processes' readers
/// open fresh ones: readers and broker no longer share a WAL, readers miss its
/// writes, and the broker's acknowledged writes live in a file no one can find
/// after a crash.
fn wal_files(db: &Path, pid: u32) -> Finding {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let fd_dir = std::path::PathBuf::from(format!("/proc/{pid}/fd"));
        let fds = match std::fs::read_dir(&fd_dir) {
            Ok(fds) => fds,
            Err(e) => {
                return finding(
                    "wal_files",
                    Level::Warning,
                    format!("skipped: cannot read {} ({e})", fd_dir.display()),
                    Some("run litebroker doctor as the broker's user, on the broker's host".into()),
                )
            }
        };
        let sidecars: Vec<(String, std::path::PathBuf)> = ["-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut name = db.file_name().unwrap_or_default().to_os_string();
                name.push(suffix);
                (name.to_string_lossy().into_owned(), db.with_file_name(name))
            })
            .collect();
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let target = target.to_string_lossy().into_owned();
            for (name, on_disk) in &sidecars {
                let on_disk_text = on_disk.to_string_lossy();
                if target == format!("{on_disk_text} (deleted)") {
                    bad.push(format!("{name} (deleted)"));
                } else if target == on_disk_text {
                    // Following the fd's link reaches the open file even when the
                    // path now names another one.
                    let open = std::fs::metadata(fd.path()).ok().map(|m| (m.dev(), m.ino()));
                    let disk = std::fs::metadata(on_disk).ok().map(|m| (m.dev(), m.ino()));
                    if open.is_some() && open == disk {
                        good.push(name.clone());
                    } else {
                        bad.push(format!("{name} (replaced)"));
                    }
                }
            }
        }
        good.sort();
        good.dedup();
        bad.sort();
        bad.dedup();
        if !bad.is_empty() {
            return finding(
                "wal_files",
                Level::Problem,
                format!(
                    "the broker (pid {pid}) uses {} no longer on disk: readers and the broker no longer share a WAL \
                     (readers miss its writes), and acknowledged writes can be lost on a crash",
                    bad.join(", ")
                ),
                Some(
                    "stop the broker cleanly so it checkpoints its WAL into the database (litebroker shutdown), then start it again; \
                     never delete -wal/-shm files while the database is open"
                        .into(),
                ),
            );
        }
        if good.is_empty() {
            return finding(
                "wal_files",
                Level::Ok,
                format!("the broker (pid {pid}) has no -wal/-shm open"),
                None,
            );
        }
        finding("wal_files", Level::Ok, format!("the broker uses {} on disk", good.join(" and ")), None)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (db, pid);
        finding("wal_files", Level::Ok, "skipped: needs /proc (Linux) to see the broker's open files", None)
    }
}
