//! `skiff-server` as a process: the no-flag default, clean shutdown on SIGTERM, and one clear
//! line with a non-zero exit for bad flags, unusable data directories and inconsistent peer URLs.

use std::process::Command;

use tests::bins::bin;
use tests::cluster::{free_port, Cluster};
use tests::etcdctl::ok;

fn server(args: &[&str]) -> std::process::Output {
    Command::new(bin("skiff-server"))
        .args(args)
        .output()
        .expect("skiff-server runs")
}

fn last_line(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// Runs skiff-server with `args` on free loopback ports.
fn server_on_free_ports(args: &[&str]) -> std::process::Output {
    let peer = format!("http://127.0.0.1:{}", free_port());
    let client = format!("http://127.0.0.1:{}", free_port());
    let mut all = args.to_vec();
    all.extend(["--listen-peer-urls", &peer, "--listen-client-urls", &client]);
    server(&all)
}

/// Asserts that the server refused to start with a last stderr line containing `expected`.
fn assert_refused(out: &std::process::Output, expected: &str) {
    assert!(!out.status.success());
    assert!(last_line(out).contains(expected), "{}", last_line(out));
}

#[test]
fn bad_flags_are_refused_naming_the_flag() {
    let out = server(&["--snapshot-count", "many"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: invalid value 'many' for '--snapshot-count"),
        "{err}"
    );

    let out = server(&["--listen-client-urls", "not a url"]);
    assert!(!out.status.success());
    assert!(
        last_line(&out)
            .starts_with("skiff-server: --listen-client-urls: \"not a url\" is not a URL"),
        "{}",
        last_line(&out)
    );
}

#[test]
fn unusable_data_dirs_are_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = server_on_free_ports(&["--data-dir", file.to_str().unwrap()]);
    assert_refused(&out, "skiff-server: cannot use data dir");

    let out = server_on_free_ports(&[
        "--name",
        "x",
        "--data-dir",
        tmp.path().join("d").to_str().unwrap(),
        "--initial-cluster",
        "x=http://127.0.0.1:1",
    ]);
    assert_refused(
        &out,
        "--initial-cluster lists x=http://127.0.0.1:1 but this member advertises",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_data_survives_a_restart() {
    let mut cluster = Cluster::start(1).await;
    let ep = cluster.endpoints();
    ok(&ep, &["put", "/durable", "yes"]);
    // Open watches (an etcd one and a Skiff API one) do not keep the replica from stopping.
    let mut etcd = cluster.client_for(&[0]).await;
    let _etcd_watch = etcd.watch("/durable", None).await.unwrap();
    let api = skiff_api::Client::new(&cluster.client_urls()).unwrap();
    let cms = skiff_api::Kind::named("configmaps").unwrap();
    let mut api_watch = api.watch(&cms, None, "", "", "");
    let _ = api_watch.next().await;
    let stopped = std::time::Instant::now();
    assert_eq!(cluster.terminate(0), Some(0), "log: {}", cluster.log(0));
    assert!(
        stopped.elapsed() < std::time::Duration::from_secs(10),
        "took {:?} to stop with watches open",
        stopped.elapsed()
    );

    // A second process on a data dir in use is refused.
    cluster.restart(0);
    cluster.wait_for_leader().await;
    let m = &cluster.members[0];
    let data = m.dir.join("data");
    let out = server_on_free_ports(&["--name", &m.name, "--data-dir", data.to_str().unwrap()]);
    assert_refused(&out, "skiff-server: cannot use data dir");

    assert_eq!(
        ok(&ep, &["get", "/durable", "--print-value-only"]).trim(),
        "yes"
    );
}

/// With no flags at all, a single replica serves 127.0.0.1:2379 with its data in ./skiff-data
/// (run inside a network namespace of its own, so the fixed ports cannot collide with anything).
#[test]
fn no_flags_run_a_single_replica_on_the_default_ports() {
    if !tests::netns::available() {
        eprintln!("skipped: needs root to create a network namespace");
        return;
    }
    let net = std::sync::Arc::new(tests::netns::TestNet::create(0));
    net.run_as_client(|| async {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin("skiff-server"))
            .arg("--disable-agent")
            .current_dir(dir.path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let got = tests::wait::until(
            "the default replica to serve",
            std::time::Duration::from_secs(20),
            || async {
                let out = tests::etcdctl::run("127.0.0.1:2379", &["put", "k", "v"]);
                out.status
                    .success()
                    .then(|| ok("127.0.0.1:2379", &["get", "k", "--print-value-only"]))
            },
        )
        .await;
        assert_eq!(got.trim(), "v");
        assert!(dir.path().join("skiff-data").is_dir());
        let _ = child.kill();
        let _ = child.wait();
    });
}
