//! The answer to `Request::Metrics` (and the body of `GET /metrics`): every
//! family, its type and help text, read from `shared::Counters`, [`Metrics`] and
//! the process. The families and their meaning are listed in the operations
//! guide; a name is never reused for another meaning.
//!
//! Series with a fixed, small label set are always written (zero included), so
//! that a rate over them exists from the first scrape; of the requests, each
//! kind's `ok` series is always written and the error outcomes once they occur
//! (19 kinds × 17 error kinds would be mostly zeros).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use litebroker_protocol::host::unix_ms;
use litebroker_protocol::{
    MetricFamily, MetricKind, MetricSeries, MetricValue, MetricsReport, PROTOCOL_MINOR, PROTOCOL_VERSION,
};

use super::histogram::Histogram;
use super::{process, CHECKPOINT_MODES, CHECKPOINT_RESULTS, HTTP_CODES, KINDS, OUTCOMES};
use crate::ops;
use crate::shared::Shared;
use crate::sql::authorizer;

/// Microseconds per second, the base unit of the durations.
const US: f64 = 1e6;

/// The report, read now.
pub(crate) fn report(shared: &Shared) -> MetricsReport {
    let mut r = Report { families: Vec::with_capacity(48) };
    let m = &shared.metrics;
    let c = &shared.counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;

    r.gauge_with(
        "litebroker_build_info",
        "The broker's version and protocol version, as labels; always 1.",
        vec![series(
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("protocol", &format!("{PROTOCOL_VERSION}.{PROTOCOL_MINOR}")),
            ],
            1.0,
        )],
    );
    let started_unix_ms = unix_ms().saturating_sub(shared.started.elapsed().as_millis() as u64);
    r.gauge(
        "litebroker_start_time_seconds",
        "When the broker started, seconds since the Unix epoch.",
        started_unix_ms as f64 / 1000.0,
    );

    // Requests.
    let mut requests = Vec::new();
    for (k, kind) in KINDS.iter().enumerate() {
        for (o, outcome) in OUTCOMES.iter().enumerate() {
            let n = m.requests(k, o);
            if n > 0 || (o == 0 && *kind != "unknown") {
                requests.push(series(&[("kind", kind), ("outcome", outcome)], n as f64));
            }
        }
    }
    r.counter_with(
        "litebroker_requests_total",
        "Requests answered, by kind and outcome (ok, or the error kind answered); kind unknown: frames that did not decode.",
        requests,
    );
    r.gauge(
        "litebroker_requests_in_flight",
        "Requests read and not answered yet.",
        c.in_flight.load(Ordering::Relaxed) as f64,
    );
    r.gauge("litebroker_clients", "Clients connected now (handshake done).", shared.client_count() as f64);
    r.gauge(
        "litebroker_connections",
        "Connections open now, handshake done or not (bounded by --max-clients).",
        shared.connections.load(Ordering::Relaxed) as f64,
    );
    r.counter(
        "litebroker_connections_refused_total",
        "Connections refused at accept: too many clients, or a peer user not allowed.",
        load(&m.refused_connections),
    );
    r.counter(
        "litebroker_stalled_clients_total",
        "Clients disconnected for stalling in the middle of a frame or not reading their answers (--io-timeout-secs).",
        load(&m.stalled_clients),
    );

    // The writer.
    r.gauge(
        "litebroker_queue_depth",
        "Jobs waiting for the writer or being run now.",
        c.queued.load(Ordering::Relaxed) as f64,
    );
    r.histogram(
        "litebroker_write_queue_wait_seconds",
        "How long one-shot writes waited in the queue for the writer.",
        &m.queue_wait,
        US,
    );
    r.histogram(
        "litebroker_write_execute_seconds",
        "A one-shot write's part of its group transaction, from its turn to the next request's or the COMMIT (a re-run group runs it again).",
        &m.execute,
        US,
    );
    r.histogram(
        "litebroker_write_commit_seconds",
        "How long the COMMIT of a group-commit transaction took.",
        &m.commit,
        US,
    );
    r.histogram(
        "litebroker_write_latency_seconds",
        "One-shot writes from queued until their answer was sent (committed, or failed on their own).",
        &m.write_latency,
        US,
    );
    r.histogram(
        "litebroker_group_commit_requests",
        "Requests committed per group-commit transaction.",
        &m.group_size,
        1.0,
    );
    r.histogram(
        "litebroker_group_wait_seconds",
        "Group waits taken (--group-wait-us): how long each group waited for the writers known to be coming before its transaction began.",
        &m.group_wait,
        US,
    );
    r.counter(
        "litebroker_group_wait_joined_total",
        "Requests that joined a group during its wait.",
        load(&m.group_wait_joined),
    );
    r.counter(
        "litebroker_group_wait_missed_total",
        "Clients a group waited for that did not come in time (not waited for again until they write again).",
        load(&m.group_wait_missed),
    );
    r.counter(
        "litebroker_commits_total",
        "Write transactions committed: groups, write sessions, migrations, restores.",
        load(&c.commits),
    );
    r.counter(
        "litebroker_group_reruns_total",
        "Group transactions that failed before their COMMIT and whose requests ran again.",
        load(&m.group_reruns),
    );
    r.counter(
        "litebroker_statements_interrupted_total",
        "Write requests whose statement was stopped at its deadline (--max-statement-secs or the request's timeout).",
        load(&m.interrupted),
    );
    r.counter(
        "litebroker_authorizer_denials_total",
        "Client statements the SQL authorizer refused (attach, reserved tables, settings, …).",
        authorizer::denials() as f64,
    );

    // Write sessions.
    r.gauge(
        "litebroker_write_session_active",
        "1 while a write session holds the writer, else 0.",
        if shared.holder().is_some() { 1.0 } else { 0.0 },
    );
    r.histogram(
        "litebroker_write_session_hold_seconds",
        "How long write sessions held the writer.",
        &m.session_hold,
        US,
    );
    r.counter(
        "litebroker_write_session_lease_expiries_total",
        "Write sessions rolled back because they held the writer longer than their lease (--lease-secs).",
        load(&m.lease_expiries),
    );

    // Other processes' locks.
    r.counter(
        "litebroker_lock_waits_total",
        "Times the writer found the database locked by another process after busy_timeout.",
        load(&c.lock_waits),
    );
    r.counter(
        "litebroker_lock_retries_total",
        "Backoff retries made because of such locks.",
        load(&c.lock_retries),
    );

    // Guarantees.
    r.gauge(
        "litebroker_exactly_once",
        "1 while writes carrying a request id are exactly-once (request ids recorded), else 0.",
        if shared.request_ids.load(Ordering::Relaxed) { 1.0 } else { 0.0 },
    );
    r.gauge(
        "litebroker_writes_accepted",
        "1 while the broker accepts writes, 0 once it stopped them to protect the data.",
        if shared.writes_stopped().is_none() { 1.0 } else { 0.0 },
    );
    r.counter(
        "litebroker_request_ids_recorded_total",
        "Request ids recorded with their answer, in committed transactions.",
        load(&m.request_ids_recorded),
    );
    r.counter(
        "litebroker_request_id_resends_total",
        "Writes answered from their request-id record instead of running again (resends).",
        load(&c.deduplicated),
    );
    r.gauge(
        "litebroker_schema_version",
        "The database's PRAGMA user_version.",
        f64::from(shared.schema_version.load(Ordering::Relaxed)),
    );

    // The WAL and checkpoints.
    let wal_bytes = ops::file_size(&ops::wal_path(Path::new(&shared.db_path)));
    r.gauge("litebroker_wal_bytes", "Size of the database's -wal file.", wal_bytes as f64);
    r.gauge(
        "litebroker_wal_frames",
        "Frames in the WAL after the writer's last commit or checkpoint.",
        load(&m.wal_frames),
    );
    let mut checkpoints = Vec::new();
    for (i, mode) in CHECKPOINT_MODES.iter().enumerate() {
        for (j, result) in CHECKPOINT_RESULTS.iter().enumerate() {
            let mode = mode.as_str().to_ascii_lowercase();
            checkpoints.push(series(&[("mode", &mode), ("result", result)], m.checkpoints(i, j) as f64));
        }
    }
    r.counter_with(
        "litebroker_checkpoints_total",
        "WAL checkpoints run (by the broker or on request), by mode and result (blocked: readers kept it from completing).",
        checkpoints,
    );
    if let Some(last) = shared.last_checkpoint() {
        r.gauge(
            "litebroker_last_checkpoint_timestamp_seconds",
            "When the last checkpoint ran, seconds since the Unix epoch.",
            last.at_unix_ms as f64 / 1000.0,
        );
        r.gauge(
            "litebroker_last_checkpoint_blocked",
            "1 when readers kept the last checkpoint from completing, else 0.",
            if last.blocked { 1.0 } else { 0.0 },
        );
    }

    // Backups.
    r.counter_with(
        "litebroker_backups_total",
        "Backups the broker wrote, by result.",
        vec![
            series(&[("result", "ok")], m.backups(false) as f64),
            series(&[("result", "failed")], m.backups(true) as f64),
        ],
    );
    r.counter("litebroker_backup_bytes_total", "Bytes of the backups written.", load(&m.backup_bytes));

    // The change feed.
    let f = shared.feed.figures();
    r.gauge(
        "litebroker_feed_subscribers",
        "Change-feed subscribers (watching connections) now.",
        f.subscribers as f64,
    );
    r.gauge(
        "litebroker_feed_ring_events",
        "Events in the change feed's ring now (for watchers that resume).",
        f.ring_events as f64,
    );
    r.gauge("litebroker_feed_ring_bytes", "Estimated size of the change feed's ring.", f.ring_bytes as f64);
    r.counter(
        "litebroker_feed_events_published_total",
        "Change-feed events published (committed transactions and resyncs).",
        f.published as f64,
    );
    r.counter(
        "litebroker_feed_resyncs_total",
        "Resync events sent to subscribers, all reasons.",
        f.resyncs as f64,
    );
    r.counter(
        "litebroker_feed_backlogs_dropped_total",
        "Subscribers whose backlog was dropped because they fell behind (each got a resync).",
        f.dropped_backlogs as f64,
    );

    // Replication, when the broker replicates.
    if shared.replication.get().is_some() {
        let rep = shared.replication_report();
        let running = rep.state == litebroker_protocol::replication::ReplicationState::Running;
        r.gauge(
            "litebroker_replication_running",
            "1 while the replication process (Litestream) runs.",
            f64::from(u8::from(running)),
        );
        r.gauge(
            "litebroker_replication_lag_seconds",
            "How far the replica is behind the last local commit (0 when caught up).",
            rep.lag_ms as f64 / 1000.0,
        );
        r.counter(
            "litebroker_replication_restarts_total",
            "Times the broker restarted the replication process after it exited.",
            f64::from(rep.restarts),
        );
    }

    // The process.
    let p = process::read();
    if let Some(v) = p.resident_bytes {
        r.gauge(
            "litebroker_process_resident_memory_bytes",
            "The broker's resident memory (Windows: working set).",
            v as f64,
        );
    }
    if let Some(v) = p.open_fds {
        r.gauge(
            "litebroker_process_open_fds",
            "The broker's open file descriptors (Windows: handles).",
            v as f64,
        );
    }
    if let Some(v) = p.max_fds {
        r.gauge(
            "litebroker_process_max_fds",
            "The most file descriptors the broker may open (its soft limit).",
            v as f64,
        );
    }

    // The HTTP endpoint itself.
    let http = HTTP_CODES
        .iter()
        .enumerate()
        .map(|(i, code)| series(&[("code", &code.to_string())], m.http(i) as f64))
        .collect();
    r.counter_with(
        "litebroker_metrics_http_requests_total",
        "Requests to the --metrics-listen endpoint, by the status code answered (408: cut off at the time limit).",
        http,
    );

    MetricsReport { at_unix_ms: unix_ms(), families: r.families }
}

fn series(labels: &[(&str, &str)], v: f64) -> MetricSeries {
    MetricSeries {
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        value: MetricValue::Number(v),
    }
}

struct Report {
    families: Vec<MetricFamily>,
}

impl Report {
    fn push(&mut self, name: &str, help: &str, kind: MetricKind, series: Vec<MetricSeries>) {
        self.families.push(MetricFamily { name: name.to_owned(), help: help.to_owned(), kind, series });
    }

    fn counter(&mut self, name: &str, help: &str, v: f64) {
        self.counter_with(name, help, vec![series(&[], v)]);
    }

    fn counter_with(&mut self, name: &str, help: &str, s: Vec<MetricSeries>) {
        self.push(name, help, MetricKind::Counter, s);
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.gauge_with(name, help, vec![series(&[], v)]);
    }

    fn gauge_with(&mut self, name: &str, help: &str, s: Vec<MetricSeries>) {
        self.push(name, help, MetricKind::Gauge, s);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram, scale: f64) {
        let s = MetricSeries { labels: Vec::new(), value: MetricValue::Histogram(h.value(scale)) };
        self.push(name, help, MetricKind::Histogram, vec![s]);
    }
}
