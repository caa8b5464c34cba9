//! A connection that watches the change feed (`Request::Watch`): from the
//! `Watching` answer on, the broker only writes events to it.
//!
//! The connection's thread waits on its subscriber's buffer (`crate::feed`),
//! filters and encodes each event, and writes it within the I/O timeout: a
//! client that stops reading is cut off there, while the writer, which only ever
//! pushes references into the buffer, never waits for it. Every
//! [`PEER_CHECK`] without events the thread looks at the socket (Unix), so that
//! a watcher that left is forgotten without waiting for the next event; on
//! Windows, where pipes have no receive timeout, that happens at the next event
//! or at shutdown. A frame sent by the client ends the stream.

use std::time::{Duration, Instant};

use litebroker_protocol::{Cursor, FrameError, Response};
use tracing::debug;

use super::io::FrameIo;
#[cfg(unix)]
use super::io::Wait;
use crate::shared::{ClientEntry, Shared};

/// How long the thread sleeps on the buffer before it looks at shutdown.
const WAKE: Duration = Duration::from_millis(200);

/// How often an idle watcher's socket is checked for the peer leaving.
#[cfg_attr(not(unix), allow(dead_code))]
const PEER_CHECK: Duration = Duration::from_secs(1);

/// Serves the watch until the client leaves, misbehaves or the broker stops.
///
/// # Errors
/// The socket's failure (a client that does not read within the I/O timeout).
pub(super) fn serve(
    io: &mut FrameIo,
    shared: &Shared,
    client: &ClientEntry,
    tables: Vec<String>,
    since: Option<Cursor>,
) -> Result<(), FrameError> {
    let feed = &shared.feed;
    let (sub, start) = feed.subscribe(tables, since);
    struct Leave<'a>(&'a Shared, std::sync::Arc<crate::feed::Subscriber>);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.feed.unsubscribe(&self.1);
        }
    }
    let _leave = Leave(shared, sub.clone());
    debug!(
        "client {} watches {} from {start}",
        client.describe(),
        if sub.filter().is_empty() { "all tables".to_owned() } else { sub.filter().join(", ") }
    );
    io.send(&Response::Watching { cursor: start })?;
    let mut last_check = Instant::now();
    loop {
        let batch = sub.take(WAKE);
        let busy = batch.resync.is_some() || !batch.events.is_empty();
        if let Some((seq, reason)) = batch.resync {
            feed.count_resync();
            io.send(&Response::Change(feed.resync_event(seq, reason)))?;
        }
        for event in &batch.events {
            if event.resync.is_some() {
                feed.count_resync();
            }
            io.send(&Response::Change(feed.event_for(event, sub.filter())))?;
        }
        if shared.is_shutting_down() {
            return Ok(());
        }
        if busy {
            last_check = Instant::now();
            io.shrink_idle_buffers();
        } else if last_check.elapsed() >= PEER_CHECK {
            last_check = Instant::now();
            #[cfg(unix)]
            {
                io.set_recv_timeout(Duration::from_millis(1));
                match io.wait()? {
                    Wait::Idle => {}
                    Wait::Closed | Wait::Frame => return Ok(()),
                }
            }
        }
    }
}
