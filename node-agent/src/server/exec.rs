//! The agent's `Exec` call (`skiff.agent.v1`): a command run in a running container. The first
//! input names the pod, the container and the command; the pod's record (`real::record`)
//! says which container ID runs it (`<root-dir>/containers/<id>`). The command starts through
//! the runtime's [`ExecProcess`]; errors before it runs end the call with a status (NotFound
//! for a pod or container not on this node, BadRequest for one not running or a command that
//! cannot run, in kubectl's and runc's words). Then input and output are relayed until the
//! command ends, and its exit code is the last output. When the client goes away (its input
//! fails or it stops reading), the command and what it started are ended.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skiff_api::agent_pb::exec_input::Input;
use skiff_api::agent_pb::exec_output::Output;
use skiff_api::agent_pb::{ExecInput, ExecOutput, ExecRequest};
use skiff_api::{ApiError, Reason};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::log_files::segment;
use crate::real::record::{PodRecord, Records};
use crate::runtime::containers::{read_state, ContainerState};
use crate::runtime::exec::{
    ExecCommand, ExecError, ExecIo, ExecProcess, START_TIMEOUT, TERMINATE_GRACE,
};
use crate::runtime::pty::{PtyMaster, WindowSize};
use crate::runtime::spec::valid_id;

/// The stream an `Exec` call answers with.
pub type ExecStream = ReceiverStream<Result<ExecOutput, Status>>;

/// Outputs buffered for a slow client before reading the command's output waits.
const STREAM_BUFFER: usize = 16;
/// Bytes read from the command's output at a time.
const READ_SIZE: usize = 32 * 1024;
/// How long output is still read once the command has ended: what it started in the
/// background may hold its stdout open for longer, and is not waited for.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// What a terminal gets for the end of stdin: the EOF character (^D) as typed.
const TERMINAL_EOF: u8 = 0x04;

/// Runs commands in the containers under the agent's root directory.
#[derive(Clone, Debug)]
pub struct ExecService {
    root_dir: PathBuf,
    shim: PathBuf,
}

/// The container a request runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The container's name in the pod.
    pub container: String,
    pub id: String,
    pub dir: PathBuf,
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(Reason::BadRequest, message)
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(Reason::NotFound, message)
}

/// The record of pod `namespace`/`name` on this node: by uid, or (a client that leaves the
/// uid out) by namespace and name. Reads files only. Used by `exec` and `port_forward`.
pub fn pod_record(
    root_dir: &Path,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<PodRecord, ApiError> {
    segment("namespace", namespace).map_err(|e| bad_request(e.to_string()))?;
    segment("pod name", name).map_err(|e| bad_request(e.to_string()))?;
    let records = Records::under(root_dir);
    let no_pod = || not_found(format!("pod {namespace}/{name} is not on this node"));
    let matches = |r: &PodRecord| r.namespace == namespace && r.name == name;
    if !uid.is_empty() {
        segment("pod uid", uid).map_err(|e| bad_request(e.to_string()))?;
        return records.load(uid).filter(matches).ok_or_else(no_pod);
    }
    records
        .uids()
        .into_iter()
        .filter_map(|uid| records.load(&uid))
        .find(matches)
        .ok_or_else(no_pod)
}

/// Finds the running container a request means, from the pod's record. Reads files only.
pub fn locate(root_dir: &Path, req: &ExecRequest) -> Result<Target, ApiError> {
    let rec = pod_record(root_dir, &req.namespace, &req.pod, &req.uid)?;
    let container = if req.container.is_empty() {
        match rec.containers.keys().collect::<Vec<_>>()[..] {
            [only] => only.clone(),
            ref names => {
                return Err(bad_request(format!(
                    "a container name must be specified for pod {}, choose one of: [{}]",
                    req.pod,
                    names
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                )))
            }
        }
    } else {
        req.container.clone()
    };
    let record = rec.containers.get(&container).ok_or_else(|| {
        not_found(format!(
            "container {container:?} not found in pod {:?}",
            req.pod
        ))
    })?;
    let not_running = || {
        bad_request(format!(
            "container {container:?} in pod {:?} is not running",
            req.pod
        ))
    };
    let asked = req.container_id.trim_start_matches("skiff://");
    let id = if asked.is_empty() {
        record.id.clone()
    } else {
        asked.to_string()
    };
    if id.is_empty() {
        return Err(bad_request(format!(
            "container {container:?} in pod {:?} is waiting to start",
            req.pod
        )));
    }
    if !valid_id(&id) {
        return Err(bad_request(format!(
            "invalid container ID {:?}",
            req.container_id
        )));
    }
    if id != record.id {
        // An earlier run of the container: not running, or not here any more.
        let ran_here = record
            .last
            .iter()
            .chain(record.ended.iter())
            .any(|t| t.container_id.trim_start_matches("skiff://") == id);
        return Err(if ran_here {
            not_running()
        } else {
            not_found(format!(
                "container {} of container {container:?} in pod {:?} is not on this node",
                req.container_id, req.pod
            ))
        });
    }
    let dir = root_dir.join("containers").join(&id);
    match read_state(&dir) {
        ContainerState::Running { .. } => Ok(Target { container, id, dir }),
        _ if !dir.exists() => Err(not_found(format!(
            "container {container:?} in pod {:?} is not on this node",
            req.pod
        ))),
        _ => Err(not_running()),
    }
}

/// The first input: the request.
async fn first(input: &mut Streaming<ExecInput>) -> Result<ExecRequest, Status> {
    match input.message().await? {
        Some(ExecInput {
            input: Some(Input::Start(req)),
        }) => Ok(req),
        _ => Err(bad_request(
            "exec: the first message must be the request (which pod, container and command)",
        )
        .to_status()),
    }
}

impl ExecService {
    pub fn new(root_dir: PathBuf, shim: PathBuf) -> ExecService {
        ExecService { root_dir, shim }
    }

    /// Starts the command the first input asks for and relays its input and output.
    pub async fn exec(&self, mut input: Streaming<ExecInput>) -> Result<ExecStream, Status> {
        let req = first(&mut input).await?;
        if req.command.is_empty() {
            return Err(
                bad_request("you must specify at least one command for the container").to_status(),
            );
        }
        let target = {
            let root_dir = self.root_dir.clone();
            let req = req.clone();
            tokio::task::spawn_blocking(move || locate(&root_dir, &req))
                .await
                .map_err(|e| Status::internal(format!("finding the container: {e}")))?
                .map_err(|e| e.to_status())?
        };
        let command = ExecCommand {
            container_dir: target.dir.clone(),
            id: target.id.clone(),
            command: req.command.clone(),
            stdin: req.stdin,
            tty: req.tty,
            size: req
                .size
                .as_ref()
                .and_then(|s| WindowSize::from_width_height(s.width, s.height)),
        };
        let (process, io) = ExecProcess::start(&self.shim, &command, START_TIMEOUT)
            .await
            .map_err(|e| start_error(&e, &target, &req).to_status())?;
        tracing::debug!(
            pod = %req.pod, container = %target.container, pid = process.pid(), tty = req.tty,
            "exec started: {:?}", req.command
        );
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(relay(process, io, input, tx, req.stdin));
        Ok(ReceiverStream::new(rx))
    }
}

/// The status of a command that did not start.
fn start_error(e: &ExecError, target: &Target, req: &ExecRequest) -> ApiError {
    match e {
        ExecError::Command(message) => bad_request(message.clone()),
        ExecError::NotRunning(_) => bad_request(format!(
            "container {:?} in pod {:?} is not running",
            target.container, req.pod
        )),
        other => ApiError::new(Reason::Internal, other.to_string()),
    }
}

type Sender = mpsc::Sender<Result<ExecOutput, Status>>;

fn output(o: Output) -> Result<ExecOutput, Status> {
    Ok(ExecOutput { output: Some(o) })
}

/// Copies one output stream of the command to the client until it ends (or the client does).
fn pump<R>(mut from: R, tx: Sender, wrap: fn(Vec<u8>) -> Output) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            match from.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    if tx.send(output(wrap(buf[..n].to_vec()))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!("reading the command's output: {e}");
                    return;
                }
            }
        }
    })
}

/// The terminal's output to the client until it ends (or the client does).
fn pump_terminal(master: Arc<PtyMaster>, tx: Sender) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            match master.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    if tx
                        .send(output(Output::Stdout(buf[..n].to_vec())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!("reading the command's terminal: {e}");
                    return;
                }
            }
        }
    })
}

/// Where the client's input goes.
enum Sink {
    Pipe(Option<tokio::process::ChildStdin>),
    Terminal(Arc<PtyMaster>),
}

/// How the client's input ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InputEnd {
    /// It closed its side: no more input, the command goes on.
    Closed,
    /// It failed: the client is gone.
    Gone,
}

/// Feeds the client's input to the command: stdin bytes (if the request asked for stdin),
/// terminal sizes, the end of stdin.
async fn feed(mut input: Streaming<ExecInput>, mut sink: Sink, stdin: bool) -> InputEnd {
    loop {
        let msg = match input.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                if let Sink::Pipe(pipe) = &mut sink {
                    pipe.take();
                }
                return InputEnd::Closed;
            }
            Err(status) => {
                tracing::debug!("the exec client's input failed: {status}");
                return InputEnd::Gone;
            }
        };
        match (msg.input, &mut sink) {
            (Some(Input::Stdin(data)), Sink::Pipe(pipe)) if stdin => {
                if let Some(p) = pipe {
                    if p.write_all(&data).await.is_err() {
                        // The command closed its stdin: what else comes is dropped.
                        pipe.take();
                    }
                }
            }
            (Some(Input::Stdin(data)), Sink::Terminal(master)) if stdin => {
                if let Err(e) = master.write_all(&data).await {
                    tracing::debug!("writing to the command's terminal: {e}");
                }
            }
            (Some(Input::CloseStdin(_)), Sink::Pipe(pipe)) => {
                pipe.take();
            }
            (Some(Input::CloseStdin(_)), Sink::Terminal(master)) if stdin => {
                let _ = master.write_all(&[TERMINAL_EOF]).await;
            }
            (Some(Input::Resize(size)), Sink::Terminal(master)) => {
                if let Some(size) = WindowSize::from_width_height(size.width, size.height) {
                    if let Err(e) = master.set_size(size) {
                        tracing::debug!("resizing the command's terminal: {e}");
                    }
                }
            }
            _ => {}
        }
    }
}

/// Relays until the command ends (then sends its exit code) or the client goes away (then
/// ends the command).
async fn relay(
    mut process: ExecProcess,
    io: ExecIo,
    input: Streaming<ExecInput>,
    tx: Sender,
    stdin: bool,
) {
    let (sink, pumps) = match io {
        ExecIo::Pipes {
            stdin: pipe,
            stdout,
            stderr,
        } => (
            Sink::Pipe(pipe),
            vec![
                pump(stdout, tx.clone(), Output::Stdout),
                pump(stderr, tx.clone(), Output::Stderr),
            ],
        ),
        ExecIo::Tty(master) => {
            let master = Arc::new(master);
            (
                Sink::Terminal(master.clone()),
                vec![pump_terminal(master, tx.clone())],
            )
        }
    };
    let aborts: Vec<_> = pumps.iter().map(|p| p.abort_handle()).collect();
    let abort_all = |feeder: &JoinHandle<InputEnd>| {
        feeder.abort();
        aborts.iter().for_each(|a| a.abort());
    };
    let mut feeder = tokio::spawn(feed(input, sink, stdin));
    let mut input_done = false;

    let ended = loop {
        tokio::select! {
            _ = tx.closed() => {
                tracing::debug!(pid = process.pid(), "the exec client went away: ending the command");
                process.terminate(TERMINATE_GRACE).await;
                abort_all(&feeder);
                return;
            }
            end = &mut feeder, if !input_done => {
                input_done = true;
                if !matches!(end, Ok(InputEnd::Closed)) {
                    tracing::debug!(pid = process.pid(), "the exec client is gone: ending the command");
                    process.terminate(TERMINATE_GRACE).await;
                    abort_all(&feeder);
                    return;
                }
            }
            ended = process.wait() => break ended,
        }
    };
    feeder.abort();

    // The output the command wrote, up to a grace period (background processes may keep
    // the streams open).
    let drained = async {
        for p in pumps {
            let _ = p.await;
        }
    };
    tokio::select! {
        _ = drained => {}
        _ = tokio::time::sleep(OUTPUT_GRACE) => {
            tracing::debug!("the command ended but its output stays open: not waiting for it");
        }
        _ = tx.closed() => {}
    }
    aborts.iter().for_each(|a| a.abort());

    let last = match ended {
        Ok(code) => output(Output::ExitCode(code)),
        Err(e) => {
            tracing::warn!("exec: {e}");
            Err(ApiError::new(Reason::Internal, e.to_string()).to_status())
        }
    };
    let _ = tx.send(last).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real::record::ContainerRecord;

    fn request(pod: &str, container: &str, container_id: &str) -> ExecRequest {
        ExecRequest {
            namespace: "ns".into(),
            pod: pod.into(),
            uid: "u1".into(),
            container: container.into(),
            container_id: container_id.into(),
            command: vec!["ls".into()],
            ..Default::default()
        }
    }

    fn setup(containers: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let mut rec = PodRecord {
            uid: "u1".into(),
            namespace: "ns".into(),
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
        Records::under(root.path()).save(&rec).expect("saved");
        root
    }

    fn message(r: Result<Target, ApiError>) -> (Reason, String) {
        let e = r.expect_err("refused");
        (e.reason, e.message)
    }

    #[test]
    fn requests_find_their_container_or_say_why_not() {
        let root = setup(&[("app", "c1"), ("side", "")]);
        let p = root.path();
        assert_eq!(
            message(locate(p, &request("api", "app", ""))),
            (Reason::NotFound, "pod ns/api is not on this node".into())
        );
        assert_eq!(
            message(locate(p, &request("web", "", ""))),
            (
                Reason::BadRequest,
                "a container name must be specified for pod web, choose one of: [app side]".into()
            )
        );
        assert_eq!(
            message(locate(p, &request("web", "db", ""))),
            (
                Reason::NotFound,
                "container \"db\" not found in pod \"web\"".into()
            )
        );
        assert_eq!(
            message(locate(p, &request("web", "side", ""))),
            (
                Reason::BadRequest,
                "container \"side\" in pod \"web\" is waiting to start".into()
            )
        );
        assert_eq!(
            message(locate(p, &request("web", "app", "skiff://old"))),
            (
                Reason::NotFound,
                "container skiff://old of container \"app\" in pod \"web\" is not on this node"
                    .into()
            )
        );
        // The record names c1 but its directory is gone.
        assert_eq!(
            message(locate(p, &request("web", "app", "skiff://c1"))),
            (
                Reason::NotFound,
                "container \"app\" in pod \"web\" is not on this node".into()
            )
        );
        // A container directory without a running shim: not running.
        std::fs::create_dir_all(p.join("containers/c1")).expect("dir");
        std::fs::write(p.join("containers/c1/container.json"), "{}").expect("record");
        assert_eq!(
            message(locate(p, &request("web", "app", ""))),
            (
                Reason::BadRequest,
                "container \"app\" in pod \"web\" is not running".into()
            )
        );
        let mut escape = request("web", "app", "");
        escape.uid = "../x".into();
        assert_eq!(message(locate(p, &escape)).0, Reason::BadRequest);
        // Without a uid the pod is found by name.
        let mut by_name = request("web", "db", "");
        by_name.uid = String::new();
        assert_eq!(message(locate(p, &by_name)).0, Reason::NotFound);
    }

    #[test]
    fn a_single_container_needs_no_name() {
        let root = setup(&[("app", "")]);
        assert_eq!(
            message(locate(root.path(), &request("web", "", ""))),
            (
                Reason::BadRequest,
                "container \"app\" in pod \"web\" is waiting to start".into()
            )
        );
    }
}
