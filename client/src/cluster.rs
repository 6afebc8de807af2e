//! [`ClusterAdmin`]: the typed client of `causeway.v1.ClusterService`, which forms a cluster,
//! changes its members and reports each node's state.
//!
//! Changes go through the same [`Router`](crate::follow) as [`crate::Client`]'s calls, so they
//! follow the leader: a follower's refusal is sent again to the leader it names, and an
//! election is waited out. A change is never sent twice after a failure that may have reached
//! the server (a membership change is not idempotent on the wire); the caller reads the status
//! and decides. [`ClusterAdmin::survey`] asks every member for its own view, so an operator
//! sees each node's role, log and lag side by side, and which members do not answer.
//!
//! A server started without `--node-id` serves no `ClusterService`; its UNIMPLEMENTED comes
//! back as [`Error::SingleNode`].

use std::collections::BTreeMap;

use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use crate::credentials::{Credentials, InvalidToken, Transport};

use crate::client::{MEMBER_STATUS_TIMEOUT, RESPONSE_BYTES_MAX};
use crate::error::Error;
use crate::follow::{
    Idempotence, Router, error_chain, never_sent, parse_addresses, parse_addresses_as,
};
use crate::pb;
use crate::pb::cluster_service_client::ClusterServiceClient;
use crate::tls::Tls;

/// A connection to a cluster's members for administration.
#[derive(Clone, Debug)]
pub struct ClusterAdmin {
    router: Router,
}

/// Every member's own view of the cluster, as [`ClusterAdmin::survey`] collected it.
#[derive(Debug)]
pub struct ClusterView {
    /// The members: voters, then learners, each in node id order. A node that belongs to no
    /// cluster yet is its only member.
    pub members: Vec<MemberStatus>,
}

/// One member and its answer to `GetClusterStatus`.
#[derive(Debug)]
pub struct MemberStatus {
    /// Its node id.
    pub node_id: u64,
    /// Its address (HOST:PORT), as the membership records it.
    pub address: String,
    /// True for a voter, false for a learner.
    pub voter: bool,
    /// Its status, or why it gave none within [`MEMBER_STATUS_TIMEOUT`].
    pub status: Result<pb::GetClusterStatusResponse, Error>,
}

impl ClusterView {
    /// The status of the member that says it leads, in the highest term when (briefly, during
    /// a change of leader) two do.
    pub fn leader(&self) -> Option<&pb::GetClusterStatusResponse> {
        self.members
            .iter()
            .filter_map(|member| member.status.as_ref().ok())
            .filter(|status| status.role() == pb::NodeRole::Leader)
            .max_by_key(|status| status.term)
    }

    /// How many log entries `node_id` is behind the leader, as the leader last saw; 0 for the
    /// leader itself, `None` when no leader answered or it has no figure for the node.
    pub fn lag(&self, node_id: u64) -> Option<u64> {
        let leader = self.leader()?;
        if leader.node_id == node_id {
            return Some(0);
        }
        leader
            .replication
            .iter()
            .find(|replication| replication.node_id == node_id)
            .map(|replication| replication.lag)
    }
}

impl ClusterAdmin {
    /// Connects to the first of `addresses` that answers (one address, or several separated by
    /// commas, as for [`crate::Client::connect`]).
    pub async fn connect(addresses: &str) -> Result<ClusterAdmin, Error> {
        Ok(ClusterAdmin {
            router: Router::connect(parse_addresses(addresses)?, None).await?,
        })
    }

    /// [`ClusterAdmin::connect`] over TLS, as [`crate::Client::connect_tls`].
    pub async fn connect_tls(addresses: &str, tls: &Tls) -> Result<ClusterAdmin, Error> {
        Ok(ClusterAdmin {
            router: Router::connect(parse_addresses_as(addresses, true)?, Some(tls)).await?,
        })
    }

    /// [`ClusterAdmin::connect`] with the addresses as a slice.
    pub async fn connect_many(addresses: &[impl AsRef<str>]) -> Result<ClusterAdmin, Error> {
        let list: Vec<&str> = addresses.iter().map(AsRef::as_ref).collect();
        ClusterAdmin::connect(&list.join(",")).await
    }

    /// Administration over an existing channel; it sends every call once, to that channel.
    pub fn from_channel(channel: Channel) -> ClusterAdmin {
        ClusterAdmin {
            router: Router::from_channel(channel),
        }
    }

    /// The same admin, sending `token` as `authorization: Bearer <token>` on every call.
    pub fn with_token(mut self, token: &str) -> Result<ClusterAdmin, InvalidToken> {
        self.router.set_credentials(Credentials::bearer(token)?);
        Ok(self)
    }

    /// The address calls go to now.
    pub fn address(&self) -> String {
        self.router.current()
    }

    /// Forms a cluster with `voters` (node id and HOST:PORT each; this node alone when empty)
    /// on the node this admin talks to, which must be among them. Once per cluster: a node
    /// that belongs to a cluster refuses. Returns the new cluster's id.
    pub async fn init(&self, voters: &[(u64, String)]) -> Result<String, Error> {
        let request = pb::InitClusterRequest {
            voters: voters
                .iter()
                .map(|(node_id, address)| pb::ClusterNode {
                    node_id: *node_id,
                    address: address.clone(),
                })
                .collect(),
        };
        let response = self
            .call(Idempotence::Change, |mut stub| {
                let request = request.clone();
                async move { stub.init_cluster(request).await }
            })
            .await?;
        Ok(response.cluster_id)
    }

    /// Adds node `node_id` at `address` (HOST:PORT) as a learner; answers once the change is
    /// committed and, when the log is long, the learner is within a few thousand entries of it
    /// (the server waits at most `LEARNER_WAIT`, 10 s); `status` shows how far it still lags.
    pub async fn add_learner(&self, node_id: u64, address: &str) -> Result<pb::Membership, Error> {
        let request = pb::AddLearnerRequest {
            node: Some(pb::ClusterNode {
                node_id,
                address: address.to_string(),
            }),
        };
        let response = self
            .call(Idempotence::Change, |mut stub| {
                let request = request.clone();
                async move { stub.add_learner(request).await }
            })
            .await?;
        response.membership.ok_or(Error::MissingField("membership"))
    }

    /// Makes the learner `node_id` a voter; refused while the learner has not answered the
    /// leader (the server waits up to 10 s for it).
    pub async fn promote_voter(&self, node_id: u64) -> Result<pb::Membership, Error> {
        let request = pb::PromoteVoterRequest { node_id };
        let response = self
            .call(Idempotence::Change, |mut stub| async move {
                stub.promote_voter(request).await
            })
            .await?;
        response.membership.ok_or(Error::MissingField("membership"))
    }

    /// Removes node `node_id` (a voter or a learner) from the cluster.
    pub async fn remove_node(&self, node_id: u64) -> Result<pb::Membership, Error> {
        let request = pb::RemoveNodeRequest { node_id };
        let response = self
            .call(Idempotence::Change, |mut stub| async move {
                stub.remove_node(request).await
            })
            .await?;
        response.membership.ok_or(Error::MissingField("membership"))
    }

    /// Hands the leadership to voter `node_id` and returns it once it leads. A voter that
    /// does not catch up with the leader's log in time, or has stopped answering it (down,
    /// frozen), is refused (FAILED_PRECONDITION) and the leadership stays where it was.
    pub async fn transfer_leader(&self, node_id: u64) -> Result<u64, Error> {
        let request = pb::TransferLeaderRequest { node_id };
        let response = self
            .call(Idempotence::Change, |mut stub| async move {
                stub.transfer_leader(request).await
            })
            .await?;
        Ok(response.leader_id)
    }

    /// The status of the node this admin talks to (the next address when it does not answer).
    pub async fn status(&self) -> Result<pb::GetClusterStatusResponse, Error> {
        self.call(Idempotence::Idempotent, |mut stub| async move {
            stub.get_cluster_status(pb::GetClusterStatusRequest {})
                .await
        })
        .await
    }

    /// The status of the node at `address` (HOST:PORT or a URI), asked once and given
    /// [`MEMBER_STATUS_TIMEOUT`] to answer.
    pub async fn status_at(&self, address: &str) -> Result<pb::GetClusterStatusResponse, Error> {
        let uri = self.router.uri(address);
        let mut stub = stub(self.router.channel_to(&uri)?, self.router.credentials());
        let request = stub.get_cluster_status(pb::GetClusterStatusRequest {});
        match tokio::time::timeout(MEMBER_STATUS_TIMEOUT, request).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            // The status alone says only "tcp connect error"; its causes say why.
            Ok(Err(status)) if never_sent(&status) => Err(Error::Connect {
                detail: error_chain(&status),
                address: uri,
            }),
            Ok(Err(status)) => Err(single_node(Error::from(status), &uri)),
            Err(_) => Err(Error::Status(tonic::Status::deadline_exceeded(format!(
                "{address} did not answer within {MEMBER_STATUS_TIMEOUT:?}"
            )))),
        }
    }

    /// Every member's own status: the members are the leader's view of the membership (this
    /// node's own when the leader does not answer), and each is asked at once, so a member
    /// that is down shows as an error without holding up the others.
    pub async fn survey(&self) -> Result<ClusterView, Error> {
        let first = self.status().await?;
        let mut known: BTreeMap<u64, pb::GetClusterStatusResponse> = BTreeMap::new();
        let mut membership = first.membership.clone().unwrap_or_default();
        if first.leader_id != 0
            && first.leader_id != first.node_id
            && let Ok(leader) = self.status_at(&first.leader_address).await
        {
            membership = leader.membership.clone().unwrap_or_default();
            known.insert(leader.node_id, leader);
        }
        let first_id = first.node_id;
        let mut members: Vec<(u64, String, bool)> = Vec::new();
        for (nodes, voter) in [(&membership.voters, true), (&membership.learners, false)] {
            let mut nodes: Vec<&pb::ClusterNode> = nodes.iter().collect();
            nodes.sort_by_key(|node| node.node_id);
            members.extend(
                nodes
                    .into_iter()
                    .map(|node| (node.node_id, node.address.clone(), voter)),
            );
        }
        if members.is_empty() {
            // A node in no cluster yet: it is all there is to show.
            let address = self.address();
            let address = address
                .split_once("://")
                .map_or(address.as_str(), |(_, rest)| rest)
                .to_string();
            members.push((first_id, address, true));
        }
        known.insert(first_id, first);
        let mut asking = tokio::task::JoinSet::new();
        for (node_id, address, _) in &members {
            if !known.contains_key(node_id) {
                let admin = self.clone();
                let (node_id, address) = (*node_id, address.clone());
                asking.spawn(async move { (node_id, admin.status_at(&address).await) });
            }
        }
        let mut answers: BTreeMap<u64, Result<pb::GetClusterStatusResponse, Error>> = known
            .into_iter()
            .map(|(node_id, status)| (node_id, Ok(status)))
            .collect();
        while let Some(joined) = asking.join_next().await {
            let (node_id, status) = joined.map_err(|err| {
                Error::Status(tonic::Status::internal(format!(
                    "a status request failed: {err}"
                )))
            })?;
            answers.insert(node_id, status);
        }
        let members = members
            .into_iter()
            .map(|(node_id, address, voter)| MemberStatus {
                node_id,
                address,
                voter,
                status: answers
                    .remove(&node_id)
                    .unwrap_or_else(|| Err(Error::MissingField("the member's status"))),
            })
            .collect();
        Ok(ClusterView { members })
    }

    /// Sends a call built by `call` (on a fresh stub each attempt), following the leader.
    async fn call<T, F, Fut>(&self, idempotence: Idempotence, mut call: F) -> Result<T, Error>
    where
        F: FnMut(ClusterServiceClient<Transport>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match self
            .router
            .call(idempotence, |channel| {
                call(stub(channel, self.router.credentials()))
            })
            .await
        {
            Ok(response) => Ok(response.into_inner()),
            Err(error) => Err(single_node(error, &self.address())),
        }
    }
}

/// UNIMPLEMENTED from a server is its way of saying it runs as a single node, unless it is
/// about the request's compression (which a server that lacks a codec answers the same way).
fn single_node(error: Error, address: &str) -> Error {
    match error {
        Error::Status(status)
            if status.code() == Code::Unimplemented && !status.message().contains("compress") =>
        {
            Error::SingleNode {
                address: address.to_string(),
            }
        }
        other => other,
    }
}

/// The generated stub over `channel`, with this crate's response bound. Requests go
/// uncompressed: they are a few bytes, and a cluster member need not accept gzip on this
/// service (causewayd's `ClusterService` does not).
fn stub(channel: Channel, credentials: Credentials) -> ClusterServiceClient<Transport> {
    ClusterServiceClient::new(credentials.attach(channel))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(RESPONSE_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node_id: u64, role: pb::NodeRole, term: u64) -> pb::GetClusterStatusResponse {
        pb::GetClusterStatusResponse {
            node_id,
            role: role.into(),
            term,
            ..pb::GetClusterStatusResponse::default()
        }
    }

    fn member(node_id: u64, status: Result<pb::GetClusterStatusResponse, Error>) -> MemberStatus {
        MemberStatus {
            node_id,
            address: format!("127.0.0.1:{}", 7000 + node_id),
            voter: true,
            status,
        }
    }

    #[test]
    fn the_view_names_the_newest_leader_and_its_lags() {
        let mut old_leader = status(1, pb::NodeRole::Leader, 3);
        old_leader.replication = vec![pb::Replication {
            node_id: 2,
            matched_index: 1,
            lag: 40,
        }];
        let mut leader = status(2, pb::NodeRole::Leader, 4);
        leader.replication = vec![
            pb::Replication {
                node_id: 1,
                matched_index: 9,
                lag: 1,
            },
            pb::Replication {
                node_id: 3,
                matched_index: 7,
                lag: 3,
            },
        ];
        let view = ClusterView {
            members: vec![
                member(1, Ok(old_leader)),
                member(2, Ok(leader)),
                member(3, Err(Error::MissingField("status"))),
                member(4, Ok(status(4, pb::NodeRole::Learner, 4))),
            ],
        };
        assert_eq!(view.leader().map(|leader| leader.node_id), Some(2));
        assert_eq!(view.lag(2), Some(0), "the leader is not behind itself");
        assert_eq!(view.lag(1), Some(1));
        assert_eq!(
            view.lag(3),
            Some(3),
            "an unreachable member's lag is the leader's"
        );
        assert_eq!(view.lag(4), None, "the leader has no figure for it");
        let leaderless = ClusterView {
            members: vec![member(1, Ok(status(1, pb::NodeRole::Candidate, 5)))],
        };
        assert!(leaderless.leader().is_none());
        assert_eq!(leaderless.lag(1), None);
    }

    #[test]
    fn unimplemented_is_a_single_node() {
        let error = single_node(
            Error::from(tonic::Status::unimplemented("")),
            "http://127.0.0.1:7420",
        );
        let Error::SingleNode { address } = &error else {
            panic!("expected SingleNode, got {error:?}");
        };
        assert_eq!(address, "http://127.0.0.1:7420");
        assert!(error.to_string().contains("--node-id"), "{error}");
        let other = single_node(Error::from(tonic::Status::not_found("x")), "a:1");
        assert_eq!(other.code(), Some(Code::NotFound));
        let codec = single_node(
            Error::from(tonic::Status::unimplemented(
                "Content is compressed with `gzip` which isn't supported",
            )),
            "a:1",
        );
        assert_eq!(codec.code(), Some(Code::Unimplemented), "not a single node");
    }
}
