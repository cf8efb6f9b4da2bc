//! The RESP front door's request path, the first thing any client of
//! `ship --listen-resp` or `recv --listen-resp` reaches: arbitrary bytes go
//! through the same steps a connection takes (the declared-length check,
//! the `redis-protocol` decoder, the argument and command parsers) until
//! the input is used up or refused. It must never panic, never hold a
//! request whose declared lengths break the limits, and every reply a
//! command could get must encode in both protocol versions.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use redis_protocol::resp2;
use xdr_ship::resp::command::{self, Reply};

/// Limits small enough that the fuzzer reaches them.
const MAX_ARGS: usize = 64;
const MAX_BULK: usize = 4096;

fuzz_target!(|input: &[u8]| {
    let mut buf = BytesMut::from(input);
    while !buf.is_empty() {
        if command::check_declared_lengths(&buf, MAX_ARGS, MAX_BULK).is_err() {
            return;
        }
        let frame = match resp2::decode::decode_bytes_mut(&mut buf) {
            Ok(Some((frame, _, _))) => frame,
            Ok(None) | Err(_) => return,
        };
        let reply = match command::arguments(frame) {
            Ok(args) => {
                assert!(
                    args.len() <= MAX_ARGS,
                    "{} arguments passed the check",
                    args.len()
                );
                assert!(
                    args.iter().all(|a| a.len() <= MAX_BULK),
                    "a bulk past the limit"
                );
                match command::parse(&args) {
                    Ok(cmd) => Reply::text(format!("{cmd:?}")),
                    Err(refusal) => Reply::Error(refusal.0),
                }
            }
            Err(refusal) => Reply::Error(refusal.0),
        };
        for proto in [2, 3] {
            let mut out = BytesMut::new();
            reply.clone().encode(proto, &mut out);
            assert!(!out.is_empty());
        }
    }
});
