//! Which file holds the log a request asks for. A container's n-th run writes
//! `<root-dir>/logs/<namespace>_<pod>_<uid>/<container>/<n>.log` (the layout `real::sync`
//! uses); the pod's record (`real::record`) says which container ID ran as which n: the
//! current (or last) run is number `restart_count`, the one before it `restart_count - 1`, and
//! while a new run is being started the record already names it, one number up. Which run
//! comes from the request: a container ID from the pod's status, else the newest run, or with
//! `previous` the one before. Pure but for [`locate`], which reads the record.

use std::path::{Path, PathBuf};

use skiff_api::Reason;

use crate::real::record::{ContainerRecord, Records};

/// Why a log cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("invalid {what} {value:?}: must be a non-empty name without '/'")]
    BadName { what: &'static str, value: String },
    #[error("pod {namespace}/{pod} (uid {uid}) is not on this node")]
    NoPod {
        namespace: String,
        pod: String,
        uid: String,
    },
    #[error("container {container:?} in pod {pod:?} is waiting to start - no logs yet")]
    NotStarted { container: String, pod: String },
    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    NoPrevious { container: String, pod: String },
    #[error("container {id} of container {container:?} in pod {pod:?} is no longer on this node")]
    NoRun {
        id: String,
        container: String,
        pod: String,
    },
    #[error("invalid since time {0:?}: must be an RFC 3339 time")]
    BadSince(String),
    #[error("invalid {what} {value}: must not be negative")]
    Negative { what: &'static str, value: i64 },
}

impl LogError {
    /// The Kubernetes reason a client sees.
    pub fn reason(&self) -> Reason {
        match self {
            LogError::NoPod { .. } | LogError::NoRun { .. } => Reason::NotFound,
            _ => Reason::BadRequest,
        }
    }
}

/// One run of a container: its ID (without `skiff://`) and the number of its log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub id: String,
    pub number: i32,
}

fn bare(id: &str) -> &str {
    id.trim_start_matches("skiff://")
}

/// The runs the record knows, newest first.
pub fn runs(r: &ContainerRecord) -> Vec<Run> {
    let mut out = Vec::new();
    if r.id.is_empty() {
        return out;
    }
    let mut number = r.restart_count;
    // A run that ended and is being replaced: the record names the new one already.
    if let Some(ended) = r.ended.as_ref().filter(|e| bare(&e.container_id) != r.id) {
        out.push(Run {
            id: r.id.clone(),
            number: number + 1,
        });
        out.push(Run {
            id: bare(&ended.container_id).to_string(),
            number,
        });
    } else {
        out.push(Run {
            id: r.id.clone(),
            number,
        });
    }
    number -= 1;
    if let Some(last) = r.last.as_ref().filter(|_| number >= 0) {
        out.push(Run {
            id: bare(&last.container_id).to_string(),
            number,
        });
    }
    out
}

/// The run a request means: the one `container_id` names, else the newest (or, `previous`,
/// the one before it).
pub fn pick(
    r: &ContainerRecord,
    container_id: &str,
    previous: bool,
    container: &str,
    pod: &str,
) -> Result<Run, LogError> {
    let runs = runs(r);
    if !container_id.is_empty() {
        let id = bare(container_id);
        return runs
            .into_iter()
            .find(|run| run.id == id)
            .ok_or_else(|| LogError::NoRun {
                id: container_id.into(),
                container: container.into(),
                pod: pod.into(),
            });
    }
    let mut runs = runs.into_iter();
    let newest = runs.next().ok_or_else(|| LogError::NotStarted {
        container: container.into(),
        pod: pod.into(),
    })?;
    if !previous {
        return Ok(newest);
    }
    runs.next().ok_or_else(|| LogError::NoPrevious {
        container: container.into(),
        pod: pod.into(),
    })
}

/// A name that can be one path segment.
pub fn segment(what: &'static str, value: &str) -> Result<(), LogError> {
    if value.is_empty()
        || value.contains('/')
        || value == "."
        || value == ".."
        || value.contains('\0')
    {
        return Err(LogError::BadName {
            what,
            value: value.into(),
        });
    }
    Ok(())
}

/// The directory of a pod's logs.
pub fn pod_log_dir(root_dir: &Path, namespace: &str, pod: &str, uid: &str) -> PathBuf {
    root_dir
        .join("logs")
        .join(format!("{namespace}_{pod}_{uid}"))
}

/// The file of run `number` of `container`.
pub fn log_file(pod_dir: &Path, container: &str, number: i32) -> PathBuf {
    pod_dir.join(container).join(format!("{number}.log"))
}

/// What a request reads: the file and the container ID of the run that writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    pub run: Run,
}

/// Who asks: the pod, the container and which run.
#[derive(Clone, Copy, Debug)]
pub struct Wanted<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub uid: &'a str,
    pub container: &'a str,
    pub container_id: &'a str,
    pub previous: bool,
}

/// Finds the file a request reads, from the pod's record under `<root-dir>/pods`.
pub fn locate(root_dir: &Path, w: &Wanted<'_>) -> Result<Target, LogError> {
    segment("namespace", w.namespace)?;
    segment("pod name", w.pod)?;
    segment("pod uid", w.uid)?;
    segment("container name", w.container)?;
    let records = Records::under(root_dir);
    let no_pod = || LogError::NoPod {
        namespace: w.namespace.into(),
        pod: w.pod.into(),
        uid: w.uid.into(),
    };
    let rec = records.load(w.uid).ok_or_else(no_pod)?;
    if rec.namespace != w.namespace || rec.name != w.pod {
        return Err(no_pod());
    }
    let not_started = || LogError::NotStarted {
        container: w.container.into(),
        pod: w.pod.into(),
    };
    let c = rec.containers.get(w.container).ok_or_else(not_started)?;
    let run = pick(c, w.container_id, w.previous, w.container, w.pod)?;
    let dir = pod_log_dir(root_dir, w.namespace, w.pod, w.uid);
    Ok(Target {
        path: log_file(&dir, w.container, run.number),
        run,
    })
}

/// The run the record names as newest now (a followed run that is no longer it has ended).
pub fn newest_run(root_dir: &Path, uid: &str, container: &str) -> Option<Run> {
    let records = Records::under(root_dir);
    let rec = records.load(uid)?;
    runs(rec.containers.get(container)?).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real::record::PodRecord;

    fn record(id: &str, restarts: i32, last: Option<&str>, end: Option<&str>) -> ContainerRecord {
        // How a run ended, as the record keeps it (only the container ID matters here).
        let ended = |id: &str| {
            serde_json::from_value(serde_json::json!({
                "exit_code": 1, "signal": null, "reason": "Error", "message": "",
                "started_at": null, "finished_at": null, "container_id": format!("skiff://{id}"),
            }))
            .expect("an ended run")
        };
        ContainerRecord {
            id: id.into(),
            restart_count: restarts,
            last: last.map(ended),
            ended: end.map(ended),
            ..Default::default()
        }
    }

    fn run(id: &str, number: i32) -> Run {
        Run {
            id: id.into(),
            number,
        }
    }

    #[test]
    fn runs_number_the_files_the_shim_writes() {
        let cases = vec![
            ("never started", record("", 0, None, None), vec![]),
            ("first run", record("a", 0, None, None), vec![run("a", 0)]),
            (
                "first run ended",
                record("a", 0, None, Some("a")),
                vec![run("a", 0)],
            ),
            (
                "second run",
                record("b", 1, Some("a"), None),
                vec![run("b", 1), run("a", 0)],
            ),
            (
                "third run being started",
                record("c", 1, Some("a"), Some("b")),
                vec![run("c", 2), run("b", 1), run("a", 0)],
            ),
            (
                "third run",
                record("c", 2, Some("b"), None),
                vec![run("c", 2), run("b", 1)],
            ),
        ];
        for (what, r, want) in cases {
            assert_eq!(runs(&r), want, "{what}");
        }
    }

    #[test]
    fn a_request_picks_a_run() {
        let r = record("c", 2, Some("b"), None);
        let pick = |id: &str, previous: bool| pick(&r, id, previous, "app", "web");
        assert_eq!(pick("", false), Ok(run("c", 2)));
        assert_eq!(pick("", true), Ok(run("b", 1)));
        assert_eq!(pick("skiff://b", false), Ok(run("b", 1)));
        assert_eq!(pick("c", true), Ok(run("c", 2)), "the ID wins");
        assert_eq!(
            pick("skiff://zz", false).map_err(|e| e.to_string()),
            Err("container skiff://zz of container \"app\" in pod \"web\" is no longer on this node".into())
        );
        let first = record("a", 0, None, None);
        assert_eq!(
            super::pick(&first, "", true, "app", "web").map_err(|e| e.to_string()),
            Err("previous terminated container \"app\" in pod \"web\" not found".into())
        );
        let never = ContainerRecord::default();
        assert!(matches!(
            super::pick(&never, "", false, "app", "web"),
            Err(LogError::NotStarted { .. })
        ));
    }

    #[test]
    fn names_must_be_single_segments() {
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(segment("pod name", bad).is_err(), "{bad:?}");
        }
        assert!(segment("pod name", "web-1.x").is_ok());
    }

    #[test]
    fn locate_reads_the_record_and_checks_the_pod() {
        let root = tempfile::tempdir().expect("tempdir");
        let records = Records::under(root.path());
        let mut rec = PodRecord {
            uid: "u1".into(),
            namespace: "ns".into(),
            name: "web".into(),
            ..Default::default()
        };
        rec.containers
            .insert("app".into(), record("b", 1, Some("a"), None));
        records.save(&rec).expect("saved");
        let wanted = Wanted {
            namespace: "ns",
            pod: "web",
            uid: "u1",
            container: "app",
            container_id: "",
            previous: true,
        };
        let t = locate(root.path(), &wanted).expect("found");
        assert_eq!(t.path, root.path().join("logs/ns_web_u1/app/0.log"));
        assert_eq!(t.run, run("a", 0));
        let other = Wanted {
            pod: "api",
            ..wanted
        };
        assert!(matches!(
            locate(root.path(), &other),
            Err(LogError::NoPod { .. })
        ));
        let escape = Wanted {
            container: "..",
            ..wanted
        };
        assert!(matches!(
            locate(root.path(), &escape),
            Err(LogError::BadName { .. })
        ));
        let missing = Wanted {
            container: "sidecar",
            ..wanted
        };
        assert!(matches!(
            locate(root.path(), &missing),
            Err(LogError::NotStarted { .. })
        ));
        assert_eq!(newest_run(root.path(), "u1", "app"), Some(run("b", 1)));
    }
}
