//! The group wait (`--group-wait-us`), against the real broker under
//! `synchronous = FULL`: a lone writer is never delayed; a client that went quiet
//! is waited for at most once; several clients writing in a closed loop make the
//! broker wait and form larger groups than with the wait off; it is off by
//! default and with `--group-wait-us 0`; a bad value is exit 2.
//!
//! What is asserted is counted by the broker (its metrics and `status`), never a
//! wall-clock duration: the waits taken, the requests that joined during them, the
//! mean group size.

use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;

use litebroker_client::protocol::MetricValue;
use litebroker_client::{Client, Value};
use litebroker_tests::*;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT NOT NULL, v TEXT NOT NULL)";

fn insert(c: &mut Client, who: &str, i: usize) {
    c.execute(
        "INSERT INTO t (who, v) VALUES (?1, ?2)",
        &[Value::Text(who.into()), Value::Text(i.to_string())],
    )
    .unwrap_or_else(|e| panic!("{who} write {i}: {e}"));
}

/// The broker's group-wait figures: waits taken, requests that joined during
/// them, clients waited for in vain.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Waits {
    taken: u64,
    joined: u64,
    missed: u64,
}

fn waits(c: &mut Client) -> Waits {
    let m = c.metrics().expect("metrics");
    let value = |name: &str| {
        let f = m.families.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no family {name}"));
        f.series[0].value.clone()
    };
    let taken = match value("litebroker_group_wait_seconds") {
        MetricValue::Histogram(h) => h.counts.iter().sum(),
        other => panic!("litebroker_group_wait_seconds is {other:?}"),
    };
    let counter = |name: &str| match value(name) {
        MetricValue::Number(n) => n as u64,
        other => panic!("{name} is {other:?}"),
    };
    Waits {
        taken,
        joined: counter("litebroker_group_wait_joined_total"),
        missed: counter("litebroker_group_wait_missed_total"),
    }
}

#[test]
fn a_lone_writer_under_full_is_never_delayed_by_the_group_wait() {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &["--synchronous", "full", "--group-wait-us", "1000"]);
    let mut c = b.client("lone");
    c.execute(SCHEMA, &[]).expect("schema");
    for i in 0..200 {
        insert(&mut c, "lone", i);
    }
    let st = c.status().expect("status");
    assert!(st.group_commits >= 201, "{st:?}");
    assert_eq!(st.max_group, 1, "{st:?}");
    assert_eq!(waits(&mut c), Waits { taken: 0, joined: 0, missed: 0 });
}

#[test]
fn a_client_that_went_quiet_is_waited_for_at_most_once() {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &["--synchronous", "full", "--group-wait-us", "1000"]);
    let mut quiet = b.client("quiet");
    quiet.execute(SCHEMA, &[]).expect("schema");
    insert(&mut quiet, "quiet", 0);
    // `quiet` stays connected and writes nothing more: the broker may wait for it
    // once (it was answered a moment ago), then forgets it.
    let mut busy = b.client("busy");
    for i in 0..100 {
        insert(&mut busy, "busy", i);
    }
    let w = waits(&mut busy);
    assert!(w.taken <= 1, "{w:?}");
    assert_eq!((w.joined, w.missed), (0, w.taken), "{w:?}");
}

/// Mean requests per group and the waits, after `clients` threads (each with its
/// own connection) wrote `each` rows in a closed loop, started together.
fn closed_loop(args: &[&str], clients: usize, each: usize) -> (f64, Waits) {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), args);
    let mut admin = b.client("admin");
    admin.execute(SCHEMA, &[]).expect("schema");
    let before = admin.status().expect("status");
    let go = Arc::new(Barrier::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|n| {
            let mut c = b.client(&format!("c{n}"));
            let go = go.clone();
            thread::spawn(move || {
                go.wait();
                for i in 0..each {
                    insert(&mut c, &format!("c{n}"), i);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer thread");
    }
    let after = admin.status().expect("status");
    let requests = after.group_requests - before.group_requests;
    let commits = after.group_commits - before.group_commits;
    assert_eq!(requests, (clients * each) as u64, "{after:?}");
    (requests as f64 / commits as f64, waits(&mut admin))
}

#[test]
fn several_clients_under_full_make_the_broker_wait_and_form_larger_groups_unless_it_is_off() {
    let none = Waits { taken: 0, joined: 0, missed: 0 };
    let (_, default) = closed_loop(&["--synchronous", "full"], 8, 50);
    assert_eq!(default, none, "the broker waited by default");
    let (mean_off, off) = closed_loop(&["--synchronous", "full", "--group-wait-us", "0"], 8, 150);
    assert_eq!(off, none, "--group-wait-us 0 waited");
    let (mean_on, on) = closed_loop(&["--synchronous", "full", "--group-wait-us", "1000"], 8, 150);
    assert!(on.taken > 0 && on.joined > 0, "no wait taken with --group-wait-us 1000: {on:?}");
    assert!(
        mean_on >= mean_off,
        "groups were smaller with the wait: {mean_on:.2} requests/commit against {mean_off:.2} without ({on:?})"
    );
}

#[test]
fn a_bad_group_wait_is_exit_2_naming_the_flag() {
    let t = TestDir::new();
    for bad in ["100001", "-5", "1ms", ""] {
        let o = Command::new(bin("litebrokerd"))
            .arg("--db")
            .arg(t.db())
            .arg(format!("--group-wait-us={bad}"))
            .stdin(Stdio::null())
            .output()
            .expect("litebrokerd");
        assert_exit(&o, 2);
        let err = stderr(&o);
        assert!(err.contains("--group-wait-us"), "{bad:?}: {err}");
        assert!(!t.db().parent().unwrap().exists(), "{bad:?}: the database's folder was created");
    }
}
