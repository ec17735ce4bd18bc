//! Builds `skiff-shim-monitor` (the `monitor` package) on its own, statically linked, for the
//! agent to embed: each running container keeps one monitor process, and a program linked
//! against the shared C library starts near 2 MiB resident (the loader and libc's pages alone)
//! where the static one needs about 1.2 MiB. Cargo cannot link one binary of a workspace
//! statically (`crt-static` is a target feature, for every crate of a build), so this script
//! runs a second Cargo for that one package, with its own target directory beside the outer
//! build's, in release with `+crt-static`.
//!
//! If that build fails (no static C library on this machine, say), the agent embeds nothing and
//! the shim monitors its container itself (a test fails under CI then: `monitor_program`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAM: &str = "skiff-shim-monitor";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let monitor = manifest_dir.join("monitor");
    println!("cargo:rerun-if-changed={}", monitor.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        monitor.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../Cargo.lock").display()
    );
    let dest = out_dir.join(PROGRAM);
    match build_static(&monitor, &out_dir) {
        Ok(program) => {
            std::fs::copy(&program, &dest).expect("copying the static monitor into OUT_DIR");
        }
        Err(why) => {
            println!(
                "cargo:warning=the static {PROGRAM} was not built ({why}); shims will monitor \
                 their containers themselves"
            );
            std::fs::write(&dest, b"").expect("writing an empty monitor into OUT_DIR");
        }
    }
}

/// Runs Cargo for the monitor package alone; the path of the program it built.
fn build_static(monitor: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let target = env::var("TARGET").map_err(|e| format!("TARGET: {e}"))?;
    if !target.contains("-linux-gnu") {
        return Err(format!(
            "static linking is set up for glibc targets only, not {target}"
        ));
    }
    // OUT_DIR is <target-dir>/[<triple>/]<profile>/build/node-agent-<hash>/out: the outer
    // target directory is shared by every profile, so the monitor is built once for all.
    let target_dir = out_dir
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").exists())
        .map(|d| d.join("static-monitor"))
        .unwrap_or_else(|| out_dir.join("static-monitor"));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--package",
            PROGRAM,
            "--bin",
            PROGRAM,
        ])
        .arg("--manifest-path")
        .arg(monitor.join("Cargo.toml"))
        .arg("--target")
        .arg(&target)
        .arg("--target-dir")
        .arg(&target_dir)
        // Only the static link; a lint run of the outer build (clippy) lints the package there.
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        // Small and quick to load: the monitor's code pages are what stays resident.
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("cargo failed: {}", tail.join(" | ")));
    }
    let program = target_dir.join(&target).join("release").join(PROGRAM);
    if !program.is_file() {
        return Err(format!("{} is missing after the build", program.display()));
    }
    Ok(program)
}
