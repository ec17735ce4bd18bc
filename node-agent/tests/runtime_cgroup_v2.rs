//! The runtime's container tests on a host whose cgroups are pure v2, from a host that has v1
//! (or hybrid) cgroups: the test binaries of `runtime_containers`, `runtime_lifecycle`,
//! `runtime_limits` and (in a VM of its own, as it takes as long as the rest) `runtime_exec`,
//! built beside this one, run inside a VM booted by `tests/vm/run` (Debian's kernel with cgroup
//! v2 alone), which sees this build's target directory at the same path. On a pure v2 host
//! those tests already run as they are, so these have nothing to add.

mod runtime_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context};
use runtime_support::root_or_skip;

/// Tests left out in the VM: a benchmark, meaningless under emulation.
const SKIP: [&str; 1] = ["time_to_run_true"];

/// How long a VM may take, boot included (the tests run one at a time under emulation; about
/// 1.5 and 2.5 minutes on an idle 2-core machine).
const VM_TIMEOUT_SECS: u64 = 1200;

/// The newest test binary cargo built for the test target `name` in `deps`
/// (`<name>-<16 hex digits>`, executable).
fn newest_test_binary(deps: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let mut best: Option<(SystemTime, PathBuf)> = None;
    let entries = std::fs::read_dir(deps).with_context(|| format!("reading {deps:?}"))?;
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(hash) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(name))
            .and_then(|n| n.strip_prefix('-'))
        else {
            continue;
        };
        if hash.len() != 16 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let meta = entry.metadata()?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        let modified = meta.modified()?;
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, entry.path()));
        }
    }
    match best {
        Some((_, path)) => Ok(path),
        None => bail!(
            "no test binary {name}-<hash> in {deps:?}: build the node agent's tests together \
             (cargo nextest run -p node-agent, or cargo test -p node-agent --no-run)"
        ),
    }
}

/// The shell script the VM runs: proof that its cgroups are v2 alone, then each binary.
fn script(binaries: &[PathBuf]) -> String {
    let skips: String = SKIP.iter().map(|s| format!(" --skip {s}")).collect();
    let mut s = String::from(
        "set -u\n\
         fs=$(stat -fc %T /sys/fs/cgroup)\n\
         echo \"/sys/fs/cgroup: $fs; enabled for children: $(cat /sys/fs/cgroup/cgroup.subtree_control)\"\n\
         if [ \"$fs\" != cgroup2fs ] || awk '$3 == \"cgroup\" { found = 1 } END { exit !found }' /proc/mounts; then\n\
           echo 'not a pure cgroup v2 host'; exit 90\n\
         fi\n\
         rc=0\n",
    );
    for b in binaries {
        let b = b.display();
        s.push_str(&format!(
            "echo '== {b}'\n\
             CI=true RUST_BACKTRACE=1 '{b}' --test-threads=1{skips} || rc=1\n"
        ));
    }
    s.push_str("exit $rc\n");
    s
}

/// Runs the test binaries `tests` (target names) in a fresh cgroup v2 VM; all must pass.
fn run_in_vm(test: &str, tests: &[&str]) -> anyhow::Result<()> {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        eprintln!(
            "this host's cgroups are pure v2: the runtime tests already run on v2 here, \
             no VM needed"
        );
        return Ok(());
    }
    if !root_or_skip(test) {
        return Ok(());
    }
    let exe = std::env::current_exe().context("this test's binary")?;
    let deps = exe.parent().context("the deps directory")?;
    let profile = deps.parent().context("the target profile directory")?;
    let shim = Path::new(env!("CARGO_BIN_EXE_skiff-shim"));
    if !shim.starts_with(profile) {
        bail!("skiff-shim ({shim:?}) is not under {profile:?}, the directory the VM sees");
    }
    let binaries = tests
        .iter()
        .map(|name| newest_test_binary(deps, name))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vm/run");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&runner)
        .arg("--share-ro")
        .arg(profile)
        .args(["--timeout", &VM_TIMEOUT_SECS.to_string(), "--"])
        .args(["bash", "-c", &script(&binaries)])
        .output()
        .with_context(|| format!("running {runner:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    println!(
        "the VM ran {} test binaries in {:.0?} ({})",
        binaries.len(),
        started.elapsed(),
        out.status
    );
    if !out.status.success() {
        bail!("the runtime tests failed on cgroup v2 ({})", out.status);
    }
    let passed = stdout.matches("test result: ok.").count();
    if passed != binaries.len() {
        bail!(
            "{passed} of {} test binaries reported success",
            binaries.len()
        );
    }
    Ok(())
}

#[test]
fn runtime_tests_pass_on_pure_cgroup_v2() -> anyhow::Result<()> {
    run_in_vm(
        "runtime_tests_pass_on_pure_cgroup_v2",
        &["runtime_containers", "runtime_lifecycle", "runtime_limits"],
    )
}

#[test]
fn exec_tests_pass_on_pure_cgroup_v2() -> anyhow::Result<()> {
    run_in_vm("exec_tests_pass_on_pure_cgroup_v2", &["runtime_exec"])
}
