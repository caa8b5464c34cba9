#![warn(missing_docs)]
//! Support for litebroker's multi-process integration tests: the real binaries,
//! started in temp dirs, waited for with deadlines (never bare sleeps).
//!
//! The binaries come from the same target folder as the running test
//! (`target/<profile>/`); `scripts/test.sh` builds them before the tests run.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use litebroker_protocol::backoff::Backoff;
pub use tempfile::TempDir;

/// Generous deadline for a broker to become ready (debug builds, loaded CI).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The folder holding the workspace's binaries for the current build profile.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe folder").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary (`litebrokerd`, `litebroker`, `lbtool`).
///
/// # Panics
/// When the binary was not built; the message says how to build it.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`; scripts/test.sh does it)",
        p.display()
    );
    p
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let pauses = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));
    let mut polls = 0;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pauses.delay(polls));
        polls += 1;
    }
}

/// A temp folder with a database path `data/app.db` inside (the folder `data` is
/// left for the broker to create).
pub struct TestDir {
    dir: TempDir,
}

impl TestDir {
    /// A fresh temp folder.
    pub fn new() -> TestDir {
        TestDir { dir: tempfile::Builder::new().prefix("lbtest").tempdir().expect("tempdir") }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<dir>/data/app.db`.
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("data").join("app.db")
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

/// A child process that is killed and reaped when dropped, unless it already
/// exited; shared by [`Broker`] and [`Proc`].
struct Reaped {
    child: Child,
    status: Option<ExitStatus>,
}

impl Reaped {
    fn new(child: Child) -> Reaped {
        Reaped { child, status: None }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            let child = &mut self.child;
            let mut st = None;
            wait_until(timeout, || {
                st = child.try_wait().ok().flatten();
                st.is_some()
            });
            self.status = st;
        }
        self.status
    }

    fn running(&mut self) -> bool {
        self.status.is_none() && matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

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

    /// Spawns after letting `configure` adjust the command (environment, limits).
    pub fn spawn_with(db: &Path, args: &[&str], configure: impl FnOnce(&mut Command)) -> Broker {
        let log = log_path(db);
        let file = fs::File::create(&log).expect("broker log");
        let mut cmd = Command::new(bin("litebrokerd"));
        // Windows: its own process group, so that a Ctrl-Break reaches it alone.
        #[cfg(windows)]
        std::os::windows::process::CommandExt::creation_flags(
            &mut cmd,
            windows_sys::Win32::System::Threading::CREATE_NEW_PROCESS_GROUP,
        );
        cmd.arg("--db")
            .arg(db)
            .args(["--log-level", "debug"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        configure(&mut cmd);
        let child = cmd.spawn().expect("spawn litebrokerd");
        Broker { proc_: Reaped::new(child), log, db: db.to_path_buf(), socket: String::new() }
    }

    /// Waits for the readiness line.
    ///
    /// # Panics
    /// When the broker exits first or the deadline passes.
    pub fn ready(mut self) -> Broker {
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
            Some(s) if ok => self.socket = s,
            _ => panic!("litebrokerd did not become ready; its log:\n{}", self.log()),
        }
        self
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
    /// [`Broker::spawn`]); the broker treats it as Ctrl-C. Returns false when the
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

/// A raw connection to a broker's socket or pipe, for tests that speak the wire
/// protocol themselves (hostile bytes, stalls, forged handshakes).
pub fn connect_raw(socket: &str) -> interprocess::local_socket::Stream {
    use interprocess::local_socket::traits::Stream as _;
    let name = litebroker_protocol::rendezvous::socket_name(socket).expect("socket name");
    interprocess::local_socket::Stream::connect(name).expect("connect to the broker")
}

/// Runs `litebroker --db <db> <args>` to completion.
pub fn cli(db: &Path, args: &[&str]) -> Output {
    cli_with_stdin(db, args, None)
}

/// Runs `litebroker` with `input` on stdin.
pub fn cli_with_stdin(db: &Path, args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new(bin("litebroker"))
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn litebroker");
    if let Some(text) = input {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("litebroker output")
}

/// Stdout of a finished command as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr of a finished command as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a command's exit code, showing its output when it differs.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// Opens the database directly (read-only) for assertions.
pub fn open_ro(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open db read-only")
}

/// `PRAGMA integrity_check` result joined into one string ("ok" when healthy).
pub fn integrity(db: &Path) -> String {
    let c = open_ro(db);
    let mut st = c.prepare("PRAGMA integrity_check").expect("prepare");
    let rows: Vec<String> = st.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect();
    rows.join("; ")
}

/// Number of rows `PRAGMA foreign_key_check` reports.
pub fn foreign_key_violations(db: &Path) -> usize {
    let c = open_ro(db);
    let mut st = c.prepare("PRAGMA foreign_key_check").expect("prepare");
    let n = st.query_map([], |_| Ok(())).expect("query").count();
    n
}

/// A single integer from a query on a direct read-only connection.
pub fn query_i64(db: &Path, sql: &str) -> i64 {
    open_ro(db).query_row(sql, [], |r| r.get(0)).expect("query_i64")
}

/// A child process with piped stdin/stdout whose output lines can be awaited
/// with deadlines (an `lbtool` client, the `sqlite3` CLI holding a lock, …).
pub struct Proc {
    proc_: Reaped,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    /// Spawns `cmd` with piped stdin and stdout (stderr is inherited).
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { proc_: Reaped::new(child), lines }
    }

    /// Spawns `lbtool --db <db> <args>`.
    pub fn lbtool(db: &Path, args: &[&str]) -> Proc {
        let mut cmd = Command::new(bin("lbtool"));
        cmd.arg("--db").arg(db).args(args);
        Proc::spawn(cmd)
    }

    /// The next line of stdout, waiting up to `timeout`.
    pub fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The next stdout line that parses as JSON, waiting up to `timeout`.
    ///
    /// # Panics
    /// When none comes in time.
    pub fn json_line(&self, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.line(left).unwrap_or_else(|| panic!("no JSON line within {timeout:?}"));
            if let Ok(v) = serde_json::from_str(&line) {
                return v;
            }
        }
    }

    /// Writes a line to its stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.proc_.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to child stdin");
        stdin.flush().expect("flush child stdin");
    }

    /// Closes its stdin.
    pub fn close_stdin(&mut self) {
        drop(self.proc_.child.stdin.take());
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.proc_.child.id()
    }

    /// SIGKILL (TerminateProcess on Windows) and reap.
    pub fn kill9(&mut self) {
        self.proc_.kill9();
    }

    /// Waits for exit up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc_.wait_exit(timeout)
    }
}

/// Spawns `lbtool --db <db> <args>` with stdout and stderr captured; collect them
/// with [`wait_output`].
pub fn spawn_lbtool(db: &Path, args: &[&str]) -> Child {
    Command::new(bin("lbtool"))
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lbtool")
}

/// Waits up to `timeout` for a child spawned with piped stdout/stderr and returns
/// its output. The pipes are drained while waiting, so a chatty child cannot block
/// on a full pipe.
///
/// # Panics
/// When the deadline passes (the child is killed first, and what it printed so far
/// is shown).
pub fn wait_output(mut child: Child, timeout: Duration, what: &str) -> Output {
    use std::io::Read;
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    let timed_out = status.is_none();
    if timed_out {
        let _ = child.kill();
        status = Some(child.wait().expect("wait"));
    }
    let output = Output {
        status: status.expect("status"),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    assert!(
        !timed_out,
        "{what} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
        stdout(&output),
        stderr(&output)
    );
    output
}

/// The last line of a process's stdout parsed as JSON (lbtool's summary).
///
/// # Panics
/// When it is not JSON; the output is shown.
pub fn json_summary(o: &Output) -> serde_json::Value {
    let text = stdout(o);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("not a JSON summary ({e})\nstdout:\n{text}\nstderr:\n{}", stderr(o)))
}

/// A field of `/proc/<pid>/status` (e.g. `VmRSS`, `Threads`) as a number (kB for
/// sizes). None where there is no procfs or the process is gone.
pub fn proc_status_field(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.split(':').next() == Some(field))?;
    line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
}

/// Resident set size of a process in KiB (Linux), from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_field(pid, "VmRSS")
}

/// Open file descriptors of a process (Linux), from `/proc/<pid>/fd`.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

// ----- two users (tests/trust.rs) ------------------------------------------------------

/// Whether this process runs as root (Unix), the condition of tests that run
/// processes as other users. Such tests are marked ignored when the test crate was
/// not built by root (`cfg(litebroker_not_root)`, set by build.rs).
#[cfg(unix)]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Fails a test that needs root with a clear reason when it runs without it (it was
/// built by root, so it was not marked ignored).
///
/// # Panics
/// When not root, or when `setpriv` is missing.
#[cfg(unix)]
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "this test runs processes as other users and needs root, but runs as uid {uid}; the test crate \
         was built by root: rebuild it as this user (touch build.rs) to have it marked ignored"
    );
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

impl Broker {
    /// Spawns `cmd` (a `litebrokerd` command line, e.g. from [`as_user`]) as a broker
    /// of `db`, its stderr in a log file, without waiting for readiness.
    pub fn spawn_cmd(mut cmd: Command, db: &Path) -> Broker {
        let log = log_path(db);
        let file = fs::File::create(&log).expect("broker log");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(file);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Broker { proc_: Reaped::new(child), log, db: db.to_path_buf(), socket: String::new() }
    }
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

#[cfg(test)]
mod tests {
    /// This folder is the package's root, so cargo finds no test file by itself:
    /// each `*.rs` here must be declared in Cargo.toml, or it would never run.
    #[test]
    fn every_test_file_is_declared_in_the_manifest() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("tests/Cargo.toml");
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(dir).expect("the test package's folder") {
            let name = entry.expect("a folder entry").file_name().to_string_lossy().into_owned();
            if name.ends_with(".rs")
                && name != "build.rs"
                && !manifest.contains(&format!("path = \"{name}\""))
            {
                missing.push(name);
            }
        }
        assert!(missing.is_empty(), "declare these as [[test]] in tests/Cargo.toml: {missing:?}");
    }
}
