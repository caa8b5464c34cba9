//! Taking a mutex whatever happened to its last holder.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex, recovering from poisoning: the data behind the broker's
/// mutexes stays consistent even if a holder panicked, and the broker must keep
/// serving.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
