//! On-demand start (opt-in): when no broker serves the database, start
//! `litebrokerd` detached from this process, then connect to whichever broker wins.
//!
//! Several app instances that start at the same moment all find no broker and all
//! start one. That is expected: the database's single-instance lock lets exactly one
//! of them serve it, the others exit with code 3, and every instance connects to the
//! survivor. Nothing here tries to elect a starter, because the lock already does.
//!
//! The broker is detached so that it outlives the app that started it and is not
//! hit by what hits the app: on Unix it runs in its own session (`setsid`) with
//! stdin and stdout on `/dev/null` and stderr appended to a log file next to the
//! database, so a terminal's Ctrl-C (SIGINT to the foreground process group), a
//! closed terminal (SIGHUP to the session) or a closed pipe (SIGPIPE) does not
//! reach it. On Windows it gets its own process group and no console window.
//!
//! # Which `litebrokerd`
//! [`find_broker`] looks, in this order, at: the explicit [`AutoStart::broker_path`];
//! the `LITEBROKERD` environment variable; `litebrokerd` next to the current
//! executable (and next to its folder when that is Cargo's `deps/`); every folder of
//! `PATH`. An explicit path or `LITEBROKERD` that does not name an executable is an
//! error rather than a reason to fall back: starting another broker than the one
//! asked for would be a surprise.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use litebroker_protocol::backoff::{jitter, Backoff};
use litebroker_protocol::rendezvous::Location;
use tracing::{debug, info, warn};

use crate::connect::{connect, Connected};
pub use crate::env::BROKER_ENV;
pub use crate::error::AutoStartError;
use crate::error::{ClientError, Result};
use crate::options::ConnectOptions;
pub use crate::options::{AutoStart, DEFAULT_START_TIMEOUT};

/// Exit code of a `litebrokerd` that found another broker serving the database.
const EXIT_ALREADY_RUNNING: i32 = 3;

/// How often to knock while a started broker comes up: 5 ms, doubling, at most
/// every 100 ms.
const POLL: Backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(100));

/// After our own broker failed for another reason than a lost race, how long to keep
/// trying to connect in case a broker started by someone else is about to answer.
const FAILED_GRACE: Duration = Duration::from_secs(1);

/// How [`crate::connect_or_start`] came to be connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// A broker already served the database; nothing was started.
    AlreadyRunning,
    /// This process started the broker it is now connected to.
    StartedHere,
    /// This process started a broker, but one started at the same time by another
    /// process won the database's lock; ours exited and this is the winner.
    StartedElsewhere,
}

impl StartOutcome {
    /// A short stable name (`already_running`, `started_here`, `started_elsewhere`).
    pub fn as_str(self) -> &'static str {
        match self {
            StartOutcome::AlreadyRunning => "already_running",
            StartOutcome::StartedHere => "started_here",
            StartOutcome::StartedElsewhere => "started_elsewhere",
        }
    }
}

/// Connects to the broker of `opts.db`, starting one first when none is running
/// (see the module docs), and tells how: a plain connect first, and only when
/// nothing listens, a start and plain connects until the new broker (or one started
/// at the same moment elsewhere) answers. `opts.autostart` plays no part: `auto`
/// rules.
///
/// # Errors
/// [`ClientError::AutoStart`] when no broker could be started or none answered in
/// time; any other connect error (an incompatible broker, …) as a plain connect
/// returns it.
pub(crate) fn connect_or_start(opts: &ConnectOptions, auto: &AutoStart) -> Result<(Connected, StartOutcome)> {
    // The broker would create the folder itself, but the client must resolve the
    // database's canonical path (which needs the folder) before it can start it.
    if let Some(parent) = opts.db.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match connect(opts) {
        Err(ClientError::NotRunning { .. }) => {}
        other => return other.map(|c| (c, StartOutcome::AlreadyRunning)),
    }
    let location = Location::resolve(&opts.db, opts.socket.as_deref())?;
    let broker = find_broker(auto.broker_path.as_deref())?;
    let log = auto.log_file.clone().unwrap_or_else(|| default_log_file(&location.db_path));
    info!(
        db = %location.db_path.display(),
        broker = %broker.display(),
        log = %log.display(),
        "no broker serves the database; starting one"
    );
    let child = spawn_detached(&broker, &location, opts.socket.as_deref(), &auto.extra_args, &log)?;
    wait_for_broker(opts, auto, child, &broker, &location.db_path, &log)
}

fn wait_for_broker(
    opts: &ConnectOptions,
    auto: &AutoStart,
    mut child: Child,
    broker: &Path,
    db: &Path,
    log: &Path,
) -> Result<(Connected, StartOutcome)> {
    let child_pid = child.id();
    let started = Instant::now();
    let mut deadline = started + auto.start_timeout;
    let mut polls = 0;
    let mut exited: Option<ExitStatus> = None;
    loop {
        match connect(opts) {
            Ok(conn) => {
                let outcome = if conn.hello.pid == child_pid {
                    StartOutcome::StartedHere
                } else {
                    StartOutcome::StartedElsewhere
                };
                info!(
                    broker_pid = conn.hello.pid,
                    outcome = outcome.as_str(),
                    waited_ms = started.elapsed().as_millis() as u64,
                    "connected to the broker"
                );
                if exited.is_none() {
                    reap_in_background(child);
                }
                return Ok((conn, outcome));
            }
            Err(ClientError::NotRunning { .. }) => {}
            Err(e) => {
                if exited.is_none() {
                    reap_in_background(child);
                }
                return Err(e);
            }
        }
        if exited.is_none() {
            exited = child.try_wait()?;
            if let Some(status) = exited {
                if status.code() == Some(EXIT_ALREADY_RUNNING) {
                    // Lost the race for the lock: the winner is starting; keep polling.
                    debug!(
                        pid = child_pid,
                        "the started broker found another broker starting; waiting for it"
                    );
                } else {
                    warn!(pid = child_pid, %status, log = %log.display(), "the started broker exited");
                    deadline = deadline.min(Instant::now() + FAILED_GRACE);
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            if exited.is_none() {
                reap_in_background(child);
            }
            let err = match exited {
                Some(status) if status.code() != Some(EXIT_ALREADY_RUNNING) => AutoStartError::Failed {
                    path: broker.to_path_buf(),
                    status,
                    log: log.to_path_buf(),
                    tail: log_tail(log, 10),
                },
                _ => AutoStartError::NotReady {
                    db: db.to_path_buf(),
                    path: broker.to_path_buf(),
                    waited: started.elapsed(),
                    log: log.to_path_buf(),
                },
            };
            return Err(err.into());
        }
        // Jitter spreads the polls of many instances started at the same instant.
        let sleep = jitter(POLL.delay(polls), 0.5, 1.5).min(deadline - now);
        std::thread::sleep(sleep);
        polls += 1;
    }
}

/// The default log file of a started broker: `<db>-broker.log` next to the database.
pub fn default_log_file(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push("-broker.log");
    db_path.with_file_name(name)
}

/// Finds the `litebrokerd` to start (the search order is in the module docs).
///
/// # Errors
/// [`AutoStartError::NotFound`] listing every path tried.
pub fn find_broker(explicit: Option<&Path>) -> Result<PathBuf, AutoStartError> {
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
    find_broker_in(explicit, std::env::var_os(BROKER_ENV), exe_dir.as_deref(), std::env::var_os("PATH"))
}

fn find_broker_in(
    explicit: Option<&Path>,
    env: Option<OsString>,
    exe_dir: Option<&Path>,
    path_var: Option<OsString>,
) -> Result<PathBuf, AutoStartError> {
    let fixed = explicit.map(Path::to_path_buf).or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from));
    if let Some(p) = fixed {
        return if is_executable(&p) { Ok(p) } else { Err(AutoStartError::NotFound { searched: vec![p] }) };
    }
    let name = format!("litebrokerd{}", std::env::consts::EXE_SUFFIX);
    let mut candidates = Vec::new();
    if let Some(dir) = exe_dir {
        candidates.push(dir.join(&name));
        // Test binaries live in target/<profile>/deps, the broker one folder up.
        if dir.ends_with("deps") {
            if let Some(up) = dir.parent() {
                candidates.push(up.join(&name));
            }
        }
    }
    if let Some(path_var) = path_var {
        candidates
            .extend(std::env::split_paths(&path_var).filter(|d| d.is_absolute()).map(|d| d.join(&name)));
    }
    match candidates.iter().find(|p| is_executable(p)) {
        Some(p) => Ok(p.clone()),
        None => Err(AutoStartError::NotFound { searched: candidates }),
    }
}

fn is_executable(p: &Path) -> bool {
    let Ok(meta) = fs::metadata(p) else { return false };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

fn spawn_detached(
    broker: &Path,
    location: &Location,
    socket: Option<&str>,
    extra_args: &[OsString],
    log: &Path,
) -> Result<Child, AutoStartError> {
    let spawn_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AutoStartError::Spawn { path, source }
    };
    // Appending: brokers that lose the race write their "already running" line to
    // the same file, and earlier runs' history stays.
    let log_file = fs::OpenOptions::new().create(true).append(true).open(log).map_err(spawn_err(log))?;
    let mut cmd = Command::new(broker);
    cmd.arg("--db").arg(&location.db_path);
    if let Some(s) = socket {
        cmd.arg("--socket").arg(s);
    }
    cmd.args(extra_args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log_file);
    detach(&mut cmd);
    let child = cmd.spawn().map_err(spawn_err(broker))?;
    debug!(pid = child.id(), "started {}", broker.display());
    Ok(child)
}

#[cfg(unix)]
fn detach(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls setsid(2), which
    // is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(windows)]
fn detach(cmd: &mut Command) {
    use std::os::windows::process::CommandExt;
    // Its own process group: a Ctrl-C in the app's console is not delivered to it.
    const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
    // No console window pops up for the background broker.
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW);
}

#[cfg(not(any(unix, windows)))]
fn detach(_cmd: &mut Command) {}

/// Waits for the started broker on a thread so that it never lingers as a zombie of
/// this process once it exits (a later `shutdown`, or losing the lock race late).
fn reap_in_background(mut child: Child) {
    let spawned = std::thread::Builder::new().name("lb-autostart-reap".into()).spawn(move || {
        let _ = child.wait();
    });
    if let Err(e) = spawned {
        debug!("cannot start the reaper thread ({e}); the broker is reaped when this process exits");
    }
}

fn log_tail(log: &Path, lines: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// Every test drives a stand-in broker written as a shell script.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Held while a test writes and runs a script: a child forked by another test
    /// thread while the script's file is open for writing would make exec fail
    /// with ETXTBSY ("text file busy").
    static SCRIPTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn search_order_is_explicit_env_program_folder_then_path() {
        let _serial = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempfile::tempdir().unwrap();
        let (exe_dir, on_path, other) = (d.path().join("bin"), d.path().join("path"), d.path().join("x"));
        for dir in [&exe_dir, &on_path, &other] {
            fs::create_dir_all(dir).unwrap();
        }
        let in_exe = script(&exe_dir, "litebrokerd", "exit 0");
        let in_path = script(&on_path, "litebrokerd", "exit 0");
        let explicit = script(&other, "my-broker", "exit 0");
        let path_var = Some(std::env::join_paths([&on_path]).unwrap());

        let found = |explicit: Option<&Path>, env: Option<&Path>, exe: Option<&Path>| {
            find_broker_in(explicit, env.map(|p| p.as_os_str().to_owned()), exe, path_var.clone())
        };
        assert_eq!(found(Some(&explicit), Some(&in_path), Some(&exe_dir)).unwrap(), explicit);
        assert_eq!(found(None, Some(&explicit), Some(&exe_dir)).unwrap(), explicit);
        assert_eq!(found(None, None, Some(&exe_dir)).unwrap(), in_exe);
        assert_eq!(found(None, None, Some(&exe_dir.join("deps"))).unwrap(), in_exe, "cargo's deps/");
        assert_eq!(found(None, None, Some(&other)).unwrap(), in_path);

        // A wrong explicit choice is reported, not silently replaced.
        let missing = other.join("nope");
        let e = found(None, Some(&missing), Some(&exe_dir)).unwrap_err();
        assert!(
            matches!(&e, AutoStartError::NotFound { searched } if searched == std::slice::from_ref(&missing)),
            "{e}"
        );
        let not_exec = other.join("plain");
        fs::write(&not_exec, "").unwrap();
        assert!(found(Some(&not_exec), None, Some(&exe_dir)).is_err());

        let e = find_broker_in(None, None, Some(&other), None).unwrap_err();
        assert!(e.to_string().contains("LITEBROKERD"), "{e}");
    }

    #[test]
    fn a_broker_that_fails_to_start_is_reported_with_its_log() {
        let _serial = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempfile::tempdir().unwrap();
        let fake = script(
            d.path(),
            "litebrokerd",
            "echo 'litebrokerd: cannot open database: disk on fire' >&2\nexit 1",
        );
        let db = d.path().join("data").join("app.db");
        let opts = ConnectOptions::new(&db).socket(d.path().join("s.sock").to_string_lossy());
        let auto = AutoStart::default().broker_path(&fake).start_timeout(Duration::from_secs(20));
        let started = Instant::now();
        let e = connect_or_start(&opts, &auto).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        let msg = e.to_string();
        assert!(msg.contains("exit status: 1") && msg.contains("disk on fire"), "{msg}");
        assert!(
            matches!(&e, ClientError::AutoStart(a) if matches!(&**a, AutoStartError::Failed { log, .. } if log.ends_with("app.db-broker.log"))),
            "{e:?}"
        );
    }

    #[test]
    fn a_broker_that_never_answers_times_out() {
        let _serial = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempfile::tempdir().unwrap();
        // Exits 3 like a broker that lost the race, but nobody else ever answers.
        let fake = script(d.path(), "litebrokerd", "exit 3");
        let db = d.path().join("app.db");
        let opts = ConnectOptions::new(&db).socket(d.path().join("s.sock").to_string_lossy());
        let auto = AutoStart::default().broker_path(&fake).start_timeout(Duration::from_millis(300));
        let e = connect_or_start(&opts, &auto).unwrap_err();
        assert!(
            matches!(&e, ClientError::AutoStart(a) if matches!(**a, AutoStartError::NotReady { .. })),
            "{e:?}"
        );
    }
}
