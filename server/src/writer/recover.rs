//! Recovering from a failure inside the broker (a panic) while it ran a request.
//!
//! What the request did is rolled back, a write session it was part of is
//! forgotten (its client later gets `lease_expired`), and the writer serves on;
//! the request's caller is told by its job's `Drop` (`crate::job`). When the
//! failure came after a COMMIT whose callers were not all answered, or the
//! connection cannot be rolled back, nothing can be said for sure: the broker
//! exits at once with code 1 (its supervisor restarts it; clients resend with
//! their request ids and learn the outcome).

use super::core::Core;
use super::session::Sessions;
use crate::job::in_doubt;
use crate::shared::session_state;

/// Puts the writer back in order after a failure (see the module's doc). The
/// caller forgets the running group's scratch.
pub(super) fn recover(core: &mut Core, sessions: &mut Sessions) {
    if in_doubt() {
        tracing::error!(
            "internal failure after a COMMIT whose callers were not all answered; exiting so that \
             they learn the outcome by resending"
        );
        eprintln!("litebrokerd: internal failure after a commit; exiting");
        std::process::exit(1);
    }
    tracing::error!("internal failure while running a request; rolling it back and serving on");
    core.db.arm_deadline(None);
    if sessions.is_active() {
        sessions.drop_session(core, session_state::EXPIRED);
    }
    if !core.db.is_autocommit() && core.db.rollback().is_err() {
        tracing::error!("cannot roll back after an internal failure; exiting");
        eprintln!("litebrokerd: cannot roll back after an internal failure; exiting");
        std::process::exit(1);
    }
    core.verify_clean();
}
