//! What both ends ask the operating system about the processes, users and files
//! they meet: this process's user, whether the process recorded in a lock file is
//! alive, who created a pipe, how many names a database file has, the wall clock.
//! Each answer has one implementation per platform, here, so that the client, the
//! CLI and the broker judge the same facts the same way.

use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The effective user id of this process (0 on Windows, where it is not used).
pub fn current_uid() -> u32 {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }
    #[cfg(not(unix))]
    {
        0
    }
}

/// Whether process `pid` is still running. A process this user may not signal or
/// open still exists, so it counts as alive; a platform without a check answers
/// alive, which keeps a recorded broker from being taken for gone.
pub fn pid_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        // SAFETY: signal 0 only checks that the process exists.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(windows)]
    {
        windows::pid_alive(pid)
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = pid;
        true
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is set before it).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How many names (hard links) the file at `path` has.
///
/// # Errors
/// When the file cannot be opened or queried.
pub fn link_count(path: &Path) -> io::Result<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::metadata(path)?.nlink())
    }
    #[cfg(windows)]
    {
        windows::link_count(path).map(u64::from)
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = path;
        Ok(1)
    }
}

/// Windows' counterparts of root: LocalSystem and the Administrators group (an
/// elevated administrator's objects are owned by the group).
pub const SYSTEM_SIDS: [&str; 2] = ["S-1-5-18", "S-1-5-32-544"];

/// Whether `sid` is one of the [`SYSTEM_SIDS`]: a pipe the system created is as
/// trustworthy to a process as a socket of root's.
pub fn is_system_sid(sid: &str) -> bool {
    SYSTEM_SIDS.iter().any(|s| sid.eq_ignore_ascii_case(s))
}

#[cfg(windows)]
pub use windows::{current_user_sid, pipe_owner_sid};

#[cfg(windows)]
mod windows {
    use std::io;
    use std::os::windows::io::{AsHandle, AsRawHandle, FromRawHandle, OwnedHandle};
    use std::path::Path;

    use interprocess::local_socket::Stream;
    use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE, STILL_ACTIVE};
    use windows_sys::Win32::Security::Authorization::{
        ConvertSidToStringSidW, GetSecurityInfo, SE_KERNEL_OBJECT,
    };
    use windows_sys::Win32::Security::{
        GetTokenInformation, TokenUser, OWNER_SECURITY_INFORMATION, PSID, TOKEN_QUERY, TOKEN_USER,
    };
    use windows_sys::Win32::Storage::FileSystem::{GetFileInformationByHandle, BY_HANDLE_FILE_INFORMATION};
    use windows_sys::Win32::System::Threading::{
        GetCurrentProcess, GetExitCodeProcess, OpenProcess, OpenProcessToken,
        PROCESS_QUERY_LIMITED_INFORMATION,
    };

    /// Whether process `pid` is still running (an exit code of `STILL_ACTIVE` after
    /// opening it for a query). A process we may not open is assumed alive.
    pub(super) fn pid_alive(pid: u32) -> bool {
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
            let text = if owner.is_null() {
                Err(io::Error::other("the pipe has no owner"))
            } else {
                sid_text(owner)
            };
            LocalFree(sd);
            text
        }
    }

    /// How many names (hard links) the file at `path` has.
    pub(super) fn link_count(path: &Path) -> io::Result<u32> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_finished_one_is_not() {
        assert!(pid_alive(std::process::id()));
        let mut child = if cfg!(windows) {
            std::process::Command::new("cmd").args(["/C", "exit 0"]).spawn().unwrap()
        } else {
            std::process::Command::new("true").spawn().unwrap()
        };
        let pid = child.id();
        child.wait().unwrap();
        drop(child);
        assert!(!pid_alive(pid), "pid {pid} of a reaped process still looks alive");
    }

    #[test]
    fn a_file_with_a_second_name_has_two_links() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.db");
        std::fs::write(&a, b"x").unwrap();
        assert_eq!(link_count(&a).unwrap(), 1);
        std::fs::hard_link(&a, dir.path().join("b.db")).unwrap();
        assert_eq!(link_count(&a).unwrap(), 2);
    }

    #[cfg(windows)]
    fn unique_pipe(tag: &str) -> String {
        format!("litebroker-owner-{tag}-{}-{:?}", std::process::id(), std::time::Instant::now())
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "")
    }

    /// The client's view of a pipe created with `sd` (None: the default descriptor).
    #[cfg(windows)]
    fn owner_seen_by_a_client(
        sd: Option<interprocess::os::windows::security_descriptor::SecurityDescriptor>,
    ) -> io::Result<String> {
        use interprocess::local_socket::prelude::*;
        use interprocess::local_socket::{GenericNamespaced, ListenerOptions, Stream};
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

    #[cfg(windows)]
    #[test]
    fn current_user_sid_is_a_sid() {
        let sid = current_user_sid().unwrap();
        assert!(sid.starts_with("S-1-"), "{sid}");
    }

    #[cfg(windows)]
    #[test]
    fn a_pipe_made_like_the_brokers_is_owned_by_this_user_from_the_client_end() {
        use interprocess::os::windows::security_descriptor::SecurityDescriptor;
        let me = current_user_sid().unwrap();
        // The broker's descriptor (server/src/windows.rs): owner and DACL this user.
        let sddl = widestring::U16CString::from_str(format!("O:{me}D:P(A;;GA;;;{me})")).unwrap();
        let sd = SecurityDescriptor::deserialize(&sddl).unwrap();
        assert_eq!(owner_seen_by_a_client(Some(sd)).unwrap(), me);
    }

    #[cfg(windows)]
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
}
