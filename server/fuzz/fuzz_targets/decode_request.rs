//! What the broker does with a client's bytes: frames read one after another,
//! payloads decoded with their limits, the version peek of a failed handshake.
//! Nothing may panic, and whatever decodes must survive a round trip. (Not byte
//! for byte: bincode also accepts non-canonical varints, e.g. `fb 04 00` for 4.)
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use litebroker_protocol::frame::peek_hello_version;
use litebroker_protocol::{decode_payload, encode_frame, read_frame, FrameError, Request, HARD_MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let _ = peek_hello_version(data);
    if let Ok(req) = decode_payload::<Request>(data) {
        let mut once = Vec::new();
        encode_frame(&req, &mut once, HARD_MAX_FRAME).expect("a decoded request encodes");
        let again: Request = decode_payload(&once[4..]).expect("an encoded request decodes");
        let mut twice = Vec::new();
        encode_frame(&again, &mut twice, HARD_MAX_FRAME).unwrap();
        assert_eq!(once, twice, "a round trip changed the request");
    }
    // The same bytes as a stream of frames, with a small maximum as configured.
    let mut r = Cursor::new(data);
    let mut buf = Vec::new();
    loop {
        match read_frame::<_, Request>(&mut r, 4096, &mut buf) {
            Ok(Some(_)) | Err(FrameError::Decode(_) | FrameError::TrailingBytes { .. }) => {}
            Ok(None) => break,
            Err(e) => {
                assert!(e.is_fatal(), "{e:?}");
                break;
            }
        }
    }
});
