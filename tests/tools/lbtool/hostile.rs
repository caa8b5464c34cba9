//! `lbtool hostile`: one process of buggy or hostile traffic against a broker.
//!
//! Every action opens its own connection(s) with short timeouts, so this process
//! never hangs on a broker that stops answering; it reports what it did as JSON.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use interprocess::local_socket::prelude::*;
use interprocess::local_socket::Stream;
use litebroker_protocol::rendezvous::{socket_name, Location};
use litebroker_protocol::{
    encode_frame, read_frame, CheckpointMode, Hello, Request, Response, Statement, Value, WriteOptions,
    HARD_MAX_FRAME, PROTOCOL_MINOR, PROTOCOL_VERSION,
};
use serde_json::json;

/// Deterministic xorshift64*: a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }
}

const ACTIONS: [&str; 9] = [
    "garbage",
    "truncated",
    "forged_length",
    "oversized",
    "out_of_order",
    "stall",
    "churn",
    "mutated",
    "pipeline_no_read",
];

struct Attack {
    socket: String,
    rng: Rng,
    max_frame: u32,
    connects: u64,
    connect_failures: u64,
    first_failure: Option<String>,
    answers: u64,
    stalled: VecDeque<Stream>,
}

fn is_shutdown(payload: &[u8]) -> bool {
    matches!(litebroker_protocol::decode_payload::<Request>(payload), Ok(Request::Shutdown))
}

fn frame(req: &Request) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_frame(req, &mut buf, HARD_MAX_FRAME).expect("encode");
    buf
}

fn hello(name: &str) -> Request {
    Request::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        minor: PROTOCOL_MINOR,
        client_name: name.into(),
        pid: std::process::id(),
        expected_schema: None,
    })
}

fn execute(sql: &str, params: Vec<Value>) -> Request {
    Request::Execute { stmt: Statement::new(sql, params), opts: WriteOptions::default() }
}

/// Sends bytes, ignoring failures: the broker may hang up first, which is fine.
fn send(s: &Stream, bytes: &[u8]) -> bool {
    let mut w = s;
    w.write_all(bytes).and_then(|()| w.flush()).is_ok()
}

impl Attack {
    fn connect(&mut self) -> Option<Stream> {
        self.connects += 1;
        let name = match socket_name(&self.socket) {
            Ok(n) => n,
            Err(e) => {
                self.connect_failures += 1;
                self.first_failure.get_or_insert_with(|| e.to_string());
                return None;
            }
        };
        match Stream::connect(name) {
            Ok(s) => {
                // Short: many actions leave the broker nothing to answer.
                let _ = s.set_recv_timeout(Some(Duration::from_millis(300)));
                let _ = s.set_send_timeout(Some(Duration::from_secs(2)));
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
    fn drain(&mut self, s: &Stream, n: usize) {
        let mut buf = Vec::new();
        for _ in 0..n {
            match read_frame::<_, Response>(&mut &*s, HARD_MAX_FRAME, &mut buf) {
                Ok(Some(_)) => self.answers += 1,
                _ => return,
            }
        }
    }

    fn handshake(&mut self, s: &Stream) -> bool {
        if !send(s, &frame(&hello("lbtool-hostile"))) {
            return false;
        }
        let mut buf = Vec::new();
        matches!(read_frame::<_, Response>(&mut &*s, HARD_MAX_FRAME, &mut buf), Ok(Some(Response::Hello(_))))
    }

    /// A valid request of some kind, to mutate or send out of order. Its SQL only
    /// ever names a table nobody has, so no mutation of it can touch real data.
    fn some_request(&mut self) -> Request {
        match self.rng.below(8) {
            0 => Request::Ping,
            1 => execute(
                "INSERT INTO hostile_junk (x) VALUES (?)",
                vec![Value::Integer(self.rng.next() as i64)],
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
                let full = frame(&self.some_request());
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
                    self.stalled.push_back(s);
                    if self.stalled.len() > 8 {
                        self.stalled.pop_front();
                    }
                }
            }
            4 => {
                let Some(s) = self.connect() else { return action };
                let frames: Vec<Vec<u8>> = match self.rng.below(6) {
                    0 => vec![frame(&Request::Ping)],
                    1 => vec![frame(&execute("INSERT INTO hostile_junk VALUES (1)", vec![]))],
                    2 => vec![frame(&hello("twice")), frame(&hello("twice"))],
                    3 => {
                        vec![frame(&hello("no-session")), frame(&Request::Commit), frame(&Request::Rollback)]
                    }
                    // A session opened, then the connection dropped: rolled back.
                    4 => vec![
                        frame(&hello("session-dropper")),
                        frame(&Request::BeginSession { timeout_ms: 500 }),
                        frame(&execute("CREATE TABLE hostile_junk (x)", vec![])),
                    ],
                    _ => vec![
                        frame(&hello("denied")),
                        frame(&execute("ATTACH '/tmp/hostile.db' AS h", vec![])),
                        frame(&execute("PRAGMA synchronous = OFF", vec![])),
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
                let full = frame(&self.some_request());
                send(&s, &full[..full.len() / 2]);
                // Held open, silent, until pushed out by newer ones (or the broker's
                // io timeout drops them first).
                self.stalled.push_back(s);
                if self.stalled.len() > 8 {
                    self.stalled.pop_front();
                }
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
                    let mut f = frame(&self.some_request());
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
                    let _ = s.set_recv_timeout(Some(Duration::from_millis(200)));
                    self.drain(&s, 1);
                }
            }
            _ => {
                let Some(s) = self.connect() else { return action };
                if !self.handshake(&s) {
                    return action;
                }
                let req = frame(&execute("SELECT zeroblob(65536)", vec![]));
                for _ in 0..32 {
                    if !send(&s, &req) {
                        break;
                    }
                }
                // Dropped with the answers unread.
            }
        }
        action
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
        rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
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
        if (&s).read(&mut b).is_err() {
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
