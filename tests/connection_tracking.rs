//! Stop condition 3: connections are tracked and return to zero. In its own test
//! binary because the count is per process: tests running beside it would disturb
//! it.

use std::time::Duration;

use litebroker_client::{active_connections_count, Client, ConnectOptions, Reader};
use litebroker_tests::*;

fn names(db: &std::path::Path) -> Vec<(String, u32)> {
    let o = cli(db, &["--json", "connections"]);
    assert_exit(&o, 0);
    let v = json_out(&o);
    v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c["pid"].as_u64().unwrap() as u32))
        .collect()
}

/// Stop condition 3: connections are tracked and return to zero. This process
/// counts its broker connections and readers; the broker lists its clients by name
/// and pid, and forgets a client process killed without closing anything.
#[test]
fn connections_are_tracked_and_return_to_zero() {
    let t = TestDir::new();
    let _b = Broker::start(&t.db(), &[]);
    assert_exit(&cli(&t.db(), &["exec", "CREATE TABLE skus (sku TEXT)"]), 0);
    assert_eq!(active_connections_count(), 0);

    let c1 = Client::connect_with(&ConnectOptions::new(t.db()).client_name("track-a")).unwrap();
    assert_eq!(active_connections_count(), 1);
    let r1 = Reader::open(t.db()).unwrap();
    assert_eq!(active_connections_count(), 2);
    let c2 = Client::connect_with(&ConnectOptions::new(t.db()).client_name("track-b")).unwrap();
    assert_eq!(active_connections_count(), 3);
    drop(r1);
    assert_eq!(active_connections_count(), 2);

    let me = std::process::id();
    let listed = names(&t.db());
    assert!(
        listed.contains(&("track-a".into(), me)) && listed.contains(&("track-b".into(), me)),
        "{listed:?}"
    );

    // A client process that dies without closing anything.
    let mut holder = Proc::lbtool(&t.db(), &["hold"]);
    assert_eq!(holder.json_line(Duration::from_secs(20))["connected"], true);
    let pid = holder.pid();
    assert!(names(&t.db()).contains(&("lbtool-hold".into(), pid)));
    holder.kill9();
    assert!(
        wait_until(Duration::from_secs(10), || !names(&t.db()).iter().any(|(_, p)| *p == pid)),
        "the broker still lists the killed client"
    );

    drop(c1);
    drop(c2);
    assert_eq!(active_connections_count(), 0, "connection leak");
    assert!(
        wait_until(Duration::from_secs(10), || !names(&t.db()).iter().any(|(_, p)| *p == me)),
        "the broker still lists this process's closed connections"
    );
}
