//! One etcd watch stream: many watchers multiplexed by ID, each with its key range, filters and
//! the next revision it has to see.
//!
//! A new watcher replays history from its start revision out of the store, then follows the
//! hub's live notices; notices at revisions it already replayed are skipped, so nothing is sent
//! twice and nothing is missed (the stream subscribes before it reads the store). A lagging
//! stream, or one on a replica that just installed a snapshot, replays again from each
//! watcher's next revision. A watcher whose start revision was compacted is told the compact
//! revision and cancelled, as etcd does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tonic::{Status, Streaming};

use super::hub::Notice;
use crate::etcd::header;
use crate::mvcc::key_range::KeyRange;
use crate::mvcc::kvstore::{Event, EventKind};
use crate::pb::etcdserverpb::{
    watch_create_request::FilterType, watch_request, WatchCreateRequest, WatchRequest,
    WatchResponse,
};
use crate::pb::mvccpb;
use crate::replica::Replica;

/// Events per response when replaying history.
const REPLAY_BATCH: usize = 1000;
/// Watch ID etcd uses for stream-wide progress responses.
const STREAM_PROGRESS_ID: i64 = -1;

struct Watcher {
    range: KeyRange,
    next_rev: i64,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
}

impl Watcher {
    fn wants(&self, kind: EventKind, key: &[u8]) -> bool {
        let filtered = match kind {
            EventKind::Put => self.no_put,
            EventKind::Delete => self.no_delete,
        };
        !filtered && self.range.contains(key)
    }

    fn to_event(&self, e: &Event) -> mvccpb::Event {
        crate::machine::kv_ops::to_event(e, self.prev_kv)
    }
}

/// Closed when the client went away.
struct Gone;

pub struct Session {
    replica: Arc<Replica>,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    /// Every watcher has been sent all its events up to this revision.
    synced_rev: i64,
}

impl Session {
    pub fn new(replica: Arc<Replica>, tx: mpsc::Sender<Result<WatchResponse, Status>>) -> Self {
        Self {
            replica,
            tx,
            watchers: BTreeMap::new(),
            next_id: 0,
            synced_rev: 0,
        }
    }

    pub async fn run(mut self, mut input: Streaming<WatchRequest>, progress_every: Duration) {
        let mut notices = self.replica.sm.hub.subscribe();
        self.synced_rev = self.replica.sm.read().kv.current_rev();
        let mut ticker = tokio::time::interval(progress_every);
        ticker.tick().await;
        loop {
            let step = tokio::select! {
                msg = input.next() => match msg {
                    Some(Ok(req)) => self.handle(req, &mut notices).await,
                    _ => Err(Gone),
                },
                notice = notices.recv() => self.on_notice(notice).await,
                _ = ticker.tick() => self.progress_tick().await,
            };
            if step.is_err() {
                break;
            }
        }
    }

    async fn send(&self, resp: WatchResponse) -> Result<(), Gone> {
        self.tx.send(Ok(resp)).await.map_err(|_| Gone)
    }

    fn response(&self, revision: i64, watch_id: i64) -> WatchResponse {
        WatchResponse {
            header: header(&self.replica, revision),
            watch_id,
            ..Default::default()
        }
    }

    async fn on_notice(
        &mut self,
        notice: Result<Arc<Notice>, broadcast::error::RecvError>,
    ) -> Result<(), Gone> {
        match notice {
            Ok(n) => match &*n {
                Notice::Changes { revision, events } => self.deliver(*revision, events).await,
                Notice::Reset => self.resync_all().await,
            },
            Err(broadcast::error::RecvError::Lagged(_)) => self.resync_all().await,
            Err(broadcast::error::RecvError::Closed) => Err(Gone),
        }
    }

    async fn deliver(&mut self, revision: i64, events: &[Event]) -> Result<(), Gone> {
        self.synced_rev = self.synced_rev.max(revision);
        let mut out = Vec::new();
        for (id, w) in self.watchers.iter_mut() {
            if revision < w.next_rev {
                continue;
            }
            w.next_rev = revision + 1;
            let evs: Vec<mvccpb::Event> = events
                .iter()
                .filter(|e| w.wants(e.kind, &e.kv.key))
                .map(|e| w.to_event(e))
                .collect();
            if !evs.is_empty() {
                out.push((*id, evs));
            }
        }
        for (id, events) in out {
            let mut resp = self.response(revision, id);
            resp.events = events;
            self.send(resp).await?;
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        req: WatchRequest,
        notices: &mut broadcast::Receiver<Arc<Notice>>,
    ) -> Result<(), Gone> {
        match req.request_union {
            Some(watch_request::RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(watch_request::RequestUnion::CancelRequest(c)) => {
                if self.watchers.remove(&c.watch_id).is_some() {
                    let mut resp = self.response(self.synced_rev, c.watch_id);
                    resp.canceled = true;
                    self.send(resp).await?;
                }
                Ok(())
            }
            Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                // Deliver what is already queued so the reported revision is really synced.
                loop {
                    match notices.try_recv() {
                        Ok(n) => self.on_notice(Ok(n)).await?,
                        Err(broadcast::error::TryRecvError::Lagged(_)) => self.resync_all().await?,
                        Err(_) => break,
                    }
                }
                self.send(self.response(self.synced_rev, STREAM_PROGRESS_ID))
                    .await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: WatchCreateRequest) -> Result<(), Gone> {
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        if self.watchers.contains_key(&id) {
            let mut resp = self.response(self.synced_rev, id);
            resp.created = true;
            resp.canceled = true;
            resp.cancel_reason = "mvcc: duplicate watch ID provided on the WatchStream".into();
            return self.send(resp).await;
        }
        if c.watch_id == 0 {
            self.next_id += 1;
        }
        let current = self.replica.sm.read().kv.current_rev();
        let watcher = Watcher {
            range: KeyRange::new(&c.key, &c.range_end),
            next_rev: if c.start_revision > 0 {
                c.start_revision
            } else {
                current + 1
            },
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: c.prev_kv,
            progress_notify: c.progress_notify,
        };
        let mut created = self.response(current, id);
        created.created = true;
        self.send(created).await?;
        self.watchers.insert(id, watcher);
        self.replay(id).await
    }

    async fn resync_all(&mut self) -> Result<(), Gone> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            self.replay(id).await?;
        }
        Ok(())
    }

    /// Sends watcher `id` everything from its next revision up to the store's current one.
    async fn replay(&mut self, id: i64) -> Result<(), Gone> {
        let Some(w) = self.watchers.get(&id) else {
            return Ok(());
        };
        let read = {
            let m = self.replica.sm.read();
            let current = m.kv.current_rev();
            let compacted = m.kv.compact_rev();
            if w.next_rev < compacted {
                Ok((Vec::new(), current, Some(compacted)))
            } else {
                m.kv.history(w.next_rev, current, &w.range, w.prev_kv)
                    .map(|history| {
                        let events: Vec<(i64, mvccpb::Event)> = history
                            .iter()
                            .filter(|e| w.wants(e.kind, &e.kv.key))
                            .map(|e| (e.kv.mod_revision, w.to_event(e)))
                            .collect();
                        (events, current, None)
                    })
            }
        };
        let (events, current, compacted) = match read {
            Ok(r) => r,
            Err(e) => {
                // History that cannot be read ends the stream with the error rather than
                // leaving a gap.
                tracing::error!(%e, "watch replay failed");
                let _ = self.tx.send(Err(crate::etcd::status_of(e))).await;
                return Err(Gone);
            }
        };
        if let Some(compact_revision) = compacted {
            self.watchers.remove(&id);
            let mut resp = self.response(current, id);
            resp.compact_revision = compact_revision;
            resp.canceled = true;
            resp.cancel_reason = "mvcc: required revision has been compacted".into();
            return self.send(resp).await;
        }
        self.synced_rev = self.synced_rev.max(current);
        if let Some(w) = self.watchers.get_mut(&id) {
            w.next_rev = w.next_rev.max(current + 1);
        }
        let mut batch: Vec<mvccpb::Event> = Vec::new();
        let mut last_rev = 0;
        for (rev, ev) in events {
            if batch.len() >= REPLAY_BATCH && rev != last_rev {
                let mut resp = self.response(current, id);
                resp.events = std::mem::take(&mut batch);
                self.send(resp).await?;
            }
            last_rev = rev;
            batch.push(ev);
        }
        if !batch.is_empty() {
            let mut resp = self.response(current, id);
            resp.events = batch;
            self.send(resp).await?;
        }
        Ok(())
    }

    async fn progress_tick(&mut self) -> Result<(), Gone> {
        let ids: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.progress_notify)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.send(self.response(self.synced_rev, id)).await?;
        }
        Ok(())
    }
}
