//! Request ids for exactly-once writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use litebroker_protocol::RequestId;

/// A fresh 128-bit request id: 64 random bits drawn once per process, then a
/// per-process counter. Unique across processes (the random half) and within one
/// (the counter), without a system call per id.
pub fn new_request_id() -> RequestId {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        getrandom::u64().unwrap_or_else(|_| {
            // No OS randomness: pid and time still separate processes.
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            (u64::from(std::process::id()) << 32) ^ t.as_nanos() as u64
        })
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&prefix.to_le_bytes());
    id[8..].copy_from_slice(&n.to_le_bytes());
    id
}

/// A random fraction in [0.5, 1) to spread reconnect attempts of many clients.
pub(crate) fn jitter() -> f64 {
    let r = getrandom::u32().unwrap_or(u32::MAX / 2);
    0.5 + f64::from(r) / f64::from(u32::MAX) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_in_a_process() {
        let ids: std::collections::HashSet<RequestId> = (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        let j = jitter();
        assert!((0.5..1.0).contains(&j));
    }
}
