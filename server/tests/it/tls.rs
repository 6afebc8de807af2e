//! TLS: handshakes that must succeed and must fail, mutual TLS, node identity between peers,
//! reload under an open connection, and the refusal of plaintext beyond loopback.
//!
//! Certificates are made here with `rcgen`: a CA per test (two where one must be foreign), a
//! server certificate for `localhost` and 127.0.0.1, client certificates, node certificates
//! naming `node-<id>.causeway`, and expired ones.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use causeway_client::{Client, Tls};
use causeway_server::cluster::pb as cluster_pb;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd,
};

use crate::harness::{Node, scratch};

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM files.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("a CA certificate"),
        }
    }

    /// Writes the CA certificate to `dir/name`.
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.issuer.pem()).expect("write the CA");
        path
    }

    /// A certificate for `names` (DNS names or IP addresses), written to `dir/{stem}.crt` and
    /// `.key`; `expired` makes one whose validity ended in 2001.
    fn issue(&self, dir: &Path, stem: &str, names: &[&str], expired: bool) -> Issued {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, stem);
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().expect("a leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        let issued = Issued {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write the key");
        issued
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Starts a node serving TLS with `server`, requiring client certificates when `client_ca`.
fn start_tls(dir: &Path, server: &Issued, client_ca: Option<&Path>, extra: &[&str]) -> Node {
    let mut args = vec![
        "--tls-cert",
        path(&server.cert),
        "--tls-key",
        path(&server.key),
    ];
    if let Some(ca) = client_ca {
        args.extend(["--tls-client-ca", path(ca)]);
    }
    args.extend(extra);
    Node::start(&dir.join("data"), &args)
}

/// The head through a fresh TLS client: `Ok` if the handshake and the call succeed.
async fn head_over_tls(
    addr: std::net::SocketAddr,
    ca: &Path,
    client: Option<&Issued>,
) -> Result<u64, String> {
    let tls = Tls::from_files(
        Some(ca),
        client.map(|issued| issued.cert.as_path()),
        client.map(|issued| issued.key.as_path()),
    )
    .map_err(|err| err.to_string())?;
    let client = Client::connect_tls(&format!("127.0.0.1:{}", addr.port()), &tls)
        .await
        .map_err(|err| err.to_string())?;
    client
        .head()
        .await
        .map(|head| head.position)
        .map_err(|err| err.to_string())
}

/// A server certificate the client's CA signed is accepted; one from another CA, an expired
/// one, and plaintext are not. Catches a client that trusts everything, or a server that
/// still answers plaintext on its TLS port.
#[tokio::test]
async fn a_tls_handshake_needs_the_right_ca_and_a_valid_certificate() {
    let dir = scratch();
    let ca = Ca::new("causeway test ca");
    let ca_file = ca.write(dir.path(), "ca.crt");
    let other_ca = Ca::new("another ca").write(dir.path(), "other-ca.crt");
    let server = ca.issue(dir.path(), "server", &["localhost", "127.0.0.1"], false);
    let node = start_tls(dir.path(), &server, None, &[]);

    assert_eq!(head_over_tls(node.addr, &ca_file, None).await, Ok(0));
    let foreign = head_over_tls(node.addr, &other_ca, None).await;
    assert!(foreign.is_err(), "a server from another CA: {foreign:?}");
    let plaintext = Client::connect(&node.addr.to_string()).await;
    let refused = match plaintext {
        Err(err) => err.to_string(),
        Ok(client) => client
            .head()
            .await
            .expect_err("plaintext on the TLS port")
            .to_string(),
    };
    assert!(!refused.is_empty());

    let expired_dir = scratch();
    let expired = ca.issue(
        expired_dir.path(),
        "expired",
        &["localhost", "127.0.0.1"],
        true,
    );
    let expired_node = start_tls(expired_dir.path(), &expired, None, &[]);
    let outcome = head_over_tls(expired_node.addr, &ca_file, None).await;
    assert!(
        outcome.is_err(),
        "an expired server certificate: {outcome:?}"
    );
}

/// With a client CA, a client must present a certificate that CA signed and that is in date:
/// no certificate, one from another CA, and an expired one are refused. Catches a verifier
/// that asks for a certificate but accepts none.
#[tokio::test]
async fn mutual_tls_refuses_a_missing_foreign_or_expired_client_certificate() {
    let dir = scratch();
    let ca = Ca::new("causeway test ca");
    let ca_file = ca.write(dir.path(), "ca.crt");
    let server = ca.issue(dir.path(), "server", &["localhost", "127.0.0.1"], false);
    let node = start_tls(dir.path(), &server, Some(&ca_file), &[]);

    let client = ca.issue(dir.path(), "client", &["app.example"], false);
    assert_eq!(
        head_over_tls(node.addr, &ca_file, Some(&client)).await,
        Ok(0)
    );

    let none = head_over_tls(node.addr, &ca_file, None).await;
    assert!(none.is_err(), "no client certificate: {none:?}");
    let foreign = Ca::new("another ca").issue(dir.path(), "foreign", &["app.example"], false);
    let outcome = head_over_tls(node.addr, &ca_file, Some(&foreign)).await;
    assert!(
        outcome.is_err(),
        "a client certificate of another CA: {outcome:?}"
    );
    let expired = ca.issue(dir.path(), "expired-client", &["app.example"], true);
    let outcome = head_over_tls(node.addr, &ca_file, Some(&expired)).await;
    assert!(
        outcome.is_err(),
        "an expired client certificate: {outcome:?}"
    );
    assert!(
        node.log().contains("TLS handshake failed"),
        "refused handshakes are logged:\n{}",
        node.log()
    );
}

/// A renewed certificate is served to new connections after SIGHUP while a connection opened
/// before keeps working; a reload that fails keeps the certificate in use. Catches a reload
/// that drops open connections, one that never takes effect, and one that half-applies a
/// broken key.
#[tokio::test]
async fn a_reload_serves_the_new_certificate_and_keeps_open_connections() {
    let dir = scratch();
    let old_ca = Ca::new("old ca");
    let old_ca_file = old_ca.write(dir.path(), "old-ca.crt");
    let new_ca = Ca::new("new ca");
    let new_ca_file = new_ca.write(dir.path(), "new-ca.crt");
    let server = old_ca.issue(dir.path(), "server", &["localhost", "127.0.0.1"], false);
    let node = start_tls(dir.path(), &server, None, &[]);
    let address = format!("127.0.0.1:{}", node.addr.port());

    let open = Client::connect_tls(
        &address,
        &Tls::from_files(Some(&old_ca_file), None, None).expect("TLS settings"),
    )
    .await
    .expect("connect with the old CA");
    open.head().await.expect("a call before the reload");

    // Renew under the same file names, then ask for the reload.
    let renewed_dir = scratch();
    let renewed = new_ca.issue(
        renewed_dir.path(),
        "server",
        &["localhost", "127.0.0.1"],
        false,
    );
    std::fs::copy(&renewed.cert, &server.cert).expect("replace the certificate");
    std::fs::copy(&renewed.key, &server.key).expect("replace the key");
    hangup(&node);
    wait_for_log(&node, "TLS certificate and key reloaded", 1);

    open.head()
        .await
        .expect("the connection opened before the reload still works");
    assert_eq!(head_over_tls(node.addr, &new_ca_file, None).await, Ok(0));
    let stale = head_over_tls(node.addr, &old_ca_file, None).await;
    assert!(
        stale.is_err(),
        "new connections get the new certificate: {stale:?}"
    );

    // A broken key: the reload fails, says why, and the renewed certificate stays in use.
    let failed_before = node.log().matches("TLS reload failed").count();
    std::fs::write(&server.key, "not a key\n").expect("break the key");
    hangup(&node);
    wait_for_log(&node, "TLS reload failed", failed_before + 1);
    assert_eq!(head_over_tls(node.addr, &new_ca_file, None).await, Ok(0));
}

/// Between nodes, the sender dials `node-<id>.causeway`: a peer whose certificate names
/// another node fails the handshake. The receiver refuses a sender whose client certificate
/// does not name the node its header claims, or names no node at all. Catches a cluster that
/// trusts any certificate of the shared CA as any member.
#[tokio::test]
async fn a_peer_whose_certificate_names_another_node_is_refused() {
    let dir = scratch();
    let ca = Ca::new("cluster ca");
    let ca_file = ca.write(dir.path(), "ca.crt");
    let node1_cert = ca.issue(
        dir.path(),
        "node1",
        &["localhost", "node-1.causeway"],
        false,
    );
    let node1 = start_tls(
        dir.path(),
        &node1_cert,
        Some(&ca_file),
        &["--node-id", "1", "--advertise", "127.0.0.1:1"],
    );

    // The sender's side: the network layer of a node 2 that meant to reach node 7 at node 1's
    // address fails its handshake; meaning node 1, it gets an answer.
    let node2_cert = ca.issue(dir.path(), "node2", &["node-2.causeway"], false);
    let node2_tls = causeway_server::tls::Tls::load(causeway_server::tls::TlsFiles {
        cert: node2_cert.cert.clone(),
        key: node2_cert.key.clone(),
        client_ca: Some(ca_file.clone()),
    })
    .expect("node 2's TLS files load");
    let address = node1.addr.to_string();
    let mut wrong = causeway_server::cluster::network::client(7, &address, None, Some(&node2_tls))
        .expect("a peer client");
    let refused = wrong
        .vote(vote_from(2, 7))
        .await
        .expect_err("node 1 is not node 7");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let mut right = causeway_server::cluster::network::client(1, &address, None, Some(&node2_tls))
        .expect("a peer client");
    match right.vote(vote_from(2, 1)).await {
        Ok(_) => {}
        Err(status) => assert_ne!(
            status.code(),
            tonic::Code::Unavailable,
            "the handshake with node 1 succeeds: {status:?}"
        ),
    }

    // The receiver's side: node 2's certificate sending as node 3, and a client certificate
    // naming no node, are refused before openraft sees the vote.
    let impostor = right
        .vote(vote_from(3, 1))
        .await
        .expect_err("node 2 sending as node 3");
    assert_eq!(
        impostor.code(),
        tonic::Code::PermissionDenied,
        "{impostor:?}"
    );
    assert!(
        impostor.message().contains("node-3.causeway"),
        "{impostor:?}"
    );
    let app_cert = ca.issue(dir.path(), "app", &["app.example"], false);
    let tls = Tls::from_files(Some(&ca_file), Some(&app_cert.cert), Some(&app_cert.key))
        .expect("client TLS settings");
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", node1.addr.port()))
            .expect("a URI")
            .tls_config(tls.config().clone())
            .expect("TLS endpoint")
            .connect()
            .await
            .expect("an application's certificate passes the handshake");
    let mut app = cluster_pb::raft_service_client::RaftServiceClient::new(channel);
    let refused = app
        .vote(vote_from(2, 1))
        .await
        .expect_err("no node certificate");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
}

/// Plaintext on an address other than loopback is refused at start, in one line, unless
/// `--insecure` says it is meant. Catches a server exposed without TLS by a changed address.
#[test]
fn plaintext_beyond_loopback_is_refused_at_start() {
    let dir = scratch();
    let output = Command::new(env!("CARGO_BIN_EXE_causewayd"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--admin-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .expect("run causewayd");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("not loopback"), "{stderr}");
    assert!(stderr.contains("insecure"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing was served");

    let node = Node::start(
        &dir.path().join("data"),
        &["--listen", "0.0.0.0:0", "--insecure"],
    );
    assert!(node.addr.ip().is_unspecified());
}

/// A server certificate that has expired is loaded (the server starts and serves, as etcd and
/// NATS do), and a WARN names its subject and validity window at start and again at every
/// reload. Catches an expired certificate loaded without a word, which leaves operators to
/// learn of it from failing clients.
#[tokio::test]
async fn an_expired_certificate_is_loaded_with_a_warning_at_start_and_reload() {
    let dir = scratch();
    let ca = Ca::new("causeway test ca");
    let expired = ca.issue(dir.path(), "lapsed", &["localhost", "127.0.0.1"], true);
    let node = start_tls(dir.path(), &expired, None, &[]);
    let warning = "the TLS certificate is expired";
    wait_for_log(&node, warning, 1);
    let log = node.log();
    let line = log
        .lines()
        .find(|line| line.contains(warning))
        .expect("the warning's line");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("CN=lapsed"), "the subject: {line}");
    assert!(
        line.contains("2000") && line.contains("2001"),
        "the validity window: {line}"
    );

    hangup(&node);
    wait_for_log(&node, "TLS certificate and key reloaded", 1);
    wait_for_log(&node, warning, 2);
}

fn vote_from(source: u64, target: u64) -> cluster_pb::VoteRequest {
    cluster_pb::VoteRequest {
        header: Some(cluster_pb::Header {
            target_node_id: target,
            source_node_id: source,
            cluster_id: uuid_like(),
        }),
        vote: Some(cluster_pb::Vote {
            node_id: source,
            term: 1,
            committed: false,
        }),
        last_log_id: None,
        leadership_transfer: false,
    }
}

fn uuid_like() -> String {
    "01890000-0000-7000-8000-000000000000".to_string()
}

fn hangup(node: &Node) {
    let status = Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP failed");
}

/// Waits until the node's log holds `needle` at least `count` times.
fn wait_for_log(node: &Node, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.log().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
