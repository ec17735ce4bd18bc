//! The API's watch: the store's change feed over a kind's key prefix, turned into Kubernetes
//! watch events. Selectors apply to both sides of a change, as in Kubernetes: an object that
//! starts matching is ADDED, one that stops matching is DELETED. Bookmarks report the revision
//! reached; a compacted start ends the stream with a 410 Expired status.

use std::sync::Arc;
use std::time::Duration;

use raft_store::mvcc::key_range::{prefix_end, KeyRange};
use raft_store::mvcc::kvstore::{Event, EventKind, Record};
use raft_store::watch::feed::{Feed, FeedError};
use serde_json::{json, Value};
use skiff_api::pb::{WatchEvent, WatchRequest};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::{object, ApiError, Kind};
use tokio::sync::mpsc;
use tonic::Status;

use super::registry::{unavailable, Registry};

/// How often a watch that allows bookmarks gets one.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(1);
/// Events buffered per stream before a slow client holds its watch back.
const STREAM_BUFFER: usize = 256;

/// Which objects a watch reports.
pub struct Filter {
    pub kind: Kind,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches_object(obj)
    }
}

fn decode(rec: &Record, revision: i64) -> Option<Value> {
    let mut obj: Value = serde_json::from_slice(&rec.value).ok()?;
    object::set_meta(&mut obj, "resourceVersion", revision.to_string().into());
    Some(obj)
}

fn event(kind: &str, obj: &Value) -> Result<WatchEvent, Status> {
    Ok(WatchEvent {
        r#type: kind.into(),
        object: serde_json::to_vec(obj).map_err(|e| Status::internal(e.to_string()))?,
    })
}

/// The watch event one store change makes for `filter`, if any.
pub fn translate(filter: &Filter, e: &Event) -> Option<(&'static str, Value)> {
    let revision = e.kv.mod_revision;
    let before = e
        .prev
        .as_ref()
        .and_then(|p| decode(p, p.mod_revision))
        .filter(|o| filter.matches(o));
    match e.kind {
        EventKind::Put => {
            let now = decode(&e.kv, revision)?;
            match (before.is_some(), filter.matches(&now)) {
                (_, true) if e.kv.create_revision == revision => Some(("ADDED", now)),
                (true, true) => Some(("MODIFIED", now)),
                (false, true) => Some(("ADDED", now)),
                (true, false) => Some(("DELETED", now)),
                (false, false) => None,
            }
        }
        EventKind::Delete => {
            let mut last = before?;
            object::set_meta(&mut last, "resourceVersion", revision.to_string().into());
            Some(("DELETED", last))
        }
    }
}

fn expired(wanted: i64, compacted: i64) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("too old resource version: {wanted} ({compacted})"),
        "reason": "Expired",
        "code": 410
    })
}

fn bookmark(kind: &Kind, revision: i64) -> Value {
    json!({
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {"resourceVersion": revision.to_string()}
    })
}

fn prefix_range(prefix: &str) -> KeyRange {
    KeyRange::new(prefix.as_bytes(), &prefix_end(prefix.as_bytes()))
}

/// Starts a watch for `req`; its events arrive on the returned channel.
pub async fn start(
    registry: Arc<Registry>,
    req: WatchRequest,
) -> Result<mpsc::Receiver<Result<WatchEvent, Status>>, ApiError> {
    let kind = Kind::of(&req.api_version, &req.kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "no matches for kind \"{}\" in version \"{}\"",
            req.kind, req.api_version
        ))
    })?;
    let filter = Filter {
        kind,
        labels: LabelSelector::parse(&req.label_selector)
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
        fields: FieldSelector::parse(&req.field_selector, kind.kind)
            .map_err(ApiError::bad_request)?,
    };
    let namespace = (!req.namespace.is_empty()).then_some(req.namespace.as_str());
    let prefix = kind.prefix(namespace);
    let replica = registry.replica().clone();
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);

    // Where the feed starts, and what is sent before it.
    let mut initial = Vec::new();
    let internal = |e: Status| ApiError::new(skiff_api::Reason::Internal, e.message());
    let from = match req.resource_version.as_str() {
        "" | "0" => {
            let (items, revision) = registry.list(&prefix).await?;
            for s in items.into_iter().filter(|s| filter.matches(&s.object)) {
                initial.push(event("ADDED", &s.object).map_err(internal)?);
            }
            // The end of the initial events: a client that resumes resumes from here.
            if req.allow_bookmarks {
                initial.push(event("BOOKMARK", &bookmark(&kind, revision)).map_err(internal)?);
            }
            revision + 1
        }
        rv => {
            let rv: i64 = rv.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {rv:?}: not a number"))
            })?;
            // Linearize so that "after rv" is judged against a replica that has seen rv.
            replica.linearize().await.map_err(unavailable)?;
            rv + 1
        }
    };
    let mut feed = Feed::new(replica.sm.clone(), prefix_range(&prefix), from);
    let bookmarks = req.allow_bookmarks;
    tokio::spawn(async move {
        for e in initial {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            tokio::select! {
                batch = feed.next() => match batch {
                    Ok(batch) => {
                        for e in &batch.events {
                            if let Some((ty, obj)) = translate(&filter, e) {
                                let Ok(ev) = event(ty, &obj) else { continue };
                                if tx.send(Ok(ev)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Err(FeedError::Compacted { wanted, compacted }) => {
                        if let Ok(ev) = event("ERROR", &expired(wanted - 1, compacted)) {
                            let _ = tx.send(Ok(ev)).await;
                        }
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                        return;
                    }
                },
                _ = ticker.tick(), if bookmarks => {
                    let Ok(ev) = event("BOOKMARK", &bookmark(&filter.kind, feed.synced_revision())) else { continue };
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(value: &Value, create: i64, modified: i64) -> Record {
        Record {
            key: b"/registry/pods/default/a".to_vec(),
            value: serde_json::to_vec(value).unwrap(),
            create_revision: create,
            mod_revision: modified,
            version: 1,
            lease: 0,
            tombstone: false,
        }
    }

    fn filter(labels: &str) -> Filter {
        Filter {
            kind: Kind::named("pods").unwrap(),
            labels: LabelSelector::parse(labels).unwrap(),
            fields: FieldSelector::default(),
        }
    }

    #[test]
    fn changes_in_and_out_of_a_selector_are_adds_and_deletes() {
        let web = json!({"metadata": {"name": "a", "labels": {"app": "web"}}});
        let db = json!({"metadata": {"name": "a", "labels": {"app": "db"}}});
        let f = filter("app=web");
        let put = |now: &Value, prev: Option<&Value>| Event {
            kind: EventKind::Put,
            kv: rec(now, 2, 5),
            prev: prev.map(|p| rec(p, 2, 4)),
        };
        assert_eq!(translate(&f, &put(&web, Some(&web))).unwrap().0, "MODIFIED");
        assert_eq!(translate(&f, &put(&web, Some(&db))).unwrap().0, "ADDED");
        let (ty, obj) = translate(&f, &put(&db, Some(&web))).unwrap();
        assert_eq!(ty, "DELETED");
        assert_eq!(obj["metadata"]["resourceVersion"], "5");
        assert!(translate(&f, &put(&db, Some(&db))).is_none());
        let created = Event {
            kind: EventKind::Put,
            kv: rec(&web, 5, 5),
            prev: None,
        };
        assert_eq!(translate(&f, &created).unwrap().0, "ADDED");
    }

    #[test]
    fn a_delete_carries_the_last_state_at_the_delete_revision() {
        let web = json!({"metadata": {"name": "a", "labels": {"app": "web"}}});
        let mut tomb = rec(&json!(null), 0, 9);
        tomb.value.clear();
        tomb.tombstone = true;
        let del = Event {
            kind: EventKind::Delete,
            kv: tomb,
            prev: Some(rec(&web, 2, 4)),
        };
        let (ty, obj) = translate(&filter(""), &del).unwrap();
        assert_eq!(ty, "DELETED");
        assert_eq!(obj["metadata"]["resourceVersion"], "9");
        assert_eq!(obj["metadata"]["labels"]["app"], "web");
    }
}
