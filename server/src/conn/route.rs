//! Where each request of an identified client goes: answered here from shared
//! state, run here on a read-only connection of its own (stats, verify, backup),
//! or turned into a job for the writer, with its timeout.
//!
//! | request | goes to |
//! |---|---|
//! | `Ping`, `Health`, `Status`, `Connections`, `Metrics`, `Replication` | an answer from shared state |
//! | `Shutdown` | the stop sequence (`crate::shutdown`), answered `ShuttingDown` |
//! | `Stats`, `Verify` | `crate::admin`, on this thread |
//! | `Backup` | `crate::admin`, on this thread, with progress frames |
//! | `Execute`, `Batch` | a `Write` job, or a `SessionWrite` job when this client holds a session |
//! | `BeginSession`, `Commit`, `Rollback` | `BeginSession`, `EndSession` jobs |
//! | `Checkpoint`, `Migrate`, `Restore` | jobs of their own |
//! | `ManyBegin`, `BatchBegin` | the stream, served by `conn::many` (never here); `ManyRows`, `BatchPart`, `ManyEnd` here are out of place |
//! | `FeedStats` | an answer from the change feed |
//! | `Watch` | the connection becomes a stream (`conn::watch`), before routing |
//!
//! Checked here, before anything is queued: parameters (`--max-params`), batch
//! size (`--max-batch-statements`), migration order, the restore source, the
//! client's schema version, and whether its session is still there (a session
//! the broker rolled back is reported to its client once).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use litebroker_protocol::{ErrorInfo, Migration, Request, Response, Statement, WriteOptions};
use tracing::info;

use super::deadline::timeout_of;
use crate::admin;
use crate::config::Config;
use crate::job::{JobKind, WriteBody};
use crate::metrics;
use crate::shared::{session_state, ClientEntry, Shared, StopReason};
use crate::texts;

/// What to do with a request.
// Built once per request and matched at once.
#[allow(clippy::large_enum_variant)]
pub(super) enum Route {
    /// Answer this.
    Answer(Response),
    /// Hand this job to the writer and wait for its answer until `timeout`.
    Submit {
        /// The job.
        kind: JobKind,
        /// The request's options (request id, idempotency).
        opts: WriteOptions,
        /// How long the client waits.
        timeout: Duration,
    },
    /// Write a backup on this thread, sending progress frames.
    Backup {
        /// The backup's label.
        label: String,
        /// Backups to keep (0: all).
        keep: u32,
    },
}

/// Where `req` of `client` goes.
pub(super) fn route(req: Request, client: &Arc<ClientEntry>, shared: &Shared) -> Route {
    let config = &shared.config;
    let job = |kind, timeout| Route::Submit { kind, opts: WriteOptions::default(), timeout };
    let answer = match req {
        // An answer a client cannot decode is never sent (see `job::for_minor`).
        _ if client.minor < req.since_minor() => {
            Response::Error(texts::needs_minor(req.kind(), req.since_minor(), client.minor))
        }
        Request::Hello(_) => Response::Error(texts::handshake_again()),
        Request::Ping => Response::Pong,
        Request::Health => Response::Health(shared.health()),
        Request::Metrics => Response::Metrics(metrics::report::report(shared)),
        Request::Replication => Response::Replication(shared.replication_report()),
        Request::Status => Response::Status(shared.status()),
        Request::Connections => Response::Connections(shared.connections()),
        Request::Shutdown => {
            info!("shutdown requested by {}", client.describe());
            shared.request_stop(StopReason::Request { client: client.describe() });
            Response::ShuttingDown
        }
        Request::Execute { stmt, opts } => match check_statement(&stmt, config) {
            Err(e) => Response::Error(e),
            Ok(()) => return write(client, WriteBody::Execute(stmt), opts, shared),
        },
        Request::Batch { statements, opts } => match check_batch(&statements, config) {
            Err(e) => Response::Error(e),
            Ok(()) => return write(client, WriteBody::Batch(statements), opts, shared),
        },
        Request::BeginSession { timeout_ms } => match session_state(client, config) {
            Ok(true) => Response::Error(texts::session_already_held()),
            // An expired session was reported to nobody yet; a new one supersedes it.
            Ok(false) | Err(_) => return job(JobKind::BeginSession, timeout_of(timeout_ms, config)),
        },
        Request::Stats => admin::stats(shared, shared.status())
            .map_or_else(Response::Error, |s| Response::Stats(Box::new(s))),
        Request::Verify => admin::verify(shared).map_or_else(Response::Error, Response::Verify),
        Request::Checkpoint { .. } | Request::Restore { .. } if session_state(client, config) == Ok(true) => {
            Response::Error(texts::needs_the_writer(req.kind()))
        }
        Request::Checkpoint { mode } => return job(JobKind::Checkpoint(mode), config.default_timeout),
        Request::Backup { label, keep } => return Route::Backup { label, keep },
        Request::Migrate { migrations, timeout_ms } => match check_migrations(&migrations) {
            Err(e) => Response::Error(e),
            Ok(()) => return job(JobKind::Migrate(migrations), timeout_of(timeout_ms, config)),
        },
        Request::Restore { path, timeout_ms } => match admin::check_restore(shared, &path) {
            Err(e) => Response::Error(e),
            Ok(p) => {
                info!("restore of {} requested by {}", p.display(), client.describe());
                return job(JobKind::Restore(p), timeout_of(timeout_ms, config));
            }
        },
        // A stream's frames are read by `conn::many` once `ManyBegin` or
        // `BatchBegin` opened it.
        Request::ManyBegin { .. } | Request::ManyRows { .. } | Request::ManyEnd { .. } => {
            Response::Error(texts::many_out_of_place(texts::EXECUTEMANY, req.kind()))
        }
        Request::BatchBegin { .. } | Request::BatchPart { .. } => {
            Response::Error(texts::many_out_of_place(texts::STREAMED_BATCH, req.kind()))
        }
        Request::FeedStats => Response::FeedStats(shared.feed.figures()),
        // Served by the connection (`conn::watch`) before routing.
        Request::Watch { .. } => Response::Error(texts::watch_in_session()),
        Request::Commit | Request::Rollback => {
            let commit = matches!(req, Request::Commit);
            match session_state(client, config) {
                Err(e) => Response::Error(e),
                Ok(false) => Response::Error(texts::no_session(commit)),
                Ok(true) => return job(JobKind::EndSession { commit }, config.default_timeout),
            }
        }
    };
    Route::Answer(answer)
}

/// A write of `client`: refused while the client expects a newer schema than the
/// database's, run in its session if it holds one.
fn write(client: &Arc<ClientEntry>, body: WriteBody, opts: WriteOptions, shared: &Shared) -> Route {
    let schema = shared.schema_version.load(Ordering::Relaxed);
    if let Some(expected) = client.expected_schema.filter(|e| *e > schema) {
        return Route::Answer(Response::Error(texts::schema_mismatch(expected, schema)));
    }
    let timeout = timeout_of(opts.timeout_ms, &shared.config);
    match session_state(client, &shared.config) {
        Err(e) => Route::Answer(Response::Error(e)),
        Ok(true) => Route::Submit { kind: JobKind::SessionWrite(body), opts, timeout },
        Ok(false) => Route::Submit { kind: JobKind::Write(body), opts, timeout },
    }
}

/// Whether this client holds a session; one the broker rolled back is reported
/// once (then the client holds none).
///
/// # Errors
/// `lease_expired`, once, after the broker rolled the client's session back.
pub(super) fn session_state(client: &ClientEntry, config: &Config) -> Result<bool, ErrorInfo> {
    match client.session.load(Ordering::SeqCst) {
        session_state::ACTIVE => Ok(true),
        session_state::EXPIRED => {
            client.session.store(session_state::NONE, Ordering::SeqCst);
            Err(texts::lease_expired(config.lease))
        }
        _ => Ok(false),
    }
}

/// A statement's parameters against `--max-params`.
///
/// # Errors
/// `limit_exceeded`.
pub(super) fn check_statement(s: &Statement, config: &Config) -> Result<(), ErrorInfo> {
    if s.params.len() > config.max_params {
        return Err(texts::too_many_params(s.params.len(), config.max_params));
    }
    Ok(())
}

pub(super) fn check_batch(stmts: &[Statement], config: &Config) -> Result<(), ErrorInfo> {
    let max = config.max_batch_statements;
    if stmts.len() > max {
        return Err(texts::too_many_batch_statements(stmts.len(), max));
    }
    if stmts.is_empty() {
        return Err(texts::empty_batch());
    }
    stmts.iter().try_for_each(|s| check_statement(s, config))
}

/// Versions must be positive and strictly increasing, so "apply those above the
/// database's version" has one meaning.
fn check_migrations(migrations: &[Migration]) -> Result<(), ErrorInfo> {
    let mut last = 0;
    for m in migrations {
        if m.version <= last {
            return Err(texts::migrations_out_of_order(m.version, &m.name, last));
        }
        last = m.version;
    }
    Ok(())
}
