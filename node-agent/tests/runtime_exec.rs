//! `Exec` end to end: real containers (the runtime tests' busybox fixture, real `skiff-shim`
//! and libcontainer), the agent's gRPC server on a loopback port, and `AgentClient` calling
//! it. Output, exit codes, stdin, terminals, what the command sees of its container, errors
//! before a command starts, and that a command ends with its client and with its container.

mod runtime_support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use node_agent::real::record::{ContainerRecord, PodRecord, Records};
use node_agent::runtime::ContainerState;
use runtime_support::{root_or_skip, Fixture};
use skiff_api::agent_pb::agent_client::AgentClient;
use skiff_api::agent_pb::exec_input::Input;
use skiff_api::agent_pb::exec_output::Output;
use skiff_api::agent_pb::{ExecInput, ExecOutput, ExecRequest, TerminalSize};
use skiff_api::{ApiError, Reason};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

const UID: &str = "pod-uid-1";
const DEADLINE: Duration = Duration::from_secs(20);

/// The agent's server over the fixture's root, and a client of it.
async fn agent(f: &Fixture) -> AgentClient<Channel> {
    let images = node_agent::image::ImageService::open(
        f.tmp.path().join("images"),
        node_agent::image::registries::RegistryConfig::default(),
    )
    .expect("image service");
    let service = node_agent::server::AgentService::new(
        f.tmp.path().to_path_buf(),
        Arc::new(images),
        env!("CARGO_BIN_EXE_skiff-shim").into(),
    );
    let listener = node_agent::server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(node_agent::server::serve(listener, service));
    AgentClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

/// The pod record that names the containers (name, id), as the agent's sync writes it.
fn pod(f: &Fixture, containers: &[(&str, &str)]) {
    let mut rec = PodRecord {
        uid: UID.into(),
        namespace: "default".into(),
        name: "web".into(),
        ..Default::default()
    };
    for (name, id) in containers {
        rec.containers.insert(
            name.to_string(),
            ContainerRecord {
                id: id.to_string(),
                ..Default::default()
            },
        );
    }
    Records {
        dir: f.tmp.path().join("pods"),
    }
    .save(&rec)
    .expect("pod record");
}

fn request(container: &str, command: &[&str]) -> ExecRequest {
    ExecRequest {
        namespace: "default".into(),
        pod: "web".into(),
        uid: UID.into(),
        container: container.into(),
        container_id: String::new(),
        command: command.iter().map(|s| s.to_string()).collect(),
        stdin: false,
        tty: false,
        size: None,
    }
}

/// A call in progress: the input sender and the output stream.
struct Call {
    input: mpsc::Sender<ExecInput>,
    output: Streaming<ExecOutput>,
}

async fn start(client: &mut AgentClient<Channel>, req: ExecRequest) -> Result<Call, tonic::Status> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(ExecInput {
        input: Some(Input::Start(req)),
    })
    .await
    .expect("queue the request");
    let output = client.exec(ReceiverStream::new(rx)).await?.into_inner();
    Ok(Call { input: tx, output })
}

impl Call {
    async fn send(&self, input: Input) {
        self.input
            .send(ExecInput { input: Some(input) })
            .await
            .expect("send input");
    }

    /// The next output, within the deadline; None at the end.
    async fn next(&mut self) -> Result<Option<Output>, tonic::Status> {
        let msg = tokio::time::timeout(DEADLINE, self.output.message())
            .await
            .expect("no output within the deadline")?;
        Ok(msg.map(|m| m.output.expect("an output")))
    }

    /// Everything to the end: stdout, stderr, exit code.
    async fn finish(mut self) -> Ran {
        let mut ran = Ran::default();
        loop {
            match self.next().await.expect("the call's outputs") {
                Some(Output::Stdout(b)) => ran.stdout.extend(b),
                Some(Output::Stderr(b)) => ran.stderr.extend(b),
                Some(Output::ExitCode(c)) => {
                    assert_eq!(ran.exit_code, None, "two exit codes");
                    ran.exit_code = Some(c);
                }
                None => return ran,
            }
        }
    }

    /// Stdout until it contains `needle`; what was read.
    async fn stdout_until(&mut self, needle: &str) -> String {
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains(needle) {
            match self.next().await.expect("outputs") {
                Some(Output::Stdout(b)) => seen.extend(b),
                other => panic!(
                    "waiting for {needle:?} after {:?}: {other:?}",
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    }
}

#[derive(Debug, Default)]
struct Ran {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit_code: Option<i32>,
}

impl Ran {
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

async fn run(client: &mut AgentClient<Channel>, req: ExecRequest) -> Ran {
    let what = req.command.clone();
    start(client, req)
        .await
        .unwrap_or_else(|s| panic!("{what:?}: {s}"))
        .finish()
        .await
}

/// The pids of processes whose argv is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What libcontainer keeps for the container, and the exec directories left.
fn leftovers(f: &Fixture, id: &str) -> (Vec<String>, Vec<String>) {
    let list = |p: &Path| -> Vec<String> {
        std::fs::read_dir(p)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let dir = f.containers.container_dir(id);
    (
        list(&dir.join("libcontainer").join(id)),
        list(&dir.join("exec")),
    )
}

#[tokio::test]
async fn commands_run_in_the_container_and_report_their_ends() {
    if !root_or_skip("commands_run_in_the_container_and_report_their_ends") {
        return;
    }
    let mut f = Fixture::new();
    let mut config = f.config("exec-main", &["sleep", "100000"]);
    config.cwd = "/tmp".into();
    config.env.push("GREETING=from-the-spec".into());
    let info = f.start(&config).await;
    pod(&f, &[("app", "exec-main")]);
    let mut client = agent(&f).await;
    let state_file = f
        .containers
        .container_dir("exec-main")
        .join("libcontainer/exec-main/state.json");
    let state_before = std::fs::read(&state_file).expect("libcontainer's state");
    let (libcontainer_before, _) = leftovers(&f, "exec-main");

    let ran = run(&mut client, request("app", &["echo", "hi"])).await;
    assert_eq!(
        (ran.out().as_str(), ran.err().as_str(), ran.exit_code),
        ("hi\n", "", Some(0))
    );

    let ran = run(&mut client, request("app", &["sh", "-c", "exit 3"])).await;
    assert_eq!(ran.exit_code, Some(3));
    let ran = run(&mut client, request("app", &["sh", "-c", "kill -9 $$"])).await;
    assert_eq!(ran.exit_code, Some(137), "128 + SIGKILL");

    let ran = run(&mut client, request("app", &["sh", "-c", "echo err >&2"])).await;
    assert_eq!((ran.out().as_str(), ran.err().as_str()), ("", "err\n"));

    // The container's name, environment, working directory, pid namespace.
    let ran = run(&mut client, request("app", &["hostname"])).await;
    let host = nix::unistd::gethostname().expect("hostname");
    assert_eq!(ran.out(), "host-exec-main\n");
    assert_ne!(ran.out().trim(), host.to_string_lossy());
    let ran = run(
        &mut client,
        request(
            "app",
            &[
                "sh",
                "-c",
                "echo $GREETING $HOME; pwd; cat /proc/1/cmdline | tr '\\0' ' '",
            ],
        ),
    )
    .await;
    assert_eq!(
        ran.out(),
        "from-the-spec /root\n/tmp\nsleep 100000 ",
        "{}",
        ran.err()
    );

    // The container's capabilities and seccomp filter, as runc exec gives them.
    let ran = run(
        &mut client,
        request(
            "app",
            &[
                "grep",
                "-E",
                "^(CapEff|CapBnd|NoNewPrivs|Seccomp):",
                "/proc/self/status",
            ],
        ),
    )
    .await;
    let status = ran.out();
    assert!(status.contains("CapEff:\t00000000a80425fb"), "{status}");
    assert!(status.contains("CapBnd:\t00000000a80425fb"), "{status}");
    assert!(status.contains("NoNewPrivs:\t0"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    // And its limits (RLIMIT_NOFILE as containerd sets it, not the agent's own).
    let ran = run(&mut client, request("app", &["sh", "-c", "ulimit -n"])).await;
    let host_hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit")
        .1;
    assert_eq!(ran.out().trim(), host_hard.min(1_048_576).to_string());

    // stdin, to its end.
    let mut req = request("app", &["cat"]);
    req.stdin = true;
    let call = start(&mut client, req).await.expect("cat");
    call.send(Input::Stdin(b"hello\n".to_vec())).await;
    call.send(Input::Stdin(b"world".to_vec())).await;
    call.send(Input::CloseStdin(true)).await;
    let ran = call.finish().await;
    assert_eq!(
        (ran.out().as_str(), ran.exit_code),
        ("hello\nworld", Some(0))
    );
    // Without stdin the command reads end of file at once.
    let ran = run(&mut client, request("app", &["cat"])).await;
    assert_eq!((ran.out().as_str(), ran.exit_code), ("", Some(0)));

    // The container itself is untouched: same init, still running, no exec leftovers.
    assert_eq!(
        f.containers.state("exec-main"),
        ContainerState::Running {
            pid: info.pid,
            started_at: info.started_at
        }
    );
    let (mut libcontainer, execs) = leftovers(&f, "exec-main");
    let mut before = libcontainer_before;
    libcontainer.sort();
    before.sort();
    assert_eq!(
        libcontainer, before,
        "libcontainer's files of the container"
    );
    assert_eq!(std::fs::read(&state_file).expect("state"), state_before);
    assert!(execs.is_empty(), "exec directories left: {execs:?}");
}

#[tokio::test]
async fn the_containers_user_runs_the_command() {
    if !root_or_skip("the_containers_user_runs_the_command") {
        return;
    }
    let mut f = Fixture::new();
    let mut config = f.config("exec-user", &["sleep", "100000"]);
    config.uid = 1000;
    config.gid = 3000;
    config.additional_gids = vec![4000];
    config.allow_privilege_escalation = false;
    f.start(&config).await;
    pod(&f, &[("app", "exec-user")]);
    let mut client = agent(&f).await;
    let ran = run(
        &mut client,
        request("", &["sh", "-c", "id -u; id -g; id -G"]),
    )
    .await;
    assert_eq!(ran.out(), "1000\n3000\n3000 4000\n", "{}", ran.err());
    // no_new_privs, as the container has it; the seccomp filter then needs no privilege.
    let ran = run(
        &mut client,
        request(
            "app",
            &[
                "grep",
                "-E",
                "^(CapEff|NoNewPrivs|Seccomp):",
                "/proc/self/status",
            ],
        ),
    )
    .await;
    assert_eq!(
        ran.out(),
        "CapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n"
    );
}

#[tokio::test]
async fn commands_that_cannot_run_end_the_call_with_why() {
    if !root_or_skip("commands_that_cannot_run_end_the_call_with_why") {
        return;
    }
    let mut f = Fixture::new();
    f.start(&f.config("exec-err", &["sleep", "100000"])).await;
    f.start(&f.config("exec-other", &["sleep", "100000"])).await;
    pod(&f, &[("app", "exec-err"), ("side", "exec-other")]);
    let mut client = agent(&f).await;
    let refused = |r: Result<Call, tonic::Status>| {
        let s = r.err().expect("refused");
        let e = ApiError::from_status(&s);
        (e.reason, e.message)
    };

    let (reason, message) = refused(start(&mut client, request("app", &["nosuch"])).await);
    assert_eq!(reason, Reason::BadRequest);
    assert_eq!(
        message,
        r#"exec: "nosuch": executable file not found in $PATH"#
    );
    let (reason, message) = refused(start(&mut client, request("app", &["/etc/passwd"])).await);
    assert_eq!(reason, Reason::BadRequest);
    assert_eq!(message, r#"exec: "/etc/passwd": permission denied"#);

    let (reason, message) = refused(start(&mut client, request("db", &["ls"])).await);
    assert_eq!(reason, Reason::NotFound);
    assert_eq!(message, "container \"db\" not found in pod \"web\"");
    let (reason, message) = refused(start(&mut client, request("", &["ls"])).await);
    assert_eq!(reason, Reason::BadRequest);
    assert!(message.contains("choose one of: [app side]"), "{message}");
    let mut other_pod = request("app", &["ls"]);
    other_pod.pod = "api".into();
    let (reason, _) = refused(start(&mut client, other_pod).await);
    assert_eq!(reason, Reason::NotFound);
    let (reason, message) = refused(start(&mut client, request("app", &[])).await);
    assert_eq!(reason, Reason::BadRequest);
    assert_eq!(
        message,
        "you must specify at least one command for the container"
    );

    // A container that has ended takes no commands, and one removed is not found.
    f.containers
        .signal("exec-err", nix::sys::signal::Signal::SIGKILL)
        .expect("kill");
    f.exited("exec-err").await;
    let (reason, message) = refused(start(&mut client, request("app", &["ls"])).await);
    assert_eq!(reason, Reason::BadRequest);
    assert_eq!(message, "container \"app\" in pod \"web\" is not running");
    f.containers.remove("exec-err").await.expect("remove");
    let (reason, _) = refused(start(&mut client, request("app", &["ls"])).await);
    assert_eq!(reason, Reason::NotFound);
    // The other container never noticed.
    assert!(f.containers.state("exec-other").is_running());
}

#[tokio::test]
async fn terminals_carry_the_session_and_its_size() {
    if !root_or_skip("terminals_carry_the_session_and_its_size") {
        return;
    }
    let mut f = Fixture::new();
    f.start(&f.config("exec-tty", &["sleep", "100000"])).await;
    pod(&f, &[("app", "exec-tty")]);
    let mut client = agent(&f).await;

    let mut req = request("app", &["tty"]);
    req.tty = true;
    let ran = run(&mut client, req).await;
    let out = ran.out();
    assert!(out.trim().starts_with("/dev/pts/"), "{out:?}");
    assert!(ran.stderr.is_empty() && ran.exit_code == Some(0), "{ran:?}");

    let mut req = request(
        "app",
        &[
            "sh",
            "-c",
            "stty size; read line; echo got $line; stty size",
        ],
    );
    req.tty = true;
    req.stdin = true;
    req.size = Some(TerminalSize {
        width: 80,
        height: 24,
    });
    let mut call = start(&mut client, req).await.expect("sh on a terminal");
    let first = call.stdout_until("24 80").await;
    assert!(first.contains("24 80"), "{first:?}");
    call.send(Input::Resize(TerminalSize {
        width: 132,
        height: 43,
    }))
    .await;
    call.send(Input::Stdin(b"go\r".to_vec())).await;
    let ran = call.finish().await;
    let out = ran.out();
    assert!(out.contains("got go"), "{out:?}");
    assert!(out.contains("43 132"), "{out:?}");
    assert_eq!(ran.exit_code, Some(0));
}

#[tokio::test]
async fn commands_end_with_their_client_and_with_their_container() {
    if !root_or_skip("commands_end_with_their_client_and_with_their_container") {
        return;
    }
    let mut f = Fixture::new();
    f.start(&f.config("exec-gone", &["sleep", "100000"])).await;
    pod(&f, &[("app", "exec-gone")]);
    let mut client = agent(&f).await;

    // The client goes away: the command and what it started in the background are killed.
    for tty in [false, true] {
        let argv = ["sleep", if tty { "987653" } else { "987654" }];
        let script = format!("{} {} & exec {} {}", argv[0], argv[1], argv[0], argv[1]);
        let mut req = request("app", &["sh", "-c", &script]);
        req.tty = tty;
        let call = start(&mut client, req).await.expect("sleep");
        wait_until("both sleeps run", || processes(&argv).len() == 2).await;
        drop(call);
        wait_until("the sleeps are gone once the client is", || {
            processes(&argv).is_empty()
        })
        .await;
    }
    wait_until("exec directories are removed", || {
        leftovers(&f, "exec-gone").1.is_empty()
    })
    .await;
    assert!(f.containers.state("exec-gone").is_running());

    // The container ends: so does the command in it, and the call says how.
    let argv = ["sleep", "987655"];
    let call = start(&mut client, request("app", &argv))
        .await
        .expect("sleep");
    wait_until("the sleep runs", || processes(&argv).len() == 1).await;
    f.containers
        .signal("exec-gone", nix::sys::signal::Signal::SIGKILL)
        .expect("kill the container");
    let ran = call.finish().await;
    assert_eq!(ran.exit_code, Some(137), "{ran:?}");
    assert!(processes(&argv).is_empty());
    f.exited("exec-gone").await;
    f.containers.remove("exec-gone").await.expect("remove");
}
