//! Child processes of a test: killed and reaped when dropped, their output read
//! with deadlines.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{stderr, stdout};
use crate::{bin, wait_until};

/// A child process that is killed and reaped when dropped, unless it already
/// exited; shared by [`crate::Broker`] and [`Proc`].
pub(crate) struct Reaped {
    pub(crate) child: Child,
    status: Option<ExitStatus>,
}

impl Reaped {
    pub(crate) fn new(child: Child) -> Reaped {
        Reaped { child, status: None }
    }

    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
    }

    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
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

    pub(crate) fn running(&mut self) -> bool {
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
