//! The README's quick start, run as written, in a copy of the files git tracks
//! (what a fresh clone has: no build, no database): the install script, then each
//! command on the PATH it installed to.
//!
//! One change, to stay quick: the install line gets `--debug` when the suite is a
//! debug build (`scripts/install.sh --debug`: the same two `cargo install --locked
//! --path …`, debug profile), with `CARGO_TARGET_DIR` the suite's own target folder
//! and `CARGO_NET_OFFLINE=true`, so cargo reuses the dependencies the suite already
//! built and compiles only the two programs: the test took 19 s alone and 38-47 s
//! within `scripts/test.sh` on 2 shared vCPUs on 2026-12-03. The release build the
//! README's line runs took 278 s cold there; it differs only in the profile. The programs go to a temporary `CARGO_INSTALL_ROOT`;
//! the user's `~/.cargo/bin` is not touched.
//!
//! Unix only: the quick start is a POSIX shell session (on Windows the README names
//! the two `cargo install` commands the script runs).
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use litebroker_tests::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository above tests/").to_path_buf()
}

/// The first `sh` block under `## Quick start`.
fn quick_start_block(readme: &str) -> String {
    let section = readme.split("\n## Quick start\n").nth(1).expect("a Quick start section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let body = section.split("```sh\n").nth(1).expect("a ```sh block in the quick start");
    body.split("\n```").next().expect("the block's end").to_owned()
}

/// Copies the files git tracks (with their changes in this work tree) to `to`.
fn fresh_copy(to: &Path) {
    let root = repo_root();
    let out = Command::new("git").arg("-C").arg(&root).args(["ls-files", "-z"]).output().expect("git");
    assert!(out.status.success(), "git ls-files: {}", String::from_utf8_lossy(&out.stderr));
    for name in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).expect("a UTF-8 file name");
        let from = root.join(name);
        // A file deleted in the work tree but not yet in git is not in a clone either.
        if !from.exists() {
            continue;
        }
        let dest = to.join(name);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&from, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// The target folder holding the suite's build: the nearest folder above the
/// binaries with cargo's `CACHEDIR.TAG` (`target/`, also when the binaries are in
/// `target/<triple>/debug`).
fn target_dir() -> PathBuf {
    let bins = bin_dir();
    bins.ancestors()
        .find(|d| d.join("CACHEDIR.TAG").exists())
        .unwrap_or_else(|| bins.parent().expect("the target folder"))
        .to_path_buf()
}

/// The quick start's commands with the install line reusing the suite's build
/// profile (see the module's comment).
fn as_run_here(block: &str, debug: bool) -> String {
    let mut installs = 0;
    let lines: Vec<String> = block
        .lines()
        .map(|l| match l.strip_prefix("scripts/install.sh") {
            Some(rest) if debug => {
                installs += 1;
                format!("scripts/install.sh --debug{rest}")
            }
            Some(_) => {
                installs += 1;
                l.to_owned()
            }
            None => l.to_owned(),
        })
        .collect();
    assert_eq!(installs, 1, "the quick start must install with scripts/install.sh once:\n{block}");
    lines.join("\n")
}

#[test]
fn the_readme_quick_start_works_from_a_fresh_clone_as_written() {
    let block = quick_start_block(&std::fs::read_to_string(repo_root().join("README.md")).unwrap());
    for step in ["litebroker --autostart exec", "litebroker exec", "litebroker query", "litebroker shutdown"]
    {
        assert!(block.contains(step), "the quick start no longer has {step:?}:\n{block}");
    }
    let debug = bin_dir().ends_with("debug");
    let script = as_run_here(&block, debug);
    let t = TestDir::new();
    let clone = t.path().join("clone");
    fresh_copy(&clone);
    let root = t.path().join("installed");
    let path = format!("{}:{}", root.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let db = clone.join("data").join("app.db");
    let _cleanup = NoStrayBrokers(db.clone());

    let child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(&clone)
        .env("PATH", path)
        .env("CARGO_INSTALL_ROOT", &root)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_NET_OFFLINE", "true")
        // The programs on the PATH, nothing else: no broker or database named by the environment.
        .env_remove("LITEBROKERD")
        .env_remove("LITEBROKER_DB")
        .env_remove("LITEBROKER_AUTOSTART")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bash");
    // Minutes only when the suite's dependencies are not built yet (a cold build).
    let o = wait_output(child, Duration::from_secs(1800), "the quick start");
    assert_exit(&o, 0);
    let out = stdout(&o);
    for program in ["litebroker", "litebrokerd"] {
        assert!(root.join("bin").join(program).exists(), "{program} was not installed:\n{}", stderr(&o));
    }
    // The first write started the broker and created the database; the reads see the writes.
    assert!(db.exists(), "no database at {}", db.display());
    assert!(out.contains("changes: 1, last insert rowid: 1\n"), "{out}");
    assert!(out.contains("id  sku  qty\n--  ---  ---\n1   A1   3\n(1 row)\n"), "{out}");
    assert!(out.contains("sku,qty\r\nA1,3\r\n"), "{out}");
    assert!(out.contains("exactly-once: on"), "{out}");
    assert!(out.contains("is shutting down"), "{out}");
    // The broker the first write started is gone after `shutdown`.
    assert!(
        wait_until(Duration::from_secs(15), || broker_pids(&db).is_empty()),
        "a broker outlived the quick start's shutdown: {:?}",
        broker_pids(&db)
    );
}

#[test]
fn the_quick_start_block_is_found_in_the_readme() {
    let block =
        quick_start_block("x\n## Quick start\n\ntext\n\n```sh\na\nb # c\n```\n\n## Next\n```sh\nz\n```\n");
    assert_eq!(block, "a\nb # c");
    assert_eq!(as_run_here("x\nscripts/install.sh   # y\nz", true), "x\nscripts/install.sh --debug   # y\nz");
    assert_eq!(as_run_here("scripts/install.sh", false), "scripts/install.sh");
}
