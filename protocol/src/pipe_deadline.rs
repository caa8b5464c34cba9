//! Deadlines on named-pipe I/O (Windows), for the client and the broker alike.
//!
//! Named pipes have no I/O timeouts: `interprocess` returns `Unsupported` from the
//! stream's timeout setters on Windows. Deadlines on pipe I/O are therefore
//! enforced by [`PipeDeadline`]: one watchdog thread per process that, once an
//! armed deadline has passed, cancels the pending I/O on that pipe handle
//! (`CancelIoEx`) and, for the broker's end of a pipe, disconnects the client
//! (`DisconnectNamedPipe`). The blocked read or write then returns an error (or
//! end of file) on its own thread, and the connection is closed there.
//!
//! What it guarantees: a thread blocked in a read or write on an armed pipe
//! handle returns within the deadline plus the watchdog's reaction time (well
//! under a second); an I/O started after the deadline passed fails at once on the
//! broker's side (the pipe is disconnected), and is cancelled again on the next
//! retry tick on the client's side. A handle is never touched after it was
//! released: release and cancellation exclude each other through the slot's lock.

use std::os::windows::io::{AsHandle, AsRawHandle, RawHandle};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use interprocess::local_socket::Stream;
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::Pipes::DisconnectNamedPipe;
use windows_sys::Win32::System::IO::CancelIoEx;

/// While a fired deadline stays armed, the watchdog cancels again this often, in
/// case an I/O was started after the previous cancellation.
const RETRY: Duration = Duration::from_millis(100);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct SlotState {
    /// The raw pipe handle; `None` once released (the handle may be closed then).
    handle: Option<usize>,
    deadline: Option<Instant>,
    fired: bool,
}

struct Slot {
    state: Mutex<SlotState>,
    /// The pipe name of the broker whose end of a pipe this is (None: a
    /// client's end). A broker's end is disconnected too when its deadline
    /// passes, so that later I/O fails at once, and at that broker's shutdown.
    server_of: Option<String>,
}

impl Slot {
    /// Cancels the handle's pending I/O; called by the watchdog with the lock held.
    fn fire(&self, st: &mut SlotState) {
        let Some(h) = st.handle else { return };
        let h = h as HANDLE;
        // SAFETY: the handle is valid: it is only closed after `release`, which
        // takes this slot's lock, held here.
        unsafe {
            if self.server_of.is_some() {
                DisconnectNamedPipe(h);
            }
            CancelIoEx(h, std::ptr::null());
        }
        st.fired = true;
    }
}

struct Registry {
    slots: Mutex<Watch>,
    wake: Condvar,
}

struct Watch {
    slots: Vec<Weak<Slot>>,
    /// When the watchdog will next look (None: it sleeps until notified).
    next: Option<Instant>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<&'static Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let reg: &'static Registry = Box::leak(Box::new(Registry {
            slots: Mutex::new(Watch { slots: Vec::new(), next: None }),
            wake: Condvar::new(),
        }));
        let spawned = thread::Builder::new().name("lb-pipe-watchdog".into()).spawn(move || watchdog(reg));
        if let Err(e) = spawned {
            // Without the thread deadlines are not enforced; say so once.
            eprintln!("litebroker: cannot start the pipe watchdog thread: {e}");
        }
        reg
    })
}

fn watchdog(reg: &'static Registry) {
    let mut watch = lock(&reg.slots);
    loop {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        watch.slots.retain(|w| {
            let Some(slot) = w.upgrade() else { return false };
            let mut st = lock(&slot.state);
            if let Some(deadline) = st.deadline {
                let at = if deadline <= now {
                    slot.fire(&mut st);
                    now + RETRY
                } else {
                    deadline
                };
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            true
        });
        watch.next = next;
        watch = match next {
            None => reg.wake.wait(watch).unwrap_or_else(PoisonError::into_inner),
            Some(at) => {
                let pause = at.saturating_duration_since(Instant::now());
                reg.wake.wait_timeout(watch, pause).unwrap_or_else(PoisonError::into_inner).0
            }
        };
    }
}

/// A deadline on the I/O of one pipe handle (see the module documentation).
///
/// Arm it before a read or write that must finish in time, disarm it after.
/// [`PipeDeadline::release`] (or drop) must happen before the handle is closed:
/// keep the deadline in a field declared before the stream's, or release it
/// explicitly.
pub struct PipeDeadline {
    slot: Arc<Slot>,
}

impl std::fmt::Debug for PipeDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeDeadline").field("server_of", &self.slot.server_of).finish_non_exhaustive()
    }
}

impl PipeDeadline {
    /// Watches the pipe handle of `stream`. `server_of`: the pipe name of the
    /// broker whose end of the pipe this is (None for a client's end); a broker's
    /// end is also disconnected when the deadline passes, and by
    /// [`disconnect_servers`] at that broker's shutdown.
    pub fn new(stream: &Stream, server_of: Option<&str>) -> PipeDeadline {
        let Stream::NamedPipe(pipe) = stream;
        let handle: RawHandle = pipe.as_handle().as_raw_handle();
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState { handle: Some(handle as usize), deadline: None, fired: false }),
            server_of: server_of.map(str::to_owned),
        });
        let mut watch = lock(&registry().slots);
        watch.slots.retain(|w| w.strong_count() > 0);
        watch.slots.push(Arc::downgrade(&slot));
        drop(watch);
        PipeDeadline { slot }
    }

    /// Requires the I/O that follows to finish within `timeout`.
    pub fn arm(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        lock(&self.slot.state).deadline = Some(deadline);
        let reg = registry();
        let watch = lock(&reg.slots);
        let sooner = match watch.next {
            Some(next) => deadline < next,
            None => true,
        };
        if sooner {
            reg.wake.notify_one();
        }
    }

    /// Ends the deadline; true when it had passed and the I/O was cancelled.
    pub fn disarm(&self) -> bool {
        let mut st = lock(&self.slot.state);
        st.deadline = None;
        st.fired
    }

    /// True once a deadline passed and the watchdog cancelled the pipe's I/O.
    pub fn fired(&self) -> bool {
        lock(&self.slot.state).fired
    }

    /// Stops watching the handle; afterwards it may be closed.
    pub fn release(&self) {
        let mut st = lock(&self.slot.state);
        st.handle = None;
        st.deadline = None;
    }
}

impl Drop for PipeDeadline {
    fn drop(&mut self) {
        self.release();
    }
}

/// Disconnects every watched end of the broker serving the pipe name `pipe`
/// now (its shutdown: idle connections blocked in a read end at once, and the
/// pipe name disappears before the single-instance lock is released). Only that
/// broker's: a process may run several (tests do), and stopping one must not cut
/// the others' clients.
pub fn disconnect_servers(pipe: &str) {
    let watch = lock(&registry().slots);
    for slot in watch.slots.iter().filter_map(Weak::upgrade).filter(|s| s.server_of.as_deref() == Some(pipe))
    {
        let mut st = lock(&slot.state);
        slot.fire(&mut st);
    }
}
