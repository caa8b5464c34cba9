//! Broker configuration: every limit and policy knob, with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use litebroker_protocol::backoff::Backoff;
use litebroker_protocol::DEFAULT_MAX_FRAME;

/// The largest `--group-wait-us` accepted.
pub const MAX_GROUP_WAIT: Duration = Duration::from_millis(100);

/// `PRAGMA synchronous` of the writer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// The default: in WAL mode commits do not fsync; a process crash loses
    /// nothing committed, a power loss may lose the last commits.
    Normal,
    /// Every commit is fsynced: acknowledged writes survive power loss.
    Full,
}

impl Synchronous {
    /// The PRAGMA value and the name shown in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Normal => "normal",
            Synchronous::Full => "full",
        }
    }
}

/// Everything the broker can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// The database file (created, with its folder, when missing).
    pub db: PathBuf,
    /// Explicit socket path (Unix) or pipe name (Windows); derived from `db` when None.
    pub socket: Option<String>,
    /// `PRAGMA synchronous`.
    pub synchronous: Synchronous,
    /// SQLite's busy_timeout before the first retry (default 5 s).
    pub busy_timeout: Duration,
    /// Retries after the first attempt when another process holds the lock
    /// (default 3: four attempts in all).
    pub lock_retries: u32,
    /// First backoff delay (default 0.5 s), doubling at each retry.
    pub retry_base: Duration,
    /// Backoff cap (default 5 s).
    pub retry_cap: Duration,
    /// Timeout of requests that do not state one.
    pub default_timeout: Duration,
    /// Maximum time a write session may hold the writer before it is rolled back.
    pub lease: Duration,
    /// Maximum run time of one statement before it is interrupted.
    pub max_statement_time: Duration,
    /// Maximum frame size, both directions.
    pub max_frame: u32,
    /// Maximum requests committed together in one group.
    pub max_group_requests: usize,
    /// Maximum SQL+parameter bytes committed together in one group.
    pub max_group_bytes: usize,
    /// Longest the writer waits, before a group's transaction begins, for writers
    /// known to be coming (`--group-wait-us`). Zero, the default: never. Measured
    /// on 2026-12-03 under FULL with 8 clients, it doubled the requests per COMMIT
    /// but did not raise writes/s measurably on a disk whose flush takes ~170 µs;
    /// it is for disks whose flush is long next to a client's round trip.
    pub group_wait: Duration,
    /// Maximum statements in one batch request.
    pub max_batch_statements: usize,
    /// Maximum parameters of one statement (SQLite's own default limit).
    pub max_params: usize,
    /// Maximum rows one request may return.
    pub max_rows: usize,
    /// Maximum clients connected at once.
    pub max_clients: usize,
    /// How long a client may take to send the rest of a started frame, or to
    /// accept an answer, before it is disconnected.
    pub io_timeout: Duration,
    /// Time allowed for the handshake after connecting.
    pub handshake_timeout: Duration,
    /// Other user ids allowed to connect (Unix; the broker's own uid always is).
    pub allow_uids: Vec<u32>,
    /// WAL size above which the broker warns (log and `stats`).
    pub wal_warn_bytes: u64,
    /// Idle time after the last commit before the broker runs a TRUNCATE checkpoint.
    pub idle_checkpoint_after: Duration,
    /// How long request ids are kept for exactly-once writes; None disables them.
    pub request_id_retention: Option<Duration>,
    /// Most memory SQLite may take in the broker process, in bytes (its hard heap
    /// limit): a statement needing more fails instead of growing the broker.
    pub max_memory: u64,
    /// Most events the change feed's ring keeps for subscribers that resume
    /// (`since`).
    pub feed_ring_events: usize,
    /// Most bytes (estimated) the ring keeps.
    pub feed_ring_bytes: usize,
    /// Most events waiting for one subscriber before its backlog is dropped and
    /// it gets a resync.
    pub watch_buffer_events: usize,
    /// Most rowids listed per table and transaction in a change event.
    pub feed_rowids_cap: usize,
    /// Where to serve `GET /metrics` (a loopback address; port 0: one the system
    /// picks), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Off-machine replication through a supervised Litestream (`--replicate`).
    pub replication: Option<crate::replication::config::Replication>,
}

impl Config {
    /// Defaults for `db`.
    pub fn new(db: impl Into<PathBuf>) -> Config {
        Config {
            db: db.into(),
            socket: None,
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_millis(5000),
            lock_retries: 3,
            retry_base: Duration::from_millis(500),
            retry_cap: Duration::from_secs(5),
            default_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(30),
            max_statement_time: Duration::from_secs(30),
            max_frame: DEFAULT_MAX_FRAME,
            max_group_requests: 512,
            max_group_bytes: 8 * 1024 * 1024,
            group_wait: Duration::ZERO,
            max_batch_statements: 250_000,
            max_params: 32_766,
            max_rows: 100_000,
            max_clients: 512,
            io_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            allow_uids: Vec::new(),
            wal_warn_bytes: crate::ops::DEFAULT_WAL_WARN_BYTES,
            idle_checkpoint_after: Duration::from_secs(1),
            request_id_retention: Some(Duration::from_secs(24 * 3600)),
            max_memory: 1024 * 1024 * 1024,
            feed_ring_events: 10_000,
            feed_ring_bytes: 16 * 1024 * 1024,
            watch_buffer_events: 4096,
            feed_rowids_cap: 1000,
            metrics_listen: None,
            replication: None,
        }
    }

    /// Sets `--group-wait-us` (0 disables the wait).
    ///
    /// # Errors
    /// A value above [`MAX_GROUP_WAIT`]: a wait that long would cost every group
    /// more than any fsync it could save.
    pub fn set_group_wait_us(&mut self, us: u64) -> Result<(), String> {
        let d = Duration::from_micros(us);
        if d > MAX_GROUP_WAIT {
            return Err(format!(
                "--group-wait-us must be at most {} (microseconds; 0 disables the wait), got {us}",
                MAX_GROUP_WAIT.as_micros()
            ));
        }
        self.group_wait = d;
        Ok(())
    }

    /// The backoff delay before retry number `retry` (0-based): base doubling, capped.
    pub fn backoff(&self, retry: u32) -> Duration {
        self.retry_schedule().delay(retry)
    }

    /// The one backoff schedule with this broker's base and cap
    /// (`--retry-base-ms`, `--retry-cap-ms`).
    pub fn retry_schedule(&self) -> Backoff {
        Backoff::new(self.retry_base, self.retry_cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second_up_to_five_seconds() {
        let c = Config::new("x.db");
        let got: Vec<u64> = (0..6).map(|i| c.backoff(i).as_millis() as u64).collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(c.backoff(40), Duration::from_secs(5));
    }

    #[test]
    fn the_group_wait_is_off_unless_configured_and_bounded() {
        let mut c = Config::new("x.db");
        c.synchronous = Synchronous::Full;
        assert_eq!(c.group_wait, Duration::ZERO);
        c.set_group_wait_us(250).unwrap();
        assert_eq!(c.group_wait, Duration::from_micros(250));
        let e = c.set_group_wait_us(100_001).unwrap_err();
        assert!(e.contains("--group-wait-us") && e.contains("100000"), "{e}");
        assert_eq!(c.group_wait, Duration::from_micros(250));
        c.set_group_wait_us(0).unwrap();
        assert_eq!(c.group_wait, Duration::ZERO);
    }
}
