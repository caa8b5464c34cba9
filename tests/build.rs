//! Tells the integration tests whether they were built by root: tests that run
//! processes as other users (setpriv) are then marked ignored, with their reason,
//! instead of silently returning early.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(litebroker_not_root)");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_CFG_UNIX").is_none() {
        return;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        println!("cargo::rustc-cfg=litebroker_not_root");
    }
}
