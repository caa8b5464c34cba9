#![warn(missing_docs)]
//! `litebrokerd`: the one process that writes a SQLite database.
//!
//! [`run`] takes the database's single-instance lock, opens the only writer
//! connection, listens on a local socket (Unix) or named pipe (Windows), serves
//! clients until asked to stop, then shuts down cleanly. The binary adds argument
//! parsing, logging and signal handling around it.

mod admin;
pub mod config;
mod conn;
mod guard;
mod instance;
mod job;
pub mod ops;
mod queue;
pub mod request_ids;
mod shared;
pub mod sql;
#[doc(hidden)]
pub mod testing;
mod texts;
#[cfg(windows)]
mod windows;
mod writer;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use interprocess::local_socket::prelude::*;
use interprocess::local_socket::{Listener, Stream};
use litebroker_protocol::rendezvous::{socket_name, Location};
use tracing::{error, info, warn};

pub use config::{Config, Synchronous};
pub use shared::StopReason;

/// Why the broker could not start or run. Each maps to a documented exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// Bad flags or an unusable environment (e.g. an unsafe socket folder). Exit 2.
    #[error("{0}")]
    Config(String),
    /// Another broker already serves the database. Exit 3.
    #[error("{0}")]
    AlreadyRunning(String),
    /// The database could not be opened or set up. Exit 1.
    #[error("{0}")]
    Database(String),
    /// An I/O failure with its context. Exit 1.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The broker stopped because of an internal failure. Exit 1.
    #[error("{0}")]
    Fatal(String),
}

impl BrokerError {
    /// The process exit code for this error (DESIGN §7).
    pub fn exit_code(&self) -> i32 {
        match self {
            BrokerError::Config(_) => 2,
            BrokerError::AlreadyRunning(_) => 3,
            _ => 1,
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> BrokerError {
    let context = context.into();
    move |source| BrokerError::Io { context, source }
}

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

/// What [`run`] reports once the broker accepts connections.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The socket path or pipe name.
    pub socket: String,
    /// The canonical database path.
    pub db_path: String,
    /// Stops the broker.
    pub stopper: Stopper,
}

/// Runs a broker until it is stopped; `on_ready` is called once it listens.
///
/// # Errors
/// See [`BrokerError`]; each variant has its exit code.
pub fn run(config: Config, on_ready: impl FnOnce(&Ready)) -> Result<(), BrokerError> {
    let location = Location::resolve_creating(&config.db, config.socket.as_deref())
        .map_err(io_err(format!("cannot use database path {}", config.db.display())))?;
    let db_path = location.db_path.to_string_lossy().into_owned();
    instance::check_db_file(&location)?;
    instance::prepare_socket_folder(&location)?;
    let lock = instance::lock(&location)?;
    instance::clear_stale_socket(&location)?;

    writer::open::limit_sqlite_memory(config.max_memory);
    let conn = writer::open::open_writer(&location.db_path, &config).map_err(BrokerError::Database)?;
    let exactly_once_off = match config.request_id_retention {
        None => Some(texts::IDS_DISABLED.to_owned()),
        Some(_) => writer::set_up_request_ids(&conn, &config).err(),
    };
    let listener = instance::bind(&location)?;

    let (stop_tx, stop_rx) = mpsc::channel();
    let shared =
        Arc::new(shared::Shared::new(config, db_path.clone(), location.socket.clone(), stop_tx.clone()));
    shared.set_exactly_once_off(exactly_once_off);
    // One job in flight per connection, plus stop and disconnect notices.
    let queue = Arc::new(queue::JobQueue::new(shared.config.max_clients * 2 + 16));
    let writer = Arc::new(writer::WriterHandle::new(writer::Writer::new(conn, shared.clone(), queue)));
    let writer_thread = {
        let shared = shared.clone();
        let writer = writer.clone();
        thread::Builder::new()
            .name("lb-writer".into())
            .spawn(move || {
                let stop = shared.clone();
                // `run` recovers from a failure of one request; one it cannot recover
                // from ends the thread, and the broker.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || writer.run()));
                if r.is_err() {
                    stop.writer_alive.store(false, Ordering::SeqCst);
                    stop.request_stop(StopReason::Fatal("the writer thread failed".into()));
                }
            })
            .map_err(io_err("cannot start the writer thread"))?
    };
    let acceptor = {
        let shared = shared.clone();
        let writer = writer.clone();
        thread::Builder::new()
            .name("lb-accept".into())
            .spawn(move || accept_loop(listener, shared, writer))
            .map_err(io_err("cannot start the accept thread"))?
    };
    lock.record(&location);

    // Signal handlers are installed by `on_ready`, before the readiness line that
    // tells supervisors and tests the broker may now be signalled.
    on_ready(&Ready {
        socket: location.socket.clone(),
        db_path: db_path.clone(),
        stopper: Stopper { tx: stop_tx },
    });
    info!(
        db = %db_path,
        pid = std::process::id(),
        synchronous = shared.config.synchronous.as_str(),
        "listening on {}",
        location.socket
    );

    let reason = stop_rx.recv().unwrap_or(StopReason::Signal);
    info!("shutting down ({})", describe(&reason));
    shared.shutting_down.store(true, Ordering::SeqCst);
    // Whatever happens below (a wedged thread after an internal failure), the
    // process ends within a bound: a broker that keeps its lock but serves nothing
    // is worse than one that exits 1 and is restarted by its supervisor.
    let bound = match reason {
        StopReason::Fatal(_) => FATAL_EXIT_AFTER,
        _ => shared.config.busy_timeout + SHUTDOWN_SLACK,
    };
    spawn_exit_watchdog(bound);

    // Wake the accept loop so it sees the flag; the listener is dropped with it,
    // which removes the socket file.
    let _ = Stream::connect(socket_name(&location.socket).map_err(io_err("socket name"))?);
    if acceptor.join().is_err() {
        warn!("the accept thread panicked");
    }
    writer.stop();
    if writer_thread.join().is_err() {
        error!("the writer thread panicked during shutdown");
    }
    // Let connection threads finish writing answers to what was queued.
    let flush_deadline = Instant::now() + Duration::from_secs(2);
    while shared.counters.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < flush_deadline {
        thread::sleep(Duration::from_millis(5));
    }
    instance::remove_socket_file(&location);
    // Windows: idle connections still hold pipe instances (the pipe name lives on
    // with them); cut them off before the lock is released.
    #[cfg(windows)]
    litebroker_protocol::pipe_deadline::disconnect_all_servers();
    lock.release(&location);
    info!("stopped cleanly");
    match reason {
        StopReason::Fatal(msg) => Err(BrokerError::Fatal(msg)),
        _ => Ok(()),
    }
}

/// Longest a broker stopping after an internal failure takes to exit.
const FATAL_EXIT_AFTER: Duration = Duration::from_secs(3);

/// Time a clean shutdown may take beyond the final checkpoint's wait for readers.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(30);

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

fn accept_loop(listener: Listener, shared: Arc<shared::Shared>, writer: Arc<writer::WriterHandle>) {
    let mut failures = 0u32;
    for incoming in listener.incoming() {
        if shared.is_shutting_down() {
            break;
        }
        let stream = match incoming {
            Ok(s) => {
                failures = 0;
                s
            }
            Err(e) => {
                // Typically out of file descriptors: back off briefly instead of
                // spinning, and keep serving the connections already open.
                failures += 1;
                warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(10 * u64::from(failures.min(50))));
                continue;
            }
        };
        let peer_pid = match instance::check_peer(&stream, &shared.config) {
            Ok(pid) => pid,
            Err(msg) => {
                warn!("refused a connection: {msg}");
                instance::refuse(stream, &shared.config, litebroker_protocol::ErrorKind::NotAllowed, msg);
                continue;
            }
        };
        let open = shared.connections.load(Ordering::SeqCst);
        if open >= shared.config.max_clients {
            let msg = texts::too_many_clients(open, shared.config.max_clients);
            warn!("refused a connection: {msg}");
            instance::refuse(stream, &shared.config, litebroker_protocol::ErrorKind::LimitExceeded, msg);
            continue;
        }
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let (s2, w2) = (shared.clone(), writer.clone());
        // Connection threads run SQLite when they serve the writer's queue, so
        // they get the stack a SQLite thread needs (virtual memory: only what is
        // touched is resident).
        let spawned =
            thread::Builder::new().name("lb-conn".into()).stack_size(2 * 1024 * 1024).spawn(move || {
                // A failure serving one client disconnects that client only.
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    conn::serve(stream, s2.clone(), w2, peer_pid)
                }));
                if served.is_err() {
                    error!("internal failure serving a client; it was disconnected, the broker serves on");
                }
                s2.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            warn!("cannot start a connection thread: {e}");
        }
    }
}
