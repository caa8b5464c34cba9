//! A request the broker cannot decode, from a client of a higher protocol minor
//! (one that knows requests appended after the broker's minor), is answered with
//! a typed protocol error that says so and names both versions; a client of the
//! broker's own minor gets the plain "malformed frame" answer. Either way the
//! connection stays usable. A request appended in a later minor than the client
//! said it speaks is refused with a protocol error rather than answered with a
//! variant that client could not decode.

use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use litebroker_protocol::stream::FrameStream;
use litebroker_protocol::{
    encode_frame, ErrorKind, Hello, Request, Response, FRAME_HEADER_LEN, HARD_MAX_FRAME, PROTOCOL_MINOR,
    PROTOCOL_VERSION,
};
use litebroker_server::{run, Config, StopReason};

const WAIT: Duration = Duration::from_secs(10);

fn hello(minor: u32) -> Request {
    Request::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        minor,
        client_name: "protocol_minor test".into(),
        pid: std::process::id(),
        expected_schema: None,
    })
}

/// Sends a frame whose payload is a request variant no broker of this minor knows.
fn unknown_request(c: &mut FrameStream) -> Response {
    let mut frame = Vec::new();
    encode_frame(&Request::Ping, &mut frame, HARD_MAX_FRAME).unwrap();
    assert_eq!(frame.len(), FRAME_HEADER_LEN + 1, "Ping is its variant index alone");
    frame[FRAME_HEADER_LEN] = 0xEE;
    let mut stream = c.get_ref();
    stream.write_all(&frame).unwrap();
    c.read_response().unwrap()
}

#[test]
fn an_unknown_request_from_a_newer_minor_is_answered_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let config = Config::new(dir.path().join("minor.db"));
    let broker = std::thread::spawn(move || run(config, |ready| ready_tx.send(ready.clone()).unwrap()));
    let ready = ready_rx.recv_timeout(WAIT).expect("the broker listens");

    let newer = PROTOCOL_MINOR + 1;
    let mut c = FrameStream::connect(&ready.socket).unwrap();
    assert!(matches!(c.round_trip(&hello(newer), WAIT).unwrap(), Response::Hello(_)));
    let Response::Error(e) = unknown_request(&mut c) else { panic!("not an error") };
    assert_eq!(e.kind, ErrorKind::Protocol, "{e:?}");
    for needle in [
        "malformed frame".to_owned(),
        format!("this client speaks protocol {PROTOCOL_VERSION}.{newer}"),
        format!("this broker {PROTOCOL_VERSION}.{PROTOCOL_MINOR}"),
        "upgrade the broker".to_owned(),
    ] {
        assert!(e.message.contains(&needle), "{:?} lacks {needle:?}", e.message);
    }
    assert_eq!(c.round_trip(&Request::Ping, WAIT).unwrap(), Response::Pong);

    let mut same = FrameStream::connect(&ready.socket).unwrap();
    assert!(matches!(same.round_trip(&hello(PROTOCOL_MINOR), WAIT).unwrap(), Response::Hello(_)));
    let Response::Error(e) = unknown_request(&mut same) else { panic!("not an error") };
    assert_eq!(e.kind, ErrorKind::Protocol, "{e:?}");
    assert!(e.message.starts_with("malformed frame") && !e.message.contains("this broker"), "{e:?}");
    assert_eq!(same.round_trip(&Request::Ping, WAIT).unwrap(), Response::Pong);

    // The change feed's requests from a minor-1 client (which could only have
    // forged them): an error it can decode, never a stream of variants it cannot.
    let mut old = FrameStream::connect(&ready.socket).unwrap();
    assert!(matches!(old.round_trip(&hello(1), WAIT).unwrap(), Response::Hello(_)));
    for req in [Request::Watch { tables: vec![], since: None }, Request::FeedStats] {
        let Response::Error(e) = old.round_trip(&req, WAIT).unwrap() else { panic!("{req:?} answered") };
        assert_eq!(e.kind, ErrorKind::Protocol, "{e:?}");
        assert!(e.message.contains("needs protocol 1.2") && e.message.contains("speaks 1.1"), "{e:?}");
    }
    assert_eq!(old.round_trip(&Request::Ping, WAIT).unwrap(), Response::Pong);

    drop((c, same, old));
    ready.stopper.stop(StopReason::Signal);
    broker.join().unwrap().unwrap();
}

#[test]
fn metrics_are_answered_only_to_clients_that_said_they_speak_minor_2() {
    let dir = tempfile::tempdir().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let config = Config::new(dir.path().join("minor.db"));
    let broker = std::thread::spawn(move || run(config, |ready| ready_tx.send(ready.clone()).unwrap()));
    let ready = ready_rx.recv_timeout(WAIT).expect("the broker listens");

    // A client of minor 1 could not decode `Response::Metrics`: it gets an error
    // of a kind it knows instead, and the connection stays usable.
    let mut old = FrameStream::connect(&ready.socket).unwrap();
    assert!(matches!(old.round_trip(&hello(1), WAIT).unwrap(), Response::Hello(_)));
    let Response::Error(e) = old.round_trip(&Request::Metrics, WAIT).unwrap() else { panic!("not an error") };
    assert_eq!(e.kind, ErrorKind::Protocol, "{e:?}");
    assert!(e.message.contains("needs protocol 1.2") && e.message.contains("speaks 1.1"), "{e:?}");
    assert_eq!(old.round_trip(&Request::Ping, WAIT).unwrap(), Response::Pong);

    let mut new = FrameStream::connect(&ready.socket).unwrap();
    assert!(matches!(new.round_trip(&hello(2), WAIT).unwrap(), Response::Hello(_)));
    let Response::Metrics(m) = new.round_trip(&Request::Metrics, WAIT).unwrap() else { panic!("no metrics") };
    assert!(m.family("litebroker_requests_total").is_some(), "{m:?}");
    // The old client's refusal is counted as such.
    let refused = m.number("litebroker_requests_total", &[("kind", "metrics"), ("outcome", "protocol")]);
    assert_eq!(refused, Some(1.0));

    drop((old, new));
    ready.stopper.stop(StopReason::Signal);
    broker.join().unwrap().unwrap();
}
