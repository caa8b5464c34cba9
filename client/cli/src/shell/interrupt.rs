//! Ctrl-C while a statement runs. The line editor reads keys in raw mode, so
//! Ctrl-C at the prompt is a key it handles (drop the line); while a statement
//! runs the terminal is back in its normal mode and Ctrl-C is a signal, which
//! would end the process and lose the session. Here it stops a local read
//! instead (SQLite's interrupt: the query fails with "interrupted" and the
//! shell goes on), and leaves a write at the broker alone: the broker may have
//! applied it already, so the only honest outcome is its answer.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::InterruptHandle;

/// What is running now.
enum Running {
    Nothing,
    Read(InterruptHandle),
    Write,
}

/// The signal handler's view of the shell; installed once per process, for an
/// interactive shell only (a piped script keeps the default: Ctrl-C ends it).
#[derive(Clone)]
pub(super) struct CtrlC {
    running: Arc<Mutex<Running>>,
}

impl CtrlC {
    /// Installs the handler. `None` when it cannot be (then Ctrl-C ends the
    /// process, as before).
    pub(super) fn install() -> Option<CtrlC> {
        let c = CtrlC { running: Arc::new(Mutex::new(Running::Nothing)) };
        let seen = c.clone();
        ctrlc::set_handler(move || seen.pressed()).ok()?;
        Some(c)
    }

    fn pressed(&self) {
        match &*self.running.lock().unwrap_or_else(PoisonError::into_inner) {
            Running::Nothing => {}
            Running::Read(h) => h.interrupt(),
            Running::Write => eprintln!(
                "\n(a write at the broker cannot be taken back from here: it may be applied \
                 already; waiting for its answer)"
            ),
        }
    }

    /// Runs `f`, a read on the connection `h` interrupts.
    pub(super) fn read<T>(&self, h: InterruptHandle, f: impl FnOnce() -> T) -> T {
        self.during(Running::Read(h), f)
    }

    /// Runs `f`, a write at the broker.
    pub(super) fn write<T>(&self, f: impl FnOnce() -> T) -> T {
        self.during(Running::Write, f)
    }

    fn during<T>(&self, what: Running, f: impl FnOnce() -> T) -> T {
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = what;
        let r = f();
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = Running::Nothing;
        r
    }
}
