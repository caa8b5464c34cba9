//! The broker's operations through a [`Client`]: status, health, metrics,
//! replication, connections, statistics, verify, checkpoint, backup, restore,
//! migrations and shutdown. Each is one request answered by one report (backup
//! and restore also by progress frames); none of them writes through the
//! group commit.

use std::path::Path;
use std::time::Duration;

use litebroker_protocol::{
    BackupReport, BrokerStatus, CheckpointMode, CheckpointReport, ClientInfo, DbStats, HealthReport,
    MetricsReport, Migration, MigrationReport, Request, Response, RestoreReport, VerifyReport,
};

use crate::client::{millis, Client};
use crate::error::{unexpected, Result};

impl Client {
    /// The broker's status.
    ///
    /// # Errors
    /// When the broker does not answer.
    pub fn status(&mut self) -> Result<BrokerStatus> {
        match self.call(&Request::Status, self.timeout)? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected("status", &other)),
        }
    }

    /// Whether the broker's guarantees hold now: exactly-once writes, and whether
    /// it accepts writes at all (each with its reason when not).
    ///
    /// # Errors
    /// When the broker does not answer, or is too old to tell (protocol minor 0).
    pub fn health(&mut self) -> Result<HealthReport> {
        match self.call_newer(Request::Health)? {
            Response::Health(h) => Ok(h),
            other => Err(unexpected("health", &other)),
        }
    }

    /// The broker's figures: requests by kind and outcome, latency histograms,
    /// queue, sessions, locks, WAL, checkpoints, process (the Prometheus data
    /// model; [`MetricsReport::exposition`] renders the text format).
    ///
    /// # Errors
    /// When the broker does not answer, or is too old to report them (protocol
    /// minor below 2).
    pub fn metrics(&mut self) -> Result<MetricsReport> {
        match self.call_newer(Request::Metrics)? {
            Response::Metrics(m) => Ok(m),
            other => Err(unexpected("metrics", &other)),
        }
    }

    /// Replication status: the supervised Litestream, the replica's and the local
    /// positions, lag, the last error (`state` is `Off` without `--replicate`).
    ///
    /// # Errors
    /// When the broker does not answer, or is too old to tell (protocol minor
    /// below 2): then [`ClientError::Unexpected`](crate::ClientError::Unexpected).
    pub fn replication(&mut self) -> Result<litebroker_protocol::replication::ReplicationReport> {
        match self.call_newer(Request::Replication)? {
            Response::Replication(r) => Ok(r),
            other => Err(unexpected("replication", &other)),
        }
    }

    /// The broker's connected clients.
    ///
    /// # Errors
    /// When the broker does not answer.
    pub fn connections(&mut self) -> Result<Vec<ClientInfo>> {
        match self.call(&Request::Connections, self.timeout)? {
            Response::Connections(c) => Ok(c),
            other => Err(unexpected("connections", &other)),
        }
    }

    /// Asks the broker to shut down cleanly.
    ///
    /// # Errors
    /// When the broker does not answer.
    pub fn shutdown(&mut self) -> Result<()> {
        match self.call(&Request::Shutdown, self.timeout)? {
            Response::ShuttingDown => Ok(()),
            other => Err(unexpected("shutdown", &other)),
        }
    }

    /// Database and broker figures.
    ///
    /// # Errors
    /// When the broker cannot read the database or does not answer.
    pub fn stats(&mut self) -> Result<DbStats> {
        match self.call(&Request::Stats, self.timeout)? {
            Response::Stats(s) => Ok(*s),
            other => Err(unexpected("stats", &other)),
        }
    }

    /// `integrity_check` and `foreign_key_check`, run by the broker on a read-only
    /// connection.
    ///
    /// # Errors
    /// When the broker cannot read the database or does not answer.
    pub fn verify(&mut self) -> Result<VerifyReport> {
        match self.call(&Request::Verify, self.timeout)? {
            Response::Verify(r) => Ok(r),
            other => Err(unexpected("verify", &other)),
        }
    }

    /// Runs a WAL checkpoint at the broker.
    ///
    /// # Errors
    /// When the checkpoint fails or the broker does not answer.
    pub fn checkpoint(&mut self, mode: CheckpointMode) -> Result<CheckpointReport> {
        match self.call(&Request::Checkpoint { mode }, self.timeout)? {
            Response::Checkpoint(r) => Ok(r),
            other => Err(unexpected("checkpoint", &other)),
        }
    }

    /// An online backup into the database's `backups/` folder; `progress(done,
    /// total)` is called while it runs. `keep` > 0 keeps only the newest `keep`.
    ///
    /// # Errors
    /// When the copy or its check fails.
    pub fn backup(
        &mut self,
        label: &str,
        keep: u32,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<BackupReport> {
        let req = Request::Backup { label: label.to_owned(), keep };
        match self.call_with_progress(&req, self.timeout, progress)? {
            Response::Backup(r) => Ok(r),
            other => Err(unexpected("backup", &other)),
        }
    }

    /// Replaces the database's content with the SQLite file at `path` (a path the
    /// broker can read): verified first, a safety backup taken, then copied while
    /// the broker holds the writer.
    ///
    /// # Errors
    /// [`ErrorKind::VerificationFailed`](crate::ErrorKind::VerificationFailed) for a corrupt or non-SQLite file; any
    /// failure of the copy (the database is then unchanged).
    pub fn restore(&mut self, path: &Path) -> Result<RestoreReport> {
        let abs = std::path::absolute(path)?;
        let req =
            Request::Restore { path: abs.to_string_lossy().into_owned(), timeout_ms: millis(self.timeout) };
        match self.call_with_progress(&req, self.timeout, &mut |_, _| {})? {
            Response::Restored(r) => Ok(r),
            other => Err(unexpected("restore", &other)),
        }
    }

    /// Applies the migrations above the database's schema version, each in its own
    /// transaction, through the broker. Concurrent callers wait for each other; each
    /// migration is applied exactly once.
    ///
    /// # Errors
    /// The failing migration's error (it was rolled back; earlier ones stay).
    pub fn migrate(&mut self, migrations: &[Migration]) -> Result<MigrationReport> {
        let req = Request::Migrate { migrations: migrations.to_vec(), timeout_ms: millis(self.timeout) };
        match self.call(&req, self.timeout)? {
            Response::Migrated(r) => {
                self.hello.schema_version = r.to_version;
                Ok(r)
            }
            other => Err(unexpected("migrate", &other)),
        }
    }

    /// Sends `req` and reads answers until one that is not [`Response::Progress`].
    /// Long operations send progress frames, so the wait is renewed by each.
    fn call_with_progress(
        &mut self,
        req: &Request,
        timeout: Duration,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Response> {
        let mut resp = self.call(req, timeout)?;
        while let Response::Progress { done, total } = resp {
            progress(done, total);
            let next = self.stream.read_response();
            resp = self.settle(next)?;
        }
        Ok(resp)
    }
}
