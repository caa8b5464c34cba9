//! [`retry_on_locked`]: retry with exponential backoff, only where a retry cannot
//! apply a write twice.
//!
//! # Idempotency rules
//! - **Reads** are always safe to retry.
//! - An **UPSERT with a unique key**
//!   (`INSERT … ON CONFLICT(date, sku) DO UPDATE SET qty = excluded.qty`) is
//!   idempotent: mark it [`Idempotency::Idempotent`].
//! - A plain `INSERT` without a unique constraint, or a relative update such as
//!   `qty = qty + 1`, is **not**: applied twice it duplicates or double-counts. Such
//!   requests are retried only when the failure proves the broker never saw them
//!   (no broker listening, or the connection broke before the request was sent).
//! - Such a write **with a request id** kept across attempts
//!   ([`Idempotency::WithRequestId`]) may be retried like an idempotent one: the
//!   broker records the id in the same transaction as the write and answers a
//!   repeat from that record instead of applying it again.
//! - Other errors (SQL errors, constraint violations) are returned at once: a retry
//!   would fail the same way.
//!
//! Beware the usual sales UPSERT, `ON CONFLICT(date, sku) DO UPDATE SET
//! qty = qty + excluded.qty`: it adds on every application, so it is *not*
//! idempotent. Send it like any other write (with [`crate::Client::execute`] it gets
//! a request id and is exactly-once), not with `execute_idempotent`.
//!
//! The broker already retries locks held by other processes itself (busy_timeout,
//! then the same backoff); a "locked" answer that reaches the client means the lock
//! outlasted that schedule, and nothing of the request was applied.

use std::time::Duration;

use litebroker_protocol::backoff::Backoff;
use litebroker_protocol::ErrorKind;

use crate::error::{ClientError, Result};

/// Backoff schedule: `base_delay` doubling per retry, capped at `max_delay`.
/// The defaults: 3 retries, after 0.5 s, 1 s and 2 s (doubling, capped at 5 s), the
/// schedule the broker itself follows for another process's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (default 3).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub base_delay: Duration,
    /// Longest delay between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based): 0.5 s, 1 s, 2 s, 4 s, 5 s, 5 s…
    pub fn delay(&self, retry: u32) -> Duration {
        Backoff::new(self.base_delay, self.max_delay).delay(retry.saturating_sub(1))
    }
}

/// What the retried operation does, which decides what may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Only reads.
    Read,
    /// A write whose repetition has no further effect (UPSERT with a unique key).
    Idempotent,
    /// A write that must not be applied twice (plain INSERT, `qty = qty + 1`).
    NonIdempotent,
    /// A write that must not be applied twice, sent with the same request id on
    /// every attempt ([`crate::new_request_id`] once, then
    /// [`crate::Client::execute_with`]): the broker records the id with the write
    /// and answers a repeat from that record, so retrying is safe.
    WithRequestId,
}

/// Whether `err` may be retried for an operation of kind `what`.
pub fn is_retryable(err: &ClientError, what: Idempotency) -> bool {
    if err.never_reached_broker() {
        return true;
    }
    let transient = err.is_locked()
        || matches!(err.kind(), Some(ErrorKind::Timeout | ErrorKind::ShuttingDown))
        || matches!(err, ClientError::ConnectionLost { .. });
    transient && what != Idempotency::NonIdempotent
}

/// Runs `op` and retries it on the failures that [`is_retryable`] allows, sleeping
/// the policy's backoff between attempts and logging each retry on stderr through
/// `tracing`. `op` gets the attempt number (1-based); it should open a fresh
/// connection when the previous one broke.
///
/// ```no_run
/// use litebroker_client::{retry_on_locked, ConnectionFactory, Idempotency, RetryPolicy};
/// let factory = ConnectionFactory::new("data/app.db");
/// let n = retry_on_locked(&RetryPolicy::default(), Idempotency::Read, |_| {
///     factory.reader()?.query_value("SELECT count(*) FROM skus", &[])
/// })?;
/// # Ok::<(), litebroker_client::ClientError>(())
/// ```
///
/// # Errors
/// The last error once the retries are used up, or the first error that may not be
/// retried.
pub fn retry_on_locked<T>(
    policy: &RetryPolicy,
    what: Idempotency,
    mut op: impl FnMut(u32) -> Result<T>,
) -> Result<T> {
    let mut attempt = 1;
    loop {
        match op(attempt) {
            Ok(v) => return Ok(v),
            Err(e) if attempt <= policy.max_attempts && is_retryable(&e, what) => {
                let delay = policy.delay(attempt);
                tracing::warn!(
                    attempt,
                    max_attempts = policy.max_attempts,
                    delay_ms = delay.as_millis() as u64,
                    "retrying after: {e}"
                );
                std::thread::sleep(delay);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use litebroker_protocol::ErrorInfo;
    use std::cell::Cell;

    fn locked() -> ClientError {
        ClientError::Broker(ErrorInfo::new(ErrorKind::Locked, "locked"))
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[test]
    fn the_default_schedule_doubles_from_half_a_second_up_to_5_s() {
        let p = RetryPolicy::default();
        let got: Vec<u128> = (1..=6).map(|r| p.delay(r).as_millis()).collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn reads_and_idempotent_writes_retry_then_give_up() {
        for what in [Idempotency::Read, Idempotency::Idempotent] {
            let calls = Cell::new(0);
            let r: Result<()> = retry_on_locked(&fast(), what, |_| {
                calls.set(calls.get() + 1);
                Err(locked())
            });
            assert!(r.unwrap_err().is_locked());
            assert_eq!(calls.get(), 4, "first try + 3 retries");
        }
        let calls = Cell::new(0);
        let r = retry_on_locked(&fast(), Idempotency::Read, |attempt| {
            calls.set(calls.get() + 1);
            if attempt < 3 {
                Err(locked())
            } else {
                Ok(attempt)
            }
        });
        assert_eq!(r.unwrap(), 3);
    }

    #[test]
    fn non_idempotent_writes_retry_only_when_never_sent() {
        let calls = Cell::new(0);
        let r: Result<()> = retry_on_locked(&fast(), Idempotency::NonIdempotent, |_| {
            calls.set(calls.get() + 1);
            Err(locked())
        });
        assert!(r.is_err());
        assert_eq!(calls.get(), 1, "a locked non-idempotent write is returned at once");

        let calls = Cell::new(0);
        let r: Result<()> = retry_on_locked(&fast(), Idempotency::NonIdempotent, |_| {
            calls.set(calls.get() + 1);
            Err(ClientError::ConnectionLost { sent: true, reason: "x".into() })
        });
        assert!(r.is_err());
        assert_eq!(calls.get(), 1, "an answer lost after sending may have been applied");

        let calls = Cell::new(0);
        let r: Result<()> = retry_on_locked(&fast(), Idempotency::NonIdempotent, |_| {
            calls.set(calls.get() + 1);
            Err(ClientError::ConnectionLost { sent: false, reason: "x".into() })
        });
        assert!(r.is_err());
        assert_eq!(calls.get(), 4, "never sent: always safe to retry");
    }

    #[test]
    fn writes_with_a_request_id_retry_like_idempotent_ones() {
        let lost = || ClientError::ConnectionLost { sent: true, reason: "x".into() };
        assert!(is_retryable(&lost(), Idempotency::WithRequestId));
        assert!(is_retryable(&locked(), Idempotency::WithRequestId));
        assert!(!is_retryable(&lost(), Idempotency::NonIdempotent));
    }

    #[test]
    fn sql_errors_are_not_retried() {
        let calls = Cell::new(0);
        let r: Result<()> = retry_on_locked(&fast(), Idempotency::Read, |_| {
            calls.set(calls.get() + 1);
            Err(ClientError::Broker(ErrorInfo::new(ErrorKind::Constraint, "UNIQUE")))
        });
        assert!(r.is_err());
        assert_eq!(calls.get(), 1);
    }
}
