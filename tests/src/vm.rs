//! Test binaries of this workspace run inside a VM whose cgroups are pure v2, from a host that
//! has v1 (or hybrid) cgroups: `tests/vm/run` boots Debian's kernel with cgroup v2 alone under
//! qemu, shares this build's target profile directory at the same path (read-only), and the
//! VM runs the newest build of each named test target one after another (one test at a time:
//! the emulated machine is slow). On a pure v2 host those tests already run as they are.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};

/// One VM run: which test targets, which tests of them to leave out, how long it may take.
pub struct VmTests<'a> {
    /// Test target names (`runtime_limits`, `agent_pods`…), built beside the running test.
    pub targets: &'a [&'a str],
    /// Test names passed to the harness as `--skip`.
    pub skip: &'a [&'a str],
    /// The whole VM's deadline, boot included.
    pub timeout: Duration,
}

/// Whether the host's cgroups are pure v2 already (nothing to run in a VM).
pub fn host_is_pure_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

pub use crate::root::root_or_skip;

/// The newest test binary cargo built for the test target `name` in `deps`
/// (`<name>-<16 hex digits>`, executable).
pub fn newest_test_binary(deps: &Path, name: &str) -> anyhow::Result<PathBuf> {
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
            "no test binary {name}-<hash> in {deps:?}: build the workspace's tests together \
             (cargo nextest run --workspace, or cargo test --workspace --no-run)"
        ),
    }
}

/// The shell script the VM runs: proof that its cgroups are v2 alone, the kernel settings a
/// node's prerequisites set (as a host prepared for Skiff has them), then each binary.
pub fn script(binaries: &[PathBuf], skip: &[&str]) -> String {
    let skips: String = skip.iter().map(|s| format!(" --skip {s}")).collect();
    let mut s = String::from(
        "set -u\n\
         fs=$(stat -fc %T /sys/fs/cgroup)\n\
         echo \"/sys/fs/cgroup: $fs; enabled for children: $(cat /sys/fs/cgroup/cgroup.subtree_control)\"\n\
         if [ \"$fs\" != cgroup2fs ] || awk '$3 == \"cgroup\" { found = 1 } END { exit !found }' /proc/mounts; then\n\
           echo 'not a pure cgroup v2 host'; exit 90\n\
         fi\n\
         modprobe -a overlay br_netfilter veth bridge 2>/dev/null\n\
         sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1\n\
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

/// Runs `tests` in a fresh cgroup v2 VM; every binary must pass. `test` names the calling
/// test for the root check. Returns at once on a pure v2 host.
pub fn run_in_vm(test: &str, tests: VmTests<'_>) -> anyhow::Result<()> {
    if host_is_pure_v2() {
        eprintln!("this host's cgroups are pure v2: these tests already run on v2 here");
        return Ok(());
    }
    if !root_or_skip(test) {
        return Ok(());
    }
    let exe = std::env::current_exe().context("this test's binary")?;
    let deps = exe.parent().context("the deps directory")?;
    let profile = deps.parent().context("the target profile directory")?;
    let binaries = tests
        .targets
        .iter()
        .map(|name| newest_test_binary(deps, name))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/run");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&runner)
        .arg("--share-ro")
        .arg(profile)
        .args(["--timeout", &tests.timeout.as_secs().to_string(), "--"])
        .args(["bash", "-c", &script(&binaries, tests.skip)])
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
        bail!("the tests failed on cgroup v2 ({})", out.status);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_matching_binary_is_chosen_and_others_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, "x").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let old = make("agent_pods-0123456789abcdef", 0o755);
        let new = make("agent_pods-fedcba9876543210", 0o755);
        let past = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(past)
            .unwrap();
        make("agent_pods-fedcba9876543210.d", 0o644);
        make("agent_pods_more-0000000000000000", 0o755);
        make("agent_pods-1111111111111111", 0o644);
        assert_eq!(newest_test_binary(dir.path(), "agent_pods").unwrap(), new);
        assert!(newest_test_binary(dir.path(), "agent_hooks").is_err());
    }

    #[test]
    fn the_script_checks_for_v2_and_runs_every_binary_with_the_skips() {
        let s = script(
            &[PathBuf::from("/t/a-1"), PathBuf::from("/t/b-2")],
            &["slow_one"],
        );
        assert!(s.contains("not a pure cgroup v2 host"));
        assert!(s.contains("'/t/a-1' --test-threads=1 --skip slow_one || rc=1"));
        assert!(s.contains("'/t/b-2' --test-threads=1 --skip slow_one || rc=1"));
        assert!(s.ends_with("exit $rc\n"));
    }
}
