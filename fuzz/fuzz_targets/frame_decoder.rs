//! The frame decoder on hostile input, delivered in arbitrary pieces so
//! that frames split across reads are explored too. Two kinds of input:
//! raw bytes, and well-formed frames of every type (built from the fuzzer's
//! data, then encoded) with bytes flipped and, optionally, the first
//! frame's checksum fixed up, so that the payload parsers are reached
//! rather than stopped at the magic or the CRC. It must never panic, and
//! every frame it accepts must re-encode to a frame that decodes to the
//! same value.
#![no_main]

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use xdr_ship::wire::{
    Ack, Frame, Goodbye, Hello, HelloOk, Message, Nack, OrderingMode, ResultCode, WireCodec, Write,
    HEADER_LEN, MIN_MAX_FRAME,
};

#[derive(Debug, Arbitrary)]
enum Input {
    Raw {
        piece: u8,
        bytes: Vec<u8>,
    },
    Mutated {
        piece: u8,
        frames: Vec<(u64, Body)>,
        flips: Vec<(u16, u8)>,
        fix_crc: bool,
        compress: bool,
    },
}

type ArbWrite = (Vec<u8>, Option<Vec<u8>>, u64, u64);

#[derive(Debug, Arbitrary)]
enum Body {
    Hello(u8, u8, bool, u64, String, Vec<u8>),
    HelloOk(u8, bool, u32, u32),
    Write(ArbWrite),
    Batch(Vec<ArbWrite>),
    Ack(u8),
    AckPerWrite(Vec<u8>),
    Nack(u8, String),
    Goodbye(u8, String),
    Ping,
    Pong,
}

fn mode(unordered: bool) -> OrderingMode {
    if unordered {
        OrderingMode::Unordered
    } else {
        OrderingMode::Ordered
    }
}

fn write((key, value, version, source_id): ArbWrite) -> Write {
    Write {
        key: Bytes::from(key),
        value: value.map(Bytes::from),
        version,
        source_id,
    }
}

fn message(body: Body) -> Message {
    match body {
        Body::Hello(min_version, max_version, unordered, source_id, client_name, cred) => {
            Message::Hello(Hello {
                min_version,
                max_version,
                mode: mode(unordered),
                source_id,
                client_name,
                credentials: Bytes::from(cred),
            })
        }
        Body::HelloOk(version, unordered, max_frame, max_in_flight) => Message::HelloOk(HelloOk {
            version,
            mode: mode(unordered),
            max_frame,
            max_in_flight,
        }),
        Body::Write(w) => Message::Write(write(w)),
        Body::Batch(ws) => Message::Batch(ws.into_iter().map(write).collect()),
        Body::Ack(code) => Message::Ack(Ack::All(ResultCode::from_u8(code))),
        Body::AckPerWrite(codes) => Message::Ack(Ack::PerWrite(
            codes.into_iter().map(ResultCode::from_u8).collect(),
        )),
        Body::Nack(code, msg) => Message::Nack(Nack::new(ResultCode::from_u8(code), msg)),
        Body::Goodbye(code, msg) => Message::Goodbye(Goodbye::new(ResultCode::from_u8(code), msg)),
        Body::Ping => Message::Ping,
        Body::Pong => Message::Pong,
    }
}

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

fn decode_in_pieces(piece: u8, data: &[u8]) {
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
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { piece, bytes } => decode_in_pieces(piece, &bytes),
        Input::Mutated {
            piece,
            frames,
            flips,
            fix_crc,
            compress,
        } => {
            let mut codec = if compress {
                WireCodec::new().with_compression(0, 1)
            } else {
                WireCodec::new()
            };
            let mut buf = BytesMut::new();
            for (id, body) in frames {
                // Messages the encoder refuses (a failing uniform ACK, ...)
                // leave the buffer as it was.
                let _ = codec.encode(Frame::new(id, message(body)), &mut buf);
            }
            let mut bytes = buf.to_vec();
            if bytes.is_empty() {
                return;
            }
            for (at, xor) in flips {
                let i = usize::from(at) % bytes.len();
                bytes[i] ^= xor;
            }
            if fix_crc && bytes.len() >= HEADER_LEN {
                let len = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
                if let Some(payload) = bytes.get(HEADER_LEN..HEADER_LEN + len) {
                    let crc = crc32c::crc32c(payload);
                    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
                }
            }
            decode_in_pieces(piece, &bytes);
        }
    }
});
