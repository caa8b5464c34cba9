//! `litebroker --autostart` (env `LITEBROKER_AUTOSTART=1`): a write with no broker
//! running starts one through the client library's on-demand start, whose race
//! the database's lock settles: of ten CLIs started at once, all succeed and one
//! broker remains.
//!
//! Linux only: the brokers are counted from `/proc`. The Windows start (detached,
//! `CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW`) is the library's, tested there.
#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use litebroker_tests::*;

#[test]
fn ten_clis_writing_at_once_with_autostart_start_one_broker_and_every_write_lands() {
    let t = TestDir::new();
    let db = t.db();
    let _cleanup = NoStrayBrokers(db.clone());
    assert!(broker_pids(&db).is_empty());

    // Without it, a write exits 3 at once and starts nothing (in a folder that
    // exists: a missing one is another error).
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let o = cli(&db, &["exec", "SELECT 1"]);
    assert_exit(&o, 3);
    let o = Command::new(bin("litebroker"))
        .arg("--db")
        .arg(&db)
        .args(["exec", "SELECT 1"])
        .env("LITEBROKER_AUTOSTART", "0")
        .output()
        .unwrap();
    assert_exit(&o, 3);
    assert!(broker_pids(&db).is_empty(), "a CLI without --autostart started a broker");

    // Ten at once, half with the flag, half with the environment variable. Each
    // waits behind a shell until the file `go` appears (60 s at most, should the
    // test fail before making it), so that all look for a broker in the same few
    // milliseconds. The broker is found next to the CLI, as an installed pair would be.
    let go = t.path().join("go");
    let children: Vec<_> = (0..10)
        .map(|i| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", r#"n=0; until [ -e "$1" ] || [ $n -ge 12000 ]; do sleep 0.005; n=$((n+1)); done; shift; exec "$@""#, "sh"])
                .arg(&go)
                .arg(bin("litebroker"))
                .arg("--db")
                .arg(&db);
            if i % 2 == 0 {
                cmd.arg("--autostart");
            } else {
                cmd.env("LITEBROKER_AUTOSTART", "1");
            }
            cmd.args([
                "exec",
                "CREATE TABLE IF NOT EXISTS w (i INTEGER PRIMARY KEY); INSERT INTO w VALUES (?)",
                &i.to_string(),
            ])
            .env_remove("LITEBROKERD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn litebroker")
        })
        .collect();
    std::fs::write(&go, "").unwrap();
    for (i, child) in children.into_iter().enumerate() {
        let o = wait_output(child, Duration::from_secs(60), &format!("litebroker #{i}"));
        assert_exit(&o, 0);
        assert_eq!(stdout(&o), format!("changes: 1, last insert rowid: {i}\n"));
    }
    assert_eq!(query_i64(&db, "SELECT count(*) FROM w"), 10);

    // The losers of the race exit 3 by themselves: one broker remains, the one
    // `status` reaches, and only one ever listened.
    let mut pids = BTreeSet::new();
    assert!(
        wait_until(Duration::from_secs(15), || {
            pids = broker_pids(&db);
            pids.len() == 1
        }),
        "brokers of the database: {pids:?}"
    );
    let o = cli(&db, &["--json", "status"]);
    assert_exit(&o, 0);
    let status = json_out(&o);
    assert_eq!(pids.into_iter().next().map(u64::from), status["pid"].as_u64(), "{status}");
    let log =
        std::fs::read_to_string(db.with_file_name("app.db-broker.log")).expect("the started broker's log");
    assert_eq!(log.matches("listening on").count(), 1, "{log}");
    // How many brokers the ten started (each loser exits 3 naming the winner or its lock).
    let losers =
        log.lines().filter(|l| l.contains("another broker") || l.contains("holds the broker lock")).count();
    eprintln!("the ten CLIs started {} brokers; one serves", losers + 1);
}
