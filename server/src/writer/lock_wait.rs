//! Waiting out another process's lock on the database (the sqlite3 CLI, a backup
//! tool, an app writing behind the broker's back).
//!
//! `BEGIN IMMEDIATE` first waits with SQLite's busy_timeout (`--busy-timeout-ms`,
//! 5 s); while the database stays locked, it is tried again after a backoff of
//! `--retry-base-ms` (0.5 s) doubling up to `--retry-cap-ms` (5 s), at most
//! `--lock-retries` (3) times, and never past the deadline of the work waiting
//! for it (the latest deadline of a group). Then the waiters get the typed
//! "Database is locked" error (`texts::locked`), with nothing applied.

use std::sync::atomic::Ordering;
use std::time::Instant;

use litebroker_protocol::{ErrorInfo, ErrorKind};
use tracing::warn;

use super::db::WriterDb;
use crate::shared::Shared;
use crate::sql::exec::sql_error;
use crate::texts;

/// `BEGIN IMMEDIATE`, waiting for locks held by other processes (see the module's
/// doc) within `deadline`.
///
/// # Errors
/// `locked` when the lock outlasted the wait; SQLite's error otherwise.
pub(super) fn begin_immediate(
    db: &mut WriterDb,
    shared: &Shared,
    deadline: Instant,
) -> Result<(), ErrorInfo> {
    let cfg = &shared.config;
    let started = Instant::now();
    let mut retry = 0u32;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        db.set_busy_timeout(cfg.busy_timeout.min(remaining));
        let e = match db.begin() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let info = sql_error(&e);
        if info.kind != ErrorKind::Locked {
            return Err(info);
        }
        let counters = &shared.counters;
        if retry == 0 {
            counters.lock_waits.fetch_add(1, Ordering::Relaxed);
        }
        let delay = cfg.backoff(retry);
        if retry >= cfg.lock_retries || Instant::now() + delay >= deadline {
            let attempts = retry + 1;
            warn!(
                attempts,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "database locked by another process; giving up"
            );
            let wait = texts::LockWait {
                attempts,
                elapsed: started.elapsed(),
                busy_timeout: cfg.busy_timeout,
                retry_base: cfg.retry_base,
                retry_cap: cfg.retry_cap,
            };
            return Err(texts::locked(&shared.db_path, &wait));
        }
        retry += 1;
        counters.lock_retries.fetch_add(1, Ordering::Relaxed);
        warn!(
            attempt = retry,
            max_attempts = cfg.lock_retries,
            delay_ms = delay.as_millis() as u64,
            "database locked by another process; retry {retry} of {} in {} ms",
            cfg.lock_retries,
            delay.as_millis()
        );
        std::thread::sleep(delay);
    }
}
