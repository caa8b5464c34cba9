//! The broker connections one [`crate::Db`] shares between its threads: at most
//! `max`, opened when first needed, returned when a call ends (also when it
//! panics), dropped when they broke. Bounded so that an app's threads cannot
//! open a socket each at the broker; a call waits for a freed one up to its
//! deadline.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::options::ConnectOptions;

/// The broker connections a [`Db`] keeps (at most `max`, opened when first
/// needed, dropped when they break).
#[derive(Debug)]
pub(crate) struct Pool {
    state: Mutex<PoolState>,
    freed: Condvar,
    max: usize,
}

#[derive(Debug, Default)]
struct PoolState {
    idle: Vec<Client>,
    open: usize,
}

/// A broker connection taken from the pool; it goes back when dropped (also
/// when the caller panics), unless it broke.
pub(crate) struct Pooled<'a> {
    client: Option<Client>,
    pool: &'a Pool,
}

impl Pooled<'_> {
    pub(crate) fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("a pooled connection is present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(c) = self.client.take() else { return };
        let mut st = lock(&self.pool.state);
        if c.is_broken() {
            st.open -= 1;
        } else {
            st.idle.push(c);
        }
        self.pool.freed.notify_one();
    }
}

impl Pool {
    /// A pool of at most `max` connections, none open yet.
    pub(crate) fn new(max: usize) -> Pool {
        Pool { state: Mutex::new(PoolState::default()), freed: Condvar::new(), max }
    }

    /// A connection for one call: an idle one, a new one while fewer than `max`
    /// are open, or the first one freed before `deadline`.
    pub(crate) fn checkout(&self, opts: &ConnectOptions, deadline: Instant) -> Result<Pooled<'_>> {
        let pool = self;
        let mut st = lock(&pool.state);
        loop {
            if let Some(c) = st.idle.pop() {
                return Ok(Pooled { client: Some(c), pool });
            }
            if st.open < pool.max {
                st.open += 1;
                drop(st);
                return match Client::connect_with(opts) {
                    Ok(c) => Ok(Pooled { client: Some(c), pool }),
                    Err(e) => {
                        lock(&pool.state).open -= 1;
                        pool.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::PoolExhausted(format!(
                    "all {} broker connections of this Db stayed busy until the deadline; raise \
                     DbBuilder::connections or the timeout",
                    pool.max
                )));
            }
            st = pool.freed.wait_timeout(st, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
