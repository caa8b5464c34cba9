//! `lbbench`: litebroker's benchmark. `lbbench run` measures every scenario back to
//! back (each several seconds, repeated: median and range), prints a table and one
//! JSON line, and saves both under `target/bench/`. It spawns itself as the worker
//! processes (`lbbench worker …`, `lbbench echo …`) and the real `litebrokerd` from
//! its own target folder. `scripts/bench.sh [--quick]` builds and runs it.
//!
//! Scenarios (all write a 96-byte text row into `bench(id INTEGER PRIMARY KEY, v TEXT)`,
//! with the broker's PRAGMAs):
//! - `inprocess`: one connection in one process, `BEGIN IMMEDIATE; INSERT; COMMIT`
//!   (batch 1), or 100,000 rows in one transaction (batch 100000): the floors.
//! - `direct-immediate`: N processes writing the file themselves, `BEGIN IMMEDIATE`,
//!   busy_timeout 5000.
//! - `direct-deferred`: N processes, `BEGIN; SELECT max(id); INSERT; COMMIT`, retrying
//!   at once on `SQLITE_BUSY` / `SQLITE_BUSY_SNAPSHOT` (counted) for up to 5 s.
//! - `broker`: N client processes, one-row writes through litebroker, closed loop,
//!   with the broker's defaults: each write carries a request id, which the broker
//!   records in `_litebroker_requests` in the same transaction (exactly-once).
//! - `broker-noids` (NORMAL only): the same with request ids off
//!   (`--request-id-retention-hours 0`), to show what recording them costs.
//! - `broker-bulk`: one client sending 100,000 one-row INSERTs as one batch.
//!
//! Latency figures are those of the worst client: for p50, p99 and max, the largest
//! value any client saw. Fairness is the smallest per-client write count divided by
//! the largest.

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    bench::main()
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!("lbbench: the benchmark runs on Unix only (it uses Unix sockets and /proc)");
    std::process::ExitCode::from(2)
}

#[cfg(unix)]
mod bench {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use anyhow::{anyhow, bail, Context, Result};
    use clap::{Parser, Subcommand, ValueEnum};
    use litebroker_client::protocol::BrokerStatus;
    use litebroker_client::{Client, ClientError, ConnectOptions, Statement, Value};
    use rusqlite::Connection;
    use serde_json::{json, Value as Json};

    const INSERT: &str = "INSERT INTO bench (v) VALUES (?1)";
    const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, v TEXT NOT NULL)";
    const BULK_ROWS: usize = 100_000;
    const ROW_BYTES: usize = 96;
    /// Each worker's untimed warm-up writes (page cache, statement cache, connection).
    const WARMUP: usize = 20;
    /// How long a deferred writer keeps retrying one transaction (the busy_timeout).
    const DEFERRED_GIVE_UP: Duration = Duration::from_secs(5);

    #[derive(Debug, Parser)]
    #[command(name = "lbbench")]
    struct Args {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Debug, Subcommand)]
    enum Cmd {
        /// Run every scenario and report.
        Run(RunArgs),
        /// One worker process (spawned by `run`).
        Worker {
            #[arg(long, value_enum)]
            mode: Mode,
            #[arg(long)]
            db: PathBuf,
            #[arg(long, value_enum)]
            sync: SyncMode,
            #[arg(long)]
            client: usize,
        },
        /// The far end of the socket round-trip measurement (spawned by `run`).
        Echo {
            #[arg(long)]
            socket: PathBuf,
        },
    }

    #[derive(Debug, Clone, clap::Args)]
    struct RunArgs {
        /// The short version: fewer, shorter repetitions (same scenarios and output shape).
        #[arg(long)]
        quick: bool,
        /// Seconds per measurement (default 3, quick 1).
        #[arg(long)]
        secs: Option<f64>,
        /// Repetitions per scenario (default 3, quick 2).
        #[arg(long)]
        repeats: Option<usize>,
        /// Client counts for the multi-client scenarios.
        #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
        clients: Vec<usize>,
        /// synchronous settings to measure.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "normal,full")]
        sync: Vec<SyncMode>,
        /// Only these scenarios (default: all).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Output folder (default: `bench/` in the target folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Longest wait, in seconds, for other processes to leave the CPUs idle
        /// before each measurement.
        #[arg(long, default_value_t = 60)]
        max_quiet_wait: u64,
        /// Total seconds the run may spend waiting for quiet and redoing disturbed
        /// measurements (default 300, quick 20); then it measures as things are.
        #[arg(long)]
        quiet_budget: Option<u64>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
    enum SyncMode {
        Normal,
        Full,
    }

    impl SyncMode {
        fn as_str(self) -> &'static str {
            match self {
                SyncMode::Normal => "normal",
                SyncMode::Full => "full",
            }
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
    enum Mode {
        Inprocess,
        InprocessBulk,
        DirectImmediate,
        DirectDeferred,
        Broker,
        /// `broker` with request ids off (`--request-id-retention-hours 0`): what
        /// recording them costs.
        #[value(name = "broker-noids")]
        BrokerNoIds,
        BrokerBulk,
    }

    impl Mode {
        /// The scenario name in the report.
        fn scenario(self) -> &'static str {
            match self {
                Mode::Inprocess | Mode::InprocessBulk => "inprocess",
                Mode::DirectImmediate => "direct-immediate",
                Mode::DirectDeferred => "direct-deferred",
                Mode::Broker => "broker",
                Mode::BrokerNoIds => "broker-noids",
                Mode::BrokerBulk => "broker-bulk",
            }
        }

        fn worker_arg(self) -> &'static str {
            match self {
                Mode::Inprocess => "inprocess",
                Mode::InprocessBulk => "inprocess-bulk",
                Mode::DirectImmediate => "direct-immediate",
                Mode::DirectDeferred => "direct-deferred",
                Mode::Broker => "broker",
                Mode::BrokerNoIds => "broker-noids",
                Mode::BrokerBulk => "broker-bulk",
            }
        }

        fn batch(self) -> usize {
            if self.is_bulk() {
                BULK_ROWS
            } else {
                1
            }
        }

        fn is_bulk(self) -> bool {
            matches!(self, Mode::InprocessBulk | Mode::BrokerBulk)
        }

        fn uses_broker(self) -> bool {
            matches!(self, Mode::Broker | Mode::BrokerNoIds | Mode::BrokerBulk)
        }
    }

    pub fn main() -> ExitCode {
        let args = Args::parse();
        let r = match args.cmd {
            Cmd::Run(a) => run(a),
            Cmd::Worker { mode, db, sync, client } => worker(mode, &db, sync, client),
            Cmd::Echo { socket } => echo(&socket),
        };
        match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lbbench: {e:#}");
                ExitCode::FAILURE
            }
        }
    }

    // ----- workers -------------------------------------------------------------

    /// What one worker measured.
    #[derive(Debug, Default)]
    struct Tally {
        /// Rows written by operations that completed inside the window.
        writes: u64,
        /// Bulk modes: time spent in the timed operations.
        busy_time: Duration,
        errors: BTreeMap<String, u64>,
        busy: u64,
        busy_snapshot: u64,
        /// Per operation, ns (all operations started inside the window).
        lat: Vec<u64>,
    }

    impl Tally {
        fn error(&mut self, kind: impl Into<String>) {
            *self.errors.entry(kind.into()).or_default() += 1;
        }

        fn report(&mut self) -> Json {
            self.lat.sort_unstable();
            json!({
                "writes": self.writes,
                "busy_time_s": self.busy_time.as_secs_f64(),
                "errors": self.errors,
                "busy": self.busy,
                "busy_snapshot": self.busy_snapshot,
                "p50_ns": percentile(&self.lat, 50.0),
                "p99_ns": percentile(&self.lat, 99.0),
                "max_ns": self.lat.last().copied().unwrap_or(0),
                "ops": self.lat.len(),
            })
        }
    }

    /// Nearest-rank percentile of sorted values.
    fn percentile(sorted: &[u64], p: f64) -> u64 {
        if sorted.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    fn payload(client: usize) -> String {
        let mut s = format!("lbbench client {client} ");
        while s.len() < ROW_BYTES {
            s.push((b'a' + (s.len() % 26) as u8) as char);
        }
        s
    }

    fn sqlite_kind(e: &rusqlite::Error) -> String {
        match e {
            rusqlite::Error::SqliteFailure(f, _) => match f.extended_code {
                rusqlite::ffi::SQLITE_BUSY => "busy".into(),
                rusqlite::ffi::SQLITE_BUSY_SNAPSHOT => "busy_snapshot".into(),
                rusqlite::ffi::SQLITE_LOCKED => "locked".into(),
                c => format!("sqlite_{c}"),
            },
            other => format!("other: {other}"),
        }
    }

    fn client_kind(e: &ClientError) -> String {
        match e {
            ClientError::Broker(info) => info.kind.as_str().to_owned(),
            ClientError::ConnectionLost { .. } => "connection_lost".into(),
            _ => "client".into(),
        }
    }

    /// The PRAGMAs of the broker's writer connection (server/src/writer.rs).
    fn open_direct(db: &Path, sync: SyncMode) -> Result<Connection> {
        let c = Connection::open(db).with_context(|| format!("open {}", db.display()))?;
        c.busy_timeout(Duration::from_millis(5000))?;
        let mode: String = c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("journal mode stays {mode}");
        }
        c.execute_batch(&format!(
            "PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; \
             PRAGMA cache_size = -64000;",
            sync.as_str()
        ))?;
        Ok(c)
    }

    /// Waits for `go <start_unix_ns> <window_ns>` on stdin; returns the window.
    fn await_go() -> Result<(Instant, Instant)> {
        println!("ready");
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let mut it = line.split_whitespace();
        if it.next() != Some("go") {
            bail!("expected 'go', got {line:?}");
        }
        let start_unix: u128 = it.next().context("start")?.parse()?;
        let window: u64 = it.next().context("window")?.parse()?;
        let now_unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let start = Instant::now() + Duration::from_nanos(start_unix.saturating_sub(now_unix) as u64);
        while Instant::now() < start {
            std::thread::sleep(start.saturating_duration_since(Instant::now()).min(Duration::from_millis(5)));
        }
        Ok((start, start + Duration::from_nanos(window)))
    }

    fn worker(mode: Mode, db: &Path, sync: SyncMode, client: usize) -> Result<()> {
        let text = payload(client);
        let mut t = Tally::default();
        match mode {
            Mode::Inprocess | Mode::DirectImmediate => {
                let c = open_direct(db, sync)?;
                let once = |c: &Connection| -> rusqlite::Result<()> {
                    c.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
                    c.prepare_cached(INSERT)?.execute([&text])?;
                    c.prepare_cached("COMMIT")?.execute([])?;
                    Ok(())
                };
                for _ in 0..WARMUP {
                    once(&c)?;
                }
                let (_, end) = await_go()?;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let r = once(&c);
                    let done = Instant::now();
                    t.lat.push((done - t0).as_nanos() as u64);
                    match r {
                        Ok(()) if done <= end => t.writes += 1,
                        Ok(()) => {}
                        Err(e) => {
                            t.error(sqlite_kind(&e));
                            if !c.is_autocommit() {
                                c.execute_batch("ROLLBACK").ok();
                            }
                        }
                    }
                }
            }
            Mode::DirectDeferred => {
                let c = open_direct(db, sync)?;
                let once = |c: &Connection| -> rusqlite::Result<()> {
                    c.prepare_cached("BEGIN")?.execute([])?;
                    let _max: Option<i64> =
                        c.prepare_cached("SELECT max(id) FROM bench")?.query_row([], |r| r.get(0))?;
                    c.prepare_cached(INSERT)?.execute([&text])?;
                    c.prepare_cached("COMMIT")?.execute([])?;
                    Ok(())
                };
                for _ in 0..WARMUP {
                    // Warm-up may collide with other workers' warm-up: retry.
                    while once(&c).is_err() {
                        if !c.is_autocommit() {
                            c.execute_batch("ROLLBACK").ok();
                        }
                    }
                }
                let (_, end) = await_go()?;
                'ops: loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    loop {
                        let r = once(&c);
                        if r.is_err() && !c.is_autocommit() {
                            c.execute_batch("ROLLBACK").ok();
                        }
                        match r {
                            Ok(()) => {
                                let done = Instant::now();
                                t.lat.push((done - t0).as_nanos() as u64);
                                if done <= end {
                                    t.writes += 1;
                                }
                                continue 'ops;
                            }
                            Err(e) => {
                                let kind = sqlite_kind(&e);
                                let retry = match kind.as_str() {
                                    "busy" => {
                                        t.busy += 1;
                                        true
                                    }
                                    "busy_snapshot" => {
                                        t.busy_snapshot += 1;
                                        true
                                    }
                                    _ => false,
                                };
                                if !retry || t0.elapsed() >= DEFERRED_GIVE_UP {
                                    t.lat.push(t0.elapsed().as_nanos() as u64);
                                    t.error(kind);
                                    continue 'ops;
                                }
                            }
                        }
                    }
                }
            }
            Mode::InprocessBulk => {
                let c = open_direct(db, sync)?;
                let (_, end) = await_go()?;
                loop {
                    let t0 = Instant::now();
                    let r = (|| -> rusqlite::Result<()> {
                        c.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
                        let mut ins = c.prepare_cached(INSERT)?;
                        for _ in 0..BULK_ROWS {
                            ins.execute([&text])?;
                        }
                        drop(ins);
                        c.prepare_cached("COMMIT")?.execute([])?;
                        Ok(())
                    })();
                    let took = t0.elapsed();
                    t.lat.push(took.as_nanos() as u64);
                    match r {
                        Ok(()) => {
                            t.writes += BULK_ROWS as u64;
                            t.busy_time += took;
                        }
                        Err(e) => {
                            t.error(sqlite_kind(&e));
                            if !c.is_autocommit() {
                                c.execute_batch("ROLLBACK").ok();
                            }
                        }
                    }
                    if Instant::now() >= end {
                        break;
                    }
                }
            }
            Mode::Broker | Mode::BrokerNoIds => {
                let mut c = connect(db, client)?;
                let params = [Value::Text(text.clone())];
                for _ in 0..WARMUP {
                    c.execute(INSERT, &params)?;
                }
                let (_, end) = await_go()?;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let r = c.execute(INSERT, &params);
                    let done = Instant::now();
                    t.lat.push((done - t0).as_nanos() as u64);
                    match r {
                        Ok(_) if done <= end => t.writes += 1,
                        Ok(_) => {}
                        Err(e) => {
                            t.error(client_kind(&e));
                            if c.is_broken() {
                                c = connect(db, client)?;
                            }
                        }
                    }
                }
            }
            Mode::BrokerBulk => {
                let mut c = connect(db, client)?;
                c.set_timeout(Duration::from_secs(120));
                let (_, end) = await_go()?;
                loop {
                    // Building the request is the application's work, not the broker's.
                    let batch: Vec<Statement> = (0..BULK_ROWS)
                        .map(|_| Statement::new(INSERT, vec![Value::Text(text.clone())]))
                        .collect();
                    let t0 = Instant::now();
                    let r = c.execute_batch(batch);
                    let took = t0.elapsed();
                    t.lat.push(took.as_nanos() as u64);
                    match r {
                        Ok(_) => {
                            t.writes += BULK_ROWS as u64;
                            t.busy_time += took;
                        }
                        Err(e) => t.error(client_kind(&e)),
                    }
                    if Instant::now() >= end {
                        break;
                    }
                }
            }
        }
        println!("{}", t.report());
        Ok(())
    }

    fn connect(db: &Path, client: usize) -> Result<Client> {
        let opts = ConnectOptions::new(db).client_name(format!("lbbench-{client}"));
        Client::connect_with(&opts).context("connect to the broker")
    }

    // ----- socket round trip -----------------------------------------------------

    /// Echoes length-prefixed frames back until the peer leaves.
    fn echo(socket: &Path) -> Result<()> {
        let listener = UnixListener::bind(socket).context("bind")?;
        let (stream, _) = listener.accept()?;
        std::fs::remove_file(socket).ok();
        let mut r = BufReader::new(stream.try_clone()?);
        let mut w = stream;
        let mut buf = Vec::new();
        loop {
            let mut header = [0u8; 4];
            if r.read_exact(&mut header).is_err() {
                return Ok(());
            }
            let len = u32::from_le_bytes(header) as usize;
            buf.clear();
            buf.extend_from_slice(&header);
            buf.resize(4 + len, 0);
            r.read_exact(&mut buf[4..])?;
            w.write_all(&buf)?;
        }
    }

    /// p50 and p99 of a small-frame ping-pong with another process, in µs.
    fn socket_rtt(dir: &Path, dur: Duration) -> Result<(f64, f64)> {
        let socket = dir.join("rtt.sock");
        std::fs::remove_file(&socket).ok();
        let mut child = Command::new(std::env::current_exe()?)
            .arg("echo")
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(&socket) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => {
                    child.kill().ok();
                    child.wait().ok();
                    return Err(e).context("connect to the echo process");
                }
            }
        };
        let mut r = BufReader::new(stream.try_clone()?);
        let mut w = stream;
        // A frame about the size of a small request: 4-byte length, 24-byte payload.
        let mut frame = vec![0u8; 28];
        frame[..4].copy_from_slice(&24u32.to_le_bytes());
        let mut back = vec![0u8; 28];
        let mut lat = Vec::new();
        let start = Instant::now();
        let mut n = 0usize;
        while start.elapsed() < dur || n < 2000 {
            let t0 = Instant::now();
            w.write_all(&frame)?;
            r.read_exact(&mut back)?;
            if n >= 1000 {
                lat.push(t0.elapsed().as_nanos() as u64);
            }
            n += 1;
        }
        drop(w);
        drop(r);
        let _ = child.wait();
        lat.sort_unstable();
        Ok((percentile(&lat, 50.0) as f64 / 1000.0, percentile(&lat, 99.0) as f64 / 1000.0))
    }

    /// p50 of `fdatasync` after a 4 KiB append, µs: the disk's state, since the
    /// FULL figures depend on it.
    fn fsync_probe(dir: &Path) -> Result<f64> {
        use std::os::unix::io::AsRawFd;
        let path = dir.join("fsync-probe");
        let mut f = std::fs::File::create(&path)?;
        let block = [0x5au8; 4096];
        let mut lat = Vec::new();
        for _ in 0..100 {
            f.write_all(&block)?;
            let t0 = Instant::now();
            // SAFETY: fdatasync on a file descriptor we own.
            if unsafe { libc::fdatasync(f.as_raw_fd()) } != 0 {
                return Err(std::io::Error::last_os_error()).context("fdatasync");
            }
            lat.push(t0.elapsed().as_nanos() as u64);
        }
        drop(f);
        std::fs::remove_file(&path).ok();
        lat.sort_unstable();
        Ok(percentile(&lat, 50.0) as f64 / 1000.0)
    }

    /// p50 of a `Ping` round trip through the broker, µs: the socket round trip
    /// plus the broker's own frame handling, without the writer.
    fn broker_ping(work: &Path, dur: Duration) -> Result<f64> {
        let dir = tempfile::Builder::new().prefix("lbbench").tempdir_in(work)?;
        let db = dir.path().join("app.db");
        let mut b = start_broker(&db, SyncMode::Normal, &[])?;
        let mut c = b.wait_ready(&db)?;
        let mut lat = Vec::new();
        let start = Instant::now();
        let mut n = 0usize;
        while start.elapsed() < dur || n < 2000 {
            let took = c.ping().context("ping")?;
            if n >= 1000 {
                lat.push(took.as_nanos() as u64);
            }
            n += 1;
        }
        b.stop(c)?;
        lat.sort_unstable();
        Ok(percentile(&lat, 50.0) as f64 / 1000.0)
    }

    // ----- other processes --------------------------------------------------------

    /// Busy and total CPU time of the whole machine so far (from /proc/stat), s.
    fn machine_cpu() -> (f64, f64) {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal …
        let total: f64 = fields.iter().take(8).sum();
        let idle = fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        ((total - idle) / hz, total / hz)
    }

    /// CPU time used by this process and its waited-for children (workers, broker), s.
    fn own_cpu() -> f64 {
        let mut sum = 0.0;
        for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
            // SAFETY: getrusage fills the struct we pass.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            if unsafe { libc::getrusage(who, &mut ru) } == 0 {
                for tv in [ru.ru_utime, ru.ru_stime] {
                    sum += tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
                }
            }
        }
        sum
    }

    /// Fraction of the machine other processes used since `from`.
    struct Foreign {
        machine: (f64, f64),
        own: f64,
    }

    impl Foreign {
        fn start() -> Foreign {
            Foreign { machine: machine_cpu(), own: own_cpu() }
        }

        fn fraction(&self) -> f64 {
            let (busy, total) = machine_cpu();
            let (dbusy, dtotal) = (busy - self.machine.0, total - self.machine.1);
            if dtotal <= 0.0 {
                return 0.0;
            }
            ((dbusy - (own_cpu() - self.own)) / dtotal).max(0.0)
        }
    }

    /// Waits (up to `max`) until other processes leave the machine nearly idle;
    /// true when they did.
    fn wait_quiet(max: Duration) -> bool {
        let deadline = Instant::now() + max;
        loop {
            let f = Foreign::start();
            std::thread::sleep(Duration::from_millis(300));
            if f.fraction() < QUIET {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// Share of the machine other processes may use for a measurement to count.
    const QUIET: f64 = 0.08;

    // ----- orchestration ---------------------------------------------------------

    struct Worker {
        child: Child,
        stdin: ChildStdin,
    }

    /// Lines from the workers' stdout: (worker index, line).
    type Lines = mpsc::Receiver<(usize, String)>;

    fn spawn_workers(mode: Mode, db: &Path, sync: SyncMode, n: usize) -> Result<(Vec<Worker>, Lines)> {
        let exe = std::env::current_exe()?;
        let (tx, rx) = mpsc::channel();
        let mut workers = Vec::new();
        for i in 0..n {
            let mut child = Command::new(&exe)
                .args(["worker", "--mode", mode.worker_arg(), "--sync", sync.as_str()])
                .arg("--db")
                .arg(db)
                .arg("--client")
                .arg(i.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("spawn a worker")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let stdin = child.stdin.take().context("worker stdin")?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send((i, line)).is_err() {
                        break;
                    }
                }
            });
            workers.push(Worker { child, stdin });
        }
        Ok((workers, rx))
    }

    /// Collects one line from each worker within `timeout`.
    fn collect(rx: &Lines, n: usize, timeout: Duration, what: &str) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut got: Vec<Option<String>> = vec![None; n];
        while got.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, line)) => got[i] = Some(line),
                Err(_) => bail!("workers did not report {what} in time"),
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    struct BrokerProc {
        child: Child,
        log: mpsc::Receiver<String>,
    }

    fn start_broker(db: &Path, sync: SyncMode, extra: &[&str]) -> Result<BrokerProc> {
        let exe = std::env::current_exe()?;
        let bin = exe.with_file_name(format!("litebrokerd{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() {
            bail!("{} is missing: build with `cargo build --release --workspace`", bin.display());
        }
        let mut child = Command::new(bin)
            .arg("--db")
            .arg(db)
            .args(["--synchronous", sync.as_str(), "--log-level", "warn"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn litebrokerd")?;
        let stderr = child.stderr.take().context("broker stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok(BrokerProc { child, log: rx })
    }

    impl BrokerProc {
        /// Waits until a client can connect (the broker logs nothing at warn level).
        fn wait_ready(&mut self, db: &Path) -> Result<Client> {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(c) = connect(db, 999) {
                    return Ok(c);
                }
                if let Ok(Some(st)) = self.child.try_wait() {
                    let log: Vec<String> = self.log.try_iter().collect();
                    bail!("litebrokerd exited ({st}):\n{}", log.join("\n"));
                }
                if Instant::now() >= deadline {
                    bail!("litebrokerd did not accept connections in time");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        /// Peak resident set size (VmHWM), KiB.
        fn peak_rss_kb(&self) -> u64 {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        }

        fn stop(mut self, mut c: Client) -> Result<()> {
            c.shutdown().ok();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(st) = self.child.try_wait()? {
                    let warnings: Vec<String> = self.log.try_iter().collect();
                    if !st.success() {
                        bail!("litebrokerd exited with {st}:\n{}", warnings.join("\n"));
                    }
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    self.child.kill().ok();
                    self.child.wait().ok();
                    bail!("litebrokerd did not stop in time");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// One measurement of one scenario.
    #[derive(Debug, Clone, Default)]
    struct Sample {
        writes_per_s: f64,
        errors: BTreeMap<String, u64>,
        fairness: f64,
        p50_us: f64,
        p99_us: f64,
        max_us: f64,
        busy_per_commit: f64,
        busy_snapshot_per_commit: f64,
        rows_per_commit: Option<f64>,
        queue_wait_us: Option<f64>,
        commit_us: Option<f64>,
        rss_kb: Option<u64>,
        /// Share of the machine's CPU other processes used meanwhile.
        foreign: f64,
    }

    fn num(j: &Json, k: &str) -> f64 {
        j[k].as_f64().unwrap_or(0.0)
    }

    fn delta_ratio(a: u64, b: u64, c: u64, d: u64) -> Option<f64> {
        let (n, m) = (b.saturating_sub(a), d.saturating_sub(c));
        (m > 0).then(|| n as f64 / m as f64)
    }

    fn measure(mode: Mode, sync: SyncMode, n: usize, window: Duration, work: &Path) -> Result<Sample> {
        // Start every measurement with no dirty pages left by the previous one: their
        // write-back would slow this one's fsyncs.
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        let dir = tempfile::Builder::new().prefix("lbbench").tempdir_in(work)?;
        let db = dir.path().join("app.db");
        {
            let c = open_direct(&db, sync)?;
            c.execute_batch(SCHEMA)?;
        }
        let mut broker = None;
        let mut status_client = None;
        if mode.uses_broker() {
            let extra: &[&str] =
                if mode == Mode::BrokerNoIds { &["--request-id-retention-hours", "0"] } else { &[] };
            let mut b = start_broker(&db, sync, extra)?;
            status_client = Some(b.wait_ready(&db)?);
            broker = Some(b);
        }
        let (mut workers, rx) = spawn_workers(mode, &db, sync, n)?;
        let ready = collect(&rx, n, Duration::from_secs(60), "ready")?;
        if let Some(bad) = ready.iter().find(|l| l.as_str() != "ready") {
            bail!("a worker said {bad:?} instead of ready");
        }
        let before: Option<BrokerStatus> = status_client.as_mut().map(|c| c.status()).transpose()?;
        let start = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() + 100_000_000;
        for w in &mut workers {
            writeln!(w.stdin, "go {start} {}", window.as_nanos())?;
            w.stdin.flush()?;
        }
        // Deferred writers may retry for 5 s and immediate ones wait out busy_timeout
        // past the window; bulk batches may take long on a slow disk.
        let results = collect(&rx, n, window + Duration::from_secs(120), "results")?;
        for w in &mut workers {
            let st = w.child.wait()?;
            if !st.success() {
                bail!("a {} worker failed ({st})", mode.worker_arg());
            }
        }
        let after: Option<BrokerStatus> = status_client.as_mut().map(|c| c.status()).transpose()?;
        let mut s = Sample::default();
        let parsed: Vec<Json> = results
            .iter()
            .map(|l| serde_json::from_str(l))
            .collect::<Result<_, _>>()
            .context("worker output")?;
        let writes: Vec<f64> = parsed.iter().map(|j| num(j, "writes")).collect();
        let total: f64 = writes.iter().sum();
        s.writes_per_s = if mode.is_bulk() {
            let busy: f64 = parsed.iter().map(|j| num(j, "busy_time_s")).sum();
            if busy > 0.0 {
                total / busy
            } else {
                0.0
            }
        } else {
            total / window.as_secs_f64()
        };
        let (lo, hi) = writes.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &w| (lo.min(w), hi.max(w)));
        s.fairness = if hi > 0.0 { lo / hi } else { 0.0 };
        let worst = |k: &str| parsed.iter().map(|j| num(j, k)).fold(0.0, f64::max) / 1000.0;
        s.p50_us = worst("p50_ns");
        s.p99_us = worst("p99_ns");
        s.max_us = worst("max_ns");
        for j in &parsed {
            if let Some(m) = j["errors"].as_object() {
                for (k, v) in m {
                    *s.errors.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
                }
            }
        }
        if total > 0.0 {
            s.busy_per_commit = parsed.iter().map(|j| num(j, "busy")).sum::<f64>() / total;
            s.busy_snapshot_per_commit = parsed.iter().map(|j| num(j, "busy_snapshot")).sum::<f64>() / total;
        }
        if let (Some(a), Some(b)) = (before, after) {
            s.rows_per_commit =
                delta_ratio(a.group_requests, b.group_requests, a.group_commits, b.group_commits);
            s.queue_wait_us = delta_ratio(a.queue_wait_us, b.queue_wait_us, a.queue_waits, b.queue_waits);
            s.commit_us = delta_ratio(a.commit_us, b.commit_us, a.group_commits, b.group_commits);
        }
        if let (Some(b), Some(c)) = (broker, status_client) {
            s.rss_kb = Some(b.peak_rss_kb());
            b.stop(c)?;
        }
        Ok(s)
    }

    /// Median and range over the repetitions of one scenario.
    #[derive(Debug)]
    struct Summary {
        mode: Mode,
        sync: SyncMode,
        clients: usize,
        samples: Vec<Sample>,
    }

    fn median(mut v: Vec<f64>) -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    }

    impl Summary {
        fn med(&self, f: impl Fn(&Sample) -> f64) -> f64 {
            median(self.samples.iter().map(f).collect())
        }

        fn range(&self, f: impl Fn(&Sample) -> f64) -> (f64, f64) {
            self.samples.iter().map(f).fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
        }

        fn opt_med(&self, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
            let v: Vec<f64> = self.samples.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| median(v))
        }

        fn writes(&self) -> f64 {
            self.med(|s| s.writes_per_s)
        }

        fn errors(&self) -> BTreeMap<String, u64> {
            let mut all = BTreeMap::new();
            for s in &self.samples {
                for (k, v) in &s.errors {
                    *all.entry(k.clone()).or_default() += v;
                }
            }
            all
        }

        fn error_count(&self) -> u64 {
            self.errors().values().sum()
        }

        /// The worst latency seen in any repetition.
        fn max_us(&self) -> f64 {
            self.range(|s| s.max_us).1
        }

        fn to_json(&self) -> Json {
            let (lo, hi) = self.range(|s| s.writes_per_s);
            let (flo, _) = self.range(|s| s.fairness);
            let (p99lo, p99hi) = self.range(|s| s.p99_us);
            let mut j = json!({
                "name": self.mode.scenario(),
                "sync": self.sync.as_str(),
                "clients": self.clients,
                "batch": self.mode.batch(),
                "writes_per_s": round(self.writes()),
                "writes_per_s_range": [round(lo), round(hi)],
                "errors": self.error_count(),
                "errors_by_kind": self.errors(),
                "fairness": round3(self.med(|s| s.fairness)),
                "fairness_min": round3(flo),
                "p50_us": round1(self.med(|s| s.p50_us)),
                "p99_us": round1(self.med(|s| s.p99_us)),
                "p99_us_range": [round1(p99lo), round1(p99hi)],
                "max_us": round1(self.max_us()),
                "rows_per_commit": self.opt_med(|s| s.rows_per_commit).map(round2),
                "repeats": self.samples.len(),
            });
            if self.mode == Mode::DirectDeferred {
                j["busy_per_commit"] = json!(round2(self.med(|s| s.busy_per_commit)));
                j["busy_snapshot_per_commit"] = json!(round2(self.med(|s| s.busy_snapshot_per_commit)));
            }
            if self.mode.uses_broker() {
                j["queue_wait_mean_us"] = json!(self.opt_med(|s| s.queue_wait_us).map(round1));
                j["commit_mean_us"] = json!(self.opt_med(|s| s.commit_us).map(round1));
                j["broker_peak_rss_kb"] = json!(self.samples.iter().filter_map(|s| s.rss_kb).max());
            }
            j
        }
    }

    fn round(v: f64) -> f64 {
        v.round()
    }
    fn round1(v: f64) -> f64 {
        (v * 10.0).round() / 10.0
    }
    fn round2(v: f64) -> f64 {
        (v * 100.0).round() / 100.0
    }
    fn round3(v: f64) -> f64 {
        (v * 1000.0).round() / 1000.0
    }

    fn machine() -> String {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mem_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
        format!("{cpu}, {cpus} vCPU, {mem_gib:.0} GiB RAM, Linux {}", kernel.trim())
    }

    fn plan(a: &RunArgs) -> Vec<(Mode, SyncMode, usize)> {
        let mut v = Vec::new();
        let wanted =
            |m: Mode| a.only.is_empty() || a.only.iter().any(|o| o == m.scenario() || o == m.worker_arg());
        for &sync in &a.sync {
            if wanted(Mode::Inprocess) {
                v.push((Mode::Inprocess, sync, 1));
            }
            for mode in [Mode::DirectImmediate, Mode::DirectDeferred, Mode::Broker] {
                if wanted(mode) {
                    for &n in &a.clients {
                        v.push((mode, sync, n));
                    }
                }
            }
            // An extra row, NORMAL only (with FULL the fsync hides it): the
            // headline `broker` rows run with the broker's defaults.
            if sync == SyncMode::Normal && wanted(Mode::BrokerNoIds) {
                for &n in &a.clients {
                    v.push((Mode::BrokerNoIds, sync, n));
                }
            }
        }
        // The bulk scenarios come last: the write-back of their large WAL files and
        // checkpoints would otherwise slow the fsyncs of whatever runs next.
        for &sync in &a.sync {
            for mode in [Mode::InprocessBulk, Mode::BrokerBulk] {
                if wanted(mode) {
                    v.push((mode, sync, 1));
                }
            }
        }
        v
    }

    fn find(all: &[Summary], mode: Mode, sync: SyncMode, n: usize) -> Option<&Summary> {
        all.iter().find(|s| s.mode == mode && s.sync == sync && s.clients == n)
    }

    /// The targets, as ratios from this run.
    fn targets(all: &[Summary], rtt_p50: f64) -> Vec<Json> {
        let mut out = Vec::new();
        let mut push = |name: String, value: f64, goal: String, met: bool| {
            out.push(json!({ "target": name, "value": round2(value), "goal": goal, "met": met }));
        };
        for (sync, factor) in [(SyncMode::Normal, 1.5), (SyncMode::Full, 5.0)] {
            let (Some(b), Some(d)) =
                (find(all, Mode::Broker, sync, 8), find(all, Mode::DirectImmediate, sync, 8))
            else {
                continue;
            };
            let s = sync.as_str();
            let ratio = b.writes() / d.writes().max(1.0);
            push(
                format!("{s} 8 clients: broker / direct-immediate writes/s"),
                ratio,
                format!(">= {factor}"),
                ratio >= factor,
            );
            let e = b.error_count() as f64;
            push(format!("{s} 8 clients: broker errors"), e, "0".into(), e == 0.0);
            let f = b.range(|x| x.fairness).0;
            push(format!("{s} 8 clients: broker fairness (worst repetition)"), f, ">= 0.8".into(), f >= 0.8);
            if sync == SyncMode::Normal {
                let m = b.max_us() / 1000.0;
                push(
                    format!("{s} 8 clients: broker worst-client max latency, ms"),
                    m,
                    "<= 50".into(),
                    m <= 50.0,
                );
            }
        }
        if let Some(b) = find(all, Mode::Broker, SyncMode::Normal, 1) {
            let p50 = b.med(|s| s.p50_us);
            push(
                "normal 1 client: broker p50 - socket RTT p50, µs".into(),
                p50 - rtt_p50,
                "<= 20".into(),
                p50 - rtt_p50 <= 20.0,
            );
        }
        for sync in [SyncMode::Normal, SyncMode::Full] {
            if let (Some(b), Some(i)) =
                (find(all, Mode::BrokerBulk, sync, 1), find(all, Mode::InprocessBulk, sync, 1))
            {
                let ratio = b.writes() / i.writes().max(1.0);
                push(
                    format!("{}: broker-bulk / inprocess single-transaction rows/s", sync.as_str()),
                    ratio,
                    ">= 0.7".into(),
                    ratio >= 0.7,
                );
            }
        }
        out
    }

    fn table(all: &[Summary], rtt: (f64, f64)) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "| scenario | sync | N | batch | writes/s (median) | range | errors | fairness | p50 µs | p99 µs | max µs | rows/commit | notes |"
        );
        let _ = writeln!(t, "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|");
        for s in all {
            let (lo, hi) = s.range(|x| x.writes_per_s);
            let errors = s.error_count();
            let errors = if errors == 0 {
                "0".to_owned()
            } else {
                let kinds: Vec<String> = s.errors().iter().map(|(k, v)| format!("{k} {v}")).collect();
                format!("{errors} ({})", kinds.join(", "))
            };
            let mut notes = Vec::new();
            if s.mode == Mode::DirectDeferred {
                notes.push(format!(
                    "BUSY/commit {:.2}, BUSY_SNAPSHOT/commit {:.2}",
                    s.med(|x| x.busy_per_commit),
                    s.med(|x| x.busy_snapshot_per_commit)
                ));
            }
            if s.mode.uses_broker() {
                if let Some(q) = s.opt_med(|x| x.queue_wait_us) {
                    notes.push(format!("queue wait {q:.0} µs"));
                }
                if let Some(c) = s.opt_med(|x| x.commit_us) {
                    notes.push(format!("COMMIT {c:.0} µs"));
                }
                if let Some(r) = s.samples.iter().filter_map(|x| x.rss_kb).max() {
                    notes.push(format!("RSS {:.1} MiB", r as f64 / 1024.0));
                }
            }
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {:.0} | {:.0}–{:.0} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {} | {} |",
                s.mode.scenario(),
                s.sync.as_str(),
                s.clients,
                s.mode.batch(),
                s.writes(),
                lo,
                hi,
                errors,
                s.med(|x| x.fairness),
                s.med(|x| x.p50_us),
                s.med(|x| x.p99_us),
                s.max_us(),
                s.opt_med(|x| x.rows_per_commit).map_or("–".into(), |r| format!("{r:.2}")),
                notes.join("; "),
            );
        }
        let _ = writeln!(
            t,
            "\nsocket round trip (small frame, two processes): p50 {:.1} µs, p99 {:.1} µs",
            rtt.0, rtt.1
        );
        t
    }

    fn run(a: RunArgs) -> Result<()> {
        let secs = a.secs.unwrap_or(if a.quick { 1.0 } else { 3.0 });
        let repeats = a.repeats.unwrap_or(if a.quick { 2 } else { 3 }).max(1);
        let window = Duration::try_from_secs_f64(secs).map_err(|e| anyhow!("--secs: {e}"))?;
        let out = match &a.out {
            Some(o) => o.clone(),
            None => {
                let exe = std::env::current_exe()?;
                exe.parent().and_then(Path::parent).context("target folder")?.join("bench")
            }
        };
        let work = out.join("work");
        std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
        let machine = machine();
        let started = Instant::now();
        eprintln!("lbbench: {machine}; {secs} s per measurement, {repeats} repetitions");

        let rtt_runs: Vec<(f64, f64)> = (0..repeats)
            .map(|_| {
                wait_quiet(Duration::from_secs(a.max_quiet_wait.min(if a.quick { 5 } else { 30 })));
                socket_rtt(&work, window.min(Duration::from_secs(2)))
            })
            .collect::<Result<_>>()?;
        let rtt =
            (median(rtt_runs.iter().map(|r| r.0).collect()), median(rtt_runs.iter().map(|r| r.1).collect()));
        eprintln!("socket round trip: p50 {:.1} µs, p99 {:.1} µs", rtt.0, rtt.1);
        let pings: Vec<f64> = (0..repeats)
            .map(|_| {
                wait_quiet(Duration::from_secs(a.max_quiet_wait.min(if a.quick { 5 } else { 30 })));
                broker_ping(&work, window.min(Duration::from_secs(2)))
            })
            .collect::<Result<_>>()?;
        let ping = median(pings);
        eprintln!("broker ping: p50 {ping:.1} µs");

        let fsync_before = fsync_probe(&work)?;
        let mut all: Vec<Summary> = plan(&a)
            .into_iter()
            .map(|(mode, sync, clients)| Summary { mode, sync, clients, samples: Vec::new() })
            .collect();
        // Rounds: every scenario once per round. The disk's fsync cost drifts over
        // minutes (see README), so interleaving keeps the scenarios compared in one
        // run under the same conditions.
        let mut redone = 0;
        let budget_end =
            Instant::now() + Duration::from_secs(a.quiet_budget.unwrap_or(if a.quick { 20 } else { 300 }));
        let patience =
            |max: u64| Duration::from_secs(max).min(budget_end.saturating_duration_since(Instant::now()));
        for round in 1..=repeats {
            for sum in &mut all {
                let (mode, sync, n) = (sum.mode, sum.sync, sum.clients);
                // This machine may be shared: measure when other processes are
                // quiet, and redo a measurement they disturbed (a few times).
                let mut attempt = 0;
                let s = loop {
                    attempt += 1;
                    wait_quiet(patience(a.max_quiet_wait));
                    let f = Foreign::start();
                    let mut s = measure(mode, sync, n, window, &work)
                        .with_context(|| format!("{} {} N={n}", mode.worker_arg(), sync.as_str()))?;
                    s.foreign = f.fraction();
                    if s.foreign < QUIET || attempt > 2 || Instant::now() >= budget_end {
                        break s;
                    }
                    redone += 1;
                    eprintln!(
                        "round {round}: {} {} N={n}: other processes used {:.0}% of the CPUs, measuring again",
                        mode.scenario(),
                        sync.as_str(),
                        s.foreign * 100.0
                    );
                };
                eprintln!(
                    "round {round}/{repeats} {:<17} {:<6} N={n:<2} batch={:<6} {:>9.0} writes/s  errors {}  fairness {:.2}  p50 {:.1} µs  p99 {:.1} µs  max {:.1} µs  rows/commit {}  other load {:.0}%",
                    mode.scenario(),
                    sync.as_str(),
                    mode.batch(),
                    s.writes_per_s,
                    s.errors.values().sum::<u64>(),
                    s.fairness,
                    s.p50_us,
                    s.p99_us,
                    s.max_us,
                    s.rows_per_commit.map_or("-".into(), |r| format!("{r:.2}")),
                    s.foreign * 100.0,
                );
                sum.samples.push(s);
            }
        }
        let fsync_after = fsync_probe(&work)?;
        let goals = targets(&all, rtt.0);
        let mut text = format!(
            "lbbench on {machine}\n{secs} s per measurement, {repeats} repetitions (median, range over repetitions; \
             latency = worst client, max = worst repetition); run took {:.0} s\n\n",
            started.elapsed().as_secs_f64()
        );
        let _ = writeln!(
            text,
            "disk: fdatasync of a 4 KiB append p50 {:.0} µs before the run, {:.0} µs after it",
            fsync_before, fsync_after
        );
        let worst_foreign = all.iter().flat_map(|s| &s.samples).map(|s| s.foreign).fold(0.0, f64::max);
        let _ = writeln!(
            text,
            "other processes: at most {:.0}% of the CPUs during a kept measurement; {redone} disturbed measurement(s) redone\n",
            worst_foreign * 100.0
        );
        text.push_str(&table(&all, rtt));
        let _ = writeln!(text, "broker ping (Ping request, no writer): p50 {ping:.1} µs");
        text.push_str("\ntargets:\n");
        for g in &goals {
            let _ = writeln!(
                text,
                "  [{}] {}: {} (goal {})",
                if g["met"].as_bool() == Some(true) { "met" } else { "MISSED" },
                g["target"].as_str().unwrap_or(""),
                g["value"],
                g["goal"].as_str().unwrap_or("")
            );
        }
        let doc = json!({
            "machine": machine,
            "quick": a.quick,
            "secs": secs,
            "repeats": repeats,
            "scenarios": all.iter().map(Summary::to_json).collect::<Vec<_>>(),
            "socket_rtt_p50_us": round1(rtt.0),
            "socket_rtt_p99_us": round1(rtt.1),
            "broker_ping_p50_us": round1(ping),
            "fdatasync_p50_us": [round(fsync_before), round(fsync_after)],
            "other_load_max": round3(all.iter().flat_map(|s| &s.samples).map(|s| s.foreign).fold(0.0, f64::max)),
            "redone": redone,
            "targets": goals,
        });
        let line = doc.to_string();
        println!("{text}");
        println!("{line}");
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let kind = if a.quick { "quick" } else { "full" };
        for (name, body) in [
            (format!("{kind}-{stamp}.txt"), format!("{text}\n{line}\n")),
            (format!("{kind}-{stamp}.json"), format!("{line}\n")),
            (format!("latest-{kind}.txt"), format!("{text}\n{line}\n")),
            (format!("latest-{kind}.json"), format!("{line}\n")),
        ] {
            std::fs::write(out.join(&name), body).with_context(|| format!("write {name}"))?;
        }
        std::fs::remove_dir_all(&work).ok();
        eprintln!("saved under {}", out.display());
        Ok(())
    }
}
