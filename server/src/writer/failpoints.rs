//! Fault injection for the tests of what the broker promises when it fails, from
//! `LITEBROKER_FAILPOINT` (inert unless set):
//!
//! - `crash-after-commit:N` aborts the process right after the Nth committed
//!   group, before answering (the "answer lost after commit" case a `kill -9` only
//!   hits by chance);
//! - `panic-after-commit:N` fails there instead, as a bug would;
//! - `panic-on-sql:TEXT` fails while running a request whose SQL contains TEXT.

use crate::job::WriteBody;

/// The failpoints set for this process.
#[derive(Debug, Default)]
pub(super) struct Failpoints {
    crash_after_commit: Option<u64>,
    panic_after_commit: Option<u64>,
    panic_on_sql: Option<String>,
}

impl Failpoints {
    /// The failpoint `LITEBROKER_FAILPOINT` names, if any.
    pub(super) fn from_env() -> Failpoints {
        let mut f = Failpoints::default();
        let Ok(v) = std::env::var("LITEBROKER_FAILPOINT") else { return f };
        let count = |n: &str| n.parse::<u64>().ok().filter(|n| *n > 0);
        if let Some(n) = v.strip_prefix("crash-after-commit:") {
            f.crash_after_commit = count(n);
        } else if let Some(n) = v.strip_prefix("panic-after-commit:") {
            f.panic_after_commit = count(n);
        } else if let Some(text) = v.strip_prefix("panic-on-sql:") {
            f.panic_on_sql = Some(text.to_owned());
        }
        f
    }

    /// Called after a group's COMMIT, before its callers are answered.
    pub(super) fn after_commit(&mut self) {
        let due = |n: &mut Option<u64>| {
            n.as_mut().is_some_and(|n| {
                *n = n.saturating_sub(1);
                *n == 0
            })
        };
        if due(&mut self.crash_after_commit) {
            eprintln!("litebrokerd: failpoint crash-after-commit reached; aborting before answering");
            std::process::abort();
        }
        if due(&mut self.panic_after_commit) {
            panic!("failpoint panic-after-commit reached");
        }
    }

    /// Called before a request's statements run.
    pub(super) fn before_sql(&self, body: &WriteBody) {
        if let Some(text) = &self.panic_on_sql {
            if body.statements().any(|s| s.sql.contains(text.as_str())) {
                panic!("failpoint panic-on-sql reached");
            }
        }
    }
}
