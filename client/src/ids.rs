//! Request ids for exactly-once writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use litebroker_protocol::RequestId;

/// A fresh 128-bit request id, laid out like a UUIDv7: the current Unix time in
/// milliseconds (48 bits, big-endian), then 40 random bits drawn once per process,
/// then a 40-bit per-process counter.
///
/// The time prefix is what the broker's retention reads (records older than
/// `--request-id-retention-hours` are pruned by it), and it makes new records land
/// at the end of the broker's table rather than on random pages. The random part
/// keeps processes apart, the counter keeps ids of one process apart, without a
/// system call per id. An application may send its own ids instead (a UUIDv7 fits).
pub fn new_request_id() -> RequestId {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| {
        getrandom::u64().unwrap_or_else(|_| {
            // No OS randomness: pid and time still separate processes.
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            (u64::from(std::process::id()) << 20) ^ t.as_nanos() as u64
        })
    });
    let ms = litebroker_protocol::host::unix_ms();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    id[6..11].copy_from_slice(&process.to_be_bytes()[3..]);
    id[11..].copy_from_slice(&n.to_be_bytes()[3..]);
    id
}

/// The Unix time in milliseconds at the start of an id made by [`new_request_id`].
pub fn request_id_millis(id: &RequestId) -> u64 {
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(&id[..6]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_time_ordered_and_carry_their_time() {
        let before = litebroker_protocol::host::unix_ms();
        let ids: Vec<RequestId> = (0..10_000).map(|_| new_request_id()).collect();
        let after = litebroker_protocol::host::unix_ms();
        let set: std::collections::HashSet<RequestId> = ids.iter().copied().collect();
        assert_eq!(set.len(), 10_000);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids of one process sort in creation order");
        let t = request_id_millis(&ids[0]);
        assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
    }
}
