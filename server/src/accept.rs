//! The accept loop: one thread takes the connections, checks each peer (its user,
//! `--allow-uid`; a refused peer is told why), refuses connections beyond
//! `--max-clients`, and starts a thread per client (`crate::conn`). It ends when
//! shutdown wakes it (see `crate::shutdown`), dropping the listener, which
//! removes the socket file.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use interprocess::local_socket::prelude::*;
use interprocess::local_socket::Listener;
use litebroker_protocol::ErrorKind;
use tracing::{error, warn};

use crate::conn;
use crate::instance;
use crate::shared::Shared;
use crate::texts;
use crate::writer::WriterHandle;

/// Starts the accept thread.
///
/// # Errors
/// When the thread cannot be started.
pub(crate) fn spawn(
    listener: Listener,
    shared: Arc<Shared>,
    writer: Arc<WriterHandle>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name("lb-accept".into()).spawn(move || accept_loop(listener, shared, writer))
}

fn accept_loop(listener: Listener, shared: Arc<Shared>, writer: Arc<WriterHandle>) {
    let mut failures = 0u32;
    for incoming in listener.incoming() {
        if shared.is_shutting_down() {
            break;
        }
        let stream = match incoming {
            Ok(s) => {
                failures = 0;
                s
            }
            Err(e) => {
                // Typically out of file descriptors: back off briefly instead of
                // spinning, and keep serving the connections already open.
                failures += 1;
                warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(10 * u64::from(failures.min(50))));
                continue;
            }
        };
        let peer_pid = match instance::check_peer(&stream, &shared.config) {
            Ok(pid) => pid,
            Err(msg) => {
                warn!("refused a connection: {msg}");
                shared.metrics.refused_connections.fetch_add(1, Ordering::Relaxed);
                instance::refuse(stream, &shared.config, ErrorKind::NotAllowed, msg);
                continue;
            }
        };
        let open = shared.connections.load(Ordering::SeqCst);
        if open >= shared.config.max_clients {
            let msg = texts::too_many_clients(open, shared.config.max_clients);
            warn!("refused a connection: {msg}");
            shared.metrics.refused_connections.fetch_add(1, Ordering::Relaxed);
            instance::refuse(stream, &shared.config, ErrorKind::LimitExceeded, msg);
            continue;
        }
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let (s2, w2) = (shared.clone(), writer.clone());
        // Connection threads run SQLite when they serve the writer's queue, so
        // they get the stack a SQLite thread needs (virtual memory: only what is
        // touched is resident).
        let spawned =
            thread::Builder::new().name("lb-conn".into()).stack_size(2 * 1024 * 1024).spawn(move || {
                // A failure serving one client disconnects that client only.
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    conn::serve(stream, s2.clone(), w2, peer_pid)
                }));
                if served.is_err() {
                    error!("internal failure serving a client; it was disconnected, the broker serves on");
                }
                s2.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            warn!("cannot start a connection thread: {e}");
        }
    }
}
