//! `skiff logs` end to end, on a test host of its own (a network namespace): one control-plane
//! replica, Debian's docker-registry on loopback holding the example image, and a real agent
//! serving its port; the CLI asks the replica, which dials the agent at the address and port
//! its Node publishes and relays the container's output. Whole logs in order, `--tail`,
//! `--timestamps`, `--since-time`, `--limit-bytes`, `-l` with prefixes, `-f` following a log
//! as it grows and ending with the container, `--previous` after a restart, and kubectl's
//! errors.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_api::Kind;
use tests::agent::TestNode;
use tests::cli::{lines_of, skiff, spawn};
use tests::netns;
use tests::wait;

const LIMIT: Duration = Duration::from_secs(60);

fn pods() -> Kind {
    Kind::of("v1", "Pod").expect("Pod")
}

/// A test node (see `tests::agent::TestNode`), with the helpers below.
struct Node(TestNode);

impl std::ops::Deref for Node {
    type Target = TestNode;
    fn deref(&self) -> &TestNode {
        &self.0
    }
}

async fn node(host_ip: &str) -> Node {
    Node(TestNode::start(host_ip).await)
}

impl Node {
    fn endpoints(&self) -> String {
        self.cluster.endpoints()
    }

    /// Runs `skiff logs <args>` until its output is `want` (the container may still be
    /// writing it).
    async fn until_logs(&self, args: &[&str], want: &str) {
        let eps = self.endpoints();
        let mut all = vec!["logs"];
        all.extend_from_slice(args);
        let mut last = None;
        let got = wait::try_until(LIMIT, || {
            let run = skiff(&eps, &all, None);
            let matched = run.ok && run.stdout == want;
            last = Some(run);
            async move { matched.then_some(()) }
        })
        .await;
        assert!(
            got.is_some(),
            "skiff {all:?} never printed {want:?}; last: {last:?}\nagent log:\n{}",
            self.agent.log()
        );
    }
}

impl Node {
    /// Waits until a line of the agent's log says both things.
    async fn until_agent_says(&self, about: &str, what: &str) {
        let found = wait::try_until(LIMIT, || {
            let log = self.agent.log();
            let said = log.lines().any(|l| l.contains(about) && l.contains(what));
            async move { said.then_some(()) }
        })
        .await;
        assert!(
            found.is_some(),
            "the agent never said {what:?} about {about:?}; its log:\n{}",
            self.agent.log()
        );
    }
}

fn container_status(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn script(lines: &str) -> Value {
    json!({"containers": [{"name": "main", "image": "busybox",
                           "command": ["sh", "-c", lines]}]})
}

/// The next line from a following process, within `limit`.
fn next_line(lines: &Receiver<String>, limit: Duration) -> String {
    lines
        .recv_timeout(limit)
        .unwrap_or_else(|e| panic!("no line within {limit:?}: {e}"))
}

#[test]
fn logs_show_a_containers_output_as_kubectl_does_and_its_errors() {
    netns::on_one_host(move |host_ip| async move {
        let n = node(&host_ip).await;
        let eps = n.endpoints();
        let node = n
            .client
            .get(&Kind::of("v1", "Node").expect("Node"), "", "node-a")
            .await
            .expect("node");
        assert_eq!(
            node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"], n.port,
            "the Node publishes the agent's port"
        );

        // stdout and stderr are separate pipes with no order between them: the pause puts the
        // stderr line after the others.
        n.create_pod(
            "printer",
            json!({"group": "print"}),
            script("for i in 1 2 3; do echo line $i; done; sleep 1; echo err >&2; sleep 3600"),
        )
        .await;
        let mut two = script("echo from a; sleep 3600");
        two["containers"]
            .as_array_mut()
            .expect("containers")
            .push(json!({"name": "b", "image": "busybox",
                         "command": ["sh", "-c", "echo from b; sleep 3600"]}));
        two["containers"][0]["name"] = "a".into();
        n.create_pod("two", json!({}), two).await;
        let mut pending = script("echo never");
        pending["nodeSelector"] = json!({"disk": "none"});
        n.create_pod("pending", json!({}), pending).await;

        n.until_pod("printer", "Running", |p| p["status"]["phase"] == "Running")
            .await;
        n.until_logs(&["printer"], "line 1\nline 2\nline 3\nerr\n")
            .await;
        n.until_logs(&["printer", "--tail", "1"], "err\n").await;
        n.until_logs(&["printer", "--tail=2", "-c", "main"], "line 3\nerr\n")
            .await;
        n.until_logs(&["pod/printer", "--limit-bytes", "9"], "line 1\nli")
            .await;
        n.until_logs(&["printer", "--since-time", "2999-01-01T00:00:00Z"], "")
            .await;
        n.until_logs(&["printer", "--since", "1h", "--tail", "1"], "err\n")
            .await;

        let stamped = tests::cli::ok(&eps, &["logs", "printer", "--timestamps"]);
        let mut times = Vec::new();
        let mut texts = Vec::new();
        for line in stamped.lines() {
            let (time, text) = line.split_once(' ').expect("a timestamp prefix");
            times.push(
                time.parse::<jiff::Timestamp>()
                    .unwrap_or_else(|e| panic!("{time:?} is not RFC 3339: {e}")),
            );
            texts.push(text);
        }
        assert_eq!(texts, ["line 1", "line 2", "line 3", "err"]);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        let pod = n
            .client
            .get(&pods(), "default", "printer")
            .await
            .expect("pod");
        let started: jiff::Timestamp = container_status(&pod)["state"]["running"]["startedAt"]
            .as_str()
            .expect("startedAt")
            .parse()
            .expect("time");
        assert!(
            times[0] >= started - jiff::SignedDuration::from_secs(1),
            "{times:?} vs start {started}"
        );

        // A pod of two containers: each by name, none without one.
        n.until_pod("two", "Running", |p| p["status"]["phase"] == "Running")
            .await;
        n.until_logs(&["two", "-c", "b"], "from b\n").await;
        n.until_logs(&["two", "a"], "from a\n").await;
        n.until_logs(
            &["two", "--all-containers"],
            "[pod/two/a] from a\n[pod/two/b] from b\n",
        )
        .await;
        let errors = [
            (
                vec!["logs", "missing"],
                "Error from server (NotFound): pods \"missing\" not found",
            ),
            (
                vec!["logs", "missing", "--all-containers"],
                "Error from server (NotFound): pods \"missing\" not found",
            ),
            (
                vec!["logs", "two", "--all-containers", "-c", "a"],
                "error: --all-containers=true should not be specified with container name",
            ),
            (
                vec!["logs", "two"],
                "Error from server (BadRequest): a container name must be specified for pod \
                 two, choose one of: [a b]",
            ),
            (
                vec!["logs", "printer", "-c", "nope"],
                "Error from server (BadRequest): container nope is not valid for pod printer",
            ),
            (
                vec!["logs", "pending"],
                "Error from server (BadRequest): container \"main\" in pod \"pending\" is \
                 waiting to start: ContainerCreating",
            ),
            (
                vec!["logs", "printer", "--previous"],
                "Error from server (BadRequest): previous terminated container \"main\" in pod \
                 \"printer\" not found",
            ),
            (
                vec!["logs", "-n", "elsewhere", "printer"],
                "Error from server (NotFound): pods \"printer\" not found",
            ),
        ];
        for (args, want) in errors {
            let run = skiff(&eps, &args, None);
            assert!(!run.ok, "{args:?} succeeded: {}", run.stdout);
            assert_eq!(run.stderr.trim(), want, "{args:?}");
        }
        let both = skiff(&eps, &["logs", "printer", "-l", "app=x"], None);
        assert!(
            !both.ok && both.stderr.contains("only a selector"),
            "{both:?}"
        );

        // A selector: every matching pod, each line prefixed.
        n.create_pod(
            "echoer",
            json!({"group": "print"}),
            script("echo hello; sleep 3600"),
        )
        .await;
        n.until_pod("echoer", "Running", |p| p["status"]["phase"] == "Running")
            .await;
        n.until_logs(
            &["-l", "group=print", "--tail", "1"],
            "[pod/echoer/main] hello\n[pod/printer/main] err\n",
        )
        .await;
        let none = skiff(&eps, &["logs", "-l", "group=none"], None);
        assert!(
            none.ok
                && none
                    .stderr
                    .contains("No resources found in default namespace."),
            "{none:?}"
        );
    });
}

#[test]
fn follow_prints_lines_as_they_are_written_and_ends_with_the_container() {
    netns::on_one_host(move |host_ip| async move {
        let n = node(&host_ip).await;
        let eps = n.endpoints();
        n.create_pod(
            "ticker",
            json!({}),
            script("i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"),
        )
        .await;
        let mut finite = script("for i in 1 2 3; do echo n $i; sleep 0.3; done");
        finite["restartPolicy"] = "Never".into();
        n.create_pod("finite", json!({}), finite).await;

        n.until_pod("ticker", "Running", |p| p["status"]["phase"] == "Running")
            .await;
        wait::until("the ticker's first line", LIMIT, || {
            let run = skiff(&eps, &["logs", "ticker", "--tail=1"], None);
            async move { run.stdout.starts_with("tick ").then_some(()) }
        })
        .await;
        // With --tail=1 the first line is the last one written before; every line after it
        // was written while the command ran.
        let mut follower = spawn(&eps, &["logs", "-f", "--tail=1", "ticker"]);
        let lines = lines_of(&mut follower);
        let numbers: Vec<u64> = (0..3)
            .map(|_| {
                let line = next_line(&lines, Duration::from_secs(20));
                line.strip_prefix("tick ")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            })
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "consecutive lines: {numbers:?}"
        );
        assert!(
            follower.try_wait().expect("status").is_none(),
            "still following"
        );
        follower.kill().expect("killed");
        follower.wait().expect("reaped");
        // The client went away: the replica closes its stream from the agent, and the agent
        // stops reading the file.
        n.until_agent_says("pod=ticker", "log stream ended: the client went away")
            .await;

        // A container that ends: following it ends too, with every line.
        n.until_pod("finite", "started", |p| {
            let state = &container_status(p)["state"];
            state["running"].is_object() || state["terminated"].is_object()
        })
        .await;
        let mut ending = spawn(&eps, &["logs", "-f", "finite"]);
        let lines = lines_of(&mut ending);
        let started = Instant::now();
        let mut got = Vec::new();
        while got.len() < 3 {
            got.push(next_line(&lines, LIMIT.saturating_sub(started.elapsed())));
        }
        assert_eq!(got, ["n 1", "n 2", "n 3"]);
        let status = wait::until("logs -f to end with the container", LIMIT, || {
            let s = ending.try_wait().expect("status");
            async move { s }
        })
        .await;
        assert!(status.success(), "{status:?}");
        n.until_agent_says("pod=finite", "log stream ended: the container's run ended")
            .await;
        n.until_pod("finite", "Succeeded", |p| {
            p["status"]["phase"] == "Succeeded"
        })
        .await;
    });
}

#[test]
fn previous_shows_the_run_before_a_restart() {
    netns::on_one_host(move |host_ip| async move {
        let n = node(&host_ip).await;
        let eps = n.endpoints();
        // Each run prints a line of its own, lives a few seconds and fails; the first restart
        // comes at once, so the second run is seen running with the first as its last state.
        let mut restarts = script("echo run $(date +%s%N); sleep 5; exit 1");
        restarts["restartPolicy"] = "Always".into();
        n.create_pod("restarts", json!({}), restarts).await;

        let running_second = |p: &Value| {
            let cs = container_status(p);
            (cs["restartCount"] == 1 && cs["state"]["running"].is_object())
                .then(|| cs["containerID"].as_str().unwrap_or_default().to_string())
        };
        let both = wait::try_until(LIMIT, || async {
            let p = n.client.get(&pods(), "default", "restarts").await.ok()?;
            let id = running_second(&p)?;
            let previous = skiff(&eps, &["logs", "restarts", "--previous"], None);
            let current = skiff(&eps, &["logs", "restarts"], None);
            // Still the same run afterwards: both answers are about it and the one before.
            let after = n.client.get(&pods(), "default", "restarts").await.ok()?;
            (previous.ok
                && current.ok
                && !current.stdout.is_empty()
                && running_second(&after) == Some(id))
            .then_some((previous.stdout, current.stdout))
        })
        .await;
        let Some((previous, current)) = both else {
            panic!(
                "never saw the second run with both logs\nagent log:\n{}",
                n.agent.log()
            )
        };
        assert!(
            previous.starts_with("run ") && previous.ends_with('\n'),
            "{previous:?}"
        );
        assert!(
            current.starts_with("run ") && current.ends_with('\n'),
            "{current:?}"
        );
        assert_eq!(previous.lines().count(), 1, "{previous:?}");
        assert_eq!(current.lines().count(), 1, "{current:?}");
        assert_ne!(previous, current, "two runs, two lines");
        let stamp = |s: &str| s.trim().trim_start_matches("run ").parse::<u128>().ok();
        if let (Some(a), Some(b)) = (stamp(&previous), stamp(&current)) {
            assert!(a < b, "the previous run printed first: {a} vs {b}");
        }
    });
}

#[test]
fn logs_rotate_at_their_size_and_a_follower_moves_on_with_them() {
    netns::on_one_host(move |host_ip| async move {
        let n = Node(
            TestNode::start_with(
                &host_ip,
                &[
                    "--container-log-max-size",
                    "2Ki",
                    "--container-log-max-files",
                    "2",
                ],
            )
            .await,
        );
        let eps = n.endpoints();
        // 400 numbered lines of about 60 bytes with their CRI prefix: many rotations, each
        // file holding about 30 lines. The container waits for /tmp/go so the follower is in
        // place first.
        let mut pod = script(
            "while [ ! -e /tmp/go ]; do sleep 0.1; done; \
             i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo line $i; \
             if [ $((i % 20)) = 0 ]; then sleep 0.05; fi; done; sleep 1000",
        );
        pod["terminationGracePeriodSeconds"] = 1.into();
        n.create_pod("chatty", json!({}), pod).await;
        n.until_pod("chatty", "Running", |p| p["status"]["phase"] == "Running")
            .await;
        let mut follower = spawn(&eps, &["logs", "-f", "chatty"]);
        let lines = lines_of(&mut follower);
        // The follower is connected once the agent serves its stream.
        n.until_agent_says("pod=chatty", "serving a log").await;
        let go = skiff(&eps, &["exec", "chatty", "--", "touch", "/tmp/go"], None);
        assert!(go.ok, "{go:?}");
        let started = Instant::now();
        let got: Vec<String> = (0..400)
            .map(|_| next_line(&lines, LIMIT.saturating_sub(started.elapsed())))
            .collect();
        let want: Vec<String> = (1..=400).map(|i| format!("line {i}")).collect();
        assert_eq!(
            got, want,
            "the follower lost or repeated lines across rotations"
        );
        follower.kill().expect("killed");
        follower.wait().expect("reaped");

        // On disk: the current file within the limit, one rotated file beside it.
        let pod = n
            .until_pod("chatty", "Running", |p| p["status"]["phase"] == "Running")
            .await;
        let uid = pod["metadata"]["uid"].as_str().expect("uid");
        let dir = n
            .agent
            .dir()
            .join(format!("logs/default_chatty_{uid}/main"));
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("log dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(files[0], "0.log", "{files:?}");
        assert!(files[1].starts_with("0.log."), "{files:?}");
        let current = std::fs::metadata(dir.join("0.log")).expect("current").len();
        assert!(current <= 2048, "the current file holds {current} bytes");
        // `skiff logs` reads the current file: the last lines, ending with the last one.
        let tail = skiff(&eps, &["logs", "chatty"], None);
        assert!(tail.stdout.ends_with("line 400\n"), "{:?}", tail.stdout);
        assert!(
            !tail.stdout.contains("line 1\n"),
            "old lines were not rotated away"
        );
    });
}
