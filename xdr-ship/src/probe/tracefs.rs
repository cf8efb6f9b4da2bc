//! tracefs: where tracepoints are attached from, and where their record
//! layouts are published.
//!
//! Why this exists: tracepoint record layouts are not a kernel ABI, and Rust
//! eBPF cannot emit CO-RE relocations, so the offset of every field a program
//! reads is taken from `events/<category>/<event>/format` at load time. And a
//! fresh machine may not have tracefs mounted at all: as root we mount it
//! ourselves; otherwise we say exactly what to run.
use std::{
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

/// Where tracefs lives on current kernels.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Where it lives when only debugfs is mounted (older setups).
pub const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// What can go wrong finding tracefs or reading a record layout.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// Neither location has tracefs and mounting it failed.
    #[error(
        "tracefs is not mounted and mounting it failed ({source}); \
         run as root: mount -t tracefs tracefs {TRACEFS}"
    )]
    NotMounted {
        /// Why `mount(2)` failed.
        source: io::Error,
    },
    /// tracefs is there but this user may not look inside (it is mode 0700).
    #[error(
        "tracefs at {path} is not readable by this user; \
         eBPF needs root, or CAP_BPF + CAP_PERFMON"
    )]
    NoAccess {
        /// The tracefs root.
        path: PathBuf,
    },
    /// The format file of an event could not be read.
    #[error("cannot read the layout of tracepoint {event} at {path}: {source}")]
    Format {
        /// `category/name`.
        event: String,
        /// The `format` file.
        path: PathBuf,
        /// The read error.
        source: io::Error,
    },
    /// The format file has no such field.
    #[error("tracepoint {event} has no field `{field}` in its format")]
    NoField {
        /// `category/name`.
        event: String,
        /// The field looked for.
        field: String,
    },
}

/// Returns the tracefs root, mounting tracefs at [`TRACEFS`] if it is not
/// mounted anywhere and we are allowed to.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        match std::fs::metadata(Path::new(root).join("events")) {
            Ok(m) if m.is_dir() => return Ok(PathBuf::from(root)),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(TracefsError::NoAccess { path: root.into() })
            }
            _ => {}
        }
    }
    mount_tracefs(Path::new(TRACEFS)).map_err(|source| TracefsError::NotMounted { source })?;
    tracing::info!("mounted tracefs at {TRACEFS}");
    Ok(PathBuf::from(TRACEFS))
}

fn mount_tracefs(target: &Path) -> io::Result<()> {
    let to_c =
        |s: &str| CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
    let source = to_c("tracefs")?;
    let fstype = to_c("tracefs")?;
    let target = to_c(&target.to_string_lossy())?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the
    // call; a null `data` is allowed for tracefs.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The byte offset of `field` in the records of `category:event`.
pub fn field_offset(
    root: &Path,
    category: &str,
    event: &str,
    field: &str,
) -> Result<u32, TracefsError> {
    let name = format!("{category}/{event}");
    let path = root
        .join("events")
        .join(category)
        .join(event)
        .join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Format {
        event: name.clone(),
        path: path.clone(),
        source,
    })?;
    parse_field_offset(&text, field).ok_or(TracefsError::NoField {
        event: name,
        field: field.to_owned(),
    })
}

/// Finds `offset:N;` on the line declaring `field` in a tracefs `format` text.
///
/// A declaration looks like `\tfield:unsigned int vec;\toffset:8;\tsize:4;\tsigned:0;`;
/// the field name is the last word before `;` (arrays: before `[`).
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    parse_field_attr(format, field, "offset:")
}

/// Finds `size:N;` on the line declaring `field` (same rules as
/// [`parse_field_offset`]).
pub fn parse_field_size(format: &str, field: &str) -> Option<u32> {
    parse_field_attr(format, field, "size:")
}

fn parse_field_attr(format: &str, field: &str, attr: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let name = decl.rsplit(' ').next()?.split('[').next()?;
        if name != field {
            return None;
        }
        parts.find_map(|p| p.strip_prefix(attr)?.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOFTIRQ_ENTRY_FORMAT: &str = "name: softirq_entry
ID: 142
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:unsigned int vec;\toffset:8;\tsize:4;\tsigned:0;

print fmt: \"vec=%u [action=%s]\", REC->vec, __print_symbolic(REC->vec, { 0, \"HI\" })
";

    #[test]
    fn finds_the_offset_of_a_named_field() {
        assert_eq!(parse_field_offset(SOFTIRQ_ENTRY_FORMAT, "vec"), Some(8));
        assert_eq!(
            parse_field_offset(SOFTIRQ_ENTRY_FORMAT, "common_pid"),
            Some(4)
        );
    }

    #[test]
    fn finds_the_size_of_a_named_field() {
        assert_eq!(parse_field_size(SOFTIRQ_ENTRY_FORMAT, "vec"), Some(4));
        assert_eq!(
            parse_field_size(SOFTIRQ_ENTRY_FORMAT, "common_type"),
            Some(2)
        );
        assert_eq!(parse_field_size(SOFTIRQ_ENTRY_FORMAT, "cwnd"), None);
    }

    #[test]
    fn a_missing_field_has_no_offset() {
        assert_eq!(parse_field_offset(SOFTIRQ_ENTRY_FORMAT, "cwnd"), None);
        // `vec` must not match a field that merely ends in "vec".
        let other = "\tfield:unsigned int prevec;\toffset:12;\tsize:4;\tsigned:0;";
        assert_eq!(parse_field_offset(other, "vec"), None);
    }

    #[test]
    fn array_fields_are_found_by_their_name() {
        let fmt = "\tfield:__u8 saddr[28];\toffset:16;\tsize:28;\tsigned:0;";
        assert_eq!(parse_field_offset(fmt, "saddr"), Some(16));
    }
}
