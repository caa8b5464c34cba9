//! `lbtool hostile`: one process of buggy or hostile traffic against a broker.
//!
//! Every action opens its own connection(s) with short timeouts, so this process
//! never hangs on a broker that stops answering; it reports what it did as JSON.

use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use litebroker_protocol::rendezvous::Location;
use litebroker_protocol::{
    CheckpointMode, Request, Response, Statement, Value, WriteOptions, HARD_MAX_FRAME,
};
use litebroker_tests::{frame_of, hello, RawConn, Rng};
use serde_json::json;

const ACTIONS: [&str; 10] = [
    "garbage",
    "truncated",
    "forged_length",
    "oversized",
    "out_of_order",
    "stall",
    "churn",
    "mutated",
    "pipeline_no_read",
    "broken_stream",
];

struct Attack {
    socket: String,
    rng: Rng,
    max_frame: u32,
    connects: u64,
    connect_failures: u64,
    first_failure: Option<String>,
    answers: u64,
    stalled: VecDeque<RawConn>,
}

fn is_shutdown(payload: &[u8]) -> bool {
    matches!(litebroker_protocol::decode_payload::<Request>(payload), Ok(Request::Shutdown))
}

fn execute(sql: &str, params: Vec<Value>) -> Request {
    Request::Execute { stmt: Statement::new(sql, params), opts: WriteOptions::default() }
}

/// Sends bytes, ignoring failures: the broker may hang up first, which is fine.
fn send(s: &RawConn, bytes: &[u8]) -> bool {
    s.send_bytes(bytes).is_ok()
}

impl Attack {
    fn connect(&mut self) -> Option<RawConn> {
        self.connects += 1;
        match RawConn::try_connect(&self.socket) {
            Ok(s) => {
                // Short: many actions leave the broker nothing to answer.
                s.set_recv_timeout(Some(Duration::from_millis(300)));
                s.set_send_timeout(Some(Duration::from_secs(2)));
                Some(s)
            }
            Err(e) => {
                self.connect_failures += 1;
                self.first_failure.get_or_insert_with(|| format!("connect: {e}"));
                None
            }
        }
    }

    /// Reads up to `n` answers until the broker closes, stops sending, or sends
    /// bytes that are no answer.
    fn drain(&mut self, s: &RawConn, n: usize) {
        for _ in 0..n {
            match s.try_recv() {
                Ok(Some(_)) => self.answers += 1,
                _ => return,
            }
        }
    }

    /// Holds `s` open and silent, the oldest of 8 held going first (or the
    /// broker's io timeout dropping them before).
    fn keep_stalled(&mut self, s: RawConn) {
        self.stalled.push_back(s);
        if self.stalled.len() > 8 {
            self.stalled.pop_front();
        }
    }

    fn handshake(&mut self, s: &RawConn) -> bool {
        if !send(s, &frame_of(&Request::Hello(hello("lbtool-hostile")))) {
            return false;
        }
        matches!(s.try_recv(), Ok(Some(Response::Hello(_))))
    }

    /// A valid request of some kind, to mutate or send out of order. Its SQL only
    /// ever names a table nobody has, so no mutation of it can touch real data.
    fn some_request(&mut self) -> Request {
        match self.rng.below(8) {
            0 => Request::Ping,
            1 => execute(
                "INSERT INTO hostile_junk (x) VALUES (?)",
                vec![Value::Integer(self.rng.next_u64() as i64)],
            ),
            2 => Request::Batch {
                statements: vec![
                    Statement::new("INSERT INTO hostile_junk (x) VALUES (?)", vec![Value::Text("a".into())]),
                    Statement::new("SELECT ?", vec![Value::Blob(self.rng.bytes(16))]),
                ],
                opts: WriteOptions { timeout_ms: 500, request_id: Some([7; 16]), idempotent: true },
            },
            3 => Request::Commit,
            4 => Request::Rollback,
            5 => Request::Status,
            6 => Request::Checkpoint { mode: CheckpointMode::Passive },
            _ => execute("SELECT ?1, ?2", vec![Value::Real(1.5), Value::Null]),
        }
    }

    fn step(&mut self) -> usize {
        let action = self.rng.below(ACTIONS.len() as u64) as usize;
        match action {
            0 => {
                let Some(s) = self.connect() else { return action };
                if self.rng.below(2) == 0 && !self.handshake(&s) {
                    return action;
                }
                let len = if self.rng.below(8) == 0 { 65_536 } else { 1 + self.rng.below(4096) as usize };
                let bytes = self.rng.bytes(len);
                send(&s, &bytes);
                self.drain(&s, 4);
            }
            1 => {
                let Some(s) = self.connect() else { return action };
                if self.rng.below(2) == 0 && !self.handshake(&s) {
                    return action;
                }
                let full = frame_of(&self.some_request());
                let cut = self.rng.below(full.len() as u64) as usize;
                send(&s, &full[..cut]);
            }
            2 => {
                let Some(s) = self.connect() else { return action };
                if self.rng.below(2) == 0 && !self.handshake(&s) {
                    return action;
                }
                let len = match self.rng.below(3) {
                    0 => u32::MAX,
                    1 => HARD_MAX_FRAME + 1,
                    _ => self.max_frame + 1,
                };
                send(&s, &len.to_le_bytes());
                self.drain(&s, 1);
            }
            3 => {
                let Some(s) = self.connect() else { return action };
                if !self.handshake(&s) {
                    return action;
                }
                // Just over the limit (refused unread), or a full-size frame of
                // garbage (read, refused) on a connection then kept open and idle.
                let keep = self.rng.below(2) == 0;
                let len = if keep {
                    self.max_frame as usize
                } else {
                    self.max_frame as usize + 1 + self.rng.below(65_536) as usize
                };
                let mut bytes = (len as u32).to_le_bytes().to_vec();
                bytes.extend(self.rng.bytes(len));
                send(&s, &bytes);
                self.drain(&s, 1);
                if keep {
                    self.keep_stalled(s);
                }
            }
            4 => {
                let Some(s) = self.connect() else { return action };
                let frames: Vec<Vec<u8>> = match self.rng.below(6) {
                    0 => vec![frame_of(&Request::Ping)],
                    1 => vec![frame_of(&execute("INSERT INTO hostile_junk VALUES (1)", vec![]))],
                    2 => vec![
                        frame_of(&Request::Hello(hello("twice"))),
                        frame_of(&Request::Hello(hello("twice"))),
                    ],
                    3 => {
                        vec![
                            frame_of(&Request::Hello(hello("no-session"))),
                            frame_of(&Request::Commit),
                            frame_of(&Request::Rollback),
                        ]
                    }
                    // A session opened, then the connection dropped: rolled back.
                    4 => vec![
                        frame_of(&Request::Hello(hello("session-dropper"))),
                        frame_of(&Request::BeginSession { timeout_ms: 500 }),
                        frame_of(&execute("CREATE TABLE hostile_junk (x)", vec![])),
                    ],
                    _ => vec![
                        frame_of(&Request::Hello(hello("denied"))),
                        frame_of(&execute("ATTACH '/tmp/hostile.db' AS h", vec![])),
                        frame_of(&execute("PRAGMA synchronous = OFF", vec![])),
                    ],
                };
                let n = frames.len();
                send(&s, &frames.concat());
                self.drain(&s, n);
            }
            5 => {
                let Some(s) = self.connect() else { return action };
                if self.rng.below(2) == 0 && !self.handshake(&s) {
                    return action;
                }
                let full = frame_of(&self.some_request());
                send(&s, &full[..full.len() / 2]);
                // Held open, silent, until pushed out by newer ones (or the broker's
                // io timeout drops them first).
                self.keep_stalled(s);
            }
            6 => {
                for _ in 0..20 {
                    let _ = self.connect();
                }
            }
            7 => {
                let Some(s) = self.connect() else { return action };
                if !self.handshake(&s) {
                    return action;
                }
                for _ in 0..4 {
                    let mut f = frame_of(&self.some_request());
                    for _ in 0..=self.rng.below(4) {
                        // Mostly the payload; sometimes the length prefix too.
                        let i = self.rng.below(f.len() as u64) as usize;
                        f[i] ^= 1 << self.rng.below(8);
                    }
                    // A flipped bit can turn `Status` (index 4) into `Shutdown` (5),
                    // which any client of the broker's user may send: that stops the
                    // broker by design, it is no attack the soak could survive.
                    if f.len() >= 4 && is_shutdown(&f[4..]) {
                        continue;
                    }
                    if !send(&s, &f) {
                        return action;
                    }
                    // A mutated length may leave the broker waiting for more bytes.
                    s.set_recv_timeout(Some(Duration::from_millis(200)));
                    self.drain(&s, 1);
                }
            }
            8 => {
                let Some(s) = self.connect() else { return action };
                if !self.handshake(&s) {
                    return action;
                }
                let req = frame_of(&execute("SELECT zeroblob(65536)", vec![]));
                for _ in 0..32 {
                    if !send(&s, &req) {
                        break;
                    }
                }
                // Dropped with the answers unread.
            }
            _ => self.broken_stream(),
        }
        action
    }

    /// A streamed executemany or batch (which holds the writer while it runs) broken one
    /// way or another: left mid-stream, interrupted by another request or by
    /// garbage, ended with a wrong row count, mixed with pipelined writes, or
    /// left silent until its short deadline. Its statement only reads, so no
    /// variation of it can touch data.
    fn broken_stream(&mut self) {
        let Some(s) = self.connect() else { return };
        if !self.handshake(&s) {
            return;
        }
        let opts = WriteOptions { timeout_ms: 300, ..WriteOptions::default() };
        let n = 1 + self.rng.below(64);
        // An executemany or a streamed batch: the same stream at the broker.
        let (begin, part) = if self.rng.below(2) == 0 {
            let rows = (0..n).map(|i| vec![Value::Integer(i as i64)]).collect();
            (Request::ManyBegin { sql: "SELECT ?1".into(), opts }, Request::ManyRows { rows })
        } else {
            let statements = (0..n).map(|i| Statement::new(format!("SELECT {i}"), vec![])).collect();
            (Request::BatchBegin { opts }, Request::BatchPart { statements })
        };
        let mut frames = vec![frame_of(&begin), frame_of(&part)];
        match self.rng.below(6) {
            // Left mid-stream: the connection's end rolls it back.
            0 => {}
            1 => frames.push(frame_of(&Request::Ping)),
            2 => {
                let len = 1 + self.rng.below(64) as usize;
                frames.push(self.rng.bytes(len));
            }
            3 => frames.push(frame_of(&Request::ManyEnd { rows: u64::MAX, commit: true })),
            // Pipelined writes first, then the stream, then another write.
            4 => {
                let write = frame_of(&execute("SELECT 1", vec![]));
                frames.splice(0..0, [write.clone(), write.clone(), write.clone()]);
                frames.push(write);
            }
            _ => {
                send(&s, &frames.concat());
                self.keep_stalled(s);
                return;
            }
        }
        let n = frames.len();
        send(&s, &frames.concat());
        self.drain(&s, n);
    }
}

/// Runs the attack for `secs` seconds.
pub fn run(
    db: &Path,
    socket: Option<&str>,
    secs: f64,
    seed: u64,
    max_frame: u32,
) -> (serde_json::Value, bool) {
    let socket = match Location::resolve(db, socket) {
        Ok(l) => l.socket,
        Err(e) => return (json!({ "error": format!("cannot locate the broker: {e}") }), false),
    };
    let mut a = Attack {
        socket,
        rng: Rng::new(seed),
        max_frame,
        connects: 0,
        connect_failures: 0,
        first_failure: None,
        answers: 0,
        stalled: VecDeque::new(),
    };
    let deadline = Instant::now() + Duration::from_secs_f64(secs.max(0.0));
    let mut done = [0u64; ACTIONS.len()];
    while Instant::now() < deadline {
        done[a.step()] += 1;
        // A broker gone for good: stop instead of spinning.
        if a.connect_failures > 50 {
            break;
        }
    }
    // Let stalled connections go before reporting; the broker may have dropped
    // them already.
    let mut leftover = 0;
    for s in a.stalled.drain(..) {
        let mut b = [0u8; 1];
        if s.stream().read(&mut b).is_err() {
            leftover += 1;
        }
    }
    let by_action: serde_json::Map<String, serde_json::Value> =
        ACTIONS.iter().zip(done).map(|(n, c)| ((*n).to_owned(), json!(c))).collect();
    let ok = a.connect_failures == 0;
    (
        json!({
            "seed": seed, "actions": done.iter().sum::<u64>(), "by_action": by_action,
            "connects": a.connects, "connect_failures": a.connect_failures,
            "first_failure": a.first_failure, "answers": a.answers,
            "stalled_still_open_at_end": leftover,
        }),
        ok,
    )
}
