//! Off-machine replication through a supervised Litestream (0.5).
//!
//! With `--replicate URL` the broker writes Litestream's configuration for its
//! database into a private file in its runtime folder (next to its socket;
//! 0600), starts `litestream replicate -config FILE` as a child once the writer
//! connection is open, and keeps it running (`supervise`). Replication is
//! asynchronous: a commit is acknowledged when it is in the local file, and
//! reaches the replica within about the sync interval; writes never wait for
//! Litestream, whether it runs, restarts or fails to reach the replica.
//!
//! **Checkpoints.** Litestream 0.5 holds a read transaction on the database
//! between its own syncs, cuts the WAL into LTX files, and runs its own
//! checkpoints (PASSIVE from 1,000 WAL pages and every minute, behind a short
//! write lock of its own so that it has copied every frame first; TRUNCATE from
//! about 121,000 pages). A checkpoint that restarts or truncates the WAL before
//! Litestream copied its frames makes it start over with a full snapshot. So
//! while replicating, the broker's own checkpoints never cut the WAL: they are
//! PASSIVE (which only copies pages into the database file), and its idle
//! TRUNCATE runs only when [`Replicator::caught_up`] (Litestream runs and the
//! replica holds every commit). The final checkpoint at shutdown, after
//! Litestream stopped, is PASSIVE as well, so the next Litestream finds the WAL
//! it left.

pub mod config;
mod status;
mod supervise;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use litebroker_protocol::backoff::Backoff;
use litebroker_protocol::rendezvous::Location;
use litebroker_protocol::replication::ReplicationReport;
use tracing::info;

pub use config::Replication;
use status::Status;
use supervise::Supervisor;

/// Replication of one broker's database.
#[derive(Debug)]
pub struct Replicator {
    status: Arc<Status>,
    supervisor: Supervisor,
    /// When the broker last committed (ms since the epoch), shared with the writer.
    last_commit_ms: Arc<AtomicU64>,
}

/// Where the broker writes Litestream's configuration (also read by `litebroker
/// restore --from-replica`): its runtime folder (the
/// socket's folder on Unix), named after the socket.
pub fn config_path(location: &Location) -> PathBuf {
    let socket = Path::new(&location.socket);
    let dir = if cfg!(unix) {
        socket.parent().map_or_else(litebroker_protocol::rendezvous::default_socket_dir, Path::to_path_buf)
    } else {
        litebroker_protocol::rendezvous::default_socket_dir()
    };
    let name = socket.file_name().map_or_else(|| "litebroker".into(), |n| n.to_string_lossy().into_owned());
    dir.join(format!("{name}.litestream.yml"))
}

impl Replicator {
    /// Writes Litestream's configuration and starts it under supervision.
    ///
    /// # Errors
    /// The configuration file or the supervisor thread could not be made.
    pub fn start(
        settings: &Replication,
        program: PathBuf,
        location: &Location,
        last_commit_ms: Arc<AtomicU64>,
        backoff: Backoff,
    ) -> Result<Replicator, String> {
        let path = config_path(location);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        config::write_private(&path, &config::yaml(&location.db_path, settings))
            .map_err(|e| format!("cannot write the Litestream configuration {}: {e}", path.display()))?;
        let status = Arc::new(Status::new(
            &location.db_path,
            &settings.url,
            &program,
            settings.sync_interval.as_millis() as u64,
        ));
        info!(
            replica = %config::mask_url(&settings.url),
            program = %program.display(),
            config = %path.display(),
            "replicating through Litestream"
        );
        let supervisor = Supervisor::start(program, path, status.clone(), last_commit_ms.clone(), backoff)
            .map_err(|e| format!("cannot start: {e}"))?;
        Ok(Replicator { status, supervisor, last_commit_ms })
    }

    /// Whether Litestream runs and the replica holds every commit: only then may
    /// the broker's checkpoint truncate the WAL.
    pub fn caught_up(&self) -> bool {
        self.status.caught_up(self.last_commit_ms.load(Ordering::Relaxed))
    }

    /// The answer to `Request::Replication`.
    pub fn report(&self) -> ReplicationReport {
        self.status.report(self.last_commit_ms.load(Ordering::Relaxed))
    }

    /// Stops Litestream after its final sync (bounded; see `supervise`).
    pub fn stop(&self) {
        self.supervisor.stop();
    }
}

/// The report of a broker that does not replicate.
pub fn off() -> ReplicationReport {
    status::off()
}
