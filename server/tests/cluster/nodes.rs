//! Real `causewayd` cluster members for the cluster tests: node `i` listens on `127.0.0.i` at
//! a port chosen free when the cluster is made, keeps its data in its own folder of the test's
//! scratch directory, and logs to a file shown when a test fails.
//!
//! A node can be killed (`kill -9`) and restarted on the same data and address; its address
//! never changes, since the membership names it. Timeouts are short (heartbeat 50 ms, election
//! 300-600 ms) so elections settle quickly; every wait below is generous, for a noisy 2-core
//! machine.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use causeway_client::pb;
use pb::cluster_service_client::ClusterServiceClient;
use pb::event_store_service_client::EventStoreServiceClient;
use tonic::transport::Channel;

/// How long a test waits for a leader, a replica to catch up, or a process to start.
pub const SETTLE_WAIT: Duration = Duration::from_secs(30);

/// One member's fixed facts and, while it runs, its process.
pub struct Member {
    /// Its node id.
    pub id: u64,
    /// The address it listens on and advertises.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

/// A cluster of members on 127.0.0.1..n.
pub struct Cluster {
    /// The members; `members[i]` is node `i + 1`.
    pub members: Vec<Member>,
    _scratch: tempfile::TempDir,
}

fn free_port(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind(format!("{ip}:0")).expect("a free port");
    listener.local_addr().expect("its address")
}

impl Cluster {
    /// Makes `n` members (not started).
    pub fn new(n: u64) -> Cluster {
        let scratch = tempfile::Builder::new()
            .prefix("causeway-cluster-")
            .tempdir()
            .expect("a scratch directory");
        let members = (1..=n)
            .map(|id| Member {
                id,
                addr: free_port(&format!("127.0.0.{id}")),
                data_dir: scratch.path().join(format!("node-{id}")),
                log: scratch.path().join(format!("node-{id}.log")),
                child: None,
                starts: 0,
            })
            .collect();
        Cluster {
            members,
            _scratch: scratch,
        }
    }

    /// Starts every member, forms the cluster on node 1 with all of them as voters, and waits
    /// for a leader that every member knows.
    pub async fn start(n: u64) -> Cluster {
        let mut cluster = Cluster::new(n);
        for idx in 0..cluster.members.len() {
            cluster.members[idx].start();
        }
        let voters = cluster
            .members
            .iter()
            .map(|member| pb::ClusterNode {
                node_id: member.id,
                address: member.addr.to_string(),
            })
            .collect();
        cluster
            .admin(1)
            .await
            .init_cluster(pb::InitClusterRequest { voters })
            .await
            .expect("init the cluster");
        cluster.leader().await;
        cluster
    }

    /// Member `id`.
    pub fn member(&mut self, id: u64) -> &mut Member {
        &mut self.members[(id - 1) as usize]
    }

    /// A client of member `id`'s event store.
    pub async fn client(&self, id: u64) -> EventStoreServiceClient<Channel> {
        EventStoreServiceClient::new(channel(self.members[(id - 1) as usize].addr).await)
    }

    /// A client of member `id`'s cluster service.
    pub async fn admin(&self, id: u64) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(channel(self.members[(id - 1) as usize].addr).await)
    }

    /// Member `id`'s status, or `None` when it does not answer.
    pub async fn status(&self, id: u64) -> Option<pb::GetClusterStatusResponse> {
        let member = &self.members[(id - 1) as usize];
        if member.child.is_none() {
            return None;
        }
        let channel = Channel::from_shared(format!("http://{}", member.addr))
            .expect("a uri")
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .ok()?;
        ClusterServiceClient::new(channel)
            .get_cluster_status(pb::GetClusterStatusRequest {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    }

    /// Waits until one running member is leader and every running member names it; returns its id.
    pub async fn leader(&self) -> u64 {
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let mut leaders = Vec::new();
            let mut all_agree = true;
            for member in self.members.iter().filter(|member| member.child.is_some()) {
                match self.status(member.id).await {
                    Some(status) => {
                        if status.role == pb::NodeRole::Leader as i32 {
                            leaders.push(status.node_id);
                        }
                        all_agree &= status.leader_id != 0;
                        leaders.push(status.leader_id);
                    }
                    None => all_agree = false,
                }
            }
            leaders.sort_unstable();
            leaders.dedup();
            let running = |id: u64| {
                self.members
                    .iter()
                    .any(|member| member.id == id && member.child.is_some())
            };
            if all_agree && leaders.len() == 1 && leaders[0] != 0 && running(leaders[0]) {
                return leaders[0];
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {SETTLE_WAIT:?}; saw {leaders:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running member has applied through `index`.
    pub async fn applied_everywhere(&self, index: u64) {
        let deadline = Instant::now() + SETTLE_WAIT;
        for member in self.members.iter().filter(|member| member.child.is_some()) {
            loop {
                let applied = self
                    .status(member.id)
                    .await
                    .map_or(0, |status| status.applied_index);
                if applied >= index {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} applied {applied}, not {index}, within {SETTLE_WAIT:?}\n{}",
                    member.id,
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Every member's log so far, for a failure message.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|member| {
                let log = std::fs::read_to_string(&member.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- node {} ---\n{}\n", member.id, tail.join("\n"))
            })
            .collect()
    }
}

/// A channel to `addr`, retried until it connects.
pub async fn channel(addr: SocketAddr) -> Channel {
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        match Channel::from_shared(format!("http://{addr}"))
            .expect("a uri")
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await
        {
            Ok(channel) => return channel,
            Err(err) => {
                assert!(Instant::now() < deadline, "cannot connect to {addr}: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Member {
    /// Starts (or restarts) the member on its data directory and address.
    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts the member with extra flags.
    pub fn start_with(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the node's log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_causewayd"))
            .arg("--node-id")
            .arg(self.id.to_string())
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--heartbeat-ms", "50", "--election-timeout-ms", "300"])
            .args(["--pool-threads", "8", "--pool-queue", "64"])
            .args(extra)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn causewayd");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read causewayd's first line");
        if !line.starts_with("listening on ") {
            let _ = child.wait();
            panic!(
                "node {} did not start; its first line was {line:?}; log:\n{}",
                self.id,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        self.child = Some(child);
    }

    /// Kills the member with SIGKILL and waits for it to die.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Cluster {
    /// Forms the cluster on node 1 with every member as a voter (members already started).
    pub async fn init_all(&self) {
        let voters = self
            .members
            .iter()
            .map(|member| pb::ClusterNode {
                node_id: member.id,
                address: member.addr.to_string(),
            })
            .collect();
        self.admin(1)
            .await
            .init_cluster(pb::InitClusterRequest { voters })
            .await
            .expect("init the cluster");
        self.leader().await;
    }
}
