//! Who this node is: its node id, fixed when its data directory is first used as a cluster
//! member, and the id of the cluster it belongs to, fixed when it forms or joins one.
//!
//! Both live in `<data>/raft/NODE` (a metafile: CRC'd, replaced atomically). They guard against
//! the two ways an operator can wire a cluster wrong:
//! - a node started with a data directory that belongs to another node id is refused at start
//!   (its log and votes are that other node's; serving them under a new id could elect two
//!   leaders in one term);
//! - every node-to-node request names its target node and cluster, and a node refuses traffic
//!   meant for another node (a stale address now served by someone else) or another cluster
//!   (two clusters sharing hosts).
//!
//! A node that has no cluster id yet (started, not initialised) adopts the first one a leader
//! sends it, durably, before it answers, unless it holds events of its own: a single node's
//! store it adopted. A cluster's log applied over those would give its events other positions
//! than on every other member, so such a node can only form a new cluster (`InitCluster`,
//! which keeps them), and refuses to join one.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use causeway_core::disk::OsDisk;
use causeway_core::metafile;

use super::codec::{Reader, invalid};
use super::core_error;

/// Magic of the identity file.
pub const NODE_MAGIC: [u8; 8] = *b"CWRNODE\0";
/// The identity file's name in the Raft directory.
pub const NODE_FILE: &str = "NODE";

/// This node's identity, shared by the network layer (which stamps it on requests) and the
/// service (which checks it on arrivals).
#[derive(Clone, Debug)]
pub struct Identity {
    node_id: u64,
    path: PathBuf,
    cluster_id: Arc<RwLock<Option<String>>>,
    /// Events this node held before it was in any cluster (0: none), which bar it from joining.
    own_events: Arc<AtomicU64>,
}

/// Why a request from a peer is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The request is meant for another node id.
    Node {
        /// The id the sender meant.
        expected: u64,
        /// This node's id.
        actual: u64,
    },
    /// The request comes from another cluster.
    Cluster {
        /// The sender's cluster id.
        theirs: String,
        /// This node's cluster id (empty when it has none).
        ours: String,
    },
    /// The request would make this node join a cluster, but it holds events of its own.
    OwnEvents {
        /// This node's id.
        node_id: u64,
        /// How many events it holds.
        events: u64,
    },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Node { expected, actual } => write!(
                f,
                "this is node {actual}, not node {expected}: the sender's address for node \
                 {expected} reaches another node"
            ),
            Mismatch::Cluster { theirs, ours } => write!(
                f,
                "this node belongs to cluster {ours:?}, the sender to cluster {theirs:?}"
            ),
            Mismatch::OwnEvents { node_id, events } => write!(
                f,
                "node {node_id} holds {events} events written before it was in any cluster (a \
                 single node's data folder): it can form a new cluster with them (cluster \
                 init on it), not join one, whose log would be applied over them; give node \
                 {node_id} an empty data folder to join"
            ),
        }
    }
}

impl Identity {
    /// Opens the identity in `raft_dir`, creating it for `node_id` when the directory is new.
    /// Refuses a directory that belongs to another node id.
    pub fn open(raft_dir: &Path, node_id: u64) -> io::Result<Identity> {
        let path = raft_dir.join(NODE_FILE);
        let cluster_id = match metafile::read(&path, NODE_MAGIC).map_err(core_error)? {
            Some(bytes) => {
                let (stored_id, cluster_id) = decode(&bytes)?;
                if stored_id != node_id {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "the data directory belongs to node {stored_id}, not node \
                             {node_id}: start it with --node-id {stored_id}, or give node \
                             {node_id} its own data directory"
                        ),
                    ));
                }
                cluster_id
            }
            None => {
                write(&path, node_id, None)?;
                None
            }
        };
        Ok(Identity {
            node_id,
            path,
            cluster_id: Arc::new(RwLock::new(cluster_id)),
            own_events: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Records that this node, in no cluster yet, holds `events` of its own: until it forms a
    /// cluster, it refuses to join one.
    pub fn hold_own_events(&self, events: u64) {
        self.own_events.store(events, Ordering::Relaxed);
    }

    /// The events this node holds from before it was in any cluster; 0 once it is in one.
    pub fn own_events(&self) -> u64 {
        match self.cluster_id() {
            Some(_) => 0,
            None => self.own_events.load(Ordering::Relaxed),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The cluster this node belongs to, if it has joined one.
    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id
            .read()
            .expect("identity lock poisoned")
            .clone()
    }

    /// Records `cluster_id` durably (once: a node never changes clusters).
    pub fn join(&self, cluster_id: &str) -> io::Result<()> {
        let mut current = self.cluster_id.write().expect("identity lock poisoned");
        match current.as_deref() {
            Some(ours) if ours == cluster_id => Ok(()),
            Some(ours) => Err(invalid(format!(
                "node {} already belongs to cluster {ours}",
                self.node_id
            ))),
            None => {
                write(&self.path, self.node_id, Some(cluster_id))?;
                *current = Some(cluster_id.to_string());
                Ok(())
            }
        }
    }

    /// Whether a peer request's header would pass [`Identity::check`], without joining.
    pub fn probe(&self, target_node_id: u64, cluster_id: &str) -> Result<(), Mismatch> {
        if target_node_id != self.node_id {
            return Err(Mismatch::Node {
                expected: target_node_id,
                actual: self.node_id,
            });
        }
        let events = self.own_events();
        match self.cluster_id() {
            Some(ours) if ours == cluster_id => Ok(()),
            None if events > 0 => Err(Mismatch::OwnEvents {
                node_id: self.node_id,
                events,
            }),
            None if !cluster_id.is_empty() && uuid::Uuid::parse_str(cluster_id).is_ok() => Ok(()),
            ours => Err(Mismatch::Cluster {
                theirs: cluster_id.chars().take(64).collect(),
                ours: ours.unwrap_or_default(),
            }),
        }
    }

    /// Checks a peer request's header; a node with no cluster yet joins the sender's.
    pub fn check(&self, target_node_id: u64, cluster_id: &str) -> Result<(), Mismatch> {
        self.probe(target_node_id, cluster_id)?;
        if self.cluster_id().is_some() {
            return Ok(());
        }
        self.join(cluster_id).map_err(|_| Mismatch::Cluster {
            theirs: cluster_id.to_string(),
            ours: self.cluster_id().unwrap_or_default(),
        })
    }
}

fn write(path: &Path, node_id: u64, cluster_id: Option<&str>) -> io::Result<()> {
    let mut payload = node_id.to_le_bytes().to_vec();
    match cluster_id {
        None => payload.push(0),
        Some(id) => {
            let uuid = uuid::Uuid::parse_str(id)
                .map_err(|err| invalid(format!("cluster id {id:?}: {err}")))?;
            payload.push(1);
            payload.extend_from_slice(uuid.as_bytes());
        }
    }
    metafile::write(&OsDisk, path, NODE_MAGIC, &payload).map_err(core_error)
}

fn decode(bytes: &[u8]) -> io::Result<(u64, Option<String>)> {
    let mut reader = Reader::new(bytes, "raft node identity");
    let node_id = reader.u64()?;
    let cluster_id = if reader.bool()? {
        let raw: [u8; 16] = reader
            .bytes(16)?
            .try_into()
            .expect("bytes(16) returns 16 bytes");
        Some(uuid::Uuid::from_bytes(raw).to_string())
    } else {
        None
    };
    reader.finish()?;
    Ok((node_id, cluster_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_keeps_its_node_id_and_cluster() {
        let dir = tempfile::tempdir().expect("temp dir");
        let identity = Identity::open(dir.path(), 2).expect("a new identity");
        assert_eq!(identity.cluster_id(), None);
        let cluster = uuid::Uuid::now_v7().to_string();
        identity.probe(2, &cluster).expect("could join");
        assert_eq!(identity.cluster_id(), None, "a probe joins nothing");
        identity
            .check(2, &cluster)
            .expect("joins the first cluster it hears from");
        let reopened = Identity::open(dir.path(), 2).expect("reopens");
        assert_eq!(reopened.cluster_id(), Some(cluster.clone()));
        let err = Identity::open(dir.path(), 3).expect_err("another node's directory");
        assert!(err.to_string().contains("belongs to node 2"), "{err}");
        assert_eq!(
            reopened.check(3, &cluster),
            Err(Mismatch::Node {
                expected: 3,
                actual: 2
            })
        );
        let other = uuid::Uuid::now_v7().to_string();
        assert!(matches!(
            reopened.check(2, &other),
            Err(Mismatch::Cluster { .. })
        ));
        assert!(matches!(
            reopened.check(2, ""),
            Err(Mismatch::Cluster { .. })
        ));
    }

    #[test]
    fn a_node_with_events_of_its_own_joins_no_cluster() {
        let dir = tempfile::tempdir().expect("temp dir");
        let identity = Identity::open(dir.path(), 3).expect("a new identity");
        identity.hold_own_events(5);
        let cluster = uuid::Uuid::now_v7().to_string();
        assert!(identity.probe(3, &cluster).is_err(), "a probe says so too");
        let refused = identity.check(3, &cluster).expect_err("refused");
        assert_eq!(
            refused,
            Mismatch::OwnEvents {
                node_id: 3,
                events: 5
            }
        );
        assert!(refused.to_string().contains("5 events"), "{refused}");
        assert_eq!(identity.cluster_id(), None, "joined nothing");
        // Forming its own cluster records the id, and its own members' traffic passes.
        identity.join(&cluster).expect("forms a cluster");
        identity.check(3, &cluster).expect("its own cluster");
    }
}
