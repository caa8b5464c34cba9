//! Trust between the processes of a database: a client talks only to its own user's
//! (or root's, or an explicitly trusted user's) broker of the database it asked for;
//! one broker per file, not per name; a broker serves regular files only and says
//! plainly when it may not write next to the database.
//!
//! The two-user tests run real processes as two other uids through `setpriv`; they
//! need root (as CI has) and are marked ignored, with that reason, in a test crate
//! built by another user (`cfg(litebroker_not_root)`, see build.rs).

#![cfg_attr(not(unix), allow(unused))]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use litebroker_client::{Client, ClientError, ConnectOptions, Untrusted};
use litebroker_protocol::rendezvous::socket_file_name;
use litebroker_tests::*;

/// The victim and the other user of the two-user tests: uids without accounts, so
/// that nothing of a real user's (their `/tmp/litebroker-<uid>`) is touched.
const VICTIM: u32 = 64_101;
const OTHER: u32 = 64_102;

#[track_caller]
fn assert_has(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "{n:?} missing from:\n{text}");
    }
}

#[cfg(unix)]
fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn canonical(p: &Path) -> PathBuf {
    litebroker_protocol::rendezvous::canonicalize(p).unwrap()
}

/// Whether a table exists in a database (read directly, as the test's user).
fn has_table(db: &Path, table: &str) -> bool {
    open_ro(db)
        .query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1", [table], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
        == 1
}

/// An explicit socket of a test: a file in its folder (Unix), a pipe name of its own
/// (Windows).
fn explicit_socket(t: &TestDir, name: &str) -> String {
    if cfg!(windows) {
        let unique =
            t.path().file_name().unwrap().to_string_lossy().replace(|c: char| !c.is_ascii_alphanumeric(), "");
        format!("litebroker-test-{name}-{unique}")
    } else {
        t.path().join(format!("{name}.sock")).to_string_lossy().into_owned()
    }
}

/// `litebroker` with extra environment variables.
fn cli_env(db: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let child = Command::new(bin("litebroker"))
        .arg("--db")
        .arg(db)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn litebroker");
    wait_output(child, Duration::from_secs(60), "litebroker")
}

// ----- one user: the folder, the database the broker serves, the reconnect path ----------

/// A broker in a private runtime folder; the folder then becomes writable by others
/// (as a folder another user prepared would be). The client refuses it before
/// connecting: before this check the write went through.
#[cfg(unix)]
#[test]
fn a_socket_folder_others_can_write_to_is_refused_before_connecting() {
    let t = TestDir::new();
    let run = t.path().join("run");
    fs::create_dir(&run).unwrap();
    let env = [("XDG_RUNTIME_DIR", run.as_path())];
    let b = Broker::start_with_env(&t.db(), &[], &env);
    let folder = run.join("litebroker");
    assert_exit(&cli_env(&t.db(), &env, &["exec", "CREATE TABLE t (x)"]), 0);

    chmod(&folder, 0o777);
    let o = cli_env(&t.db(), &env, &["--json", "exec", "INSERT INTO t VALUES (1)"]);
    assert_exit(&o, 3);
    let (kind, msg) = error_of(&o);
    assert_eq!(kind, "untrusted_broker", "{msg}");
    let chmod_hint = format!("chmod 700 {}", folder.display());
    assert_has(
        &msg,
        &[&folder.display().to_string(), "other users can write to it", "mode 777", &chmod_hint],
    );
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM t"), 0);

    chmod(&folder, 0o700);
    assert_exit(&cli_env(&t.db(), &env, &["exec", "INSERT INTO t VALUES (2)"]), 0);
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM t"), 1);
    drop(b);
}

/// A broker of another database listening where the client looks: given explicitly,
/// and recorded in the lock file. Before the check the client wrote into that other
/// database and reported success.
#[test]
fn a_broker_of_another_database_gets_nothing() {
    let t = TestDir::new();
    let dir = t.path().join("data");
    fs::create_dir(&dir).unwrap();
    let (mine, theirs) = (dir.join("mine.db"), dir.join("theirs.db"));
    let socket = explicit_socket(&t, "theirs");
    let b = Broker::start(&theirs, &["--socket", &socket]);
    assert_exit(&cli(&theirs, &["--socket", &socket, "exec", "CREATE TABLE t (x)"]), 0);

    // Given explicitly.
    let o = cli(&mine, &["--json", "--socket", &socket, "exec", "CREATE TABLE notes (x)"]);
    assert_exit(&o, 3);
    let (kind, msg) = error_of(&o);
    assert_eq!(kind, "untrusted_broker", "{msg}");
    let (want, served) = (canonical(&dir).join("mine.db"), canonical(&dir).join("theirs.db"));
    assert_has(
        &msg,
        &[&format!("serves {}, not {}", served.display(), want.display()), &format!("pid {}", b.pid())],
    );
    assert!(!has_table(&theirs, "notes"), "the other database got the write");

    // Recorded in mine.db's lock file (by whoever could write next to it), while
    // nothing listens on mine.db's own socket.
    let info = serde_json::json!({
        "pid": b.pid(), "socket": socket, "db": want.to_string_lossy(), "started_unix_ms": 0,
        "version": "0.1.0", "protocol": litebroker_protocol::PROTOCOL_VERSION,
    });
    fs::write(dir.join("mine.db-broker.lock"), info.to_string()).unwrap();
    let o = cli(&mine, &["--json", "exec", "CREATE TABLE notes (x)"]);
    assert_exit(&o, 3);
    assert_has(&error_of(&o).1, &[&format!("serves {}", served.display())]);
    assert!(!has_table(&theirs, "notes"), "the other database got the write");
}

/// The reconnect path: the broker of `a.db` goes away and a broker of `b.db` takes
/// its (explicit) socket. The client's next write must not land in `b.db`.
#[test]
fn a_reconnect_never_lands_in_another_database() {
    let t = TestDir::new();
    let dir = t.path().join("data");
    fs::create_dir(&dir).unwrap();
    let (a, b) = (dir.join("a.db"), dir.join("b.db"));
    let socket = explicit_socket(&t, "s");
    let mut broker_a = Broker::start(&a, &["--socket", &socket]);
    let mut client = Client::connect_with(&ConnectOptions::new(&a).socket(&socket)).unwrap();
    client.execute("CREATE TABLE t (x)", &[]).unwrap();

    assert_exit(&cli(&a, &["--socket", &socket, "shutdown"]), 0);
    assert!(broker_a.wait_exit(READY_TIMEOUT).is_some(), "{}", broker_a.log());
    let _broker_b = Broker::start(&b, &["--socket", &socket]);
    assert_exit(&cli(&b, &["--socket", &socket, "exec", "CREATE TABLE t (x)"]), 0);

    let err = client.execute("INSERT INTO t VALUES ('meant for a')", &[]).unwrap_err();
    assert!(
        matches!(&err, ClientError::Untrusted(u) if matches!(**u, Untrusted::WrongDatabase { .. })),
        "{err:?}"
    );
    assert_eq!(query_i64(&b, "SELECT count(*) FROM t"), 0, "b.db got a's write");
    assert_eq!(query_i64(&a, "SELECT count(*) FROM t"), 0);
    let again = client.reconnect(Instant::now() + Duration::from_secs(5)).unwrap_err();
    assert!(matches!(again, ClientError::Untrusted(_)), "{again:?}");
    assert_has(&again.to_string(), &[&b.file_name().unwrap().to_string_lossy(), "a.db"]);
}

// ----- one broker per file -----------------------------------------------------------

/// A second name (hard link) for a database: the broker under it is refused, the
/// one already serving the file goes on, and doctor names the problem. Before,
/// both served the file and acknowledged writes of one vanished.
#[test]
fn a_database_with_a_second_name_gets_no_second_broker() {
    let t = TestDir::new();
    let dir = t.path().join("data");
    fs::create_dir(&dir).unwrap();
    let db = dir.join("app.db");
    let alias = dir.join("alias.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)")
            .unwrap();
    }
    let mut first = Broker::start(&db, &[]);
    fs::hard_link(&db, &alias).unwrap();

    let mut second = Broker::spawn(&alias, &[]);
    let st = second.wait_exit(READY_TIMEOUT).expect("the second broker did not exit");
    assert_eq!(st.code(), Some(2), "{}", second.log());
    let log = second.log();
    let find = if cfg!(windows) { "fsutil hardlink list" } else { "-samefile" };
    assert_has(&log, &["has 2 hard links", "Remove the other names", find]);
    assert!(!log.contains("listening on"), "{log}");
    assert!(!dir.join("alias.db-broker.lock").exists(), "a lock file was created for the refused name");

    // The first broker is unaffected.
    assert!(first.running());
    for i in 0..5 {
        assert_exit(&cli(&db, &["exec", "INSERT INTO t (who) VALUES (?)", &format!("row {i}")]), 0);
    }
    assert_eq!(query_i64(&db, "SELECT count(*) FROM t"), 5);

    let o = cli(&db, &["--json", "doctor"]);
    assert_exit(&o, 5);
    let j = json_out(&o);
    let f = j["findings"].as_array().unwrap().iter().find(|f| f["check"] == "hard_links").cloned();
    let f = f.unwrap_or_else(|| panic!("no hard_links finding: {j}"));
    assert_eq!(f["status"], "problem", "{f}");
    assert_has(f["detail"].as_str().unwrap(), &["2 hard links"]);
    assert_has(f["action"].as_str().unwrap(), &[find]);

    // Once the other name is gone, doctor is content again (Windows: a name of a file
    // the broker holds open cannot be removed, so it stops first).
    assert_exit(&first.request_shutdown(), 0);
    assert!(first.wait_exit(READY_TIMEOUT).is_some(), "{}", first.log());
    fs::remove_file(&alias).unwrap();
    let o = cli(&db, &["--json", "doctor"]);
    let j = json_out(&o);
    let f = j["findings"].as_array().unwrap().iter().find(|f| f["check"] == "hard_links").cloned().unwrap();
    assert_eq!(f["status"], "ok", "{j}");
    let _b = Broker::start(&db, &[]);
    assert_eq!(query_i64(&db, "SELECT count(*) FROM t"), 5);
}

// ----- which files a broker serves -----------------------------------------------------

/// `--db` naming a device, a fifo, a folder or a socket: exit 2 before any lock file
/// is created next to it. Before, `/dev/null` started a broker (and left
/// `/dev/null-broker.lock`) that failed every write.
#[cfg(unix)]
#[test]
fn only_a_regular_file_or_a_new_path_is_served() {
    let t = TestDir::new();
    let fifo = t.path().join("fifo.db");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let folder = t.path().join("folder.db");
    fs::create_dir(&folder).unwrap();
    let sock = t.path().join("sock.db");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let null_lock_before = Path::new("/dev/null-broker.lock").exists();

    for (db, what) in [
        (Path::new("/dev/null"), "a character device"),
        (fifo.as_path(), "a fifo"),
        (folder.as_path(), "a folder"),
        (sock.as_path(), "a socket"),
    ] {
        // Run directly: the harness's Broker keeps its log beside the database.
        let child = Command::new(bin("litebrokerd"))
            .arg("--db")
            .arg(db)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn litebrokerd");
        let o = wait_output(child, READY_TIMEOUT, "litebrokerd");
        assert_exit(&o, 2);
        assert_has(&stderr(&o), &[&format!("--db {} is {what}, not a regular file", db.display())]);
        assert!(!stderr(&o).contains("listening on"), "{}", stderr(&o));
        let mut lock = db.as_os_str().to_os_string();
        lock.push("-broker.lock");
        if db != Path::new("/dev/null") || !null_lock_before {
            assert!(!Path::new(&lock).exists(), "{} was created", Path::new(&lock).display());
        }
    }
    // A path that does not exist yet is created, as before.
    let _b = Broker::start(&t.db(), &[]);
    assert_exit(&cli(&t.db(), &["exec", "CREATE TABLE t (x)"]), 0);
}

// ----- two users -----------------------------------------------------------------------

/// A test folder that the two users can reach: a sticky, world-writable temp folder
/// (as `/tmp`) used as everyone's TMPDIR, and copies of the binaries.
#[cfg(unix)]
struct TwoUsers {
    t: TestDir,
    tmp: PathBuf,
    bin: PathBuf,
}

#[cfg(unix)]
impl TwoUsers {
    fn new() -> TwoUsers {
        require_root();
        require_setpriv();
        let t = TestDir::new();
        chmod(t.path(), 0o755);
        let tmp = t.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        chmod(&tmp, 0o1777);
        let bin_dir = t.path().join("bin");
        fs::create_dir(&bin_dir).unwrap();
        chmod(&bin_dir, 0o755);
        // The build folder need not be reachable by other users.
        for name in ["litebrokerd", "litebroker", "lbtool"] {
            let to = bin_dir.join(name);
            if fs::hard_link(bin(name), &to).is_err() {
                fs::copy(bin(name), &to).unwrap();
            }
        }
        TwoUsers { t, tmp, bin: bin_dir }
    }

    /// A folder of `uid`'s (mode 0755), as that user's home for its database.
    fn home(&self, name: &str, uid: u32) -> PathBuf {
        let d = self.t.path().join(name);
        fs::create_dir(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(uid), Some(uid)).unwrap();
        chmod(&d, 0o755);
        d
    }

    /// One of the binaries, to be run as `uid` with the shared TMPDIR and no
    /// XDG_RUNTIME_DIR (the case where sockets live in the shared temp folder).
    fn cmd(&self, uid: u32, program: &str, args: &[&str]) -> Command {
        let mut cmd = as_user(uid, &self.bin.join(program));
        cmd.args(args).env("TMPDIR", &self.tmp).env_remove("XDG_RUNTIME_DIR").env_remove("LITEBROKER_DB");
        cmd
    }

    /// Runs a client binary as `uid` to completion.
    fn run(&self, uid: u32, program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.cmd(uid, program, args);
        cmd.envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        wait_output(cmd.spawn().expect("spawn"), Duration::from_secs(60), program)
    }

    /// Starts `litebrokerd --db <db> <args>` as `uid` and waits until it listens.
    fn broker(&self, uid: u32, db: &Path, args: &[&str]) -> Broker {
        self.spawn_broker(uid, db, args).ready()
    }

    fn spawn_broker(&self, uid: u32, db: &Path, args: &[&str]) -> Broker {
        let db_arg = db.to_string_lossy();
        let cmd = self.cmd(uid, "litebrokerd", &[&["--db", &db_arg, "--log-level", "debug"], args].concat());
        Broker::spawn_cmd(cmd, db)
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The security review's F8, as it was reproduced: another user creates the victim's
/// socket folder in the shared temp folder and listens there, under the exact name
/// the victim's client derives, with a broker that admits the victim. Before this
/// check the victim's CLI and library wrote into the other user's database and
/// reported success. Now both refuse before connecting (exit 3, naming the folder,
/// its owner and what to do), and the impostor's database gets nothing.
#[cfg(unix)]
#[test]
#[cfg_attr(litebroker_not_root, ignore = "needs root: runs processes as two other users through setpriv")]
fn an_impostor_in_the_victims_socket_folder_gets_nothing() {
    let u = TwoUsers::new();
    let victim_db = canonical(&u.home("victim", VICTIM)).join("app.db");
    let evil_db = u.home("other", OTHER).join("evil.db");
    let folder = u.tmp.join(format!("litebroker-{VICTIM}"));
    let socket = s(&folder.join(socket_file_name(&victim_db.to_string_lossy())));

    // The other user gets there first: its folder, its broker, open to the victim,
    // with the tables the victim's writes need.
    fs::create_dir(&folder).unwrap();
    std::os::unix::fs::chown(&folder, Some(OTHER), Some(OTHER)).unwrap();
    chmod(&folder, 0o755);
    let evil = u.broker(OTHER, &evil_db, &["--socket", &socket, "--allow-uid", &VICTIM.to_string()]);
    chmod(Path::new(&socket), 0o666);
    let o = u.run(
        OTHER,
        "litebroker",
        &["--db", &s(&evil_db), "--socket", &socket, "exec", "CREATE TABLE rows (client, seq, payload)"],
        &[],
    );
    assert_exit(&o, 0);
    let connected_before = evil.log().matches("connected (protocol").count();

    // The victim's own broker refuses the folder, as before (exit 2).
    let mut own = u.spawn_broker(VICTIM, &victim_db, &[]);
    let st = own.wait_exit(READY_TIMEOUT).expect("the victim's broker did not exit");
    assert_eq!(st.code(), Some(2), "{}", own.log());
    assert_has(&own.log(), &[&format!("belongs to uid {OTHER}")]);

    // The victim's CLI: refused, exit 3, nothing sent.
    let o = u.run(
        VICTIM,
        "litebroker",
        &["--json", "--db", &s(&victim_db), "exec", "CREATE TABLE notes (x)"],
        &[],
    );
    assert_exit(&o, 3);
    let (kind, msg) = error_of(&o);
    assert_eq!(kind, "untrusted_broker", "{msg}");
    assert_has(
        &msg,
        &[
            &folder.display().to_string(),
            "it belongs to another user",
            &format!("owner uid {OTHER}"),
            &format!("this user is uid {VICTIM}"),
            "nothing was sent",
            "XDG_RUNTIME_DIR",
        ],
    );

    // The library (lbtool's writer uses Client::connect_with): refused the same way.
    let o = u.run(VICTIM, "lbtool", &["--db", &s(&victim_db), "write", "--client", "1", "--count", "3"], &[]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let summary = json_summary(&o);
    assert_eq!(summary["ok"], 0, "{summary}");
    assert_has(
        summary["first_error"].as_str().unwrap_or(""),
        &["refusing the socket folder", "belongs to another user"],
    );

    // The impostor saw no connection and got no data.
    assert!(!has_table(&evil_db, "notes"), "the victim's CREATE TABLE reached the impostor");
    assert_eq!(query_i64(&evil_db, "SELECT count(*) FROM rows"), 0, "the victim's rows reached the impostor");
    assert_eq!(evil.log().matches("connected (protocol").count(), connected_before, "{}", evil.log());
}

/// Sockets named explicitly (no folder check): the listener's user decides. Another
/// user's listener is refused before the hello (exit 3); trusted explicitly
/// (LITEBROKER_TRUST_BROKER_UID, the counterpart of --allow-uid) a service user's
/// broker of the same database serves the victim; trusted, but serving another
/// database, it is still refused. The victim's own broker does not displace the
/// untrusted listener and says why (exit 3).
#[cfg(unix)]
#[test]
#[cfg_attr(litebroker_not_root, ignore = "needs root: runs processes as two other users through setpriv")]
fn a_listener_of_another_user_is_refused_unless_trusted() {
    let u = TwoUsers::new();
    let shared = u.t.path().join("shared");
    fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    let svc_db = u.home("service", OTHER).join("app.db");
    let socket = s(&shared.join("svc.sock"));
    let svc = u.broker(OTHER, &svc_db, &["--socket", &socket, "--allow-uid", &VICTIM.to_string()]);
    chmod(Path::new(&socket), 0o666);
    let setup = u.run(
        OTHER,
        "litebroker",
        &["--db", &s(&svc_db), "--socket", &socket, "exec", "CREATE TABLE t (x)"],
        &[],
    );
    assert_exit(&setup, 0);
    let connected_before = svc.log().matches("connected (protocol").count();

    let insert =
        ["--json", "--db", &s(&svc_db), "--socket", &socket, "exec", "INSERT INTO t VALUES ('victim')"];
    let o = u.run(VICTIM, "litebroker", &insert, &[]);
    assert_exit(&o, 3);
    let (kind, msg) = error_of(&o);
    assert_eq!(kind, "untrusted_broker", "{msg}");
    assert_has(
        &msg,
        &[
            &socket,
            &format!("runs as uid {OTHER}"),
            &format!("this user (uid {VICTIM})"),
            "nothing was sent",
            &format!("LITEBROKER_TRUST_BROKER_UID={OTHER}"),
        ],
    );
    assert_eq!(query_i64(&svc_db, "SELECT count(*) FROM t"), 0);
    assert_eq!(
        svc.log().matches("connected (protocol").count(),
        connected_before,
        "the hello was sent:\n{}",
        svc.log()
    );

    let other = OTHER.to_string();
    let trust = [("LITEBROKER_TRUST_BROKER_UID", other.as_str())];
    let o = u.run(VICTIM, "litebroker", &insert, &trust);
    assert_exit(&o, 0);
    assert_eq!(query_i64(&svc_db, "SELECT count(*) FROM t"), 1);

    let victim_db = u.home("victim", VICTIM).join("app.db");
    let o = u.run(
        VICTIM,
        "litebroker",
        &["--json", "--db", &s(&victim_db), "--socket", &socket, "exec", "CREATE TABLE notes (x)"],
        &trust,
    );
    assert_exit(&o, 3);
    assert_has(&error_of(&o).1, &[&format!("serves {}", canonical(&svc_db).display())]);
    assert!(!has_table(&svc_db, "notes"));

    // The victim's broker on that socket: the untrusted listener is left alone.
    let mut own = u.spawn_broker(VICTIM, &victim_db, &["--socket", &socket]);
    let st = own.wait_exit(READY_TIMEOUT).expect("the victim's broker did not exit");
    assert_eq!(st.code(), Some(3), "{}", own.log());
    assert_has(
        &own.log(),
        &[
            &format!("{socket} is taken by a process of uid {OTHER}, not of this user (uid {VICTIM})"),
            "never displaced",
        ],
    );
    assert!(Path::new(&socket).exists());
    assert_exit(&u.run(OTHER, "litebroker", &["--db", &s(&svc_db), "--socket", &socket, "status"], &[]), 0);
}

/// The socket recorded in the lock file next to a database in a shared folder: the
/// other user points it at its own listener (while the victim's broker is not
/// running). The client checks that socket's folder as it checks a derived one.
#[cfg(unix)]
#[test]
#[cfg_attr(litebroker_not_root, ignore = "needs root: runs processes as two other users through setpriv")]
fn a_socket_recorded_by_another_user_is_refused() {
    let u = TwoUsers::new();
    let team = u.t.path().join("team");
    fs::create_dir(&team).unwrap();
    chmod(&team, 0o1777);
    let victim_db = canonical(&team).join("app.db");
    let other_home = u.home("other", OTHER);
    let evil_db = other_home.join("evil.db");
    let socket = s(&other_home.join("evil.sock"));
    let evil = u.broker(OTHER, &evil_db, &["--socket", &socket, "--allow-uid", &VICTIM.to_string()]);
    chmod(Path::new(&socket), 0o666);
    let info = serde_json::json!({
        "pid": evil.pid(), "socket": socket, "db": victim_db.to_string_lossy(), "started_unix_ms": 0,
        "version": "0.1.0", "protocol": litebroker_protocol::PROTOCOL_VERSION,
    });
    let lock = team.join("app.db-broker.lock");
    fs::write(&lock, info.to_string()).unwrap();
    std::os::unix::fs::chown(&lock, Some(OTHER), Some(OTHER)).unwrap();

    let o = u.run(
        VICTIM,
        "litebroker",
        &["--json", "--db", &s(&victim_db), "exec", "CREATE TABLE notes (x)"],
        &[],
    );
    assert_exit(&o, 3);
    let (kind, msg) = error_of(&o);
    assert_eq!(kind, "untrusted_broker", "{msg}");
    assert_has(&msg, &[&other_home.display().to_string(), "it belongs to another user"]);
    assert!(!has_table(&evil_db, "notes"), "the victim's write reached the other user's broker");
}

/// A database folder the broker's user may not write to (root's, mode 0755): the
/// broker says permission denied, naming the folder, the user and what to do (exit
/// 2), instead of "No such file or directory".
#[cfg(unix)]
#[test]
#[cfg_attr(litebroker_not_root, ignore = "needs root: runs the broker as another user through setpriv")]
fn a_database_folder_the_user_cannot_write_is_reported_as_such() {
    let u = TwoUsers::new();
    let data = u.t.path().join("rootdata");
    fs::create_dir(&data).unwrap();
    chmod(&data, 0o755);
    let db = data.join("app.db");
    let mut b = u.spawn_broker(VICTIM, &db, &[]);
    let st = b.wait_exit(READY_TIMEOUT).expect("the broker did not exit");
    assert_eq!(st.code(), Some(2), "{}", b.log());
    let log = b.log();
    assert_has(
        &log,
        &[
            "permission denied",
            &format!("uid {VICTIM}"),
            &format!("{} (owner uid 0, mode 755)", canonical(&data).display()),
            "chown or chmod",
        ],
    );
    assert!(!log.contains("No such file or directory"), "{log}");
}
