//! `causeway.v1.EventStoreService`: every RPC of the public API, over the store.
//!
//! Each handler does the same three things: convert the request (`convert.rs`, which names a
//! bad field), run the store call on the blocking pool (never on an async worker; a full pool
//! is RESOURCE_EXHAUSTED at once), and convert the answer back, mapping any failure through
//! the one `to_status`.
//!
//! Appends are the exception to the pool: they go straight to the store's writer queue with
//! [`Store::append_with`], which never blocks, and once the group is durable the store hands
//! its answers to the relay task (`Relay`, one wake per group), which completes each append's
//! oneshot on the runtime, handing back the events to be freed there, where they were decoded.
//! No thread waits through the fsync, and an append costs two thread hand-offs (async worker
//! to the store and back) instead of four. Admission is a semaphore of
//! `pool_threads + pool_queue` permits, the same bound appends had on the pool: each permit
//! is held until the store answers, even if the client goes away, and a full semaphore is
//! RESOURCE_EXHAUSTED at once.
//!
//! Responses that carry events are cut at `READ_BATCH_BYTES_MAX` with a continuation, so a
//! read of large events never outgrows the message limit.
//!
//! On a cluster member every write (appends, gate changes) is stamped here and goes through the
//! Raft log ([`ClusterNode::write`]); a follower refuses it with the leader's address. Reads
//! first clear their consistency level ([`ClusterNode::read_barrier`]), then read this node's
//! store, and say how far it had applied (`applied_position`). A single node does neither.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::cluster::node::ClusterNode;
use crate::live::LiveStore;
use causeway_core::receipt::{self, Signer};
use causeway_core::{Append, Direction, Position, Receipt, Store, Version};
use tokio::sync::{Semaphore, oneshot};
use tonic::{Request, Response, Status};

use crate::auth::{self, Action, Caller};
use crate::convert;
use crate::limits::READ_BATCH_BYTES_MAX;
use crate::pb;
use crate::pb::event_store_service_server::EventStoreService;
use crate::pool::Pool;
use crate::status::{Error, to_status};
use crate::subscribe::{Hub, SubscribeStream};
use crate::wire::{EventBatch, ReadEntityResponse, ReadLogResponse};

/// The service: the store, the pool its calls run on, and the subscription hub.
#[derive(Clone, Debug)]
pub struct Service {
    store: LiveStore,
    /// The cluster this node is a member of; `None` for a single node.
    cluster: Option<Arc<ClusterNode>>,
    pool: Arc<Pool>,
    /// Admission of appends, which bypass the pool: one permit per append until the writer
    /// answers it.
    appends: Arc<Semaphore>,
    appends_max: usize,
    /// Hands the store's answers to appends back to the runtime.
    relay: Relay,
    hub: Hub,
    /// The receipt signing key's id and public key, when the server signs.
    signing_key: Option<(String, [u8; 32])>,
}

impl Service {
    /// A service over an open store. At most `appends_max` appends wait for the writer at
    /// once. `signer` is the key the store signs receipts with, if any: `VerifyReceipt` then
    /// also checks signatures against it.
    pub fn new(
        store: LiveStore,
        cluster: Option<Arc<ClusterNode>>,
        pool: Arc<Pool>,
        appends_max: usize,
        hub: Hub,
        signer: Option<&Signer>,
    ) -> Service {
        Service {
            store,
            cluster,
            pool,
            appends: Arc::new(Semaphore::new(appends_max)),
            appends_max,
            relay: Relay::start(),
            hub,
            signing_key: signer.map(|signer| (key_id(signer), signer.public_key())),
        }
    }

    /// Turns true when the server shuts down.
    pub(crate) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.hub.stopping()
    }

    /// The pool store calls run on, for services beside this one.
    pub fn pool(&self) -> Arc<Pool> {
        self.pool.clone()
    }

    /// Runs a store call on the pool.
    async fn call<T, F>(&self, job: F) -> Result<T, Status>
    where
        F: FnOnce(&Store) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.get();
        self.pool
            .run(move || job(&store))
            .await
            .map_err(to_status)?
            .map_err(to_status)
    }

    /// Appends without occupying a pool thread: queues the append for the writer and awaits
    /// its answer.
    async fn append(&self, append: Append) -> Result<Receipt, Status> {
        self.submit(append, false, Admission::Refuse, false)
            .await?
            .await
    }

    /// Queues an append behind every append submitted before it (for the writer, or for the
    /// Raft log on a cluster leader) and gives back the future of its answer, which needs no
    /// polling to make progress: an append stream keeps several pending and polls the oldest.
    /// A refusal names the fields under `append.` when it is `nested` in its request (a
    /// stream's). With every admission permit taken, `admission` says whether to refuse at once
    /// or wait for one; a permit is given back when the append is decided, whether or not its
    /// answer is polled then. `in_sequence`: the caller sends its next append as soon as this
    /// one is answered, as a stream's client does; when no other append is in flight on the
    /// node, the writer then polls for it (`Store::append_in_sequence`).
    pub(crate) async fn submit(
        &self,
        append: Append,
        nested: bool,
        admission: Admission,
        in_sequence: bool,
    ) -> Result<Answer, Status> {
        let appends = self.appends.clone();
        let permit = match admission {
            Admission::Refuse => appends.try_acquire_owned().ok(),
            Admission::Wait => appends.acquire_owned().await.ok(),
        };
        let permit = permit.ok_or_else(|| {
            to_status(Error::AppendsFull {
                max: self.appends_max,
            })
        })?;
        if let Some(node) = &self.cluster {
            node.check_leader().map_err(to_status)?;
            let command = self
                .store
                .get()
                .stamp(append)
                .map_err(|err| append_refusal(nested, err))?;
            let deadline = tokio::time::Instant::now() + crate::limits::COMMIT_WAIT;
            let outcome = node
                .propose(command, deadline, Some(permit))
                .await
                .map_err(|err| append_refusal(nested, err))?;
            let node = node.clone();
            return Ok(Box::pin(async move {
                let answer = node.answer(outcome, deadline).await;
                answer.map_err(|err| append_refusal(nested, err))
            }));
        }
        let (reply, answer) = oneshot::channel();
        let relay = self.relay.clone();
        let done = move |result, spent| {
            relay.deliver(Delivery {
                reply,
                answer: (result, spent),
                permit,
            });
        };
        // Only when this append is the only one in flight on the node: with others beside it the
        // writer is woken with work anyway, and polling would take a CPU they need.
        let alone = self.appends.available_permits() + 1 == self.appends_max;
        let store = self.store.get();
        let queued = if in_sequence && alone {
            store.append_in_sequence(append, done)
        } else {
            store.append_with(append, done)
        };
        queued.map_err(|err| append_refusal(nested, err))?;
        Ok(Box::pin(async move {
            match answer.await {
                // The events are freed here, on an async worker, where they were decoded (see
                // `Spent`); if the client went away, the store's thread frees them instead.
                Ok((result, _spent)) => result.map_err(|err| append_refusal(nested, err)),
                Err(_) => Err(to_status(causeway_core::Error::Poisoned(
                    "the writer thread stopped".to_string(),
                ))),
            }
        }))
    }
}

/// Hands the answers of a commit group from the store's thread to the async runtime with one
/// wake instead of one per append: a task on the runtime completes them all, so every append
/// of the group is answered before any of their connections is polled, and the answers that
/// share a connection leave in one write. At most `appends_max` deliveries wait, since each
/// carries its append's admission permit until it is delivered.
#[derive(Clone, Debug)]
struct Relay(tokio::sync::mpsc::UnboundedSender<Delivery>);

/// An append's answer on its way to the task that waits for it.
#[derive(Debug)]
struct Delivery {
    reply: oneshot::Sender<(causeway_core::Result<Receipt>, causeway_core::Spent)>,
    answer: (causeway_core::Result<Receipt>, causeway_core::Spent),
    permit: tokio::sync::OwnedSemaphorePermit,
}

impl Delivery {
    fn complete(self) {
        drop(self.permit);
        // The client may have gone away; the append stands regardless.
        let _ = self.reply.send(self.answer);
    }
}

/// Deliveries completed per turn of the relay's task, at most.
const RELAY_BATCH_MAX: usize = 256;

impl Relay {
    /// Spawns the relay's task on the current runtime; it ends when every sender is dropped.
    fn start() -> Relay {
        let (sender, mut deliveries) = tokio::sync::mpsc::unbounded_channel::<Delivery>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(RELAY_BATCH_MAX);
            while deliveries.recv_many(&mut batch, RELAY_BATCH_MAX).await > 0 {
                batch.drain(..).for_each(Delivery::complete);
            }
        });
        Relay(sender)
    }

    /// Sends a delivery to the relay's task; with the runtime gone, completes it here.
    fn deliver(&self, delivery: Delivery) {
        if let Err(tokio::sync::mpsc::error::SendError(delivery)) = self.0.send(delivery) {
            delivery.complete();
        }
    }
}

/// What [`Service::submit`] does when every admission permit is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Refuse at once (RESOURCE_EXHAUSTED): a unary call.
    Refuse,
    /// Wait for a permit: a stream, whose later appends would otherwise fail their conditions.
    Wait,
}

/// The answer to a submitted append (see [`Service::submit`]).
pub(crate) type Answer = Pin<Box<dyn Future<Output = Result<Receipt, Status>> + Send>>;

impl Service {
    /// [`check_reach`] on the pool, for a caller the policy limits (nothing to check for one
    /// that may read and manage everything); gives the append back to be written.
    pub(crate) async fn reached(
        &self,
        caller: Caller,
        method: &'static str,
        append: Append,
    ) -> Result<Append, Status> {
        let limited = !caller.may_everywhere(Action::Read) || !caller.may_everywhere(Action::Gates);
        if !limited
            || (append.gates.is_empty()
                && append.events.iter().all(|event| event.causation.is_empty()))
        {
            return Ok(append);
        }
        // The refusal is worded as the store words the same refusal of an append.
        self.call(move |store| Ok(check_reach(store, &caller, method, &append).map(|()| append)))
            .await?
            // Only a unary Append carries the append's fields at the top of its request.
            .map_err(|err| append_refusal(method != "Append", err))
    }

    /// Waits until a read at the requested consistency may be answered from this node.
    async fn read_barrier(&self, consistency: i32) -> Result<(), Status> {
        let consistency = convert::consistency(consistency, "consistency").map_err(to_status)?;
        match &self.cluster {
            Some(node) => node.read_barrier(consistency).await.map_err(to_status),
            None => Ok(()),
        }
    }

    /// Writes a stamped gate or settings command: through the log on a cluster member (after
    /// checking it is the leader), else through the store.
    /// A refusal of the request names `field` in a BadRequest.
    async fn write_command(
        &self,
        field: &'static str,
        stamp: impl FnOnce(&Store) -> causeway_core::Result<causeway_core::Command> + Send + 'static,
    ) -> Result<Receipt, Status> {
        let refused = move |err: causeway_core::Error| Error::refused(field, err);
        match &self.cluster {
            Some(node) => {
                node.check_leader().map_err(to_status)?;
                let command = self
                    .call(move |store| stamp(store).map_err(refused))
                    .await?;
                node.write(command).await.map_err(|err| {
                    to_status(match err {
                        Error::Core(err) => refused(err),
                        other => other,
                    })
                })
            }
            None => {
                self.call(move |store| {
                    let command = stamp(store).map_err(refused)?;
                    store.apply(command).map_err(refused)
                })
                .await
            }
        }
    }
}

/// The id a signing key's receipts carry: `ed25519:` and the first 8 bytes of its public key in
/// hex, so a verifier can tell keys apart across rotations. The offline verifiers check this
/// form (`causeway_client::receipt::key_id`, and the Python and TypeScript `key_id`/`keyId`).
pub fn key_id(signer: &Signer) -> String {
    format!("ed25519:{}", hex::encode(&signer.public_key()[..8]))
}

/// Checks a receipt against the events it names in `store`, and its signature against the
/// server's key (`signing_key`: its id and public key) when the server signs. `Ok(Err(reason))`
/// is the verdict that it does not verify; `Err` is a failed read. `VerifyReceipt` and the
/// console both answer with this.
pub fn check_receipt(
    store: &Store,
    receipt: &Receipt,
    signing_key: Option<&(String, [u8; 32])>,
) -> Result<Result<(), String>, Error> {
    if receipt.events.is_empty() {
        return Ok(Err("the receipt names no events".to_string()));
    }
    let mut events = Vec::with_capacity(receipt.events.len());
    for committed in &receipt.events {
        match store.get(committed.id) {
            Ok(event) => events.push(event),
            Err(causeway_core::Error::NotFound(_)) => {
                return Ok(Err(format!("event {} is not in the store", committed.id)));
            }
            Err(err) => return Err(err.into()),
        }
    }
    if let (Some((key_id, _)), Some(signature)) = (signing_key, &receipt.signature)
        && signature.key_id != *key_id
    {
        return Ok(Err(format!(
            "the receipt is signed with key {}, the server's key is {key_id}",
            crate::status::echo(&signature.key_id)
        )));
    }
    let public_key = signing_key.map(|(_, public_key)| public_key);
    Ok(receipt::verify(receipt, &events, public_key).map_err(|err| err.to_string()))
}

/// The status of an append the store refused while it ran, after `convert::append` checked
/// every field it can check alone: a refusal that names its part (`InvalidField`: an id
/// already in the store, a parent later in the append, a gate named but not registered) names
/// that part, anything else about the events (the gate evaluation budget) names `events`; both
/// under `append.` when the append is `nested` in its request (a stream's or DryRun's). Other
/// failures keep their own status.
fn append_refusal(nested: bool, err: impl Into<Error>) -> Status {
    match err.into() {
        Error::Core(err) => {
            let field = match &err {
                causeway_core::Error::InvalidField { field, .. } => field.as_str(),
                _ => "events",
            };
            let field = if nested {
                format!("append.{field}")
            } else {
                field.to_string()
            };
            to_status(Error::refused(field, err))
        }
        other => to_status(other),
    }
}

/// A graph query's refusal names `depth` for `GRAPH_DEPTH_MAX`, else `limit` (a start event
/// that does not exist is NOT_FOUND).
fn graph_refusal(err: causeway_core::Error) -> Error {
    match &err {
        causeway_core::Error::LimitExceeded {
            limit: "GRAPH_DEPTH_MAX",
            ..
        } => Error::refused("depth", err),
        _ => Error::refused("limit", err),
    }
}

/// A gate definition the store refuses as invalid names `definition` (its rule's field when
/// the store says which) in a BadRequest; any other refusal (too many gates, a closed store)
/// keeps its own status.
fn definition_refusal(err: causeway_core::Error) -> Error {
    Error::refused("definition", err)
}

/// Checks what an append touches: `append` in each event's scope, and `read` in each scope
/// its conditions look at (an expected version or a DCB query answers with what is there; a
/// query on every scope needs `read` on `*`).
pub(crate) fn check_append(
    caller: &Caller,
    method: &str,
    append: &pb::AppendRequest,
) -> Result<(), Status> {
    for event in &append.events {
        caller.require(method, Action::Append, &event.scope)?;
    }
    for expected in &append.expected {
        caller.require(method, Action::Read, &expected.scope)?;
    }
    if let Some(condition) = &append.condition {
        let scopes = condition
            .query
            .as_ref()
            .map(|query| query.scopes.as_slice())
            .unwrap_or_default();
        if scopes.is_empty() {
            caller.require_everywhere(method, Action::Read)?;
        }
        for scope in scopes {
            caller.require(method, Action::Read, scope)?;
        }
    }
    Ok(())
}

/// What of the store an append reaches beyond its own scopes, seen as the caller may see it:
/// a named gate the caller may not manage is answered as one that is not registered, and a
/// causation parent it may not read (when causation is checked) as one that does not exist,
/// word for word as the store answers those, so neither answer says the thing is there.
fn check_reach(store: &Store, caller: &Caller, method: &str, append: &Append) -> Result<(), Error> {
    if !append.gates.is_empty() {
        let gates = store.gates();
        for (gate_idx, name) in append.gates.iter().enumerate() {
            if let Some(gate) = gates.iter().find(|gate| gate.name == *name)
                && !may_manage(caller, gate)
            {
                auth::audit(caller.name(), method, "-", "denied", "gates");
                return Err(causeway_core::Error::InvalidField {
                    field: format!("gates[{gate_idx}]"),
                    message: format!(
                        "gate {:?} is not registered",
                        causeway_core::command::short(name)
                    ),
                }
                .into());
            }
        }
    }
    if append.external_causation || caller.may_everywhere(Action::Read) {
        return Ok(());
    }
    for (event_idx, event) in append.events.iter().enumerate() {
        for parent in &event.causation {
            let in_append = append.events[..event_idx]
                .iter()
                .any(|earlier| earlier.id == Some(*parent));
            if in_append {
                continue;
            }
            let hidden = match store.get(*parent) {
                Ok(found) => !caller.may(Action::Read, &found.scope),
                Err(_) => false,
            };
            if hidden {
                auth::audit(caller.name(), method, "-", "denied", "read");
                return Err(causeway_core::Error::Denied {
                    gate: causeway_core::gate::CAUSATION_CHECK.to_string(),
                    code: "CAUSATION_MISSING".to_string(),
                    message: format!(
                        "event {event_idx} names causation parent {parent}, which does not exist"
                    ),
                    facts: std::collections::BTreeMap::from([
                        ("event".to_string(), event_idx.to_string()),
                        ("parent".to_string(), parent.to_string()),
                    ]),
                }
                .into());
            }
        }
    }
    Ok(())
}

/// The graph without the events the caller may not read, and without the edges that touch
/// them.
fn readable(mut graph: causeway_core::Graph, caller: &Caller) -> causeway_core::Graph {
    graph
        .nodes
        .retain(|event| caller.may(Action::Read, &event.scope));
    let kept: std::collections::HashSet<_> = graph.nodes.iter().map(|event| event.id).collect();
    graph
        .edges
        .retain(|edge| kept.contains(&edge.parent) && kept.contains(&edge.child));
    graph
}

/// Refuses a graph walk from an event the caller may not read exactly as one from an event the
/// store does not have, so the answer (and the readable events around it) says nothing of it.
fn visible_root(
    store: &causeway_core::Store,
    caller: &Caller,
    id: causeway_core::EventId,
    method: &str,
) -> Result<(), Error> {
    let root = store.get(id)?;
    if !caller.may(Action::Read, &root.scope) {
        auth::audit(caller.name(), method, "-", "denied", "read");
        return Err(causeway_core::Error::NotFound(format!("event {id}")).into());
    }
    Ok(())
}

/// Whether the caller may see and manage a gate: `gates` in each of its scopes, or on `*` for
/// a gate bound to every scope (and for one compiled into the program).
fn may_manage(caller: &Caller, gate: &causeway_core::store::RegisteredGate) -> bool {
    match &gate.definition {
        Some(definition) if !definition.scopes.is_empty() => definition
            .scopes
            .iter()
            .all(|scope| caller.may(Action::Gates, scope)),
        _ => caller.may_everywhere(Action::Gates),
    }
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, Status> {
    value.ok_or_else(|| to_status(Error::invalid(field, "it is required")))
}

#[tonic::async_trait]
impl EventStoreService for Service {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let caller = Caller::of(&request);
        check_append(&caller, "Append", request.get_ref())?;
        let n_events = request.get_ref().events.len() as u64;
        let answered = match convert::append(request.into_inner(), "").map_err(to_status) {
            Ok(append) => self.reached(caller, "Append", append).await,
            Err(status) => Err(status),
        };
        let answered = match answered {
            Ok(append) => self.append(append).await,
            Err(status) => Err(status),
        };
        crate::metrics::append_answered(n_events, answered.as_ref().map(|_| ()));
        let receipt = answered?;
        Ok(Response::new(pb::AppendResponse {
            receipt: Some(convert::receipt(receipt)),
        }))
    }

    type AppendStreamStream = crate::append_stream::AppendStreamStream;

    async fn append_stream(
        &self,
        request: Request<tonic::Streaming<pb::AppendStreamRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let caller = Caller::of(&request);
        // Streamed calls find their messages' bytes here (`budget.rs`).
        let bytes = request
            .extensions()
            .get::<crate::budget::StreamBytes>()
            .cloned();
        Ok(Response::new(crate::append_stream::serve(
            self.clone(),
            caller,
            bytes,
            request.into_inner(),
        )))
    }

    async fn dry_run(
        &self,
        request: Request<pb::DryRunRequest>,
    ) -> Result<Response<pb::DryRunResponse>, Status> {
        let caller = Caller::of(&request);
        let append = required(request.into_inner().append, "append")?;
        check_append(&caller, "DryRun", &append)?;
        let append = convert::append(append, "append.").map_err(to_status)?;
        let append = self.reached(caller, "DryRun", append).await?;
        let receipt = self
            .call(move |store| Ok(store.dry_run(append)))
            .await?
            .map_err(|err| append_refusal(true, err))?;
        Ok(Response::new(pb::DryRunResponse {
            receipt: Some(convert::receipt(receipt)),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let id = convert::event_id(&request.id, "id").map_err(to_status)?;
        self.read_barrier(request.consistency).await?;
        let (event, applied) = self
            .call(move |store| {
                let event = store.get(id)?;
                // An event the caller may not read is answered as one that does not exist, so
                // the answer says nothing of its scope or its existence.
                if !caller.may(Action::Read, &event.scope) {
                    auth::audit(caller.name(), "Get", "-", "denied", "read");
                    return Err(causeway_core::Error::NotFound(format!("event {id}")).into());
                }
                Ok((event, store.head().0))
            })
            .await?;
        Ok(Response::new(pb::GetResponse {
            event: Some(convert::event(event)),
            applied_position: applied,
        }))
    }

    async fn read_entity(
        &self,
        request: Request<pb::ReadEntityRequest>,
    ) -> Result<Response<ReadEntityResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        convert::read_entity_names(&request.scope, &request.entity).map_err(to_status)?;
        caller.require("ReadEntity", Action::Read, &request.scope)?;
        let direction = convert::direction(request.direction, "direction").map_err(to_status)?;
        self.read_barrier(request.consistency).await?;
        // Backward from 0 reads from the last event; the core does that itself.
        let from = Version(request.from_version);
        let response = self
            .call(move |store| {
                let applied_position = store.head().0;
                // The events are encoded for the wire as they are read. Fewer events than asked
                // is a valid answer: the page ends before its bytes would pass
                // READ_BATCH_BYTES_MAX (the first event always comes back), and the caller
                // continues from `next_version`.
                let mut events = EventBatch::new();
                let mut full = false;
                let mut last_version = None;
                store
                    .read_entity_records(
                        &request.scope,
                        &request.entity,
                        from,
                        direction,
                        request.limit as usize,
                        |record| {
                            full = full
                                || (!events.is_empty()
                                    && events.len_with(record) > READ_BATCH_BYTES_MAX);
                            if !full {
                                events.push(record);
                                last_version = Some(record.version.0);
                            }
                            Ok(())
                        },
                    )
                    .map_err(|err| Error::refused("limit", err))?;
                let current = store.version(&request.scope, &request.entity).0;
                let (next, end) = match (direction, last_version) {
                    (Direction::Forward, Some(last)) => (last + 1, last >= current),
                    (Direction::Backward, Some(last)) => (last - 1, last <= 1),
                    (Direction::Forward, None) => (from.0, true),
                    (Direction::Backward, None) => (0, true),
                };
                Ok(ReadEntityResponse {
                    events,
                    next,
                    end,
                    applied_position,
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn read_log(
        &self,
        request: Request<pb::ReadLogRequest>,
    ) -> Result<Response<ReadLogResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let direction = convert::direction(request.direction, "direction").map_err(to_status)?;
        let filter = convert::filter(request.filter, "filter").map_err(to_status)?;
        self.read_barrier(request.consistency).await?;
        // The core cuts the page at the response's byte budget, so nothing is read from disk
        // only to be dropped here. The events are encoded for the wire as they are read, and
        // event by event what the caller may not read is left out; `next_position` still moves
        // past it, so paging neither repeats nor skips what it may read.
        let response = self
            .call(move |store| {
                let applied_position = store.head().0;
                let mut events = EventBatch::new();
                let (next, end) = store
                    .read_log_records(
                        Position(request.from_position),
                        direction,
                        request.limit as usize,
                        READ_BATCH_BYTES_MAX,
                        &filter,
                        |record| {
                            if caller.may(Action::Read, record.scope) {
                                events.push(record);
                            }
                            Ok(())
                        },
                    )
                    .map_err(|err| Error::refused("limit", err))?;
                Ok(ReadLogResponse {
                    events,
                    next: next.0,
                    end,
                    applied_position,
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn head(
        &self,
        request: Request<pb::HeadRequest>,
    ) -> Result<Response<pb::HeadResponse>, Status> {
        self.read_barrier(request.into_inner().consistency).await?;
        let (position, digest) = self
            .call(|store| {
                let (head, digest) = store.head_and_digest();
                Ok((head.0, digest))
            })
            .await?;
        Ok(Response::new(pb::HeadResponse {
            position,
            digest: digest.to_vec(),
        }))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = Caller::of(&request);
        let stream = self.hub.subscribe(request.into_inner(), caller).await?;
        Ok(Response::new(stream))
    }

    async fn get_ancestors(
        &self,
        request: Request<pb::GetAncestorsRequest>,
    ) -> Result<Response<pb::GetAncestorsResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let id = convert::event_id(&request.id, "id").map_err(to_status)?;
        let asking = caller.clone();
        let graph = self
            .call(move |store| {
                // Bounds and a missing start first, as without a policy; then the start's scope.
                let graph = store
                    .ancestors(id, request.depth, request.limit as usize)
                    .map_err(graph_refusal)?;
                visible_root(store, &asking, id, "GetAncestors")?;
                Ok(graph)
            })
            .await?;
        let graph = readable(graph, &caller);
        Ok(Response::new(pb::GetAncestorsResponse {
            graph: Some(convert::graph(graph)),
        }))
    }

    async fn get_descendants(
        &self,
        request: Request<pb::GetDescendantsRequest>,
    ) -> Result<Response<pb::GetDescendantsResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let id = convert::event_id(&request.id, "id").map_err(to_status)?;
        let asking = caller.clone();
        let graph = self
            .call(move |store| {
                // Bounds and a missing start first, as without a policy; then the start's scope.
                let graph = store
                    .descendants(id, request.depth, request.limit as usize)
                    .map_err(graph_refusal)?;
                visible_root(store, &asking, id, "GetDescendants")?;
                Ok(graph)
            })
            .await?;
        let graph = readable(graph, &caller);
        Ok(Response::new(pb::GetDescendantsResponse {
            graph: Some(convert::graph(graph)),
        }))
    }

    async fn get_correlation(
        &self,
        request: Request<pb::GetCorrelationRequest>,
    ) -> Result<Response<pb::GetCorrelationResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let id = convert::event_id(&request.correlation_id, "correlation_id").map_err(to_status)?;
        let graph = self
            .call(move |store| {
                store
                    .correlation(id, request.limit as usize)
                    .map_err(graph_refusal)
            })
            .await?;
        let graph = readable(graph, &caller);
        Ok(Response::new(pb::GetCorrelationResponse {
            graph: Some(convert::graph(graph)),
        }))
    }

    async fn register_gate(
        &self,
        request: Request<pb::RegisterGateRequest>,
    ) -> Result<Response<pb::RegisterGateResponse>, Status> {
        let caller = Caller::of(&request);
        let definition = convert::gate_definition(request.into_inner().definition, "definition")
            .map_err(to_status)?;
        // A gate bound to no scope judges every scope, so it needs `gates` on `*`.
        if definition.scopes.is_empty() {
            caller.require_everywhere("RegisterGate", Action::Gates)?;
        }
        for scope in &definition.scopes {
            caller.require("RegisterGate", Action::Gates, scope)?;
        }
        // A CEL gate can ask about any scope (`version`, `count`, `exists`) and say what it
        // found through its verdicts, so it needs `read` everywhere.
        if matches!(definition.rule, causeway_core::gate::Rule::Cel { .. }) {
            caller.require_everywhere("RegisterGate", Action::Read)?;
        }
        // A definition with a taken name replaces that gate, which takes it off its scopes:
        // only a caller who may manage the gate there may do that.
        let name = definition.name.clone();
        let gates = self.call(|store| Ok(store.gates())).await?;
        if let Some(gate) = gates.iter().find(|gate| gate.name == name)
            && !may_manage(&caller, gate)
        {
            auth::audit(caller.name(), "RegisterGate", "-", "denied", "gates");
            return Err(Status::permission_denied(format!(
                "gate {} is registered on scopes this caller may not manage: choose another name",
                crate::status::echo(&name)
            )));
        }
        let gate_name = definition.name.clone();
        let gate_scopes = definition.scopes.join(",");
        // Checked and compiled on the pool first, so a definition that does not compile is
        // refused without a log entry, naming its field; the writer still decides it.
        let checked = definition.clone();
        self.call(move |_| {
            checked
                .check()
                .map(drop)
                .map_err(|refusal| Error::field("definition", refusal))
        })
        .await?;
        let receipt = match &self.cluster {
            Some(_) => {
                self.write_command("definition", move |store| store.stamp_gate(definition))
                    .await?
            }
            None => {
                self.call(move |store| store.register_gate(definition).map_err(definition_refusal))
                    .await?
            }
        };
        auth::audit(
            caller.name(),
            "RegisterGate",
            &gate_scopes,
            "registered",
            &crate::status::echo(&gate_name),
        );
        Ok(Response::new(pb::RegisterGateResponse {
            receipt: Some(convert::receipt(receipt)),
        }))
    }

    async fn list_gates(
        &self,
        request: Request<pb::ListGatesRequest>,
    ) -> Result<Response<pb::ListGatesResponse>, Status> {
        let caller = Caller::of(&request);
        let gates = self.call(|store| Ok(store.gates())).await?;
        Ok(Response::new(pb::ListGatesResponse {
            gates: gates
                .into_iter()
                .filter(|gate| may_manage(&caller, gate))
                .map(convert::registered_gate)
                .collect(),
        }))
    }

    async fn remove_gate(
        &self,
        request: Request<pb::RemoveGateRequest>,
    ) -> Result<Response<pb::RemoveGateResponse>, Status> {
        let caller = Caller::of(&request);
        let name = request.into_inner().name;
        convert::gate_name(&name, "name").map_err(to_status)?;
        // A gate the caller may not manage is answered as one that is not registered.
        let gates = self.call(|store| Ok(store.gates())).await?;
        if let Some(gate) = gates.iter().find(|gate| gate.name == name)
            && !may_manage(&caller, gate)
        {
            auth::audit(caller.name(), "RemoveGate", "-", "denied", "gates");
            // Worded as the store words a gate it does not have.
            let mut end = name.len().min(64);
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            return Err(to_status(causeway_core::Error::NotFound(format!(
                "gate {:?}",
                &name[..end]
            ))));
        }
        let removed = name.clone();
        let receipt = self
            .write_command("name", move |store| store.stamp_gate_removal(&name))
            .await?;
        auth::audit(
            caller.name(),
            "RemoveGate",
            "-",
            "removed",
            &crate::status::echo(&removed),
        );
        Ok(Response::new(pb::RemoveGateResponse {
            receipt: Some(convert::receipt(receipt)),
        }))
    }

    async fn verify_receipt(
        &self,
        request: Request<pb::VerifyReceiptRequest>,
    ) -> Result<Response<pb::VerifyReceiptResponse>, Status> {
        let caller = Caller::of(&request);
        let receipt = required(request.into_inner().receipt, "receipt")?;
        let receipt = convert::receipt_from_wire(receipt, "receipt").map_err(to_status)?;
        let signing_key = self.signing_key.clone();
        let verdict = self
            .call(move |store| {
                // An event the caller may not read is reported as one the store does not have,
                // so a verdict says nothing of other scopes.
                for committed in &receipt.events {
                    if let Ok(event) = store.get(committed.id)
                        && !caller.may(Action::Read, &event.scope)
                    {
                        return Ok(Err(format!("event {} is not in the store", committed.id)));
                    }
                }
                check_receipt(store, &receipt, signing_key.as_ref())
            })
            .await?;
        Ok(Response::new(match verdict {
            Ok(()) => pb::VerifyReceiptResponse {
                valid: true,
                reason: String::new(),
            },
            Err(reason) => pb::VerifyReceiptResponse {
                valid: false,
                reason,
            },
        }))
    }
}
