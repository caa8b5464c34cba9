//! The real writer, driven in-process without sockets, for the property tests and
//! the fuzz target that check what no client request may do to the broker: its
//! connection keeps no client's state, its settings stay its own, and every
//! answer matches the file. Not part of the broker's interface.

use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use litebroker_protocol::{RequestId, Response, WriteOptions};
use rusqlite::Connection;

use crate::config::Config;
use crate::guard;
pub use crate::job::WriteBody;
use crate::job::{Job, JobKind, JobLine, Reply, ReplyTx, Tagged};
use crate::queue::JobQueue;
use crate::shared::{ClientEntry, Shared};
use crate::sql::authorizer;
use crate::writer::open::open_writer;
use crate::writer::Writer;

/// A writer on a database file, with request ids recorded, as the broker runs it.
pub struct WriterHarness {
    writer: Writer,
    shared: Arc<Shared>,
    client: Arc<ClientEntry>,
}

/// One request of a group: its statements and, optionally, its request id.
pub type GroupRequest = (WriteBody, Option<RequestId>);

impl WriterHarness {
    /// Opens (creating) `db` as the broker's writer with `config`'s limits.
    ///
    /// # Errors
    /// When the database cannot be opened or set up.
    pub fn open(db: &Path, mut config: Config) -> Result<WriterHarness, String> {
        config.db = db.to_path_buf();
        let conn = open_writer(db, &config)?;
        crate::request_ids::ensure_table(&conn).map_err(|e| e.to_string())?;
        let (stop_tx, _) = mpsc::channel();
        let shared = Arc::new(Shared::new(config, db.to_string_lossy().into_owned(), String::new(), stop_tx));
        shared.set_exactly_once_off(None);
        let client =
            shared.register("harness".into(), std::process::id(), None, litebroker_protocol::PROTOCOL_MINOR);
        let mut writer = Writer::new(conn, shared.clone(), Arc::new(JobQueue::new(64)));
        writer.start();
        Ok(WriterHarness { writer, shared, client })
    }

    /// A job as a connection would queue it; `taken`: as the writer holds it once
    /// it put it in a group (groups are run on jobs already taken).
    fn job(&mut self, kind: JobKind, request_id: Option<RequestId>, taken: bool) -> (Job, Receiver<Tagged>) {
        let (tx, rx) = mpsc::sync_channel(1);
        let opts = WriteOptions { request_id, ..WriteOptions::default() };
        let deadline = Instant::now() + Duration::from_secs(10);
        let job = JobLine::new(ReplyTx::new(tx)).next(kind, opts, &self.client, deadline);
        if taken {
            job.claim();
        }
        (job, rx)
    }

    /// Commits `requests` as one group, each in its own savepoint, and returns
    /// each one's answer.
    pub fn group(&mut self, requests: Vec<GroupRequest>) -> Vec<Response> {
        let (jobs, replies): (Vec<Job>, Vec<_>) =
            requests.into_iter().map(|(body, id)| self.job(JobKind::Write(body), id, true)).unzip();
        self.writer.execute_group(&jobs);
        drop(jobs);
        replies.iter().map(answer).collect()
    }

    /// Runs a write session: opens it, runs each call in it, then commits (or
    /// rolls back); returns every answer, the opening's first.
    pub fn session(&mut self, calls: Vec<WriteBody>, commit: bool) -> Vec<Response> {
        let mut answers = Vec::new();
        let (job, rx) = self.job(JobKind::BeginSession, None, false);
        self.writer.dispatch(job);
        answers.push(answer(&rx));
        for body in calls {
            let (job, rx) = self.job(JobKind::SessionWrite(body), None, false);
            self.writer.dispatch(job);
            answers.push(answer(&rx));
        }
        let (job, rx) = self.job(JobKind::EndSession { commit }, None, false);
        self.writer.dispatch(job);
        answers.push(answer(&rx));
        answers
    }

    /// The writer's connection, to read what was committed.
    pub fn connection(&self) -> &Connection {
        self.writer.connection()
    }

    /// What must hold after any client request: no transaction left open, the
    /// connection's state the broker's (nothing in the temp schema, its
    /// settings), and writes still accepted.
    ///
    /// # Errors
    /// What does not hold.
    pub fn check_invariants(&self) -> Result<(), String> {
        let conn = self.connection();
        if !conn.is_autocommit() {
            return Err("a transaction was left open".into());
        }
        authorizer::internal(|| conn.execute_batch("BEGIN")).map_err(|e| e.to_string())?;
        let state = guard::connection_state(conn, true);
        authorizer::internal(|| conn.execute_batch("ROLLBACK")).map_err(|e| e.to_string())?;
        state?;
        if let Some(reason) = self.shared.writes_stopped() {
            return Err(format!("writes stopped: {reason}"));
        }
        Ok(())
    }
}

fn answer(rx: &Receiver<Tagged>) -> Response {
    match rx.try_recv() {
        Ok((_, Reply::Response(r))) => r,
        Ok((_, other)) => panic!("unexpected reply {other:?}"),
        Err(_) => panic!("a request was not answered"),
    }
}
