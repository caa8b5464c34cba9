//! Windows-only parts of the broker: the named pipe's security descriptor, which
//! admits the broker's own user and nobody else.
//!
//! A named pipe lives in one machine-wide namespace (`\\.\pipe\`), unlike the
//! Unix socket, which sits in a private 0700 folder. Its access check is its DACL:
//! the broker creates every instance of its pipe with
//! `O:<user SID>D:P(A;;GA;;;<user SID>)` — owned by the current user, a protected
//! DACL (nothing inherited) with a single entry granting that user full access.
//! Other users, services and anonymous callers get "access denied" when they open
//! the pipe. `interprocess` also creates the first instance with
//! `FILE_FLAG_FIRST_PIPE_INSTANCE` (a pipe someone else created first makes the
//! bind fail instead of joining it) and `PIPE_REJECT_REMOTE_CLIENTS`.

use std::io;

use interprocess::os::windows::security_descriptor::SecurityDescriptor;
use litebroker_protocol::host::current_user_sid;
use widestring::U16CString;

/// The SDDL of a pipe that only `sid` may open: owner `sid`, a protected DACL
/// with one entry granting `sid` full access.
pub fn owner_only_sddl(sid: &str) -> String {
    format!("O:{sid}D:P(A;;GA;;;{sid})")
}

/// A security descriptor from its SDDL text.
///
/// # Errors
/// When the text is not valid SDDL.
pub fn descriptor_from_sddl(sddl: &str) -> io::Result<SecurityDescriptor> {
    let wide = U16CString::from_str(sddl).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    SecurityDescriptor::deserialize(&wide)
}

/// The security descriptor of the broker's pipe: the current user only.
///
/// # Errors
/// When the user's SID cannot be read or the descriptor not built.
pub fn pipe_security_descriptor() -> io::Result<SecurityDescriptor> {
    descriptor_from_sddl(&owner_only_sddl(&current_user_sid()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::windows::io::AsRawHandle;
    use std::ptr;

    use interprocess::local_socket::prelude::*;
    use interprocess::local_socket::{GenericNamespaced, ListenerOptions, Stream};
    use interprocess::os::windows::local_socket::ListenerOptionsExt;
    use widestring::U16CStr;
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::Security::Authorization::{
        ConvertSecurityDescriptorToStringSecurityDescriptorW, GetSecurityInfo, SE_KERNEL_OBJECT,
    };
    use windows_sys::Win32::Security::{DACL_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION};

    /// The owner and DACL of a kernel object, as SDDL.
    fn sddl_of(handle: &impl std::os::windows::io::AsHandle) -> io::Result<String> {
        // SAFETY: out-pointers are freed with LocalFree as documented.
        unsafe {
            let mut sd = ptr::null_mut();
            let info = OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION;
            let rc = GetSecurityInfo(
                handle.as_handle().as_raw_handle(),
                SE_KERNEL_OBJECT,
                info,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                &mut sd,
            );
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc as i32));
            }
            let mut text: *mut u16 = ptr::null_mut();
            let ok =
                ConvertSecurityDescriptorToStringSecurityDescriptorW(sd, 1, info, &mut text, ptr::null_mut());
            LocalFree(sd);
            if ok == 0 {
                return Err(io::Error::last_os_error());
            }
            let s = U16CStr::from_ptr_str(text).to_string_lossy();
            LocalFree(text.cast());
            Ok(s)
        }
    }

    fn unique_pipe(tag: &str) -> String {
        format!("litebroker-test-{tag}-{}-{:?}", std::process::id(), std::time::Instant::now())
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "")
    }

    #[test]
    fn the_pipe_carries_the_owner_only_descriptor() {
        let sid = current_user_sid().unwrap();
        let name = unique_pipe("sd");
        let listener = ListenerOptions::new()
            .name(name.as_str().to_ns_name::<GenericNamespaced>().unwrap())
            .security_descriptor(pipe_security_descriptor().unwrap())
            .create_sync()
            .unwrap();
        let client = Stream::connect(name.as_str().to_ns_name::<GenericNamespaced>().unwrap()).unwrap();
        let server = listener.accept().unwrap();
        let Stream::NamedPipe(pipe) = &server;
        let seen = sddl_of(pipe).unwrap();
        assert_eq!(seen, owner_only_sddl(&sid), "server end of the pipe");
        drop(client);
    }

    #[test]
    #[cfg_attr(litebroker_wine, ignore = "Wine 8 stores a pipe's DACL but does not enforce it on open")]
    fn a_pipe_for_another_user_refuses_this_one() {
        // Only the built-in Guests group may open this pipe: this user is denied,
        // which shows the descriptor is applied and enforced, not just stored.
        let name = unique_pipe("deny");
        let _listener = ListenerOptions::new()
            .name(name.as_str().to_ns_name::<GenericNamespaced>().unwrap())
            .security_descriptor(descriptor_from_sddl("D:P(A;;GA;;;BG)").unwrap())
            .create_sync()
            .unwrap();
        let err = Stream::connect(name.as_str().to_ns_name::<GenericNamespaced>().unwrap())
            .expect_err("a pipe of another user must refuse the connection");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    }
}
