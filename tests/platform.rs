//! Multi-process tests that every platform must pass: Linux natively, Windows
//! natively or under Wine (`scripts/windows-check.sh`). They use only what both
//! have: the real binaries, the `shutdown` request, raw connections to the socket
//! or named pipe. Unix-only behaviour (signals, socket files) is tested in
//! `foundation.rs`.

use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use litebroker_protocol::{ErrorKind, Hello, Request, Response, Statement, WriteOptions};
use litebroker_tests::*;

/// The kind of an error answer.
fn error_kind(resp: Response) -> ErrorKind {
    answer_error(&resp).0
}

fn create_rows_table(db: &std::path::Path) {
    let o = cli(
        db,
        &[
            "exec",
            "CREATE TABLE rows (id INTEGER PRIMARY KEY, client INT NOT NULL, seq INT NOT NULL, payload TEXT)",
        ],
    );
    assert_exit(&o, 0);
}

#[test]
fn many_client_processes_write_and_read_at_once() {
    const WRITERS: i64 = 8;
    const ROWS: i64 = 60;
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &[]);
    create_rows_table(&t.db());
    let stop = t.path().join("stop-readers");
    let readers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(bin("lbtool"))
                .arg("--db")
                .arg(t.db())
                .args(["read-loop", "--until"])
                .arg(&stop)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn lbtool read-loop")
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            Command::new(bin("lbtool"))
                .arg("--db")
                .arg(t.db())
                .args(["write", "--verify-reads", "--client", &i.to_string(), "--count", &ROWS.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn lbtool write")
        })
        .collect();
    for w in writers {
        let o = w.wait_with_output().unwrap();
        let j = json_out(&o);
        assert!(o.status.success(), "writer failed: {j}");
        assert_eq!(j["ok"], ROWS, "{j}");
        assert_eq!(j["stale_reads"], 0, "a writer did not see its own acknowledged write: {j}");
    }
    std::fs::write(&stop, b"").unwrap();
    for r in readers {
        let o = r.wait_with_output().unwrap();
        let j = json_out(&o);
        assert!(o.status.success(), "reader failed: {j}");
    }
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM rows"), WRITERS * ROWS);
    assert_eq!(query_i64(&t.db(), "SELECT count(DISTINCT client || '/' || seq) FROM rows"), WRITERS * ROWS);
    assert_eq!(integrity(&t.db()), "ok");
    assert!(!b.log().contains("panicked"), "{}", b.log());
}

#[test]
fn shutdown_request_stops_the_broker_cleanly_and_frees_the_database() {
    let t = TestDir::new();
    let mut b = Broker::start(&t.db(), &[]);
    create_rows_table(&t.db());
    assert_exit(&cli(&t.db(), &["exec", "INSERT INTO rows (client, seq) VALUES (1, 1)"]), 0);
    // An app instance that stays connected, idle, does not hold the shutdown up.
    let idle = RawConn::connect(&b.socket);
    idle.handshake("platform-test");
    assert_exit(&b.request_shutdown(), 0);
    assert!(idle.closed_within(Duration::from_secs(20)), "the idle connection was not closed");
    let status = b.wait_exit(Duration::from_secs(20)).expect("broker exits after the shutdown request");
    assert_eq!(status.code(), Some(0), "log:\n{}", b.log());
    let log = b.log();
    assert!(log.contains("shutdown request from"), "{log}");
    assert!(log.contains("stopped cleanly"), "{log}");
    // Nothing listens any more: writes fail at once, reads still work.
    assert_exit(&cli(&t.db(), &["exec", "INSERT INTO rows (client, seq) VALUES (1, 2)"]), 3);
    assert_exit(&cli(&t.db(), &["query", "SELECT count(*) FROM rows"]), 0);
    // The lock was released: a new broker serves the same database at once.
    let _b2 = Broker::start(&t.db(), &[]);
    assert_exit(&cli(&t.db(), &["exec", "INSERT INTO rows (client, seq) VALUES (1, 3)"]), 0);
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM rows"), 2);
}

#[test]
fn hostile_bytes_get_answers_and_hurt_nobody() {
    let t = TestDir::new();
    let mut b = Broker::start(&t.db(), &[]);
    create_rows_table(&t.db());

    // Gibberish instead of a handshake: an error answer, then the broker closes.
    let s = RawConn::connect(&b.socket);
    s.send_bytes(&[16, 0, 0, 0]).unwrap();
    s.send_bytes(&[0xff; 16]).unwrap();
    assert_eq!(error_kind(s.recv()), ErrorKind::Protocol);
    assert!(s.closed_within(Duration::from_secs(10)), "connection left open after a bad handshake");

    // A forged length far beyond the limit: refused before anything is allocated.
    let s = RawConn::connect(&b.socket);
    s.send_bytes(&u32::MAX.to_le_bytes()).unwrap();
    assert_eq!(error_kind(s.recv()), ErrorKind::LimitExceeded);
    assert!(s.closed_within(Duration::from_secs(10)), "connection left open after a forged length");

    // Half a frame, then gone; a connection that says nothing and leaves.
    let s = RawConn::connect(&b.socket);
    s.send_bytes(&[100, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(s);
    drop(RawConn::connect(&b.socket));

    // After a good handshake, a garbage frame is answered and the connection lives on.
    let s = RawConn::connect(&b.socket);
    s.handshake("platform-test");
    s.send_bytes(&[5, 0, 0, 0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe]).unwrap();
    assert_eq!(error_kind(s.recv()), ErrorKind::Protocol);
    assert!(matches!(s.round_trip(&Request::Ping), Response::Pong));
    drop(s);

    // Everyone else is served as before.
    assert_exit(&cli(&t.db(), &["exec", "INSERT INTO rows (client, seq) VALUES (7, 7)"]), 0);
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM rows"), 1);
    assert!(b.running(), "broker died; log:\n{}", b.log());
    assert!(!b.log().contains("panicked"), "{}", b.log());
}

#[test]
fn stalled_clients_are_cut_off_without_blocking_others() {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &["--io-timeout-secs", "1"]);
    create_rows_table(&t.db());

    // A: stops in the middle of a frame.
    let a = RawConn::connect(&b.socket);
    a.handshake("platform-test");
    a.send_bytes(&[200, 0, 0, 0, 1, 2, 3, 4]).unwrap();

    // B: asks for a 4 MB answer and never reads it (larger than any socket or
    // pipe buffer, so the broker's write blocks).
    let big = RawConn::connect(&b.socket);
    big.handshake("platform-test");
    big.send(&Request::Execute {
        stmt: Statement::new("SELECT randomblob(4000000)", vec![]),
        opts: WriteOptions::default(),
    });

    // Others are served meanwhile, at once.
    let started = std::time::Instant::now();
    assert_exit(&cli(&t.db(), &["exec", "INSERT INTO rows (client, seq) VALUES (1, 1)"]), 0);
    assert!(started.elapsed() < Duration::from_secs(5), "a write waited {:?}", started.elapsed());

    // Both stalled connections are cut off soon after the 1 s I/O timeout.
    assert!(a.closed_within(Duration::from_secs(10)), "the mid-frame staller was not disconnected");
    let cut = wait_until(Duration::from_secs(10), || {
        b.log().matches("stalled in the middle of a frame").count() >= 2
    });
    assert!(cut, "both stalled clients should be disconnected; log:\n{}", b.log());
    drop(big);
    let o = cli(&t.db(), &["--json", "status"]);
    assert_exit(&o, 0);
    let j = json_out(&o);
    assert_eq!(j["clients"], 1, "only the status client itself is left: {j}");
}

#[test]
fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &[]);
    let s = RawConn::connect(&b.socket);
    // The broker allows 5 s for the handshake.
    assert!(s.closed_within(Duration::from_secs(15)), "a connection without a handshake was kept open");
    assert_exit(&cli(&t.db(), &["status"]), 0);
}

#[test]
fn a_silent_broker_does_not_hang_the_client() {
    use interprocess::local_socket::ListenerOptions;
    use litebroker_client::{Client, ClientError, ConnectOptions};
    let t = TestDir::new();
    std::fs::create_dir_all(t.path().join("data")).unwrap();
    let socket = if cfg!(windows) {
        format!("litebroker-test-silent-{}", std::process::id())
    } else {
        t.path().join("silent.sock").to_string_lossy().into_owned()
    };
    // Something that accepts connections and never answers (a hung broker).
    let listener =
        ListenerOptions::new().name(litebroker_protocol::rendezvous::socket_name(&socket).unwrap());
    // The client trusts a pipe by its owner, and under Wine only a pipe created with
    // a descriptor reports one: this stand-in gets the broker's.
    #[cfg(windows)]
    let listener = {
        use interprocess::os::windows::local_socket::ListenerOptionsExt;
        listener.security_descriptor(owner_only_pipe_descriptor())
    };
    let listener = listener.create_sync().expect("listener");
    let holder = thread::spawn(move || {
        use interprocess::local_socket::traits::Listener as _;
        let conn = listener.accept().expect("accept");
        thread::sleep(Duration::from_secs(15));
        drop(conn);
    });
    let mut opts = ConnectOptions::new(t.db()).socket(&socket);
    opts.connect_timeout = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let err = Client::connect_with(&opts).expect_err("no handshake answer must be an error");
    let took = started.elapsed();
    assert!(matches!(err, ClientError::ConnectionLost { .. }), "{err}");
    assert!(took < Duration::from_secs(5), "the client waited {took:?} for a silent broker");
    drop(holder);
}

#[test]
fn the_peer_pid_comes_from_the_os_not_from_the_handshake() {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &[]);
    let s = RawConn::connect(&b.socket);
    let ack = s.handshake_with(Hello { pid: 4_000_000_000, ..hello("platform-test") });
    let Response::Connections(list) = s.round_trip(&Request::Connections) else {
        panic!("no connections answer")
    };
    let me = list.iter().find(|c| c.id == ack.client_id).expect("this connection is listed");
    assert_eq!(me.pid, std::process::id(), "the claimed pid was believed: {list:?}");
}

#[test]
fn a_foreign_listener_on_the_broker_address_is_never_displaced() {
    use interprocess::local_socket::ListenerOptions;
    let t = TestDir::new();
    // A non-broker process (this test) already listens where the broker would.
    let socket = if cfg!(windows) {
        format!("litebroker-test-foreign-{}", std::process::id())
    } else {
        std::fs::create_dir_all(t.path().join("run")).unwrap();
        t.path().join("run").join("foreign.sock").to_string_lossy().into_owned()
    };
    let name = litebroker_protocol::rendezvous::socket_name(&socket).unwrap();
    let listener = ListenerOptions::new().name(name).create_sync().expect("foreign listener");
    let mut b = Broker::spawn(&t.db(), &["--socket", &socket]);
    let status = b.wait_exit(Duration::from_secs(30)).expect("broker exits");
    assert_eq!(status.code(), Some(3), "log:\n{}", b.log());
    let log = b.log();
    assert!(log.contains(&socket), "{log}");
    drop(listener);
}

#[test]
#[cfg_attr(
    litebroker_wine,
    ignore = "Wine 8 delivers no console control events here: AllocConsole fails without a terminal, \
              and under a pseudo-terminal GenerateConsoleCtrlEvent fails with ERROR_INVALID_HANDLE"
)]
fn console_break_is_a_clean_shutdown() {
    #[cfg(windows)]
    assert!(Broker::ensure_console(), "no console: {}", std::io::Error::last_os_error());
    let t = TestDir::new();
    let mut b = Broker::start(&t.db(), &[]);
    create_rows_table(&t.db());
    #[cfg(windows)]
    assert!(b.ctrl_break(), "GenerateConsoleCtrlEvent failed: {}", std::io::Error::last_os_error());
    #[cfg(unix)]
    b.signal(2); // SIGINT, what Ctrl-C sends
    let status = b.wait_exit(Duration::from_secs(20)).expect("broker exits on Ctrl-C/Ctrl-Break");
    assert_eq!(status.code(), Some(0), "log:\n{}", b.log());
    assert!(b.log().contains("stopped cleanly"), "{}", b.log());
    assert_exit(&cli(&t.db(), &["query", "SELECT count(*) FROM rows"]), 0);
}
