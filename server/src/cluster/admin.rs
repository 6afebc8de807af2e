//! `causeway.v1.ClusterService`: forming a cluster, changing its members, and reporting each
//! node's state, over [`ClusterNode`]. Every change must reach the leader; a follower answers
//! UNAVAILABLE with the leader's address, as for writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::node::ClusterNode;
use crate::limits::{ADVERTISE_BYTES_MAX, MEMBERSHIP_NODES_MAX};
use crate::pb;
use crate::pb::cluster_service_server::ClusterService;
use crate::status::{Error, to_status};

/// The admin service of one node.
#[derive(Clone, Debug)]
pub struct Admin {
    node: Arc<ClusterNode>,
}

impl Admin {
    /// The service over `node`.
    pub fn new(node: Arc<ClusterNode>) -> Admin {
        Admin { node }
    }
}

/// A member as given in a request: a node id of 1 or more and a HOST:PORT address.
pub(crate) fn member(node: &pb::ClusterNode, field: &str) -> Result<(u64, String), Status> {
    if node.node_id == 0 {
        return Err(to_status(Error::invalid(
            format!("{field}.node_id"),
            "node ids start at 1",
        )));
    }
    let address_ok = node.address.len() <= ADVERTISE_BYTES_MAX
        && node.address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port != 0)
        });
    if !address_ok {
        return Err(to_status(Error::invalid(
            format!("{field}.address"),
            format!(
                "it must be HOST:PORT with a port other than 0, at most {ADVERTISE_BYTES_MAX} \
                 bytes (ADVERTISE_BYTES_MAX)"
            ),
        )));
    }
    Ok((node.node_id, node.address.clone()))
}

pub(crate) fn node_id(node_id: u64) -> Result<u64, Status> {
    if node_id == 0 {
        return Err(to_status(Error::invalid("node_id", "node ids start at 1")));
    }
    Ok(node_id)
}

/// The voters of an `InitCluster` request, each with its node id and address, checked: at most
/// [`MEMBERSHIP_NODES_MAX`], no id or address given twice.
pub(crate) fn voters(request: &pb::InitClusterRequest) -> Result<BTreeMap<u64, String>, Status> {
    if request.voters.len() > MEMBERSHIP_NODES_MAX {
        return Err(to_status(Error::invalid(
            "voters",
            format!("at most {MEMBERSHIP_NODES_MAX} (MEMBERSHIP_NODES_MAX)"),
        )));
    }
    let mut voters = BTreeMap::new();
    for (voter_idx, voter) in request.voters.iter().enumerate() {
        let (id, address) = member(voter, &format!("voters[{voter_idx}]"))?;
        if let Some((other, _)) = voters.iter().find(|(_, known)| **known == address) {
            return Err(to_status(Error::invalid(
                format!("voters[{voter_idx}].address"),
                format!("{address} is also given for node {other}; each node has its own"),
            )));
        }
        if voters.insert(id, address).is_some() {
            return Err(to_status(Error::invalid(
                format!("voters[{voter_idx}].node_id"),
                format!("node {id} is listed twice"),
            )));
        }
    }
    Ok(voters)
}

#[tonic::async_trait]
impl ClusterService for Admin {
    async fn init_cluster(
        &self,
        request: Request<pb::InitClusterRequest>,
    ) -> Result<Response<pb::InitClusterResponse>, Status> {
        let voters = voters(&request.into_inner())?;
        let cluster_id = self.node.init(voters).await.map_err(to_status)?;
        Ok(Response::new(pb::InitClusterResponse { cluster_id }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::AddLearnerResponse>, Status> {
        let node = request
            .into_inner()
            .node
            .ok_or_else(|| to_status(Error::invalid("node", "it is required")))?;
        let (id, address) = member(&node, "node")?;
        let membership = self
            .node
            .add_learner(id, address)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::AddLearnerResponse {
            membership: Some(membership),
        }))
    }

    async fn promote_voter(
        &self,
        request: Request<pb::PromoteVoterRequest>,
    ) -> Result<Response<pb::PromoteVoterResponse>, Status> {
        let id = node_id(request.into_inner().node_id)?;
        let membership = self.node.promote(id).await.map_err(to_status)?;
        Ok(Response::new(pb::PromoteVoterResponse {
            membership: Some(membership),
        }))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let id = node_id(request.into_inner().node_id)?;
        let membership = self.node.remove(id).await.map_err(to_status)?;
        Ok(Response::new(pb::RemoveNodeResponse {
            membership: Some(membership),
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let id = node_id(request.into_inner().node_id)?;
        let leader_id = self.node.transfer_leader(id).await.map_err(to_status)?;
        Ok(Response::new(pb::TransferLeaderResponse { leader_id }))
    }

    async fn get_cluster_status(
        &self,
        _request: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::GetClusterStatusResponse>, Status> {
        Ok(Response::new(self.node.status()))
    }
}
