//! Behaviour tests for the wire codec. Each test checks one property of the
//! spec in docs/protocol.md against real encoded bytes.

use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use super::*;

// ---------------------------------------------------------------- helpers

fn encode(codec: &mut WireCodec, frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    codec.encode(frame, &mut buf).expect("encode");
    buf
}

fn encode_default(frame: &Frame) -> BytesMut {
    encode(&mut WireCodec::new(), frame)
}

/// A frame built by hand, with a correct CRC, so that payload-level errors
/// are reached.
fn raw_frame(type_byte: u8, flags: u8, request_id: u64, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_slice(&MAGIC);
    b.put_u8(PROTOCOL_VERSION);
    b.put_u8(type_byte);
    b.put_u8(flags);
    b.put_slice(&[0, 0, 0]);
    b.put_u64_le(request_id);
    b.put_u32_le(payload.len() as u32);
    b.put_u32_le(crc32c::crc32c(payload));
    b.put_slice(payload);
    b
}

/// Payload of a single write record, lengths given explicitly so that they
/// can lie.
fn raw_write(kind: u8, key_len: u32, value_len: u32, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.put_u64_le(9); // version
    p.put_u64_le(3); // source_id
    p.put_u8(kind);
    p.put_u32_le(key_len);
    p.put_u32_le(value_len);
    p.put_slice(data);
    p
}

fn decode_one(codec: &mut WireCodec, buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    codec.decode(buf)
}

fn decode_err(buf: &mut BytesMut) -> WireError {
    match WireCodec::new().decode(buf) {
        Err(e) => e,
        Ok(f) => panic!("expected an error, decoded {f:?}"),
    }
}

fn assert_malformed(err: WireError, frame_type: FrameType, needle: &str) {
    match err {
        WireError::Malformed {
            frame_type: ft,
            reason,
            ..
        } => {
            assert_eq!(ft, frame_type);
            assert!(
                reason.contains(needle),
                "reason {reason:?} should mention {needle:?}"
            );
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

/// At least one frame of every type, and the variants within types.
fn samples() -> Vec<Frame> {
    let hello = Hello {
        min_version: 1,
        max_version: 3,
        mode: OrderingMode::Unordered,
        source_id: 0xDEAD_BEEF_0000_0001,
        client_name: "shipper-eu-1 ✓".to_string(),
        credentials: Bytes::from_static(b"\x00token\xff"),
    };
    vec![
        Frame::hello(hello),
        Frame::hello(Hello::new(OrderingMode::Ordered, 1)),
        Frame::hello_ok(HelloOk {
            version: 1,
            mode: OrderingMode::Ordered,
            max_frame: 16 << 20,
            max_in_flight: 4096,
        }),
        Frame::write(1, Write::put("user:42", vec![7u8; 300], 17, 5)),
        Frame::write(2, Write::tombstone("user:43", u64::MAX, 0)),
        Frame::write(3, Write::put(Bytes::new(), Bytes::new(), 0, 0)),
        Frame::batch(
            4,
            vec![
                Write::put("a", "1", 1, 1),
                Write::tombstone("b", 2, 1),
                Write::put("c", vec![0xABu8; 100], 3, 2),
            ],
        ),
        Frame::batch(5, Vec::new()),
        Frame::ack(6, ResultCode::Ok),
        Frame::ack(7, ResultCode::LostConflict),
        Frame::ack_per_write(
            8,
            vec![
                ResultCode::Ok,
                ResultCode::LostConflict,
                ResultCode::Busy,
                ResultCode::RecordTooLarge,
                ResultCode::Other(0x9F),
            ],
        ),
        Frame::nack(9, ResultCode::Busy, "queue full, retry"),
        Frame::nack(10, ResultCode::AuthFailed, ""),
        Frame::goodbye(ResultCode::Ok, "shutting down cleanly"),
        Frame::goodbye(ResultCode::ProtocolViolation, "bad frame"),
        Frame::new(u64::MAX, Message::Ping),
        Frame::new(u64::MAX, Message::Pong),
    ]
}

/// A BATCH big and repetitive enough to be compressed by a default codec.
fn compressible_batch(request_id: u64) -> Frame {
    let writes = (0..100u64)
        .map(|i| {
            let value = format!(
                "{{\"user\":{i},\"plan\":\"gold\",\"pad\":\"{}\"}}",
                "x".repeat(1000)
            );
            Write::put(format!("user:{i:08}"), value, i, 7)
        })
        .collect();
    Frame::batch(request_id, writes)
}

// ---------------------------------------------------------------- round trips

#[test]
fn samples_cover_every_frame_type() {
    let seen: HashSet<FrameType> = samples().iter().map(Frame::frame_type).collect();
    for ft in FrameType::ALL {
        assert!(seen.contains(&ft), "no sample for {ft}");
    }
}

#[test]
fn every_frame_type_round_trips() {
    let mut codec = WireCodec::new();
    for frame in samples() {
        let mut buf = encode(&mut codec, &frame);
        assert_eq!(buf.len(), frame.encoded_len(), "encoded_len of {frame:?}");
        let decoded = decode_one(&mut codec, &mut buf)
            .expect("decode")
            .expect("complete");
        assert_eq!(decoded, frame);
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
    }
}

#[test]
fn every_frame_type_decodes_only_when_complete_at_every_split() {
    let mut frames = samples();
    frames.push(compressible_batch(77));
    for frame in frames {
        let bytes = encode_default(&frame).freeze();
        for split in 0..bytes.len() {
            let mut codec = WireCodec::new();
            let mut buf = BytesMut::from(&bytes[..split]);
            assert!(
                decode_one(&mut codec, &mut buf).expect("partial").is_none(),
                "{} decoded from {split} of {} bytes",
                frame.frame_type(),
                bytes.len()
            );
            assert_eq!(buf.len(), split, "partial input must not be consumed");
            buf.extend_from_slice(&bytes[split..]);
            let decoded = decode_one(&mut codec, &mut buf)
                .expect("decode")
                .expect("complete");
            assert_eq!(decoded, frame);
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn still_needed_is_the_missing_header_then_exactly_the_rest_of_the_frame() {
    for frame in samples() {
        let bytes = encode_default(&frame).freeze();
        for split in 0..=bytes.len() {
            // Before the header is whole the frame's length is unknown.
            let missing = if split < HEADER_LEN {
                HEADER_LEN - split
            } else {
                bytes.len() - split
            };
            assert_eq!(
                WireCodec::still_needed(&bytes[..split]),
                missing,
                "{} cut at {split} of {} bytes",
                frame.frame_type(),
                bytes.len()
            );
        }
        // A whole frame followed by part of the next needs nothing more.
        let mut two = BytesMut::from(&bytes[..]);
        two.extend_from_slice(&bytes[..3]);
        assert_eq!(WireCodec::still_needed(&two), 0);
    }
}

#[test]
fn frame_fed_one_byte_at_a_time_decodes_exactly_once() {
    for frame in samples() {
        let bytes = encode_default(&frame);
        let mut codec = WireCodec::new();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for &b in bytes.iter() {
            buf.put_u8(b);
            if let Some(f) = decode_one(&mut codec, &mut buf).expect("decode") {
                decoded.push(f);
            }
        }
        assert_eq!(decoded, vec![frame]);
        assert!(buf.is_empty());
    }
}

#[test]
fn two_frames_back_to_back_decode_in_order() {
    let mut codec = WireCodec::new();
    let first = Frame::write(1, Write::put("k1", "v1", 1, 1));
    let second = Frame::ack(1, ResultCode::Ok);
    let mut buf = encode(&mut codec, &first);
    codec.encode(&second, &mut buf).expect("encode");
    assert_eq!(decode_one(&mut codec, &mut buf).unwrap(), Some(first));
    assert_eq!(decode_one(&mut codec, &mut buf).unwrap(), Some(second));
    assert_eq!(decode_one(&mut codec, &mut buf).unwrap(), None);
    assert!(buf.is_empty());
}

#[test]
fn decoded_key_and_value_share_the_read_buffer() {
    let frame = Frame::write(1, Write::put("key", vec![1u8; 1024], 1, 1));
    let mut buf = encode_default(&frame);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Some(Frame {
        body: Message::Write(w),
        ..
    }) = WireCodec::new().decode(&mut buf).unwrap()
    else {
        panic!("expected a WRITE");
    };
    let value = w.value.expect("value");
    assert!(range.contains(&(w.key.as_ptr() as usize)), "key was copied");
    assert!(
        range.contains(&(value.as_ptr() as usize)),
        "value was copied"
    );
}

#[test]
fn encoded_write_size_matches_window_helpers() {
    let w = Write::put(vec![1u8; 20], vec![2u8; 1000], 1, 1);
    let bytes = encode_default(&Frame::write(1, w.clone()));
    assert_eq!(bytes.len(), write_frame_len(20, 1000));
    assert_eq!(bytes.len(), w.frame_len());
    assert_eq!(w.record_len(), write_record_len(20, 1000));

    let t = Write::tombstone(vec![1u8; 20], 1, 1);
    assert_eq!(
        encode_default(&Frame::write(1, t)).len(),
        write_frame_len(20, 0)
    );

    let writes = vec![w.clone(), w];
    let batch = encode(
        &mut WireCodec::new().without_compression(),
        &Frame::batch(1, writes.clone()),
    );
    assert_eq!(batch.len(), batch_frame_len(&writes));
}

#[test]
fn encode_batch_from_slice_matches_frame_encoding() {
    let writes = vec![Write::put("a", "1", 1, 1), Write::tombstone("b", 2, 1)];
    let mut codec = WireCodec::new();
    let mut direct = BytesMut::new();
    let n = codec.encode_batch(5, &writes, &mut direct).unwrap();
    assert_eq!(n, direct.len());
    assert_eq!(direct, encode(&mut codec, &Frame::batch(5, writes)));
}

#[test]
fn encode_batch_from_borrowed_records_matches_frame_encoding() {
    // The shipper keeps (position, write) pairs; the batch is encoded from
    // borrows of them.
    let records = [
        (7u64, Write::put("a", "1", 1, 1)),
        (8, Write::tombstone("b", 2, 1)),
    ];
    let mut codec = WireCodec::new();
    let mut direct = BytesMut::new();
    codec
        .encode_batch(5, records.iter().map(|(_, w)| w), &mut direct)
        .unwrap();
    let writes = records.iter().map(|(_, w)| w.clone()).collect();
    assert_eq!(direct, encode(&mut codec, &Frame::batch(5, writes)));
}

#[test]
fn encode_write_from_a_borrow_matches_frame_encoding() {
    let w = Write::put("key", vec![3u8; 100], 9, 2);
    let mut codec = WireCodec::new();
    let mut direct = BytesMut::new();
    let n = codec.encode_write(4, &w, &mut direct).unwrap();
    assert_eq!(n, direct.len());
    assert_eq!(direct, encode(&mut codec, &Frame::write(4, w)));
}

/// A batch mixing values long enough to go by reference, short ones and a
/// tombstone (see `gather`).
fn mixed_writes() -> Vec<Write> {
    vec![
        Write::put("long-1", vec![1u8; gather::BY_REF_MIN], 1, 1),
        Write::put("short", vec![2u8; 10], 2, 1),
        Write::tombstone("gone", 3, 1),
        Write::put("long-2", vec![3u8; 4000], 4, 1),
        Write::put("long-3", vec![4u8; 2 * gather::BY_REF_MIN], 5, 1),
    ]
}

#[test]
fn a_gathered_batch_is_byte_for_byte_the_contiguous_one() {
    let writes = mixed_writes();
    let mut codec = WireCodec::new().without_compression();
    let mut gathered = GatherBuf::new();
    gathered.tail_mut().extend_from_slice(b"earlier bytes");
    let n = codec
        .encode_batch_gather(5, &writes, &mut gathered)
        .unwrap();
    let mut contiguous = BytesMut::from(&b"earlier bytes"[..]);
    codec.encode_batch(5, &writes, &mut contiguous).unwrap();
    assert_eq!(n, contiguous.len() - b"earlier bytes".len());
    assert_eq!(gathered.to_contiguous(), contiguous);
}

#[test]
fn a_gathered_write_is_byte_for_byte_the_contiguous_one() {
    let w = Write::put("key", vec![9u8; 3000], 7, 2);
    let mut codec = WireCodec::new();
    let mut gathered = GatherBuf::new();
    let n = codec.encode_write_gather(4, &w, &mut gathered).unwrap();
    assert_eq!(n, gathered.len());
    assert_eq!(
        gathered.to_contiguous(),
        encode(&mut codec, &Frame::write(4, w))
    );
}

#[test]
fn a_gathered_batch_that_compresses_is_encoded_in_place() {
    let Frame {
        body: Message::Batch(writes),
        ..
    } = compressible_batch(3)
    else {
        unreachable!("compressible_batch is a BATCH")
    };
    let mut codec = WireCodec::new().with_compression(0, 1);
    let mut gathered = GatherBuf::new();
    codec
        .encode_batch_gather(3, &writes, &mut gathered)
        .unwrap();
    let mut buf = gathered.to_contiguous();
    // The flags byte follows magic, version and type (protocol §2).
    assert_ne!(buf[4] & FLAG_COMPRESSED, 0, "not compressed");
    let decoded = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(decoded, Frame::batch(3, writes));
}

#[test]
fn a_gathered_batch_over_max_frame_fails_and_queues_nothing() {
    let mut codec = WireCodec::new().with_max_frame(MIN_MAX_FRAME);
    let mut gathered = GatherBuf::new();
    let w = Write::put("k", vec![0u8; MIN_MAX_FRAME], 1, 1);
    assert!(matches!(
        codec.encode_batch_gather(1, [&w, &w], &mut gathered),
        Err(WireError::FrameTooLarge { .. })
    ));
    assert!(gathered.is_empty());
}

#[test]
fn encode_write_over_max_frame_fails_and_leaves_the_buffer_untouched() {
    let mut codec = WireCodec::new().with_max_frame(MIN_MAX_FRAME);
    let mut buf = BytesMut::from(&b"before"[..]);
    let w = Write::put("k", vec![0u8; MIN_MAX_FRAME], 1, 1);
    assert!(matches!(
        codec.encode_write(1, &w, &mut buf),
        Err(WireError::FrameTooLarge { .. })
    ));
    assert_eq!(&buf[..], b"before");
}

#[test]
fn frames_coalesced_into_one_buffer_decode_in_order_at_every_split() {
    // What the shipper hands to one `write`: several requests back to back.
    let mut codec = WireCodec::new();
    let frames = vec![
        Frame::batch(
            1,
            vec![Write::put("a", "1", 1, 1), Write::put("b", "22", 2, 1)],
        ),
        Frame::write(2, Write::tombstone("c", 3, 1)),
        compressible_batch(3),
        Frame::write(4, Write::put("d", vec![4u8; 300], 4, 1)),
    ];
    let mut wire = BytesMut::new();
    for f in &frames {
        match &f.body {
            Message::Write(w) => codec.encode_write(f.request_id, w, &mut wire),
            Message::Batch(ws) => codec.encode_batch(f.request_id, ws, &mut wire),
            _ => unreachable!("requests only"),
        }
        .unwrap();
    }
    let wire = wire.freeze();
    for split in 0..=wire.len() {
        let mut rx = WireCodec::new();
        let mut buf = BytesMut::from(&wire[..split]);
        let mut got = Vec::new();
        while let Some(f) = decode_one(&mut rx, &mut buf).expect("decode") {
            got.push(f);
        }
        buf.extend_from_slice(&wire[split..]);
        while let Some(f) = decode_one(&mut rx, &mut buf).expect("decode") {
            got.push(f);
        }
        assert_eq!(got, frames, "split at {split}");
        assert!(buf.is_empty());
    }
}

#[test]
fn header_layout_is_little_endian_at_documented_offsets() {
    let frame = Frame::write(0x0102_0304_0506_0708, Write::put("k", "v", 1, 1));
    let b = encode_default(&frame);
    assert_eq!(&b[0..2], b"XS");
    assert_eq!(b[2], 1);
    assert_eq!(b[3], 0x10);
    assert_eq!(b[4], 0);
    assert_eq!(&b[5..8], &[0, 0, 0]);
    assert_eq!(&b[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
    let len = write_record_len(1, 1) as u32;
    assert_eq!(&b[16..20], &len.to_le_bytes());
    assert_eq!(&b[20..24], &crc32c::crc32c(&b[24..]).to_le_bytes());
}

// ---------------------------------------------------------------- limits

#[test]
fn oversize_length_is_rejected_before_allocation() {
    let mut header = raw_frame(FrameType::Write.as_u8(), 0, 1, &[]);
    header[16..20].copy_from_slice(&u32::MAX.to_le_bytes()); // claims 4 GiB
    let mut buf = BytesMut::with_capacity(HEADER_LEN);
    buf.extend_from_slice(&header);
    let cap_before = buf.capacity();
    match WireCodec::new().decode(&mut buf) {
        Err(WireError::FrameTooLarge { len, max }) => {
            assert_eq!(len, u32::MAX as usize);
            assert_eq!(max, DEFAULT_MAX_FRAME);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    assert_eq!(
        buf.capacity(),
        cap_before,
        "buffer grew for a rejected frame"
    );
}

#[test]
fn configured_max_frame_is_enforced_on_decode() {
    let frame = Frame::write(1, Write::put("k", vec![0u8; 100 * 1024], 1, 1));
    let mut buf = encode_default(&frame);
    let mut small = WireCodec::new().with_max_frame(64 * 1024);
    assert!(matches!(
        small.decode(&mut buf),
        Err(WireError::FrameTooLarge { max: 65536, .. })
    ));
}

#[test]
fn partial_frame_reserves_what_the_frame_needs_only() {
    let full = raw_frame(FrameType::Ping.as_u8(), 0, 1, &[]);
    let mut header = full.clone();
    header[16..20].copy_from_slice(&100_000u32.to_le_bytes());
    let mut buf = BytesMut::with_capacity(HEADER_LEN);
    buf.extend_from_slice(&header);
    assert!(WireCodec::new().decode(&mut buf).unwrap().is_none());
    let needed = HEADER_LEN + 100_000;
    assert!(buf.capacity() >= needed, "did not reserve for the frame");
    assert!(
        buf.capacity() <= 2 * needed,
        "reserved {} for {needed}",
        buf.capacity()
    );
    assert_eq!(buf.len(), HEADER_LEN, "nothing consumed");
}

#[test]
fn encoding_a_frame_over_max_fails_and_leaves_buffer_untouched() {
    let mut codec = WireCodec::new()
        .with_max_frame(64 * 1024)
        .without_compression();
    let mut buf = BytesMut::from(&b"prior"[..]);
    let big = Frame::write(1, Write::put("k", vec![0u8; 70 * 1024], 1, 1));
    assert!(matches!(
        codec.encode(&big, &mut buf),
        Err(WireError::FrameTooLarge { max: 65536, .. })
    ));
    let batch = Frame::batch(2, vec![Write::put("k", vec![0u8; 70 * 1024], 1, 1)]);
    assert!(matches!(
        codec.encode(&batch, &mut buf),
        Err(WireError::FrameTooLarge { .. })
    ));
    assert_eq!(&buf[..], b"prior");
}

#[test]
fn max_frame_is_clamped_to_the_allowed_range() {
    assert_eq!(
        WireCodec::new().with_max_frame(10).max_frame(),
        MIN_MAX_FRAME
    );
    assert_eq!(
        WireCodec::new().with_max_frame(usize::MAX).max_frame(),
        u32::MAX as usize
    );
}

// ---------------------------------------------------------------- header errors

#[test]
fn flipped_payload_byte_is_a_bad_checksum() {
    let mut buf = encode_default(&Frame::write(42, Write::put("k", "value", 1, 1)));
    let expected = u32::from_le_bytes([buf[20], buf[21], buf[22], buf[23]]);
    let last = buf.len() - 1;
    buf[last] ^= 0x01;
    let actual = crc32c::crc32c(&buf[HEADER_LEN..]);
    match decode_err(&mut buf) {
        WireError::BadChecksum {
            frame_type,
            request_id,
            expected: e,
            actual: a,
        } => {
            assert_eq!(frame_type, FrameType::Write);
            assert_eq!(request_id, 42);
            assert_eq!(e, expected);
            assert_eq!(a, actual);
        }
        other => panic!("expected BadChecksum, got {other:?}"),
    }
}

#[test]
fn wrong_version_is_unsupported_version() {
    let mut buf = encode_default(&Frame::new(1, Message::Ping));
    buf[2] = 2;
    assert!(matches!(
        decode_err(&mut buf),
        WireError::UnsupportedVersion { got: 2 }
    ));
}

#[test]
fn wrong_magic_is_bad_magic() {
    // A TLS ClientHello record on a plaintext port.
    let mut buf = BytesMut::from(&[0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01][..]);
    buf.resize(HEADER_LEN, 0);
    let err = decode_err(&mut buf);
    assert!(matches!(err, WireError::BadMagic { got: [0x16, 0x03] }));
    assert!(err
        .to_string()
        .contains("not speaking the xdr-ship wire protocol"));
}

#[test]
fn unknown_frame_type_is_rejected() {
    let mut buf = raw_frame(0x7E, 0, 1, &[]);
    assert!(matches!(
        decode_err(&mut buf),
        WireError::UnknownFrameType { got: 0x7E }
    ));
}

#[test]
fn compressed_flag_outside_batch_is_invalid() {
    let mut buf = raw_frame(FrameType::Write.as_u8(), FLAG_COMPRESSED, 3, &[]);
    assert!(matches!(
        decode_err(&mut buf),
        WireError::InvalidFlags {
            frame_type: FrameType::Write,
            flags: FLAG_COMPRESSED,
            request_id: 3
        }
    ));
}

#[test]
fn undefined_flag_bit_is_invalid() {
    let mut buf = raw_frame(FrameType::Batch.as_u8(), 0x80, 3, &0u32.to_le_bytes());
    assert!(matches!(
        decode_err(&mut buf),
        WireError::InvalidFlags { flags: 0x80, .. }
    ));
}

#[test]
fn nonzero_reserved_bytes_are_rejected() {
    let mut buf = raw_frame(FrameType::Ping.as_u8(), 0, 3, &[]);
    buf[6] = 1;
    assert!(matches!(
        decode_err(&mut buf),
        WireError::ReservedNotZero {
            got: [0, 1, 0],
            request_id: 3
        }
    ));
}

// ---------------------------------------------------------------- payload errors

#[test]
fn write_with_key_longer_than_payload_is_malformed() {
    let mut buf = raw_frame(0x10, 0, 1, &raw_write(0, 100, 0, b"only ten b"));
    assert_malformed(
        decode_err(&mut buf),
        FrameType::Write,
        "key needs 100 bytes",
    );
}

#[test]
fn write_with_value_longer_than_payload_is_malformed() {
    let mut buf = raw_frame(0x10, 0, 1, &raw_write(0, 2, 50, b"k1value"));
    assert_malformed(
        decode_err(&mut buf),
        FrameType::Write,
        "value needs 50 bytes",
    );
}

#[test]
fn write_cut_inside_fixed_fields_is_malformed() {
    let full = raw_write(0, 1, 1, b"kv");
    let mut buf = raw_frame(0x10, 0, 1, &full[..12]);
    assert_malformed(decode_err(&mut buf), FrameType::Write, "source_id");
}

#[test]
fn write_with_trailing_bytes_is_malformed() {
    let mut buf = raw_frame(0x10, 0, 1, &raw_write(0, 1, 1, b"kvEXTRA"));
    assert_malformed(
        decode_err(&mut buf),
        FrameType::Write,
        "5 unexpected trailing bytes",
    );
}

#[test]
fn unknown_write_kind_is_malformed() {
    let mut buf = raw_frame(0x10, 0, 1, &raw_write(7, 1, 1, b"kv"));
    assert_malformed(
        decode_err(&mut buf),
        FrameType::Write,
        "unknown write kind 7",
    );
}

#[test]
fn tombstone_with_value_length_is_malformed() {
    let mut buf = raw_frame(0x10, 0, 1, &raw_write(1, 1, 1, b"kv"));
    assert_malformed(
        decode_err(&mut buf),
        FrameType::Write,
        "tombstone carries value_len 1",
    );
}

#[test]
fn batch_count_larger_than_records_is_malformed_without_huge_allocation() {
    let mut payload = Vec::new();
    payload.put_u32_le(u32::MAX); // claims 4 billion writes
    payload.extend_from_slice(&raw_write(0, 1, 1, b"kv"));
    let mut buf = raw_frame(0x11, 0, 1, &payload);
    assert_malformed(
        decode_err(&mut buf),
        FrameType::Batch,
        "version needs 8 bytes",
    );
}

#[test]
fn truncated_hello_is_malformed() {
    let mut buf = raw_frame(0x01, 0, 0, &[1, 1, 0, 9, 9]);
    assert_malformed(decode_err(&mut buf), FrameType::Hello, "source_id");
}

#[test]
fn hello_with_unknown_mode_is_malformed() {
    let mut p = vec![1, 1, 9];
    p.put_u64_le(1);
    p.put_u16_le(0);
    p.put_u16_le(0);
    let mut buf = raw_frame(0x01, 0, 0, &p);
    assert_malformed(
        decode_err(&mut buf),
        FrameType::Hello,
        "unknown ordering mode 9",
    );
}

#[test]
fn hello_with_invalid_utf8_name_is_malformed() {
    let mut p = vec![1, 1, 0];
    p.put_u64_le(1);
    p.put_u16_le(2);
    p.put_slice(&[0xFF, 0xFE]);
    p.put_u16_le(0);
    let mut buf = raw_frame(0x01, 0, 0, &p);
    assert_malformed(decode_err(&mut buf), FrameType::Hello, "not valid UTF-8");
}

#[test]
fn hello_and_hello_ok_ignore_extension_bytes() {
    let mut codec = WireCodec::new();
    for frame in [
        Frame::hello(Hello::new(OrderingMode::Ordered, 5)),
        Frame::hello_ok(HelloOk {
            version: 1,
            mode: OrderingMode::Unordered,
            max_frame: 1 << 20,
            max_in_flight: 10,
        }),
    ] {
        let encoded = encode(&mut codec, &frame);
        let mut payload = encoded[HEADER_LEN..].to_vec();
        payload.extend_from_slice(b"future-v2-fields");
        let mut buf = raw_frame(encoded[3], 0, 0, &payload);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
    }
}

#[test]
fn ack_per_write_count_past_payload_is_malformed() {
    let mut p = vec![1];
    p.put_u32_le(10);
    p.put_slice(&[0, 0, 0]);
    let mut buf = raw_frame(0x20, 0, 1, &p);
    assert_malformed(decode_err(&mut buf), FrameType::Ack, "codes needs 10 bytes");
}

#[test]
fn uniform_ack_with_failure_code_is_malformed() {
    let mut buf = raw_frame(0x20, 0, 1, &[0, ResultCode::Busy.as_u8()]);
    assert_malformed(decode_err(&mut buf), FrameType::Ack, "must be a NACK");
}

#[test]
fn nack_with_success_code_is_malformed() {
    let mut buf = raw_frame(0x21, 0, 1, &[0, 0, 0]);
    assert_malformed(decode_err(&mut buf), FrameType::Nack, "success code");
}

#[test]
fn ping_with_payload_is_malformed() {
    let mut buf = raw_frame(0x31, 0, 1, b"x");
    assert_malformed(decode_err(&mut buf), FrameType::Ping, "trailing");
}

#[test]
fn encoder_refuses_messages_the_decoder_would_reject() {
    let mut codec = WireCodec::new();
    let mut buf = BytesMut::new();
    assert!(matches!(
        codec.encode(Frame::ack(1, ResultCode::Timeout), &mut buf),
        Err(WireError::InvalidMessage {
            frame_type: FrameType::Ack,
            ..
        })
    ));
    let nack = Frame::new(
        1,
        Message::Nack(Nack {
            code: ResultCode::Ok,
            message: String::new(),
        }),
    );
    assert!(matches!(
        codec.encode(nack, &mut buf),
        Err(WireError::InvalidMessage { .. })
    ));
    let mut hello = Hello::new(OrderingMode::Ordered, 1);
    hello.client_name = "n".repeat(MAX_SHORT_FIELD + 1);
    assert!(matches!(
        codec.encode(Frame::hello(hello), &mut buf),
        Err(WireError::FieldTooLong {
            field: "client_name",
            ..
        })
    ));
    assert!(buf.is_empty());
}

#[test]
fn eof_mid_frame_is_unexpected_eof() {
    let bytes = encode_default(&Frame::write(1, Write::put("k", "v", 1, 1)));
    let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
    let mut codec = WireCodec::new();
    assert!(matches!(
        codec.decode_eof(&mut buf),
        Err(WireError::UnexpectedEof { buffered }) if buffered == bytes.len() - 1
    ));
    assert!(codec.decode_eof(&mut BytesMut::new()).unwrap().is_none());
}

// ---------------------------------------------------------------- compression

#[test]
fn compressed_batch_round_trips_and_is_smaller() {
    let frame = compressible_batch(9);
    let mut codec = WireCodec::new();
    let mut buf = BytesMut::new();
    let written = codec.encode_frame(&frame, &mut buf).unwrap();
    assert_eq!(written, buf.len());
    assert_eq!(buf[4] & FLAG_COMPRESSED, FLAG_COMPRESSED, "not compressed");
    let raw = frame.encoded_len();
    assert!(
        buf.len() * 10 < raw,
        "compressed {} bytes vs raw {raw}",
        buf.len()
    );
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
    assert!(buf.is_empty());
}

#[test]
fn batch_below_threshold_is_sent_uncompressed() {
    let frame = Frame::batch(1, vec![Write::put("k", "x".repeat(100), 1, 1)]);
    let buf = encode_default(&frame);
    assert_eq!(buf[4], 0);
    assert_eq!(buf.len(), frame.encoded_len());
}

#[test]
fn incompressible_batch_is_sent_uncompressed() {
    // xorshift noise: zstd cannot shrink it, so the codec must not bother.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let frame = Frame::batch(1, vec![Write::put("k", noise, 1, 1)]);
    let mut buf = encode_default(&frame);
    assert_eq!(buf[4], 0, "compressed although it did not help");
    assert_eq!(WireCodec::new().decode(&mut buf).unwrap(), Some(frame));
}

#[test]
fn compression_can_be_disabled() {
    let frame = compressible_batch(1);
    let buf = encode(&mut WireCodec::new().without_compression(), &frame);
    assert_eq!(buf[4], 0);
    assert_eq!(buf.len(), frame.encoded_len());
}

#[test]
fn compressed_batch_declaring_more_than_max_is_refused_before_inflating() {
    // Honest sender with a big limit, receiver with a small one.
    let writes = vec![Write::put("bomb", vec![0u8; 1 << 20], 1, 1)];
    let mut sender = WireCodec::new();
    let mut buf = BytesMut::new();
    sender.encode_batch(1, &writes, &mut buf).unwrap();
    assert_eq!(buf[4], FLAG_COMPRESSED);
    assert!(
        buf.len() < MIN_MAX_FRAME,
        "the bomb itself must fit the limit"
    );
    let mut receiver = WireCodec::new().with_max_frame(MIN_MAX_FRAME);
    match receiver.decode(&mut buf) {
        Err(WireError::DecompressTooLarge {
            declared,
            max,
            request_id: 1,
        }) => {
            assert_eq!(declared, writes[0].record_len() + 4);
            assert_eq!(max, MIN_MAX_FRAME);
        }
        other => panic!("expected DecompressTooLarge, got {other:?}"),
    }
}

#[test]
fn compressed_batch_inflating_past_its_declared_size_is_rejected() {
    // Zip bomb that lies: 8 MiB of zeros declared as 1 KiB.
    let bomb = zstd::bulk::compress(&vec![0u8; 8 << 20], 3).unwrap();
    let mut payload = Vec::new();
    payload.put_u32_le(1024);
    payload.extend_from_slice(&bomb);
    let mut buf = raw_frame(0x11, FLAG_COMPRESSED, 5, &payload);
    assert!(matches!(
        decode_err(&mut buf),
        WireError::Decompress { request_id: 5, .. }
    ));
}

#[test]
fn compressed_batch_inflating_short_of_its_declared_size_is_malformed() {
    let mut body = Vec::new();
    body.put_u32_le(0); // an empty batch
    let mut payload = Vec::new();
    payload.put_u32_le(100);
    payload.extend_from_slice(&zstd::bulk::compress(&body, 1).unwrap());
    let mut buf = raw_frame(0x11, FLAG_COMPRESSED, 5, &payload);
    assert_malformed(
        decode_err(&mut buf),
        FrameType::Batch,
        "inflated to 4 bytes but declared 100",
    );
}

#[test]
fn garbage_compressed_payload_is_a_decompress_error() {
    let mut payload = Vec::new();
    payload.put_u32_le(100);
    payload.extend_from_slice(b"definitely not zstd");
    let mut buf = raw_frame(0x11, FLAG_COMPRESSED, 5, &payload);
    assert!(matches!(decode_err(&mut buf), WireError::Decompress { .. }));
}

// ---------------------------------------------------------------- result codes & goodbye

#[test]
fn result_codes_are_classed_as_documented() {
    use ResultCode::*;
    for c in [Ok, LostConflict] {
        assert!(
            c.is_success() && !c.is_retryable() && !c.is_permanent(),
            "{c}"
        );
    }
    for c in [Busy, Timeout, Unavailable, ShuttingDown, Corrupt] {
        assert!(
            c.is_retryable() && !c.is_success() && !c.is_permanent(),
            "{c}"
        );
    }
    for c in [
        BadRequest,
        RecordTooLarge,
        AuthFailed,
        Unsupported,
        ProtocolViolation,
    ] {
        assert!(
            c.is_permanent() && !c.is_success() && !c.is_retryable(),
            "{c}"
        );
    }
    // Unknown codes follow their range.
    assert!(ResultCode::from_u8(0x3F).is_success());
    assert!(ResultCode::from_u8(0x7F).is_retryable());
    assert!(ResultCode::from_u8(0xFF).is_permanent());
}

#[test]
fn result_code_byte_mapping_is_a_bijection() {
    for b in 0..=u8::MAX {
        assert_eq!(ResultCode::from_u8(b).as_u8(), b);
    }
}

#[test]
fn goodbye_for_a_decode_error_carries_reason_and_request_id() {
    let mut buf = encode_default(&Frame::write(42, Write::put("k", "v", 1, 1)));
    let last = buf.len() - 1;
    buf[last] ^= 0xFF;
    let err = decode_err(&mut buf);
    let goodbye = Frame::goodbye_for(&err);
    assert_eq!(goodbye.request_id, 42);
    let mut wire = encode_default(&goodbye);
    match WireCodec::new().decode(&mut wire).unwrap() {
        Some(Frame {
            body: Message::Goodbye(g),
            ..
        }) => {
            assert_eq!(g.code, ResultCode::Corrupt);
            assert!(g.message.contains("checksum mismatch"), "{}", g.message);
        }
        other => panic!("expected GOODBYE, got {other:?}"),
    }
}

#[test]
fn goodbye_message_is_truncated_at_a_char_boundary() {
    let frame = Frame::goodbye(ResultCode::Ok, "é".repeat(40_000));
    let Message::Goodbye(g) = &frame.body else {
        unreachable!()
    };
    assert!(g.message.len() <= MAX_SHORT_FIELD);
    assert_eq!(g.message.len() % 2, 0);
    let mut buf = encode_default(&frame);
    assert_eq!(WireCodec::new().decode(&mut buf).unwrap(), Some(frame));
}

#[test]
fn hello_version_negotiation() {
    let mut h = Hello::new(OrderingMode::Ordered, 1);
    assert_eq!(h.negotiate_version(), Some(PROTOCOL_VERSION));
    h.min_version = 2;
    h.max_version = 4;
    assert_eq!(h.negotiate_version(), None);
}

#[test]
fn error_close_codes() {
    assert_eq!(
        WireError::FrameTooLarge { len: 1, max: 0 }.close_code(),
        ResultCode::RecordTooLarge
    );
    assert_eq!(
        WireError::UnsupportedVersion { got: 9 }.close_code(),
        ResultCode::Unsupported
    );
    assert_eq!(
        WireError::BadMagic { got: [0, 0] }.close_code(),
        ResultCode::ProtocolViolation
    );
}

// ---------------------------------------------------------------- stream

/// What `Framed` does, over a real async byte stream delivered in odd-sized
/// chunks: many pipelined frames come out intact and in order.
#[tokio::test]
async fn pipelined_frames_survive_a_chunked_stream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut frames = samples();
    frames.push(compressible_batch(1000));
    let frames: Vec<Frame> = frames.into_iter().cycle().take(200).collect();

    let (mut tx, mut rx) = tokio::io::duplex(4096);
    let to_send = frames.clone();
    let writer = tokio::spawn(async move {
        let mut codec = WireCodec::new();
        let mut out = BytesMut::new();
        for f in &to_send {
            codec.encode(f, &mut out).unwrap();
        }
        let mut chunk = 1;
        while !out.is_empty() {
            let n = chunk.min(out.len());
            tx.write_all(&out.split_to(n)).await.unwrap();
            chunk = chunk % 997 + 13;
        }
    });

    let mut codec = WireCodec::new();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    loop {
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            got.push(f);
        }
        if rx.read_buf(&mut buf).await.unwrap() == 0 {
            assert!(codec.decode_eof(&mut buf).unwrap().is_none());
            break;
        }
    }
    writer.await.unwrap();
    assert_eq!(got, frames);
}

// ---------------------------------------------------------------- properties

/// Offset of the CRC32C in the header (docs/protocol.md §3).
const OFF_CRC_TEST: usize = 20;

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_code() -> impl Strategy<Value = ResultCode> {
    any::<u8>().prop_map(ResultCode::from_u8)
}

fn arb_mode() -> impl Strategy<Value = OrderingMode> {
    prop_oneof![Just(OrderingMode::Ordered), Just(OrderingMode::Unordered)]
}

fn arb_write() -> impl Strategy<Value = Write> {
    (
        arb_bytes(64),
        proptest::option::of(arb_bytes(512)),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(key, value, version, source_id)| Write {
            key,
            value,
            version,
            source_id,
        })
}

/// Writes whose values straddle [`gather::BY_REF_MIN`].
fn arb_gather_write() -> impl Strategy<Value = Write> {
    (
        arb_bytes(32),
        proptest::option::of(0..3 * gather::BY_REF_MIN),
        any::<u8>(),
    )
        .prop_map(|(key, value_len, fill)| Write {
            key,
            value: value_len.map(|n| Bytes::from(vec![fill; n])),
            version: 1,
            source_id: 1,
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u8>(),
            any::<u8>(),
            arb_mode(),
            any::<u64>(),
            ".{0,40}",
            arb_bytes(64)
        )
            .prop_map(
                |(min_version, max_version, mode, source_id, client_name, credentials)| {
                    Message::Hello(Hello {
                        min_version,
                        max_version,
                        mode,
                        source_id,
                        client_name,
                        credentials,
                    })
                }
            ),
        (any::<u8>(), arb_mode(), any::<u32>(), any::<u32>()).prop_map(
            |(version, mode, max_frame, max_in_flight)| Message::HelloOk(HelloOk {
                version,
                mode,
                max_frame,
                max_in_flight,
            })
        ),
        arb_write().prop_map(Message::Write),
        proptest::collection::vec(arb_write(), 0..24).prop_map(Message::Batch),
        arb_code()
            .prop_filter("uniform ACK codes are successes", |c| c.is_success())
            .prop_map(|c| Message::Ack(Ack::All(c))),
        proptest::collection::vec(arb_code(), 0..64).prop_map(|c| Message::Ack(Ack::PerWrite(c))),
        (
            arb_code().prop_filter("NACK codes are failures", |c| !c.is_success()),
            ".{0,40}"
        )
            .prop_map(|(code, message)| Message::Nack(Nack { code, message })),
        (arb_code(), ".{0,40}")
            .prop_map(|(code, message)| Message::Goodbye(Goodbye { code, message })),
        Just(Message::Ping),
        Just(Message::Pong),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_any_frame_round_trips(
        request_id in any::<u64>(),
        body in arb_message(),
        compress_everything in any::<bool>(),
    ) {
        let frame = Frame::new(request_id, body);
        let mut codec = if compress_everything {
            WireCodec::new().with_compression(0, 1)
        } else {
            WireCodec::new()
        };
        let mut buf = BytesMut::new();
        let n = codec.encode_frame(&frame, &mut buf).unwrap();
        prop_assert_eq!(n, buf.len());
        prop_assert!(n <= frame.encoded_len());
        let decoded = codec.decode(&mut buf).unwrap();
        prop_assert_eq!(decoded, Some(frame));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn prop_a_gathered_batch_decodes_to_its_writes(
        request_id in any::<u64>(),
        writes in proptest::collection::vec(arb_gather_write(), 1..12),
    ) {
        let mut codec = WireCodec::new().without_compression();
        let mut gathered = GatherBuf::new();
        let n = codec.encode_batch_gather(request_id, &writes, &mut gathered).unwrap();
        prop_assert_eq!(n, gathered.len());
        let mut buf = gathered.to_contiguous();
        let decoded = codec.decode(&mut buf).unwrap();
        prop_assert_eq!(decoded, Some(Frame::batch(request_id, writes)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn prop_every_prefix_of_a_frame_waits_for_more_and_is_eof_at_the_end(
        request_id in any::<u64>(),
        body in arb_message(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 1..16),
    ) {
        let whole = encode_default(&Frame::new(request_id, body));
        for cut in cuts {
            let at = cut.index(whole.len());
            let mut codec = WireCodec::new();
            let mut buf = BytesMut::from(&whole[..at]);
            prop_assert!(matches!(codec.decode(&mut buf), Ok(None)), "prefix of {} bytes", at);
            prop_assert_eq!(buf.len(), at, "a prefix must not be consumed");
            match codec.decode_eof(&mut buf) {
                Ok(None) => prop_assert_eq!(at, 0),
                Err(WireError::UnexpectedEof { buffered }) => prop_assert_eq!(buffered, at),
                other => prop_assert!(false, "prefix of {} bytes at EOF: {:?}", at, other),
            }
        }
    }

    #[test]
    fn prop_any_accepted_mutation_re_encodes_to_itself(
        request_id in any::<u64>(),
        body in arb_message(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        fix_crc in any::<bool>(),
    ) {
        let mut bytes = encode_default(&Frame::new(request_id, body)).to_vec();
        for (at, xor) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
        }
        if fix_crc && bytes.len() >= HEADER_LEN {
            // Re-sign the payload so the parser, not the checksum, is tested.
            let crc = crc32c::crc32c(&bytes[HEADER_LEN..]);
            bytes[OFF_CRC_TEST..OFF_CRC_TEST + 4].copy_from_slice(&crc.to_le_bytes());
        }
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(frame)) = WireCodec::new().decode(&mut buf) {
            let mut again = encode_default(&frame);
            let decoded = WireCodec::new().decode(&mut again).unwrap();
            prop_assert_eq!(decoded, Some(frame));
        }
    }

    #[test]
    fn prop_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::from(&data[..]);
        let _ = WireCodec::new().decode_eof(&mut buf);
    }

    #[test]
    fn prop_valid_header_with_garbage_payload_never_panics(
        type_byte in prop::sample::select(FrameType::ALL.iter().map(|t| t.as_u8()).collect::<Vec<_>>()),
        compressed in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let flags = if compressed && type_byte == FrameType::Batch.as_u8() { FLAG_COMPRESSED } else { 0 };
        let mut buf = raw_frame(type_byte, flags, 1, &payload);
        let _ = WireCodec::new().decode(&mut buf);
    }
}

#[test]
fn the_checksum_is_crc32c_as_an_independent_implementation_computes_it() {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + 3) as u8).collect();
    for len in [0, 1, 3, 24, 63, 1000, 1024, 4096, 65_536, 200_000] {
        assert_eq!(
            super::crc32c(&data[..len]),
            crc32c::crc32c(&data[..len]),
            "{len} bytes"
        );
    }
    // The standard check value of CRC-32C.
    assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
}
