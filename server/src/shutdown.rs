//! The one shutdown path, for every cause, in one place.
//!
//! | cause | how it arrives |
//! |---|---|
//! | Ctrl-C, SIGTERM, SIGHUP; on Windows console Ctrl-C, Ctrl-Break, console close | `litebrokerd`'s signal handler calls [`Stopper::stop`] with `Signal` |
//! | `litebroker shutdown` (`Request::Shutdown`) | the client's connection thread sends `Request { client }` and answers `ShuttingDown` |
//! | the writer thread failed for good | it sends `Fatal` (a failure between a COMMIT and its answers does not come here: the process exits 1 at once) |
//!
//! The main thread, woken by the first of them ([`wait_then_stop`]):
//!
//! 1. **Stops taking work.** It sets `shutting_down`: connection threads refuse
//!    new jobs with `shutting_down` (which a client may resend to the next
//!    broker: nothing of it was applied), and idle connections close at their next
//!    wake-up (within `--io-timeout-secs`).
//! 2. **Arms the watchdog.** If the process has not exited within busy_timeout +
//!    [`SHUTDOWN_SLACK`] ([`FATAL_EXIT_AFTER`] after a fatal failure), the watchdog
//!    says why and exits 1: a broker that keeps its lock but serves nothing is
//!    worse than one that exits and is restarted by its supervisor.
//! 3. **Stops accepting.** It connects to its own socket to wake the accept loop,
//!    which sees the flag and ends; the listener is dropped with it, which removes
//!    the socket file. The metrics endpoint, if it serves, is woken and ends too.
//! 4. **Finishes or refuses queued work.** It queues a `Stop` job behind
//!    everything queued (this never blocks). When the writer thread reaches it, it
//!    runs [`finish_writer`]: a write session in progress is rolled back (its
//!    client later gets `lease_expired`); the queue is closed, so later jobs are
//!    refused at once; what was queued before runs in FIFO order (one-shot writes,
//!    checkpoints and migrations run; new sessions and restores are refused).
//! 5. **Final checkpoint.** When replicating, Litestream is first asked to stop
//!    (`SIGTERM`: it syncs the replica one last time, bounded by 10 s, and is
//!    killed after 12 s). A `TRUNCATE` checkpoint (`PASSIVE` when replicating, so
//!    the next Litestream finds its WAL), waiting up to busy_timeout for readers,
//!    moves every committed write into the database file.
//! 6. **Closes the database**; the writer thread ends.
//! 7. **Flushes answers.** Up to [`FLUSH_ANSWERS`] for connection threads to write
//!    the answers of what was queued (the requests still counted in flight).
//! 8. **Removes the socket** file if it is still there; on Windows, disconnects
//!    the idle pipe connections, which otherwise keep the pipe's name alive.
//! 9. **Releases the lock**, after clearing the pid and socket recorded in the
//!    lock file.
//! 10. **Exit code:** 0 after a signal or a shutdown request, 1 after a fatal
//!     failure.
//!
//! A second signal during shutdown exits 1 at once (`litebrokerd`'s handler).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use interprocess::local_socket::prelude::*;
use interprocess::local_socket::Stream;
use litebroker_protocol::rendezvous::{socket_name, Location};
use tracing::{error, info, warn};

use crate::instance::{self, InstanceLock};
use crate::shared::{Shared, StopReason};
use crate::writer::{Writer, WriterHandle};
use crate::{io_err, BrokerError};

/// Longest a broker stopping after an internal failure takes to exit.
pub const FATAL_EXIT_AFTER: Duration = Duration::from_secs(3);

/// Time a clean shutdown may take beyond the final checkpoint's wait for readers.
pub const SHUTDOWN_SLACK: Duration = Duration::from_secs(30);

/// Longest the broker waits for connection threads to write the last answers.
pub const FLUSH_ANSWERS: Duration = Duration::from_secs(2);

/// A handle that stops a running broker (from a signal handler, a test, …).
#[derive(Debug, Clone)]
pub struct Stopper {
    tx: Sender<StopReason>,
}

impl Stopper {
    /// Starts the clean shutdown path. Calling it again has no further effect.
    pub fn stop(&self, reason: StopReason) {
        let _ = self.tx.send(reason);
    }
}

/// The stop channel: its handle, a sender for the broker's own threads, and the
/// end the main thread waits on.
pub(crate) fn channel() -> (Stopper, Sender<StopReason>, Receiver<StopReason>) {
    let (tx, rx) = mpsc::channel();
    (Stopper { tx: tx.clone() }, tx, rx)
}

/// What a running broker holds, for the shutdown sequence to stop.
pub(crate) struct Running {
    /// Where the database, its socket and its lock are.
    pub location: Location,
    /// The single-instance lock, released last.
    pub lock: InstanceLock,
    /// State shared by the broker's threads.
    pub shared: Arc<Shared>,
    /// The writer.
    pub writer: Arc<WriterHandle>,
    /// The writer thread.
    pub writer_thread: JoinHandle<()>,
    /// The accept thread.
    pub acceptor: JoinHandle<()>,
    /// The metrics endpoint's address and thread, when it serves.
    pub metrics: Option<(SocketAddr, JoinHandle<()>)>,
}

/// Waits for the first cause to stop, then runs the sequence (see the module's
/// doc).
///
/// # Errors
/// [`BrokerError::Fatal`] when the broker stopped because of an internal failure.
pub(crate) fn wait_then_stop(stop: Receiver<StopReason>, broker: Running) -> Result<(), BrokerError> {
    let Running { location, lock, shared, writer, writer_thread, acceptor, metrics } = broker;
    let reason = stop.recv().unwrap_or(StopReason::Signal);
    info!("shutting down ({})", describe(&reason));
    // 1. No new work.
    shared.shutting_down.store(true, Ordering::SeqCst);
    // 2. Whatever happens below (a wedged thread after an internal failure), the
    // process ends within a bound.
    let bound = match reason {
        StopReason::Fatal(_) => FATAL_EXIT_AFTER,
        _ => shared.config.busy_timeout + SHUTDOWN_SLACK,
    };
    spawn_exit_watchdog(bound);
    // 3. Wake the accept loop so it sees the flag; the listener is dropped with
    // it, which removes the socket file.
    let _ = Stream::connect(socket_name(&location.socket).map_err(io_err("socket name"))?);
    if acceptor.join().is_err() {
        warn!("the accept thread panicked");
    }
    // The metrics endpoint too (it ends within the time of the one request it
    // may be answering).
    if let Some((addr, thread)) = metrics {
        crate::metrics::http::wake(addr);
        if thread.join().is_err() {
            warn!("the metrics thread panicked");
        }
    }
    // 4–6. The writer thread finishes what was queued, checkpoints and closes the
    // database (`finish_writer`).
    writer.stop();
    if writer_thread.join().is_err() {
        error!("the writer thread panicked during shutdown");
    }
    // 7. Let connection threads finish writing answers to what was queued.
    let flush_deadline = Instant::now() + FLUSH_ANSWERS;
    while shared.counters.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < flush_deadline {
        thread::sleep(Duration::from_millis(5));
    }
    // 8. The socket file, and on Windows the idle connections, which still hold
    // pipe instances (the pipe name lives on with them).
    instance::remove_socket_file(&location);
    #[cfg(windows)]
    litebroker_protocol::pipe_deadline::disconnect_servers(&shared.socket);
    // 9. The lock, last.
    lock.release(&location);
    info!("stopped cleanly");
    // 10.
    match reason {
        StopReason::Fatal(msg) => Err(BrokerError::Fatal(msg)),
        _ => Ok(()),
    }
}

/// Steps 4 to 6, run by the writer thread when it reaches the `Stop` job.
pub(crate) fn finish_writer(w: &mut Writer) {
    // 4. A session in progress is rolled back; later sessions and restores are
    // refused. The queue refuses what comes later (connection threads answer
    // "shutting down" at once instead of waiting for a writer that is gone), and
    // what was queued before runs, in FIFO order.
    w.begin_stopping();
    w.close_queue();
    w.finish_queued();
    // 5. Litestream, when replicating, syncs one last time and stops (within
    // `replication::supervise::STOP_WAIT`); then the final checkpoint.
    w.stop_replication();
    w.final_checkpoint();
    // 6.
    w.close_database();
}

/// Ends the process with exit code 1 if it is still running after `bound`.
fn spawn_exit_watchdog(bound: Duration) {
    let spawned = thread::Builder::new().name("lb-exit-watchdog".into()).spawn(move || {
        thread::sleep(bound);
        error!("shutdown did not finish within {:.0} s; exiting now", bound.as_secs_f64());
        eprintln!("litebrokerd: shutdown did not finish within {:.0} s; exiting", bound.as_secs_f64());
        std::process::exit(1);
    });
    if let Err(e) = spawned {
        warn!("cannot start the shutdown watchdog: {e}");
    }
}

fn describe(reason: &StopReason) -> String {
    match reason {
        StopReason::Signal => "signal".into(),
        StopReason::Request { client } => format!("shutdown request from {client}"),
        StopReason::Fatal(m) => format!("fatal: {m}"),
    }
}
