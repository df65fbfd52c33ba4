//! Builds the WAT fixtures into components of `steward:connector@0.1.0`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use wit_component::{ComponentEncoder, StringEncoding};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The component for `tests/fixtures/NAME.wat`: the prelude and the fixture in one core
/// module, the world embedded, encoded as a component.
pub fn component_bytes(name: &str) -> Vec<u8> {
    let dir = manifest_dir().join("tests/fixtures");
    let prelude = std::fs::read_to_string(dir.join("prelude.wat")).unwrap();
    let body = std::fs::read_to_string(dir.join(format!("{name}.wat"))).unwrap();
    let mut module = wat::parse_str(format!("(module\n{prelude}\n{body}\n)"))
        .unwrap_or_else(|e| panic!("{name}.wat: {e}"));
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_path(manifest_dir().join("../wit")).unwrap();
    let world = resolve.select_world(&[pkg], Some("connector")).unwrap();
    wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
        .unwrap();
    ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap_or_else(|e| panic!("{name}.wat: {e:#}"))
}

/// The path of the component for `tests/fixtures/NAME.wat`, built once per test run.
pub fn fixture(name: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let path = dir.path().join(format!("{name}.wasm"));
    if !path.exists() {
        let tmp = dir
            .path()
            .join(format!("{name}.{:?}.tmp", std::thread::current().id()));
        std::fs::write(&tmp, component_bytes(name)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}
