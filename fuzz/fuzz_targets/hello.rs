//! The HELLO parser, the first thing an unauthenticated peer reaches: the
//! input is a HELLO payload behind a valid header (right CRC, so the parser
//! itself is exercised, not the checksum). It must never panic; a HELLO it
//! accepts must re-encode to the same value; version negotiation and the
//! token check must answer without panicking whatever the fields hold.
#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use xdr_ship::{
    tls::Token,
    wire::{Message, WireCodec, MAGIC, PROTOCOL_VERSION},
};

fuzz_target!(|payload: &[u8]| {
    let mut buf = BytesMut::with_capacity(24 + payload.len());
    buf.put_slice(&MAGIC);
    buf.put_u8(PROTOCOL_VERSION);
    buf.put_u8(0x01); // HELLO
    buf.put_u8(0);
    buf.put_slice(&[0; 3]);
    buf.put_u64_le(0);
    buf.put_u32_le(payload.len() as u32);
    buf.put_u32_le(crc32c::crc32c(payload));
    buf.put_slice(payload);
    let mut codec = WireCodec::new();
    let Ok(Some(frame)) = codec.decode(&mut buf) else {
        return;
    };
    let Message::Hello(hello) = &frame.body else {
        panic!("a HELLO header decoded as {:?}", frame.body);
    };
    let _ = hello.negotiate_version();
    let token = Token::new(b"fuzzing-token-0123456789");
    let _ = token.verify(&hello.credentials);
    let mut out = BytesMut::new();
    codec
        .encode(&frame, &mut out)
        .expect("a decoded HELLO re-encodes");
    let again = codec.decode(&mut out).unwrap().unwrap();
    assert_eq!(again, frame);
});
