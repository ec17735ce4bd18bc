//! Where the binaries under test are: in the running executable's target profile directory
//! (`target/<profile>/`, the parent of a test's `deps/`), built by `cargo build --bins`, which
//! `tests/run` does before the tests.

use std::path::PathBuf;

/// Path of a workspace binary in the same target profile as the running test or benchmark.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let mut dir = exe
        .parent()
        .expect("executable has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` (with --release for benchmarks) first",
        path.display()
    );
    path
}
