//! Plain connecting: find the broker of a database, check whom it is before
//! anything is sent, shake hands, and check that it serves the database asked for.
//! Nothing here starts a broker: [`crate::autostart`] does that, above this, and
//! connects through it; [`crate::Client`] wraps what comes out.

use std::time::Duration;

use litebroker_protocol::backoff::Backoff;
use litebroker_protocol::host::pid_alive;
use litebroker_protocol::rendezvous::{BrokerInfo, Location};
use litebroker_protocol::stream::FrameStream;
use litebroker_protocol::{ErrorInfo, ErrorKind, HelloAck, Response, PROTOCOL_VERSION};

use crate::error::{exchange_error, unexpected, ClientError, Result};
use crate::options::ConnectOptions;
use crate::trust;

/// Pauses between attempts to reach a broker that went away (a restart): 50 ms,
/// doubling, at most 2 s. Used by a client reconnecting and by a watch.
pub(crate) const RECONNECT: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

/// A connection to a trusted broker of the database, after the handshake.
#[derive(Debug)]
pub(crate) struct Connected {
    pub stream: FrameStream,
    /// The broker's handshake answer.
    pub hello: HelloAck,
    /// Where the broker was found.
    pub location: Location,
}

/// Connects to the broker serving `opts.db` (`opts.autostart` plays no part).
///
/// # Errors
/// [`ClientError::NotRunning`] when no broker listens; [`ClientError::Untrusted`]
/// when what listens is not this user's broker of this database (nothing was sent
/// to it); a typed [`ClientError::Broker`] error when the broker refuses the
/// handshake (e.g. [`ErrorKind::Incompatible`]).
pub(crate) fn connect(opts: &ConnectOptions) -> Result<Connected> {
    let location = Location::resolve(&opts.db, opts.socket.as_deref())?;
    // A socket the user did not name may sit where another user could have put
    // theirs: its folder is checked before anything connects to it.
    if !location.explicit_socket {
        trust::check_socket_folder(&location.socket)?;
    }
    let (mut stream, socket) = match FrameStream::connect(&location.socket) {
        Ok(s) => (s, location.socket.clone()),
        Err(first) => {
            // A broker started with another TMPDIR or XDG_RUNTIME_DIR listens
            // elsewhere; it recorded where in its lock file.
            let recorded = location.read_info().filter(|_| !location.explicit_socket);
            match recorded {
                Some(info) if info.socket != location.socket && pid_alive(info.pid) => {
                    if info.protocol != PROTOCOL_VERSION {
                        return Err(incompatible_recorded(&location, &info));
                    }
                    // The lock file is no more trusted than the folder it is in.
                    trust::check_socket_folder(&info.socket)?;
                    let stream =
                        FrameStream::connect(&info.socket).map_err(|source| ClientError::NotRunning {
                            db: location.db_path.clone(),
                            socket: info.socket.clone(),
                            source,
                        })?;
                    (stream, info.socket)
                }
                Some(info) if info.protocol != PROTOCOL_VERSION && pid_alive(info.pid) => {
                    return Err(incompatible_recorded(&location, &info));
                }
                _ => {
                    return Err(ClientError::NotRunning {
                        db: location.db_path.clone(),
                        socket: location.socket.clone(),
                        source: first,
                    })
                }
            }
        }
    };
    // Before the hello: even a handshake tells the listener who connects, and
    // what follows it would be this user's data.
    trust::check_peer(&stream, &socket, &opts.trusted_broker_uids)?;
    let hello = match stream.handshake(&opts.client_name, opts.expected_schema, opts.connect_timeout) {
        Ok(Response::Hello(ack)) => ack,
        Ok(Response::Error(info)) => return Err(ClientError::Broker(info)),
        Ok(other) => return Err(unexpected("hello", &other)),
        Err(e) => return Err(exchange_error(e)),
    };
    // Dropping the stream on a mismatch closes the connection with nothing more sent.
    trust::check_database(&socket, &location.db_path, &hello)?;
    Ok(Connected { stream, hello, location })
}

fn incompatible_recorded(location: &Location, info: &BrokerInfo) -> ClientError {
    ClientError::Broker(ErrorInfo::new(
        ErrorKind::Incompatible,
        format!(
            "the broker serving {} (litebrokerd {}, pid {}, socket {}) speaks protocol {}, \
             this client speaks protocol {PROTOCOL_VERSION}: use a litebroker client of the \
             broker's version, or stop that broker and start litebrokerd {}",
            location.db_path.display(),
            info.version,
            info.pid,
            info.socket,
            info.protocol,
            env!("CARGO_PKG_VERSION"),
        ),
    ))
}
