//! Debian's `etcdctl` (API v3) run against a Skiff endpoint.

use std::process::{Command, Output};

/// Runs `etcdctl --endpoints=<endpoints> <args>` and returns its output.
pub fn run(endpoints: &str, args: &[&str]) -> Output {
    run_with_input(endpoints, args, None)
}

pub fn run_with_input(endpoints: &str, args: &[&str], input: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("etcdctl is installed (bash .ci/run installs etcd-client)");
    if let Some(text) = input {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write etcdctl stdin");
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().expect("etcdctl ran")
}

/// Runs etcdctl and returns stdout, panicking with stderr if it failed.
pub fn ok(endpoints: &str, args: &[&str]) -> String {
    ok_with_input(endpoints, args, None)
}

pub fn ok_with_input(endpoints: &str, args: &[&str], input: Option<&str>) -> String {
    let out = run_with_input(endpoints, args, input);
    assert!(
        out.status.success(),
        "etcdctl {args:?} against {endpoints} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lines of stdout.
pub fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}
