//! SQL text through the real writer path (`WriterHarness`: the writer with its
//! authorizer, group commit with savepoints, request ids, the connection check
//! before COMMIT): the input is split at 0xFF bytes into the requests of one
//! group, each prefixed by a good client's write. Whatever the input, nothing
//! panics, the temp schema stays empty, the connection's settings stay the
//! broker's, writes stay accepted, and each good write's answer matches the file.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use litebroker_protocol::{ErrorKind, Response, Statement};
use litebroker_server::testing::{WriteBody, WriterHarness};
use litebroker_server::Config;

struct World {
    _dir: tempfile::TempDir,
    harness: WriterHarness,
    /// The good clients' table, named so that the input cannot name it (it may
    /// drop or change any table it can name; that is allowed).
    table: String,
    runs: u32,
    victims: u64,
}

thread_local! {
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("f.db");
    let mut config = Config::new(&db);
    config.max_frame = 1 << 20;
    let mut harness = WriterHarness::open(&db, config).unwrap();
    let mut salt = [0u8; 8];
    getrandom::fill(&mut salt).unwrap();
    let table = format!("v{:016x}", u64::from_le_bytes(salt));
    let setup = harness.group(vec![(
        WriteBody::Execute(Statement::new(
            format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE t (a INTEGER PRIMARY KEY, b)"),
            vec![],
        )),
        None,
    )]);
    assert!(matches!(setup[0], Response::Executed(_)));
    World { _dir: dir, harness, table, runs: 0, victims: 0 }
}

fuzz_target!(|data: &[u8]| {
    let texts: Vec<String> =
        data.split(|&b| b == 0xFF).take(8).map(|t| String::from_utf8_lossy(t).into_owned()).collect();
    WORLD.with(|w| {
        let mut slot = w.borrow_mut();
        // A fresh database now and then, so that it does not grow without bound.
        if slot.as_ref().is_none_or(|w| w.runs >= 500) {
            *slot = Some(world());
        }
        let w = slot.as_mut().unwrap();
        w.runs += 1;
        let mut group = Vec::new();
        let mut victims = Vec::new();
        for text in texts {
            w.victims += 1;
            let v = format!("victim-{}", w.victims);
            victims.push((group.len(), v.clone()));
            let insert = format!("INSERT INTO {} (v) VALUES (?1)", w.table);
            group.push((WriteBody::Execute(Statement::new(insert, vec![v.into()])), None));
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&w.victims.to_be_bytes());
            group.push((WriteBody::Execute(Statement::new(text, vec![])), Some(id)));
        }
        let answers = w.harness.group(group);
        if let Err(e) = w.harness.check_invariants() {
            panic!("invariant broken: {e}");
        }
        // The connection check before COMMIT is the second line: a request it had
        // to stop is one the authorizer let through.
        for a in &answers {
            if let Response::Error(e) = a {
                let second_line = e.kind == ErrorKind::NotAllowed
                    && e.sqlite.is_none()
                    && e.message.starts_with("the request left state on the broker's shared connection");
                assert!(!second_line, "{}", e.message);
            }
        }
        for (i, v) in victims {
            let n: i64 = w
                .harness
                .connection()
                .query_row(&format!("SELECT count(*) FROM main.{} WHERE v = ?1", w.table), [&v], |r| r.get(0))
                .unwrap();
            let done = matches!(answers[i], Response::Executed(_));
            assert_eq!(n, i64::from(done), "{v}: answered {:?}, {n} row(s) in the file", answers[i]);
        }
    });
});
