//! Real `causewayd` cluster members for the cluster tests: node `i` listens on `127.0.0.i` at
//! a port chosen free when the cluster is made, keeps its data in its own folder of the test's
//! scratch directory, and logs to a file shown when a test fails.
//!
//! A node can be killed (`kill -9`) and restarted on the same data and address; its address
//! never changes, since the membership names it. Timeouts are short (heartbeat 50 ms, election
//! 300-600 ms) so elections settle quickly; every wait below is generous, for a noisy 2-core
//! machine.
//!
//! A cluster made [`Cluster::new_behind_proxies`] puts a [`Proxy`] on `127.0.0.i` in front of
//! node `i`, which advertises the proxy's address: every peer (dialling from its own listen IP)
//! then goes through the proxies, and [`Cluster::isolate`] and [`Cluster::heal`] partition
//! the nodes by source IP. The test's own clients dial the nodes' listen addresses, past the
//! proxies, so a test still talks to a node it cut off from its peers.
//!
//! A cluster given [`Cluster::use_tls`] dials its members over TLS (`https`, trusting the
//! test's CA and presenting a client certificate) for every call the harness makes; the
//! members themselves are started with the TLS flags the test passes.
//!
//! Below the harness are the reads and writes the tests share: an append through whichever
//! node leads, a node's own log, and the check that replicas are byte-identical.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use causeway_client::pb;
use pb::cluster_service_client::ClusterServiceClient;
use pb::event_store_service_client::EventStoreServiceClient;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::history::FinalEntry;
use crate::proxy::{Direction, Mode, Proxy};

/// The nodes' log filter, unless `CAUSEWAY_TEST_LOG` gives another (`info,openraft=debug`).
pub const LOG_FILTER: &str = "info,openraft=warn";
/// The lines of each node's log a failure shows, unless `CAUSEWAY_TEST_LOG_LINES` says more.
pub const LOG_LINES_SHOWN: usize = 40;

/// How long a test waits for a leader, a replica to catch up, or a process to start.
pub const SETTLE_WAIT: Duration = Duration::from_secs(30);

/// One member's fixed facts and, while it runs, its process.
pub struct Member {
    /// Its node id.
    pub id: u64,
    /// The address it listens on; the test's clients dial it.
    pub addr: SocketAddr,
    /// The address it advertises to peers and clients: `addr`, or its proxy's.
    pub advertise: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    log: PathBuf,
    /// The extra flags of its last start, which a restart repeats.
    flags: Vec<String>,
    child: Option<Child>,
    starts: u32,
}

/// A cluster of members on 127.0.0.1..n.
pub struct Cluster {
    /// The members; `members[i]` is node `i + 1`.
    pub members: Vec<Member>,
    /// When made behind proxies, `proxies[i]` is in front of node `i + 1`; else empty.
    pub proxies: Vec<Proxy>,
    /// When set, the harness dials members over TLS with it.
    tls: Option<ClientTlsConfig>,
    _scratch: tempfile::TempDir,
}

/// The first port a node may be given; with `PORTS_FOR_NODES`, a range below the system's
/// ephemeral ports (32768 and up on Linux).
const FIRST_NODE_PORT: u32 = 20_000;
const PORTS_FOR_NODES: u32 = 12_000;

/// A port on `ip` that binds now, below the ephemeral range. A node keeps its port when it
/// restarts, and a port from the ephemeral range (what binding port 0 gives) may be taken
/// meanwhile by any outgoing connection on the machine, so the node would fail to start
/// ("Address already in use", seen in CI). The search starts at a point drawn from the
/// process and the clock, so test processes running at once pick apart.
fn free_port(ip: &str) -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static PICKED: AtomicU32 = AtomicU32::new(0);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    let start = (std::process::id() ^ clock)
        .wrapping_add(PICKED.fetch_add(1, Ordering::Relaxed).wrapping_mul(7_919));
    for step in 0..PORTS_FOR_NODES {
        let port = FIRST_NODE_PORT + start.wrapping_add(step) % PORTS_FOR_NODES;
        let port = u16::try_from(port).expect("below 65536");
        if let Ok(listener) = TcpListener::bind((ip, port)) {
            return listener.local_addr().expect("its address");
        }
    }
    panic!("no free port on {ip} from {FIRST_NODE_PORT} to {PORTS_FOR_NODES} more");
}

impl Cluster {
    /// Makes `n` members (not started).
    pub fn new(n: u64) -> Cluster {
        let scratch = tempfile::Builder::new()
            .prefix("causeway-cluster-")
            .tempdir()
            .expect("a scratch directory");
        let members = (1..=n)
            .map(|id| {
                let addr = free_port(&format!("127.0.0.{id}"));
                Member {
                    id,
                    addr,
                    advertise: addr,
                    data_dir: scratch.path().join(format!("node-{id}")),
                    log: scratch.path().join(format!("node-{id}.log")),
                    flags: Vec::new(),
                    child: None,
                    starts: 0,
                }
            })
            .collect();
        Cluster {
            members,
            proxies: Vec::new(),
            tls: None,
            _scratch: scratch,
        }
    }

    /// Makes `n` members (not started), each behind a proxy on its own IP that it advertises.
    pub fn new_behind_proxies(n: u64) -> Cluster {
        let mut cluster = Cluster::new(n);
        for member in &mut cluster.members {
            let listen = SocketAddr::new(member.addr.ip(), 0);
            let proxy = Proxy::start_on(listen, member.addr).expect("a proxy beside the node");
            member.advertise = proxy.addr();
            cluster.proxies.push(proxy);
        }
        cluster
    }

    /// Starts `n` members behind proxies and forms the cluster with all of them as voters.
    pub async fn start_behind_proxies(n: u64) -> Cluster {
        let mut cluster = Cluster::new_behind_proxies(n);
        for member in &mut cluster.members {
            member.start();
        }
        cluster.init_all().await;
        cluster
    }

    /// Cuts node `id` off from every other node, both ways, until [`Cluster::heal`]: its proxy
    /// drops what the others send, the others' proxies drop what it sends, and the connections
    /// open across the cut are reset so no request is left half-delivered.
    pub fn isolate(&self, id: u64) {
        assert!(
            !self.proxies.is_empty(),
            "isolate needs a cluster behind proxies"
        );
        let ip = |id: u64| self.members[(id - 1) as usize].addr.ip();
        for other in self.members.iter().filter(|member| member.id != id) {
            self.proxy(id)
                .set_from(ip(other.id), Direction::Both, Mode::Drop);
            self.proxy(other.id)
                .set_from(ip(id), Direction::Both, Mode::Drop);
        }
        for proxy in &self.proxies {
            proxy.cut();
        }
    }

    /// Ends every partition: all proxies pass everything again.
    pub fn heal(&self) {
        for proxy in &self.proxies {
            proxy.heal();
        }
    }

    /// The proxy in front of node `id`.
    pub fn proxy(&self, id: u64) -> &Proxy {
        &self.proxies[(id - 1) as usize]
    }

    /// Starts every member, forms the cluster on node 1 with all of them as voters, and waits
    /// for a leader that every member knows.
    pub async fn start(n: u64) -> Cluster {
        let mut cluster = Cluster::new(n);
        for member in &mut cluster.members {
            member.start();
        }
        cluster.init_all().await;
        cluster
    }

    /// Dials every member over TLS with `tls` from now on.
    pub fn use_tls(&mut self, tls: ClientTlsConfig) {
        self.tls = Some(tls);
    }

    /// The scratch directory the members' folders and logs live in.
    pub fn scratch(&self) -> &std::path::Path {
        self._scratch.path()
    }

    /// The endpoint of `addr`: `https` with the cluster's TLS, else `http`.
    fn endpoint(&self, addr: SocketAddr) -> Endpoint {
        match &self.tls {
            None => Channel::from_shared(format!("http://{addr}")).expect("a uri"),
            Some(tls) => Channel::from_shared(format!("https://{addr}"))
                .expect("a uri")
                .tls_config(tls.clone())
                .expect("a TLS configuration"),
        }
    }

    /// A channel to `addr`, retried until it connects.
    async fn channel(&self, addr: SocketAddr) -> Channel {
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            match self
                .endpoint(addr)
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

    /// Member `id`.
    pub fn member(&mut self, id: u64) -> &mut Member {
        &mut self.members[(id - 1) as usize]
    }

    /// A client of member `id`'s event store.
    pub async fn client(&self, id: u64) -> EventStoreServiceClient<Channel> {
        EventStoreServiceClient::new(self.channel(self.members[(id - 1) as usize].addr).await)
    }

    /// A client of member `id`'s cluster service.
    pub async fn admin(&self, id: u64) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel(self.members[(id - 1) as usize].addr).await)
    }

    /// Member `id`'s status, or `None` when it does not answer.
    pub async fn status(&self, id: u64) -> Option<pb::GetClusterStatusResponse> {
        let member = &self.members[(id - 1) as usize];
        if !member.running() {
            return None;
        }
        let channel = self
            .endpoint(member.addr)
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

    /// The ids of the running members.
    pub fn running(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|member| member.running())
            .map(|member| member.id)
            .collect()
    }

    /// Waits until one running member is leader and every running member names it; returns its id.
    pub async fn leader(&self) -> u64 {
        self.leader_among(&self.running()).await
    }

    /// Waits until one of `ids` (running members) is leader and all of them name it; returns
    /// its id. For a test in which other members are cut off, removed, or not yet members.
    pub async fn leader_among(&self, ids: &[u64]) -> u64 {
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let mut leaders = Vec::new();
            let mut all_agree = true;
            for member in self
                .members
                .iter()
                .filter(|member| ids.contains(&member.id))
            {
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
            if all_agree && leaders.len() == 1 && ids.contains(&leaders[0]) {
                return leaders[0];
            }
            assert!(
                Instant::now() < deadline,
                "no leader agreed by nodes {ids:?} within {SETTLE_WAIT:?}; saw {leaders:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until each of `ids` has applied through `index`.
    pub async fn applied_among(&self, ids: &[u64], index: u64) {
        let deadline = Instant::now() + SETTLE_WAIT;
        for member in self
            .members
            .iter()
            .filter(|member| ids.contains(&member.id))
        {
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
                let n_lines = std::env::var("CAUSEWAY_TEST_LOG_LINES")
                    .ok()
                    .and_then(|lines| lines.parse().ok())
                    .unwrap_or(LOG_LINES_SHOWN);
                let tail: Vec<&str> = log.lines().rev().take(n_lines).collect();
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
    /// Starts (or restarts) the member on its data directory and address, with the extra
    /// flags of its last start.
    pub fn start(&mut self) {
        let flags = self.flags.clone();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        self.start_with(&flags);
    }

    /// Starts the member with extra flags, which later restarts repeat.
    pub fn start_with(&mut self, extra: &[&str]) {
        self.flags = extra.iter().map(|flag| flag.to_string()).collect();
        let mut args = vec![
            "--node-id".to_string(),
            self.id.to_string(),
            "--advertise".to_string(),
            self.advertise.to_string(),
        ];
        args.extend(
            ["--heartbeat-ms", "50", "--election-timeout-ms", "300"]
                .into_iter()
                .chain(extra.iter().copied())
                .map(str::to_string),
        );
        self.spawn(&args);
    }

    /// Starts the member as a single node, not a cluster member: no node id, no Raft.
    pub fn start_single(&mut self) {
        self.spawn(&[]);
    }

    fn spawn(&mut self, args: &[String]) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the node's log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_causewayd"))
            .arg("--listen")
            .arg(self.addr.to_string())
            .args(["--admin-listen", "off"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--pool-threads", "8", "--pool-queue", "64"])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("CAUSEWAY_TEST_LOG").unwrap_or_else(|_| LOG_FILTER.to_string()),
            )
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

    /// Stops the member with SIGTERM, as an operator would, and checks that it exits cleanly.
    pub fn terminate(&mut self) {
        let mut child = self.child.take().expect("the member runs");
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed for node {}", self.id);
        let exit = child.wait().expect("wait for causewayd");
        assert!(
            exit.success(),
            "node {} exited with {exit} after SIGTERM; log:\n{}",
            self.id,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Kills the member with SIGKILL and waits for it to die.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the member with SIGSTOP: its sockets stay open, and nothing answers on them.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen member run on with SIGCONT.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the member runs");
        let sent = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} failed for node {}", self.id);
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
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
        let ids: Vec<u64> = self.members.iter().map(|member| member.id).collect();
        self.init(&ids).await;
    }

    /// Forms the cluster on `voters[0]` with `voters` (started) as its voters, and waits for
    /// a leader they agree on.
    pub async fn init(&self, voters: &[u64]) {
        let nodes = voters.iter().map(|id| self.node(*id)).collect();
        self.admin(voters[0])
            .await
            .init_cluster(pb::InitClusterRequest { voters: nodes })
            .await
            .unwrap_or_else(|status| panic!("init the cluster: {status:?}\n{}", self.logs()));
        self.leader_among(voters).await;
    }

    /// Member `id` as the membership names it: its id and advertised address.
    pub fn node(&self, id: u64) -> pb::ClusterNode {
        pb::ClusterNode {
            node_id: id,
            address: self.members[(id - 1) as usize].advertise.to_string(),
        }
    }
}

/// One event of entity `entity` (scope `acme`) with `payload`.
pub fn event(entity: &str, payload: &str) -> pb::NewEvent {
    pb::NewEvent {
        scope: SCOPE.to_string(),
        entity: entity.to_string(),
        r#type: "Noted".to_string(),
        payload: payload.as_bytes().to_vec(),
        content_type: "text/plain".to_string(),
        ..Default::default()
    }
}

/// The scope of every event the tests write.
pub const SCOPE: &str = "acme";

/// The page size of the tests' log reads.
pub const READ_PAGE_EVENTS: u32 = 1000;

impl Cluster {
    /// Appends one event through whichever of the running members leads, retrying while there
    /// is no leader (an election) or the node asked is not it; returns the position and the
    /// leader used. The idempotency key is the payload's, so a retry is applied once.
    pub async fn append_at_leader(&self, entity: &str, payload: &str) -> (u64, u64) {
        self.append_at_leader_among(&self.running(), entity, payload)
            .await
    }

    /// As [`Cluster::append_at_leader`], with the leader one of `ids`.
    pub async fn append_at_leader_among(
        &self,
        ids: &[u64],
        entity: &str,
        payload: &str,
    ) -> (u64, u64) {
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let leader = self.leader_among(ids).await;
            let mut client = self.client(leader).await;
            let request = pb::AppendRequest {
                events: vec![event(entity, payload)],
                idempotency_key: format!("key-{payload}"),
                ..Default::default()
            };
            match client.append(request).await {
                Ok(response) => {
                    let receipt = response.into_inner().receipt.expect("a receipt");
                    return (receipt.events[0].position, leader);
                }
                Err(status) if status.code() == Code::Unavailable => {
                    assert!(
                        Instant::now() < deadline,
                        "no append accepted within {SETTLE_WAIT:?}: {status:?}\n{}",
                        self.logs()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => panic!("append refused: {status:?}"),
            }
        }
    }

    /// Every event of node `id`'s log, read locally from that node alone.
    pub async fn local_events(&self, id: u64) -> Vec<pb::Event> {
        let mut client = self.client(id).await;
        let mut events = Vec::new();
        let mut from_position = 1;
        loop {
            let page = client
                .read_log(pb::ReadLogRequest {
                    from_position,
                    direction: pb::Direction::Forward as i32,
                    limit: READ_PAGE_EVENTS,
                    consistency: pb::ReadConsistency::Local as i32,
                    ..Default::default()
                })
                .await
                .expect("read the log")
                .into_inner();
            events.extend(page.events);
            if page.end {
                return events;
            }
            from_position = page.next_position;
        }
    }

    /// Node `id`'s log as (position, payload), read locally.
    pub async fn local_log(&self, id: u64) -> Vec<(u64, Vec<u8>)> {
        self.local_events(id)
            .await
            .into_iter()
            .map(|event| (event.position, event.payload.to_vec()))
            .collect()
    }

    /// Node `id`'s log as the history checker's final log.
    pub async fn final_log(&self, id: u64) -> Vec<FinalEntry> {
        self.local_events(id)
            .await
            .into_iter()
            .map(|event| FinalEntry {
                position: event.position,
                payload: event.payload.to_vec(),
                entity: format!("{}/{}", event.scope, event.entity),
                version: event.version,
            })
            .collect()
    }

    /// Node `id`'s head and log digest, read locally.
    pub async fn local_head(&self, id: u64) -> (u64, Vec<u8>) {
        let head = self
            .client(id)
            .await
            .head(pb::HeadRequest {
                consistency: pb::ReadConsistency::Local as i32,
            })
            .await
            .expect("head")
            .into_inner();
        (head.position, head.digest)
    }

    /// Waits until every running node has applied what the leader has, then checks that they
    /// hold the same head and the same log digest (the digest chains every event's hash, so
    /// equal digests mean byte-identical logs).
    pub async fn assert_replicas_identical(&self) {
        self.assert_identical_among(&self.running()).await;
    }

    /// As [`Cluster::assert_replicas_identical`], for the members `ids` (a leader among them).
    pub async fn assert_identical_among(&self, ids: &[u64]) {
        let leader = self.leader_among(ids).await;
        let status = self.status(leader).await.expect("the leader answers");
        self.applied_among(ids, status.last_log_index).await;
        let expected = self.local_head(leader).await;
        for id in ids {
            let head = self.local_head(*id).await;
            assert_eq!(
                head, expected,
                "node {id} differs from the leader (node {leader})"
            );
        }
    }
}
