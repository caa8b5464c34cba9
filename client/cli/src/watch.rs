//! `litebroker watch [TABLE…] [--since CURSOR] [--count N]`: the change feed on
//! stdout, one line per committed transaction that touched a watched table,
//! flushed at once (`--json`: one JSON object per line).
//!
//! Once subscribed it prints `watching <tables or all> from <cursor>` on stderr.
//! `--count N` exits 0 after N events; Ctrl-C exits 0; no broker → exit 3. The
//! watch reconnects by itself when the broker restarts, resuming after the last
//! cursor printed (a resync says when what was missed cannot be replayed).
//! `--stats` prints the broker's feed figures instead (subscribers, the ring).

use std::io::Write;
use std::time::Duration;

use litebroker_client::protocol::{ChangeEvent, Cursor, FeedFigures};
use litebroker_client::{Client, ClientError, ConnectOptions, Watch};
use serde_json::{json, Value as Json};

use crate::{client_failure, fail, Cli, Failure};

/// How long one wait for events lasts before the loop looks again.
const POLL: Duration = Duration::from_secs(1);

/// Runs `litebroker watch`.
pub(crate) fn run(
    cli: &Cli,
    tables: &[String],
    since: Option<&str>,
    count: Option<u64>,
    stats: bool,
) -> Result<(), Failure> {
    if stats {
        return print_stats(cli);
    }
    let since = since.map(Cursor::parse).transpose().map_err(|e| fail(2, "usage", e))?;
    let mut opts = ConnectOptions::new(&cli.db).client_name("litebroker-watch");
    opts.socket = cli.socket.clone();
    opts.request_timeout = Duration::from_secs_f64(cli.timeout);
    opts.connect_timeout = opts.connect_timeout.min(opts.request_timeout);
    let mut watch = Watch::new(opts, tables.to_vec());
    if let Some(c) = since {
        watch = watch.since(c);
    }
    let start = watch.subscribe().map_err(|e| client_failure(&e, Some(cli)))?;
    // Ctrl-C ends a watch normally.
    let _ = ctrlc::set_handler(|| {
        let _ = std::io::stdout().flush();
        std::process::exit(0);
    });
    let what = if tables.is_empty() { "all tables".to_owned() } else { tables.join(", ") };
    eprintln!("watching {what} from {}", since.unwrap_or(start));
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    while count.is_none_or(|n| printed < n) {
        let event = match watch.next_timeout(POLL) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => return Err(client_failure(&e, Some(cli))),
        };
        let line = if cli.json { event_json(&event).to_string() } else { event_text(&event) };
        let mut out = stdout.lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // stdout closed (a pipe's reader left): nothing more to do.
            return Ok(());
        }
        printed += 1;
    }
    Ok(())
}

/// The change feed's figures; None from a broker too old to have the feed.
pub(crate) fn feed_report(client: &mut Client) -> Result<Option<FeedFigures>, ClientError> {
    crate::if_known(client.feed_stats())
}

/// The figures as JSON (null when unknown), as `watch --stats --json` prints them.
pub(crate) fn feed_json(f: Option<&FeedFigures>) -> Json {
    f.map_or(Json::Null, |f| {
        json!({
            "epoch": f.epoch,
            "head": f.head.to_string(),
            "subscribers": f.subscribers,
            "ring_events": f.ring_events,
            "ring_bytes": f.ring_bytes,
            "ring_max_events": f.ring_max_events,
            "ring_max_bytes": f.ring_max_bytes,
            "oldest": f.oldest.map(|c| c.to_string()),
            "published": f.published,
            "resyncs": f.resyncs,
            "dropped_backlogs": f.dropped_backlogs,
        })
    })
}

/// One line for `status` and `stats`: subscribers, the ring, what was published.
pub(crate) fn feed_line(f: &FeedFigures) -> String {
    format!(
        "{} watching; ring {} of {} events ({:.1} of {:.1} MB); {} published, {} resyncs, {} backlogs \
         dropped; head {}",
        f.subscribers,
        f.ring_events,
        f.ring_max_events,
        f.ring_bytes as f64 / 1e6,
        f.ring_max_bytes as f64 / 1e6,
        f.published,
        f.resyncs,
        f.dropped_backlogs,
        f.head
    )
}

fn print_stats(cli: &Cli) -> Result<(), Failure> {
    let mut client = crate::connect(cli)?;
    let f = client.feed_stats().map_err(|e| client_failure(&e, Some(cli)))?;
    if cli.json {
        println!("{}", feed_json(Some(&f)));
    } else {
        println!("head:         {}", f.head);
        println!("subscribers:  {}", f.subscribers);
        println!(
            "ring:         {} events, {} bytes (max {} events, {} bytes), oldest {}",
            f.ring_events,
            f.ring_bytes,
            f.ring_max_events,
            f.ring_max_bytes,
            f.oldest.map_or_else(|| "none".to_owned(), |c| c.to_string())
        );
        println!("published:    {}", f.published);
        println!("resyncs sent: {}, backlogs dropped: {}", f.resyncs, f.dropped_backlogs);
    }
    Ok(())
}

/// One event as the JSON line.
pub(crate) fn event_json(e: &ChangeEvent) -> Json {
    if let Some(reason) = e.resync {
        return json!({ "cursor": e.cursor.to_string(), "resync": true, "reason": reason.as_str() });
    }
    let mut tables = serde_json::Map::new();
    for t in &e.tables {
        tables.insert(
            t.table.clone(),
            json!({
                "inserted": t.inserted,
                "updated": t.updated,
                "deleted": t.deleted,
                "rowids": t.rowids,
                "rowids_capped": t.rowids_capped,
            }),
        );
    }
    json!({ "cursor": e.cursor.to_string(), "committed_at": utc_text(e.committed_unix_us / 1000), "tables": tables })
}

/// One event as a line of text: `<cursor> <time> skus +1 ~0 -0 [7]; …`.
fn event_text(e: &ChangeEvent) -> String {
    if let Some(reason) = e.resync {
        return format!("{} resync ({reason}): reload", e.cursor);
    }
    let tables: Vec<String> = e
        .tables
        .iter()
        .map(|t| {
            let ids: Vec<String> = t.rowids.iter().map(i64::to_string).collect();
            let more = if t.rowids_capped { ",…" } else { "" };
            format!("{} +{} ~{} -{} [{}{more}]", t.table, t.inserted, t.updated, t.deleted, ids.join(","))
        })
        .collect();
    format!("{} {} {}", e.cursor, utc_text(e.committed_unix_us / 1000), tables.join("; "))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of a time in ms since the Unix epoch.
fn utc_text(ms: u64) -> String {
    let secs = ms / 1000;
    let rem = secs % 86_400;
    let (y, m, d) = litebroker_server::ops::civil_from_days((secs / 86_400) as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_of_known_instants() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_text(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc_text(1_796_243_057_491), "2026-12-02T20:24:17.491Z");
    }
}
