//! Running the `skiff` CLI as a user would, against a test cluster.

use std::io::Write;
use std::process::{Command, Stdio};

/// What one `skiff` invocation did.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    /// The exit status (None when a signal ended it).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `skiff --endpoints <endpoints> <args>`, feeding `stdin` if given. No config file is
/// read (a missing one is given), so the machine's own settings cannot interfere.
pub fn skiff(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(crate::bins::bin("skiff"))
        .arg("--endpoints")
        .arg(endpoints)
        .arg("--config")
        .arg("/nonexistent/skiff-test-config")
        .args(args)
        .env_remove("SKIFF_ENDPOINTS")
        .env_remove("SKIFF_CONTEXT")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("skiff starts");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("writing stdin");
    }
    let out = child.wait_with_output().expect("skiff runs");
    Run {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `skiff` and insists it succeeds; returns stdout.
pub fn ok(endpoints: &str, args: &[&str]) -> String {
    let run = skiff(endpoints, args, None);
    assert!(run.ok, "skiff {args:?} failed: {}", run.stderr);
    run.stdout
}

/// Runs `skiff` with `stdin` and insists it succeeds; returns stdout.
pub fn ok_with_input(endpoints: &str, args: &[&str], stdin: &str) -> String {
    let run = skiff(endpoints, args, Some(stdin));
    assert!(run.ok, "skiff {args:?} failed: {}", run.stderr);
    run.stdout
}

/// Starts `skiff --endpoints <endpoints> <args>` without waiting for it (for commands that keep
/// running, such as `logs -f`), its stdout piped to the caller and its stderr discarded.
pub fn spawn(endpoints: &str, args: &[&str]) -> std::process::Child {
    Command::new(crate::bins::bin("skiff"))
        .arg("--endpoints")
        .arg(endpoints)
        .arg("--config")
        .arg("/nonexistent/skiff-test-config")
        .args(args)
        .env_remove("SKIFF_ENDPOINTS")
        .env_remove("SKIFF_CONTEXT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("skiff starts")
}

/// The lines a child prints on stdout, as they come (read on a thread of their own, so the
/// caller can wait for each with a deadline).
pub fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}
