//! The record layouts of the TCP tracepoints on this kernel, read from
//! tracefs before the programs are loaded.
//!
//! Why here and not in the loader: tracepoint record layouts are not a
//! kernel ABI and Rust eBPF cannot emit CO-RE relocations, so every field a
//! program reads (offset *and* size) is read from tracefs `format` and
//! patched into the programs' `.rodata`. A missing field or a size the
//! programs cannot read is an error naming the field, never a silently
//! wrong number. A new tracepoint field touches this file, its program and
//! its reader, not the loader.
use std::path::Path;

use xdr_common::{InetSockSetStateOffsets, TcpProbeOffsets, TcpRetransmitOffsets, OFFSET_ABSENT};

use super::{
    tracefs::{self, TracefsError},
    ProbeError,
};

/// A layout struct whose every field is read from `format` under its own
/// name, each with the size (bytes) the kernel program reads it as.
macro_rules! offsets {
    ($format:ident, $ty:ident: $($field:ident = $size:expr),* $(,)?) => {
        $ty {
            $($field: $format.offset(stringify!($field), $size)?,)*
        }
    };
}

/// The field offsets of the three TCP tracepoints on this kernel.
#[derive(Debug)]
pub(super) struct TcpLayouts {
    pub(super) probe: TcpProbeOffsets,
    pub(super) retransmit: TcpRetransmitOffsets,
    pub(super) set_state: InetSockSetStateOffsets,
}

impl TcpLayouts {
    pub(super) fn read(root: &Path) -> Result<Self, ProbeError> {
        let p = EventFormat::read(root, "tcp", "tcp_probe")?;
        let probe = offsets!(p, TcpProbeOffsets:
            sport = 2, dport = 2, family = 2, snd_nxt = 4, snd_una = 4, snd_cwnd = 4,
            ssthresh = 4, snd_wnd = 4, srtt = 4, rcv_wnd = 4, sock_cookie = 8, skaddr = 8);
        let r = EventFormat::read(root, "tcp", "tcp_retransmit_skb")?;
        let retransmit = TcpRetransmitOffsets {
            skaddr: r.offset("skaddr", 8)?,
            sport: r.offset("sport", 2)?,
            dport: r.offset("dport", 2)?,
            // Before Linux 6.13 the event had no `err` and fired only for
            // retransmits that went out.
            err: r.optional_offset("err", 4)?.unwrap_or(OFFSET_ABSENT),
        };
        let s = EventFormat::read(root, "sock", "inet_sock_set_state")?;
        let set_state = offsets!(s, InetSockSetStateOffsets:
            skaddr = 8, oldstate = 4, newstate = 4, sport = 2, dport = 2, protocol = 2);
        Ok(Self {
            probe,
            retransmit,
            set_state,
        })
    }
}

/// One event's tracefs `format`, read once for all its fields.
struct EventFormat {
    /// `category/name`.
    event: String,
    text: String,
}

impl EventFormat {
    fn read(root: &Path, category: &str, event: &str) -> Result<Self, TracefsError> {
        let path = root
            .join("events")
            .join(category)
            .join(event)
            .join("format");
        let event = format!("{category}/{event}");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Format {
            event: event.clone(),
            path,
            source,
        })?;
        Ok(Self { event, text })
    }

    /// Offset of `field`, which the program reads as `size` bytes.
    fn offset(&self, field: &str, size: u32) -> Result<u32, ProbeError> {
        self.optional_offset(field, size)?.ok_or_else(|| {
            TracefsError::NoField {
                event: self.event.clone(),
                field: field.to_owned(),
            }
            .into()
        })
    }

    /// Offset of `field` if the event has it; a size other than `size` is an
    /// error either way.
    fn optional_offset(&self, field: &str, size: u32) -> Result<Option<u32>, ProbeError> {
        let Some(offset) = tracefs::parse_field_offset(&self.text, field) else {
            return Ok(None);
        };
        match tracefs::parse_field_size(&self.text, field) {
            Some(s) if s == size => Ok(Some(offset)),
            found => Err(ProbeError::Layout(format!(
                "{} field `{field}` is {} bytes, the kernel program reads {size}",
                self.event,
                found.map_or_else(|| "an unknown number of".to_owned(), |s| s.to_string()),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP_PROBE_FORMAT: &str = "name: tcp_probe
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:__u16 sport;\toffset:64;\tsize:2;\tsigned:0;
\tfield:__u32 srtt;\toffset:100;\tsize:4;\tsigned:0;
\tfield:__u64 sock_cookie;\toffset:112;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:128;\tsize:8;\tsigned:0;
";

    fn format() -> EventFormat {
        EventFormat {
            event: "tcp/tcp_probe".to_owned(),
            text: TCP_PROBE_FORMAT.to_owned(),
        }
    }

    #[test]
    fn a_layout_reads_each_field_under_its_own_name() {
        struct Probe {
            sport: u32,
            skaddr: u32,
        }
        let read = || -> Result<Probe, ProbeError> {
            let f = format();
            Ok(offsets!(f, Probe: sport = 2, skaddr = 8))
        };
        let p = read().unwrap();
        assert_eq!((p.sport, p.skaddr), (64, 128));
    }

    #[test]
    fn offsets_come_with_the_size_checked() {
        let f = format();
        assert_eq!(f.offset("sport", 2).unwrap(), 64);
        assert_eq!(f.offset("skaddr", 8).unwrap(), 128);
        assert_eq!(f.optional_offset("err", 4).unwrap(), None);
    }

    #[test]
    fn a_field_of_another_size_is_a_layout_error_naming_it() {
        let e = format().offset("srtt", 8).unwrap_err().to_string();
        assert!(e.contains("tcp/tcp_probe field `srtt` is 4 bytes"), "{e}");
    }

    #[test]
    fn a_missing_field_is_an_error_naming_event_and_field() {
        let e = format().offset("snd_cwnd", 4).unwrap_err().to_string();
        assert!(
            e.contains("tcp/tcp_probe") && e.contains("`snd_cwnd`"),
            "{e}"
        );
    }
}
