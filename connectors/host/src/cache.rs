//! Compile a component once: an on-disk cache of precompiled artifacts.
//!
//! The cache key is the SHA-256 of the component's bytes together with wasmtime's
//! precompile-compatibility hash (wasmtime version and every engine setting that
//! affects code generation), so a new wasmtime or a changed engine configuration simply
//! misses. Each file holds the SHA-256 of the artifact followed by the artifact; a file
//! whose hash does not match (truncated, corrupted) is ignored and rewritten. Files are
//! written by this process, through a temporary file and a rename, into a directory it
//! creates with mode 0700; a cache directory that others can write to is not used.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Feeds `Hash` output into a SHA-256 (std's `DefaultHasher` is not stable across
/// Rust versions, and the key must be).
struct ShaHasher<'a>(&'a mut Sha256);

impl Hasher for ShaHasher<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn cache_key(engine: &Engine, component: &[u8]) -> String {
    let mut sha = Sha256::new();
    sha.update(Sha256::digest(component));
    engine
        .precompile_compatibility_hash()
        .hash(&mut ShaHasher(&mut sha));
    hex::encode(sha.finalize())
}

/// The component, from the cache when it holds a valid artifact, else compiled (and
/// then stored, best effort: a cache that cannot be written only costs time).
pub(crate) fn load(
    engine: &Engine,
    bytes: &[u8],
    cache_dir: Option<&Path>,
) -> wasmtime::Result<Component> {
    let Some(dir) = cache_dir else {
        return Component::new(engine, bytes);
    };
    if create_private_dir(dir).is_err() || !is_private(dir) {
        // Someone else could have written there: do not trust (or feed) that cache.
        return Component::new(engine, bytes);
    }
    let path = dir.join(format!("{}.cwasm", cache_key(engine, bytes)));
    if let Some(component) = read_cached(engine, &path) {
        return Ok(component);
    }
    let component = Component::new(engine, bytes)?;
    if let Ok(artifact) = component.serialize() {
        // Best effort; see above.
        let _ = write_cached(dir, &path, &artifact);
    }
    Ok(component)
}

fn read_cached(engine: &Engine, path: &Path) -> Option<Component> {
    let file = std::fs::read(path).ok()?;
    let (digest, artifact) = file.split_at_checked(32)?;
    if Sha256::digest(artifact).as_slice() != digest {
        return None;
    }
    deserialize_trusted(engine, artifact).ok()
}

/// Loads a precompiled artifact.
#[allow(unsafe_code)]
fn deserialize_trusted(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` is unsafe because wasmtime runs the machine code
    // in the artifact without verifying it, so the bytes must come from
    // `serialize`/`precompile_component` of a compatible wasmtime. These bytes do: the
    // only writer of the cache directory is `write_cached` below, which stores what
    // `Component::serialize` produced, renamed into place atomically, in a directory
    // that `load` has just checked is writable by its owner only (created with mode
    // 0700): only this user, who could equally replace the component itself, can write
    // there. `read_cached` has just checked the SHA-256 stored before the artifact, so
    // a truncated or corrupted file never gets here. Wasmtime then checks the
    // artifact's header (its version and engine settings) and refuses a mismatch,
    // which only makes us recompile. The bytes are an owned copy: the file changing
    // afterwards cannot affect them.
    unsafe { Component::deserialize(engine, artifact) }
}

fn write_cached(dir: &Path, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let tmp: PathBuf = dir.join(format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&Sha256::digest(artifact))?;
    file.write_all(artifact)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Whether only its owner can write to `dir` (on Unix: no group or other write bit).
fn is_private(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o022 == 0)
    }
    #[cfg(not(unix))]
    {
        dir.is_dir()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn key_depends_on_bytes() {
        let engine = Engine::default();
        assert_ne!(cache_key(&engine, b"a"), cache_key(&engine, b"b"));
        assert_eq!(cache_key(&engine, b"a"), cache_key(&engine, b"a"));
    }
}
