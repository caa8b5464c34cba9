//! A running `litebrokerd`: started in a test's folder, its stderr in a log file,
//! ready once it logs `listening on`, killed when dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use litebroker_client::{Client, ConnectOptions};

use crate::cli::cli;
use crate::process::Reaped;
use crate::{bin, wait_until};

/// Generous deadline for a broker to become ready (debug builds, loaded CI).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `litebrokerd`, its stderr captured in a log file.
pub struct Broker {
    proc_: Reaped,
    log: PathBuf,
    /// The database it serves.
    pub db: PathBuf,
    /// The socket from its readiness line.
    pub socket: String,
}

impl Broker {
    /// Starts `litebrokerd --db <db> <args>` and waits for `listening on`.
    ///
    /// # Panics
    /// When it exits or is not ready within [`READY_TIMEOUT`] (the log is shown).
    pub fn start(db: &Path, args: &[&str]) -> Broker {
        let b = Broker::spawn(db, args);
        b.ready()
    }

    /// Spawns without waiting for readiness (for tests that expect a failure).
    pub fn spawn(db: &Path, args: &[&str]) -> Broker {
        Broker::spawn_with(db, args, |_| {})
    }

    /// As [`Broker::start`], with extra environment variables (e.g. `XDG_RUNTIME_DIR`).
    pub fn start_with_env(db: &Path, args: &[&str], env: &[(&str, &Path)]) -> Broker {
        Broker::spawn_with_env(db, args, env).ready()
    }

    /// As [`Broker::spawn`], with extra environment variables.
    pub fn spawn_with_env(db: &Path, args: &[&str], env: &[(&str, &Path)]) -> Broker {
        Broker::spawn_with(db, args, |c| {
            c.envs(env.iter().copied());
        })
    }

    /// Spawns `litebrokerd --db <db> --log-level debug <args>` after letting
    /// `configure` adjust the command (environment, limits).
    pub fn spawn_with(db: &Path, args: &[&str], configure: impl FnOnce(&mut Command)) -> Broker {
        let mut cmd = Broker::command(db, "debug");
        cmd.args(args);
        configure(&mut cmd);
        Broker::spawn_cmd(cmd, db)
    }

    /// The command line `litebrokerd --db <db> --log-level <log_level>`, to which a
    /// caller adds its arguments before [`Broker::spawn_cmd`]. On Windows the broker
    /// gets its own process group, so that a Ctrl-Break reaches it alone.
    pub fn command(db: &Path, log_level: &str) -> Command {
        let mut cmd = Command::new(bin("litebrokerd"));
        #[cfg(windows)]
        std::os::windows::process::CommandExt::creation_flags(
            &mut cmd,
            windows_sys::Win32::System::Threading::CREATE_NEW_PROCESS_GROUP,
        );
        cmd.arg("--db").arg(db).args(["--log-level", log_level]);
        cmd
    }

    /// Spawns `cmd` (a `litebrokerd` command line, e.g. from [`Broker::command`] or
    /// [`crate::as_user`]) as a broker of `db`, its stderr in a log file next to the
    /// database's folder, without waiting for readiness.
    pub fn spawn_cmd(mut cmd: Command, db: &Path) -> Broker {
        let log = log_path(db);
        let file = fs::File::create(&log).expect("broker log");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(file);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Broker { proc_: Reaped::new(child), log, db: db.to_path_buf(), socket: String::new() }
    }

    /// Waits for the readiness line.
    ///
    /// # Panics
    /// When the broker exits first or the deadline passes.
    pub fn ready(self) -> Broker {
        self.try_ready().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits for the readiness line (its log level must be `info` or lower).
    ///
    /// # Errors
    /// When the broker exits first or is not ready within [`READY_TIMEOUT`]; the
    /// message holds its log.
    pub fn try_ready(mut self) -> Result<Broker, String> {
        let mut socket = None;
        let ok = wait_until(READY_TIMEOUT, || {
            if let Some(line) = self.log().lines().find(|l| l.contains("listening on ")) {
                let rest = line.split("listening on ").nth(1).unwrap_or("");
                socket = Some(rest.split_whitespace().next().unwrap_or("").to_owned());
                return true;
            }
            !self.proc_.running()
        });
        match socket {
            Some(s) if ok => {
                self.socket = s;
                Ok(self)
            }
            _ => Err(format!("litebrokerd did not become ready; its log:\n{}", self.log())),
        }
    }

    /// A client of this broker (its socket) that the broker lists as `name`.
    ///
    /// # Panics
    /// When it cannot connect.
    pub fn client(&self, name: &str) -> Client {
        let opts = ConnectOptions::new(&self.db).socket(&self.socket).client_name(name);
        Client::connect_with(&opts).unwrap_or_else(|e| panic!("connect to the broker as {name}: {e}"))
    }

    /// Where it serves its metrics (`--metrics-listen`), from its log line
    /// `serving metrics on http://ADDR/metrics`.
    ///
    /// # Panics
    /// When it logged no such line.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        let log = self.log();
        let addr = log
            .lines()
            .find_map(|l| l.split("serving metrics on http://").nth(1))
            .and_then(|rest| rest.split("/metrics").next())
            .unwrap_or_else(|| panic!("the broker logged no metrics address; its log:\n{log}"));
        addr.parse().unwrap_or_else(|e| panic!("metrics address {addr:?}: {e}"))
    }

    /// The broker's pid.
    pub fn pid(&self) -> u32 {
        self.proc_.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log file's path.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Sends a signal (Unix).
    #[cfg(unix)]
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we spawned.
        unsafe {
            libc::kill(self.proc_.child.id() as libc::pid_t, sig);
        }
    }

    /// SIGTERM (Unix).
    #[cfg(unix)]
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Windows: gives this process a console when it has none (as under a CI
    /// runner), so that brokers started afterwards share it and can receive
    /// console control events. True when there is a console now.
    #[cfg(windows)]
    pub fn ensure_console() -> bool {
        use windows_sys::Win32::System::Console::{AllocConsole, GetConsoleWindow};
        // SAFETY: plain Win32 calls without arguments.
        unsafe { AllocConsole() != 0 || !GetConsoleWindow().is_null() }
    }

    /// Windows: a console Ctrl-Break for the broker's process group (its own, see
    /// [`Broker::command`]); the broker treats it as Ctrl-C. Returns false when the
    /// event could not be sent (no console shared with the broker).
    #[cfg(windows)]
    pub fn ctrl_break(&self) -> bool {
        use windows_sys::Win32::System::Console::{GenerateConsoleCtrlEvent, CTRL_BREAK_EVENT};
        // SAFETY: sends a console event to a process group we created.
        unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, self.proc_.child.id()) != 0 }
    }

    /// Asks the broker to stop through the `shutdown` request (every platform).
    pub fn request_shutdown(&self) -> Output {
        cli(&self.db, &["shutdown"])
    }

    /// SIGKILL (Windows: TerminateProcess) and reap.
    pub fn kill9(&mut self) {
        self.proc_.kill9();
    }

    /// Waits for exit up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc_.wait_exit(timeout)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.proc_.running()
    }
}

/// `broker-<n>.log` in the folder above the database's (the test's folder, for a
/// [`crate::TestDir`] database), the first `n` not taken.
fn log_path(db: &Path) -> PathBuf {
    let dir = db.parent().and_then(Path::parent).unwrap_or_else(|| Path::new("."));
    for i in 0.. {
        let p = dir.join(format!("broker-{i}.log"));
        if !p.exists() {
            return p;
        }
    }
    unreachable!()
}

/// Waits until at least `n` requests wait for the broker's writer, as `status`
/// (asked through `status_client`) counts them.
///
/// # Panics
/// When they do not within [`READY_TIMEOUT`].
#[track_caller]
pub fn wait_queued(status_client: &mut Client, n: u32) {
    let depth = |c: &mut Client| c.status().expect("status").queue_depth;
    let ok = wait_until(READY_TIMEOUT, || depth(status_client) >= n);
    assert!(ok, "{n} requests never queued: {:?}", status_client.status());
}

/// Brokers of a test's database that are not the test's children (started on
/// demand): dropping this stops any left, even when the test fails, so no stray
/// process outlives it.
#[cfg(unix)]
pub struct NoStrayBrokers(pub PathBuf);

#[cfg(unix)]
impl Drop for NoStrayBrokers {
    fn drop(&mut self) {
        if crate::broker_pids(&self.0).is_empty() {
            return;
        }
        let _ = cli(&self.0, &["--timeout", "5", "shutdown"]);
        if !wait_until(Duration::from_secs(10), || crate::broker_pids(&self.0).is_empty()) {
            for pid in crate::broker_pids(&self.0) {
                // SAFETY: kill(2) on a broker of this test's own temp database.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }
}
