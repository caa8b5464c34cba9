//! The broker process's own figures, read when a report is made: resident memory
//! and open file descriptors (handles on Windows), and the limit of the latter.
//!
//! Linux reads `/proc/self` (as Prometheus' own client libraries do); Windows asks
//! the process's working set and handle count (kernel32, through the
//! `windows-sys` the broker already links). Other systems (macOS, the BSDs) have
//! no cheap way to read the current figures without more bindings: the families
//! are left out there.

/// What the process uses now; None where the system does not tell cheaply.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ProcessFigures {
    /// Resident set size (Windows: working set), bytes.
    pub(super) resident_bytes: Option<u64>,
    /// Open file descriptors (Windows: handles).
    pub(super) open_fds: Option<u64>,
    /// The most file descriptors the process may open (its soft limit).
    pub(super) max_fds: Option<u64>,
}

/// Reads the figures of this process.
#[cfg(target_os = "linux")]
pub(super) fn read() -> ProcessFigures {
    let resident_bytes = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line["VmRSS:".len()..].split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024)
    });
    // The listing's own descriptor, open while it is read, is not counted.
    let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count().saturating_sub(1) as u64);
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given.
    let max_fds = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0)
        .then_some(limit.rlim_cur)
        .filter(|&n| n != libc::RLIM_INFINITY);
    ProcessFigures { resident_bytes, open_fds, max_fds }
}

/// Reads the figures of this process.
#[cfg(windows)]
pub(super) fn read() -> ProcessFigures {
    use windows_sys::Win32::System::ProcessStatus::{K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS};
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessHandleCount};
    // SAFETY: the pseudo-handle of the current process needs no closing; both
    // calls write only into the structs they are given, of the size stated.
    unsafe {
        let me = GetCurrentProcess();
        let mut mem: PROCESS_MEMORY_COUNTERS = std::mem::zeroed();
        let size = std::mem::size_of::<PROCESS_MEMORY_COUNTERS>() as u32;
        mem.cb = size;
        let resident_bytes =
            (K32GetProcessMemoryInfo(me, &mut mem, size) != 0).then_some(mem.WorkingSetSize as u64);
        let mut handles = 0u32;
        let open_fds = (GetProcessHandleCount(me, &mut handles) != 0).then_some(u64::from(handles));
        ProcessFigures { resident_bytes, open_fds, max_fds: None }
    }
}

/// Reads the figures of this process (none here: see the module's doc).
#[cfg(not(any(target_os = "linux", windows)))]
pub(super) fn read() -> ProcessFigures {
    ProcessFigures::default()
}
