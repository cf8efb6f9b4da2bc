//! Field offsets of `struct tcp_sock` from the kernel's BTF, for the raw
//! `tcp_probe` program.
//!
//! Why: the classic `tcp:tcp_probe` tracepoint costs the kernel a full
//! record per received segment of every TCP socket before any program runs
//! (see [`xdr_common::TcpSockOffsets`]); the BTF-typed raw tracepoint hands
//! the program the socket pointer instead, and the program reads the few
//! fields it needs itself. Rust eBPF cannot emit CO-RE relocations, so the
//! offsets come from `/sys/kernel/btf/vmlinux` here, at load time, checked
//! for size; any field missing or of another size is an error naming it,
//! and the caller falls back to the classic tracepoint.
use std::path::Path;

use btf_rs::{Btf, Type};
use xdr_common::TcpSockOffsets;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// What can go wrong reading offsets from BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read or parsed.
    #[error("cannot read kernel BTF at {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: btf_rs::Error,
    },
    /// A type or field is not where (or what) the program expects.
    #[error("kernel BTF: {0}")]
    Layout(String),
}

/// Where one field sits: bits from the start of the outer struct, its
/// bitfield width (if a bitfield) and its size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FieldPos {
    bit_offset: u32,
    bitfield_bits: Option<u32>,
    size: usize,
}

/// Reads the offsets the raw `tcp_probe` program needs from `path`.
pub fn tcp_sock_offsets(path: &Path) -> Result<TcpSockOffsets, BtfError> {
    let btf = Btf::from_file(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let bytes = |s: &str, p: &[&str], size: usize| -> Result<u32, BtfError> {
        let f = field(&btf, s, p)?;
        if f.bitfield_bits.is_some() || f.bit_offset % 8 != 0 {
            return Err(BtfError::Layout(format!(
                "{s}.{} is a bitfield",
                p.join(".")
            )));
        }
        if f.size != size {
            return Err(BtfError::Layout(format!(
                "{s}.{} is {} bytes, the program reads {size}",
                p.join("."),
                f.size
            )));
        }
        Ok(f.bit_offset / 8)
    };
    let (dport, num) = (
        bytes("sock", &["__sk_common", "skc_dport"], 2)?,
        bytes("sock", &["__sk_common", "skc_num"], 2)?,
    );
    if num != dport + 2 {
        return Err(BtfError::Layout(format!(
            "sock_common.skc_num at {num} does not follow skc_dport at {dport} \
             (the program reads both as one u32)"
        )));
    }
    let ca = field(&btf, "tcp_sock", &["inet_conn", "icsk_ca_state"])?;
    let ca_bits = ca.bitfield_bits.unwrap_or(8 * ca.size as u32);
    if ca_bits == 0 || ca_bits > 8 || ca.bit_offset % 8 + ca_bits > 8 {
        return Err(BtfError::Layout(format!(
            "inet_connection_sock.icsk_ca_state is {ca_bits} bits at bit {}: \
             not within one byte",
            ca.bit_offset
        )));
    }
    Ok(TcpSockOffsets {
        dport,
        num,
        family: bytes("sock", &["__sk_common", "skc_family"], 2)?,
        snd_nxt: bytes("tcp_sock", &["snd_nxt"], 4)?,
        snd_una: bytes("tcp_sock", &["snd_una"], 4)?,
        snd_cwnd: bytes("tcp_sock", &["snd_cwnd"], 4)?,
        snd_ssthresh: bytes("tcp_sock", &["snd_ssthresh"], 4)?,
        snd_wnd: bytes("tcp_sock", &["snd_wnd"], 4)?,
        srtt_us: bytes("tcp_sock", &["srtt_us"], 4)?,
        rcv_wnd: bytes("tcp_sock", &["rcv_wnd"], 4)?,
        ca_state_byte: ca.bit_offset / 8,
        ca_state_shift: ca.bit_offset % 8,
        ca_state_bits: ca_bits,
        protocol: bytes("sock", &["sk_protocol"], 2)?,
        // `struct sock` is the first member of `struct inet_sock`: the
        // offset is the same from `sk`.
        inet_sport: bytes("inet_sock", &["inet_sport"], 2)?,
        _pad: 0,
    })
}

/// The struct named `name` (the first with members, skipping forward
/// declarations).
fn named_struct(btf: &Btf, name: &str) -> Result<btf_rs::Struct, BtfError> {
    let types = btf
        .resolve_types_by_name(name)
        .map_err(|e| BtfError::Layout(format!("no type `{name}`: {e}")))?;
    types
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| BtfError::Layout(format!("no struct `{name}`")))
}

/// Follows `path` (member names, anonymous structs and unions searched
/// through) from struct `outer`.
fn field(btf: &Btf, outer: &str, path: &[&str]) -> Result<FieldPos, BtfError> {
    let missing = || BtfError::Layout(format!("struct {outer} has no field {}", path.join(".")));
    let mut current = named_struct(btf, outer)?;
    let mut base = 0u32;
    for (i, name) in path.iter().enumerate() {
        let (pos, ty) = find_member(btf, &current, name, 0)?.ok_or_else(missing)?;
        base += pos.bit_offset;
        if i + 1 == path.len() {
            return Ok(FieldPos {
                bit_offset: base,
                ..pos
            });
        }
        current = match ty {
            Type::Struct(s) | Type::Union(s) => s,
            _ => return Err(missing()),
        };
    }
    Err(missing())
}

/// Finds member `name` in `st`, looking inside anonymous members; returns
/// its position relative to `st` and its type with typedefs and
/// qualifiers peeled off.
fn find_member(
    btf: &Btf,
    st: &btf_rs::Struct,
    name: &str,
    depth: usize,
) -> Result<Option<(FieldPos, Type)>, BtfError> {
    if depth > 8 {
        return Ok(None);
    }
    let err = |e: btf_rs::Error| BtfError::Layout(format!("resolving `{name}`: {e}"));
    for m in &st.members {
        let member_name = btf.resolve_name(m).unwrap_or_default();
        let ty = peel(btf, btf.resolve_chained_type(m).map_err(err)?)?;
        if member_name == name {
            let size = type_size(&ty);
            return Ok(Some((
                FieldPos {
                    bit_offset: m.bit_offset(),
                    bitfield_bits: m.bitfield_size().filter(|&b| b != 0),
                    size,
                },
                ty,
            )));
        }
        if member_name.is_empty() {
            if let Type::Struct(inner) | Type::Union(inner) = &ty {
                if let Some((pos, t)) = find_member(btf, inner, name, depth + 1)? {
                    return Ok(Some((
                        FieldPos {
                            bit_offset: m.bit_offset() + pos.bit_offset,
                            ..pos
                        },
                        t,
                    )));
                }
            }
        }
    }
    Ok(None)
}

/// `ty` without typedefs, `const`, `volatile` and type tags.
fn peel(btf: &Btf, mut ty: Type) -> Result<Type, BtfError> {
    for _ in 0..16 {
        let next = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t),
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => btf.resolve_chained_type(t),
            Type::TypeTag(t) => btf.resolve_chained_type(t),
            _ => return Ok(ty),
        };
        ty = next.map_err(|e| BtfError::Layout(format!("resolving a typedef: {e}")))?;
    }
    Err(BtfError::Layout("typedef chain too long".to_owned()))
}

/// Size in bytes of a scalar or aggregate (0 for what has none).
fn type_size(ty: &Type) -> usize {
    match ty {
        Type::Int(i) => i.size(),
        Type::Struct(s) | Type::Union(s) => s.size(),
        Type::Enum(e) => e.size(),
        Type::Ptr(_) => 8,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The project's machines have BTF (DESIGN.md); the offsets must be
    /// plausible and the ports must be the `__portpair` halves.
    #[test]
    fn this_kernels_tcp_sock_offsets_are_read_and_sized() {
        let path = Path::new(VMLINUX_BTF);
        let o = tcp_sock_offsets(path).expect("offsets from BTF");
        println!("{o:?}");
        assert_eq!(o.num, o.dport + 2, "skc_dport then skc_num (__portpair)");
        assert!(o.snd_nxt > o.family && o.srtt_us > o.family);
        assert!(o.ca_state_bits >= 1 && o.ca_state_shift + o.ca_state_bits <= 8);
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = tcp_sock_offsets(Path::new("/nonexistent/vmlinux"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/vmlinux"), "{e}");
    }
}
