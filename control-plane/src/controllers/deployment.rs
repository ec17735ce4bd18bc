//! Deployments: roll a pod template out through ReplicaSets, as Kubernetes does.
//!
//! Each template gets a ReplicaSet named `<deployment>-<pod-template-hash>` whose selector and
//! pods carry that hash as the `pod-template-hash` label, and a revision number
//! (`deployment.kubernetes.io/revision`). `plan` (pure) looks at the Deployment, its
//! ReplicaSets and their pods, and decides:
//! - RollingUpdate: grow the new ReplicaSet while the pods of all its ReplicaSets stay within
//!   `replicas + maxSurge`, and shrink the old ones while the available pods stay at least
//!   `replicas - maxUnavailable`. Counts come from the pods themselves (a ReplicaSet counts as
//!   the larger of its spec and its live pods), so both limits hold at every step.
//! - Recreate: scale the old ReplicaSets to zero, wait until their pods are gone, then scale
//!   up the new one.
//! - Paused: no new ReplicaSet; a changed replica count goes to the newest active one.
//! - History: old ReplicaSets at zero beyond `revisionHistoryLimit` are deleted, oldest first.
//!   A template that matches an old ReplicaSet (a rollback) reuses it under a new revision.
//! - Status: replica counts, and the Available and Progressing conditions (with the progress
//!   deadline).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
pub use skiff_api::deployments::{unhashed, CHANGE_CAUSE, HASH_LABEL, REVISION};
use skiff_api::{object, Kind};

use super::pods::{self, is_active, owned_by, spec_int};
use super::runner::{sooner, values, Again, Pass};
use super::Context;

pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// The characters a template hash is written with (no vowels, no look-alikes).
const HASH_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The template's hash: FNV-1a (32 bits) of its JSON and the collision count, each decimal
/// digit mapped into `HASH_ALPHABET`.
pub fn template_hash(template: &Value, collision_count: i64) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let text = template.to_string();
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(text.as_bytes());
    if collision_count > 0 {
        feed(&collision_count.to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| HASH_ALPHABET[usize::from(b) % HASH_ALPHABET.len()] as char)
        .collect()
}

/// An intOrString (`3` or `"25%"`) resolved against `total`: percentages round up for surge
/// and down for unavailability.
pub fn int_or_percent(v: Option<&Value>, total: i64, round_up: bool) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0).max(0),
        Some(Value::String(s)) => {
            let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return s.parse::<i64>().unwrap_or(0).max(0);
            };
            let scaled = total * p.max(0);
            if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            }
        }
        _ => 0,
    }
}

/// (maxSurge, maxUnavailable) as pod counts; never both zero.
pub fn limits(d: &Value) -> (i64, i64) {
    let replicas = spec_int(d, "replicas", 1).max(0);
    let ru = object::field(d, "spec.strategy.rollingUpdate");
    let surge = int_or_percent(
        ru.and_then(|r| r.get("maxSurge")).or(Some(&json!("25%"))),
        replicas,
        true,
    );
    let unavailable = int_or_percent(
        ru.and_then(|r| r.get("maxUnavailable"))
            .or(Some(&json!("25%"))),
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

pub fn revision_of(obj: &Value) -> i64 {
    object::annotations(obj)
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// One of the Deployment's ReplicaSets and its pods.
#[derive(Debug, Clone)]
struct Set<'a> {
    rs: &'a Value,
    name: String,
    /// spec.replicas
    spec: i64,
    /// Active pods (not terminating, not finished).
    active: i64,
    ready: i64,
    available: i64,
    /// Pods not yet gone (terminating ones included).
    present: i64,
    revision: i64,
}

impl Set<'_> {
    /// What the set may run: its spec, or more while extra pods are still being removed.
    fn weight(&self) -> i64 {
        self.spec.max(self.active)
    }
}

/// A write the plan makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Create(Value),
    Update(Value),
    /// Delete the ReplicaSet of this name.
    Delete(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub writes: Vec<Write>,
    /// New annotations for the Deployment, when they change.
    pub annotations: Option<BTreeMap<String, String>>,
    pub status: Value,
    /// Messages of ScalingReplicaSet events.
    pub events: Vec<String>,
    pub again: Again,
}

/// The ReplicaSet for `d`'s current template, named with `hash`, at `replicas`.
fn new_replica_set(d: &Value, hash: &str, replicas: i64, revision: i64) -> Value {
    let mut template = object::field(d, "spec.template")
        .cloned()
        .unwrap_or(json!({}));
    object::set_in(
        &mut template,
        &["metadata", "labels", HASH_LABEL],
        json!(hash),
    );
    let mut selector = object::field(d, "spec.selector")
        .cloned()
        .unwrap_or(json!({}));
    object::set_in(&mut selector, &["matchLabels", HASH_LABEL], json!(hash));
    let mut annotations = json!({ REVISION: revision.to_string() });
    if let Some(cause) = object::annotations(d).get(CHANGE_CAUSE) {
        annotations[CHANGE_CAUSE] = json!(cause);
    }
    let mut spec = json!({
        "replicas": replicas,
        "selector": selector,
        "template": template.clone(),
    });
    if let Some(m) = object::field(d, "spec.minReadySeconds") {
        spec["minReadySeconds"] = m.clone();
    }
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{}-{hash}", object::name(d)),
            "namespace": object::namespace(d),
            "labels": template["metadata"]["labels"].clone(),
            "annotations": annotations,
            "ownerReferences": [pods::owner_ref(d)],
        },
        "spec": spec,
    })
}

/// `rs` at `replicas`, annotated with the Deployment's desired and maximum counts.
fn scaled(rs: &Value, replicas: i64, desired: i64, max: i64) -> Value {
    let mut next = rs.clone();
    next["spec"]["replicas"] = json!(replicas);
    let mut annotations = object::annotations(rs);
    annotations.insert(DESIRED_REPLICAS.into(), desired.to_string());
    annotations.insert(MAX_REPLICAS.into(), max.to_string());
    object::set_meta(&mut next, "annotations", json!(annotations));
    next
}

fn scale_message(name: &str, from: i64, to: i64) -> String {
    let dir = if to > from { "up" } else { "down" };
    format!("Scaled {dir} replica set {name} from {from} to {to}")
}

fn condition(
    previous: &Value,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
    touched: bool,
) -> Value {
    let old = previous
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        });
    let old_field = |f: &str| {
        old.and_then(|c| c.get(f))
            .and_then(Value::as_str)
            .unwrap_or(now)
            .to_string()
    };
    let same_status = old.and_then(|c| c.get("status")).and_then(Value::as_str) == Some(status);
    let same_reason = old.and_then(|c| c.get("reason")).and_then(Value::as_str) == Some(reason);
    let transition = if same_status {
        old_field("lastTransitionTime")
    } else {
        now.to_string()
    };
    let update = if same_status && same_reason && !touched {
        old_field("lastUpdateTime")
    } else {
        now.to_string()
    };
    json!({
        "type": kind, "status": status, "reason": reason, "message": message,
        "lastUpdateTime": update, "lastTransitionTime": transition,
    })
}

fn seconds_since(t: &str, now: jiff::Timestamp) -> i64 {
    t.parse::<jiff::Timestamp>()
        .map(|t| now.as_second() - t.as_second())
        .unwrap_or(0)
}

/// What `d` needs, given every ReplicaSet in its namespace and the pods.
pub fn plan(d: &Value, replica_sets: &[&Value], all_pods: &[&Value], now: jiff::Timestamp) -> Plan {
    let now_text = now.round(jiff::Unit::Second).unwrap_or(now).to_string();
    let replicas = spec_int(d, "replicas", 1).max(0);
    let paused = object::field(d, "spec.paused").and_then(Value::as_bool) == Some(true);
    let min_ready = spec_int(d, "minReadySeconds", 0);
    let recreate = object::field_string(d, "spec.strategy.type") == "Recreate";
    let (surge, max_unavailable) = if recreate { (0, replicas) } else { limits(d) };
    let template = object::field(d, "spec.template")
        .cloned()
        .unwrap_or(json!({}));
    let previous = d.get("status").cloned().unwrap_or(json!({}));
    let mut collisions = previous
        .get("collisionCount")
        .and_then(Value::as_i64)
        .unwrap_or(0);

    let mut sets: Vec<Set> = owned_by(d, replica_sets.iter().copied())
        .into_iter()
        .filter(|rs| !pods::is_terminating(rs))
        .map(|rs| {
            let mine = owned_by(rs, all_pods.iter().copied());
            let active: Vec<&&Value> = mine.iter().filter(|p| is_active(p)).collect();
            Set {
                rs,
                name: object::name(rs).to_string(),
                spec: spec_int(rs, "replicas", 0).max(0),
                active: active.len() as i64,
                ready: active.iter().filter(|p| pods::is_ready(p)).count() as i64,
                available: active
                    .iter()
                    .filter(|p| pods::is_available(p, min_ready, now))
                    .count() as i64,
                present: mine
                    .iter()
                    .filter(|p| !matches!(pods::phase(p).as_str(), "Succeeded" | "Failed"))
                    .count() as i64,
                revision: revision_of(rs),
            }
        })
        .collect();
    sets.sort_by_key(|s| {
        (
            s.revision,
            object::meta_str(s.rs, "creationTimestamp").to_string(),
        )
    });
    let max_revision = sets.iter().map(|s| s.revision).max().unwrap_or(0);
    let new_index = sets
        .iter()
        .position(|s| unhashed(&s.rs["spec"]["template"]) == template);

    let mut writes = Vec::new();
    let mut events = Vec::new();
    let mut new_revision = new_index.map(|i| sets[i].revision);
    // A template seen before (a rollback) becomes the newest revision again.
    if let Some(i) = new_index {
        if sets[i].revision < max_revision && !paused {
            let mut rs = sets[i].rs.clone();
            let mut annotations = object::annotations(&rs);
            annotations.insert(REVISION.into(), (max_revision + 1).to_string());
            match object::annotations(d).get(CHANGE_CAUSE) {
                Some(c) => annotations.insert(CHANGE_CAUSE.into(), c.clone()),
                None => annotations.remove(CHANGE_CAUSE),
            };
            object::set_meta(&mut rs, "annotations", json!(annotations));
            writes.push(Write::Update(rs));
            new_revision = Some(max_revision + 1);
        }
    }
    let mut new = new_index.map(|i| sets.remove(i));
    let old = sets;
    let weight = |s: &Set| s.weight();
    let old_weight: i64 = old.iter().map(weight).sum();

    if !paused {
        if recreate {
            let mut waiting = false;
            for s in old.iter().filter(|s| s.spec > 0) {
                writes.push(Write::Update(scaled(s.rs, 0, replicas, replicas)));
                events.push(scale_message(&s.name, s.spec, 0));
                waiting = true;
            }
            if old.iter().any(|s| s.present > 0) {
                waiting = true;
            }
            if !waiting {
                match &new {
                    None => {}
                    Some(n) if n.spec != replicas => {
                        writes.push(Write::Update(scaled(n.rs, replicas, replicas, replicas)));
                        events.push(scale_message(&n.name, n.spec, replicas));
                    }
                    Some(_) => {}
                }
            }
            if new.is_none() {
                let start = if waiting { 0 } else { replicas };
                match create(d, &template, collisions, replica_sets, start, max_revision) {
                    Ok(rs) => {
                        events.push(scale_message(object::name(&rs), 0, start));
                        new_revision = Some(max_revision + 1);
                        writes.push(Write::Create(rs));
                    }
                    Err(()) => collisions += 1,
                }
            }
        } else {
            let max_total = replicas + surge;
            let min_available = replicas - max_unavailable;
            // The new ReplicaSet.
            let new_weight = new.as_ref().map_or(0, weight);
            let room = max_total - old_weight - new_weight;
            // A ReplicaSet created by this pass: (spec, weight).
            let mut created = None;
            match &mut new {
                None => {
                    let start = room.clamp(0, replicas);
                    match create(d, &template, collisions, replica_sets, start, max_revision) {
                        Ok(rs) => {
                            events.push(scale_message(object::name(&rs), 0, start));
                            new_revision = Some(max_revision + 1);
                            writes.push(Write::Create(rs));
                            created = Some(start);
                        }
                        Err(()) => collisions += 1,
                    }
                }
                Some(n) => {
                    let target = if n.spec > replicas {
                        replicas
                    } else {
                        n.spec + room.clamp(0, replicas - n.spec)
                    };
                    if target != n.spec {
                        writes.push(Write::Update(scaled(n.rs, target, replicas, max_total)));
                        events.push(scale_message(&n.name, n.spec, target));
                        n.spec = target;
                    }
                }
            }
            // The old ones: first pods that are not available anyway, then as many available
            // ones as keep `min_available`.
            let new_spec = new.as_ref().map_or(created.unwrap_or(0), |n| n.spec);
            let new_available = new.as_ref().map_or(0, |n| n.available);
            let all_weight = old_weight + new.as_ref().map_or(new_spec, weight);
            let mut budget = all_weight - min_available - (new_spec - new_available).max(0);
            let mut targets: Vec<i64> = old.iter().map(|s| s.spec).collect();
            if budget > 0 {
                for (s, t) in old.iter().zip(targets.iter_mut()) {
                    let unhealthy = (*t - s.available).max(0).min(budget);
                    *t -= unhealthy;
                    budget -= unhealthy;
                }
            }
            // Available pods that stay: a set with more pods than its spec is about to lose
            // the difference, and may lose available ones.
            let available: i64 = old.iter().map(|s| s.available.min(s.spec)).sum::<i64>()
                + new_available.min(new_spec);
            let mut spare = available - min_available;
            for (s, t) in old.iter().zip(targets.iter_mut()) {
                if spare <= 0 {
                    break;
                }
                // Pods of this set still available after the unhealthy cut.
                let keep = (*t).min(s.available);
                let cut = keep.min(spare);
                *t -= cut;
                spare -= cut;
            }
            for (s, t) in old.iter().zip(targets) {
                if t != s.spec {
                    writes.push(Write::Update(scaled(s.rs, t, replicas, max_total)));
                    events.push(scale_message(&s.name, s.spec, t));
                }
            }
        }
    } else if let Some(target) = new
        .as_ref()
        .or_else(|| old.iter().rev().find(|s| s.spec > 0))
    {
        // Paused: follow replica count changes with the newest active ReplicaSet.
        let others: i64 = old
            .iter()
            .filter(|s| s.name != target.name)
            .map(|s| s.spec)
            .sum();
        let want = (replicas - others).max(0);
        if want != target.spec {
            writes.push(Write::Update(scaled(
                target.rs,
                want,
                replicas,
                replicas + surge,
            )));
            events.push(scale_message(&target.name, target.spec, want));
        }
    }

    // Old revisions beyond the history limit.
    let limit = spec_int(d, "revisionHistoryLimit", 10).max(0) as usize;
    let idle: Vec<&Set> = old
        .iter()
        .filter(|s| s.spec == 0 && s.present == 0)
        .filter(|s| {
            !writes
                .iter()
                .any(|w| matches!(w, Write::Update(rs) if object::name(rs) == s.name))
        })
        .collect();
    if idle.len() > limit {
        for s in &idle[..idle.len() - limit] {
            writes.push(Write::Delete(s.name.clone()));
        }
    }

    // Annotations: the Deployment carries its current revision.
    let mut annotations = object::annotations(d);
    let annotations = match new_revision {
        Some(r) if annotations.get(REVISION) != Some(&r.to_string()) => {
            annotations.insert(REVISION.into(), r.to_string());
            Some(annotations)
        }
        _ => None,
    };

    // Status, from the pods.
    let all: Vec<&Set> = old.iter().chain(new.iter()).collect();
    let total = |f: fn(&Set) -> i64| all.iter().map(|s| f(s)).sum::<i64>();
    let status_replicas = total(|s| s.active);
    let updated = new.as_ref().map_or(0, |n| n.active);
    let ready = total(|s| s.ready);
    let available = total(|s| s.available);
    let counts = json!([status_replicas, updated, ready, available]);
    let old_counts = json!([
        previous.get("replicas").cloned().unwrap_or(json!(0)),
        previous.get("updatedReplicas").cloned().unwrap_or(json!(0)),
        previous.get("readyReplicas").cloned().unwrap_or(json!(0)),
        previous
            .get("availableReplicas")
            .cloned()
            .unwrap_or(json!(0)),
    ]);
    let progressed = counts != old_counts || !writes.is_empty();
    let new_name = new
        .as_ref()
        .map(|n| n.name.clone())
        .or_else(|| {
            writes.iter().find_map(|w| match w {
                Write::Create(rs) => Some(object::name(rs).to_string()),
                _ => None,
            })
        })
        .unwrap_or_default();
    let min_available = replicas - max_unavailable;
    let available_condition = if available >= min_available {
        condition(
            &previous,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            &now_text,
            false,
        )
    } else {
        condition(
            &previous,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            &now_text,
            false,
        )
    };
    let complete = updated == replicas
        && available == replicas
        && status_replicas == replicas
        && writes.is_empty();
    let deadline = spec_int(d, "progressDeadlineSeconds", 600);
    let mut again: Again = None;
    let progressing = if paused {
        condition(
            &previous,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            &now_text,
            false,
        )
    } else if complete {
        let msg = format!("ReplicaSet \"{new_name}\" has successfully progressed.");
        condition(
            &previous,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &msg,
            &now_text,
            false,
        )
    } else {
        let msg = format!("ReplicaSet \"{new_name}\" is progressing.");
        let current = condition(
            &previous,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &msg,
            &now_text,
            progressed,
        );
        let stalled = current
            .get("lastUpdateTime")
            .and_then(Value::as_str)
            .map_or(0, |t| seconds_since(t, now));
        if stalled >= deadline {
            let msg = format!("ReplicaSet \"{new_name}\" has timed out progressing.");
            condition(
                &previous,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &msg,
                &now_text,
                false,
            )
        } else {
            again = Some(Duration::from_secs((deadline - stalled).max(1) as u64));
            current
        }
    };
    if min_ready > 0 && ready > available {
        again = Some(again.map_or(Duration::from_secs(1), |a| a.min(Duration::from_secs(1))));
    }
    let mut status = json!({
        "observedGeneration": object::field(d, "metadata.generation").cloned().unwrap_or(json!(1)),
        "replicas": status_replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (replicas - available).max(0),
        "conditions": [available_condition, progressing],
    });
    if collisions > 0 {
        status["collisionCount"] = json!(collisions);
    }
    Plan {
        writes,
        annotations,
        status,
        events,
        again,
    }
}

/// A new ReplicaSet for the template, or `Err` when its name is taken by another (a hash
/// collision: the caller bumps the collision count and tries again next pass).
fn create(
    d: &Value,
    template: &Value,
    collisions: i64,
    replica_sets: &[&Value],
    replicas: i64,
    max_revision: i64,
) -> Result<Value, ()> {
    let hash = template_hash(template, collisions);
    let name = format!("{}-{hash}", object::name(d));
    let taken = replica_sets
        .iter()
        .any(|rs| object::namespace(rs) == object::namespace(d) && object::name(rs) == name);
    if taken {
        return Err(());
    }
    Ok(new_replica_set(d, &hash, replicas, max_revision + 1))
}

async fn reconcile(pass: &Pass, d: &Value, sets: &[&Value], pods: &[&Value]) -> Again {
    let rs_kind = Kind::named("replicasets").expect("ReplicaSet is served");
    let p = plan(d, sets, pods, jiff::Timestamp::now());
    let ns = object::namespace(d);
    for w in &p.writes {
        let result = match w {
            Write::Create(rs) => pass.create(rs).await.map(|_| ()),
            Write::Update(rs) => pass.update(rs).await.map(|_| ()),
            Write::Delete(name) => pass.delete(&rs_kind, ns, name).await,
        };
        if let Err(e) = result {
            // Something moved meanwhile; the next pass decides again from what is there.
            tracing::debug!(deployment = object::name(d), %e, "deployment step not written");
            return Some(Duration::from_millis(200));
        }
    }
    for message in &p.events {
        pass.event(
            d,
            false,
            "ScalingReplicaSet",
            message,
            "deployment-controller",
        )
        .await;
    }
    let mut current = d.clone();
    if let Some(annotations) = p.annotations {
        object::set_meta(&mut current, "annotations", json!(annotations));
        match pass.update(&current).await {
            Ok(stored) => current = stored.object,
            Err(e) => {
                tracing::debug!(deployment = object::name(d), %e, "revision not written");
                return Some(Duration::from_millis(200));
            }
        }
    }
    if current.get("status") != Some(&p.status) {
        current["status"] = p.status;
        if let Err(e) = pass.update_status(&current).await {
            tracing::debug!(deployment = object::name(d), %e, "status not written");
        }
    }
    p.again
}

/// Reconciles every Deployment whenever this replica leads the controllers.
pub async fn run(ctx: Context) {
    let deployments = Kind::named("deployments").expect("Deployment is served");
    let sets = Kind::named("replicasets").expect("ReplicaSet is served");
    let pod_kind = Kind::named("pods").expect("Pod is served");
    super::runner::run(
        ctx,
        &[
            deployments.prefix(None),
            sets.prefix(None),
            pod_kind.prefix(None),
        ],
        Duration::from_secs(5),
        |pass| async move {
            let all_pods = pass.cache.list(&pod_kind, None);
            let pods = values(&all_pods);
            let pods_of = pods::Dependents::index(&pods);
            let all_sets = pass.cache.list(&sets, None);
            // Every set (a name taken by a set of another owner is a hash collision), and
            // only the pods of the Deployment's own sets.
            let set_refs = values(&all_sets);
            let sets_of = pods::Dependents::index(&set_refs);
            let mut again: Again = None;
            for d in pass.live(&deployments) {
                let mine: Vec<&Value> = sets_of
                    .of(&d.object)
                    .iter()
                    .flat_map(|rs| pods_of.of(rs))
                    .collect();
                let a = reconcile(&pass, &d.object, &set_refs, &mine).await;
                again = sooner(again, a);
            }
            again
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "d-1", "generation": 1},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "revisionHistoryLimit": 10,
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}
            }
        })
    }

    fn now() -> jiff::Timestamp {
        "2026-01-01T00:01:00Z".parse().unwrap()
    }

    /// The ReplicaSet the plan would create for `d`, at `replicas`, with `n` ready pods.
    fn running(
        d: &Value,
        replicas: i64,
        revision: i64,
        uid: &str,
        n: usize,
    ) -> (Value, Vec<Value>) {
        let hash = template_hash(&d["spec"]["template"], 0);
        let mut rs = new_replica_set(d, &hash, replicas, revision);
        rs["metadata"]["uid"] = json!(uid);
        let pods = (0..n)
            .map(|i| {
                json!({
                    "metadata": {"name": format!("{uid}-{i}"), "namespace": "default",
                                 "ownerReferences": [{"uid": uid, "controller": true}]},
                    "spec": {"nodeName": "n1"},
                    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
                })
            })
            .collect();
        (rs, pods)
    }

    #[test]
    fn hashes_are_stable_and_differ_by_template_and_collisions() {
        let t = json!({"spec": {"containers": [{"image": "a"}]}});
        let h = template_hash(&t, 0);
        assert_eq!(h, template_hash(&t, 0));
        assert_ne!(h, template_hash(&t, 1));
        assert_ne!(h, template_hash(&json!({"spec": {}}), 0));
        assert!(h.bytes().all(|b| HASH_ALPHABET.contains(&b)));
    }

    #[test]
    fn percentages_round_surge_up_and_unavailability_down() {
        assert_eq!(int_or_percent(Some(&json!("25%")), 10, true), 3);
        assert_eq!(int_or_percent(Some(&json!("25%")), 10, false), 2);
        assert_eq!(int_or_percent(Some(&json!(2)), 10, false), 2);
        let mut d = deployment(3, "a");
        d["spec"]["strategy"]["rollingUpdate"] = json!({"maxSurge": 0, "maxUnavailable": "10%"});
        assert_eq!(limits(&d), (0, 1));
    }

    #[test]
    fn a_new_deployment_gets_a_replica_set_at_full_size() {
        let d = deployment(3, "a");
        let p = plan(&d, &[], &[], now());
        let [Write::Create(rs)] = &p.writes[..] else {
            panic!("{:?}", p.writes)
        };
        assert_eq!(rs["spec"]["replicas"], 3);
        let hash = rs["metadata"]["labels"][HASH_LABEL].as_str().unwrap();
        assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
        assert_eq!(rs["spec"]["selector"]["matchLabels"][HASH_LABEL], hash);
        assert_eq!(
            rs["spec"]["template"]["metadata"]["labels"][HASH_LABEL],
            hash
        );
        assert_eq!(revision_of(rs), 1);
        assert_eq!(p.annotations.unwrap()[REVISION], "1");
        assert_eq!(
            p.events,
            ["Scaled up replica set web-".to_string() + hash + " from 0 to 3"]
        );
    }

    #[test]
    fn a_rolling_update_keeps_within_surge_and_availability() {
        let v1 = deployment(3, "a");
        let (rs1, pods1) = running(&v1, 3, 1, "rs-1", 3);
        let v2 = deployment(3, "b");
        let pod_refs: Vec<&Value> = pods1.iter().collect();
        // Surge 1, unavailable 0: one new pod first, nothing old removed yet.
        let p = plan(&v2, &[&rs1], &pod_refs, now());
        let [Write::Create(rs2)] = &p.writes[..] else {
            panic!("{:?}", p.writes)
        };
        assert_eq!(rs2["spec"]["replicas"], 1);
        assert_eq!(revision_of(rs2), 2);
        // The new pod is not ready yet: still nothing removed, nothing more added.
        let mut rs2 = rs2.clone();
        rs2["metadata"]["uid"] = json!("rs-2");
        let mut pending = running(&v2, 1, 2, "rs-2", 1).1;
        pending[0]["status"]["conditions"][0]["status"] = json!("False");
        let refs: Vec<&Value> = pods1.iter().chain(pending.iter()).collect();
        let p = plan(&v2, &[&rs1, &rs2], &refs, now());
        assert!(p.writes.is_empty(), "{:?}", p.writes);
        // Ready: one old pod goes.
        let ready = running(&v2, 1, 2, "rs-2", 1).1;
        let refs: Vec<&Value> = pods1.iter().chain(ready.iter()).collect();
        let p = plan(&v2, &[&rs1, &rs2], &refs, now());
        let scaled_old = p.writes.iter().find_map(|w| match w {
            Write::Update(rs) if rs["metadata"]["uid"] == "rs-1" => {
                Some(rs["spec"]["replicas"].clone())
            }
            _ => None,
        });
        assert_eq!(scaled_old, Some(json!(2)));
        assert!(!p
            .writes
            .iter()
            .any(|w| matches!(w, Write::Update(rs) if rs["metadata"]["uid"] == "rs-2")));
        // The old set is at 2 but its third pod is not deleted yet: that pod is as good as
        // gone, so nothing more may go until the new set has more ready pods.
        let mut rs1_two = rs1.clone();
        rs1_two["spec"]["replicas"] = json!(2);
        let mut rs2_two = rs2.clone();
        rs2_two["spec"]["replicas"] = json!(2);
        let mut new_pods = running(&v2, 2, 2, "rs-2", 2).1;
        new_pods[1]["status"]["conditions"][0]["status"] = json!("False");
        let refs: Vec<&Value> = pods1.iter().chain(new_pods.iter()).collect();
        let p = plan(&v2, &[&rs1_two, &rs2_two], &refs, now());
        assert!(p.writes.is_empty(), "{:?}", p.writes);
    }

    #[test]
    fn recreate_waits_for_old_pods_to_be_gone() {
        let mut v1 = deployment(2, "a");
        v1["spec"]["strategy"] = json!({"type": "Recreate"});
        let (rs1, pods1) = running(&v1, 2, 1, "rs-1", 2);
        let mut v2 = v1.clone();
        v2["spec"]["template"]["spec"]["containers"][0]["image"] = json!("b");
        let refs: Vec<&Value> = pods1.iter().collect();
        let p = plan(&v2, &[&rs1], &refs, now());
        assert!(matches!(&p.writes[0], Write::Update(rs) if rs["spec"]["replicas"] == 0));
        assert!(matches!(&p.writes[1], Write::Create(rs) if rs["spec"]["replicas"] == 0));
        // Old pods still there (terminating): the new set stays at zero.
        let mut rs1_zero = rs1.clone();
        rs1_zero["spec"]["replicas"] = json!(0);
        let mut terminating = pods1.clone();
        terminating[0]["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let refs: Vec<&Value> = terminating.iter().take(1).collect();
        let (mut rs2, _) = running(&v2, 0, 2, "rs-2", 0);
        rs2["spec"]["replicas"] = json!(0);
        let p = plan(&v2, &[&rs1_zero, &rs2], &refs, now());
        assert!(p.writes.is_empty(), "{:?}", p.writes);
        // Gone: the new set goes to full size.
        let p = plan(&v2, &[&rs1_zero, &rs2], &[], now());
        assert!(matches!(&p.writes[..], [Write::Update(rs)] if rs["spec"]["replicas"] == 2));
    }

    #[test]
    fn a_rollback_reuses_the_old_set_under_a_new_revision_and_history_is_trimmed() {
        let v1 = deployment(1, "a");
        let (mut rs1, _) = running(&v1, 0, 1, "rs-1", 0);
        rs1["spec"]["replicas"] = json!(0);
        let v2 = deployment(1, "b");
        let (rs2, pods2) = running(&v2, 1, 2, "rs-2", 1);
        let refs: Vec<&Value> = pods2.iter().collect();
        let p = plan(&v1, &[&rs1, &rs2], &refs, now());
        let bumped = p.writes.iter().find_map(|w| match w {
            Write::Update(rs) if rs["metadata"]["uid"] == "rs-1" => Some(revision_of(rs)),
            _ => None,
        });
        assert_eq!(bumped, Some(3));
        assert_eq!(p.annotations.unwrap()[REVISION], "3");

        let mut limited = v2.clone();
        limited["spec"]["revisionHistoryLimit"] = json!(0);
        let p = plan(&limited, &[&rs1, &rs2], &refs, now());
        assert!(p
            .writes
            .contains(&Write::Delete(object::name(&rs1).to_string())));
    }

    #[test]
    fn paused_deployments_do_not_roll_but_do_scale() {
        let v1 = deployment(2, "a");
        let (rs1, pods1) = running(&v1, 2, 1, "rs-1", 2);
        let refs: Vec<&Value> = pods1.iter().collect();
        let mut v2 = deployment(4, "b");
        v2["spec"]["paused"] = json!(true);
        let p = plan(&v2, &[&rs1], &refs, now());
        assert!(matches!(&p.writes[..], [Write::Update(rs)] if rs["spec"]["replicas"] == 4));
        assert_eq!(p.status["conditions"][1]["reason"], "DeploymentPaused");
    }

    #[test]
    fn status_reports_completion_and_the_progress_deadline() {
        let d = deployment(2, "a");
        let (rs, pods) = running(&d, 2, 1, "rs-1", 2);
        let refs: Vec<&Value> = pods.iter().collect();
        let p = plan(&d, &[&rs], &refs, now());
        assert!(p.writes.is_empty());
        assert_eq!(p.status["updatedReplicas"], 2);
        assert_eq!(p.status["availableReplicas"], 2);
        assert_eq!(p.status["conditions"][0]["status"], "True");
        assert_eq!(
            p.status["conditions"][1]["reason"],
            "NewReplicaSetAvailable"
        );

        let mut stuck = deployment(3, "a");
        stuck["spec"]["progressDeadlineSeconds"] = json!(30);
        stuck["status"] = json!({"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                            "lastUpdateTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        let mut rs3 = rs.clone();
        rs3["spec"]["replicas"] = json!(3);
        let p = plan(&stuck, &[&rs3], &refs, now());
        assert_eq!(
            p.status["conditions"][1]["reason"],
            "ProgressDeadlineExceeded"
        );
    }
}
