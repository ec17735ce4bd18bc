//! The README's single-machine cluster, end to end, on a test host of its own (a network
//! namespace): `skiff-server` as root starts its own node agent (as `k3s server` does), the
//! node turns Ready, the example image written by `skiff image build-example` goes onto it with
//! `skiff image import` (no registry anywhere) and shows in `skiff image ls`, the README's
//! Deployment runs and its pods answer on their IPs, `skiff exec` runs commands in them (output,
//! stdin, exit codes, kubectl's errors), and stopping the replica stops its agent but leaves the
//! containers running.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use skiff_api::Kind;
use tests::agent::{clean_up_node, processes_mentioning};
use tests::cli::{ok, skiff};
use tests::netns;
use tests::wait;

const LIMIT: Duration = Duration::from_secs(90);

/// The replica (with its agent) and what it leaves behind, cleaned up when dropped.
struct Machine {
    server: Option<Child>,
    dir: tempfile::TempDir,
    cgroup_root: String,
}

impl Machine {
    fn start(host_ip: &str) -> Machine {
        let dir = tempfile::Builder::new()
            .prefix("skiff-machine-test")
            .tempdir()
            .expect("tempdir");
        let cgroup_root = format!("skiff-test-machine-{}", std::process::id());
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
        let agent_root = dir.path().join("agent");
        let server = Command::new(tests::bins::bin("skiff-server"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg(format!("--agent-arg=--root-dir={}", agent_root.display()))
            .arg(format!("--agent-arg=--cgroup-root={cgroup_root}"))
            .arg(format!("--agent-arg=--node-ip={host_ip}"))
            .arg("--agent-arg=--node-name=machine")
            .env("SKIFF_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("skiff-server starts");
        Machine {
            server: Some(server),
            dir,
            cgroup_root,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn agent_root(&self) -> std::path::PathBuf {
        self.dir.path().join("agent")
    }

    /// Pids of this machine's agent (its command line names the agent's root).
    fn agent_pids(&self) -> Vec<i32> {
        let root = self.agent_root().display().to_string();
        processes_mentioning(&root)
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains("skiff-agent"))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Pids of the shims of this machine's containers.
    fn shim_pids(&self) -> Vec<i32> {
        let root = self.agent_root().display().to_string();
        processes_mentioning(&root)
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains("skiff-shim"))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        for pid in self.agent_pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
        }
        clean_up_node(&self.agent_root(), &self.cgroup_root);
    }
}

fn pods() -> Kind {
    Kind::of("v1", "Pod").expect("Pod")
}

fn is_ready(obj: &Value) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[test]
fn one_machine_is_a_whole_cluster_that_runs_the_readme_app() {
    netns::on_one_host(move |host_ip| async move {
        let machine = Machine::start(&host_ip);
        let eps = "127.0.0.1:2379";
        let client = skiff_api::Client::new(&[eps.to_string()]).expect("client");
        let nodes = Kind::of("v1", "Node").expect("Node");
        let ready = wait::try_until(LIMIT, || async {
            let n = client.get(&nodes, "", "machine").await.ok()?;
            is_ready(&n).then_some(())
        })
        .await;
        assert!(
            ready.is_some(),
            "the replica's own node never turned Ready; server log:\n{}",
            machine.log()
        );

        // The example image, written by the CLI and imported through the API: no registry.
        let work = tempfile::tempdir().expect("tempdir");
        let tarball = work.path().join("skiff-example.tar");
        let tarball = tarball.to_str().expect("utf-8 path");
        ok(eps, &["image", "build-example", "-o", tarball]);
        let imported = ok(eps, &["image", "import", tarball]);
        assert!(
            imported.contains("skiff.local/example:1.0") && imported.contains("machine"),
            "import said: {imported}"
        );
        let listed = ok(eps, &["image", "ls"]);
        let row = listed
            .lines()
            .find(|l| l.contains("skiff.local/example"))
            .unwrap_or_else(|| panic!("image ls shows no example image:\n{listed}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[..3],
            ["machine", "skiff.local/example", "1.0"],
            "{listed}"
        );
        let refused = skiff(eps, &["image", "import", "/nonexistent.tar"], None);
        assert!(
            !refused.ok && refused.stderr.contains("/nonexistent.tar"),
            "{refused:?}"
        );

        // The README's Deployment, from the file the README names.
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/hello.yaml");
        ok(
            eps,
            &["apply", "-f", manifest.to_str().expect("utf-8 path")],
        );
        let running = wait::try_until(LIMIT, || async {
            let list = client
                .list(&pods(), Some("default"), "app=hello", "")
                .await
                .ok()?;
            let ready: Vec<Value> = list.items.into_iter().filter(is_ready).collect();
            (ready.len() == 2).then_some(ready)
        })
        .await
        .unwrap_or_else(|| panic!("the hello pods never got Ready; log:\n{}", machine.log()));
        for pod in &running {
            let name = pod["metadata"]["name"].as_str().expect("name");
            let ip = pod["status"]["podIP"].as_str().expect("pod IP");
            let addr = format!("{ip}:8080");
            let body = wait::try_until(Duration::from_secs(20), || tests::http::get(&addr)).await;
            assert_eq!(
                body.as_deref().map(str::trim),
                Some(name),
                "pod {name} at {ip}"
            );
        }

        // Each request is in the pod's log (busybox httpd -v).
        let first = running[0]["metadata"]["name"].as_str().expect("name");
        let logged = wait::try_until(Duration::from_secs(20), || async {
            let out = skiff(eps, &["logs", first], None);
            out.stdout.contains("response:200").then_some(())
        })
        .await;
        assert!(logged.is_some(), "the pod's log shows no request");

        // skiff exec: output, the container's own view, stdin, exit codes.
        let pod = running[0]["metadata"]["name"].as_str().expect("name");
        assert_eq!(ok(eps, &["exec", pod, "--", "hostname"]).trim(), pod);
        let through_workload = skiff(eps, &["exec", "deployment/hello", "--", "hostname"], None);
        assert!(through_workload.ok, "{through_workload:?}");
        assert!(
            running
                .iter()
                .any(|p| p["metadata"]["name"] == through_workload.stdout.trim()),
            "deployment/hello ran in {:?}",
            through_workload.stdout
        );
        let echoed = skiff(eps, &["exec", "-i", pod, "--", "cat"], Some("in and out\n"));
        assert_eq!(echoed.stdout, "in and out\n", "{echoed:?}");
        let failed = skiff(
            eps,
            &["exec", pod, "--", "sh", "-c", "echo oops >&2; exit 3"],
            None,
        );
        assert_eq!(failed.code, Some(3), "{failed:?}");
        assert!(failed.stderr.contains("oops"), "{failed:?}");
        assert!(
            failed
                .stderr
                .contains("command terminated with exit code 3"),
            "{failed:?}"
        );
        let missing = skiff(eps, &["exec", pod, "--", "no-such-command"], None);
        assert!(!missing.ok, "{missing:?}");
        assert!(missing.stderr.contains("no-such-command"), "{missing:?}");
        let no_pod = skiff(eps, &["exec", "nope", "--", "true"], None);
        assert!(
            no_pod.stderr.contains("pods \"nope\" not found"),
            "{no_pod:?}"
        );
        let no_command = skiff(eps, &["exec", pod], None);
        assert!(
            no_command
                .stderr
                .contains("you must specify at least one command for the container"),
            "{no_command:?}"
        );

        // Stopping the replica stops its agent, not the pods' containers.
        let mut machine = machine;
        let shims = machine.shim_pids();
        assert!(!shims.is_empty(), "no shims found for the running pods");
        let mut server = machine.server.take().expect("server");
        // SAFETY: a signal to the child this test started and has not reaped.
        let rc = unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM: {}", std::io::Error::last_os_error());
        let exited = wait::try_until(Duration::from_secs(30), || {
            let done = server.try_wait().ok().flatten().is_some();
            async move { done.then_some(()) }
        })
        .await;
        assert!(exited.is_some(), "skiff-server did not stop after SIGTERM");
        let agent_gone = wait::try_until(Duration::from_secs(20), || {
            let gone = machine.agent_pids().is_empty();
            async move { gone.then_some(()) }
        })
        .await;
        assert!(agent_gone.is_some(), "the agent outlived its replica");
        let alive = machine.shim_pids();
        assert!(
            shims.iter().all(|p| alive.contains(p)),
            "containers stopped with the replica: before {shims:?}, after {alive:?}"
        );
    });
}
