//! The frame decoder on arbitrary bytes, delivered in arbitrary pieces (the
//! first input byte picks the piece size, so frames split across reads are
//! explored too). It must never panic, and every frame it accepts must re-encode to a frame
//! that decodes to the same value.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use xdr_ship::wire::{Frame, WireCodec, MIN_MAX_FRAME};

fn reencodes_to_itself(frame: &Frame) {
    let mut codec = WireCodec::new().with_max_frame(MIN_MAX_FRAME);
    let mut buf = BytesMut::new();
    codec
        .encode(frame, &mut buf)
        .expect("a decoded frame must be encodable");
    let again = codec
        .decode(&mut buf)
        .expect("a re-encoded frame must decode")
        .expect("a re-encoded frame is whole");
    assert_eq!(&again, frame);
    assert!(buf.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece % 64) + 1;
    let mut codec = WireCodec::new().with_max_frame(MIN_MAX_FRAME);
    let mut buf = BytesMut::new();
    for chunk in data.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => reencodes_to_itself(&frame),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = codec.decode_eof(&mut buf);
});
