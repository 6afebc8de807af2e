//! Clients for workloads that run while the cluster changes under them: a [`Router`] finds
//! the leader itself (following a follower's redirect, trying the next node when one is down
//! or knows no leader), and [`classify`] sorts every answer to an append the way the history
//! checker needs it: acknowledged, definitely refused, or of unknown outcome.
//!
//! Only two refusals are definite: a node that is not the leader (`NOT_LEADER`: it proposed
//! nothing) and a failed condition or overload (decided before anything was written). Any
//! other failure, a lost connection or a timeout included, may hide a write that was applied,
//! so it is unknown: a client that retries it must reuse its idempotency key.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::nodes::{Cluster, pb};
use pb::event_store_service_client::EventStoreServiceClient;

/// How long a workload's client waits for any one answer before it counts the outcome as
/// unknown: past the server's own commit wait (10 s), so the server's verdict is seen first.
pub const ANSWER_WAIT: Duration = Duration::from_secs(12);
/// How long a client waits for a connection to a node.
pub const CONNECT_WAIT: Duration = Duration::from_millis(500);

/// The `ErrorInfo` reason of a refusal by a node that is not the leader.
pub const REASON_NOT_LEADER: &str = "NOT_LEADER";
/// The response header that names the leader's address.
pub const LEADER_HEADER: &str = "x-causeway-leader";

/// What an append's answer tells the client.
#[derive(Debug)]
pub enum Answer {
    /// Acknowledged with this receipt.
    Acknowledged(pb::Receipt),
    /// Definitely not written, by a node that is not the leader.
    NotLeader(Status),
    /// Definitely not written: a failed condition or an overloaded node.
    Refused(Status),
    /// It may or may not be written (no answer, a lost connection, an outcome the node could
    /// not know).
    Unknown(Status),
}

/// Sorts the result of an append (`None` when the client stopped waiting).
pub fn classify(result: Option<Result<tonic::Response<pb::AppendResponse>, Status>>) -> Answer {
    let status = match result {
        None => return Answer::Unknown(Status::deadline_exceeded("no answer in time")),
        Some(Ok(response)) => {
            let receipt = response
                .into_inner()
                .receipt
                .expect("an append has a receipt");
            return Answer::Acknowledged(receipt);
        }
        Some(Err(status)) => status,
    };
    match status.code() {
        Code::Unavailable
            if status
                .get_details_error_info()
                .is_some_and(|info| info.reason == REASON_NOT_LEADER) =>
        {
            Answer::NotLeader(status)
        }
        Code::FailedPrecondition | Code::ResourceExhausted => Answer::Refused(status),
        Code::InvalidArgument | Code::AlreadyExists | Code::Internal | Code::DataLoss => {
            panic!("an append that must be valid was refused as invalid: {status:?}")
        }
        _ => Answer::Unknown(status),
    }
}

/// A node as a workload client sees it.
struct Route {
    id: u64,
    advertise: SocketAddr,
    client: EventStoreServiceClient<Channel>,
}

/// Lazily connected clients of every member, and the node believed to lead.
///
/// A removed node may name a leader long gone, and the node it names may know none: so a
/// router follows named leaders only a few hops in a row, and otherwise tries the nodes in
/// turn with a cursor of its own, which reaches every node whatever the redirects say.
pub struct Router {
    routes: Vec<Route>,
    leader_idx: usize,
    /// The next node to try when no leader is named.
    cursor: usize,
    /// Redirects followed since the last definite answer.
    hops: usize,
}

impl Router {
    /// Clients of every member of `cluster`, dialling their listen addresses (past any proxy).
    pub fn new(cluster: &Cluster) -> Router {
        let routes = cluster
            .members
            .iter()
            .map(|member| Route {
                id: member.id,
                advertise: member.advertise,
                client: EventStoreServiceClient::new(lazy_channel(member.addr)),
            })
            .collect();
        Router {
            routes,
            leader_idx: 0,
            cursor: 1,
            hops: 0,
        }
    }

    /// The node believed to lead.
    pub fn leader(&self) -> u64 {
        self.routes[self.leader_idx].id
    }

    /// A client of node `id`.
    pub fn client(&self, id: u64) -> EventStoreServiceClient<Channel> {
        let route = self
            .routes
            .iter()
            .find(|route| route.id == id)
            .expect("a member");
        route.client.clone()
    }

    /// The node ids, in order.
    pub fn ids(&self) -> Vec<u64> {
        self.routes.iter().map(|route| route.id).collect()
    }

    /// Learns from a failed call: the leader a refusal names, or else the next node.
    pub fn follow(&mut self, status: &Status) {
        let named = status
            .metadata()
            .get(LEADER_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|address| address.parse::<SocketAddr>().ok())
            .and_then(|address| {
                self.routes
                    .iter()
                    .position(|route| route.advertise == address)
            });
        match named {
            Some(leader_idx) if leader_idx != self.leader_idx && self.hops < self.routes.len() => {
                self.hops += 1;
                self.leader_idx = leader_idx;
            }
            _ => {
                self.hops = 0;
                self.leader_idx = self.cursor % self.routes.len();
                self.cursor += 1;
            }
        }
    }

    /// Appends `request` at the node believed to lead, waiting at most [`ANSWER_WAIT`].
    pub async fn append_once(&mut self, request: pb::AppendRequest) -> Answer {
        let mut client = self.routes[self.leader_idx].client.clone();
        let answer = classify(
            tokio::time::timeout(ANSWER_WAIT, client.append(request))
                .await
                .ok(),
        );
        match &answer {
            Answer::NotLeader(status) | Answer::Unknown(status) => self.follow(status),
            Answer::Acknowledged(_) | Answer::Refused(_) => self.hops = 0,
        }
        answer
    }
}

/// A channel to `addr` that connects on first use and again after a failure.
pub fn lazy_channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a uri")
        .connect_timeout(CONNECT_WAIT)
        .connect_lazy()
}
