//! Pod-level cgroups end to end, on a test host of its own: a pod's containers sit in the
//! pod's cgroup, which holds the pod's totals (CPU shares from the requests, the CFS quota and
//! memory limit when every container has one) and the agent's `--pod-pids-limit` for all of
//! the pod's processes together — so two containers that each stay under the limit cannot
//! together go past it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::Kind;
use tests::agent::TestNode;
use tests::netns;
use tests::wait;

const LIMIT: Duration = Duration::from_secs(60);
const PIDS: i64 = 24;

/// A cgroup file of the pod, whichever cgroup version the host runs: v1 under the
/// controller's hierarchy, v2 under the unified one.
fn pod_file(controller_v1: &str, cgroup: &str, v1_file: &str, v2_file: &str) -> PathBuf {
    let v1 = Path::new("/sys/fs/cgroup").join(controller_v1);
    if v1.is_dir() {
        v1.join(cgroup).join(v1_file)
    } else {
        Path::new("/sys/fs/cgroup").join(cgroup).join(v2_file)
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// A busybox shell loop starting `n` sleepers once `/shared/<after>` exists (if given),
/// saying how many it could and leaving `/shared/<name>` behind.
fn sleepers(name: &str, n: usize, after: Option<&str>) -> Value {
    let wait_for = after
        .map(|a| format!("while [ ! -e /shared/{a} ]; do sleep 0.1; done; "))
        .unwrap_or_default();
    json!([
        "sh",
        "-c",
        format!(
            "{wait_for}ok=0; i=0; while [ $i -lt {n} ]; do i=$((i+1)); last=$!; sleep 1000 & \
             if [ \"$!\" != \"$last\" ]; then ok=$((ok+1)); fi; done; echo started $ok; \
             touch /shared/{name}; wait"
        )
    ])
}

#[test]
fn a_pods_containers_share_its_limits() {
    netns::on_one_host(move |host_ip| async move {
        let node = TestNode::start_with(&host_ip, &["--pod-pids-limit", &PIDS.to_string()]).await;
        let pods = Kind::of("v1", "Pod").expect("Pod");
        let container = |name: &str, cpu_limit: &str, memory: &str, command: Value| {
            json!({"name": name, "image": "busybox", "command": command,
                   "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
                   "resources": {"requests": {"cpu": "100m", "memory": "16Mi"},
                                 "limits": {"cpu": cpu_limit, "memory": memory}}})
        };
        node.client
            .create(
                &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "shared", "namespace": "default"},
                "spec": {"restartPolicy": "Never", "containers": [
                    container("first", "300m", "48Mi", sleepers("first", 15, None)),
                    container("second", "200m", "32Mi", sleepers("second", 15, Some("first"))),
                ], "volumes": [{"name": "shared", "emptyDir": {}}]}}),
                "default",
            )
            .await
            .expect("pod created");
        let pod = wait::try_until(LIMIT, || async {
            let p = node.client.get(&pods, "default", "shared").await.ok()?;
            let statuses = p["status"]["containerStatuses"].as_array()?;
            // Started, and maybe already ended: the one that hits the limit gives up.
            let started = statuses
                .iter()
                .filter(|s| {
                    s["state"]["running"].is_object() || s["state"]["terminated"].is_object()
                })
                .count();
            (started == 2).then_some(p)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "the pod never started both containers; agent log:\n{}",
                node.agent.log()
            )
        });
        let uid = pod["metadata"]["uid"].as_str().expect("uid");
        let cgroup = format!("{}/burstable/pod{uid}", node.agent.cgroup_root);

        // The pod's totals, in the pod's own cgroup.
        let memory = pod_file("memory", &cgroup, "memory.limit_in_bytes", "memory.max");
        assert_eq!(read(&memory), (80u64 << 20).to_string());
        let pids = pod_file("pids", &cgroup, "pids.max", "pids.max");
        assert_eq!(read(&pids), PIDS.to_string());
        let quota = pod_file("cpu", &cgroup, "cpu.cfs_quota_us", "cpu.max");
        assert!(read(&quota).starts_with("50000"), "{}", read(&quota));

        // Each container starts 15 sleepers (the second after the first), 32 processes with the
        // shells: alone each would fit in 24, together they cannot. The shell that hits the limit says it cannot fork (and
        // busybox's shell gives up), and the pod never runs more than 24 processes.
        let outcome = |name: &'static str| {
            let client = node.client.clone();
            async move {
                let mut out = String::new();
                let options = skiff_api::LogOptions {
                    container: Some(name.into()),
                    ..Default::default()
                };
                let mut log = client.logs("default", "shared", &options).await.ok()?;
                while let Ok(Some(chunk)) = log.next().await {
                    out.push_str(&String::from_utf8_lossy(&chunk));
                }
                (out.contains("started ") || out.contains("can't fork")).then_some(out)
            }
        };
        let mut logs = Vec::new();
        for name in ["first", "second"] {
            let Some(out) = wait::try_until(LIMIT, || outcome(name)).await else {
                let p = node.client.get(&pods, "default", "shared").await.ok();
                panic!(
                    "container {name} never finished starting its sleepers; pod status {}",
                    p.map(|p| p["status"].to_string()).unwrap_or_default()
                );
            };
            logs.push(out);
        }
        let current = read(&pod_file("pids", &cgroup, "pids.current", "pids.current"))
            .parse::<i64>()
            .expect("pids.current");
        assert!(
            current <= PIDS,
            "the pod runs {current} processes, more than {PIDS}"
        );
        assert!(
            logs.iter().any(|l| l.contains("can't fork")),
            "both containers started all their sleepers, no pod-wide limit: {logs:?}"
        );
        // The second starts only once the first has all of its 15 running, so it is the one
        // that runs out.
        assert!(logs[0].contains("started 15"), "{logs:?}");
        assert!(logs[1].contains("can't fork"), "{logs:?}");
    });
}
