//! Windows-only pieces shared by the client and the broker.
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

use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, RawHandle};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use interprocess::local_socket::Stream;
use std::os::windows::io::{FromRawHandle, OwnedHandle};
use std::path::Path;
use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE, STILL_ACTIVE};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, GetSecurityInfo, SE_KERNEL_OBJECT,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, TokenUser, OWNER_SECURITY_INFORMATION, PSID, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::Storage::FileSystem::{GetFileInformationByHandle, BY_HANDLE_FILE_INFORMATION};
use windows_sys::Win32::System::Pipes::DisconnectNamedPipe;
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetExitCodeProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
};
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
    /// Disconnect the pipe too (broker side): later I/O fails at once.
    disconnect: bool,
}

impl Slot {
    /// Cancels the handle's pending I/O; called by the watchdog with the lock held.
    fn fire(&self, st: &mut SlotState) {
        let Some(h) = st.handle else { return };
        let h = h as HANDLE;
        // SAFETY: the handle is valid: it is only closed after `release`, which
        // takes this slot's lock, held here.
        unsafe {
            if self.disconnect {
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
        f.debug_struct("PipeDeadline").field("disconnect", &self.slot.disconnect).finish_non_exhaustive()
    }
}

impl PipeDeadline {
    /// Watches the pipe handle of `stream`. `disconnect`: also disconnect the pipe when the
    /// deadline passes (only meaningful on the server end of a pipe).
    pub fn new(stream: &Stream, disconnect: bool) -> PipeDeadline {
        let Stream::NamedPipe(pipe) = stream;
        let handle: RawHandle = pipe.as_handle().as_raw_handle();
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState { handle: Some(handle as usize), deadline: None, fired: false }),
            disconnect,
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

/// Disconnects every watched broker-side pipe of this process now (the broker's
/// shutdown: idle connections blocked in a read end at once, and the pipe name
/// disappears before the single-instance lock is released).
pub fn disconnect_all_servers() {
    let watch = lock(&registry().slots);
    for slot in watch.slots.iter().filter_map(Weak::upgrade).filter(|s| s.disconnect) {
        let mut st = lock(&slot.state);
        slot.fire(&mut st);
    }
}

/// Whether process `pid` is still running (an exit code of `STILL_ACTIVE` after
/// opening it for a query). A process we may not open is assumed alive.
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: plain Win32 calls on a handle we own and close.
    unsafe {
        let h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if h.is_null() {
            return io::Error::last_os_error().kind() == io::ErrorKind::PermissionDenied;
        }
        let mut code = 0u32;
        let ok = GetExitCodeProcess(h, &mut code) != 0;
        CloseHandle(h);
        !ok || code == STILL_ACTIVE as u32
    }
}

/// A SID as text (`S-1-5-…`).
///
/// # Safety
/// `sid` must point to a valid SID.
unsafe fn sid_text(sid: PSID) -> io::Result<String> {
    let mut text: *mut u16 = std::ptr::null_mut();
    if ConvertSidToStringSidW(sid, &mut text) == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut len = 0;
    while *text.add(len) != 0 {
        len += 1;
    }
    let s = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
    LocalFree(text.cast());
    Ok(s)
}

/// The SID of the user this process runs as, e.g. `S-1-5-21-…-1001`.
///
/// # Errors
/// When the process token cannot be queried.
pub fn current_user_sid() -> io::Result<String> {
    // SAFETY: plain Win32 calls; the buffer is sized by the first call, the token
    // handle is owned (closed on drop).
    unsafe {
        let mut token: HANDLE = std::ptr::null_mut();
        if OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) == 0 {
            return Err(io::Error::last_os_error());
        }
        let token = OwnedHandle::from_raw_handle(token);
        let raw = token.as_raw_handle();
        let mut len = 0u32;
        GetTokenInformation(raw, TokenUser, std::ptr::null_mut(), 0, &mut len);
        if len == 0 {
            return Err(io::Error::last_os_error());
        }
        // u64 elements keep the TOKEN_USER suitably aligned.
        let mut buf = vec![0u64; (len as usize).div_ceil(8)];
        if GetTokenInformation(raw, TokenUser, buf.as_mut_ptr().cast(), len, &mut len) == 0 {
            return Err(io::Error::last_os_error());
        }
        let user = &*(buf.as_ptr().cast::<TOKEN_USER>());
        sid_text(user.User.Sid)
    }
}

/// The owner SID of the pipe behind `stream`: the pipe's security descriptor is
/// the one its first instance was created with, so this names whoever created the
/// pipe, from either end.
///
/// # Errors
/// When the system does not report the owner.
pub fn pipe_owner_sid(stream: &Stream) -> io::Result<String> {
    let Stream::NamedPipe(pipe) = stream;
    // SAFETY: the handle is valid for the call; the owner points into `sd`, which is
    // freed with LocalFree after the SID was converted.
    unsafe {
        let mut owner: PSID = std::ptr::null_mut();
        let mut sd = std::ptr::null_mut();
        let rc = GetSecurityInfo(
            pipe.as_handle().as_raw_handle(),
            SE_KERNEL_OBJECT,
            OWNER_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        );
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc as i32));
        }
        let text =
            if owner.is_null() { Err(io::Error::other("the pipe has no owner")) } else { sid_text(owner) };
        LocalFree(sd);
        text
    }
}

/// How many names (hard links) the file at `path` has.
///
/// # Errors
/// When the file cannot be opened or queried.
pub fn link_count(path: &Path) -> io::Result<u32> {
    let file = std::fs::File::open(path)?;
    // SAFETY: a valid handle and a zeroed out-structure the call fills.
    unsafe {
        let mut info: BY_HANDLE_FILE_INFORMATION = std::mem::zeroed();
        if GetFileInformationByHandle(file.as_raw_handle(), &mut info) == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(info.nNumberOfLinks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique_pipe(tag: &str) -> String {
        format!("litebroker-owner-{tag}-{}-{:?}", std::process::id(), std::time::Instant::now())
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "")
    }

    /// The client's view of a pipe created with `sd` (None: the default descriptor).
    fn owner_seen_by_a_client(
        sd: Option<interprocess::os::windows::security_descriptor::SecurityDescriptor>,
    ) -> io::Result<String> {
        use interprocess::local_socket::prelude::*;
        use interprocess::local_socket::{GenericNamespaced, ListenerOptions};
        use interprocess::os::windows::local_socket::ListenerOptionsExt;
        let name = unique_pipe("t");
        let mut opts = ListenerOptions::new().name(name.as_str().to_ns_name::<GenericNamespaced>().unwrap());
        if let Some(sd) = sd {
            opts = opts.security_descriptor(sd);
        }
        let _listener = opts.create_sync().unwrap();
        let client = Stream::connect(name.as_str().to_ns_name::<GenericNamespaced>().unwrap()).unwrap();
        pipe_owner_sid(&client)
    }

    #[test]
    fn a_pipe_made_like_the_brokers_is_owned_by_this_user_from_the_client_end() {
        use interprocess::os::windows::security_descriptor::SecurityDescriptor;
        let me = current_user_sid().unwrap();
        assert!(me.starts_with("S-1-"), "{me}");
        // The broker's descriptor (server/src/windows.rs): owner and DACL this user.
        let sddl = widestring::U16CString::from_str(format!("O:{me}D:P(A;;GA;;;{me})")).unwrap();
        let sd = SecurityDescriptor::deserialize(&sddl).unwrap();
        assert_eq!(owner_seen_by_a_client(Some(sd)).unwrap(), me);
    }

    #[test]
    #[cfg_attr(
        litebroker_wine,
        ignore = "Wine 8 reports no owner for a pipe created without a security descriptor"
    )]
    fn a_pipe_with_the_default_descriptor_is_owned_by_its_creator() {
        let me = current_user_sid().unwrap();
        let owner = owner_seen_by_a_client(None).unwrap();
        // An elevated administrator's objects are owned by the Administrators group.
        assert!(owner == me || owner == "S-1-5-32-544", "owner {owner}, me {me}");
    }

    #[test]
    fn a_file_with_a_second_name_has_two_links() {
        let dir = std::env::temp_dir().join(format!("litebroker-links-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.db");
        std::fs::write(&a, b"x").unwrap();
        assert_eq!(link_count(&a).unwrap(), 1);
        std::fs::hard_link(&a, dir.join("b.db")).unwrap();
        assert_eq!(link_count(&a).unwrap(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn own_process_is_alive_and_a_finished_one_is_not() {
        assert!(pid_alive(std::process::id()));
        let mut child = std::process::Command::new("cmd").args(["/C", "exit 0"]).spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        drop(child);
        assert!(!pid_alive(pid), "pid {pid} of a reaped process still looks alive");
    }
}
