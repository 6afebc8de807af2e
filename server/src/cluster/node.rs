//! A cluster member: the openraft node over this node's Raft log and state machine, and what
//! the public service asks of it (write through the log, read at a consistency level, know the
//! leader) and what the admin service asks (form the cluster, change members, report status).
//!
//! # Writes
//! The leader stamps a command on its own store (ids, hybrid logical timestamp) and proposes it;
//! the answer is what applying it at its log index answered on the leader, which every replica
//! answers alike (a denial included). A node that is not leader refuses at once with the
//! leader's address ([`Error::NotLeader`]) rather than forwarding: clients reach the leader
//! directly, and a stamp is only ever made by the node that proposes it. A write whose outcome
//! the node cannot know (the leader changed under it, or no commit within `COMMIT_WAIT`) is
//! answered as such; the client's retry with the same idempotency key applies it exactly once.
//!
//! # Reads
//! - linearizable: the leader confirms its leadership with a quorum and names a read index; a
//!   follower asks the leader for it over `RaftService.ReadIndex`; either waits to have applied
//!   that far, then reads its own store.
//! - leader: the leader reads its store at once; a follower refuses with the leader's address.
//! - local: any node reads its store at once.
//!
//! # Growing a single node
//! A data directory that holds a single-node store (no `raft/`) is adopted when the node first
//! starts with a node id: the store's files move into the state machine's first generation
//! (staged under `raft.adopt/`, one rename makes it whole). `InitCluster` on it then takes a
//! snapshot and purges the log, so every node added later starts from a snapshot holding every
//! event written before the cluster existed. Until then such a node refuses to join another
//! cluster (see `identity.rs`): that cluster's log would be applied over its events.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use causeway_core::disk::Disk;
use causeway_core::{Command, Receipt, Signer};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{
    ClientWriteError, ForwardReason, ForwardToLeader, InitializeError, LinearizableReadError,
    RaftError,
};
use openraft::{
    BasicNode, ChangeMembers, Instant as _, LinearizerOption, ReadPolicy, ServerState,
    SnapshotPolicy,
};
use tonic::transport::Channel;

use super::identity::Identity;
use super::log::LogStore;
use super::network::{self, Network};
use super::pb;
use super::pb::raft_service_client::RaftServiceClient;
use super::rpc::Peers;
use super::state::{STORE_DIR, StateMachine, generation_name};
use super::types::{Proposal, Response, TypeConfig};
use crate::config::ClusterConfig;
use crate::limits::{
    COMMIT_WAIT, LEARNER_WAIT, PEER_TIMEOUT, PROPOSE_BATCH_MAX, PROPOSE_QUEUE_MAX, READ_INDEX_WAIT,
    TRANSFER_CATCH_UP_WAIT, TRANSFER_SILENCE_HEARTBEATS,
};
use crate::live::LiveStore;
use crate::status::Error;
use crate::tls::Tls;

/// This node's openraft instance.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// The Raft directory inside the data directory.
pub const RAFT_DIR: &str = "raft";
/// Where a single-node store is staged while it is adopted.
const ADOPT_DIR: &str = "raft.adopt";
/// The name of openraft's cluster, in its logs.
const CLUSTER_NAME: &str = "causeway";

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Sees every write acknowledged before the read began.
    Linearizable,
    /// Served by the leader on its lease, once it has applied what earlier leaders
    /// acknowledged.
    Leader,
    /// Served by this node from what it has applied.
    Local,
}

/// A running cluster member.
pub struct ClusterNode {
    /// Set before a graceful shutdown, so the Raft node stopping then is not taken for a
    /// failure.
    stopping: Arc<AtomicBool>,
    raft: Raft,
    identity: Identity,
    live: LiveStore,
    advertise: String,
    local_ip: Option<IpAddr>,
    /// Mutual TLS to and from peers, when configured.
    tls: Option<Tls>,
    snapshots_dir: PathBuf,
    /// Clients of other nodes' `RaftService`, by address, for read indexes.
    peers: Mutex<HashMap<(u64, String), RaftServiceClient<Channel>>>,
    /// Stamped commands on their way to [`propose_in_batches`].
    proposals: tokio::sync::mpsc::Sender<Submission>,
}

/// What proposing a command came to: what applying it answered, or why it was not applied.
pub(crate) type Proposed = Result<Response, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>;

/// A stamped command to propose, and where its outcome goes.
type Submission = (Command, Reply);

/// Where a proposed command's outcome goes, with the admission it holds until then: an append's
/// permit is given back when its outcome is sent, whether or not its writer is still waiting
/// (an append stream polls only its oldest answer).
struct Reply {
    sender: tokio::sync::oneshot::Sender<Proposed>,
    _admitted: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Reply {
    /// Sends the outcome (a writer that went away does not want it) and gives the admission
    /// back.
    fn send(self, outcome: Proposed) {
        let _ = self.sender.send(outcome);
    }
}

/// Proposes queued commands in batches, in queue order, each batch as soon as it is taken; the
/// outcomes of a batch are routed to their writers by a task of their own, so the next batch
/// does not wait for the previous one's commit.
async fn propose_in_batches(raft: Raft, mut queue: tokio::sync::mpsc::Receiver<Submission>) {
    let mut batch = Vec::with_capacity(PROPOSE_BATCH_MAX);
    while queue.recv_many(&mut batch, PROPOSE_BATCH_MAX).await > 0 {
        let (commands, replies): (Vec<Proposal>, Vec<_>) = batch
            .drain(..)
            .map(|(command, reply)| (Proposal::new(command), reply))
            .unzip();
        match raft.client_write_many(commands).await {
            Ok(outcomes) => {
                tokio::spawn(route_outcomes(outcomes, replies));
            }
            Err(fatal) => {
                for reply in replies {
                    reply.send(Err(RaftError::Fatal(fatal.clone())));
                }
            }
        }
    }
}

/// Sends each writer of a batch its command's outcome, in order. A writer whose outcome never
/// comes (the Raft node stopped) sees its reply dropped.
async fn route_outcomes(
    mut outcomes: openraft::base::BoxStream<
        'static,
        Result<openraft::raft::WriteResult<TypeConfig>, openraft::error::Fatal<TypeConfig>>,
    >,
    replies: Vec<Reply>,
) {
    use tokio_stream::StreamExt;
    for reply in replies {
        let outcome = match outcomes.next().await {
            Some(Ok(Ok(written))) => Ok(written.response),
            Some(Ok(Err(err))) => Err(RaftError::APIError(err)),
            Some(Err(fatal)) => Err(RaftError::Fatal(fatal)),
            None => return,
        };
        reply.send(outcome);
    }
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("node_id", &self.identity.node_id())
            .field("advertise", &self.advertise)
            .finish()
    }
}

impl ClusterNode {
    /// Opens (creating or adopting as needed) this node's Raft state in `data_dir` and starts
    /// the Raft node. Blocking file work runs on the calling thread; call it where that is
    /// allowed (the server calls it from its pool).
    pub async fn start(
        data_dir: &Path,
        listen: SocketAddr,
        config: &ClusterConfig,
        signer: Option<Signer>,
        tls: Option<Tls>,
    ) -> io::Result<ClusterNode> {
        // Peer traffic leaves from the IP this node listens on (unless it listens on all).
        let local_ip = Some(listen.ip()).filter(|ip| !ip.is_unspecified());
        let raft_dir = data_dir.join(RAFT_DIR);
        adopt_single_node(data_dir)?;
        std::fs::create_dir_all(&raft_dir)?;
        let identity = Identity::open(&raft_dir, config.node_id)?;
        let log = LogStore::open(&raft_dir)?;
        let state_dir = raft_dir.join("state");
        let state = StateMachine::open_signed(&state_dir, signer)?;
        let live = state.live();
        let own_events = live.get().head().0;
        if identity.cluster_id().is_none() && own_events > 0 {
            identity.hold_own_events(own_events);
            tracing::warn!(
                events = own_events,
                "this node holds events written before it was in any cluster (a single node's \
                 data folder): `causeway cluster init` on it forms a cluster that keeps them; \
                 it refuses to join another cluster"
            );
        }
        let snapshots_dir = state_dir.join("snapshots");
        let raft_config = openraft::Config {
            cluster_name: CLUSTER_NAME.to_string(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.as_millis() as u64,
            // openraft's leader lease is the longest timeout: a follower grants no vote until
            // it has heard nothing from the leader for that long, so a narrow range keeps
            // failover short.
            election_timeout_max: config.election_timeout.as_millis() as u64 * 3 / 2,
            enable_pre_vote: Some(true),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_entries),
            max_in_snapshot_log_to_keep: config.log_keep_entries,
            install_snapshot_timeout: 60_000,
            // Send entries to followers as soon as they are handed to the log, so the leader's
            // fsync and the followers' run at the same time; the leader still counts its own
            // copy toward the quorum only once it is flushed.
            broadcast_submitted_on_append: Some(true),
            // A member that comes back without entries it had acknowledged (its data folder
            // wiped or replaced) is caught up again from the start, with openraft's WARN
            // "follower log is reverted". Without this the leader keeps the old progress,
            // never sends it anything, and reports it caught up.
            allow_log_reversion: Some(true),
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network::new(identity.clone(), local_ip, tls.clone()),
            log,
            state,
        )
        .await
        .map_err(io::Error::other)?;
        let stopping = Arc::new(AtomicBool::new(false));
        tokio::spawn(stop_process_on_fatal(raft.clone(), stopping.clone()));
        let (proposals, queue) = tokio::sync::mpsc::channel(PROPOSE_QUEUE_MAX);
        tokio::spawn(propose_in_batches(raft.clone(), queue));
        Ok(ClusterNode {
            stopping,
            raft,
            identity,
            live,
            advertise: config.advertise.clone(),
            local_ip,
            tls,
            snapshots_dir,
            peers: Mutex::new(HashMap::new()),
            proposals,
        })
    }

    /// The store this node answers reads from (it changes when a snapshot is installed).
    pub fn live(&self) -> LiveStore {
        self.live.clone()
    }

    /// A directory on the store's file system for work that must not outlive the process
    /// (a backup's checkpoint): the state machine's snapshots directory, whose entries other
    /// than whole snapshots are removed when the node starts.
    pub fn scratch_dir(&self) -> &Path {
        &self.snapshots_dir
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.identity.node_id()
    }

    /// The service other nodes send Raft traffic to.
    pub fn peer_service(&self, stopping: tokio::sync::watch::Receiver<bool>) -> Peers {
        Peers::new(
            self.raft.clone(),
            self.identity.clone(),
            self.snapshots_dir.clone(),
            self.tls.is_some(),
            stopping,
        )
    }

    /// The leader this node knows of, with its address.
    pub fn leader(&self) -> Option<(u64, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let leader = metrics.current_leader?;
        let address = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|node| node.addr.clone())?;
        Some((leader, address))
    }

    /// The leader this node knows of, unless that is itself (its metrics may lag a step down).
    fn other_leader(&self) -> Option<(u64, String)> {
        self.leader().filter(|(id, _)| *id != self.node_id())
    }

    fn not_leader(&self, reason: &str) -> Error {
        Error::NotLeader {
            leader: self.other_leader(),
            reason: reason.to_string(),
        }
    }

    /// Refuses a request openraft handed back to be forwarded. It names the leader openraft
    /// gave (during a transfer, the node taking over, which this node's metrics do not show
    /// yet), else the one this node knows of.
    fn forward_error(&self, forward: &ForwardToLeader<TypeConfig>) -> Error {
        let reason = forward_reason(forward.reason);
        match forwarded_leader(forward, self.node_id()) {
            Some(leader) => Error::NotLeader {
                leader: Some(leader),
                reason: reason.to_string(),
            },
            None => self.not_leader(reason),
        }
    }

    /// Refuses at once when this node is not the leader; the cheap check before stamping.
    pub fn check_leader(&self) -> Result<(), Error> {
        let reason = match self.raft.metrics().borrow_watched().state {
            ServerState::Leader => return Ok(()),
            ServerState::Follower => "this node is a follower",
            ServerState::Candidate => "an election is under way",
            ServerState::Learner => "this node is a learner",
            ServerState::Shutdown => "this node is shutting down",
        };
        Err(self.not_leader(reason))
    }

    /// Proposes a stamped command and answers what applying it answered.
    pub async fn write(&self, command: Command) -> Result<Receipt, Error> {
        let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
        let outcome = self.propose(command, deadline, None).await?;
        self.answer(outcome, deadline).await
    }

    /// Queues a stamped command for the Raft log, behind every command queued before it:
    /// commands proposed one after another reach the log in that order. What applying it
    /// answers arrives on the receiver ([`ClusterNode::answer`]). `admitted` is held until the
    /// outcome is sent.
    pub async fn propose(
        &self,
        command: Command,
        deadline: tokio::time::Instant,
        admitted: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<tokio::sync::oneshot::Receiver<Proposed>, Error> {
        let (sender, outcome) = tokio::sync::oneshot::channel();
        let reply = Reply {
            sender,
            _admitted: admitted,
        };
        match tokio::time::timeout_at(deadline, self.proposals.send((command, reply))).await {
            Ok(Ok(())) => Ok(outcome),
            Err(_) => Err(commit_wait_passed()),
            // The proposer is gone: the Raft node stopped before taking the write.
            Ok(Err(_)) => Err(Error::ClusterUnavailable {
                detail: "this node's Raft stopped".to_string(),
                outcome_unknown: false,
            }),
        }
    }

    /// What applying a proposed command answered, by `deadline`.
    pub async fn answer(
        &self,
        outcome: tokio::sync::oneshot::Receiver<Proposed>,
        deadline: tokio::time::Instant,
    ) -> Result<Receipt, Error> {
        match tokio::time::timeout_at(deadline, outcome).await {
            Err(_) => Err(commit_wait_passed()),
            // The proposer is gone: the Raft node stopped after taking the write.
            Ok(Err(_)) => Err(Error::ClusterUnavailable {
                detail: "this node's Raft stopped".to_string(),
                outcome_unknown: true,
            }),
            Ok(Ok(Ok(Response::Applied(receipt)))) => Ok(receipt),
            Ok(Ok(Ok(Response::Refused(err)))) => Err(Error::Core(err)),
            Ok(Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))))) => {
                Err(self.forward_error(&forward))
            }
            Ok(Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(forward))))) => {
                let leader =
                    forwarded_leader(&forward, self.node_id()).or_else(|| self.other_leader());
                Err(Error::ClusterUnavailable {
                    detail: format!(
                        "the leader changed while the write was proposed ({})",
                        leader.map_or("no leader is known yet".to_string(), |(id, address)| {
                            format!("the leader is node {id} at {address}")
                        })
                    ),
                    outcome_unknown: true,
                })
            }
            Ok(Ok(Err(err))) => Err(Error::ClusterUnavailable {
                detail: format!("the write was not proposed: {err}"),
                outcome_unknown: false,
            }),
        }
    }

    /// Waits until a read at `consistency` may be served from this node's store.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), Error> {
        match consistency {
            Consistency::Local => Ok(()),
            Consistency::Leader => self.leader_read_barrier().await,
            Consistency::Linearizable => {
                let index = match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                    // The leader has applied through the read index already.
                    Ok(_) => return Ok(()),
                    Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => {
                        self.read_index_from_leader().await?
                    }
                    Err(err) => {
                        return Err(Error::ClusterUnavailable {
                            detail: format!("no linearizable read: {}", unconfirmed(&err)),
                            outcome_unknown: false,
                        });
                    }
                };
                self.raft
                    .wait(Some(READ_INDEX_WAIT))
                    .applied_index_at_least(Some(index), "linearizable read")
                    .await
                    .map_err(|err| Error::ClusterUnavailable {
                        detail: format!(
                            "this node did not apply up to the leader's read index {index} \
                             within {READ_INDEX_WAIT:?}: {err}"
                        ),
                        outcome_unknown: false,
                    })?;
                Ok(())
            }
        }
    }

    /// Serves a `leader` read once this node holds a leader lease and has applied what it must:
    /// a quorum has answered it within the lease (openraft's leader lease, the longest
    /// election timeout; past it heartbeats are sent and the read waits up to one more lease
    /// for their answers), so no other node can lead yet; and it has applied up to its read
    /// index, the later of its commit and its own term's first entry, so every append an
    /// earlier leader acknowledged is in its store. No round trip while the lease holds. A
    /// leader that lost its quorum, or restarted believing it leads, is refused instead of
    /// answering from behind; one still applying a backlog waits for it, up to
    /// [`READ_INDEX_WAIT`].
    async fn leader_read_barrier(&self) -> Result<(), Error> {
        self.check_leader()?;
        let lease = LinearizerOption::new(None, true);
        let linearizer = match self.raft.get_read_linearizer(lease).await {
            Ok(linearizer) => linearizer,
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                return Err(self.forward_error(&forward));
            }
            Err(err) => {
                return Err(Error::ClusterUnavailable {
                    detail: format!(
                        "no leader read: this node could not renew its leader lease (it may \
                         be cut off from the others, or deposed): {}",
                        unconfirmed(&err)
                    ),
                    outcome_unknown: false,
                });
            }
        };
        match linearizer
            .try_await_ready(&self.raft, Some(READ_INDEX_WAIT))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(state)) => Err(Error::ClusterUnavailable {
                detail: format!(
                    "this leader did not apply up to its read index {} within \
                     {READ_INDEX_WAIT:?}",
                    state.read_log_id().index()
                ),
                outcome_unknown: false,
            }),
            Err(fatal) => Err(Error::ClusterUnavailable {
                detail: format!("no leader read: {fatal}"),
                outcome_unknown: false,
            }),
        }
    }

    async fn read_index_from_leader(&self) -> Result<u64, Error> {
        let Some((leader_id, address)) = self.other_leader() else {
            return Err(self.not_leader("no leader is known to confirm a linearizable read"));
        };
        let mut client = self.peer(leader_id, &address)?;
        let request = pb::ReadIndexRequest {
            header: Some(pb::Header {
                target_node_id: leader_id,
                source_node_id: self.node_id(),
                cluster_id: self.identity.cluster_id().unwrap_or_default(),
            }),
        };
        let answer = tokio::time::timeout(PEER_TIMEOUT, client.read_index(request)).await;
        match answer {
            Ok(Ok(response)) => Ok(response.into_inner().index),
            Ok(Err(status)) => Err(Error::ClusterUnavailable {
                detail: match std::error::Error::source(&status) {
                    // Made here (it has a cause): the leader could not be reached at all.
                    Some(cause) => format!(
                        "the leader (node {leader_id} at {address}) could not be reached for a \
                         read index: {}",
                        causes(cause)
                    ),
                    None => format!(
                        "the leader (node {leader_id}) gave no read index: {}",
                        status.message()
                    ),
                },
                outcome_unknown: false,
            }),
            Err(_) => Err(Error::ClusterUnavailable {
                detail: format!(
                    "the leader (node {leader_id}) gave no read index in {PEER_TIMEOUT:?}"
                ),
                outcome_unknown: false,
            }),
        }
    }

    /// Asks node `node_id` at `address` whether it could join this cluster, before it is
    /// added: its refusal (another node id there, another cluster, events of its own) refuses
    /// the change before anything changes. A node that does not answer may be added: it
    /// catches up once it is started.
    async fn probe(&self, node_id: u64, address: &str) -> Result<(), Error> {
        let mut client = self.peer(node_id, address)?;
        let request = pb::ProbeRequest {
            header: Some(pb::Header {
                target_node_id: node_id,
                source_node_id: self.node_id(),
                cluster_id: self.identity.cluster_id().unwrap_or_default(),
            }),
        };
        match tokio::time::timeout(PEER_TIMEOUT, client.probe(request)).await {
            Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                Err(Error::Precondition(format!(
                    "node {node_id} at {address} cannot join this cluster: {}",
                    status.message()
                )))
            }
            _ => Ok(()),
        }
    }

    fn peer(&self, node_id: u64, address: &str) -> Result<RaftServiceClient<Channel>, Error> {
        let mut peers = self.peers.lock().expect("peer clients lock poisoned");
        if let Some(client) = peers.get(&(node_id, address.to_string())) {
            return Ok(client.clone());
        }
        let client = network::client(node_id, address, self.local_ip, self.tls.as_ref()).map_err(
            |detail| Error::ClusterUnavailable {
                detail,
                outcome_unknown: false,
            },
        )?;
        peers.insert((node_id, address.to_string()), client.clone());
        Ok(client)
    }

    /// Forms a cluster of `voters` (this node alone when empty), once. Returns the cluster id.
    pub async fn init(&self, voters: BTreeMap<u64, String>) -> Result<String, Error> {
        let mut voters = voters;
        if voters.is_empty() {
            voters.insert(self.node_id(), self.advertise.clone());
        }
        match voters.get(&self.node_id()) {
            None => {
                return Err(Error::invalid(
                    "voters",
                    format!("the voters must include this node ({})", self.node_id()),
                ));
            }
            // Peers and redirected clients would be sent to the address given here.
            Some(address) if *address != self.advertise => {
                return Err(Error::invalid(
                    "voters",
                    format!(
                        "this node ({}) is given as {address}, but it advertises {} \
                         (--advertise, or --listen)",
                        self.node_id(),
                        self.advertise
                    ),
                ));
            }
            Some(_) => {}
        }
        // The events of a grown single node are in no log entry; other voters formed with it
        // would take the log from its first entry, without them, and give every later event
        // another position than this node does. Alone, it compacts them into the snapshot
        // every node added later starts from.
        let own_events = self.identity.own_events();
        if own_events > 0 && voters.len() > 1 {
            return Err(Error::Precondition(format!(
                "this node holds {own_events} events written before the cluster existed: form \
                 the cluster with this node alone (cluster init naming no other voter), then \
                 add-learner and promote the others, which start from a snapshot holding them"
            )));
        }
        let cluster_id = self
            .identity
            .cluster_id()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let members: BTreeMap<u64, BasicNode> = voters
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => {}
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                return Err(Error::Precondition(
                    "this node already belongs to a cluster; init is done once".to_string(),
                ));
            }
            Err(err) => return Err(cluster_error("forming the cluster", err)),
        }
        self.identity
            .join(&cluster_id)
            .map_err(|err| cluster_error("recording the cluster id", err))?;
        // Events written before the cluster existed are in no log entry: a snapshot that holds
        // them, and a log that starts after it, make every node added later start from it.
        if self.live.get().head().0 > 0 {
            self.compact().await?;
        }
        Ok(cluster_id)
    }

    /// Takes a snapshot of what is applied and purges the log up to it.
    async fn compact(&self) -> Result<(), Error> {
        // Leadership alone is too early: until the leader's first entry is applied the store
        // has applied no entry, its snapshot names no log id, and openraft discards it.
        let metrics = self
            .raft
            .wait(Some(COMMIT_WAIT))
            .metrics(
                |metrics| {
                    metrics.state == ServerState::Leader
                        && metrics.last_applied.is_some()
                        && metrics.last_applied.map(|id| id.index) == metrics.last_log_index
                },
                "leader after init, with its log applied",
            )
            .await
            .map_err(|err| cluster_error("waiting for leadership", err))?;
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|err| cluster_error("snapshot", err))?;
        self.raft
            .wait(Some(COMMIT_WAIT))
            .metrics(
                |metrics| metrics.snapshot.is_some_and(|id| id.index >= applied),
                "a snapshot of what is applied",
            )
            .await
            .map_err(|err| cluster_error("snapshot", err))?;
        self.raft
            .trigger()
            .purge_log(applied)
            .await
            .map_err(|err| cluster_error("purge", err))
    }

    /// Adds a learner and waits until it has caught up.
    pub async fn add_learner(
        &self,
        node_id: u64,
        address: String,
    ) -> Result<pb_admin::Membership, Error> {
        self.check_leader()?;
        if let Some(known) = self.member_address(node_id)
            && known != address
        {
            return Err(Error::Precondition(format!(
                "node {node_id} is already a member, at {known}; remove it first to give it \
                 another address"
            )));
        }
        let holder = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .nodes()
            .find(|(id, node)| **id != node_id && node.addr == address)
            .map(|(id, _)| *id);
        if let Some(holder) = holder {
            return Err(Error::invalid(
                "node.address",
                format!("{address} is node {holder}'s; each node has its own"),
            ));
        }
        if self.member_address(node_id).is_none() {
            self.probe(node_id, &address).await?;
        }
        let added = self
            .raft
            .add_learner(node_id, BasicNode::new(address), true);
        match tokio::time::timeout(LEARNER_WAIT, added).await {
            Ok(written) => {
                let written = written.map_err(|err| self.change_error(err))?;
                Ok(membership_of(written.membership.as_ref()))
            }
            // The learner is a member and goes on catching up; or the change itself is not
            // through, and its outcome is unknown.
            Err(_) => {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow_watched();
                let membership = metrics.membership_config.membership();
                if membership.get_node(&node_id).is_some() {
                    Ok(membership_of(Some(membership)))
                } else {
                    Err(Error::ClusterUnavailable {
                        detail: format!(
                            "adding node {node_id} was not committed within {LEARNER_WAIT:?}"
                        ),
                        outcome_unknown: true,
                    })
                }
            }
        }
    }

    /// The address of member `node_id` (voter or learner), if it is one.
    fn member_address(&self, node_id: u64) -> Option<String> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&node_id)
            .map(|node| node.addr.clone())
    }

    /// Makes a learner a voter.
    pub async fn promote(&self, node_id: u64) -> Result<pb_admin::Membership, Error> {
        self.check_leader()?;
        // A voter that has never answered would count toward the quorum without being able
        // to help form it; a learner just added gets LEARNER_WAIT to answer.
        let answered = self
            .raft
            .wait(Some(LEARNER_WAIT))
            .metrics(
                |metrics| {
                    metrics
                        .replication
                        .as_ref()
                        .and_then(|replication| replication.get(&node_id))
                        .is_some_and(Option::is_some)
                },
                "the learner answers the leader",
            )
            .await
            .is_ok();
        if !answered {
            return Err(Error::Precondition(format!(
                "node {node_id} is not a learner that has answered the leader; add it with \
                 add-learner and promote it once `cluster status` shows it caught up"
            )));
        }
        let written = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
            .await
            .map_err(|err| self.change_error(err))?;
        Ok(membership_of(written.membership.as_ref()))
    }

    /// Removes a node: a voter is demoted first, then the learner removed.
    pub async fn remove(&self, node_id: u64) -> Result<pb_admin::Membership, Error> {
        self.check_leader()?;
        if self.member_address(node_id).is_none() {
            return Err(Error::Precondition(format!(
                "node {node_id} is not a member of the cluster"
            )));
        }
        let is_voter = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == node_id);
        if is_voter {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([node_id])), true)
                .await
                .map_err(|err| self.change_error(err))?;
        }
        let written = self
            .raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
            .await
            .map_err(|err| self.change_error(err))?;
        Ok(membership_of(written.membership.as_ref()))
    }

    /// Confirms with a quorum that this node still leads; a node deposed meanwhile is refused
    /// naming the leader it learns of.
    async fn confirm_leadership(&self) -> Result<(), Error> {
        let confirmed = tokio::time::timeout(
            PEER_TIMEOUT,
            self.raft.get_read_log_id(ReadPolicy::ReadIndex),
        )
        .await;
        match confirmed {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward)))) => {
                Err(self.forward_error(&forward))
            }
            Ok(Err(err)) => Err(Error::ClusterUnavailable {
                detail: format!(
                    "this node could not confirm it still leads: {}",
                    unconfirmed(&err)
                ),
                outcome_unknown: false,
            }),
            Err(_) => Err(Error::ClusterUnavailable {
                detail: format!(
                    "this node could not confirm it still leads: no quorum answered in \
                     {PEER_TIMEOUT:?}"
                ),
                outcome_unknown: false,
            }),
        }
    }

    /// Hands the leadership to `node_id` and waits until it has it. The voter must first hold
    /// every entry this leader had when asked and have answered within the last
    /// `TRANSFER_SILENCE_HEARTBEATS` heartbeats: it is given `TRANSFER_CATCH_UP_WAIT` for both,
    /// and one not ready then is refused (FAILED_PRECONDITION, nothing changed), since it would
    /// lose (or never start) the election the transfer starts, and leave the leadership to
    /// whichever node won.
    /// Should that happen anyway (the voter stopped in between), the answer is UNAVAILABLE
    /// naming the node that leads now.
    pub async fn transfer_leader(&self, node_id: u64) -> Result<u64, Error> {
        self.check_leader()?;
        let metrics = self.raft.metrics().borrow_watched().clone();
        let is_voter = metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == node_id);
        if !is_voter {
            return Err(Error::invalid(
                "node_id",
                format!("node {node_id} is not a voter of this cluster"),
            ));
        }
        if node_id == self.node_id() {
            return Ok(node_id);
        }
        let last = metrics.last_log_index;
        // A voter that stopped answering (down, frozen) may still hold every entry; it would
        // not start the election the transfer asks of it, and another node would win one.
        let silence_max = Duration::from_millis(
            TRANSFER_SILENCE_HEARTBEATS * self.raft.config().heartbeat_interval,
        );
        let ready = |metrics: &openraft::RaftMetrics<TypeConfig>| {
            matched_index(metrics, node_id) >= last
                && silent_for(metrics, node_id).is_some_and(|silent| silent < silence_max)
        };
        let caught_up = self
            .raft
            .wait(Some(TRANSFER_CATCH_UP_WAIT))
            .metrics(
                |metrics| metrics.replication.is_none() || ready(metrics),
                "the new leader catching up",
            )
            .await;
        self.check_leader()?;
        if caught_up.is_err() {
            // A leader that was frozen through the wait may have been deposed meanwhile, with
            // its metrics not showing it yet: ask a quorum before blaming the voter.
            self.confirm_leadership().await?;
            let metrics = self.raft.metrics().borrow_watched().clone();
            let state = match (
                matched_index(&metrics, node_id),
                silent_for(&metrics, node_id),
            ) {
                (None, _) | (_, None) => {
                    "has not answered this leader (it may be down)".to_string()
                }
                (Some(matched), Some(_)) if Some(matched) < last => format!(
                    "holds the log up to entry {matched} of the {} entries this leader had \
                     when asked",
                    last.unwrap_or(0)
                ),
                (_, Some(silent)) => format!(
                    "holds the whole log but has not answered this leader for {:.1} s (it may \
                     be down or frozen)",
                    silent.as_secs_f64()
                ),
            };
            return Err(Error::Precondition(format!(
                "node {node_id} {state}, and was not ready within {} s: it would not win the \
                 election a transfer starts; retry once it answers and has caught up \
                 (GetClusterStatus shows its lag)",
                TRANSFER_CATCH_UP_WAIT.as_secs(),
            )));
        }
        self.raft
            .trigger()
            .transfer_leader(node_id)
            .await
            .map_err(|err| cluster_error("transfer", err))?;
        let metrics = self
            .raft
            .wait(Some(COMMIT_WAIT))
            .metrics(
                |metrics| {
                    metrics
                        .current_leader
                        .is_some_and(|id| id != self.node_id())
                },
                "a new leader",
            )
            .await
            .map_err(|err| cluster_error("waiting for the new leader", err))?;
        let leader = metrics.current_leader.unwrap_or_default();
        if leader != node_id {
            return Err(Error::ClusterUnavailable {
                detail: format!(
                    "the leadership went to node {leader}, not to node {node_id}: another \
                     node won the election that followed"
                ),
                outcome_unknown: false,
            });
        }
        Ok(leader)
    }

    fn change_error(&self, err: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Error {
        match err {
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                self.forward_error(&forward)
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(err)) => {
                Error::invalid("node_id", err.to_string())
            }
            err => cluster_error("changing the membership", err),
        }
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> pb_admin::GetClusterStatusResponse {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let role = match metrics.state {
            ServerState::Leader => pb_admin::NodeRole::Leader,
            ServerState::Follower => pb_admin::NodeRole::Follower,
            ServerState::Candidate => pb_admin::NodeRole::Candidate,
            ServerState::Learner => pb_admin::NodeRole::Learner,
            ServerState::Shutdown => pb_admin::NodeRole::Shutdown,
        };
        let last_log_index = metrics.last_log_index.unwrap_or(0);
        let replication = metrics
            .replication
            .as_ref()
            .map(|replication| {
                replication
                    .iter()
                    .filter(|(id, _)| **id != self.node_id())
                    .map(|(id, matched)| {
                        let matched_index = matched.as_ref().map_or(0, |id| id.index);
                        pb_admin::Replication {
                            node_id: *id,
                            matched_index,
                            lag: last_log_index.saturating_sub(matched_index),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let leader = self.leader();
        pb_admin::GetClusterStatusResponse {
            node_id: self.node_id(),
            cluster_id: self.identity.cluster_id().unwrap_or_default(),
            role: role.into(),
            term: metrics.current_term,
            leader_id: leader.as_ref().map_or(0, |(id, _)| *id),
            leader_address: leader.map(|(_, address)| address).unwrap_or_default(),
            last_log_index,
            committed_index: metrics.local_committed.map_or(0, |id| id.index),
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            head_position: self.live.get().head().0,
            membership: Some(membership_of(Some(metrics.membership_config.membership()))),
            replication,
        }
    }

    /// Stops the Raft node, then closes the store (which syncs what it applied).
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Err(err) = self.raft.shutdown().await {
            tracing::error!(%err, "stopping raft");
        }
        let store = self.live.get();
        let closed = tokio::task::spawn_blocking(move || store.close()).await;
        match closed {
            Ok(Ok(())) => tracing::info!("store closed"),
            Ok(Err(err)) => tracing::error!(%err, "closing the store failed"),
            Err(err) => tracing::error!(%err, "closing the store panicked"),
        }
    }
}

use crate::pb as pb_admin;

/// The exit status of a node whose Raft stopped on a storage or apply failure.
pub const EXIT_RAFT_FATAL: i32 = 70;

/// Ends the process when the Raft node stops on its own (a storage error, or an apply error
/// that is not a refusal): such a replica can no longer be trusted to match the others, so it
/// must not go on answering, not even reads. A supervisor restarts it; on restart it re-reads
/// its disk and catches up from the leader, or fails again where an operator sees it.
async fn stop_process_on_fatal(raft: Raft, stopping: Arc<AtomicBool>) {
    let mut metrics = raft.metrics();
    loop {
        let fatal = match &metrics.borrow_watched().running_state {
            Ok(()) => None,
            Err(fatal) => Some(fatal.to_string()),
        };
        if let Some(fatal) = fatal {
            if stopping.load(Ordering::Acquire) {
                return;
            }
            tracing::error!(
                %fatal,
                "the raft node stopped on a failure; exiting so this replica cannot diverge"
            );
            std::process::exit(EXIT_RAFT_FATAL);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

fn membership_of(membership: Option<&super::types::Membership>) -> pb_admin::Membership {
    let Some(membership) = membership else {
        return pb_admin::Membership::default();
    };
    let node = |id: u64| pb_admin::ClusterNode {
        node_id: id,
        address: membership
            .get_node(&id)
            .map(|node| node.addr.clone())
            .unwrap_or_default(),
    };
    pb_admin::Membership {
        voters: membership.voter_ids().map(node).collect(),
        learners: membership.learner_ids().map(node).collect(),
    }
}

/// The leader a forward names, with its address; `None` when it names none, or this node.
fn forwarded_leader(forward: &ForwardToLeader<TypeConfig>, own_id: u64) -> Option<(u64, String)> {
    let id = forward.leader_id?;
    let node = forward.leader_node.as_ref()?;
    (id != own_id).then(|| (id, node.addr.clone()))
}

/// An error and its causes, each said once, as "a: b: c".
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut said: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(err) = next {
        let text = err.to_string();
        if !said.iter().any(|earlier| earlier.contains(&text)) {
            said.push(text);
        }
        next = err.source();
    }
    said.join(": ")
}

/// Why openraft handed a request back, in the words of a refusal.
fn forward_reason(reason: ForwardReason) -> &'static str {
    match reason {
        ForwardReason::NotLeader => "this node no longer leads",
        ForwardReason::LeadershipTransfer => "the leadership is moving to another node",
        ForwardReason::LeaseExpired => {
            "this node's leader lease expired: a quorum of the voters has not answered it lately \
             (it may be cut off from them, or they may be down)"
        }
    }
}

/// The last log index this leader knows `node_id` to hold; `None` when it knows of none, or
/// when this node does not lead.
fn matched_index(metrics: &openraft::RaftMetrics<TypeConfig>, node_id: u64) -> Option<u64> {
    metrics
        .replication
        .as_ref()
        .and_then(|replication| replication.get(&node_id))
        .and_then(|matched| matched.as_ref())
        .map(|matched| matched.index)
}

/// How long ago node `node_id` last answered this leader (a heartbeat or an AppendEntries);
/// `None` when it never has, or this node does not lead.
fn silent_for(metrics: &openraft::RaftMetrics<TypeConfig>, node_id: u64) -> Option<Duration> {
    metrics
        .heartbeat
        .as_ref()
        .and_then(|heartbeat| heartbeat.get(&node_id))
        .and_then(|acked| acked.as_ref())
        .map(|acked| acked.elapsed())
}

/// Why a read or a leadership check could not be confirmed, in words: openraft's own text for
/// a missing quorum prints the membership's debug form.
fn unconfirmed(err: &RaftError<TypeConfig, LinearizableReadError<TypeConfig>>) -> String {
    match err {
        RaftError::APIError(LinearizableReadError::QuorumNotEnough(quorum)) => {
            let answered: Vec<String> = quorum.got.iter().map(u64::to_string).collect();
            match answered.as_slice() {
                [] => "no node answered, short of a quorum of the voters".to_string(),
                [one] => format!("only node {one} answered, short of a quorum of the voters"),
                many => format!(
                    "only nodes {} answered, short of a quorum of the voters",
                    many.join(", ")
                ),
            }
        }
        RaftError::APIError(LinearizableReadError::ForwardToLeader(_)) => {
            "this node is not the leader".to_string()
        }
        RaftError::Fatal(fatal) => format!("this node's Raft stopped: {fatal}"),
    }
}

fn cluster_error(what: &str, err: impl std::fmt::Display) -> Error {
    Error::ClusterUnavailable {
        detail: format!("{what}: {err}"),
        outcome_unknown: false,
    }
}

/// Moves a single-node store in `data_dir` into the state machine's first generation, when the
/// directory has one and no Raft state yet. Staged under `raft.adopt/` and made whole by one
/// rename; a crash midway is finished by the next start.
fn adopt_single_node(data_dir: &Path) -> io::Result<()> {
    let raft_dir = data_dir.join(RAFT_DIR);
    let staging = data_dir.join(ADOPT_DIR);
    if raft_dir.exists() {
        return Ok(());
    }
    let has_store = data_dir.join(causeway_core::store::IDENTITY_FILE).exists();
    if !has_store && !staging.exists() {
        return Ok(());
    }
    let target = staging
        .join("state")
        .join(generation_name(0))
        .join(STORE_DIR);
    std::fs::create_dir_all(&target)?;
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ADOPT_DIR || name == RAFT_DIR {
            continue;
        }
        std::fs::rename(entry.path(), target.join(&name))?;
    }
    let disk = causeway_core::disk::OsDisk;
    disk.sync_dir(&target)?;
    disk.sync_dir(data_dir)?;
    std::fs::rename(&staging, &raft_dir)?;
    disk.sync_dir(data_dir)?;
    tracing::info!(
        data_dir = %data_dir.display(),
        "adopted the single-node store as this cluster node's state"
    );
    Ok(())
}

/// A write that was not committed within `COMMIT_WAIT`: it may still be.
fn commit_wait_passed() -> Error {
    Error::ClusterUnavailable {
        detail: format!("the cluster did not commit the write within {COMMIT_WAIT:?}"),
        outcome_unknown: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forward that names another node with its address yields that node; one naming this
    /// node, no node or no address yields nothing, so the caller falls back to its metrics.
    /// Catches a refusal during a transfer that says no leader is known.
    #[test]
    fn a_forward_names_the_leader_it_gives() {
        let node = |addr: &str| BasicNode {
            addr: addr.to_string(),
        };
        let transfer = ForwardToLeader::<TypeConfig>::new(2, node("10.0.0.2:7400"))
            .with_reason(ForwardReason::LeadershipTransfer);
        assert_eq!(
            forwarded_leader(&transfer, 1),
            Some((2, "10.0.0.2:7400".to_string()))
        );
        assert_eq!(forwarded_leader(&transfer, 2), None);
        assert_eq!(
            forwarded_leader(&ForwardToLeader::<TypeConfig>::empty(), 1),
            None
        );
        let without_address = ForwardToLeader::<TypeConfig> {
            leader_node: None,
            ..ForwardToLeader::new(3, node("10.0.0.3:7400"))
        };
        assert_eq!(forwarded_leader(&without_address, 1), None);
        assert_eq!(
            forward_reason(transfer.reason),
            "the leadership is moving to another node"
        );
    }

    /// A read refused for want of a quorum names the nodes that answered, in words, not the
    /// membership's debug form. Catches openraft's text reaching clients.
    #[test]
    fn a_missing_quorum_is_said_in_words() {
        let quorum = |got: &[u64]| {
            RaftError::APIError(LinearizableReadError::QuorumNotEnough(
                openraft::error::QuorumNotEnough {
                    cluster: "{voters:[{1:BasicNode { addr: \"10.0.0.1:7400\" }}]}".to_string(),
                    got: got.iter().copied().collect(),
                },
            ))
        };
        assert_eq!(
            unconfirmed(&quorum(&[1])),
            "only node 1 answered, short of a quorum of the voters"
        );
        assert_eq!(
            unconfirmed(&quorum(&[1, 4])),
            "only nodes 1, 4 answered, short of a quorum of the voters"
        );
        assert!(!unconfirmed(&quorum(&[])).contains("BasicNode"));
    }
}
