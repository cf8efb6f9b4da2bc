//! `cargo xtask setup`: everything a fresh machine lacks, and nothing else.
//!
//! Each item is checked first and installed only when missing, so a second
//! run takes seconds. bpf-linker is built against the Rust toolchain's own
//! LLVM (DESIGN.md: no system LLVM needed): a prefix folder holds symlinks
//! to the toolchain's `libLLVM` under the names llvm-sys looks for. The
//! installed binary keeps that folder as its rpath, so the folder lives in
//! `CARGO_HOME` beside it, named after the LLVM build it points at; when the
//! toolchain changes, the old bpf-linker stops running and is rebuilt.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{is_root, run as run_cmd};

/// Debian packages the tests and the demo use.
const DEBIAN_PACKAGES: &[&str] = &[
    // `setpriv` runs the CLI as an unprivileged user in the fallback test.
    "util-linux",
    // `ip netns`, `ss`: the WAN lab and its tests.
    "iproute2",
    // The link's own goodput, measured beside xdr-ship's.
    "iperf3",
    // Runs the TUI in a real terminal in its test.
    "tmux",
    // `nft`: the busy firewall of the induced-interrupts test.
    "nftables",
    // `fusermount3`: lossyfs (the power-cut tests' filesystem) mounts with
    // it when a direct mount(2) is refused.
    "fuse3",
    // `systemd-analyze verify`: the package test checks the units with it.
    "systemd",
    // `strip`: `cargo xtask dist` strips the binary it packages.
    "binutils",
    // `redis-server`, `redis-cli`, `redis-benchmark`: the real peers of the
    // RESP front door and of the Redis destination's tests.
    "redis-server",
    "redis-tools",
    // The sender-buffer verdict test's sender (a socket with a small
    // SO_SNDBUF, which iperf3 -w cannot give one end alone).
    "python3",
    // `prometheus` and `promtool`: a real server scrapes `ship --metrics`
    // and `recv --metrics` in its test, and checks the shipped rules.
    "prometheus",
];

/// Rust components the kernel build and `lint` need.
const RUST_COMPONENTS: &[&str] = &["rust-src", "rustfmt", "clippy"];

/// The bpf-linker release line built here (0.13 supports LLVM 21–23).
const BPF_LINKER_VERSION: &str = "~0.13";

/// Verbose: say what is there and what was done.
pub fn run_setup(verbose: bool) -> Result<()> {
    let say = |msg: String| {
        if verbose {
            println!("{msg}");
        }
    };
    let missing = missing_components()?;
    if missing.is_empty() {
        say(format!(
            "rust components: present ({})",
            RUST_COMPONENTS.join(", ")
        ));
    } else {
        println!("rust components: adding {}", missing.join(", "));
        run_cmd(
            Command::new("rustup")
                .args(["component", "add"])
                .args(&missing),
        )?;
    }

    match bpf_linker_version() {
        Some(v) => say(format!("bpf-linker: present ({v})")),
        None => {
            println!("bpf-linker: building it against the toolchain's own LLVM (about a minute)");
            install_bpf_linker()?;
            let v = bpf_linker_version()
                .context("bpf-linker was installed but does not run; see the build output above")?;
            println!("bpf-linker: installed ({v})");
        }
    }

    if verbose {
        ensure_cargo_fuzz()?;
    }

    let missing = missing_debian_packages();
    if missing.is_empty() {
        say(format!(
            "debian packages: present ({})",
            DEBIAN_PACKAGES.join(", ")
        ));
    } else {
        install_debian_packages(&missing)?;
    }
    Ok(())
}

/// `cargo xtask setup`.
pub fn setup() -> Result<()> {
    run_setup(true)?;
    println!("setup: done");
    Ok(())
}

/// Called before builds and tests: silent when nothing is missing.
pub fn ensure() -> Result<()> {
    run_setup(false)
}

fn missing_components() -> Result<Vec<&'static str>> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
        .context("running `rustup component list` (is rustup installed?)")?;
    let installed = String::from_utf8_lossy(&out.stdout);
    Ok(RUST_COMPONENTS
        .iter()
        .copied()
        .filter(|c| {
            !installed
                .lines()
                .any(|l| l.starts_with(&format!("{c}-")) || l == *c)
        })
        .collect())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"))
}

/// The version bpf-linker reports, if it runs (on PATH or in `CARGO_HOME/bin`).
fn bpf_linker_version() -> Option<String> {
    let candidates = [
        PathBuf::from("bpf-linker"),
        cargo_home().join("bin").join("bpf-linker"),
    ];
    candidates.iter().find_map(|bin| {
        let out = Command::new(bin)
            .arg("--version")
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    })
}

/// The toolchain's `libLLVM.so.<major>.<minor>-rust-…` and its major version.
fn toolchain_llvm() -> Result<(PathBuf, u32)> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("running `rustc --print sysroot`")?;
    let lib = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("lib");
    let entries = std::fs::read_dir(&lib).with_context(|| format!("listing {}", lib.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(version) = name.strip_prefix("libLLVM.so.") {
            let major = version
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .with_context(|| format!("cannot read the LLVM version from {name}"))?;
            return Ok((entry.path(), major));
        }
    }
    bail!(
        "no libLLVM.so.* in {}: this toolchain does not ship its LLVM as a shared library",
        lib.display()
    )
}

fn install_bpf_linker() -> Result<()> {
    let (llvm_so, major) = toolchain_llvm()?;
    let soname = llvm_so
        .file_name()
        .context("libLLVM path has a file name")?
        .to_owned();
    let prefix = cargo_home()
        .join("xdr-ship-llvm")
        .join(soname.to_string_lossy().replace("libLLVM.so.", ""));
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in [Path::new("libLLVM.so").as_os_str(), soname.as_os_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm_so, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), llvm_so.display()))?;
    }
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.env("LLVM_PREFIX", &prefix)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{major}"));
    run_cmd(&mut cmd).context("building bpf-linker")
}

/// cargo-fuzz (for `cargo xtask fuzz` and the bounded fuzz run of `test`),
/// installed when `cargo fuzz` does not run.
pub fn ensure_cargo_fuzz() -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let present = Command::new(&cargo)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    println!("cargo-fuzz: installing it (a minute or two)");
    run_cmd(Command::new(&cargo).args(["install", "cargo-fuzz", "--locked"]))
        .context("installing cargo-fuzz")
}

/// Installs `packages` if any is missing (for commands that need more than
/// the tests, like `bench`).
pub fn ensure_packages(packages: &[&'static str]) -> Result<()> {
    let missing = missing_of(packages);
    if missing.is_empty() {
        Ok(())
    } else {
        install_debian_packages(&missing)
    }
}

fn missing_debian_packages() -> Vec<&'static str> {
    missing_of(DEBIAN_PACKAGES)
}

fn missing_of(packages: &[&'static str]) -> Vec<&'static str> {
    packages
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .stderr(Stdio::null())
                .output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

fn install_debian_packages(missing: &[&str]) -> Result<()> {
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!(
            "missing packages {} and no apt-get here: install their equivalents by hand",
            missing.join(", ")
        );
    }
    println!("debian packages: installing {}", missing.join(", "));
    let apt = |args: &[&str]| {
        let mut cmd = if is_root() {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        cmd
    };
    run_cmd(&mut apt(&["update", "-q"]))?;
    run_cmd(apt(&["install", "-y", "-q", "--no-install-recommends"]).args(missing))
}
