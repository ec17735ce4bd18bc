//! The Skiff API (`skiff.v1`), served by every replica on the client port beside the etcd API.
//! Each call decodes and admits the object, then reads or writes it through the registry;
//! writes on a follower reach the leader through the store's own forwarding.

pub mod admission;
pub mod agents;
pub mod allocate;
pub mod built_in_services;
pub mod defaults;
pub mod deletion;
pub mod exec;
pub mod expiry;
pub mod images;
pub mod log_target;
pub mod logs;
pub mod namespaces;
pub mod paging;
pub mod port_forward;
pub mod registry;
pub mod schema;
pub mod update;
pub mod validate;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use skiff_api::agent_pb::{
    ExecInput, ExecOutput, ImportImagesChunk, ImportImagesResponse, ListImagesRequest,
    ListImagesResponse, PortForwardInput, PortForwardOutput,
};
use skiff_api::pb::api_server::Api;
use skiff_api::pb::{
    ClusterStatusRequest, ClusterStatusResponse, DeleteRequest, GetRequest, ListRequest,
    ListResponse, LogChunk, LogsRequest, Member, ObjectResponse, WatchEvent, WatchRequest,
    WriteRequest,
};
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::{object, ApiError, Kind, Reason};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use admission::{already_exists, conflict, not_found, Incoming};
use registry::{Also, Registry, Stored, WriteError};
use update::Part;

/// The annotation holding the manifest applied last, for the next apply's three-way merge.
pub const LAST_APPLIED: &str = "skiff.io/last-applied-configuration";
/// Attempts of a read-modify-write before a conflict is reported.
const WRITE_ATTEMPTS: usize = 5;

pub struct ApiService {
    registry: Arc<Registry>,
    /// Leases for the objects that expire (Events).
    expiry: expiry::Expiry,
    /// Whether this replica runs the controllers (reported by ClusterStatus).
    leadership: crate::controllers::election::Leadership,
}

/// What a write did, as kubectl reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
    Deleted,
    /// A read.
    Read,
}

impl Outcome {
    fn as_str(&self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
            Outcome::Deleted => "deleted",
            Outcome::Read => "",
        }
    }
}

fn respond(stored: &Stored, outcome: Outcome) -> Result<Response<ObjectResponse>, Status> {
    let object = serde_json::to_vec(&stored.object)
        .map_err(|e| ApiError::new(Reason::Internal, e.to_string()))?;
    Ok(Response::new(ObjectResponse {
        object,
        outcome: outcome.as_str().into(),
    }))
}

fn kind_of(api_version: &str, kind: &str) -> Result<Kind, ApiError> {
    Kind::of(api_version, kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "no matches for kind \"{kind}\" in version \"{api_version}\""
        ))
    })
}

fn store_error(e: WriteError, kind: &Kind, name: &str) -> ApiError {
    match e {
        WriteError::Exists => already_exists(kind, name),
        WriteError::Missing => not_found(kind, name),
        WriteError::Stale | WriteError::Taken | WriteError::LeaseGone => conflict(kind, name),
        WriteError::Store(e) => e,
    }
}

impl ApiService {
    pub fn new(
        registry: Arc<Registry>,
        leadership: crate::controllers::election::Leadership,
        event_ttl: std::time::Duration,
    ) -> Self {
        Self {
            expiry: expiry::Expiry::new(registry.replica().clone(), event_ttl),
            registry,
            leadership,
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Delete as a client would, with `fence` checked in the same transaction (controllers).
    pub async fn delete_fenced(
        &self,
        req: DeleteRequest,
        fence: &Also,
    ) -> Result<Stored, ApiError> {
        self.delete(req, fence).await
    }

    /// Update as a client would, with `fence` checked in the same transaction (controllers).
    pub async fn update_fenced(&self, req: WriteRequest, fence: &Also) -> Result<Stored, ApiError> {
        self.update(req, Part::Main, fence).await
    }

    /// Status update as a client would, with `fence` checked in the same transaction.
    pub async fn update_status_fenced(
        &self,
        req: WriteRequest,
        fence: &Also,
    ) -> Result<Stored, ApiError> {
        self.update(req, Part::Status, fence).await
    }

    /// Updates of `part` of several objects, each admitted exactly as `update_fenced` admits
    /// one, then written in one transaction with `fence` (all or nothing: if any object changed
    /// meanwhile, every written one gets a conflict). An object admission refuses gets its own
    /// error and is left out; one whose write needs more than a put (a Service's addresses and
    /// ports, the removal of an object's last finalizer) is written on its own. One result per
    /// request, in order. The caller keeps a batch within the store's 128 operations per
    /// transaction.
    pub async fn update_many_fenced(
        &self,
        reqs: &[WriteRequest],
        part: Part,
        fence: &Also,
    ) -> Vec<Result<Stored, ApiError>> {
        let mut results: Vec<Option<Result<Stored, ApiError>>> = vec![None; reqs.len()];
        let mut decoded = Vec::new();
        for (i, req) in reqs.iter().enumerate() {
            match admission::decode(&req.object, &req.default_namespace) {
                Ok(inc) if !inc.name().is_empty() => decoded.push((i, inc)),
                Ok(inc) => results[i] = Some(Err(unnamed(&inc))),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let keys: Vec<String> = decoded.iter().map(|(_, inc)| inc.key()).collect();
        let lives = match self.registry.get_many(&keys).await {
            Ok(lives) => lives,
            Err(e) => {
                for (i, _) in &decoded {
                    results[*i] = Some(Err(e.clone()));
                }
                return results.into_iter().flatten().collect();
            }
        };
        let mut batch = Vec::new();
        let mut written = Vec::new();
        for ((i, inc), live) in decoded.into_iter().zip(lives) {
            let Some(live) = live else {
                results[i] = Some(Err(not_found(&inc.kind, inc.name())));
                continue;
            };
            let next = match update::prepare(&inc, &live, part) {
                Ok(next) => next,
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            if inc.kind.kind == "Service" || deletion::finished(&next) {
                results[i] = Some(self.update(reqs[i].clone(), part, fence).await);
                continue;
            }
            batch.push((inc.key(), next, live.revision));
            written.push((i, inc));
        }
        match self.registry.update_many(&batch, fence).await {
            Ok(stored) => {
                for ((i, _), s) in written.iter().zip(stored) {
                    results[*i] = Some(Ok(s));
                }
            }
            Err(e) => {
                for (i, inc) in &written {
                    results[*i] = Some(Err(match &e {
                        WriteError::Store(e) => e.clone(),
                        // Some object changed meanwhile, or the fence moved.
                        _ => conflict(&inc.kind, inc.name()),
                    }));
                }
            }
        }
        results.into_iter().flatten().collect()
    }

    /// Create as a client would, with `fence` checked in the same transaction (controllers).
    pub async fn create_fenced(&self, req: WriteRequest, fence: &Also) -> Result<Stored, ApiError> {
        let inc = admission::decode(&req.object, &req.default_namespace)?;
        self.create_object(inc, fence).await
    }

    async fn live(&self, inc: &Incoming) -> Result<Option<Stored>, ApiError> {
        self.registry.get(&inc.key()).await
    }

    /// The allocations (ClusterIP, NodePorts) a Service `next` needs, written with it.
    async fn allocations(
        &self,
        kind: &Kind,
        next: &mut Value,
        live: Option<&Value>,
    ) -> Result<Also, ApiError> {
        if kind.kind != "Service" {
            return Ok(Also::default());
        }
        let keys = self.registry.keys(allocate::RANGES).await?;
        let taken = allocate::Taken::from_keys(keys.iter().map(String::as_str));
        let owner = format!("{}/{}", object::namespace(next), object::name(next));
        allocate::plan(next, live, &taken, &owner).map_err(|errors| {
            ApiError::new(
                Reason::Invalid,
                validate::invalid_message(kind.kind, object::name(next), &errors),
            )
        })
    }

    async fn create_object(&self, mut inc: Incoming, fence: &Also) -> Result<Stored, ApiError> {
        admission::admit_storage(&self.registry, &mut inc).await?;
        admission::set_create_metadata(&mut inc.object);
        admission::admit(&inc.kind, &mut inc.object)?;
        if inc.kind.namespaced {
            namespaces::require_active(&self.registry, inc.namespace()).await?;
        }
        for _ in 0..WRITE_ATTEMPTS {
            let mut object = inc.object.clone();
            let mut also = self.allocations(&inc.kind, &mut object, None).await?;
            also.extend(fence);
            also.extend(&self.expiry.also_for(&inc.kind).await?);
            match self.registry.create(&inc.key(), &object, &also).await {
                // Another Service claimed the same address or port first: choose again.
                Err(WriteError::Taken) => continue,
                Err(WriteError::LeaseGone) => self.expiry.forget(also.lease()).await,
                other => return other.map_err(|e| store_error(e, &inc.kind, inc.name())),
            }
        }
        Err(conflict(&inc.kind, inc.name()))
    }

    async fn create(&self, req: WriteRequest) -> Result<Stored, ApiError> {
        let inc = admission::decode(&req.object, &req.default_namespace)?;
        self.create_object(inc, &Also::default()).await
    }

    async fn update(
        &self,
        req: WriteRequest,
        part: Part,
        fence: &Also,
    ) -> Result<Stored, ApiError> {
        let inc = admission::decode(&req.object, &req.default_namespace)?;
        if inc.name().is_empty() {
            return Err(unnamed(&inc));
        }
        let live = self
            .live(&inc)
            .await?
            .ok_or_else(|| not_found(&inc.kind, inc.name()))?;
        let next = update::prepare(&inc, &live, part)?;
        for _ in 0..WRITE_ATTEMPTS {
            let mut object = next.clone();
            let mut also = if part == Part::Status {
                Also::default()
            } else {
                self.allocations(&inc.kind, &mut object, Some(&live.object))
                    .await?
            };
            also.extend(fence);
            match self
                .store_update(&inc.kind, &inc.key(), &object, &live, &also)
                .await
            {
                Err(WriteError::Taken) => continue,
                other => return other.map_err(|e| store_error(e, &inc.kind, inc.name())),
            }
        }
        Err(conflict(&inc.kind, inc.name()))
    }

    async fn apply(&self, req: WriteRequest) -> Result<(Stored, Outcome), ApiError> {
        let inc = admission::decode(&req.object, &req.default_namespace)?;
        if inc.name().is_empty() {
            return Err(ApiError::new(
                Reason::Invalid,
                format!(
                    "{} \"\" is invalid: metadata.name: Required value (apply needs a name)",
                    inc.kind.kind
                ),
            ));
        }
        // The manifest as sent, minus what the server owns, is what the next apply diffs from.
        let mut manifest = inc.object.clone();
        if let Some(m) = manifest.as_object_mut() {
            m.remove("status");
        }
        if let Some(m) = object::metadata_mut(&mut manifest) {
            m.remove("resourceVersion");
            if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
                a.remove(LAST_APPLIED);
            }
        }
        let recorded = serde_json::to_string(&manifest)
            .map_err(|e| ApiError::new(Reason::Internal, e.to_string()))?;
        for _ in 0..WRITE_ATTEMPTS {
            let Some(live) = self.live(&inc).await? else {
                let mut fresh = Incoming {
                    kind: inc.kind,
                    object: manifest.clone(),
                };
                set_annotation(&mut fresh.object, LAST_APPLIED, &recorded);
                match self.create_object(fresh, &Also::default()).await {
                    Err(e) if e.reason == Reason::AlreadyExists => continue,
                    other => return other.map(|s| (s, Outcome::Created)),
                }
            };
            let last: Value = object::annotations(&live.object)
                .get(LAST_APPLIED)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_else(|| Value::Object(Default::default()));
            let mut next = skiff_api::merge::three_way(&last, &manifest, &live.object);
            match live.object.get("status") {
                Some(s) => next["status"] = s.clone(),
                None => {
                    if let Some(m) = next.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            set_annotation(&mut next, LAST_APPLIED, &recorded);
            admission::keep_server_metadata(&live.object, &mut next);
            admission::admit(&inc.kind, &mut next)?;
            admission::check_update(&inc.kind, &live.object, &next)?;
            let also = self
                .allocations(&inc.kind, &mut next, Some(&live.object))
                .await?;
            if next == live.object {
                return Ok((live, Outcome::Unchanged));
            }
            match self
                .store_update(&inc.kind, &inc.key(), &next, &live, &also)
                .await
            {
                Ok(stored) => return Ok((stored, Outcome::Configured)),
                Err(WriteError::Stale | WriteError::Missing | WriteError::Taken) => continue,
                Err(e) => return Err(store_error(e, &inc.kind, inc.name())),
            }
        }
        Err(conflict(&inc.kind, inc.name()))
    }

    async fn get(&self, req: GetRequest) -> Result<Stored, ApiError> {
        let kind = kind_of(&req.api_version, &req.kind)?;
        let ns = if req.namespace.is_empty() {
            "default"
        } else {
            &req.namespace
        };
        self.registry
            .get(&kind.key(ns, &req.name))
            .await?
            .ok_or_else(|| not_found(&kind, &req.name))
    }

    async fn list(&self, req: ListRequest) -> Result<ListResponse, ApiError> {
        let kind = kind_of(&req.api_version, &req.kind)?;
        let labels = LabelSelector::parse(&req.label_selector)
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields =
            FieldSelector::parse(&req.field_selector, kind.kind).map_err(ApiError::bad_request)?;
        let namespace = (!req.namespace.is_empty()).then_some(req.namespace.as_str());
        let prefix = kind.prefix(namespace);
        let (mut revision, mut start) = match req.continue_token.as_str() {
            "" => (None, prefix.clone()),
            token => {
                let (rev, key) = paging::decode(token)?;
                if !key.starts_with(&prefix) {
                    return Err(ApiError::bad_request(
                        "continue token is for a different list",
                    ));
                }
                (Some(rev), key)
            }
        };
        let limit = usize::try_from(req.limit.max(0)).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut bytes = 0;
        let mut continue_token = String::new();
        // Once per request: a continue page served by a replica behind the one that served the
        // first page then sees what the first did (and any compaction since).
        self.registry.linearize().await?;
        // Without selectors nothing needs decoding: the stored bytes go out with their
        // resourceVersion spliced in.
        let raw = labels.is_empty() && fields.is_empty();
        'pages: loop {
            let (page, read_at, more) = self
                .registry
                .list_raw_from(&prefix, &start, revision, paging::BATCH)
                .await?;
            revision = Some(read_at);
            let count = page.len();
            for (i, (key, value, rev)) in page.into_iter().enumerate() {
                let spliced = if raw {
                    registry::with_version_bytes(&value, rev)
                } else {
                    None
                };
                let encoded = match spliced {
                    Some(bytes) => bytes,
                    None => {
                        let s = registry::decode(&value, rev)?;
                        if !(labels.matches_object(&s.object) && fields.matches_object(&s.object)) {
                            start = format!("{key}\0");
                            continue;
                        }
                        serde_json::to_vec(&s.object)
                            .map_err(|e| ApiError::new(Reason::Internal, e.to_string()))?
                    }
                };
                // A page stays under the size limit: this object starts the next one.
                if !items.is_empty() && bytes + encoded.len() > paging::MAX_PAGE_BYTES {
                    continue_token = paging::encode(read_at, &key);
                    break 'pages;
                }
                start = format!("{key}\0");
                bytes += encoded.len();
                items.push(encoded);
                if limit > 0 && items.len() >= limit {
                    if more || i + 1 < count {
                        continue_token = paging::encode(read_at, &start);
                    }
                    break 'pages;
                }
            }
            if !more {
                break;
            }
        }
        Ok(ListResponse {
            items,
            resource_version: revision.unwrap_or_default().to_string(),
            continue_token,
        })
    }

    async fn delete(&self, req: DeleteRequest, fence: &Also) -> Result<Stored, ApiError> {
        let kind = kind_of(&req.api_version, &req.kind)?;
        let ns = if req.namespace.is_empty() {
            "default"
        } else {
            &req.namespace
        };
        let key = kind.key(ns, &req.name);
        if kind.kind == "Namespace" {
            namespaces::check_deletable(&req.name)?;
        }
        for _ in 0..WRITE_ATTEMPTS {
            let live = self
                .registry
                .get(&key)
                .await?
                .ok_or_else(|| not_found(&kind, &req.name))?;
            if !req.resource_version.is_empty() && req.resource_version != live.revision.to_string()
            {
                return Err(conflict(&kind, &req.name));
            }
            let decision = if kind.kind == "Namespace" {
                deletion::Decision::Now
            } else {
                deletion::decide(
                    &kind,
                    &live.object,
                    req.grace_period_seconds,
                    &req.propagation_policy,
                    jiff::Timestamp::now(),
                )?
            };
            let result = match decision {
                deletion::Decision::Already => return Ok(live),
                deletion::Decision::Mark(marked) => {
                    match self
                        .registry
                        .update(&key, &marked, live.revision, fence)
                        .await
                    {
                        Ok(stored) => return Ok(stored),
                        Err(e) => Err(e),
                    }
                }
                deletion::Decision::Now => self.remove(&kind, &key, &live, fence).await,
            };
            match result {
                Ok(_) => return Ok(live),
                Err(WriteError::Stale) if req.resource_version.is_empty() => continue,
                Err(e) => return Err(store_error(e, &kind, &req.name)),
            }
        }
        Err(conflict(&kind, &req.name))
    }

    /// Removes `live` from the store (with what it holds: a namespace's contents, a Service's
    /// addresses and ports), if it is still at its revision.
    async fn remove(
        &self,
        kind: &Kind,
        key: &str,
        live: &Stored,
        fence: &Also,
    ) -> Result<i64, WriteError> {
        if kind.kind == "Namespace" {
            let name = object::name(&live.object);
            // Services go first, each with its addresses and ports, so that the transaction
            // removing the namespace stays within the store's limit of operations however
            // many Services it held (it releases only what was created meanwhile).
            let services = Kind::named("services").expect("Service is served");
            if let Ok((items, _)) = self.registry.list(&services.prefix(Some(name))).await {
                for svc in items {
                    let key = services.key(name, object::name(&svc.object));
                    if let Err(e) = self.remove_one(&services, &key, &svc, fence).await {
                        tracing::debug!(?e, %key, "service left to the namespace's removal");
                    }
                }
            }
            return namespaces::delete_with_contents(&self.registry, name, live.revision, fence)
                .await;
        }
        self.remove_one(kind, key, live, fence).await
    }

    /// Removes one object that is not a namespace (a Service with its addresses and ports).
    async fn remove_one(
        &self,
        kind: &Kind,
        key: &str,
        live: &Stored,
        fence: &Also,
    ) -> Result<i64, WriteError> {
        let mut also = if kind.kind == "Service" {
            allocate::release_all(&live.object)
        } else {
            Also::default()
        };
        also.extend(fence);
        self.registry.delete(key, live.revision, &also).await
    }

    /// Stores `object` over `live`, or removes it if that was its last finalizer.
    async fn store_update(
        &self,
        kind: &Kind,
        key: &str,
        object: &Value,
        live: &Stored,
        also: &Also,
    ) -> Result<Stored, WriteError> {
        if deletion::finished(object) {
            self.remove(kind, key, live, also).await?;
            return Ok(Stored {
                object: object.clone(),
                revision: live.revision,
            });
        }
        // An expiring object is written with a lease every time: its TTL runs from its last
        // write, and a write without one would keep it for ever.
        let mut also = also.clone();
        also.extend(
            &self
                .expiry
                .also_for(kind)
                .await
                .map_err(WriteError::Store)?,
        );
        match self
            .registry
            .update(key, object, live.revision, &also)
            .await
        {
            Err(WriteError::LeaseGone) => {
                self.expiry.forget(also.lease()).await;
                // The callers write again on Taken.
                Err(WriteError::Taken)
            }
            other => other,
        }
    }
}

/// An update naming no object.
fn unnamed(inc: &Incoming) -> ApiError {
    ApiError::new(
        Reason::Invalid,
        format!(
            "{} \"\" is invalid: metadata.name: Required value",
            inc.kind.kind
        ),
    )
}

fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    if let Some(m) = object::metadata_mut(obj) {
        let annotations = m
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(key.to_string(), value.into());
        }
    }
}

#[tonic::async_trait]
impl Api for ApiService {
    type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;
    type LogsStream = ReceiverStream<Result<LogChunk, Status>>;
    type ExecStream = ReceiverStream<Result<ExecOutput, Status>>;

    async fn exec(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let rx = exec::start(self.registry.clone(), request.into_inner()).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type PortForwardStream = ReceiverStream<Result<PortForwardOutput, Status>>;

    async fn port_forward(
        &self,
        request: Request<Streaming<PortForwardInput>>,
    ) -> Result<Response<Self::PortForwardStream>, Status> {
        let rx = port_forward::start(self.registry.clone(), request.into_inner()).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn import_images(
        &self,
        request: Request<Streaming<ImportImagesChunk>>,
    ) -> Result<Response<ImportImagesResponse>, Status> {
        Ok(Response::new(
            images::import(self.registry.clone(), request.into_inner()).await?,
        ))
    }

    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        Ok(Response::new(
            images::list(self.registry.clone(), request.into_inner()).await?,
        ))
    }

    async fn cluster_status(
        &self,
        _request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let replica = self.registry.replica();
        // A follower that has not yet applied what the leader committed would show members
        // without their names and addresses, and no controller holder: catch up first, as a
        // linearizable read does. Without a quorum (or within a second) the local view is
        // still worth showing: this is what operators look at when the cluster is unwell.
        let caught_up = tokio::time::timeout(Duration::from_secs(1), replica.linearize()).await;
        if !matches!(caught_up, Ok(Ok(()))) {
            tracing::debug!("cluster status from this replica's own view (not caught up)");
        }
        let st = replica.status();
        let stats = replica.store_stats().await;
        let members = replica
            .members()
            .into_iter()
            .map(|m| Member {
                id: m.id,
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
                is_learner: m.is_learner,
            })
            .collect();
        Ok(Response::new(ClusterStatusResponse {
            member_id: replica.id,
            name: replica.identity.name.clone(),
            leader_id: st.leader.unwrap_or(0),
            raft_term: st.term,
            applied_index: st.applied_index,
            last_log_index: st.last_log_index,
            members,
            controller_leader: crate::controllers::election::holder(replica),
            leads_controllers: self.leadership.borrow().is_some(),
            revision: stats.revision,
            compact_revision: stats.compact_revision,
            db_bytes: stats.db_bytes,
            db_bytes_in_use: stats.db_bytes_in_use,
            log_entries: stats.log_entries,
            snapshot_bytes: stats.snapshot_bytes,
        }))
    }

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let rx = watch::start(self.registry.clone(), request.into_inner()).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let rx = logs::start(self.registry.clone(), request.into_inner()).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn create(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        respond(&self.create(request.into_inner()).await?, Outcome::Created)
    }

    async fn apply(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        let (stored, outcome) = self.apply(request.into_inner()).await?;
        respond(&stored, outcome)
    }

    async fn update(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        respond(
            &self
                .update(request.into_inner(), Part::Main, &Also::default())
                .await?,
            Outcome::Configured,
        )
    }

    async fn update_status(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        respond(
            &self
                .update(request.into_inner(), Part::Status, &Also::default())
                .await?,
            Outcome::Configured,
        )
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<ObjectResponse>, Status> {
        respond(&self.get(request.into_inner()).await?, Outcome::Read)
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        Ok(Response::new(self.list(request.into_inner()).await?))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        respond(
            &self.delete(request.into_inner(), &Also::default()).await?,
            Outcome::Deleted,
        )
    }
}
