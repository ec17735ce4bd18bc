//! Starting hollow nodes (`skiff-agent --hollow N`) against a test cluster.

use std::process::{Child, Command, Stdio};

use crate::cluster::Cluster;

/// `count` hollow nodes named `prefix-0`.., logging to `<cluster root>/agent-<prefix>.log`.
pub fn start(cluster: &Cluster, count: usize, prefix: &str, extra: &[&str]) -> Child {
    let log = std::fs::File::create(cluster.root().join(format!("agent-{prefix}.log")))
        .expect("agent log");
    Command::new(crate::bins::bin("skiff-agent"))
        .args([
            "--endpoints",
            &cluster.endpoints(),
            "--hollow",
            &count.to_string(),
            "--name",
            prefix,
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("skiff-agent starts")
}
