//! StatefulSets: pods with stable identities and stable storage, as Kubernetes runs them.
//!
//! Pod `<set>-<i>` exists for each ordinal `i` in `start..start+replicas` (`spec.ordinals.start`,
//! default 0), made from the template with the labels `statefulset.kubernetes.io/pod-name`,
//! `apps.kubernetes.io/pod-index` and `controller-revision-hash` (`<set>-<template hash>`), the
//! hostname `<set>-<i>` and, with `serviceName`, that subdomain. Each `volumeClaimTemplates`
//! entry `T` gives ordinal `i` the claim `<T>-<set>-<i>`, created before the pod and mounted as
//! volume `T`. `plan` (pure) decides, in Kubernetes' order:
//! - The ordinals in range, lowest first: a missing pod is created (its claims first), a
//!   finished one deleted to be created again once gone. With `OrderedReady` (the default) the
//!   pass stops at the first pod that is not Running and available; `Parallel` creates them
//!   all (at most `BURST` per pass).
//! - Pods beyond the range, highest first: deleted; with `OrderedReady` one at a time, after
//!   the previous one is gone, and only while every other pod is Running and available.
//! - `RollingUpdate` (the default): from the highest ordinal down to `partition`, the first pod
//!   on an older revision is deleted (it comes back on the new template), one at a time, each
//!   waiting for the ones above it to be Running and available. `OnDelete` replaces nothing.
//! - `persistentVolumeClaimRetentionPolicy`: `whenScaled: Delete` deletes the claims of
//!   ordinals beyond the range once their pods are gone; `whenDeleted: Delete` gives the claims
//!   an ownerReference to the set (so garbage collection removes them with it), `Retain` none.
//! - Orphan pods the selector matches whose names are the set's ordinals are adopted.
//! - Status: the counts, and `currentRevision`, which becomes `updateRevision` once every pod
//!   is updated and ready.
//!
//! Skiff has no ControllerRevision kind: a revision is only the template's hash, so a pod below
//! the partition that is recreated gets the current template, not the one it had.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_api::selector::LabelSelector;
use skiff_api::{object, ApiError, Kind, Reason};

use super::deployment::template_hash;
use super::pods::{self, is_terminating};
use super::runner::{sooner, values, Again, Pass};
use super::Context;

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
pub const REVISION_LABEL: &str = "controller-revision-hash";
const COMPONENT: &str = "statefulset-controller";
/// Pods a Parallel set creates per pass (a burst limit).
const BURST: usize = 500;

/// The parts of a StatefulSet's spec the controller acts on, with Kubernetes' defaults.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    /// The ordinals that should have pods.
    ordinals: Range<i64>,
    /// podManagementPolicy OrderedReady (not Parallel).
    ordered: bool,
    /// updateStrategy OnDelete (not RollingUpdate).
    on_delete: bool,
    partition: i64,
    min_ready: i64,
    /// persistentVolumeClaimRetentionPolicy.whenDeleted is Delete.
    delete_claims_with_set: bool,
    /// persistentVolumeClaimRetentionPolicy.whenScaled is Delete.
    delete_claims_on_scale: bool,
}

fn settings(sts: &Value) -> Settings {
    let replicas = pods::spec_int(sts, "replicas", 1).max(0);
    let start = object::field(sts, "spec.ordinals.start")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .max(0);
    let text = |path: &str| object::field_string(sts, path);
    Settings {
        ordinals: start..start.saturating_add(replicas),
        ordered: text("spec.podManagementPolicy") != "Parallel",
        on_delete: text("spec.updateStrategy.type") == "OnDelete",
        partition: object::field(sts, "spec.updateStrategy.rollingUpdate.partition")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        min_ready: pods::spec_int(sts, "minReadySeconds", 0),
        delete_claims_with_set: text("spec.persistentVolumeClaimRetentionPolicy.whenDeleted")
            == "Delete",
        delete_claims_on_scale: text("spec.persistentVolumeClaimRetentionPolicy.whenScaled")
            == "Delete",
    }
}

/// A decimal ordinal as Kubernetes writes it (no sign, no leading zeros).
fn parse_ordinal(digits: &str) -> Option<i64> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if canonical {
        digits.parse().ok()
    } else {
        None
    }
}

/// The ordinal of the pod `name` if it is `<set>-<ordinal>`.
pub fn ordinal_of(set: &str, name: &str) -> Option<i64> {
    parse_ordinal(name.strip_prefix(set)?.strip_prefix('-')?)
}

pub fn pod_name(set: &str, ordinal: i64) -> String {
    format!("{set}-{ordinal}")
}

/// The claim of volume claim template `template` for ordinal `ordinal` of `set`.
pub fn claim_name(template: &str, set: &str, ordinal: i64) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// The ordinal of claim `name` if it is `<template>-<set>-<ordinal>` for one of `templates`.
fn claim_ordinal(name: &str, set: &str, templates: &[&str]) -> Option<i64> {
    templates
        .iter()
        .find_map(|t| ordinal_of(set, name.strip_prefix(t)?.strip_prefix('-')?))
}

/// The volume claim templates, with their names (unnamed ones are skipped).
fn claim_templates(sts: &Value) -> Vec<(&str, &Value)> {
    object::field(sts, "spec.volumeClaimTemplates")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .map(|t| (object::name(t), t))
                .filter(|(name, _)| !name.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The name of the revision of `sts`'s template: `<set>-<hash>`.
pub fn update_revision(sts: &Value) -> String {
    let template = object::field(sts, "spec.template")
        .cloned()
        .unwrap_or(json!({}));
    format!("{}-{}", object::name(sts), template_hash(&template, 0))
}

pub fn revision_of(pod: &Value) -> String {
    object::labels(pod)
        .get(REVISION_LABEL)
        .cloned()
        .unwrap_or_default()
}

/// `spec.selector`, if it is one that selects something.
fn selector(sts: &Value) -> Option<LabelSelector> {
    let parsed = LabelSelector::from_spec(object::field(sts, "spec.selector")?).ok()?;
    (!parsed.is_empty()).then_some(parsed)
}

/// A non-controller ownerReference to the set, as its claims carry with `whenDeleted: Delete`.
fn claim_owner_ref(sts: &Value) -> Value {
    json!({
        "apiVersion": object::api_version(sts), "kind": object::kind(sts),
        "name": object::name(sts), "uid": object::meta_str(sts, "uid"),
    })
}

fn owner_refs(obj: &Value) -> Vec<Value> {
    object::field(obj, "metadata.ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Pod `ordinal` of `sts` at `revision`: the template with the set's identity labels, hostname,
/// subdomain and claim volumes, controlled by the set.
pub fn pod_for(sts: &Value, ordinal: i64, revision: &str) -> Value {
    let set = object::name(sts);
    let name = pod_name(set, ordinal);
    let template = object::field(sts, "spec.template").unwrap_or(&Value::Null);
    let mut pod = pods::from_template(sts, template, &name);
    let mut labels = object::labels(&pod);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    object::set_meta(&mut pod, "labels", json!(labels));
    if !pod["spec"].is_object() {
        pod["spec"] = json!({});
    }
    let spec = &mut pod["spec"];
    spec["hostname"] = json!(name);
    let service = object::field_string(sts, "spec.serviceName");
    if !service.is_empty() {
        spec["subdomain"] = json!(service);
    }
    let templates = claim_templates(sts);
    if !templates.is_empty() {
        let mut volumes: Vec<Value> = spec
            .get("volumes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        volumes.retain(|v| {
            let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
            !templates.iter().any(|(t, _)| *t == name)
        });
        for (t, _) in &templates {
            volumes.push(json!({
                "name": t,
                "persistentVolumeClaim": {"claimName": claim_name(t, set, ordinal)},
            }));
        }
        spec["volumes"] = Value::Array(volumes);
    }
    pod
}

/// The claim of volume claim template `template` for `ordinal`: the template's labels and
/// annotations plus the selector's labels, its spec, and an ownerReference to the set when the
/// claims go with it.
pub fn claim_for(sts: &Value, template: &Value, ordinal: i64) -> Value {
    let set = object::name(sts);
    let mut labels = object::labels(template);
    labels.extend(object::string_map(object::field(
        sts,
        "spec.selector.matchLabels",
    )));
    let mut metadata = json!({
        "name": claim_name(object::name(template), set, ordinal),
        "namespace": object::namespace(sts),
        "labels": labels,
    });
    let annotations = object::annotations(template);
    if !annotations.is_empty() {
        metadata["annotations"] = json!(annotations);
    }
    if settings(sts).delete_claims_with_set {
        metadata["ownerReferences"] = json!([claim_owner_ref(sts)]);
    }
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}

/// Running and available (ready for `min_ready` seconds), and not being deleted.
fn healthy(pod: &Value, min_ready: i64, now: jiff::Timestamp) -> bool {
    !is_terminating(pod) && pods::phase(pod) == "Running" && pods::is_available(pod, min_ready, now)
}

fn finished(pod: &Value) -> bool {
    matches!(pods::phase(pod).as_str(), "Succeeded" | "Failed")
}

/// How long until the ready pod becomes available, if it is not yet.
fn until_available(pod: &Value, min_ready: i64, now: jiff::Timestamp) -> Option<Duration> {
    if min_ready <= 0 || !pods::is_ready(pod) || pods::is_available(pod, min_ready, now) {
        return None;
    }
    let since = pods::condition(pod, "Ready")
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let left = since.map_or(1, |t| t.as_second() + min_ready - now.as_second());
    Some(Duration::from_secs(left.max(1) as u64))
}

/// One write of a plan, in the order they are to be made.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Take in an orphan pod: the pod with the set's controller reference added.
    Adopt(Value),
    /// Create a claim for the pod named `pod`.
    CreateClaim {
        claim: Value,
        pod: String,
    },
    CreatePod(Value),
    /// Delete the pod of this name.
    DeletePod(String),
    /// Delete the claim `claim` of the pod `pod` (gone, beyond the range).
    DeleteClaim {
        claim: String,
        pod: String,
    },
    /// Replace a claim whose ownerReferences change with the retention policy.
    UpdateClaim(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub status: Value,
    /// A pod is ready but not yet available (minReadySeconds): look again then.
    pub again: Again,
}

/// One StatefulSet with its pods and claims, as a pass sees them.
struct View<'a> {
    sts: &'a Value,
    s: Settings,
    set: &'a str,
    uid: &'a str,
    selector: Option<LabelSelector>,
    /// The revision of the set's template.
    update: String,
    now: jiff::Timestamp,
    /// The set's pods by ordinal, orphans it adopts included.
    members: BTreeMap<i64, &'a Value>,
    /// Every pod name in the set's namespace.
    pod_names: BTreeSet<&'a str>,
    /// Every claim in the set's namespace, by name.
    claims: BTreeMap<&'a str, &'a Value>,
}

impl<'a> View<'a> {
    /// The view of `sts`, and the adoptions it makes (orphan pods the selector matches whose
    /// names are its ordinals).
    fn new(
        sts: &'a Value,
        all_pods: &[&'a Value],
        all_claims: &[&'a Value],
        now: jiff::Timestamp,
    ) -> (View<'a>, Vec<Action>) {
        let ns = object::namespace(sts);
        let mut view = View {
            sts,
            s: settings(sts),
            set: object::name(sts),
            uid: object::meta_str(sts, "uid"),
            selector: selector(sts),
            update: update_revision(sts),
            now,
            members: BTreeMap::new(),
            pod_names: BTreeSet::new(),
            claims: all_claims
                .iter()
                .copied()
                .filter(|c| object::namespace(c) == ns)
                .map(|c| (object::name(c), c))
                .collect(),
        };
        let mut adoptions = Vec::new();
        for p in all_pods.iter().copied() {
            if object::namespace(p) != ns {
                continue;
            }
            view.pod_names.insert(object::name(p));
            let Some(i) = ordinal_of(view.set, object::name(p)) else {
                continue;
            };
            match pods::controller_uid(p) {
                Some(owner) if owner == view.uid => {}
                None if !is_terminating(p) && view.selects(p) => {
                    let mut adopted = p.clone();
                    let mut refs = owner_refs(p);
                    refs.push(pods::owner_ref(sts));
                    object::set_meta(&mut adopted, "ownerReferences", Value::Array(refs));
                    adoptions.push(Action::Adopt(adopted));
                }
                _ => continue,
            }
            view.members.insert(i, p);
        }
        (view, adoptions)
    }

    fn selects(&self, obj: &Value) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| s.matches_object(obj))
    }

    fn healthy(&self, pod: &Value) -> bool {
        healthy(pod, self.s.min_ready, self.now)
    }

    /// The members not being deleted.
    fn live(&self) -> impl Iterator<Item = &'a Value> + '_ {
        self.members
            .values()
            .copied()
            .filter(|p| !is_terminating(p))
    }

    fn status(&self) -> Value {
        let count = |f: &dyn Fn(&Value) -> bool| self.live().filter(|p| f(p)).count();
        let current = match object::field_string(self.sts, "status.currentRevision") {
            r if r.is_empty() => self.update.clone(),
            r => r,
        };
        let replicas = count(&|_| true);
        let ready = count(&|p| pods::phase(p) == "Running" && pods::is_ready(p));
        let updated = count(&|p| revision_of(p) == self.update);
        let wanted = (self.s.ordinals.end - self.s.ordinals.start) as usize;
        // Every ordinal in range has its pod, updated and ready, and nothing else is left.
        let (current, current_replicas) =
            if updated == replicas && ready == replicas && replicas == wanted {
                (self.update.clone(), updated)
            } else {
                let n = count(&|p| revision_of(p) == current);
                (current, n)
            };
        json!({
            "observedGeneration": object::field(self.sts, "metadata.generation").cloned().unwrap_or(json!(1)),
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": count(&|p| self.healthy(p)),
            "currentReplicas": current_replicas,
            "updatedReplicas": updated,
            "currentRevision": current,
            "updateRevision": self.update,
            "collisionCount": 0,
        })
    }

    /// The claims `ordinal` lacks, to be created for its pod; None while one of them is still
    /// being deleted (the pod waits for it to go and be created again).
    fn missing_claims(&self, ordinal: i64) -> Option<Vec<Action>> {
        let pod = pod_name(self.set, ordinal);
        let mut actions = Vec::new();
        for (t, template) in claim_templates(self.sts) {
            match self.claims.get(claim_name(t, self.set, ordinal).as_str()) {
                Some(c) if is_terminating(c) => return None,
                Some(_) => {}
                None => actions.push(Action::CreateClaim {
                    claim: claim_for(self.sts, template, ordinal),
                    pod: pod.clone(),
                }),
            }
        }
        Some(actions)
    }

    /// The ordinals in range, lowest first: missing pods created (claims first), finished ones
    /// deleted. True when OrderedReady must wait.
    fn fill(&self, actions: &mut Vec<Action>, touched: &mut BTreeSet<i64>) -> bool {
        let mut created = 0;
        for i in self.s.ordinals.clone() {
            match self.members.get(&i) {
                None => {
                    if let Some(claims) = self.missing_claims(i) {
                        actions.extend(claims);
                        actions.push(Action::CreatePod(pod_for(self.sts, i, &self.update)));
                        created += 1;
                    }
                    touched.insert(i);
                    if self.s.ordered {
                        return true;
                    }
                    if created >= BURST {
                        return false;
                    }
                }
                Some(p) if finished(p) => {
                    if !is_terminating(p) {
                        actions.push(Action::DeletePod(pod_name(self.set, i)));
                    }
                    touched.insert(i);
                    if self.s.ordered {
                        return true;
                    }
                }
                Some(p) => {
                    if pods::phase(p) == "Pending" && !is_terminating(p) {
                        actions.extend(self.missing_claims(i).unwrap_or_default());
                    }
                    if self.s.ordered && !self.healthy(p) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// The pods beyond the range, highest first. True when OrderedReady must wait.
    fn condemn(&self, actions: &mut Vec<Action>, touched: &mut BTreeSet<i64>) -> bool {
        for (&i, p) in self.members.iter().rev() {
            if self.s.ordinals.contains(&i) {
                continue;
            }
            if is_terminating(p) {
                if self.s.ordered {
                    return true;
                }
                continue;
            }
            let others_unhealthy = || {
                self.members
                    .iter()
                    .any(|(&j, q)| j != i && !self.healthy(q))
            };
            if self.s.ordered && others_unhealthy() {
                return true;
            }
            actions.push(Action::DeletePod(pod_name(self.set, i)));
            touched.insert(i);
            if self.s.ordered {
                return true;
            }
        }
        false
    }

    /// The next pod a rolling update replaces: from the highest ordinal down to the partition,
    /// the first on an older revision, once every pod above it is Running and available.
    fn roll(&self, touched: &BTreeSet<i64>) -> Option<Action> {
        if self.s.on_delete {
            return None;
        }
        let lowest = self.s.partition.max(self.s.ordinals.start);
        for i in (lowest..self.s.ordinals.end).rev() {
            let p = self.members.get(&i).filter(|_| !touched.contains(&i))?;
            if revision_of(p) != self.update && !is_terminating(p) {
                return Some(Action::DeletePod(pod_name(self.set, i)));
            }
            if !self.healthy(p) {
                return None;
            }
        }
        None
    }

    /// The set's claims (named for its templates and ordinals, carrying its labels) under the
    /// retention policy: those of ordinals beyond the range deleted once their pods are gone
    /// (`whenScaled: Delete`), the others owned by the set or not (`whenDeleted`).
    fn keep_claims(&self) -> Vec<Action> {
        let templates: Vec<&str> = claim_templates(self.sts)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        let mut actions = Vec::new();
        for c in self.claims.values().copied() {
            let Some(i) = claim_ordinal(object::name(c), self.set, &templates) else {
                continue;
            };
            if !self.selects(c) || is_terminating(c) {
                continue;
            }
            let pod = pod_name(self.set, i);
            let scaled_away =
                !self.s.ordinals.contains(&i) && !self.pod_names.contains(pod.as_str());
            if self.s.delete_claims_on_scale && scaled_away {
                let claim = object::name(c).to_string();
                actions.push(Action::DeleteClaim { claim, pod });
                continue;
            }
            let is_mine = |r: &Value| r.get("uid").and_then(Value::as_str) == Some(self.uid);
            let refs = owner_refs(c);
            if refs.iter().any(is_mine) == self.s.delete_claims_with_set {
                continue;
            }
            let refs: Vec<Value> = if self.s.delete_claims_with_set {
                refs.into_iter()
                    .chain([claim_owner_ref(self.sts)])
                    .collect()
            } else {
                refs.into_iter().filter(|r| !is_mine(r)).collect()
            };
            let mut next = c.clone();
            object::set_meta(&mut next, "ownerReferences", Value::Array(refs));
            actions.push(Action::UpdateClaim(next));
        }
        actions
    }
}

/// What `sts` needs, given the pods and the claims (of every namespace).
pub fn plan(sts: &Value, all_pods: &[&Value], all_claims: &[&Value], now: jiff::Timestamp) -> Plan {
    let (view, mut actions) = View::new(sts, all_pods, all_claims, now);
    // Ordinals this plan already acts on.
    let mut touched = BTreeSet::new();
    let waiting = view.fill(&mut actions, &mut touched) || view.condemn(&mut actions, &mut touched);
    if !waiting {
        actions.extend(view.roll(&touched));
    }
    actions.extend(view.keep_claims());
    let again = view
        .live()
        .filter_map(|p| until_available(p, view.s.min_ready, now))
        .min();
    Plan {
        actions,
        status: view.status(),
        again,
    }
}

/// Makes one write, recording what it did as Kubernetes' StatefulSet controller does.
async fn carry_out(pass: &Pass, sts: &Value, action: &Action) -> Result<(), ApiError> {
    let set = object::name(sts);
    let ns = object::namespace(sts);
    // (outcome, the verb of the event's reason, message on success, message on failure before
    // the error)
    let (result, reason, done, failed) = match action {
        Action::Adopt(pod) => return pass.update(pod).await.map(|_| ()),
        Action::UpdateClaim(claim) => return pass.update(claim).await.map(|_| ()),
        Action::CreateClaim { claim, pod } => {
            let name = object::name(claim);
            let result = match pass.create(claim).await {
                Err(e) if e.reason == Reason::AlreadyExists => return Ok(()),
                r => r.map(|_| ()),
            };
            (
                result,
                "Create",
                format!("create Claim {name} Pod {pod} in StatefulSet {set} success"),
                format!("create Claim {name} for Pod {pod} in StatefulSet {set} failed error"),
            )
        }
        Action::CreatePod(pod) => {
            let name = object::name(pod);
            (
                pass.create(pod).await.map(|_| ()),
                "Create",
                format!("create Pod {name} in StatefulSet {set} successful"),
                format!("create Pod {name} in StatefulSet {set} failed error"),
            )
        }
        Action::DeletePod(name) => {
            let kind = Kind::named("pods").expect("Pod is served");
            let result = match pass.delete(&kind, ns, name).await {
                Err(e) if e.reason == Reason::NotFound => return Ok(()),
                r => r,
            };
            (
                result,
                "Delete",
                format!("delete Pod {name} in StatefulSet {set} successful"),
                format!("delete Pod {name} in StatefulSet {set} failed error"),
            )
        }
        Action::DeleteClaim { claim, pod } => {
            let kind = Kind::named("persistentvolumeclaims").expect("PVC is served");
            let result = match pass.delete(&kind, ns, claim).await {
                Err(e) if e.reason == Reason::NotFound => return Ok(()),
                r => r,
            };
            (
                result,
                "Delete",
                format!("delete Claim {claim} Pod {pod} in StatefulSet {set} success"),
                format!("delete Claim {claim} for Pod {pod} in StatefulSet {set} failed error"),
            )
        }
    };
    match &result {
        Ok(()) => {
            pass.event(sts, false, &format!("Successful{reason}"), &done, COMPONENT)
                .await
        }
        Err(e) => {
            let message = format!("{failed}: {e}");
            pass.event(sts, true, &format!("Failed{reason}"), &message, COMPONENT)
                .await
        }
    }
    result
}

async fn reconcile(pass: &Pass, sts: &Value, pods: &[&Value], claims: &[&Value]) -> Again {
    let p = plan(sts, pods, claims, jiff::Timestamp::now());
    let mut again = p.again;
    let retry = Duration::from_millis(200);
    for action in &p.actions {
        if let Err(e) = carry_out(pass, sts, action).await {
            tracing::debug!(statefulset = object::name(sts), %e, ?action, "statefulset step not written");
            again = Some(again.map_or(retry, |a| a.min(retry)));
            // A claim's owners can wait; anything else may be what the next step relies on.
            if !matches!(action, Action::UpdateClaim(_)) {
                break;
            }
        }
    }
    if sts.get("status") != Some(&p.status) {
        let mut next = sts.clone();
        next["status"] = p.status;
        if let Err(e) = pass.update_status(&next).await {
            tracing::debug!(statefulset = object::name(sts), %e, "status not written");
            again = Some(again.map_or(retry, |a| a.min(retry)));
        }
    }
    again
}

/// Reconciles every StatefulSet whenever this replica leads the controllers.
pub async fn run(ctx: Context) {
    let sets = Kind::named("statefulsets").expect("StatefulSet is served");
    let pod_kind = Kind::named("pods").expect("Pod is served");
    let claim_kind = Kind::named("persistentvolumeclaims").expect("PVC is served");
    super::runner::run(
        ctx,
        &[
            sets.prefix(None),
            pod_kind.prefix(None),
            claim_kind.prefix(None),
        ],
        Duration::from_secs(5),
        |pass| async move {
            let all_pods = pass.cache.list(&pod_kind, None);
            let pods = values(&all_pods);
            let all_claims = pass.cache.list(&claim_kind, None);
            let claims = values(&all_claims);
            let mut again: Again = None;
            for sts in pass.live(&sets) {
                let a = reconcile(&pass, &sts.object, &pods, &claims).await;
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

    fn sts(replicas: i64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "default", "uid": "sts-1", "generation": 3},
            "spec": {
                "replicas": replicas, "serviceName": "web",
                "selector": {"matchLabels": {"app": "web"}},
                "podManagementPolicy": "OrderedReady",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "web:1"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
            }
        })
    }

    fn with_image(s: &Value, image: &str) -> Value {
        let mut s = s.clone();
        s["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
        s
    }

    fn now() -> jiff::Timestamp {
        "2026-01-01T00:00:10Z".parse().unwrap()
    }

    /// Pod `i` of `s` as the controller creates it, then `phase` and ready or not.
    fn member(s: &Value, i: i64, phase: &str, ready: bool) -> Value {
        let mut p = pod_for(s, i, &update_revision(s));
        p["metadata"]["uid"] = json!(format!("pod-{i}"));
        p["status"] = json!({"phase": phase, "conditions": [{"type": "Ready",
            "status": if ready {"True"} else {"False"}, "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        p
    }

    fn ready(s: &Value, ordinals: Range<i64>) -> Vec<Value> {
        ordinals.map(|i| member(s, i, "Running", true)).collect()
    }

    fn terminating(mut p: Value) -> Value {
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:05Z");
        p
    }

    fn claims(s: &Value, ordinals: Range<i64>) -> Vec<Value> {
        ordinals
            .map(|i| claim_for(s, &s["spec"]["volumeClaimTemplates"][0], i))
            .collect()
    }

    fn plan_for(s: &Value, pods: &[Value], claims: &[Value]) -> Plan {
        let p: Vec<&Value> = pods.iter().collect();
        let c: Vec<&Value> = claims.iter().collect();
        plan(s, &p, &c, now())
    }

    /// The actions in short: `+pod web-0`, `+claim data-web-0`, `-pod web-2`, ...
    fn summary(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .map(|a| match a {
                Action::Adopt(pod) => format!("adopt {}", object::name(pod)),
                Action::CreateClaim { claim, .. } => format!("+claim {}", object::name(claim)),
                Action::CreatePod(pod) => format!("+pod {}", object::name(pod)),
                Action::DeletePod(name) => format!("-pod {name}"),
                Action::DeleteClaim { claim, .. } => format!("-claim {claim}"),
                Action::UpdateClaim(claim) => format!("~claim {}", object::name(claim)),
            })
            .collect()
    }

    #[test]
    fn ordered_creation_makes_the_lowest_missing_pod_after_its_claims_once_the_rest_are_ready() {
        let s = sts(3);
        assert_eq!(
            summary(&plan_for(&s, &[], &[])),
            ["+claim data-web-0", "+pod web-0"]
        );
        // web-0 not ready yet: nothing more.
        let pending = [member(&s, 0, "Pending", false)];
        assert!(plan_for(&s, &pending, &claims(&s, 0..1)).actions.is_empty());
        let running = [member(&s, 0, "Running", false)];
        assert!(plan_for(&s, &running, &claims(&s, 0..1)).actions.is_empty());
        // Ready: the next one, whose claim already exists (kept from before).
        let p = plan_for(&s, &ready(&s, 0..1), &claims(&s, 0..2));
        assert_eq!(summary(&p), ["+pod web-1"]);
        // minReadySeconds: web-0 became ready 10 s ago, available in 20.
        let mut slow = s.clone();
        slow["spec"]["minReadySeconds"] = json!(30);
        let p = plan_for(&slow, &ready(&slow, 0..1), &claims(&s, 0..1));
        assert!(p.actions.is_empty(), "{:?}", summary(&p));
        assert_eq!(p.again, Some(Duration::from_secs(20)));
        assert_eq!(p.status["readyReplicas"], 1);
        assert_eq!(p.status["availableReplicas"], 0);
        // A pending pod whose claim went missing gets it back.
        let p = plan_for(&s, &pending, &[]);
        assert_eq!(summary(&p), ["+claim data-web-0"]);
    }

    #[test]
    fn pods_carry_their_identity_and_claim_volumes_and_claims_the_selector_labels() {
        let mut s = sts(3);
        s["spec"]["template"]["spec"]["volumes"] = json!([
            {"name": "data", "emptyDir": {}}, {"name": "config", "configMap": {"name": "cfg"}}
        ]);
        s["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"] = json!({"tier": "db"});
        let rev = update_revision(&s);
        let hash = template_hash(&s["spec"]["template"], 0);
        assert_eq!(rev, format!("web-{hash}"));
        let pod = pod_for(&s, 2, &rev);
        assert_eq!(pod["metadata"]["name"], "web-2");
        assert_eq!(pod["metadata"]["namespace"], "default");
        let labels = object::labels(&pod);
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_LABEL], rev);
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "sts-1");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(pod["spec"]["hostname"], "web-2");
        assert_eq!(pod["spec"]["subdomain"], "web");
        assert_eq!(
            pod["spec"]["volumes"],
            json!([{"name": "config", "configMap": {"name": "cfg"}},
                   {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-2"}}])
        );
        let claim = claim_for(&s, &s["spec"]["volumeClaimTemplates"][0], 2);
        assert_eq!(claim["kind"], "PersistentVolumeClaim");
        assert_eq!(claim["metadata"]["name"], "data-web-2");
        assert_eq!(claim["metadata"]["namespace"], "default");
        assert_eq!(
            claim["metadata"]["labels"],
            json!({"app": "web", "tier": "db"})
        );
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
        assert!(claim["metadata"].get("ownerReferences").is_none());
        // No service name: no subdomain.
        s["spec"]["serviceName"] = json!("");
        assert!(pod_for(&s, 0, &rev)["spec"].get("subdomain").is_none());

        assert_eq!(ordinal_of("web", "web-10"), Some(10));
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        for other in ["web-01", "web-", "web-x", "web-1-2", "webs-1", "web--1"] {
            assert_eq!(ordinal_of("web", other), None, "{other}");
        }
        assert_eq!(
            claim_ordinal("data-web-4", "web", &["logs", "data"]),
            Some(4)
        );
        assert_eq!(claim_ordinal("data-web-4", "we", &["data"]), None);
    }

    #[test]
    fn scale_down_deletes_the_highest_first_one_at_a_time_while_the_rest_are_ready() {
        let s = sts(1);
        let c = claims(&s, 0..3);
        let mut pods = ready(&s, 0..3);
        assert_eq!(summary(&plan_for(&s, &pods, &c)), ["-pod web-2"]);
        // Until web-2 is gone, nothing else goes.
        pods[2] = terminating(pods[2].clone());
        assert!(plan_for(&s, &pods, &c).actions.is_empty());
        pods.pop();
        assert_eq!(summary(&plan_for(&s, &pods, &c)), ["-pod web-1"]);
        // Not while a lower pod is not ready.
        pods[0] = member(&s, 0, "Running", false);
        assert!(plan_for(&s, &pods, &c).actions.is_empty());
        let mut pods = ready(&s, 0..3);
        pods[1] = member(&s, 1, "Running", false);
        assert!(plan_for(&s, &pods, &c).actions.is_empty());
        // The highest one itself may be unready.
        let mut pods = ready(&s, 0..3);
        pods[2] = member(&s, 2, "Pending", false);
        assert_eq!(summary(&plan_for(&s, &pods, &c)), ["-pod web-2"]);
    }

    #[test]
    fn parallel_creates_and_deletes_all_at_once() {
        let mut s = sts(3);
        s["spec"]["podManagementPolicy"] = json!("Parallel");
        assert_eq!(
            summary(&plan_for(&s, &[], &[])),
            [
                "+claim data-web-0",
                "+pod web-0",
                "+claim data-web-1",
                "+pod web-1",
                "+claim data-web-2",
                "+pod web-2"
            ]
        );
        let pending = [member(&s, 0, "Pending", false)];
        assert_eq!(
            summary(&plan_for(&s, &pending, &claims(&s, 0..3))),
            ["+pod web-1", "+pod web-2"]
        );
        s["spec"]["replicas"] = json!(1);
        let mut pods = ready(&s, 0..4);
        pods[1] = member(&s, 1, "Running", false);
        pods[3] = terminating(pods[3].clone());
        assert_eq!(
            summary(&plan_for(&s, &pods, &claims(&s, 0..4))),
            ["-pod web-2", "-pod web-1"]
        );
    }

    #[test]
    fn rolling_updates_go_from_the_highest_ordinal_to_the_partition_one_ready_pod_at_a_time() {
        let mut v1 = sts(3);
        let c = claims(&v1, 0..3);
        let mut pods = ready(&v1, 0..3);
        v1["status"] = plan_for(&v1, &pods, &c).status;
        assert_eq!(v1["status"]["currentRevision"], update_revision(&v1));
        let v2 = with_image(&v1, "web:2");
        let p = plan_for(&v2, &pods, &c);
        assert_eq!(summary(&p), ["-pod web-2"]);
        assert_eq!(p.status["updatedReplicas"], 0);
        assert_eq!(p.status["currentReplicas"], 3);
        assert_eq!(p.status["currentRevision"], update_revision(&v1));
        assert_eq!(p.status["updateRevision"], update_revision(&v2));
        // Let the status be written: the current revision stays v1 throughout.
        let mut v2 = v2.clone();
        v2["status"] = p.status.clone();
        pods[2] = terminating(pods[2].clone());
        assert!(plan_for(&v2, &pods, &c).actions.is_empty());
        pods.pop();
        let p = plan_for(&v2, &pods, &c);
        let [Action::CreatePod(new)] = &p.actions[..] else {
            panic!("{:?}", summary(&p))
        };
        assert_eq!(revision_of(new), update_revision(&v2));
        assert_eq!(new["spec"]["containers"][0]["image"], "web:2");
        // Not ready yet: web-1 waits.
        pods.push(member(&v2, 2, "Running", false));
        assert!(plan_for(&v2, &pods, &c).actions.is_empty());
        pods[2] = member(&v2, 2, "Running", true);
        let p = plan_for(&v2, &pods, &c);
        assert_eq!(summary(&p), ["-pod web-1"]);
        assert_eq!(p.status["updatedReplicas"], 1);
        assert_eq!(p.status["currentReplicas"], 2);
        assert_eq!(p.status["currentRevision"], update_revision(&v1));
        // A partition of 2 keeps web-0 and web-1 as they are.
        let mut parted = v2.clone();
        parted["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = json!(2);
        let p = plan_for(&parted, &pods, &c);
        assert!(p.actions.is_empty(), "{:?}", summary(&p));
        assert_eq!(p.status["currentRevision"], update_revision(&v1));
        // All updated and ready: the update revision becomes current.
        let p = plan_for(&v2, &ready(&v2, 0..3), &c);
        assert!(p.actions.is_empty());
        assert_eq!(p.status["currentRevision"], update_revision(&v2));
        assert_eq!(p.status["currentReplicas"], 3);
        assert_eq!(p.status["updatedReplicas"], 3);
        assert_eq!(p.status["replicas"], 3);
        assert_eq!(p.status["observedGeneration"], 3);
        assert_eq!(p.status["collisionCount"], 0);
    }

    #[test]
    fn on_delete_replaces_nothing_but_recreates_on_the_new_template() {
        let mut v2 = with_image(&sts(3), "web:2");
        v2["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        let v1 = sts(3);
        let c = claims(&v1, 0..3);
        let pods = ready(&v1, 0..3);
        assert!(plan_for(&v2, &pods, &c).actions.is_empty());
        let p = plan_for(&v2, &pods[..1], &c);
        let [Action::CreatePod(new)] = &p.actions[..] else {
            panic!("{:?}", summary(&p))
        };
        assert_eq!(object::name(new), "web-1");
        assert_eq!(new["spec"]["containers"][0]["image"], "web:2");
    }

    #[test]
    fn finished_pods_are_deleted_and_created_again_under_the_same_name() {
        let s = sts(3);
        let c = claims(&s, 0..3);
        let mut pods = ready(&s, 0..3);
        pods[1] = member(&s, 1, "Failed", false);
        assert_eq!(summary(&plan_for(&s, &pods, &c)), ["-pod web-1"]);
        pods[1] = terminating(pods[1].clone());
        assert!(plan_for(&s, &pods, &c).actions.is_empty());
        pods.remove(1);
        assert_eq!(summary(&plan_for(&s, &pods, &c)), ["+pod web-1"]);
        // Parallel: the others go on meanwhile.
        let mut par = sts(3);
        par["spec"]["podManagementPolicy"] = json!("Parallel");
        let pods = [member(&par, 0, "Succeeded", false)];
        assert_eq!(
            summary(&plan_for(&par, &pods, &c)),
            ["-pod web-0", "+pod web-1", "+pod web-2"]
        );
    }

    #[test]
    fn claims_are_retained_by_default_and_deleted_or_owned_as_the_policy_says() {
        let s = sts(1);
        let c = claims(&s, 0..3);
        let pods = ready(&s, 0..1);
        assert!(plan_for(&s, &pods, &c).actions.is_empty());

        let mut scaled = s.clone();
        scaled["spec"]["persistentVolumeClaimRetentionPolicy"] =
            json!({"whenDeleted": "Retain", "whenScaled": "Delete"});
        // web-2 is still going: only web-1's claim goes.
        let going = [pods[0].clone(), terminating(member(&s, 2, "Running", true))];
        assert_eq!(
            summary(&plan_for(&scaled, &going, &c)),
            ["-claim data-web-1"]
        );
        assert_eq!(
            summary(&plan_for(&scaled, &pods, &c)),
            ["-claim data-web-1", "-claim data-web-2"]
        );
        // A claim without the set's labels is not the set's.
        let mut foreign = c.clone();
        foreign[2]["metadata"]["labels"] = json!({});
        assert_eq!(
            summary(&plan_for(&scaled, &pods, &foreign)),
            ["-claim data-web-1"]
        );

        let mut owned = s.clone();
        owned["spec"]["persistentVolumeClaimRetentionPolicy"] =
            json!({"whenDeleted": "Delete", "whenScaled": "Retain"});
        let made = claim_for(&owned, &owned["spec"]["volumeClaimTemplates"][0], 0);
        assert_eq!(
            made["metadata"]["ownerReferences"],
            json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "sts-1"}])
        );
        // Existing claims get the reference, and lose it again under Retain.
        let p = plan_for(&owned, &pods, &c);
        assert_eq!(
            summary(&p),
            [
                "~claim data-web-0",
                "~claim data-web-1",
                "~claim data-web-2"
            ]
        );
        let Action::UpdateClaim(updated) = &p.actions[0] else {
            unreachable!()
        };
        assert_eq!(
            updated["metadata"]["ownerReferences"],
            made["metadata"]["ownerReferences"]
        );
        let with_refs: Vec<Value> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::UpdateClaim(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        assert!(plan_for(&owned, &pods, &with_refs).actions.is_empty());
        let p = plan_for(&s, &pods, &with_refs);
        let Action::UpdateClaim(released) = &p.actions[0] else {
            panic!("{:?}", summary(&p))
        };
        assert_eq!(released["metadata"]["ownerReferences"], json!([]));

        // A claim still being deleted holds its pod back.
        let s3 = sts(3);
        let mut c = claims(&s3, 0..3);
        c[1] = terminating(c[1].clone());
        assert!(plan_for(&s3, &ready(&s3, 0..1), &c).actions.is_empty());
    }

    #[test]
    fn orphans_named_for_the_set_are_adopted_and_others_left_alone() {
        let s = sts(2);
        let mut orphan = member(&s, 0, "Running", true);
        orphan["metadata"]["ownerReferences"] = json!([]);
        let mut stranger = orphan.clone();
        stranger["metadata"]["name"] = json!("web-x");
        let mut other_app = member(&s, 1, "Running", true);
        other_app["metadata"]["ownerReferences"] = json!([]);
        other_app["metadata"]["labels"]["app"] = json!("db");
        let p = plan_for(&s, &[orphan, stranger, other_app], &claims(&s, 0..2));
        assert_eq!(summary(&p), ["adopt web-0", "+pod web-1"]);
        let Action::Adopt(adopted) = &p.actions[0] else {
            unreachable!()
        };
        assert_eq!(adopted["metadata"]["ownerReferences"][0]["uid"], "sts-1");
    }
}
