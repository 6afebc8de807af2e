//! A cluster over TLS: three real `causewayd` processes with mutual TLS between nodes and TLS
//! to clients, formed as an operator would (`cluster init` on one node, then `add-learner` and
//! `promote` for the others), and a node whose certificate names another node id.
//!
//! Certificates are made here with `rcgen`: one CA signs each node's certificate (naming
//! `node-<id>.causeway` and its IP, `127.0.0.<id>`) and the test's client certificate.

use std::path::Path;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::nodes::{Cluster, SETTLE_WAIT, pb};

/// The test CA, and its certificate's path.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    file: std::path::PathBuf,
}

impl Ca {
    fn new(dir: &Path) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "causeway cluster test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key"))
            .expect("a CA certificate");
        let file = dir.join("ca.crt");
        std::fs::write(&file, issuer.pem()).expect("write the CA");
        Ca { issuer, file }
    }

    /// A certificate for `names`, as (certificate PEM, key PEM), also written to
    /// `dir/{stem}.crt` and `.key`.
    fn issue(&self, dir: &Path, stem: &str, names: &[String]) -> (String, String) {
        let mut params = CertificateParams::new(names.to_vec()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, stem);
        let key = KeyPair::generate().expect("a leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        let (cert, key) = (cert.pem(), key.serialize_pem());
        std::fs::write(dir.join(format!("{stem}.crt")), &cert).expect("write the certificate");
        std::fs::write(dir.join(format!("{stem}.key")), &key).expect("write the key");
        (cert, key)
    }
}

fn path(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_string()
}

/// A cluster of `n` members (not started) whose harness dials them over TLS with a client
/// certificate; node `i` will present a certificate naming `node-{names_node(i)}.causeway`.
/// Returns the cluster and each member's TLS flags.
fn tls_cluster(n: u64, names_node: impl Fn(u64) -> u64) -> (Cluster, Vec<Vec<String>>) {
    let mut cluster = Cluster::new(n);
    let dir = cluster.scratch().join("certs");
    std::fs::create_dir_all(&dir).expect("a folder for certificates");
    let ca = Ca::new(&dir);
    let flags = cluster
        .members
        .iter()
        .map(|member| {
            let stem = format!("node{}", member.id);
            let names = vec![
                format!("node-{}.causeway", names_node(member.id)),
                member.addr.ip().to_string(),
            ];
            ca.issue(&dir, &stem, &names);
            vec![
                "--tls-cert".to_string(),
                path(&dir.join(format!("{stem}.crt"))),
                "--tls-key".to_string(),
                path(&dir.join(format!("{stem}.key"))),
                "--tls-client-ca".to_string(),
                path(&ca.file),
            ]
        })
        .collect();
    let (cert, key) = ca.issue(&dir, "client", &["app.example".to_string()]);
    let ca_pem = std::fs::read_to_string(&ca.file).expect("read the CA");
    cluster.use_tls(
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .identity(Identity::from_pem(cert, key)),
    );
    (cluster, flags)
}

/// Starts member `id` with `flags`.
fn start(cluster: &mut Cluster, id: u64, flags: &[String]) {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    cluster.member(id).start_with(&flags);
}

/// Adds node `id` as a learner at the leader among `voters`, retrying while there is none.
async fn add_learner(cluster: &Cluster, voters: &[u64], id: u64) {
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let leader = cluster.leader_among(voters).await;
        let request = pb::AddLearnerRequest {
            node: Some(cluster.node(id)),
        };
        match cluster.admin(leader).await.add_learner(request).await {
            Ok(_) => return,
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("add-learner {id}: {status:?}\n{}", cluster.logs()),
        }
    }
}

/// Promotes node `id` at the leader among `voters`: the answer, after retries while there is
/// no leader.
async fn promote(
    cluster: &Cluster,
    voters: &[u64],
    id: u64,
) -> Result<pb::PromoteVoterResponse, tonic::Status> {
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let leader = cluster.leader_among(voters).await;
        let request = pb::PromoteVoterRequest { node_id: id };
        match cluster.admin(leader).await.promote_voter(request).await {
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answer => return answer.map(tonic::Response::into_inner),
        }
    }
}

/// Three nodes with mutual TLS between them and TLS to clients, formed by `init` on node 1
/// then `add-learner` and `promote` for nodes 2 and 3: an append acknowledged over TLS is read
/// back from every node, whose heads and digests are identical; after the leader is killed
/// with SIGKILL, the new leader acknowledges a write and the two survivors stay identical.
/// Catches peer traffic that only works in plaintext (a dial without the node name, a client
/// config without the node's certificate), and a leader change that TLS stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_replicates_and_survives_its_leader_killed() {
    let (mut cluster, flags) = tls_cluster(3, |id| id);
    for id in 1..=3 {
        start(&mut cluster, id, &flags[(id - 1) as usize]);
    }
    cluster.init(&[1]).await;
    let mut voters = vec![1];
    for id in [2, 3] {
        add_learner(&cluster, &voters, id).await;
        promote(&cluster, &voters, id)
            .await
            .unwrap_or_else(|status| panic!("promote {id}: {status:?}\n{}", cluster.logs()));
        voters.push(id);
    }
    let status = cluster.status(1).await.expect("node 1 answers over TLS");
    let mut voter_ids: Vec<u64> = status
        .membership
        .iter()
        .flat_map(|membership| membership.voters.iter().map(|node| node.node_id))
        .collect();
    voter_ids.sort_unstable();
    assert_eq!(voter_ids, [1, 2, 3]);

    let (position, old_leader) = cluster.append_at_leader("order-1", "over-tls").await;
    cluster.assert_replicas_identical().await;
    for id in 1..=3 {
        let log = cluster.local_log(id).await;
        assert_eq!(
            log,
            [(position, b"over-tls".to_vec())],
            "node {id} holds the append"
        );
    }

    cluster.member(old_leader).kill();
    let (after, new_leader) = cluster.append_at_leader("order-1", "after-the-kill").await;
    assert_ne!(new_leader, old_leader, "a new leader acknowledged it");
    assert!(after > position, "{after} follows {position}");
    cluster.assert_replicas_identical().await;
    for id in cluster.running() {
        let payloads: Vec<Vec<u8>> = cluster
            .local_log(id)
            .await
            .into_iter()
            .map(|(_, payload)| payload)
            .collect();
        assert_eq!(
            payloads,
            [b"over-tls".to_vec(), b"after-the-kill".to_vec()],
            "node {id}"
        );
    }
}

/// Node 3's certificate names node 4: the leader, dialling node 3 as `node-3.causeway`,
/// refuses its certificate, so node 3 never answers as a learner, cannot be promoted
/// (FAILED_PRECONDITION) and receives no event, while nodes 1 and 2 go on serving. Catches a
/// peer check that trusts any certificate the CA signed, so one node's key could stand in
/// for another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_certificate_names_another_node_is_refused() {
    let (mut cluster, flags) = tls_cluster(3, |id| if id == 3 { 4 } else { id });
    for id in 1..=3 {
        start(&mut cluster, id, &flags[(id - 1) as usize]);
    }
    cluster.init(&[1, 2]).await;
    let (position, _) = cluster
        .append_at_leader_among(&[1, 2], "order-2", "before")
        .await;

    add_learner(&cluster, &[1, 2], 3).await;
    let refused = promote(&cluster, &[1, 2], 3)
        .await
        .expect_err("node 3 cannot be promoted");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("has answered the leader"),
        "{refused:?}"
    );
    let status = cluster.status(3).await.expect("node 3 answers its clients");
    assert_eq!(status.applied_index, 0, "node 3 received nothing");
    assert!(
        cluster.local_log(3).await.is_empty(),
        "node 3 holds no event"
    );

    let (after, _) = cluster
        .append_at_leader_among(&[1, 2], "order-2", "after")
        .await;
    assert!(after > position);
    cluster.assert_identical_among(&[1, 2]).await;
}
