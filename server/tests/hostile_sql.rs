//! What no client SQL may do to the broker, checked through the real writer path
//! (`WriterHarness`: the writer, its authorizer, group commit, sessions) with
//! statements drawn from a corpus of hostile ones — temp objects in every
//! spelling, savepoint and transaction statements with brackets, quotes,
//! comments, NUL and other control characters, multibyte names, connection
//! settings — mixed with good clients' writes in the same groups.
//!
//! After every group and session: no transaction is left open, the temp schema
//! is empty, the connection's settings are the broker's, writes are still
//! accepted, and every good write's answer matches the file (answered "done" =
//! its row is there exactly once, read through another connection; answered
//! with an error = absent).

use litebroker_protocol::{ErrorKind, Response, Statement};
use litebroker_server::testing::{WriteBody, WriterHarness};
use litebroker_server::Config;
use proptest::prelude::*;

/// Statements a hostile or careless client might send. `{n}` is a name.
const CORPUS: &[&str] = &[
    // Temp objects, whatever the spelling or action code SQLite reports.
    "CREATE TEMP TABLE {n} (v)",
    "CREATE TEMPORARY TABLE {n} (v)",
    "CREATE TABLE temp.{n} (v)",
    "CREATE TABLE \"temp\".{n} (v)",
    "CREATE TABLE [temp].{n} (v)",
    "create table TeMp.{n} (v)",
    "CREATE TABLE temp.{n} AS SELECT * FROM p",
    "CREATE TEMP TABLE p (v)",
    "CREATE TEMP TABLE skus (id INTEGER PRIMARY KEY, sku TEXT UNIQUE, qty INT)",
    "CREATE TEMP VIEW p AS SELECT 'forged' AS v",
    "CREATE VIEW temp.{n} AS SELECT 1",
    "CREATE TEMP TRIGGER {n} AFTER INSERT ON p BEGIN DELETE FROM p; END",
    "CREATE TRIGGER temp.{n} AFTER INSERT ON p BEGIN DELETE FROM p; END",
    "CREATE TRIGGER \"temp\".\"{n}\" BEFORE INSERT ON main.p BEGIN SELECT RAISE(ABORT, 'no'); END",
    "CREATE INDEX temp.{n} ON p (v)",
    "CREATE VIRTUAL TABLE temp.{n} USING fts5(a)",
    "CREATE TEMP TABLE x (id BLOB PRIMARY KEY, created_ms INTEGER NOT NULL, answer BLOB NOT NULL) WITHOUT ROWID; ALTER TABLE temp.x RENAME TO _litebroker_requests",
    "ALTER TABLE temp.{n} RENAME TO _litebroker_requests",
    "DROP TABLE temp.{n}",
    "INSERT INTO temp.{n} VALUES (1)",
    // The broker's savepoint and transaction, in every spelling, and the
    // savepoint's former name.
    "SAVEPOINT _litebroker_req",
    "RELEASE _litebroker_req",
    "RELEASE[_litebroker_req]",
    "RELEASE\"_litebroker_req\"",
    "RELEASE '_litebroker_req'",
    "RELEASE `_LITEBROKER_REQ`",
    "RELEASE/**/SAVEPOINT/**/_litebroker_req",
    "ROLLBACK TO[_litebroker_req]",
    "ROLLBACK TRANSACTION TO SAVEPOINT\"_LiteBroker_req\"",
    "INSERT INTO p (v) VALUES ('part'); RELEASE[_litebroker_req]; INSERT INTO p (v) VALUES ('dup'); INSERT INTO u (v) VALUES ('dup'); INSERT INTO u (v) VALUES ('dup')",
    "SAVEPOINT litebroker_req",
    "RELEASE[litebroker_req]",
    "ROLLBACK TO \"LiteBroker_req\"",
    "COMMIT",
    "COMMIT\0",
    "COMMIT\0; VACUUM INTO '/tmp/x.db'",
    "END",
    "END TRANSACTION",
    "ROLLBACK",
    "ROLLBACK\0",
    "COMMIT--x",
    "/*x*/COMMIT/*y*/",
    "\u{b}COMMIT",
    "\u{c}END\u{c}",
    "BEGIN",
    "BEGIN EXCLUSIVE",
    "INSERT INTO p (v) VALUES ('before commit'); COMMIT",
    "BEGIN; INSERT INTO p (v) VALUES ('wrapped'); COMMIT",
    "SAVEPOINT [é",
    "RELEASE \"é",
    "ROLLBACK TO 'é",
    "SAVEPOINT é_ü; INSERT INTO p (v) VALUES ('inner'); RELEASE é_ü",
    "SAVEPOINT \"{n}\"",
    "RELEASE {n}",
    // Connection settings.
    "PRAGMA defer_foreign_keys = ON",
    "PRAGMA defer_foreign_keys = OFF",
    "PRAGMA temp.user_version = 5",
    "PRAGMA temp_store = FILE",
    "PRAGMA foreign_keys = OFF",
    "PRAGMA recursive_triggers = 1",
    "PRAGMA query_only = 1",
    "PRAGMA temp.cache_size = 10",
    "PRAGMA main.journal_mode = DELETE",
    // Other files and native code.
    "ATTACH ':memory:' AS aux",
    "ATTACH 'file:x?mode=memory' AS temp2",
    "VACUUM",
    "VACUUM INTO '/tmp/lb-hostile.db'",
    "SELECT load_extension('x')",
    "SELECT randomblob(999999999)",
];

/// Text inserted between tokens, around statements, or instead of spaces.
const NOISE: &[&str] = &[" ", "/**/", "/* c */", "--x\n", "\n", "\t", "\u{b}", "\u{c}", "\r\n", "\0"];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_]{0,8}",
        Just("é".to_owned()),
        Just("名前".to_owned()),
        Just("_litebroker_req".to_owned()),
        Just("litebroker_req".to_owned()),
        Just("_litebroker_requests".to_owned()),
        Just("p".to_owned()),
    ]
}

/// A hostile statement: one from the corpus, its name filled in, its spaces
/// perhaps replaced by comments or control characters, its case perhaps changed,
/// perhaps wrapped in or followed by transaction control.
fn hostile() -> impl Strategy<Value = String> {
    (
        prop::sample::select(CORPUS),
        name(),
        prop::option::of(prop::sample::select(NOISE)),
        any::<bool>(),
        0..4u8,
    )
        .prop_map(|(template, n, noise, upper, wrap)| {
            let mut sql = template.replace("{n}", &n);
            if let Some(noise) = noise {
                sql = sql.replacen(' ', noise, 2);
            }
            if upper {
                sql = sql.to_uppercase();
            }
            match wrap {
                1 => format!("BEGIN; {sql}; COMMIT"),
                2 => format!("{sql};COMMIT"),
                3 => format!("SELECT 1;{sql}"),
                _ => sql,
            }
        })
}

/// One request of a group: a good client's insert (its value is unique), or a
/// hostile statement, alone or in a batch.
#[derive(Debug, Clone)]
enum Req {
    Victim,
    Hostile(String),
    HostileBatch(Vec<String>),
}

fn requests() -> impl Strategy<Value = Vec<Req>> {
    prop::collection::vec(
        prop_oneof![
            3 => Just(Req::Victim),
            3 => hostile().prop_map(Req::Hostile),
            1 => prop::collection::vec(hostile(), 1..4).prop_map(Req::HostileBatch),
        ],
        1..8,
    )
}

struct World {
    _dir: tempfile::TempDir,
    harness: WriterHarness,
    db: std::path::PathBuf,
    next_victim: u64,
    next_id: u64,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("h.db");
        let mut config = Config::new(&db);
        config.max_frame = 1 << 20;
        let mut harness = WriterHarness::open(&db, config).expect("writer");
        let setup = harness.group(vec![(
            WriteBody::Execute(Statement::new(
                "CREATE TABLE p (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE u (v TEXT UNIQUE); \
                 CREATE TABLE skus (id INTEGER PRIMARY KEY, sku TEXT UNIQUE, qty INT); \
                 CREATE TABLE parent (id INTEGER PRIMARY KEY); \
                 CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED); \
                 CREATE TABLE child_now (p INTEGER REFERENCES parent(id))",
                vec![],
            )),
            None,
        )]);
        assert!(matches!(setup[0], Response::Executed(_)), "{setup:?}");
        World { _dir: dir, harness, db, next_victim: 0, next_id: 0 }
    }

    fn id(&mut self) -> [u8; 16] {
        self.next_id += 1;
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&self.next_id.to_be_bytes());
        // Ids start with their time; any recent prefix will do.
        id[..6].copy_from_slice(&1_700_000_000_000u64.to_be_bytes()[2..]);
        id
    }

    /// Runs one group; returns each victim's value and whether it was answered done.
    fn run(&mut self, reqs: &[Req]) -> Vec<(String, bool)> {
        let mut victims = Vec::new();
        let mut group = Vec::new();
        for r in reqs {
            let id = Some(self.id());
            let body = match r {
                Req::Victim => {
                    self.next_victim += 1;
                    let v = format!("victim-{}", self.next_victim);
                    victims.push((group.len(), v.clone()));
                    WriteBody::Execute(Statement::new("INSERT INTO p (v) VALUES (?1)", vec![v.into()]))
                }
                Req::Hostile(sql) => WriteBody::Execute(Statement::new(sql.clone(), vec![])),
                Req::HostileBatch(sqls) => {
                    WriteBody::Batch(sqls.iter().map(|s| Statement::new(s.clone(), vec![])).collect())
                }
            };
            group.push((body, id));
        }
        let answers = self.harness.group(group);
        // The connection check before COMMIT is the second line: a request it had
        // to stop is one the authorizer let through.
        for (a, r) in answers.iter().zip(reqs) {
            if let Response::Error(e) = a {
                let second_line = e.kind == ErrorKind::NotAllowed
                    && e.sqlite.is_none()
                    && e.message.starts_with("the request left state on the broker's shared connection");
                assert!(!second_line, "{r:?}: {}", e.message);
            }
        }
        victims.into_iter().map(|(i, v)| (v, matches!(answers[i], Response::Executed(_)))).collect()
    }

    /// Rows with value `v` in the file, read through another connection.
    fn in_file(&self, v: &str) -> i64 {
        let c = rusqlite::Connection::open_with_flags(&self.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("reader");
        c.query_row("SELECT count(*) FROM main.p WHERE v = ?1", [v], |r| r.get(0)).expect("count")
    }

    fn check(&self, victims: &[(String, bool)]) -> Result<(), TestCaseError> {
        if let Err(e) = self.harness.check_invariants() {
            return Err(TestCaseError::fail(e));
        }
        for (v, done) in victims {
            let n = self.in_file(v);
            prop_assert_eq!(n, i64::from(*done), "{} answered done={} but {} row(s) in the file", v, done, n);
        }
        Ok(())
    }
}

fn run_case(groups: Vec<Vec<Req>>, session: Vec<String>, commit: bool) -> Result<(), TestCaseError> {
    let mut w = World::new();
    for g in &groups {
        let victims = w.run(g);
        w.check(&victims)?;
    }
    // A write session made of hostile statements, then good writes after it.
    let calls = session.into_iter().map(|s| WriteBody::Execute(Statement::new(s, vec![]))).collect();
    let answers = w.harness.session(calls, commit);
    prop_assert!(matches!(answers[0], Response::SessionLeased { .. }), "{:?}", answers[0]);
    w.check(&[])?;
    let victims = w.run(&[Req::Victim, Req::Victim]);
    prop_assert!(victims.iter().all(|(_, done)| *done), "good writes after the session failed: {victims:?}");
    w.check(&victims)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_client_sql_leaves_state_on_the_connection_or_breaks_anyone_elses_write(
        groups in prop::collection::vec(requests(), 1..5),
        session in prop::collection::vec(hostile(), 0..4),
        commit in any::<bool>(),
    ) {
        run_case(groups, session, commit)?;
    }
}

/// Every corpus statement, alone and between two good writes, plainly spelled.
#[test]
fn every_corpus_statement_is_harmless_to_the_others() {
    for template in CORPUS {
        let sql = template.replace("{n}", "x");
        let groups =
            vec![vec![Req::Victim, Req::Hostile(sql.clone()), Req::Victim], vec![Req::Hostile(sql.clone())]];
        if let Err(e) = run_case(groups, vec![sql.clone()], true) {
            panic!("{sql:?}: {e}");
        }
    }
}

/// The statements that once slipped through are refused, with a message naming
/// what and why, and the good write beside them commits exactly once.
#[test]
fn the_reported_bypasses_are_refused_by_name() {
    let mut w = World::new();
    for (sql, needle) in [
        (
            "CREATE TRIGGER temp.wipe AFTER INSERT ON p BEGIN DELETE FROM p; END",
            "in the temp schema is not allowed",
        ),
        (
            "CREATE TEMP TABLE skus (id INTEGER PRIMARY KEY, sku TEXT UNIQUE, qty INT)",
            "in the temp schema is not allowed",
        ),
        ("CREATE TEMP VIEW skus AS SELECT 'A1' AS sku, 999999 AS qty", "in the temp schema is not allowed"),
        ("ALTER TABLE temp.x RENAME TO _litebroker_requests", "temp"),
        ("RELEASE[_litebroker_req]", "reserved"),
        ("ROLLBACK TO\"_litebroker_req\"", "reserved"),
        ("RELEASE[litebroker_req]", "reserved"),
        ("COMMIT\0", "NUL byte"),
        ("SAVEPOINT [é", "unrecognized token"),
        ("PRAGMA defer_foreign_keys = OFF", "defer_foreign_keys"),
    ] {
        let answers = w.harness.group(vec![
            (WriteBody::Execute(Statement::new(sql, vec![])), None),
            (WriteBody::Execute(Statement::new("INSERT INTO p (v) VALUES (?1)", vec![sql.into()])), None),
        ]);
        match &answers[0] {
            Response::Error(e) => assert!(e.message.contains(needle), "{sql:?}: {}", e.message),
            other => panic!("{sql:?} was accepted: {other:?}"),
        }
        assert!(matches!(answers[1], Response::Executed(_)), "{sql:?}: {:?}", answers[1]);
        assert_eq!(w.in_file(sql), 1, "{sql:?}");
        w.harness.check_invariants().unwrap_or_else(|e| panic!("{sql:?}: {e}"));
    }
}

/// A deferred-FK setting turned on by one request does not reach the next one of
/// its group: `INSERT child(998); INSERT parent(998)` with an immediate foreign
/// key fails alone, so it must fail in the group too.
#[test]
fn defer_foreign_keys_stays_with_its_request() {
    let mut w = World::new();
    let victim = "INSERT INTO child_now VALUES (998); INSERT INTO parent VALUES (998)";
    let alone = w.harness.group(vec![(WriteBody::Execute(Statement::new(victim, vec![])), None)]);
    assert!(matches!(&alone[0], Response::Error(e) if e.message.contains("FOREIGN KEY")), "{alone:?}");
    let answers = w.harness.group(vec![
        (WriteBody::Execute(Statement::new("PRAGMA defer_foreign_keys = ON", vec![])), None),
        (WriteBody::Execute(Statement::new(victim, vec![])), None),
    ]);
    assert!(matches!(answers[0], Response::Executed(_)), "{answers:?}");
    assert!(matches!(&answers[1], Response::Error(e) if e.message.contains("FOREIGN KEY")), "{answers:?}");
    // A session may defer until its COMMIT.
    let session = w.harness.session(
        vec![
            WriteBody::Execute(Statement::new("PRAGMA defer_foreign_keys = ON", vec![])),
            WriteBody::Execute(Statement::new("INSERT INTO child_now VALUES (997)", vec![])),
            WriteBody::Execute(Statement::new("INSERT INTO parent VALUES (997)", vec![])),
        ],
        true,
    );
    assert!(matches!(session.last(), Some(Response::SessionEnded { committed: true })), "{session:?}");
    let unsettled = w.harness.session(
        vec![
            WriteBody::Execute(Statement::new("PRAGMA defer_foreign_keys = ON", vec![])),
            WriteBody::Execute(Statement::new("INSERT INTO child_now VALUES (996)", vec![])),
        ],
        true,
    );
    assert!(
        matches!(unsettled.last(), Some(Response::Error(e)) if e.message.contains("FOREIGN KEY")),
        "{unsettled:?}"
    );
    // Its own request may defer: the violation is settled before its end.
    let own = w.harness.group(vec![
        (WriteBody::Execute(Statement::new("SELECT 1", vec![])), None),
        (
            WriteBody::Execute(Statement::new(format!("PRAGMA defer_foreign_keys = ON; {victim}"), vec![])),
            None,
        ),
    ]);
    assert!(own.iter().all(|a| matches!(a, Response::Executed(_))), "{own:?}");
    w.harness.check_invariants().unwrap();
    let n: i64 =
        w.harness.connection().query_row("SELECT count(*) FROM child_now", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2);
}
