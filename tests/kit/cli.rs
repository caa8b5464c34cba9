//! The `litebroker` command-line tool as tests run it, and what it printed.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;

use crate::bin;

/// Runs `litebroker --db <db> <args>` to completion.
pub fn cli(db: &Path, args: &[&str]) -> Output {
    cli_with_stdin(db, args, None)
}

/// Runs `litebroker` with `input` on stdin. A `litebroker` that exits without
/// reading all of it (a usage error) is not a failure here: its exit code tells.
pub fn cli_with_stdin(db: &Path, args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new(bin("litebroker"))
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn litebroker");
    if let Some(text) = input {
        if let Err(e) = child.stdin.take().expect("stdin").write_all(text.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
    }
    child.wait_with_output().expect("litebroker output")
}

/// Stdout of a finished command as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr of a finished command as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a command's exit code, showing its output when it differs.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// The one JSON document a command printed on stdout (`litebroker --json …`).
///
/// # Panics
/// When stdout is not one JSON document; stdout and stderr are shown.
#[track_caller]
pub fn json_out(o: &Output) -> Json {
    serde_json::from_str(stdout(o).trim())
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}\nstderr: {}", stdout(o), stderr(o)))
}

/// The kind and message of a failed `--json` command, from its `{"error": …}`
/// document (empty where a field is missing).
///
/// # Panics
/// As [`json_out`].
#[track_caller]
pub fn error_of(o: &Output) -> (String, String) {
    let j = json_out(o);
    (
        j["error"]["kind"].as_str().unwrap_or_default().to_owned(),
        j["error"]["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Asserts that a `--json` command failed with exit `code` and an error of `kind`,
/// and that its document states the same exit code; returns the message.
#[track_caller]
pub fn assert_json_error(o: &Output, code: i32, kind: &str) -> String {
    assert_exit(o, code);
    let j = json_out(o);
    assert_eq!(j["error"]["kind"], kind, "{j}");
    assert_eq!(j["error"]["exit_code"], code, "{j}");
    j["error"]["message"].as_str().expect("message").to_owned()
}

/// The last line of a process's stdout parsed as JSON (lbtool's summary).
///
/// # Panics
/// When it is not JSON; the output is shown.
pub fn json_summary(o: &Output) -> Json {
    let text = stdout(o);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("not a JSON summary ({e})\nstdout:\n{text}\nstderr:\n{}", stderr(o)))
}
