//! A shared machine: how much of the CPUs other processes use, and waiting until
//! they leave them nearly idle before a measurement.

use std::time::{Duration, Instant};

/// Share of the machine other processes may use for a measurement to count.
pub const QUIET: f64 = 0.08;

/// Busy and total CPU time of the whole machine so far (from /proc/stat), s.
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal …
    let total: f64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ((total - idle) / hz, total / hz)
}

/// CPU time used by this process and its waited-for children (workers, broker), s.
fn own_cpu() -> f64 {
    let mut sum = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage fills the struct we pass.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut ru) } == 0 {
            for tv in [ru.ru_utime, ru.ru_stime] {
                sum += tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
            }
        }
    }
    sum
}

/// Fraction of the machine other processes used since [`Foreign::start`].
pub struct Foreign {
    machine: (f64, f64),
    own: f64,
}

impl Foreign {
    pub fn start() -> Foreign {
        Foreign { machine: machine_cpu(), own: own_cpu() }
    }

    pub fn fraction(&self) -> f64 {
        let (busy, total) = machine_cpu();
        let (dbusy, dtotal) = (busy - self.machine.0, total - self.machine.1);
        if dtotal <= 0.0 {
            return 0.0;
        }
        ((dbusy - (own_cpu() - self.own)) / dtotal).max(0.0)
    }
}

/// Waits (up to `max`) until other processes leave the machine nearly idle;
/// true when they did.
pub fn wait_quiet(max: Duration) -> bool {
    let deadline = Instant::now() + max;
    loop {
        let f = Foreign::start();
        std::thread::sleep(Duration::from_millis(300));
        if f.fraction() < QUIET {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}
