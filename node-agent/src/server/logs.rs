//! The agent's `Logs` call (`skiff.agent.v1`): finds the file of the run asked for
//! (`log_files`), reads it through the pure reader (`log_lines`) and streams the output. With
//! `follow` it keeps reading as the file grows, polling every [`POLL`], and stops once the run
//! has ended (its exit recorded, its container gone, or a newer run in the pod's record) and
//! the file is drained, or when the client goes away.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use skiff_api::agent_pb::{LogChunk, LogsRequest};
use skiff_api::ApiError;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::log_files::{self, LogError, Target, Wanted};
use super::log_lines::{Options, Reader};
use crate::runtime::containers::{read_state, ContainerState};

/// How often a followed log is looked at for more.
pub const POLL: Duration = Duration::from_millis(100);
/// Bytes read from the file at a time (and so at most in one chunk, plus timestamps).
const READ_SIZE: usize = 64 * 1024;
/// Chunks buffered for a slow client before reading waits.
const STREAM_BUFFER: usize = 16;

impl From<LogError> for Status {
    fn from(e: LogError) -> Status {
        ApiError::new(e.reason(), e.to_string()).to_status()
    }
}

/// The reading options a request asks for, with `since_seconds` counted back from `now`.
pub fn options(req: &LogsRequest, now: Timestamp) -> Result<Options, LogError> {
    let non_negative = |what: &'static str, v: Option<i64>| match v {
        Some(n) if n < 0 => Err(LogError::Negative { what, value: n }),
        other => Ok(other.map(|n| n as u64)),
    };
    let tail_lines = non_negative("tail_lines", req.tail_lines)?.map(|n| n as usize);
    let limit_bytes = non_negative("limit_bytes", req.limit_bytes)?;
    let since_seconds = non_negative("since_seconds", req.since_seconds)?;
    let since = if !req.since_time.is_empty() {
        Some(
            req.since_time
                .parse::<Timestamp>()
                .map_err(|_| LogError::BadSince(req.since_time.clone()))?,
        )
    } else {
        since_seconds.map(|s| {
            now.checked_sub(SignedDuration::from_secs(s.min(i64::MAX as u64) as i64))
                .unwrap_or(Timestamp::MIN)
        })
    };
    Ok(Options {
        tail_lines,
        since,
        timestamps: req.timestamps,
        limit_bytes,
    })
}

/// Serves `Logs` from the files under the agent's root directory.
#[derive(Clone, Debug)]
pub struct LogService {
    root_dir: PathBuf,
}

impl LogService {
    pub fn new(root_dir: PathBuf) -> LogService {
        LogService { root_dir }
    }
}

/// The stream a `Logs` call answers with.
pub type LogsStream = ReceiverStream<Result<LogChunk, Status>>;

impl LogService {
    /// Opens the log a request asks for and streams it.
    pub async fn logs(&self, req: LogsRequest) -> Result<LogsStream, Status> {
        let target = log_files::locate(
            &self.root_dir,
            &Wanted {
                namespace: &req.namespace,
                pod: &req.pod,
                uid: &req.uid,
                container: &req.container,
                container_id: &req.container_id,
                previous: req.previous,
            },
        )?;
        let reader = Reader::new(options(&req, Timestamp::now())?);
        tracing::debug!(
            pod = %req.pod, container = %req.container, file = ?target.path, follow = req.follow,
            "serving a log"
        );
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let follow = req.follow.then(|| Followed {
            root_dir: self.root_dir.clone(),
            uid: req.uid.clone(),
            container: req.container.clone(),
        });
        let (pod, container) = (req.pod, req.container);
        tokio::spawn(async move {
            match stream(target, reader, follow, &tx).await {
                Ok(end) => tracing::debug!(%pod, %container, "log stream ended: {}", end.as_str()),
                Err(e) => {
                    tracing::warn!(%pod, %container, "reading the log: {e}");
                    let _ = tx
                        .send(Err(Status::internal(format!("reading the log: {e}"))))
                        .await;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

/// What following needs to tell when the run has ended.
struct Followed {
    root_dir: PathBuf,
    uid: String,
    container: String,
}

impl Followed {
    fn ended(&self, target: &Target) -> bool {
        let dir = self.root_dir.join("containers").join(&target.run.id);
        if !dir.exists() || matches!(read_state(&dir), ContainerState::Exited(_)) {
            return true;
        }
        log_files::newest_run(&self.root_dir, &self.uid, &self.container)
            .is_none_or(|newest| newest.id != target.run.id)
    }
}

type Sender = mpsc::Sender<Result<LogChunk, Status>>;

/// Why a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The whole file was sent (not following).
    Read,
    /// The followed run ended and its file was drained.
    RunEnded,
    /// The byte limit was reached.
    Limit,
    /// The client went away.
    ClientGone,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Read => "the log was read",
            End::RunEnded => "the container's run ended",
            End::Limit => "the byte limit was reached",
            End::ClientGone => "the client went away",
        }
    }
}

/// Sends `data` unless empty; false when the client has gone.
async fn send(tx: &Sender, data: Vec<u8>) -> bool {
    data.is_empty() || tx.send(Ok(LogChunk { data })).await.is_ok()
}

/// Opens the file, or None while it does not exist.
async fn open(path: &Path) -> std::io::Result<Option<tokio::fs::File>> {
    match tokio::fs::File::open(path).await {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `path` now names another file than the open `file` (the log was rotated), or none.
async fn replaced(file: &tokio::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(open), Ok(named)) = (file.metadata().await, tokio::fs::metadata(path).await) else {
        return true;
    };
    (open.dev(), open.ino()) != (named.dev(), named.ino())
}

/// Reads what the file holds now into the reader; returns the output and whether anything
/// was read.
async fn drain(
    file: &mut tokio::fs::File,
    reader: &mut Reader,
    buf: &mut [u8],
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut read_any = false;
    loop {
        let n = file.read(buf).await?;
        if n == 0 {
            return Ok((out, read_any));
        }
        read_any = true;
        out.extend(reader.feed(&buf[..n]));
        if out.len() >= READ_SIZE || reader.done() {
            return Ok((out, read_any));
        }
    }
}

/// Sends what `drain` gave; Some(end) when the stream is over.
async fn sent(tx: &Sender, out: Vec<u8>, reader: &Reader) -> Option<End> {
    if !send(tx, out).await {
        return Some(End::ClientGone);
    }
    reader.done().then_some(End::Limit)
}

/// Reads the file to its present end, sending as it goes.
async fn read_to_end(
    file: &mut tokio::fs::File,
    reader: &mut Reader,
    buf: &mut [u8],
    tx: &Sender,
) -> std::io::Result<Option<End>> {
    loop {
        let (out, more) = drain(file, reader, buf).await?;
        if let Some(end) = sent(tx, out, reader).await {
            return Ok(Some(end));
        }
        if !more {
            return Ok(None);
        }
    }
}

async fn stream(
    target: Target,
    mut reader: Reader,
    follow: Option<Followed>,
    tx: &Sender,
) -> std::io::Result<End> {
    let mut buf = vec![0u8; READ_SIZE];
    let mut file = open(&target.path).await?;
    let Some(follow) = follow else {
        if let Some(f) = file.as_mut() {
            if let Some(end) = read_to_end(f, &mut reader, &mut buf, tx).await? {
                return Ok(end);
            }
        }
        return Ok(sent(tx, reader.finish(), &reader)
            .await
            .unwrap_or(End::Read));
    };
    let mut caught_up = false;
    loop {
        if file.is_none() {
            file = open(&target.path).await?;
        }
        if let Some(f) = file.as_mut() {
            if let Some(end) = read_to_end(f, &mut reader, &mut buf, tx).await? {
                return Ok(end);
            }
        }
        if !caught_up {
            caught_up = true;
            if let Some(end) = sent(tx, reader.caught_up(), &reader).await {
                return Ok(end);
            }
        }
        // The file was rotated (renamed, a new one begun): read what the old one got last,
        // then go on with the new one.
        if let Some(f) = file.as_mut() {
            if replaced(f, &target.path).await {
                if let Some(end) = read_to_end(f, &mut reader, &mut buf, tx).await? {
                    return Ok(end);
                }
                file = open(&target.path).await?;
                continue;
            }
        }
        // Nothing more for now. A run that has ended gets one last read (what it wrote
        // before its exit was recorded), then the stream ends.
        if follow.ended(&target) {
            if file.is_none() {
                file = open(&target.path).await?;
            }
            if let Some(f) = file.as_mut() {
                if let Some(end) = read_to_end(f, &mut reader, &mut buf, tx).await? {
                    return Ok(end);
                }
            }
            return Ok(sent(tx, reader.finish(), &reader)
                .await
                .unwrap_or(End::RunEnded));
        }
        tokio::select! {
            _ = tx.closed() => return Ok(End::ClientGone),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> LogsRequest {
        LogsRequest {
            namespace: "ns".into(),
            pod: "web".into(),
            uid: "u1".into(),
            container: "app".into(),
            ..Default::default()
        }
    }

    #[test]
    fn options_from_requests() {
        let now: Timestamp = "2026-12-04T10:00:00Z".parse().expect("time");
        let o = options(
            &LogsRequest {
                tail_lines: Some(5),
                since_seconds: Some(60),
                timestamps: true,
                limit_bytes: Some(10),
                ..request()
            },
            now,
        )
        .expect("valid");
        assert_eq!(o.tail_lines, Some(5));
        assert_eq!(o.since, Some("2026-12-04T09:59:00Z".parse().expect("time")));
        assert!(o.timestamps);
        assert_eq!(o.limit_bytes, Some(10));
        let at = options(
            &LogsRequest {
                since_time: "2026-12-04T11:00:00+01:00".into(),
                ..request()
            },
            now,
        )
        .expect("valid");
        assert_eq!(
            at.since,
            Some("2026-12-04T10:00:00Z".parse().expect("time"))
        );
        assert_eq!(
            options(
                &LogsRequest {
                    since_time: "yesterday".into(),
                    ..request()
                },
                now
            ),
            Err(LogError::BadSince("yesterday".into()))
        );
        assert!(matches!(
            options(
                &LogsRequest {
                    tail_lines: Some(-1),
                    ..request()
                },
                now
            ),
            Err(LogError::Negative { .. })
        ));
    }

    /// The service end to end on files: a record, a log, a follow that ends with the run.
    #[tokio::test]
    async fn serves_a_log_and_follows_it_until_the_run_ends() {
        use crate::real::record::{ContainerRecord, PodRecord, Records};
        use crate::runtime::cri_log::{format_record, Stream, Tag};
        use std::io::Write;
        use tokio_stream::StreamExt;

        let root = tempfile::tempdir().expect("tempdir");
        let mut rec = PodRecord {
            uid: "u1".into(),
            namespace: "ns".into(),
            name: "web".into(),
            ..Default::default()
        };
        rec.containers.insert(
            "app".into(),
            ContainerRecord {
                id: "c1".into(),
                ..Default::default()
            },
        );
        Records::under(root.path()).save(&rec).expect("record");
        // The container's directory without an exit record: it runs.
        let cdir = root.path().join("containers/c1/state");
        std::fs::create_dir_all(&cdir).expect("container dir");
        let log = root.path().join("logs/ns_web_u1/app/0.log");
        std::fs::create_dir_all(log.parent().expect("dir")).expect("log dir");
        let t: Timestamp = "2026-12-04T10:00:00Z".parse().expect("time");
        let mut f = std::fs::File::create(&log).expect("log");
        f.write_all(&format_record(t, Stream::Stdout, Tag::Full, b"one"))
            .expect("write");

        let svc = LogService::new(root.path().to_path_buf());
        let whole = svc.logs(request()).await.expect("logs");
        let got: Vec<u8> = whole
            .map(|c| c.expect("chunk").data)
            .collect::<Vec<_>>()
            .await
            .concat();
        assert_eq!(got, b"one\n");

        let mut followed = svc
            .logs(LogsRequest {
                follow: true,
                ..request()
            })
            .await
            .expect("logs");
        let first = followed.next().await.expect("chunk").expect("ok");
        assert_eq!(first.data, b"one\n");
        f.write_all(&format_record(t, Stream::Stderr, Tag::Full, b"two"))
            .expect("write");
        let second = tokio::time::timeout(Duration::from_secs(5), followed.next())
            .await
            .expect("in time")
            .expect("chunk")
            .expect("ok");
        assert_eq!(second.data, b"two\n");
        // The run ends (its container goes): the stream ends.
        std::fs::remove_dir_all(root.path().join("containers/c1")).expect("removed");
        let end = tokio::time::timeout(Duration::from_secs(5), followed.next())
            .await
            .expect("in time");
        assert!(end.is_none(), "{end:?}");

        let missing = svc
            .logs(LogsRequest {
                uid: "other".into(),
                ..request()
            })
            .await
            .expect_err("no such pod");
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }
}
