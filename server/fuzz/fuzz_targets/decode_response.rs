//! What a client does with the broker's bytes (a client may talk to anything that
//! listens on the socket path): nothing may panic.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use litebroker_protocol::{decode_payload, encode_frame, read_frame, Response, HARD_MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    if let Ok(resp) = decode_payload::<Response>(data) {
        let mut buf = Vec::new();
        encode_frame(&resp, &mut buf, HARD_MAX_FRAME).expect("a decoded response encodes");
    }
    let mut r = Cursor::new(data);
    let mut buf = Vec::new();
    while let Ok(Some(_)) = read_frame::<_, Response>(&mut r, HARD_MAX_FRAME, &mut buf) {}
});
