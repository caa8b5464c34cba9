//! What the broker reports about replication (protocol minor 2): the supervised
//! Litestream process that copies the database off the machine.

use serde::{Deserialize, Serialize};

/// Where the supervised replication process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicationState {
    /// The broker was started without `--replicate`.
    Off,
    /// The replication process runs.
    Running,
    /// It exited or could not start; the broker starts it again after a backoff.
    Restarting,
    /// It was stopped (the broker is shutting down).
    Stopped,
}

impl ReplicationState {
    /// The name shown by `litebroker replication`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationState::Off => "off",
            ReplicationState::Running => "running",
            ReplicationState::Restarting => "restarting",
            ReplicationState::Stopped => "stopped",
        }
    }
}

/// Replication status, answered to [`crate::Request::Replication`]. Positions are
/// Litestream transaction ids (one per change set it cut from the WAL): `local_txid`
/// is the newest it holds next to the database, `replica_txid` the newest the
/// replica confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationReport {
    /// Off, running, restarting or stopped.
    pub state: ReplicationState,
    /// The replica's URL with its secrets (password, query values) masked.
    pub replica_url: String,
    /// The replication program the broker runs.
    pub program: String,
    /// Process id of the running replication process.
    pub pid: Option<u32>,
    /// How often it was started again after it exited.
    pub restarts: u32,
    /// Newest position cut from the WAL next to the database (0: none yet).
    pub local_txid: u64,
    /// Newest position the replica confirmed (0: none yet).
    pub replica_txid: u64,
    /// Age of the oldest commit not yet confirmed by the replica, in
    /// milliseconds (0: the replica holds every commit).
    pub lag_ms: u64,
    /// When the replica last confirmed a position, ms since the epoch.
    pub last_sync_unix_ms: Option<u64>,
    /// The last error the replication process reported (or why it exited),
    /// cleared once the replica confirms a new position.
    pub last_error: Option<String>,
    /// When `last_error` happened, ms since the epoch.
    pub last_error_unix_ms: Option<u64>,
    /// How often the replica is written to, in milliseconds.
    pub sync_interval_ms: u64,
}
