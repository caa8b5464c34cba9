#![warn(missing_docs)]
//! `litebrokerd`: the one process that writes a SQLite database.
//!
//! [`run`] takes the database's single-instance lock, opens the only writer
//! connection, listens on a local socket (Unix) or named pipe (Windows), serves
//! clients until asked to stop, then shuts down cleanly. The binary adds argument
//! parsing, logging and signal handling around it.

mod accept;
mod admin;
pub mod config;
mod conn;
mod feed;
mod guard;
mod instance;
mod job;
mod lock;
mod metrics;
pub mod ops;
mod queue;
pub mod replication;
pub mod request_ids;
mod shared;
mod shutdown;
pub mod sql;
#[doc(hidden)]
pub mod testing;
mod texts;
#[cfg(windows)]
mod windows;
mod writer;

use std::io;
use std::sync::Arc;

use tracing::info;

pub use config::{Config, Synchronous};
pub use metrics::http::parse_listen_addr as parse_metrics_listen;
pub use shared::StopReason;
pub use shutdown::Stopper;

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
    /// The process exit code for this error: 2 for a bad configuration, 3 when
    /// another broker serves the database, 1 for anything else.
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

/// What [`run`] reports once the broker accepts connections.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The socket path or pipe name.
    pub socket: String,
    /// The canonical database path.
    pub db_path: String,
    /// Stops the broker.
    pub stopper: Stopper,
    /// Where `GET /metrics` is served (`--metrics-listen`, its port resolved).
    pub metrics: Option<std::net::SocketAddr>,
}

/// Runs a broker until it is stopped; `on_ready` is called once it listens.
///
/// Start-up, in this order: refuse a `--metrics-listen` address that is not
/// loopback, claim the database (`instance::claim`: its path, the `--db` checks,
/// the socket folder, the single-instance lock, a stale socket), bind the metrics
/// address (after the lock, so that of two brokers started for one database the
/// second is told the database is served, not that the port is taken), bound
/// SQLite's memory, open the writer connection, set up the request-id table, bind
/// the socket, start the writer, accept and metrics threads, record pid and
/// socket in the lock file; then `on_ready` (which installs signal handlers) and
/// the readiness line. Then it waits for the one shutdown path
/// (`shutdown::wait_then_stop`).
///
/// # Errors
/// See [`BrokerError`]; each variant has its exit code.
pub fn run(config: Config, on_ready: impl FnOnce(&Ready)) -> Result<(), BrokerError> {
    if let Some(addr) = config.metrics_listen {
        metrics::http::check_loopback(addr).map_err(BrokerError::Config)?;
    }
    let litestream = match &config.replication {
        None => None,
        Some(r) => {
            r.check_url().map_err(BrokerError::Config)?;
            Some(r.find_program().map_err(BrokerError::Config)?)
        }
    };
    let (location, lock) = instance::claim(&config)?;
    let metrics_listener = match config.metrics_listen {
        None => None,
        Some(addr) => Some(metrics::http::MetricsListener::bind(addr).map_err(|e| {
            BrokerError::Config(format!("cannot serve metrics on {addr} (--metrics-listen): {e}"))
        })?),
    };
    let db_path = location.db_path.to_string_lossy().into_owned();

    writer::open::limit_sqlite_memory(config.max_memory);
    let conn = writer::open::open_writer(&location.db_path, &config).map_err(BrokerError::Database)?;
    let exactly_once_off = match config.request_id_retention {
        None => Some(texts::IDS_DISABLED.to_owned()),
        Some(_) => writer::set_up_request_ids(&conn, &config).err(),
    };
    let listener = instance::bind(&location)?;

    let (stopper, stop_tx, stop_rx) = shutdown::channel();
    let shared = Arc::new(shared::Shared::new(config, db_path.clone(), location.socket.clone(), stop_tx));
    shared.set_exactly_once_off(exactly_once_off);
    // One job in flight per connection, plus stop and disconnect notices.
    let queue = Arc::new(queue::JobQueue::new(shared.config.max_clients * 2 + 16));
    let writer = Arc::new(writer::WriterHandle::new(writer::Writer::new(conn, shared.clone(), queue)));
    let writer_thread =
        writer.spawn(shutdown::finish_writer).map_err(io_err("cannot start the writer thread"))?;
    let acceptor = accept::spawn(listener, shared.clone(), writer.clone())
        .map_err(io_err("cannot start the accept thread"))?;
    let metrics = match metrics_listener {
        None => None,
        Some(l) => {
            let addr = l.addr();
            let thread = l.spawn(shared.clone()).map_err(io_err("cannot start the metrics thread"))?;
            info!("serving metrics on http://{addr}/metrics");
            Some((addr, thread))
        }
    };
    lock.record(&location);
    if let (Some(settings), Some(program)) = (&shared.config.replication, litestream) {
        // The database exists now, in WAL mode: Litestream may open it.
        let r = replication::Replicator::start(
            settings,
            program,
            &location,
            shared.counters.last_commit_unix_ms.clone(),
            shared.config.retry_schedule(),
        )
        .map_err(BrokerError::Config)?;
        let _ = shared.replication.set(r);
    }

    // Signal handlers are installed by `on_ready`, before the readiness line that
    // tells supervisors and tests the broker may now be signalled.
    let metrics_addr = metrics.as_ref().map(|(addr, _)| *addr);
    on_ready(&Ready {
        socket: location.socket.clone(),
        db_path: db_path.clone(),
        stopper,
        metrics: metrics_addr,
    });
    info!(
        db = %db_path,
        pid = std::process::id(),
        synchronous = shared.config.synchronous.as_str(),
        "listening on {}",
        location.socket
    );
    shutdown::wait_then_stop(
        stop_rx,
        shutdown::Running { location, lock, shared, writer, writer_thread, acceptor, metrics },
    )
}
