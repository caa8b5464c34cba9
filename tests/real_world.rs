//! The real-world flow: app instances that start at the same instant with no broker
//! (one broker ends up serving them all), the login service files, and the
//! many-instances launcher with its bookkeeping check.
//!
//! SIGTERM from a service manager being a clean shutdown (exit 0, socket removed)
//! is `foundation::sigterm_is_a_clean_shutdown_that_removes_the_socket`; here the
//! generated unit is checked to stop the broker with SIGTERM.
//!
//! Unix only, so not run under Wine: the scripts are bash, the process checks read
//! `/proc`, the unit check needs systemd. The Windows on-demand start (detached with
//! `CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW`) compiles in the Windows build but is
//! not exercised here.
#![cfg(unix)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use litebroker_tests::*;
use serde_json::Value as Json;

/// The repository: the test package's folder (`tests/`) is at its top.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository above tests/").to_path_buf()
}

fn script(name: &str) -> PathBuf {
    repo_root().join("scripts").join(name)
}

/// Fields of `/proc/<pid>/stat` after the command name: [state, ppid, pgrp, session, …].
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &text[text.rfind(')')? + 2..];
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|f| f[0] != "Z")
}

#[cfg(target_os = "linux")]
#[test]
fn ten_instances_started_at_once_share_the_one_broker_they_started() {
    let t = TestDir::new();
    let db = t.db();
    let _cleanup = NoStrayBrokers(db.clone());
    let go = t.path().join("go");
    let mut instances: Vec<Proc> = (1..=10)
        .map(|i| {
            let mut cmd = Command::new(bin("inventory-demo"));
            cmd.arg("--db")
                .arg(&db)
                .args(["--instance", &i.to_string(), "--ops", "20", "--autostart", "--wait-for"])
                .arg(&go)
                // The broker is found next to the program, as an installed app's would be.
                .env_remove("LITEBROKERD");
            Proc::spawn(cmd)
        })
        .collect();
    for p in &instances {
        assert_eq!(p.json_line(READY_TIMEOUT)["waiting"], true);
    }
    assert!(broker_pids(&db).is_empty(), "no broker may run before the instances start");
    // Every instance is polling for this file: they all connect at the same instant.
    fs::write(&go, "").unwrap();
    let released = Instant::now();

    let mut summaries = Vec::new();
    for p in &mut instances {
        let summary = p.json_line(Duration::from_secs(60));
        let status = p.wait_exit(Duration::from_secs(30)).expect("instance exits");
        assert!(status.success(), "instance failed: {summary}");
        assert_eq!(summary["errors"], 0, "{summary}");
        summaries.push(summary);
    }
    let took = released.elapsed();
    // The test's ends of the instances' pipes close here: a broker tied to them
    // (stdio inherited, same session) would now be at risk.
    drop(instances);

    let broker: BTreeSet<u64> = summaries.iter().map(|s| s["broker_pid"].as_u64().unwrap()).collect();
    assert_eq!(broker.len(), 1, "all ten talk to one broker: {broker:?}");
    let pid = *broker.iter().next().unwrap() as u32;
    let starters: Vec<&Json> = summaries.iter().filter(|s| s["broker"] == "started_here").collect();
    assert_eq!(starters.len(), 1, "exactly one instance started the survivor: {summaries:?}");
    for s in &summaries {
        assert!(
            s["broker"] == "started_here"
                || s["broker"] == "started_elsewhere"
                || s["broker"] == "already_running"
        );
    }
    let migrators: Vec<&Json> =
        summaries.iter().filter(|s| s["migrations_applied"] != serde_json::json!([])).collect();
    assert_eq!(migrators.len(), 1, "the schema is migrated once: {summaries:?}");
    assert_eq!(migrators[0]["migrations_applied"], serde_json::json!([1, 2, 3]));

    // Losers exit with code 3 on their own, possibly after their instance finished.
    assert!(
        wait_until(Duration::from_secs(15), || broker_pids(&db) == BTreeSet::from([pid])),
        "exactly one litebrokerd must remain for the database, found {:?}",
        broker_pids(&db)
    );
    let status = cli(&db, &["--json", "status"]);
    assert_exit(&status, 0);
    assert_eq!(json_out(&status)["pid"], pid);

    // Detached: its own session, not the test's child, stdio on /dev/null and its log.
    let stat = proc_stat(pid).expect("broker stat");
    assert_eq!(stat[3], pid.to_string(), "the broker leads its own session (setsid)");
    assert_ne!(stat[1], std::process::id().to_string());
    let fd = |n: u32| fs::read_link(format!("/proc/{pid}/fd/{n}")).unwrap();
    assert_eq!(fd(0), Path::new("/dev/null"));
    assert_eq!(fd(1), Path::new("/dev/null"));
    assert!(fd(2).to_string_lossy().ends_with("app.db-broker.log"), "{:?}", fd(2));
    assert_exit(&cli(&db, &["exec", "INSERT INTO skus (sku, description) VALUES ('LATE', 'after')"]), 0);

    let sold: i64 = summaries.iter().map(|s| s["units_sold"].as_i64().unwrap()).sum();
    assert_eq!(query_i64(&db, "SELECT coalesce(sum(qty), 0) FROM sales"), sold);
    let moved: i64 = summaries.iter().map(|s| s["movements"].as_i64().unwrap()).sum();
    assert_eq!(query_i64(&db, "SELECT count(*) FROM transactions"), moved);
    assert_eq!(query_i64(&db, "PRAGMA user_version"), 3);
    assert_exit(&cli(&db, &["verify"]), 0);

    assert_exit(&cli(&db, &["shutdown"]), 0);
    assert!(wait_until(Duration::from_secs(20), || !alive(pid)), "broker {pid} did not stop");
    let log = fs::read_to_string(db.with_file_name("app.db-broker.log")).unwrap();
    assert!(log.contains("stopped cleanly"), "{log}");
    assert!(log.contains("a broker is probably starting") || log.contains("already serves"), "{log}");
    eprintln!("10 instances released at once: all done in {took:?}");
}

#[test]
fn without_autostart_an_instance_fails_fast_and_starts_nothing() {
    let t = TestDir::new();
    let db = t.db();
    fs::create_dir_all(db.parent().unwrap()).unwrap();
    let _cleanup = NoStrayBrokers(db.clone());
    let started = Instant::now();
    let child = Command::new(bin("inventory-demo"))
        .arg("--db")
        .arg(&db)
        .args(["--ops", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_output(child, Duration::from_secs(20), "inventory-demo");
    assert_exit(&o, 1);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(stderr(&o).contains("no broker is serving"), "{}", stderr(&o));
    assert!(broker_pids(&db).is_empty(), "on-demand start is opt-in");
    assert!(!db.with_file_name("app.db-broker.log").exists());
}

#[cfg(target_os = "linux")]
#[test]
fn systemd_unit_is_accepted_by_systemd_analyze_verify() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("systemd-analyze is missing: install it (apt-get install -y systemd); .ci/run does");
    let t = TestDir::new();
    // A space and a % in the path: the unit must quote and escape them.
    let folder = t.path().join("my data 100%");
    fs::create_dir_all(&folder).unwrap();
    let db = folder.join("app.db");
    let units = t.path().join("units");
    let broker = bin("litebrokerd");
    let run = |extra: &[&str]| {
        let o = Command::new(script("install-service.sh"))
            .arg("--db")
            .arg(&db)
            .arg("--broker")
            .arg(&broker)
            .args(extra)
            .output()
            .unwrap();
        assert_exit(&o, 0);
        o
    };
    let printed = stdout(&run(&["--print", "--platform", "systemd", "--", "--synchronous", "full"]));
    run(&["--unit-dir", units.to_str().unwrap(), "--no-enable", "--", "--synchronous", "full"]);
    let files: Vec<PathBuf> = fs::read_dir(&units).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let unit = &files[0];
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("litebrokerd-app-") && name.ends_with(".service"), "{name}");
    let text = fs::read_to_string(unit).unwrap();
    assert_eq!(text, printed, "--print shows exactly what is installed");
    let db_escaped = db.to_string_lossy().replace('%', "%%");
    let exec = format!("ExecStart=\"{}\" --db \"{db_escaped}\" \"--synchronous\" \"full\"", broker.display());
    for line in [
        exec.as_str(),
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "RestartPreventExitStatus=2 3",
        "WantedBy=default.target",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }

    let verify = |unit: &Path| {
        let xdg = t.path().join("xdg");
        fs::create_dir_all(&xdg).unwrap();
        Command::new(&analyze)
            .arg("--user")
            .arg("verify")
            .arg(unit)
            .env("XDG_RUNTIME_DIR", &xdg)
            .output()
            .unwrap()
    };
    let o = verify(unit);
    // verify exits 0 even for lines it ignores with a warning: those fail the test too.
    let complaints: Vec<&str> =
        std::str::from_utf8(&o.stderr).unwrap().lines().filter(|l| l.contains(&name)).collect();
    assert!(o.status.success() && complaints.is_empty(), "systemd-analyze verify: {o:?}");

    // The check has teeth here: a unit whose program is missing fails it.
    let broken = units.join("broken.service");
    fs::write(&broken, text.replace(&broker.to_string_lossy().into_owned(), "/nonexistent/litebrokerd"))
        .unwrap();
    assert!(!verify(&broken).status.success(), "systemd-analyze verify accepts anything here");
    fs::remove_file(&broken).unwrap();

    let o = run(&["--uninstall", "--unit-dir", units.to_str().unwrap(), "--no-enable"]);
    assert!(stdout(&o).contains("removed"), "{}", stdout(&o));
    assert!(!unit.exists());
}

#[test]
fn install_service_refuses_a_broker_that_is_not_executable() {
    let t = TestDir::new();
    let o = Command::new(script("install-service.sh"))
        .arg("--db")
        .arg(t.db())
        .args(["--broker", "/nonexistent/litebrokerd", "--print"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("not an executable"), "{}", stderr(&o));
}

#[test]
fn launchd_plist_is_a_valid_property_list() {
    let t = TestDir::new();
    // XML specials in the path must be escaped in the plist.
    let folder = t.path().join("a&b <c>");
    fs::create_dir_all(&folder).unwrap();
    let db = folder.join("app.db");
    let broker = bin("litebrokerd");
    let plist = Command::new(script("install-service.sh"))
        .arg("--db")
        .arg(&db)
        .arg("--broker")
        .arg(&broker)
        .args(["--platform", "launchd", "--print"])
        .output()
        .unwrap();
    assert_exit(&plist, 0);
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import json, plistlib, sys; print(json.dumps(plistlib.loads(sys.stdin.buffer.read())))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed to check the plist");
    std::io::Write::write_all(py.stdin.as_mut().unwrap(), &plist.stdout).unwrap();
    drop(py.stdin.take());
    let o = wait_output(py, Duration::from_secs(30), "plistlib");
    assert_exit(&o, 0);
    let p = json_out(&o);
    assert!(p["Label"].as_str().unwrap().starts_with("io.litebroker.litebrokerd-app-"), "{p}");
    assert_eq!(
        p["ProgramArguments"],
        serde_json::json!([broker.to_str().unwrap(), "--db", db.to_str().unwrap()])
    );
    assert_eq!(p["RunAtLoad"], true);
    assert_eq!(p["KeepAlive"], serde_json::json!({ "SuccessfulExit": false }), "restart on failure only");
}

fn launch(t: &TestDir, args: &[&str], demo_args: &str) -> Output {
    let child = Command::new(script("launch-instances.sh"))
        .args(args)
        .arg("--db")
        .arg(t.db())
        .env("LITEBROKER_BIN_DIR", bin_dir())
        .env("LAUNCH_DEMO_ARGS", demo_args)
        .env("TMPDIR", t.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(120), "launch-instances.sh")
}

#[test]
fn launch_instances_script_checks_that_the_totals_add_up() {
    let t = TestDir::new();
    let _cleanup = NoStrayBrokers(t.db());
    let o = launch(&t, &["3", "--ops", "30"], "");
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("starting litebrokerd"), "{out}");
    assert!(out.contains("OK: 3 instances, one broker"), "{out}");
    assert!(out.contains("0 differ"), "{out}");
    assert!(broker_pids(&t.db()).is_empty(), "the script stops the broker it started");
    // A second run on the same database compares by difference.
    let o = launch(&t, &["2", "--ops", "10"], "");
    assert_exit(&o, 0);
}

#[test]
fn launch_instances_script_fails_when_reports_and_database_disagree() {
    let t = TestDir::new();
    let _cleanup = NoStrayBrokers(t.db());
    // --autostart: the instances start the broker; each reports 2 units too many.
    let o = launch(&t, &["2", "--ops", "10", "--autostart"], "--misreport-units 2");
    assert_exit(&o, 1);
    let out = stdout(&o);
    assert!(out.contains("units sold: the instances report"), "{out}");
    assert!(out.contains("MISMATCH"), "{out}");
    assert!(
        wait_until(Duration::from_secs(10), || broker_pids(&t.db()).is_empty()),
        "the broker the instances started is stopped too"
    );
}
