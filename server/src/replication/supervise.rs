//! The supervised Litestream process: started after the writer connection is
//! open, its output forwarded into the broker's log (target `litestream`),
//! started again with the broker's backoff when it exits (writes never wait for
//! it), stopped at shutdown after its final sync.
//!
//! On Linux the child gets `SIGTERM` if the broker dies (`PR_SET_PDEATHSIG`), so
//! a broker killed with `kill -9` leaves no Litestream behind. On Windows the
//! child is killed at shutdown, without Litestream's final sync.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use litebroker_protocol::backoff::Backoff;

use super::status::Status;
use crate::lock::lock;

/// How often the supervisor looks at the child and refreshes the lag.
const TICK: Duration = Duration::from_millis(200);

/// A run this long resets the restart backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Longest the broker waits for Litestream to exit after `SIGTERM`: its own
/// final-sync bound and a little more; then it is killed. (Windows: killed at once.)
#[cfg(unix)]
pub const STOP_WAIT: Duration = Duration::from_secs(super::config::FINAL_SYNC.as_secs() + 2);

/// The running supervisor.
#[derive(Debug)]
pub struct Supervisor {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Supervisor {
    /// Starts Litestream (`program replicate -config config`) and keeps it running.
    ///
    /// # Errors
    /// The supervisor thread could not start.
    pub fn start(
        program: PathBuf,
        config: PathBuf,
        status: Arc<Status>,
        last_commit_ms: Arc<AtomicU64>,
        backoff: Backoff,
    ) -> std::io::Result<Supervisor> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let thread = thread::Builder::new()
            .name("lb-litestream".into())
            .spawn(move || supervise(&program, &config, &status, &last_commit_ms, backoff, &stop2))?;
        Ok(Supervisor { stop, thread: Mutex::new(Some(thread)) })
    }

    /// Asks Litestream to stop after its final sync and waits for it (at most
    /// [`STOP_WAIT`], then it is killed). Later calls do nothing.
    pub fn stop(&self) {
        let (m, cv) = &*self.stop;
        *lock(m) = true;
        cv.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            if t.join().is_err() {
                warn!("the Litestream supervisor panicked");
            }
        }
    }
}

/// Waits up to `d` or until a stop is asked; returns whether it was.
fn stop_asked(stop: &(Mutex<bool>, Condvar), d: Duration) -> bool {
    let (m, cv) = stop;
    let g = lock(m);
    if *g {
        return true;
    }
    let (g, _) = cv.wait_timeout(g, d).unwrap_or_else(std::sync::PoisonError::into_inner);
    *g
}

fn supervise(
    program: &PathBuf,
    config: &PathBuf,
    status: &Arc<Status>,
    last_commit_ms: &AtomicU64,
    backoff: Backoff,
    stop: &(Mutex<bool>, Condvar),
) {
    let mut retry = 0u32;
    let mut restart = false;
    loop {
        if stop_asked(stop, Duration::ZERO) {
            break;
        }
        let started = Instant::now();
        let why = match spawn(program, config) {
            Err(e) => format!("cannot start {}: {e}", program.display()),
            Ok(mut child) => {
                status.started(child.id(), restart);
                info!(target: "litestream", pid = child.id(), "Litestream started");
                let readers = forward_output(&mut child, status);
                let outcome = watch(&mut child, status, last_commit_ms, stop);
                for r in readers {
                    let _ = r.join();
                }
                match outcome {
                    Watch::Stopped => break,
                    Watch::Exited(why) => why,
                }
            }
        };
        if started.elapsed() >= HEALTHY_RUN {
            retry = 0;
        }
        let delay = backoff.delay(retry);
        retry = retry.saturating_add(1);
        warn!(target: "litestream", "{why}; starting it again in {} ms", delay.as_millis());
        status.ended(Some(why), true);
        restart = true;
        if stop_asked(stop, delay) {
            break;
        }
    }
    status.ended(None, false);
}

fn spawn(program: &PathBuf, config: &PathBuf) -> std::io::Result<Child> {
    let mut cmd = Command::new(program);
    cmd.arg("replicate")
        .arg("-config")
        .arg(config)
        .env_remove("LOG_LEVEL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own process group: a Ctrl-C at the terminal reaches the broker,
        // which then stops Litestream after its final sync.
        cmd.process_group(0);
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl only sets a flag of the child; async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    cmd.spawn()
}

enum Watch {
    /// The broker asked it to stop and it did (or was killed).
    Stopped,
    /// It exited by itself, with this description.
    Exited(String),
}

/// Waits for the child to exit or for a stop, refreshing the lag every tick.
fn watch(
    child: &mut Child,
    status: &Status,
    last_commit_ms: &AtomicU64,
    stop: &(Mutex<bool>, Condvar),
) -> Watch {
    loop {
        match child.try_wait() {
            Ok(Some(code)) => return Watch::Exited(format!("Litestream exited ({code})")),
            Ok(None) => {}
            Err(e) => return Watch::Exited(format!("cannot watch Litestream: {e}")),
        }
        status.refresh(last_commit_ms.load(Ordering::Relaxed));
        if stop_asked(stop, TICK) {
            terminate(child);
            return Watch::Stopped;
        }
    }
}

/// `SIGTERM` (Litestream then syncs one last time, within its shutdown bound),
/// then waits up to [`STOP_WAIT`] before killing it. Windows: killed at once.
fn terminate(child: &mut Child) {
    #[cfg(unix)]
    {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(code)) => {
                    info!(target: "litestream", "Litestream stopped ({code})");
                    return;
                }
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        warn!(target: "litestream", "Litestream did not stop within {} s; killing it", STOP_WAIT.as_secs());
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Threads that forward the child's stdout and stderr lines into the log.
fn forward_output(child: &mut Child, status: &Arc<Status>) -> Vec<JoinHandle<()>> {
    let mut out = Vec::new();
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for s in streams.into_iter().flatten() {
        let status = status.clone();
        if let Ok(t) = thread::Builder::new().name("lb-litestream-log".into()).spawn(move || {
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                forward(&line, &status);
            }
        }) {
            out.push(t);
        }
    }
    out
}

/// One line of Litestream's output into the broker's log at its own level (a
/// JSON line: its message and fields; anything else as it is), secrets masked;
/// then into the status.
fn forward(line: &str, status: &Status) {
    let text = status.mask(line.trim_end());
    if text.is_empty() {
        return;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        info!(target: "litestream", "{text}");
        return;
    };
    // The first `level` key is the log level; a later one (a compaction level)
    // wins in the parsed map.
    let level = line
        .split_once("\"level\":\"")
        .and_then(|(_, rest)| rest.split('"').next())
        .unwrap_or("INFO")
        .to_owned();
    status.take_line(&level, &v);
    let msg = v.get("msg").and_then(|m| m.as_str()).unwrap_or("");
    let fields: Vec<String> = v
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "time" | "msg" | "level"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        })
        .unwrap_or_default();
    let text = status.mask(&format!("{msg} {}", fields.join(" ")));
    let text = text.trim_end();
    match level.as_str() {
        "ERROR" => error!(target: "litestream", "{text}"),
        "WARN" => warn!(target: "litestream", "{text}"),
        "INFO" => info!(target: "litestream", "{text}"),
        _ => debug!(target: "litestream", "{text}"),
    }
}
