//! What the operating system says about a process (memory, threads, descriptors)
//! and which processes are a database's brokers, and running processes as root or as other users.

use std::fs;
#[cfg(unix)]
use std::path::Path;
#[cfg(unix)]
use std::process::Command;

/// A field of `/proc/<pid>/status` (e.g. `VmRSS`, `VmHWM`, `Threads`) as a number
/// (kB for sizes). None where there is no procfs or the process is gone, and off
/// Linux: a Windows build under Wine reaches the host's `/proc` through its `Z:`
/// drive, where the number of a Windows process names some Linux process.
pub fn proc_status_field(pid: u32, field: &str) -> Option<u64> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.split(':').next() == Some(field))?;
    line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
}

/// Pids of live processes whose command line is `…litebrokerd … <db> …` (from
/// Linux's `/proc`; none found elsewhere): every broker of this database, whoever
/// started it (an app or a CLI starting one on demand). Zombies have an empty
/// command line and are not counted.
#[cfg(unix)]
pub fn broker_pids(db: &Path) -> std::collections::BTreeSet<u32> {
    let db = db.to_string_lossy();
    let mut found = std::collections::BTreeSet::new();
    let Ok(entries) = fs::read_dir("/proc") else { return found };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(raw) = fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_broker = args.first().is_some_and(|a| a.ends_with("litebrokerd"));
        if is_broker && args.iter().any(|a| a.contains(db.as_ref())) {
            found.insert(pid);
        }
    }
    found
}

/// Resident set size of a process in KiB (Linux), from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_field(pid, "VmRSS")
}

/// Open file descriptors of a process (Linux), from `/proc/<pid>/fd`.
pub fn fd_count(pid: u32) -> Option<usize> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Whether this process runs as root (Unix), the condition of tests that run
/// processes as other users. Such tests are marked ignored, with their reason, when
/// the test crate was not built by root (`cfg(litebroker_not_root)`, set by
/// build.rs): `#[cfg_attr(litebroker_not_root, ignore = "needs root: …")]`.
#[cfg(unix)]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Fails a test that needs root with a clear reason when it runs without it (it was
/// built by root, so it was not marked ignored).
///
/// # Panics
/// When not root.
#[cfg(unix)]
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "this test runs processes as other users and needs root, but runs as uid {uid}; the test crate \
         was built by root: rebuild it as this user (touch build.rs) to have it marked ignored"
    );
}

/// Fails a test that runs processes through `setpriv` when it is missing.
///
/// # Panics
/// When `setpriv` (util-linux) cannot be run.
#[cfg(unix)]
pub fn require_setpriv() {
    let found = Command::new("setpriv").arg("--version").output().map(|o| o.status.success());
    assert!(matches!(found, Ok(true)), "setpriv (util-linux) is needed to run processes as another user");
}

/// `program` to be run as `uid` (and gid `uid`, no supplementary groups) through
/// `setpriv`, which execs it: the child's pid is the program's.
#[cfg(unix)]
pub fn as_user(uid: u32, program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "--"])
        .arg(program);
    cmd
}

/// Windows: a pipe security descriptor like the broker's (owned by this user, who
/// alone may open it), for stand-in listeners a client must trust: it checks the
/// pipe's owner, and under Wine only a pipe created with a descriptor has one.
///
/// # Panics
/// When the user's SID or the descriptor cannot be had.
#[cfg(windows)]
pub fn owner_only_pipe_descriptor() -> interprocess::os::windows::security_descriptor::SecurityDescriptor {
    let me = litebroker_protocol::host::current_user_sid().expect("the current user's SID");
    let sddl = widestring::U16CString::from_str(format!("O:{me}D:P(A;;GA;;;{me})")).expect("SDDL text");
    interprocess::os::windows::security_descriptor::SecurityDescriptor::deserialize(&sddl)
        .expect("the security descriptor")
}
