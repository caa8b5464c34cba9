//! `litebroker top`: a live view of the broker, refreshed once a second from its
//! metrics (`Request::Metrics`). Rates and percentiles are those of the last
//! interval: the difference of the counters and histograms between two reports
//! (p50/p99 interpolated inside their bucket, as Prometheus' `histogram_quantile`
//! does). It leaves on `q`, Esc or Ctrl-C.
//!
//! The terminal is in raw mode, on its alternate screen, only while the view runs;
//! leaving (a key, an error, a panic) restores it. A broker that goes away is
//! waited for: the view says so and reconnects once a second.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, queue, style, terminal};
use litebroker_client::protocol::{HistogramValue, MetricsReport};

use crate::{connect, fail, ms_to_text, Cli, Failure};

/// How often the view refreshes.
const REFRESH: Duration = Duration::from_secs(1);

/// What the view shows of the broker besides its metrics.
#[derive(Debug, Clone)]
struct BrokerId {
    pid: u32,
    version: String,
    protocol: String,
}

/// `litebroker top`.
pub(crate) fn top(cli: &Cli) -> Result<(), Failure> {
    if cli.json {
        return Err(fail(
            2,
            "usage",
            "top is a live view for a terminal; `litebroker --json metrics` prints the figures as JSON",
        ));
    }
    if !std::io::stdout().is_terminal() {
        return Err(fail(
            2,
            "usage",
            "top needs a terminal; `litebroker metrics` prints the figures once (Prometheus text format)",
        ));
    }
    // A broker missing at the start is an error, as for any command; one that goes
    // away later is waited for.
    let mut client = Some(connect(cli)?);
    let screen = Screen::enter().map_err(|e| fail(1, "error", format!("cannot set up the terminal: {e}")))?;
    let mut prev: Option<MetricsReport> = None;
    let mut id: Option<BrokerId> = None;
    loop {
        let mut trouble = None;
        let mut now = None;
        if client.is_none() {
            match connect(cli) {
                Ok(c) => client = Some(c),
                Err(f) => trouble = Some(f.message),
            }
        }
        if let Some(c) = client.as_mut() {
            match crate::metrics::fetch(c, cli) {
                Ok(r) => {
                    let h = c.hello();
                    id = Some(BrokerId {
                        pid: h.pid,
                        version: h.broker_version.clone(),
                        protocol: format!("{}.{}", h.protocol, h.minor),
                    });
                    now = Some(r);
                }
                Err(f) if f.code == 3 && f.kind == "incompatible" => return Err(f),
                Err(f) => {
                    trouble = Some(f.message);
                    client = None;
                }
            }
        }
        let lines = match (&now, &id) {
            (Some(r), Some(id)) => view(&cli.db.display().to_string(), id, prev.as_ref(), r),
            _ => vec![
                format!("litebroker top — {}", cli.db.display()),
                String::new(),
                format!("broker not reachable: {}", trouble.unwrap_or_default().lines().next().unwrap_or("")),
                "retrying every second; q to leave".into(),
            ],
        };
        let next = Instant::now() + REFRESH;
        screen.draw(&lines).map_err(|e| fail(1, "error", format!("cannot draw: {e}")))?;
        if now.is_some() {
            prev = now;
        }
        // Keys until the next refresh; a resize redraws at once.
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let ready = event::poll(left).map_err(|e| fail(1, "error", format!("terminal: {e}")))?;
            if !ready {
                continue;
            }
            match event::read().map_err(|e| fail(1, "error", format!("terminal: {e}")))? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(k.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc) {
                        return Ok(());
                    }
                }
                Event::Resize(..) => {
                    screen.draw(&lines).map_err(|e| fail(1, "error", format!("cannot draw: {e}")))?;
                }
                _ => {}
            }
        }
    }
}

/// The terminal in raw mode on its alternate screen, until dropped.
struct Screen;

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        terminal::enable_raw_mode()?;
        // From here on, dropping the screen restores the terminal.
        let screen = Screen;
        execute!(std::io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(screen)
    }

    /// Replaces the screen's content with `lines`, each cut to the terminal's width.
    fn draw(&self, lines: &[String]) -> std::io::Result<()> {
        let (width, height) = terminal::size().unwrap_or((80, 24));
        let mut out = std::io::stdout().lock();
        queue!(out, cursor::MoveTo(0, 0), terminal::Clear(terminal::ClearType::All))?;
        for (row, line) in lines.iter().take(usize::from(height)).enumerate() {
            let cut: String = line.chars().take(usize::from(width)).collect();
            queue!(out, cursor::MoveTo(0, row as u16), style::Print(cut))?;
        }
        out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(std::io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

const REQUESTS: &str = "litebroker_requests_total";

/// The view of report `now`, with rates and percentiles over the interval since
/// `prev` (none yet on the first refresh).
fn view(db: &str, id: &BrokerId, prev: Option<&MetricsReport>, now: &MetricsReport) -> Vec<String> {
    let at = now.at_unix_ms as f64 / 1000.0;
    let gauge = |name: &str| now.number(name, &[]);
    let dt = prev.map(|p| (now.at_unix_ms.saturating_sub(p.at_unix_ms)) as f64 / 1000.0).filter(|d| *d > 0.0);
    // Per second over the interval, for a counter summed over the series matching `labels`.
    let rate = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        let (p, dt) = (prev?, dt?);
        let delta = now.number(name, labels).unwrap_or(0.0) - p.number(name, labels).unwrap_or(0.0);
        Some(delta.max(0.0) / dt)
    };
    let interval = |name: &str| -> Option<HistogramValue> {
        let h = now.histogram(name, &[])?;
        Some(match prev.and_then(|p| p.histogram(name, &[])) {
            Some(earlier) => h.since(earlier),
            None => h.clone(),
        })
    };
    let writes = |labels: &[(&str, &str)]| -> Option<f64> {
        let with = |kind| [&[("kind", kind)][..], labels].concat();
        Some(rate(REQUESTS, &with("execute"))? + rate(REQUESTS, &with("batch"))?)
    };
    let ok = writes(&[("outcome", "ok")]);
    let failed = writes(&[]).zip(ok).map(|(all, ok)| (all - ok).max(0.0));
    let latency = interval("litebroker_write_latency_seconds");
    let groups = interval("litebroker_group_commit_requests");
    let p =
        |h: &Option<HistogramValue>, q: f64| h.as_ref().and_then(|h| h.quantile(q)).map_or("—".into(), secs);
    let uptime =
        gauge("litebroker_start_time_seconds").map(|s| ms_to_text(((at - s).max(0.0) * 1000.0) as u64));
    let per_group = groups.as_ref().filter(|g| g.count() > 0).map(|g| g.sum / g.count() as f64);
    let last_checkpoint = match gauge("litebroker_last_checkpoint_timestamp_seconds") {
        None => "none yet".to_owned(),
        Some(ts) => {
            let how = if gauge("litebroker_last_checkpoint_blocked") == Some(1.0) {
                "blocked by readers"
            } else {
                "complete"
            };
            format!("{} ago, {how}", ms_to_text(((at - ts).max(0.0) * 1000.0) as u64))
        }
    };
    let n = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.0}"));
    let r = |v: Option<f64>| v.map_or("…".to_owned(), |v| format!("{v:.1}"));
    vec![
        format!("litebroker top — {db}   (q to leave)"),
        format!(
            "broker pid {}, litebrokerd {} (protocol {}), up {}",
            id.pid,
            id.version,
            id.protocol,
            uptime.unwrap_or_else(|| "—".into())
        ),
        String::new(),
        format!("writes/s      {:>10}   failed/s {}", r(ok), r(failed)),
        format!(
            "write latency p50 {}   p99 {}   (queue wait p99 {}, COMMIT p99 {})",
            p(&latency, 0.5),
            p(&latency, 0.99),
            p(&interval("litebroker_write_queue_wait_seconds"), 0.99),
            p(&interval("litebroker_write_commit_seconds"), 0.99)
        ),
        format!(
            "commits/s     {:>10}   {} requests each",
            r(rate("litebroker_commits_total", &[])),
            per_group.map_or("—".into(), |g| format!("{g:.1}"))
        ),
        format!(
            "queue depth   {:>10}   in flight {}",
            n(gauge("litebroker_queue_depth")),
            n(gauge("litebroker_requests_in_flight"))
        ),
        format!(
            "clients       {:>10}   write session {}",
            n(gauge("litebroker_clients")),
            if gauge("litebroker_write_session_active") == Some(1.0) { "holds the writer" } else { "none" }
        ),
        format!(
            "WAL           {:>10}   {} frames; last checkpoint {last_checkpoint}",
            gauge("litebroker_wal_bytes").map_or("—".into(), bytes),
            n(gauge("litebroker_wal_frames"))
        ),
        format!(
            "lock waits    {:>10}   retries {}",
            n(gauge("litebroker_lock_waits_total")),
            n(gauge("litebroker_lock_retries_total"))
        ),
        format!(
            "memory        {:>10}   open files {}",
            gauge("litebroker_process_resident_memory_bytes").map_or("—".into(), bytes),
            n(gauge("litebroker_process_open_fds"))
        ),
        format!("requests      {:>10}   in all since start", n(gauge(REQUESTS))),
    ]
}

/// A duration in seconds, in the unit that reads best.
fn secs(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn bytes(b: f64) -> String {
    if b < 1e6 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{:.1} MB", b / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use litebroker_client::protocol::{MetricFamily, MetricKind, MetricSeries, MetricValue};

    use super::*;

    fn report(at_unix_ms: u64, ok_writes: f64, latency_counts: Vec<u64>) -> MetricsReport {
        let number = |labels: &[(&str, &str)], v| MetricSeries {
            labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            value: MetricValue::Number(v),
        };
        MetricsReport {
            at_unix_ms,
            families: vec![
                MetricFamily {
                    name: REQUESTS.into(),
                    help: String::new(),
                    kind: MetricKind::Counter,
                    series: vec![
                        number(&[("kind", "execute"), ("outcome", "ok")], ok_writes),
                        number(&[("kind", "execute"), ("outcome", "constraint")], 1.0),
                        number(&[("kind", "batch"), ("outcome", "ok")], 0.0),
                        number(&[("kind", "ping"), ("outcome", "ok")], 50.0),
                    ],
                },
                MetricFamily {
                    name: "litebroker_write_latency_seconds".into(),
                    help: String::new(),
                    kind: MetricKind::Histogram,
                    series: vec![MetricSeries {
                        labels: Vec::new(),
                        value: MetricValue::Histogram(HistogramValue {
                            bounds: vec![0.0001, 0.001],
                            counts: latency_counts,
                            sum: 0.0,
                        }),
                    }],
                },
                MetricFamily {
                    name: "litebroker_start_time_seconds".into(),
                    help: String::new(),
                    kind: MetricKind::Gauge,
                    series: vec![number(&[], 1000.0)],
                },
            ],
        }
    }

    #[test]
    fn rates_and_percentiles_are_those_of_the_interval() {
        let id = BrokerId { pid: 7, version: "0.1.0".into(), protocol: "1.2".into() };
        let first = report(1_000_000, 100.0, vec![100, 0, 0]);
        let lines = view("app.db", &id, None, &first);
        assert!(lines[1].contains("pid 7") && lines[1].contains("up 0.0 s"), "{lines:#?}");
        assert!(lines[3].contains("…"), "no rate before a second report: {lines:#?}");
        // 200 writes in 2 s, all between 100 µs and 1 ms: the earlier 100 fast ones
        // are not part of this interval.
        let second = report(1_002_000, 300.0, vec![100, 200, 0]);
        let lines = view("app.db", &id, Some(&first), &second);
        assert!(lines[3].contains("100.0") && lines[3].contains("failed/s 0.0"), "{lines:#?}");
        assert!(lines[4].contains("p50 550 µs") && lines[4].contains("p99 991 µs"), "{lines:#?}");
        assert!(lines[1].contains("up 2.0 s"), "{lines:#?}");
    }

    #[test]
    fn durations_and_sizes_read_in_their_unit() {
        assert_eq!(secs(0.000_085), "85 µs");
        assert_eq!(secs(0.0012), "1.2 ms");
        assert_eq!(secs(2.5), "2.50 s");
        assert_eq!(bytes(4_096.0), "4.1 kB");
        assert_eq!(bytes(12_300_000.0), "12.3 MB");
    }
}
