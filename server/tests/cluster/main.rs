//! The cluster integration tests: real `causewayd` processes formed into Raft clusters on
//! loopback IPs, driven through the public gRPC API, one named test per cluster invariant.
//!
//! - `nodes`: the harness (members, proxies in front of them, leader and replica checks).
//! - `proxy`: partitions without root: a TCP proxy that drops, delays and cuts by source IP.
//! - `clients`: workload clients that find the leader and classify answers as the checker needs.
//! - `history`: the invariants a history of appends, reads and subscriptions must keep.
//! - `replication`: acknowledged writes survive crashes; followers catch up by log and snapshot.
//! - `partition`: cut-off leaders acknowledge nothing; healed followers do not depose leaders.
//! - `membership`: members join and leave under load; a single node grows into a cluster.
//! - `backup`: a member's backup restores as a single node holding the cluster's events.
//! - `hostile`: malformed or stranger's node-to-node requests crash nothing and depose no one.
//! - `tls`: a cluster over mutual TLS forms, replicates and changes leader; a node whose
//!   certificate names another node id is refused.
//! - `nemesis`: a seeded run of kills and partitions under concurrent clients, then the checker.

mod backup;
mod clients;
mod history;
mod hostile;
mod membership;
mod nemesis;
mod nodes;
mod partition;
mod proxy;
mod replication;
mod tls;
