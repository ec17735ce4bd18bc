//! `agent-bench` (root): the node agent's speed and size, printed as one Markdown table.
//!
//! ```sh
//! cargo build --release --bins && sudo cargo run --release -p tests --bin agent-bench
//! ```
//!
//! 1. Container create + start + wait + delete of busybox `true`, the same rootfs and command:
//!    Skiff's runtime (`Containers` through `skiff-shim`, an overlay rootfs, cgroups, seccomp),
//!    Debian's `runc run` (the reference, measured in the same run), and Debian's containerd
//!    with runc (`ctr run --rm` of the example image imported into a private containerd), whose
//!    shims' resident sets are measured too, with ten containers left running.
//! 2. Pod startup with the image cached: a replica and a real agent in a network namespace of
//!    their own; 100 pods created one after another, each timed from the create call to the API
//!    reporting it Running (p50, p99), against the target (300 ms) and Kubernetes' SLO (5 s).
//! 3. Size with those 100 pods running: the agent's resident set, the shims' (largest and
//!    mean), and the agent's CPU while idle over 10 s.
//!
//! Results: docs/benchmarks.md.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use node_agent::runtime::{ContainerConfig, Containers, StartRequest};
use serde_json::json;
use skiff_api::{Client, Kind};
use tests::agent::{processes_mentioning, TestNode};
use tests::bench::{percentile, pss_bytes, rss_bytes};
use tests::containerd::Containerd;
use tests::netns::TestNet;

const CONTAINER_RUNS: usize = 50;
const PODS: usize = 100;

fn busybox_rootfs(dir: &Path) -> anyhow::Result<()> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    for d in ["etc", "tmp", "root", "proc", "sys", "dev"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy("/bin/busybox", bin.join("busybox")).context("copy /bin/busybox")?;
    std::os::unix::fs::symlink("busybox", bin.join("true"))?;
    std::os::unix::fs::symlink("busybox", bin.join("sh"))?;
    Ok(())
}

/// Median and mean of `samples`.
fn summary(samples: &[Duration]) -> (Duration, Duration) {
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    (percentile(samples, 50.0), mean)
}

/// Skiff's runtime: the whole cycle per run, and its parts (start, wait, remove) per run.
async fn skiff_runtime(dir: &Path) -> anyhow::Result<(Vec<Duration>, [Vec<Duration>; 3])> {
    let layer = dir.join("layer");
    busybox_rootfs(&layer)?;
    let containers = Containers::open(dir.join("containers"), tests::bins::bin("skiff-shim"))?;
    let cgroup_root = format!("skiff-bench-{}", std::process::id());
    let mut times = Vec::new();
    let mut parts: [Vec<Duration>; 3] = Default::default();
    for i in 0..=CONTAINER_RUNS {
        let id = format!("true{i}");
        let config = ContainerConfig {
            id: id.clone(),
            args: vec!["true".into()],
            hostname: id.clone(),
            cgroups_path: format!("/{cgroup_root}/{id}").into(),
            allow_privilege_escalation: true,
            ..Default::default()
        };
        let log = dir.join("logs").join(format!("{id}.log"));
        let t0 = Instant::now();
        containers
            .start(StartRequest {
                config: &config,
                layers: std::slice::from_ref(&layer),
                log_path: &log,
            })
            .await?;
        let t1 = Instant::now();
        let state = containers.wait_exited(&id, Duration::from_secs(20)).await;
        if !state.is_exited() {
            bail!("{id} did not exit: {state:?}");
        }
        let t2 = Instant::now();
        containers.remove(&id).await?;
        if i > 0 {
            times.push(t0.elapsed());
            parts[0].push(t1 - t0);
            parts[1].push(t2 - t1);
            parts[2].push(t2.elapsed());
        }
    }
    for base in ["/sys/fs/cgroup"] {
        if let Ok(dirs) = std::fs::read_dir(base) {
            for d in dirs.filter_map(Result::ok) {
                let _ = std::fs::remove_dir(d.path().join(&cgroup_root));
            }
        }
    }
    Ok((times, parts))
}

fn runc(dir: &Path) -> anyhow::Result<Vec<Duration>> {
    let bundle = dir.join("bundle");
    busybox_rootfs(&bundle.join("rootfs"))?;
    let spec = Command::new("runc")
        .args(["spec"])
        .current_dir(&bundle)
        .status()
        .context("runc spec (install Debian's runc)")?;
    if !spec.success() {
        bail!("runc spec failed");
    }
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["true"]);
    std::fs::write(&path, serde_json::to_vec(&config)?)?;
    let mut times = Vec::new();
    for i in 0..=CONTAINER_RUNS {
        let t0 = Instant::now();
        let out = Command::new("runc")
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(format!("skiff-bench-runc-{}-{i}", std::process::id()))
            .output()?;
        if !out.status.success() {
            bail!("runc run: {}", String::from_utf8_lossy(&out.stderr));
        }
        if i > 0 {
            times.push(t0.elapsed());
        }
    }
    Ok(times)
}

/// What containerd + runc measured: `ctr run --rm` times, and its shims' resident sets with
/// containers running.
struct ContainerdFigures {
    runs: Vec<Duration>,
    shim_rss: Vec<u64>,
    shim_pss_mean: u64,
}

fn containerd(dir: &Path) -> anyhow::Result<ContainerdFigures> {
    use skiff_api::example_image::{normalise_name, oci_archive, DEFAULT_BUSYBOX};
    let name = "skiff-example";
    let archive = dir.join("example.tar");
    std::fs::create_dir_all(dir)?;
    std::fs::write(&archive, oci_archive(Path::new(DEFAULT_BUSYBOX), name)?)?;
    let image = normalise_name(name)?.0;
    let mut containerd = Containerd::start(&dir.join("containerd"))?;
    containerd.import(&archive)?;
    let mut runs = Vec::new();
    for i in 0..=CONTAINER_RUNS {
        let took = containerd.run_rm(&image, &format!("true{i}"), &["true"])?;
        if i > 0 {
            runs.push(took);
        }
    }
    for i in 0..10 {
        containerd.run_detached(&image, &format!("sleep{i}"), &["sleep", "3600"])?;
    }
    let pids = containerd.shim_pids();
    let shim_rss = pids.iter().copied().map(rss_bytes).collect();
    let shim_pss_mean = pids.iter().copied().map(pss_bytes).sum::<u64>() / pids.len().max(1) as u64;
    Ok(ContainerdFigures {
        runs,
        shim_rss,
        shim_pss_mean,
    })
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

struct PodFigures {
    startup: Vec<Duration>,
    /// The agent's resident set by mapping, largest first.
    by_mapping: Vec<(String, u64)>,
    agent_rss: u64,
    shim_rss_max: u64,
    shim_rss_mean: u64,
    shim_pss_mean: u64,
    shims: usize,
    idle_cpu_percent: f64,
}

async fn pods(host_ip: String) -> anyhow::Result<PodFigures> {
    let node = TestNode::start(&host_ip).await;
    let agent = &node.agent;
    let client = node.client.clone();
    let pods = Kind::of("v1", "Pod").context("Pod")?;
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default"},
               "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                   "name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                   "command": ["sleep", "3600"]}]}})
    };
    let running = |client: Client, name: String| async move {
        let limit = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(p) = client.get(&pods, "default", &name).await {
                if p["status"]["phase"] == "Running" {
                    return Ok(());
                }
            }
            if Instant::now() > limit {
                bail!("pod {name} not Running after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    // The node must be up and the image cached first.
    client.create(&pod("warm-up"), "default").await?;
    running(client.clone(), "warm-up".into())
        .await
        .with_context(|| agent.log())?;
    let mut startup = Vec::new();
    for i in 0..PODS {
        let name = format!("p{i:03}");
        let t0 = Instant::now();
        client.create(&pod(&name), "default").await?;
        running(client.clone(), name).await?;
        startup.push(t0.elapsed());
    }
    let agent_pid = agent.pid().context("agent pid")?;
    let root = agent.root.path().to_string_lossy().to_string();
    let shims: Vec<u32> = processes_mentioning(&root)
        .into_iter()
        .filter(|p| {
            // A shim runs as skiff-shim-monitor (comm cut to 15 bytes) once its container runs.
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim().starts_with("skiff-shim"))
        })
        .map(|p| p as u32)
        .collect();
    let shim_pss_mean =
        shims.iter().map(|p| pss_bytes(*p)).sum::<u64>() / shims.len().max(1) as u64;
    let shims: Vec<u64> = shims.into_iter().map(rss_bytes).collect();
    let ticks_per_second = 100.0;
    let before = cpu_ticks(agent_pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle =
        (cpu_ticks(agent_pid) - before) as f64 / ticks_per_second / t0.elapsed().as_secs_f64();
    let by_mapping = tests::bench::rss_by_mapping(agent_pid);
    let figures = PodFigures {
        startup,
        by_mapping,
        agent_rss: rss_bytes(agent_pid),
        shim_rss_max: shims.iter().copied().max().unwrap_or(0),
        shim_rss_mean: shims.iter().sum::<u64>() / shims.len().max(1) as u64,
        shim_pss_mean,
        shims: shims.len(),
        idle_cpu_percent: idle * 100.0,
    };
    drop(node);
    Ok(figures)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !tests::root::is_root() {
        bail!("agent-bench runs containers: run it as root");
    }
    let dir = tempfile::Builder::new()
        .prefix("skiff-agent-bench")
        .tempdir()?;
    eprintln!("agent-bench: {CONTAINER_RUNS} containers through skiff-shim");
    let (skiff, skiff_parts) = skiff_runtime(&dir.path().join("skiff")).await?;
    eprintln!("agent-bench: {CONTAINER_RUNS} containers through runc");
    let runc = runc(&dir.path().join("runc"))?;
    eprintln!("agent-bench: {CONTAINER_RUNS} containers through containerd + runc");
    let ctrd = containerd(&dir.path().join("containerd"))?;
    eprintln!("agent-bench: {PODS} pods on a real agent");
    let net = TestNet::create(1);
    let host_ip = net.hosts[0].ip.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    net.run_in_host(0, move || async move {
        let _ = tx.send(pods(host_ip).await);
    });
    let figures = rx.recv().context("the pod phase ended")??;

    let (s50, smean) = summary(&skiff);
    let (r50, rmean) = summary(&runc);
    let (c50, cmean) = summary(&ctrd.runs);
    let p50 = percentile(&figures.startup, 50.0);
    let p99 = percentile(&figures.startup, 99.0);
    println!("| metric | Skiff | reference | Skiff/reference |");
    println!("|---|---:|---:|---:|");
    println!(
        "| create+start+wait+delete `true`, median of {CONTAINER_RUNS} | {} | {} (runc 1.1.5 `run`) | {:.2} |",
        ms(s50),
        ms(r50),
        s50.as_secs_f64() / r50.as_secs_f64()
    );
    println!(
        "| (same), mean | {} | {} | {:.2} |",
        ms(smean),
        ms(rmean),
        smean.as_secs_f64() / rmean.as_secs_f64()
    );
    println!(
        "| (same), Skiff's parts: start / wait / remove, medians | {} / {} / {} | | |",
        ms(percentile(&skiff_parts[0], 50.0)),
        ms(percentile(&skiff_parts[1], 50.0)),
        ms(percentile(&skiff_parts[2], 50.0)),
    );
    println!(
        "| (same) against containerd 1.6 + runc, `ctr run --rm`, median / mean | {} / {} | {} / {} | {:.2} / {:.2} |",
        ms(s50),
        ms(smean),
        ms(c50),
        ms(cmean),
        s50.as_secs_f64() / c50.as_secs_f64(),
        smean.as_secs_f64() / cmean.as_secs_f64()
    );
    println!(
        "| pod startup, image cached, create → Running, p50 of {PODS} | {} | 300 ms (target) | {:.2} |",
        ms(p50),
        p50.as_secs_f64() / 0.3
    );
    println!(
        "| (same), p99 | {} | 5 s (Kubernetes SLO) | {:.3} |",
        ms(p99),
        p99.as_secs_f64() / 5.0
    );
    println!(
        "| agent RSS with {} pods | {} | 30 MiB (target); k3s agent ~275 MiB (documented) | {:.2} |",
        PODS + 1,
        mib(figures.agent_rss),
        figures.agent_rss as f64 / (30u64 << 20) as f64
    );
    println!(
        "| shim RSS, largest / mean of {} | {} / {} | 2 MiB (target) | {:.2} |",
        figures.shims,
        mib(figures.shim_rss_max),
        mib(figures.shim_rss_mean),
        figures.shim_rss_max as f64 / (2u64 << 20) as f64
    );
    let ctrd_shim_max = ctrd.shim_rss.iter().copied().max().unwrap_or(0);
    let ctrd_shim_mean = ctrd.shim_rss.iter().sum::<u64>() / ctrd.shim_rss.len().max(1) as u64;
    println!(
        "| shim RSS against containerd-shim-runc-v2, largest / mean of {} | {} / {} | {} / {} | {:.2} / {:.2} |",
        ctrd.shim_rss.len(),
        mib(figures.shim_rss_max),
        mib(figures.shim_rss_mean),
        mib(ctrd_shim_max),
        mib(ctrd_shim_mean),
        figures.shim_rss_max as f64 / ctrd_shim_max.max(1) as f64,
        figures.shim_rss_mean as f64 / ctrd_shim_mean.max(1) as f64
    );
    println!(
        "| shim PSS (shared pages counted in part), mean, against containerd-shim-runc-v2 | {} | {} | {:.2} |",
        mib(figures.shim_pss_mean),
        mib(ctrd.shim_pss_mean),
        figures.shim_pss_mean as f64 / ctrd.shim_pss_mean.max(1) as f64
    );
    println!(
        "| agent CPU while idle with {} pods | {:.1} % of a core | | |",
        PODS + 1,
        figures.idle_cpu_percent
    );
    println!();
    println!("The agent's resident set by mapping (largest first):");
    println!();
    println!("| mapping | RSS |");
    println!("|---|---:|");
    for (mapping, bytes) in figures.by_mapping.iter().take(10) {
        println!("| {mapping} | {} |", mib(*bytes));
    }
    Ok(())
}
