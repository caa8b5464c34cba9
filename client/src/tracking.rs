//! Connection tracking ([`active_connections_count`]): every open [`crate::Client`]
//! and [`crate::Reader`] of this process is counted, so a leak shows as a count that
//! never returns to zero.

use std::sync::atomic::{AtomicUsize, Ordering};

static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Broker connections and readers open in this process now.
pub fn active_connections_count() -> usize {
    ACTIVE.load(Ordering::SeqCst)
}

/// Counts one open connection for as long as it lives.
#[derive(Debug)]
pub(crate) struct Tracked(());

impl Tracked {
    pub(crate) fn new() -> Tracked {
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        Tracked(())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}
