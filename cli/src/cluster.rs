//! `causeway cluster ...`: forming a cluster, changing its members, and the status table that
//! shows every member side by side.
//!
//! Each subcommand is one `ClusterAdmin` call; `status` is its survey, which asks every member
//! for its own view, so a member that is down shows as `unreachable` rather than failing the
//! command. Against a server that runs as a single node, `status` says so (and how to grow
//! it) and succeeds; the changes fail with the same explanation.

use anyhow::Result;
use causeway_client::{ClusterAdmin, ClusterView, Error, Tls, pb};
use serde_json::{Value, json};

use crate::args::{ClusterCommand, Output};
use crate::commands::{emit, print_json};
use crate::table;

/// Runs a cluster subcommand against the members at `server`.
pub async fn run(
    server: &str,
    tls: Option<&Tls>,
    token: Option<&str>,
    command: ClusterCommand,
    output: Output,
) -> Result<()> {
    let admin = match tls {
        None => ClusterAdmin::connect(server).await?,
        Some(tls) => ClusterAdmin::connect_tls(server, tls).await?,
    };
    let admin = match token {
        Some(token) => admin.with_token(token)?,
        None => admin,
    };
    match command {
        ClusterCommand::Init { voters } => {
            let cluster_id = admin.init(&voters).await?;
            match output {
                Output::Table => emit(&table::listing(&[("cluster_id", cluster_id)]))?,
                Output::Json => print_json(&json!({ "cluster_id": cluster_id }))?,
            }
        }
        ClusterCommand::AddLearner { node_id, address } => {
            let membership = admin.add_learner(node_id, &address).await?;
            print_membership(&membership, output)?;
        }
        ClusterCommand::Promote { node_id } => {
            let membership = admin.promote_voter(node_id).await?;
            print_membership(&membership, output)?;
        }
        ClusterCommand::Remove { node_id } => {
            let membership = admin.remove_node(node_id).await?;
            print_membership(&membership, output)?;
        }
        ClusterCommand::TransferLeader { node_id } => {
            let leader_id = admin.transfer_leader(node_id).await?;
            match output {
                Output::Table => emit(&table::listing(&[("leader", leader_id.to_string())]))?,
                Output::Json => print_json(&json!({ "leader_id": leader_id }))?,
            }
        }
        ClusterCommand::Status => match admin.survey().await {
            Ok(view) => match output {
                Output::Table => emit(&status_table(&view))?,
                Output::Json => print_json(&status_json(&view))?,
            },
            // A single node is an answer to "what is the cluster", not a failure.
            Err(Error::SingleNode { address }) => {
                let message = Error::SingleNode {
                    address: address.clone(),
                }
                .to_string();
                match output {
                    Output::Table => emit(&format!("{message}\n"))?,
                    Output::Json => print_json(&json!({
                        "single_node": true,
                        "address": address,
                        "message": message,
                    }))?,
                }
            }
            Err(err) => return Err(err.into()),
        },
    }
    Ok(())
}

fn print_membership(membership: &pb::Membership, output: Output) -> Result<()> {
    match output {
        Output::Table => emit(&membership_table(membership)),
        Output::Json => print_json(&json!({ "membership": membership_json(membership) })),
    }
}

/// The members as a table: node, address, and whether it votes.
pub fn membership_table(membership: &pb::Membership) -> String {
    let rows: Vec<Vec<String>> = nodes(membership)
        .map(|(node, kind)| vec![node.node_id.to_string(), node.address.clone(), kind.into()])
        .collect();
    table::render(&["NODE", "ADDRESS", "MEMBER"], &rows)
}

fn membership_json(membership: &pb::Membership) -> Value {
    let list = |nodes: &[pb::ClusterNode]| -> Vec<Value> {
        nodes
            .iter()
            .map(|node| json!({ "node_id": node.node_id, "address": node.address }))
            .collect()
    };
    json!({ "voters": list(&membership.voters), "learners": list(&membership.learners) })
}

/// Voters, then learners, each sorted by node id, with the kind of member.
fn nodes(membership: &pb::Membership) -> impl Iterator<Item = (&pb::ClusterNode, &'static str)> {
    let mut voters: Vec<&pb::ClusterNode> = membership.voters.iter().collect();
    voters.sort_by_key(|node| node.node_id);
    let mut learners: Vec<&pb::ClusterNode> = membership.learners.iter().collect();
    learners.sort_by_key(|node| node.node_id);
    voters
        .into_iter()
        .map(|node| (node, "voter"))
        .chain(learners.into_iter().map(|node| (node, "learner")))
}

/// The role as printed: lower-case, without the enum's prefix.
fn role_name(role: pb::NodeRole) -> &'static str {
    match role {
        pb::NodeRole::Leader => "leader",
        pb::NodeRole::Follower => "follower",
        pb::NodeRole::Candidate => "candidate",
        pb::NodeRole::Learner => "learner",
        pb::NodeRole::Shutdown => "shutdown",
        pb::NodeRole::Unspecified => "unknown",
    }
}

/// The cluster id the members agree on (the leader's, else any member's).
fn cluster_id(view: &ClusterView) -> String {
    view.leader()
        .into_iter()
        .chain(view.members.iter().filter_map(|m| m.status.as_ref().ok()))
        .map(|status| status.cluster_id.clone())
        .find(|id| !id.is_empty())
        .unwrap_or_default()
}

/// One line about the cluster, a row per member, and a line per member that did not answer.
pub fn status_table(view: &ClusterView) -> String {
    let cluster_id = cluster_id(view);
    let mut out = if cluster_id.is_empty() {
        "this node belongs to no cluster yet: form one with `causeway cluster init`\n".to_string()
    } else {
        match view.leader() {
            Some(leader) => format!(
                "cluster {cluster_id}: leader node {} at {}, term {}\n",
                leader.node_id,
                view.members
                    .iter()
                    .find(|member| member.node_id == leader.node_id)
                    .map_or("?", |member| member.address.as_str()),
                leader.term
            ),
            None => format!("cluster {cluster_id}: no member says it leads (an election?)\n"),
        }
    };
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = view
        .members
        .iter()
        .map(|member| {
            let lag = view
                .lag(member.node_id)
                .map_or_else(dash, |lag| lag.to_string());
            match &member.status {
                Ok(status) => vec![
                    member.node_id.to_string(),
                    member.address.clone(),
                    role_name(status.role()).to_string(),
                    status.term.to_string(),
                    if status.leader_id == 0 {
                        dash()
                    } else {
                        status.leader_id.to_string()
                    },
                    status.last_log_index.to_string(),
                    status.committed_index.to_string(),
                    status.applied_index.to_string(),
                    status.head_position.to_string(),
                    lag,
                ],
                Err(_) => {
                    let mut row = vec![
                        member.node_id.to_string(),
                        member.address.clone(),
                        "unreachable".to_string(),
                    ];
                    row.extend(std::iter::repeat_with(dash).take(6));
                    row.push(lag);
                    row
                }
            }
        })
        .collect();
    out.push_str(&table::render(
        &[
            "NODE",
            "ADDRESS",
            "ROLE",
            "TERM",
            "LEADER",
            "LAST LOG",
            "COMMITTED",
            "APPLIED",
            "HEAD",
            "LAG",
        ],
        &rows,
    ));
    for member in &view.members {
        if let Err(err) = &member.status {
            out.push_str(&format!(
                "node {} at {} is unreachable: {err}\n",
                member.node_id, member.address
            ));
        }
    }
    out
}

/// The survey as JSON: the cluster id, the leader, and every member with its state or error.
pub fn status_json(view: &ClusterView) -> Value {
    let members: Vec<Value> = view
        .members
        .iter()
        .map(|member| {
            let mut value = json!({
                "node_id": member.node_id,
                "address": member.address,
                "voter": member.voter,
                "reachable": member.status.is_ok(),
                "lag": view.lag(member.node_id),
            });
            let fields = match &member.status {
                Ok(status) => json!({
                    "role": role_name(status.role()),
                    "term": status.term,
                    "leader_id": (status.leader_id != 0).then_some(status.leader_id),
                    "last_log_index": status.last_log_index,
                    "committed_index": status.committed_index,
                    "applied_index": status.applied_index,
                    "head_position": status.head_position,
                }),
                Err(err) => json!({ "role": "unreachable", "error": err.to_string() }),
            };
            if let (Some(value), Value::Object(fields)) = (value.as_object_mut(), fields) {
                value.extend(fields);
            }
            value
        })
        .collect();
    json!({
        "cluster_id": cluster_id(view),
        "leader_id": view.leader().map(|leader| leader.node_id),
        "members": members,
    })
}

#[cfg(test)]
mod tests {
    use causeway_client::MemberStatus;

    use super::*;

    fn view() -> ClusterView {
        let leader = pb::GetClusterStatusResponse {
            node_id: 1,
            cluster_id: "c-1".to_string(),
            role: pb::NodeRole::Leader.into(),
            term: 3,
            leader_id: 1,
            leader_address: "10.0.0.1:7000".to_string(),
            last_log_index: 12,
            committed_index: 12,
            applied_index: 12,
            head_position: 9,
            replication: vec![
                pb::Replication {
                    node_id: 2,
                    matched_index: 11,
                    lag: 1,
                },
                pb::Replication {
                    node_id: 3,
                    matched_index: 4,
                    lag: 8,
                },
            ],
            ..pb::GetClusterStatusResponse::default()
        };
        let follower = pb::GetClusterStatusResponse {
            node_id: 2,
            cluster_id: "c-1".to_string(),
            role: pb::NodeRole::Follower.into(),
            term: 3,
            leader_id: 1,
            last_log_index: 11,
            committed_index: 11,
            applied_index: 10,
            head_position: 8,
            ..pb::GetClusterStatusResponse::default()
        };
        let member = |node_id: u64, status| MemberStatus {
            node_id,
            address: format!("10.0.0.{node_id}:7000"),
            voter: true,
            status,
        };
        ClusterView {
            members: vec![
                member(1, Ok(leader)),
                member(2, Ok(follower)),
                member(3, Err(Error::MissingField("status"))),
            ],
        }
    }

    #[test]
    fn the_status_table_has_a_row_per_member_and_names_the_unreachable() {
        let text = status_table(&view());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "cluster c-1: leader node 1 at 10.0.0.1:7000, term 3"
        );
        assert!(lines[1].starts_with("NODE"), "{text}");
        let cells =
            |line: &str| -> Vec<String> { line.split_whitespace().map(str::to_string).collect() };
        assert_eq!(
            cells(lines[2]),
            [
                "1",
                "10.0.0.1:7000",
                "leader",
                "3",
                "1",
                "12",
                "12",
                "12",
                "9",
                "0"
            ]
        );
        assert_eq!(
            cells(lines[3]),
            [
                "2",
                "10.0.0.2:7000",
                "follower",
                "3",
                "1",
                "11",
                "11",
                "10",
                "8",
                "1"
            ]
        );
        assert_eq!(
            cells(lines[4]),
            [
                "3",
                "10.0.0.3:7000",
                "unreachable",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "8"
            ]
        );
        assert!(
            lines[5].starts_with("node 3 at 10.0.0.3:7000 is unreachable: "),
            "{text}"
        );
    }

    #[test]
    fn the_status_json_carries_each_members_state_or_error() {
        let value = status_json(&view());
        assert_eq!(value["cluster_id"], "c-1");
        assert_eq!(value["leader_id"], 1);
        let members = value["members"].as_array().expect("members");
        assert_eq!(members.len(), 3);
        assert_eq!(members[0]["role"], "leader");
        assert_eq!(members[0]["lag"], 0);
        assert_eq!(members[1]["applied_index"], 10);
        assert_eq!(members[1]["lag"], 1);
        assert_eq!(members[2]["reachable"], false);
        assert_eq!(members[2]["role"], "unreachable");
        assert!(members[2]["error"].as_str().is_some_and(|e| !e.is_empty()));
    }

    #[test]
    fn a_membership_lists_voters_then_learners() {
        let membership = pb::Membership {
            voters: vec![
                pb::ClusterNode {
                    node_id: 2,
                    address: "b:2".to_string(),
                },
                pb::ClusterNode {
                    node_id: 1,
                    address: "a:1".to_string(),
                },
            ],
            learners: vec![pb::ClusterNode {
                node_id: 4,
                address: "d:4".to_string(),
            }],
        };
        assert_eq!(
            membership_table(&membership),
            "NODE  ADDRESS  MEMBER\n1     a:1      voter\n2     b:2      voter\n4     d:4      learner\n"
        );
        let value = membership_json(&membership);
        assert_eq!(value["learners"][0]["node_id"], 4);
        assert_eq!(value["voters"].as_array().map(Vec::len), Some(2));
    }
}
