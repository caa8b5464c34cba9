//! The README's quick start, run exactly as written, in a copy of the files git
//! tracks (what a fresh clone has: no build, no database): the install script's
//! release build, then each command on the PATH it installed to.
//!
//! The build goes to `target/quickstart` (`CARGO_TARGET_DIR`), kept between runs,
//! and the programs to a temporary `CARGO_INSTALL_ROOT`; the user's `~/.cargo/bin`
//! is not touched. A cold release build takes minutes (278 s on 2 shared vCPUs on
//! 2026-12-02); a warm one seconds.
//!
//! Unix only: the quick start is a POSIX shell session (Windows users run the two
//! `cargo install` commands it names).
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

#[test]
fn the_readme_quick_start_works_from_a_fresh_clone_as_written() {
    let block = quick_start_block(&std::fs::read_to_string(repo_root().join("README.md")).unwrap());
    for step in ["scripts/install.sh", "litebroker --autostart exec", "litebroker query", "litebroker shutdown"] {
        assert!(block.contains(step), "the quick start no longer has {step:?}:\n{block}");
    }
    let t = TestDir::new();
    let clone = t.path().join("clone");
    fresh_copy(&clone);
    let root = t.path().join("installed");
    let path = format!("{}:{}", root.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let db = clone.join("data").join("app.db");
    #[cfg(target_os = "linux")]
    let _cleanup = NoStrayBrokers(db.clone());

    let child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(&clone)
        .env("PATH", path)
        .env("CARGO_INSTALL_ROOT", &root)
        .env("CARGO_TARGET_DIR", repo_root().join("target").join("quickstart"))
        // The programs on the PATH, nothing else: no broker named by the environment.
        .env_remove("LITEBROKERD")
        .env_remove("LITEBROKER_DB")
        .env_remove("LITEBROKER_AUTOSTART")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bash");
    let o = wait_output(child, Duration::from_secs(1800), "the quick start");
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(root.join("bin").join("litebroker").exists() && root.join("bin").join("litebrokerd").exists());
    // The first write started the broker and created the database; the reads see the writes.
    assert!(db.exists(), "no database at {}", db.display());
    assert!(out.contains("changes: 1, last insert rowid: 1\n"), "{out}");
    assert!(out.contains("id  sku  qty\n--  ---  ---\n1   A1   3\n(1 row)\n"), "{out}");
    assert!(out.contains("sku,qty\r\nA1,3\r\n"), "{out}");
    assert!(out.contains("exactly-once: on"), "{out}");
    assert!(out.contains("is shutting down"), "{out}");
}

#[test]
fn the_quick_start_block_is_found_in_the_readme() {
    let block = quick_start_block("x\n## Quick start\n\ntext\n\n```sh\na\nb # c\n```\n\n## Next\n```sh\nz\n```\n");
    assert_eq!(block, "a\nb # c");
}
