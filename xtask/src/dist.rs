//! `cargo xtask dist`: the Debian package of a node (`target/dist/*.deb`).
//!
//! What it holds: `/usr/bin/xdr-ship` (release build, kernel programs
//! embedded), the systemd units of the destination and the source node
//! (`packaging/systemd/`), their example configs under `/etc/xdr-ship/`
//! (conffiles: an upgrade keeps the operator's edits), the `xdr-ship` system
//! user (postinst), shell completions for bash, zsh and fish and the man
//! pages, both written by the packaged binary itself (`xdr-ship generate`),
//! so they always match its flags.
//!
//! Why the tree is assembled here and built with Debian's own `dpkg-deb
//! --build`, not with cargo-deb: the package is a few files and three
//! maintainer scripts; `dpkg-deb` is on every Debian machine already, while
//! cargo-deb would be one more tool to build and keep before the first
//! package. `package` is also what `cargo xtask test` calls to give the
//! package test (`tests/tests/dist.rs`) a package of the binary it tests.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{root, run};

/// `cargo xtask dist`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// Package this binary instead of building the release one (it must
    /// embed the kernel programs: `cargo xtask build`).
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Directory the `.deb` is written to.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Compress with gzip -1 instead of xz: seconds instead of a minute,
    /// for a package that is unpacked at once (the package test's).
    #[arg(long)]
    fast: bool,
}

/// How the package's data is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// xz: the smallest package, what `dist` ships.
    Small,
    /// gzip -1: the quickest to build.
    Fast,
}

impl Compression {
    fn dpkg_deb_args(self) -> [&'static str; 2] {
        match self {
            Self::Small => ["-Zxz", "-z6"],
            Self::Fast => ["-Zgzip", "-z1"],
        }
    }
}

/// The configs shipped under `/etc/xdr-ship/` (conffiles).
const CONFIGS: [&str; 2] = ["recv.toml", "source.toml"];

/// The systemd units shipped.
pub const UNITS: [&str; 2] = ["xdr-ship-recv.service", "xdr-ship-source.service"];

/// The maintainer scripts shipped (from `packaging/debian/`).
const SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];

/// `cargo xtask dist`.
pub fn dist(args: Args) -> Result<()> {
    let bin = match args.bin {
        Some(bin) => bin,
        None => crate::build(true)?,
    };
    let out = args
        .out
        .unwrap_or_else(|| root().join("target").join("dist"));
    let compression = if args.fast {
        Compression::Fast
    } else {
        Compression::Small
    };
    let deb = package(&bin, &out, compression)?;
    println!("built {}", deb.display());
    Ok(())
}

/// Packages `bin` into `out_dir`; returns the `.deb`'s path.
pub fn package(bin: &Path, out_dir: &Path, compression: Compression) -> Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let arch = dpkg_architecture()?;
    let tree = out_dir.join(format!("xdr-ship_{version}_{arch}"));
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    let packaging = root().join("packaging");

    let usr_bin = tree.join("usr/bin/xdr-ship");
    install(bin, &usr_bin, 0o755)?;
    // Debian strips what it ships; the debug info is for the build tree.
    run(Command::new("strip").arg("--strip-debug").arg(&usr_bin))?;

    for unit in UNITS {
        install(
            &packaging.join("systemd").join(unit),
            &tree.join("usr/lib/systemd/system").join(unit),
            0o644,
        )?;
    }
    for config in CONFIGS {
        install(
            &packaging.join("config").join(config),
            &tree.join("etc/xdr-ship").join(config),
            0o644,
        )?;
    }
    generated_docs(&usr_bin, &tree)?;
    control_files(&tree, &packaging, version, &arch)?;

    let deb = out_dir.join(format!("xdr-ship_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .arg("--root-owner-group")
        .args(compression.dpkg_deb_args())
        .arg("--build")
        .arg(&tree)
        .arg(&deb))
    .context("building the package")?;
    fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    Ok(deb)
}

/// Completions and man pages, written by the packaged binary itself.
fn generated_docs(bin: &Path, tree: &Path) -> Result<()> {
    let scratch = tree.join("generated");
    for what in ["completions", "man"] {
        run(Command::new(bin)
            .args(["generate", what])
            .arg(scratch.join(what)))
        .with_context(|| format!("generating the {what}"))?;
    }
    let completions = scratch.join("completions");
    for (from, to) in [
        (
            "xdr-ship.bash",
            "usr/share/bash-completion/completions/xdr-ship",
        ),
        ("_xdr-ship", "usr/share/zsh/vendor-completions/_xdr-ship"),
        (
            "xdr-ship.fish",
            "usr/share/fish/vendor_completions.d/xdr-ship.fish",
        ),
    ] {
        install(&completions.join(from), &tree.join(to), 0o644)?;
    }
    let man_dir = tree.join("usr/share/man/man1");
    let mut pages = 0;
    for entry in fs::read_dir(scratch.join("man")).context("listing the man pages")? {
        let page = entry?.path();
        let name = page.file_name().context("a man page has a name")?;
        let dest = man_dir.join(name);
        install(&page, &dest, 0o644)?;
        // Debian policy: pages compressed with gzip -9n (no timestamp).
        run(Command::new("gzip").args(["-9n", "--force"]).arg(&dest))?;
        pages += 1;
    }
    if pages == 0 {
        bail!("`xdr-ship generate man` wrote no page");
    }
    fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))
}

/// `DEBIAN/`: control, conffiles, the maintainer scripts; and the
/// copyright file Debian expects of every package.
fn control_files(tree: &Path, packaging: &Path, version: &str, arch: &str) -> Result<()> {
    let debian = tree.join("DEBIAN");
    for script in SCRIPTS {
        install(
            &packaging.join("debian").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    let conffiles: String = CONFIGS
        .iter()
        .map(|c| format!("/etc/xdr-ship/{c}\n"))
        .collect();
    write(&debian.join("conffiles"), &conffiles)?;
    write(
        &tree.join("usr/share/doc/xdr-ship/copyright"),
        &format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
             Upstream-Name: xdr-ship\n\n\
             Files: *\nLicense: {}\n",
            env!("CARGO_PKG_LICENSE")
        ),
    )?;
    let installed_kib = tree_size_bytes(tree)?.div_ceil(1024);
    write(
        &debian.join("control"),
        &format!(
            "Package: xdr-ship\n\
             Version: {version}\n\
             Architecture: {arch}\n\
             Maintainer: xdr-ship developers <xdr-ship@localhost>\n\
             Installed-Size: {installed_kib}\n\
             Depends: libc6, passwd\n\
             Section: net\n\
             Priority: optional\n\
             Description: pipelined record shipping across long, fat links\n \
             A destination (xdr-ship-recv.service) and a source node\n \
             (xdr-ship-source.service) that ships a durable log to it with many\n \
             writes in flight, and eBPF probes that say what limits the link.\n"
        ),
    )
}

/// Copies `from` to `to` (parents created) with `mode`.
fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod {}", path.display()))
}

fn tree_size_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            tree_size_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// This machine's Debian architecture (`amd64`, `arm64`, …).
fn dpkg_architecture() -> Result<String> {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("running `dpkg --print-architecture` (is this Debian?)")?;
    if !out.status.success() {
        bail!("`dpkg --print-architecture` failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
