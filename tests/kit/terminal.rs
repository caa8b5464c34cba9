//! A program run in a real terminal: tmux runs it in a detached session of its own
//! server (a socket in the test's folder), `send-keys` types, `capture-pane` reads
//! the screen, `paste-buffer -p` pastes (bracketed, as a terminal does). When the
//! program exits, the session prints `[exit N]` and the
//! terminal's settings (`stty -a`), so that a test can check both the exit code
//! and that the program gave the terminal back as it found it (`icanon`, `echo`).
//!
//! Unix only: tmux does not run on Windows. `.ci/run` installs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::wait_until;

/// A tmux server of its own running one program in a session.
pub struct Terminal {
    socket: PathBuf,
}

impl Terminal {
    /// Runs `program args` in a new `width`×`height` session under `dir`.
    ///
    /// # Panics
    /// When tmux cannot be run (the message says how to install it).
    pub fn start(dir: &Path, program: &Path, args: &[&str], size: (u16, u16)) -> Terminal {
        Terminal::start_with_env(dir, program, args, size, &[])
    }

    /// As [`Terminal::start`], with environment variables set for the program.
    ///
    /// # Panics
    /// As [`Terminal::start`].
    pub fn start_with_env(
        dir: &Path,
        program: &Path,
        args: &[&str],
        (width, height): (u16, u16),
        env: &[(&str, &Path)],
    ) -> Terminal {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let t = Terminal { socket: dir.join(format!("tmux-{n}")) };
        let mut cmd = t.command();
        cmd.args(["new-session", "-d", "-x", &width.to_string(), "-y", &height.to_string(), "-s", "t"]);
        for (name, value) in env {
            cmd.arg("-e").arg(format!("{name}={}", value.display()));
        }
        // The wrapping sh traps Ctrl-C (the terminal sends it to the whole
        // foreground group), so that only the program under test reacts to it.
        let out = cmd
            .args([
                "sh",
                "-c",
                r#"trap : INT; p=$1; shift; "$p" "$@"; echo "[exit $?]"; stty -a; exec sleep 600"#,
                "sh",
            ])
            .arg(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run tmux ({e}): install it (apt-get install tmux; .ci/run does)")
            });
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        t
    }

    fn command(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Presses keys by tmux name: `q`, `Enter`, `C-c`, `Up`.
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Types `text` literally, as keys (no key names).
    pub fn text(&self, text: &str) {
        // tmux reads a `;` ending an argument as its command separator unless escaped.
        let escaped = match text.strip_suffix(';') {
            Some(head) => format!("{head}\\;"),
            None => text.to_owned(),
        };
        self.run(&["send-keys", "-t", "t", "-l", &escaped]);
    }

    /// Pastes `text` as a terminal does: bracketed, when the program asked for it.
    pub fn paste(&self, text: &str) {
        self.run(&["set-buffer", "-b", "paste", "--", text]);
        self.run(&["paste-buffer", "-p", "-d", "-b", "paste", "-t", "t"]);
    }

    /// The screen and everything scrolled off it, wrapped lines joined.
    pub fn scrollback(&self) -> String {
        self.run(&["capture-pane", "-p", "-J", "-S", "-", "-t", "t"])
    }

    /// What the terminal shows now (the screen the program is on: its alternate
    /// screen while it uses one).
    pub fn screen(&self) -> String {
        // Wrapped lines joined: a word is never split across two.
        self.run(&["capture-pane", "-p", "-J", "-t", "t"])
    }

    /// Polls the screen until `ok` holds, for at most `timeout`; returns it.
    ///
    /// # Panics
    /// When it never holds; the last screen is shown.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let mut screen = String::new();
        if wait_until(timeout, || {
            screen = self.screen();
            ok(&screen)
        }) {
            return screen;
        }
        panic!("the terminal never showed {what}:\n{screen}");
    }

    /// Waits until the program exited; returns its exit code and the terminal's
    /// settings after it (`stty -a`).
    ///
    /// # Panics
    /// When it does not exit within `timeout`.
    #[track_caller]
    pub fn wait_exit(&self, timeout: Duration) -> (i32, String) {
        // `stty -a` always names `icanon` (as `icanon` or `-icanon`): its output is there.
        let screen = self.wait_for("the program's exit and the terminal's settings", timeout, |s| {
            s.split_once("[exit ").is_some_and(|(_, after)| after.contains("icanon"))
        });
        let (_, rest) = screen.split_once("[exit ").expect("exit line");
        let (code, settings) = rest.split_once(']').expect("exit code");
        (code.trim().parse().expect("exit code"), settings.to_owned())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}
