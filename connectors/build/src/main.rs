//! `steward-connector-build`: builds the first-party connectors from source into the
//! components Steward loads.
//!
//! 1. Runs Debian's `/usr/bin/cargo build --release` in `connectors/guests` (the
//!    guests' workspace; its `.cargo/config.toml` selects `wasm32-unknown-unknown`,
//!    Debian's `rustc` and `build-std`), with one target directory for all guests.
//! 2. Encodes each guest's core module as a component of `steward:connector`
//!    (`wit-component`, validated; the world travels inside the module).
//! 3. Writes `connectors/dist/NAME.wasm`, or with `--check` compares the fresh
//!    components with the committed ones and fails on any difference.
//!
//! ```text
//! cargo run -p steward-connector-build [-- --check] [--target-dir DIR]
//! ```
//!
//! Needs Debian's wasm toolchain (`apt-get install rustc-web cargo-web rust-web-src
//! rust-web-llvm lld-22`); see connectors/README.md.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Debian's cargo and rustc (rustc-web): the rustup ones have no wasm std here.
const CARGO: &str = "/usr/bin/cargo";
const RUSTC: &str = "/usr/bin/rustc";
/// The standard library's sources (rust-web-src), which `build-std` compiles.
const STD_SOURCES: &str = "/usr/lib/rustlib/src/rust/library/std";
/// The linker for wasm32 (lld-22).
const LINKER: &str = "/usr/bin/rust-lld";
const INSTALL: &str = "install: apt-get install -y rustc-web cargo-web rust-web-src rust-web-llvm lld-22 \
     (see connectors/README.md)";
const TARGET: &str = "wasm32-unknown-unknown";

/// Variables of the calling environment that would change what the guests' build
/// does (a rustup `cargo run` or a CI job may set them).
const CLEARED_ENV: &[&str] = &[
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_RUSTC",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_TARGET_DIR",
    "CARGO_PROFILE_RELEASE_DEBUG",
    "CARGO_PROFILE_RELEASE_LTO",
    "CARGO_PROFILE_RELEASE_OPT_LEVEL",
    "CARGO_PROFILE_RELEASE_STRIP",
    "CARGO_PROFILE_RELEASE_CODEGEN_UNITS",
    "RUSTUP_TOOLCHAIN",
];

struct Options {
    check: bool,
    target_dir: Option<PathBuf>,
}

fn parse_args() -> Result<Options> {
    let mut options = Options {
        check: false,
        target_dir: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => options.check = true,
            "--target-dir" => {
                let dir = args.next().context("--target-dir needs a directory")?;
                options.target_dir = Some(PathBuf::from(dir));
            }
            "-h" | "--help" => {
                println!(
                    "usage: steward-connector-build [--check] [--target-dir DIR]\n\n\
                     Builds connectors/guests with Debian's wasm toolchain and writes the\n\
                     components to connectors/dist/NAME.wasm. --check compares them with the\n\
                     committed ones instead (exit 1 on a difference)."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository's root (this crate is `connectors/build`).
fn repo_root() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize()
        .with_context(|| format!("finding the repository at {}", root.display()))
}

/// Stops with the install command when a part of the wasm toolchain is missing.
fn check_toolchain() -> Result<()> {
    for (path, what) in [
        (CARGO, "Debian's cargo (cargo-web)"),
        (RUSTC, "Debian's rustc (rustc-web)"),
        (STD_SOURCES, "the standard library's sources (rust-web-src)"),
        (LINKER, "the wasm linker rust-lld (lld-22)"),
    ] {
        if !Path::new(path).exists() {
            bail!("the wasm toolchain lacks {what} ({path} not found); {INSTALL}");
        }
    }
    Ok(())
}

/// The connector crates: the folders of the guests' workspace but `sdk`, sorted.
fn connectors(guests: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(guests).with_context(|| format!("reading {}", guests.display()))?
    {
        let entry = entry.with_context(|| format!("reading {}", guests.display()))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name == "sdk" || !path.join("Cargo.toml").is_file() || !path.join("src/lib.rs").is_file()
        {
            continue;
        }
        names.push(name.to_owned());
    }
    names.sort();
    if names.is_empty() {
        bail!("no connector crates in {}", guests.display());
    }
    Ok(names)
}

/// Runs the guests' build; the directory holding the core modules.
fn build_guests(guests: &Path, target_dir: &Path) -> Result<PathBuf> {
    let started = Instant::now();
    let mut cmd = Command::new(CARGO);
    cmd.args(["build", "--release", "--locked"])
        .current_dir(guests);
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_TARGET_DIR", target_dir);
    eprintln!(
        "==> {CARGO} build --release --locked (in {}, target dir {})",
        guests.display(),
        target_dir.display()
    );
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {CARGO}; {INSTALL}"))?;
    if !status.success() {
        bail!(
            "the guests' build failed ({status}); if the error is about a missing `std` or \
             target, {INSTALL}"
        );
    }
    eprintln!("    built in {:.1} s", started.elapsed().as_secs_f64());
    Ok(target_dir.join(TARGET).join("release"))
}

/// The component for a core module (world metadata embedded by `wit-bindgen`).
fn componentize(module: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .module(module)?
        .validate(true)
        .encode()
}

fn run() -> Result<bool> {
    let options = parse_args()?;
    check_toolchain()?;
    let root = repo_root()?;
    let guests = root.join("connectors/guests");
    let dist = root.join("connectors/dist");
    let target_dir = match options.target_dir {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => std::env::current_dir()
            .context("reading the current directory")?
            .join(dir),
        None => guests.join("target"),
    };
    let names = connectors(&guests)?;
    let out = build_guests(&guests, &target_dir)?;
    std::fs::create_dir_all(&dist).with_context(|| format!("creating {}", dist.display()))?;

    let mut same = true;
    for name in &names {
        let module_path = out.join(format!("steward_connector_{name}.wasm"));
        let module = std::fs::read(&module_path)
            .with_context(|| format!("reading the core module {}", module_path.display()))?;
        let component =
            componentize(&module).with_context(|| format!("encoding the `{name}` component"))?;
        let dest = dist.join(format!("{name}.wasm"));
        let committed = match std::fs::read(&dest) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", dest.display())),
        };
        let shown = format!("connectors/dist/{name}.wasm");
        match (&committed, options.check) {
            (Some(old), _) if *old == component => {
                println!("{shown}: up to date ({} bytes)", component.len());
            }
            (None, true) => {
                println!("{shown}: MISSING (fresh build: {} bytes)", component.len());
                same = false;
            }
            (Some(old), true) => {
                let first = old.iter().zip(&component).position(|(a, b)| a != b);
                println!(
                    "{shown}: DIFFERS (committed {} bytes, fresh build {} bytes{})",
                    old.len(),
                    component.len(),
                    first.map_or(String::new(), |at| format!(
                        ", first difference at byte {at}"
                    ))
                );
                same = false;
            }
            (_, false) => {
                let tmp = dist.join(format!(".{name}.wasm.tmp"));
                std::fs::write(&tmp, &component)
                    .with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, &dest)
                    .with_context(|| format!("writing {}", dest.display()))?;
                println!(
                    "{shown}: written ({} bytes{})",
                    component.len(),
                    committed.map_or(", new".to_owned(), |old| format!(", was {}", old.len()))
                );
            }
        }
    }
    if !same {
        eprintln!(
            "the committed components differ from the sources: run \
             `cargo run -p steward-connector-build` and commit connectors/dist"
        );
    }
    Ok(same)
}
