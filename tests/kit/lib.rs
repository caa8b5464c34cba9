#![warn(missing_docs)]
//! The test kit: what litebroker's multi-process integration tests (`tests/*.rs`)
//! and the benchmark (`lbbench`) share. The real binaries are started in temp
//! folders and waited for with deadlines, never bare sleeps:
//!
//! - [`Broker`]: a running `litebrokerd`, its log in a file, ready once it logs
//!   `listening on`; [`broker_pids`] and [`NoStrayBrokers`] for the brokers a test
//!   did not start itself (an app's or a CLI's on-demand start; Unix);
//! - [`Proc`]: any other process whose stdout lines are awaited with deadlines
//!   (an `lbtool` client, the `sqlite3` CLI holding a lock), and [`wait_output`]
//!   for one that runs to completion;
//! - [`TestDir`]: a temp folder with a database path in it;
//! - the CLI: [`cli`], [`assert_exit`], and for `--json` output [`json_out`] with
//!   [`error_of`] / [`assert_json_error`];
//! - [`RawConn`]: a raw connection to the broker's socket (or pipe) for tests that
//!   write frames themselves — pipelined, hand-made, hostile — with [`frame_of`],
//!   [`raw_frame`], [`hello`] and [`answer_error`];
//! - the metrics endpoint over plain HTTP ([`http_get`], [`http_exchange`]) and the
//!   samples of its text format ([`samples`]);
//! - a program in a real terminal under tmux ([`Terminal`], Unix);
//! - direct reads of the database ([`query_i64`], [`integrity`], …), the operating
//!   system's facts about a process ([`rss_kib`], [`fd_count`], …), root and other
//!   users ([`require_root`], [`as_user`]), and [`Rng`], the deterministic bytes of
//!   hostile tests.
//!
//! The binaries come from the same target folder as the running test or tool
//! (`target/<profile>/`); `scripts/test.sh` builds them before the tests run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use litebroker_protocol::backoff::Backoff;
pub use tempfile::TempDir;

mod broker;
mod cli;
mod db;
mod http;
mod process;
mod raw;
mod rng;
mod system;
#[cfg(unix)]
mod terminal;

pub use broker::{wait_queued, Broker, READY_TIMEOUT};
pub use cli::{
    assert_exit, assert_json_error, cli, cli_with_stdin, error_of, json_out, json_summary, stderr, stdout,
};
pub use db::{foreign_key_violations, integrity, open_ro, query_i64, query_texts};
pub use http::{http_exchange, http_get, parse_answer, samples, HttpAnswer};
pub use process::{spawn_lbtool, wait_output, Proc};
pub use raw::{answer_error, frame_of, hello, raw_frame, Closed, RawConn};
pub use rng::Rng;
#[cfg(windows)]
pub use system::owner_only_pipe_descriptor;
#[cfg(unix)]
pub use system::{as_user, is_root, require_root, require_setpriv};
pub use system::{fd_count, proc_status_field, rss_kib};
#[cfg(unix)]
pub use terminal::Terminal;
#[cfg(unix)]
pub use {broker::NoStrayBrokers, system::broker_pids};

/// The folder holding the workspace's binaries for the current build profile.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe folder").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary (`litebrokerd`, `litebroker`, `lbtool`).
///
/// # Panics
/// When the binary was not built; the message says how to build it.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`, with `--release` for a \
         release tool; scripts/test.sh and scripts/bench.sh do it)",
        p.display()
    );
    p
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let pauses = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));
    let mut polls = 0;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pauses.delay(polls));
        polls += 1;
    }
}

/// A temp folder with a database path `data/app.db` inside (the folder `data` is
/// left for the broker to create).
pub struct TestDir {
    dir: TempDir,
}

impl TestDir {
    /// A fresh temp folder.
    pub fn new() -> TestDir {
        TestDir::new_in(std::env::temp_dir())
    }

    /// A fresh folder inside `parent` (e.g. the benchmark's work folder).
    pub fn new_in(parent: impl AsRef<Path>) -> TestDir {
        TestDir { dir: tempfile::Builder::new().prefix("lbtest").tempdir_in(parent).expect("tempdir") }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<dir>/data/app.db`.
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("data").join("app.db")
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    /// This folder is the package's root, so cargo finds no test file by itself:
    /// each `*.rs` here must be declared in Cargo.toml, or it would never run.
    #[test]
    fn every_test_file_is_declared_in_the_manifest() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("tests/Cargo.toml");
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(dir).expect("the test package's folder") {
            let name = entry.expect("a folder entry").file_name().to_string_lossy().into_owned();
            if name.ends_with(".rs")
                && name != "build.rs"
                && !manifest.contains(&format!("path = \"{name}\""))
            {
                missing.push(name);
            }
        }
        assert!(missing.is_empty(), "declare these as [[test]] in tests/Cargo.toml: {missing:?}");
    }
}
