//! Whom a client talks to. A socket path can be computed by anyone from the
//! database path, and on Unix its folder may sit in a shared temp folder, so another
//! local user can listen there first and pose as the broker. Every connection is
//! therefore checked before the first request goes out (folder, then the listener's
//! user), and the broker's handshake answer must name the database asked for.

use std::path::Path;

#[cfg(unix)]
use litebroker_protocol::host::current_uid;
use litebroker_protocol::stream::FrameStream;
use litebroker_protocol::HelloAck;

use crate::error::Untrusted;

/// What matters about a socket folder, read without following a symlink.
#[cfg(any(unix, test))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct FolderFacts {
    pub symlink: bool,
    pub dir: bool,
    pub owner: u32,
    pub mode: u32,
}

/// Judges the folder of a socket this client derived: it must be a real folder of
/// this user or root that nobody else can write to, since whoever can write there
/// can put a socket of theirs under the broker's name.
#[cfg(any(unix, test))]
pub(crate) fn judge_folder(folder: &Path, f: FolderFacts, me: u32) -> Result<(), Untrusted> {
    let elsewhere =
        "or set XDG_RUNTIME_DIR (or TMPDIR) to a folder of your own, or give the socket explicitly";
    let (problem, advice) = if f.symlink || !f.dir {
        let what = if f.symlink { "it is a symlink" } else { "it is not a folder" };
        (what, format!("Remove it if it is yours ({}), {elsewhere}", folder.display()))
    } else if f.owner != me && f.owner != 0 {
        (
            "it belongs to another user",
            format!("Have it removed (by its owner or root: rm -r {}), {elsewhere}", folder.display()),
        )
    } else if f.mode & 0o022 != 0 {
        (
            "other users can write to it",
            format!("Make it private (chmod 700 {}), {elsewhere}", folder.display()),
        )
    } else {
        return Ok(());
    };
    Err(Untrusted::SocketFolder {
        folder: folder.to_path_buf(),
        owner: f.owner,
        mode: f.mode & 0o7777,
        me,
        problem: problem.to_owned(),
        advice,
    })
}

/// Checks the folder of a derived socket (Unix; pipes have no folder). A folder that
/// cannot be inspected is left to the connect, which then fails on its own.
pub(crate) fn check_socket_folder(socket: &str) -> Result<(), Untrusted> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Some(folder) = Path::new(socket).parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        let Ok(meta) = std::fs::symlink_metadata(folder) else { return Ok(()) };
        let facts = FolderFacts {
            symlink: meta.file_type().is_symlink(),
            dir: meta.is_dir(),
            owner: meta.uid(),
            mode: meta.mode(),
        };
        judge_folder(folder, facts, current_uid())
    }
    #[cfg(not(unix))]
    {
        let _ = socket;
        Ok(())
    }
}

/// Judges the listener's effective uid: this user's, root's, or one trusted
/// explicitly. A platform that cannot tell is refused rather than trusted.
#[cfg(any(unix, test))]
pub(crate) fn judge_peer_uid(
    socket: &str,
    uid: Option<u32>,
    me: u32,
    trusted: &[u32],
) -> Result<(), Untrusted> {
    match uid {
        Some(uid) if uid == me || uid == 0 || trusted.contains(&uid) => Ok(()),
        Some(uid) => Err(Untrusted::PeerUser { socket: socket.to_owned(), uid, me }),
        None => Err(Untrusted::PeerUnknown {
            socket: socket.to_owned(),
            detail: "the system gives no user id for the peer of a local socket on this platform".into(),
        }),
    }
}

/// Checks who listens on a connected stream, before anything is sent on it.
pub(crate) fn check_peer(stream: &FrameStream, socket: &str, trusted: &[u32]) -> Result<(), Untrusted> {
    #[cfg(unix)]
    {
        match stream.peer_uid() {
            Ok(uid) => judge_peer_uid(socket, uid, current_uid(), trusted),
            Err(e) => Err(Untrusted::PeerUnknown { socket: socket.to_owned(), detail: e.to_string() }),
        }
    }
    #[cfg(windows)]
    {
        // Pipes carry no uid: their owner SID says who created the pipe. The uids
        // trusted on Unix have no meaning here.
        let _ = trusted;
        let unknown =
            |e: std::io::Error| Untrusted::PeerUnknown { socket: socket.to_owned(), detail: e.to_string() };
        let owner = stream.pipe_owner_sid().map_err(unknown)?;
        let me = litebroker_protocol::host::current_user_sid().map_err(unknown)?;
        judge_pipe_owner(socket, &owner, &me)
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = (stream, socket, trusted);
        Ok(())
    }
}

/// Judges a pipe's owner SID: this user's, or the system's.
#[cfg(any(windows, test))]
pub(crate) fn judge_pipe_owner(socket: &str, owner: &str, me: &str) -> Result<(), Untrusted> {
    if owner.eq_ignore_ascii_case(me) || litebroker_protocol::host::is_system_sid(owner) {
        Ok(())
    } else {
        Err(Untrusted::PipeOwner { socket: socket.to_owned(), owner: owner.to_owned(), me: me.to_owned() })
    }
}

/// Checks that the broker serves the database asked for: a broker of another file
/// must never receive this database's writes (and a listener that is not a broker
/// rarely gets this far). Windows paths compare case-insensitively.
pub(crate) fn check_database(socket: &str, expected: &Path, ack: &HelloAck) -> Result<(), Untrusted> {
    let want = expected.to_string_lossy();
    let same =
        if cfg!(windows) { want.to_lowercase() == ack.db_path.to_lowercase() } else { want == ack.db_path };
    if same {
        Ok(())
    } else {
        Err(Untrusted::WrongDatabase {
            socket: socket.to_owned(),
            expected: expected.to_path_buf(),
            served: ack.db_path.clone(),
            pid: ack.pid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::TRUST_UID_ENV;

    fn facts(owner: u32, mode: u32) -> FolderFacts {
        FolderFacts { symlink: false, dir: true, owner, mode }
    }

    fn problem(r: Result<(), Untrusted>) -> String {
        match r {
            Err(Untrusted::SocketFolder { problem, .. }) => problem,
            other => panic!("expected a refused folder, got {other:?}"),
        }
    }

    #[test]
    fn a_private_folder_of_this_user_or_root_is_trusted() {
        let f = Path::new("/run/user/1000/litebroker");
        judge_folder(f, facts(1000, 0o700), 1000).unwrap();
        judge_folder(f, facts(1000, 0o755), 1000).unwrap();
        judge_folder(f, facts(0, 0o755), 1000).unwrap();
    }

    #[test]
    fn a_folder_of_another_user_writable_by_others_or_not_a_folder_is_refused() {
        let f = Path::new("/tmp/litebroker-1000");
        assert_eq!(problem(judge_folder(f, facts(1001, 0o700), 1000)), "it belongs to another user");
        assert_eq!(problem(judge_folder(f, facts(1000, 0o777), 1000)), "other users can write to it");
        assert_eq!(problem(judge_folder(f, facts(1000, 0o720), 1000)), "other users can write to it");
        assert_eq!(problem(judge_folder(f, facts(0, 0o1777), 1000)), "other users can write to it");
        let link = FolderFacts { symlink: true, dir: false, owner: 1000, mode: 0o777 };
        assert_eq!(problem(judge_folder(f, link, 1000)), "it is a symlink");
        let file = FolderFacts { symlink: false, dir: false, owner: 1000, mode: 0o600 };
        assert_eq!(problem(judge_folder(f, file, 1000)), "it is not a folder");
        let msg = judge_folder(f, facts(1001, 0o755), 1000).unwrap_err().to_string();
        for needle in ["/tmp/litebroker-1000", "owner uid 1001", "mode 755", "uid 1000", "XDG_RUNTIME_DIR"] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg}");
        }
    }

    #[test]
    fn the_listener_must_be_this_user_root_or_trusted() {
        judge_peer_uid("s", Some(1000), 1000, &[]).unwrap();
        judge_peer_uid("s", Some(0), 1000, &[]).unwrap();
        judge_peer_uid("s", Some(1234), 1000, &[1234]).unwrap();
        let e = judge_peer_uid("/tmp/x.sock", Some(1234), 1000, &[999]).unwrap_err();
        assert!(matches!(e, Untrusted::PeerUser { uid: 1234, me: 1000, .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("uid 1234") && msg.contains("/tmp/x.sock") && msg.contains(TRUST_UID_ENV),
            "{msg}"
        );
        assert!(matches!(judge_peer_uid("s", None, 1000, &[]), Err(Untrusted::PeerUnknown { .. })));
    }

    #[test]
    fn a_pipe_must_be_owned_by_this_user_or_the_system() {
        let me = "S-1-5-21-1-2-3-1001";
        judge_pipe_owner("p", me, me).unwrap();
        judge_pipe_owner("p", "S-1-5-18", me).unwrap();
        judge_pipe_owner("p", "s-1-5-32-544", me).unwrap();
        let e = judge_pipe_owner("p", "S-1-5-21-1-2-3-1002", me).unwrap_err();
        assert!(e.to_string().contains("S-1-5-21-1-2-3-1002"), "{e}");
    }

    fn ack(db: &str) -> HelloAck {
        HelloAck {
            protocol: litebroker_protocol::PROTOCOL_VERSION,
            minor: 0,
            broker_version: String::new(),
            db_path: db.into(),
            socket: String::new(),
            pid: 42,
            client_id: 1,
            schema_version: 0,
        }
    }

    #[test]
    fn the_broker_must_serve_the_database_asked_for() {
        let db = if cfg!(windows) { r"C:\app\data\app.db" } else { "/home/u/app/data/app.db" };
        check_database("s", Path::new(db), &ack(db)).unwrap();
        let other = if cfg!(windows) { r"C:\evil\app.db" } else { "/tmp/evil/app.db" };
        let e = check_database("s", Path::new(db), &ack(other)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(db) && msg.contains(other) && msg.contains("pid 42"), "{msg}");
        if cfg!(windows) {
            check_database("s", Path::new(db), &ack(&db.to_uppercase())).unwrap();
        } else {
            assert!(check_database("s", Path::new(db), &ack(&db.to_uppercase())).is_err());
        }
    }

    #[cfg(unix)]
    #[test]
    fn real_folders_are_judged_by_their_mode_and_kind() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("litebroker");
        std::fs::create_dir(&folder).unwrap();
        let sock = folder.join("app-1.v1.sock").to_string_lossy().into_owned();
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).unwrap();
        check_socket_folder(&sock).unwrap();
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(problem(check_socket_folder(&sock)), "other users can write to it");
        std::fs::remove_dir(&folder).unwrap();
        // Missing: nothing can listen there; the connect says so.
        check_socket_folder(&sock).unwrap();
        std::os::unix::fs::symlink(dir.path(), &folder).unwrap();
        assert_eq!(problem(check_socket_folder(&sock)), "it is a symlink");
    }

    #[cfg(unix)]
    #[test]
    fn a_real_listener_of_this_user_passes_the_peer_check() {
        use interprocess::local_socket::ListenerOptions;
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("t.sock").to_string_lossy().into_owned();
        let name = litebroker_protocol::rendezvous::socket_name(&sock).unwrap();
        let _listener = ListenerOptions::new().name(name).create_sync().unwrap();
        let stream = FrameStream::connect(&sock).unwrap();
        check_peer(&stream, &sock, &[]).unwrap();
    }
}
