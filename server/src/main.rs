//! `litebrokerd`: serve one SQLite database's writes to many processes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use litebroker_server::{run, BrokerError, Config, StopReason, Synchronous};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SyncArg {
    Normal,
    Full,
}

/// The broker for one SQLite database: the only writer, serving writes from many
/// app instances over a local socket (named pipe on Windows).
///
/// Exit codes: 0 clean shutdown, 1 other failure, 2 usage or configuration error,
/// 3 another broker already serves this database.
#[derive(Debug, Parser)]
#[command(name = "litebrokerd", version)]
struct Args {
    /// The database file; created with its folder when missing.
    #[arg(long, env = "LITEBROKER_DB", default_value = litebroker_protocol::rendezvous::DEFAULT_DB)]
    db: PathBuf,
    /// Socket path (Unix) or pipe name (Windows); derived from the database path by default.
    #[arg(long)]
    socket: Option<String>,
    /// PRAGMA synchronous: `full` makes every acknowledged write survive power loss.
    #[arg(long, value_enum, default_value = "normal")]
    synchronous: SyncArg,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// SQLite busy_timeout before the first retry, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    busy_timeout_ms: u64,
    /// Retries after the first attempt while another process holds the database lock.
    #[arg(long, default_value_t = 3)]
    lock_retries: u32,
    /// First backoff delay in milliseconds (doubling each retry).
    #[arg(long, default_value_t = 500)]
    retry_base_ms: u64,
    /// Backoff cap in milliseconds.
    #[arg(long, default_value_t = 5000)]
    retry_cap_ms: u64,
    /// Longest a write session may hold the writer before it is rolled back, in seconds.
    #[arg(long, default_value_t = 30.0)]
    lease_secs: f64,
    /// Longest a single statement may run before it is interrupted, in seconds.
    #[arg(long, default_value_t = 30.0)]
    max_statement_secs: f64,
    /// Timeout of requests that state none, in seconds.
    #[arg(long, default_value_t = 30.0)]
    default_timeout_secs: f64,
    /// Maximum frame size in bytes (both directions).
    #[arg(long, default_value_t = litebroker_protocol::DEFAULT_MAX_FRAME)]
    max_frame_bytes: u32,
    /// Maximum requests committed together in one transaction.
    #[arg(long, default_value_t = 512)]
    max_group_requests: usize,
    /// Longest wait, in microseconds, before a group's transaction begins for the
    /// writers known to be coming (clients the last groups answered), so that they
    /// join it and share its COMMIT: for `--synchronous full` on a disk whose flush is
    /// slow next to a client's round trip. Adaptive (at most half a recent COMMIT),
    /// never for a lone writer; 0 (the default) turns it off; at most 100000.
    #[arg(long, value_name = "MAX", default_value_t = 0)]
    group_wait_us: u64,
    /// Maximum statements in one batch request.
    #[arg(long, default_value_t = 250_000)]
    max_batch_statements: usize,
    /// Maximum parameters of one statement.
    #[arg(long, default_value_t = 32_766)]
    max_params: usize,
    /// Maximum rows one request may return.
    #[arg(long, default_value_t = 100_000)]
    max_rows: usize,
    /// Maximum clients connected at once.
    #[arg(long, default_value_t = 512)]
    max_clients: usize,
    /// Seconds a client may take to finish a started frame or to read an answer.
    #[arg(long, default_value_t = 10.0)]
    io_timeout_secs: f64,
    /// WAL size in MB above which the broker warns (log and `stats`): readers pin the WAL.
    #[arg(long, default_value_t = 100.0)]
    wal_warn_mb: f64,
    /// Idle milliseconds after the last commit before the broker truncates the WAL.
    #[arg(long, default_value_t = 1000)]
    idle_checkpoint_ms: u64,
    /// Hours a request id is kept for exactly-once writes (table `_litebroker_requests`);
    /// 0 disables request ids (then writes carrying one run like any other).
    #[arg(long, default_value_t = 24.0)]
    request_id_retention_hours: f64,
    /// Most memory SQLite may use in the broker, in MiB: a statement needing more (a sort
    /// of big rows, a huge value) fails with an "out of memory" error instead.
    #[arg(long, default_value_t = 1024)]
    max_memory_mb: u64,
    /// Most events the change feed's ring keeps, so that a watcher that reconnects with
    /// `--since` gets what it missed.
    #[arg(long, default_value_t = 10_000)]
    feed_ring_events: usize,
    /// Most memory the change feed's ring may take, in MiB.
    #[arg(long, default_value_t = 16)]
    feed_ring_mb: usize,
    /// Most events waiting for one watcher; one further behind has its backlog dropped
    /// and gets a resync.
    #[arg(long, default_value_t = 4096)]
    watch_buffer_events: usize,
    /// Most rowids listed per table and transaction in a change event.
    #[arg(long, default_value_t = 1000)]
    feed_rowids_cap: usize,
    /// Another user id allowed to connect (repeatable); by default only the broker's own user may.
    #[arg(long = "allow-uid")]
    allow_uids: Vec<u32>,
    /// Serve the metrics (Prometheus text format) at http://ADDR/metrics; ADDR is
    /// IP:PORT on a loopback address (127.0.0.1:9899, [::1]:9899, localhost:9899).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Replicate the database off the machine through a supervised Litestream 0.5:
    /// file:///path, s3://bucket/path[?endpoint=URL&region=R&forcePathStyle=true],
    /// sftp://user@host/path, … (one replica: Litestream 0.5 takes one per database).
    /// Credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY;
    /// `${VAR}` in the URL is expanded by Litestream).
    #[arg(long, value_name = "URL")]
    replicate: Option<String>,
    /// The Litestream binary (default: `litestream` on PATH).
    #[arg(long, env = "LITESTREAM", value_name = "PATH")]
    litestream: Option<PathBuf>,
    /// How often Litestream writes new changes to the replica, in seconds.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    replicate_sync_interval: f64,
}

fn secs(name: &str, v: f64) -> Result<Duration, BrokerError> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| BrokerError::Config(format!("--{name} must be a positive number of seconds, got {v}")))
}

fn config(a: Args) -> Result<Config, BrokerError> {
    let mut c = Config::new(a.db);
    c.socket = a.socket;
    c.synchronous = match a.synchronous {
        SyncArg::Normal => Synchronous::Normal,
        SyncArg::Full => Synchronous::Full,
    };
    c.busy_timeout = Duration::from_millis(a.busy_timeout_ms);
    c.lock_retries = a.lock_retries;
    c.retry_base = Duration::from_millis(a.retry_base_ms);
    c.retry_cap = Duration::from_millis(a.retry_cap_ms);
    c.lease = secs("lease-secs", a.lease_secs)?;
    c.max_statement_time = secs("max-statement-secs", a.max_statement_secs)?;
    c.default_timeout = secs("default-timeout-secs", a.default_timeout_secs)?;
    c.io_timeout = secs("io-timeout-secs", a.io_timeout_secs)?;
    if a.max_frame_bytes < 1024 || a.max_frame_bytes > litebroker_protocol::HARD_MAX_FRAME {
        return Err(BrokerError::Config(format!(
            "--max-frame-bytes must be between 1024 and {}, got {}",
            litebroker_protocol::HARD_MAX_FRAME,
            a.max_frame_bytes
        )));
    }
    c.max_frame = a.max_frame_bytes;
    for (name, v) in [
        ("max-group-requests", a.max_group_requests),
        ("max-batch-statements", a.max_batch_statements),
        ("max-rows", a.max_rows),
        ("max-clients", a.max_clients),
    ] {
        if v == 0 {
            return Err(BrokerError::Config(format!("--{name} must be at least 1")));
        }
    }
    c.max_group_requests = a.max_group_requests;
    c.set_group_wait_us(a.group_wait_us).map_err(BrokerError::Config)?;
    for (name, v) in [
        ("feed-ring-events", a.feed_ring_events),
        ("feed-ring-mb", a.feed_ring_mb),
        ("watch-buffer-events", a.watch_buffer_events),
    ] {
        if v == 0 {
            return Err(BrokerError::Config(format!("--{name} must be at least 1")));
        }
    }
    c.feed_ring_events = a.feed_ring_events;
    c.feed_ring_bytes = a.feed_ring_mb.saturating_mul(1024 * 1024);
    c.watch_buffer_events = a.watch_buffer_events;
    c.feed_rowids_cap = a.feed_rowids_cap;
    c.max_batch_statements = a.max_batch_statements;
    c.max_params = a.max_params;
    c.max_rows = a.max_rows;
    c.max_clients = a.max_clients;
    c.allow_uids = a.allow_uids;
    if let Some(url) = a.replicate {
        let mut r = litebroker_server::replication::Replication::new(url);
        r.program = a.litestream;
        r.sync_interval = secs("replicate-sync-interval", a.replicate_sync_interval)?;
        c.replication = Some(r);
    }
    if a.max_memory_mb < 16 {
        return Err(BrokerError::Config(format!(
            "--max-memory-mb must be at least 16, got {}",
            a.max_memory_mb
        )));
    }
    c.max_memory = a.max_memory_mb.saturating_mul(1024 * 1024);
    if !(a.wal_warn_mb.is_finite() && a.wal_warn_mb >= 0.0) {
        return Err(BrokerError::Config(format!(
            "--wal-warn-mb must be a non-negative number, got {}",
            a.wal_warn_mb
        )));
    }
    c.wal_warn_bytes = (a.wal_warn_mb * 1e6) as u64;
    c.idle_checkpoint_after = Duration::from_millis(a.idle_checkpoint_ms.max(1));
    c.metrics_listen = a
        .metrics_listen
        .as_deref()
        .map(litebroker_server::parse_metrics_listen)
        .transpose()
        .map_err(BrokerError::Config)?;
    c.request_id_retention = match a.request_id_retention_hours {
        0.0 => None,
        h => Some(secs("request-id-retention-hours", h * 3600.0)?),
    };
    Ok(c)
}

fn main() -> ExitCode {
    bound_freed_memory();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // A file-size limit (RLIMIT_FSIZE) must surface as a write error, not kill the
    // broker with SIGXFSZ.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let result = config(args).and_then(|c| {
        run(c, |ready| {
            let stopper = ready.stopper.clone();
            static SIGNALS: AtomicU32 = AtomicU32::new(0);
            let installed = ctrlc::set_handler(move || {
                if SIGNALS.fetch_add(1, Ordering::SeqCst) == 0 {
                    stopper.stop(StopReason::Signal);
                } else {
                    eprintln!("litebrokerd: second signal, exiting at once");
                    std::process::exit(1);
                }
            });
            if let Err(e) = installed {
                tracing::warn!("cannot install the signal handler: {e}");
            }
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("litebrokerd: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Makes large buffers (frames of up to --max-frame-bytes, their decoded values,
/// SQLite's big allocations) go back to the system when freed. glibc otherwise
/// raises its mmap threshold after the first such free and keeps later ones in
/// per-thread arenas, so a few clients sending big frames would leave the broker's
/// memory at its peak for good.
fn bound_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
