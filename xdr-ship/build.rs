//! Embeds the kernel object built by `cargo xtask build`.
//!
//! Why an environment variable and not aya-build: a plain `cargo build` or
//! `cargo clippy` of the user-space crates must work on a machine without
//! bpf-linker (an editor, a quick check). Without `XDR_EBPF_OBJ` we embed an
//! empty placeholder and the binary says at run time that it was built
//! without kernel programs, and how to build them.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=XDR_EBPF_OBJ");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out_dir.join("xdr-ebpf.o");
    match env::var_os("XDR_EBPF_OBJ") {
        Some(src) => {
            let src = PathBuf::from(src);
            println!("cargo:rerun-if-changed={}", src.display());
            fs::copy(&src, &dest).unwrap_or_else(|e| {
                panic!(
                    "XDR_EBPF_OBJ={}: cannot copy the kernel object: {e}",
                    src.display()
                )
            });
        }
        None => fs::write(&dest, b"").expect("write the empty placeholder object"),
    }
}
