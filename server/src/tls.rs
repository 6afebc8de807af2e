//! TLS on both ports and between nodes: the certificate, key and client CA files, loaded into
//! rustls configurations that are swapped whole when the files change.
//!
//! - **Loading.** `--tls-cert` (the chain, leaf first) and `--tls-key` are PEM files, parsed
//!   with `rustls-pki-types`; `--tls-client-ca` (PEM, one or more CA certificates) makes client
//!   certificates required and checked against it. A key that does not match the certificate,
//!   a file over `TLS_FILE_BYTES_MAX`, one that is not a regular file (a FIFO would block the
//!   reload for good), or a file with no certificate is refused, naming the file.
//! - **Reload.** SIGHUP, or a change of a file's modification time, length, inode or change
//!   time (polled every `TLS_RELOAD_POLL_INTERVAL`), loads the files again. A load that
//!   succeeds replaces the material for every connection made after it; connections already
//!   open keep the configuration they were accepted with, so nothing is dropped. A load that
//!   fails keeps the old material and logs why (a certificate renewed before its key is
//!   written is caught by the next poll, once the key has changed too).
//! - **Handshakes** run in a task per connection, bounded by `TLS_HANDSHAKE_TIMEOUT`, so a slow
//!   client never holds up the accept loop; a failed handshake is logged and its permit freed.
//! - **Node identity.** A cluster node's certificate names its node id as the DNS name
//!   `node-<id>.causeway` ([`node_name`]), beside the names clients use. Peer traffic is mutual
//!   TLS with this node's certificate and the client CA as the only root: the sender checks the
//!   receiver's certificate names the node it meant to reach, and the receiver checks the
//!   sender's names the node its requests claim to come from (`cluster/rpc.rs`).
//! - **Validity.** A certificate that is expired or not yet valid is loaded all the same, as
//!   etcd and NATS do: refusing to start would turn a lapsed renewal into an outage of every
//!   node at once, while the peers and clients that check dates refuse it anyway. Each load (at
//!   start and at every reload) logs a WARN naming the leaf's subject and validity window, and
//!   `causeway_tls_certificate_expiry_seconds` exports the seconds left (negative once expired)
//!   so an alert fires before clients start failing.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::incoming::Bounded;
use crate::limits::{TLS_FILE_BYTES_MAX, TLS_HANDSHAKE_TIMEOUT, TLS_RELOAD_POLL_INTERVAL};

/// The DNS name suffix that marks a node identity in a certificate: node 3 is
/// `node-3.causeway`.
pub const NODE_NAME_SUFFIX: &str = ".causeway";

/// The DNS name a node's certificate carries to prove it is node `node_id`.
pub fn node_name(node_id: u64) -> String {
    format!("node-{node_id}{NODE_NAME_SUFFIX}")
}

/// The `notAfter` of the certificate last loaded in this process, in Unix seconds;
/// `i64::MIN` before any load.
static NOT_AFTER_UNIX_SECS: AtomicI64 = AtomicI64::new(i64::MIN);

/// Seconds from `now` until the certificate last loaded expires (negative once it has), or
/// `None` when no certificate was loaded. Read when `/metrics` is scraped, so the value stays
/// current between reloads.
pub fn certificate_expiry_seconds(now: SystemTime) -> Option<f64> {
    let not_after = NOT_AFTER_UNIX_SECS.load(Ordering::Relaxed);
    if not_after == i64::MIN {
        return None;
    }
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    };
    Some(not_after as f64 - now)
}

/// The validity of a leaf certificate: its subject and window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validity {
    /// The subject, as `CN=...` and the other attributes.
    pub subject: String,
    /// `notBefore`, in Unix seconds.
    pub not_before: i64,
    /// `notAfter`, in Unix seconds.
    pub not_after: i64,
    /// `notBefore` as the certificate states it (`Jan  1 00:00:00 2000 +00:00`).
    pub not_before_text: String,
    /// `notAfter` as the certificate states it.
    pub not_after_text: String,
}

impl Validity {
    /// Reads `cert` (DER); an error says what could not be parsed.
    pub fn of(cert: &CertificateDer<'_>) -> Result<Validity, String> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|err| format!("cannot parse the certificate: {err}"))?;
        let window = parsed.validity();
        Ok(Validity {
            subject: parsed.subject().to_string(),
            not_before: window.not_before.timestamp(),
            not_after: window.not_after.timestamp(),
            not_before_text: window.not_before.to_string(),
            not_after_text: window.not_after.to_string(),
        })
    }

    /// Why the certificate is out of date at `now` (Unix seconds), or `None` when it is in
    /// date.
    pub fn problem_at(&self, now: i64) -> Option<&'static str> {
        if now > self.not_after {
            Some("expired")
        } else if now < self.not_before {
            Some("not yet valid")
        } else {
            None
        }
    }
}

/// Logs a WARN when the leaf of `chain` (loaded from `path`) is out of date, and records its
/// `notAfter` for [`certificate_expiry_seconds`]. A certificate that cannot be parsed here was
/// already accepted by rustls, so only a WARN says so.
fn check_validity(chain: &[CertificateDer<'static>], path: &Path) {
    let Some(leaf) = chain.first() else { return };
    let validity = match Validity::of(leaf) {
        Ok(validity) => validity,
        Err(err) => {
            tracing::warn!(
                file = %path.display(),
                error = %err,
                "cannot read the TLS certificate's validity"
            );
            return;
        }
    };
    NOT_AFTER_UNIX_SECS.store(validity.not_after, Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    if let Some(problem) = validity.problem_at(now) {
        tracing::warn!(
            file = %path.display(),
            subject = %validity.subject,
            not_before = %validity.not_before_text,
            not_after = %validity.not_after_text,
            "the TLS certificate is {problem}: it is valid from {} to {}; peers and clients \
             that check dates will refuse it until it is renewed",
            validity.not_before_text,
            validity.not_after_text,
        );
    }
}

/// The TLS files a server is started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates, PEM; when given, every client must present a certificate they signed,
    /// and cluster peers are trusted through them alone.
    pub client_ca: Option<PathBuf>,
}

/// One load of the files: a configuration per use.
#[derive(Debug)]
pub struct Material {
    /// The gRPC port's (ALPN `h2`).
    pub grpc: Arc<ServerConfig>,
    /// The admin HTTP port's (ALPN `http/1.1`), with the same certificate and client check.
    pub admin: Arc<ServerConfig>,
    /// For connections to other nodes: this certificate as the client's, the client CA as the
    /// only root. `None` without a client CA.
    pub peer: Option<Arc<ClientConfig>>,
}

/// Which port a handshake is for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Port {
    /// The gRPC port.
    Grpc,
    /// The admin HTTP port.
    Admin,
}

impl Port {
    fn name(self) -> &'static str {
        match self {
            Port::Grpc => "grpc",
            Port::Admin => "admin",
        }
    }
}

/// The files and the material last loaded from them, shared by both ports, the peer network and
/// the reloader.
#[derive(Clone, Debug)]
pub struct Tls {
    files: TlsFiles,
    current: Arc<watch::Sender<Arc<Material>>>,
}

impl Tls {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let material = load(&files)?;
        Ok(Tls {
            files,
            current: Arc::new(watch::Sender::new(Arc::new(material))),
        })
    }

    /// The material in force now.
    pub fn current(&self) -> Arc<Material> {
        self.current.borrow().clone()
    }

    /// Whether clients (and peers) must present a certificate.
    pub fn requires_client_certs(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Loads the files again; on success new connections use them, on failure nothing changes.
    pub fn reload(&self) -> Result<(), String> {
        let material = load(&self.files)?;
        self.current.send_replace(Arc::new(material));
        Ok(())
    }

    /// Reloads on SIGHUP and when a file changes, until the process ends; logs each outcome.
    pub async fn watch(self) {
        let watched = self.clone();
        let mut trigger =
            crate::reload::Trigger::new("TLS files", TLS_RELOAD_POLL_INTERVAL, move || {
                watched.files()
            });
        loop {
            let why = trigger.next().await;
            let tls = self.clone();
            let reloaded = tokio::task::spawn_blocking(move || tls.reload()).await;
            match reloaded {
                Ok(Ok(())) => tracing::info!(why, "TLS certificate and key reloaded"),
                Ok(Err(err)) => tracing::warn!(
                    why,
                    error = %err,
                    "TLS reload failed; the certificate loaded before stays in use"
                ),
                Err(err) => tracing::error!(%err, "the TLS reload task failed"),
            }
        }
    }

    /// The certificate, the key and the client CA, the files a reload reads.
    fn files(&self) -> Vec<PathBuf> {
        [
            Some(&self.files.cert),
            Some(&self.files.key),
            self.files.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }

    /// The connections of `incoming` once their handshake for `port` has succeeded, with the
    /// material in force when each arrived. Ends when `incoming` does or the receiver is gone.
    pub fn accept(
        &self,
        mut incoming: impl tokio_stream::Stream<Item = io::Result<Bounded>> + Send + Unpin + 'static,
        port: Port,
    ) -> ReceiverStream<io::Result<TlsStream<Bounded>>> {
        let (sender, receiver) = mpsc::channel(16);
        let tls = self.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = incoming.next() => next,
                    () = sender.closed() => return,
                };
                let conn = match next {
                    Some(Ok(conn)) => conn,
                    Some(Err(_)) => continue,
                    None => return,
                };
                let config = match port {
                    Port::Grpc => tls.current().grpc.clone(),
                    Port::Admin => tls.current().admin.clone(),
                };
                let sender = sender.clone();
                tokio::spawn(async move {
                    let peer = conn.connect_info().remote_addr();
                    let handshake = TlsAcceptor::from(config).accept(conn);
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send(Ok(stream)).await;
                        }
                        Ok(Err(err)) => tracing::info!(
                            port = port.name(),
                            peer = peer.map(|peer| peer.to_string()),
                            %err,
                            "TLS handshake failed"
                        ),
                        Err(_) => tracing::info!(
                            port = port.name(),
                            peer = peer.map(|peer| peer.to_string()),
                            timeout_ms = TLS_HANDSHAKE_TIMEOUT.as_millis() as u64,
                            "TLS handshake not finished in time"
                        ),
                    }
                });
            }
        });
        ReceiverStream::new(receiver)
    }
}

/// Whether `cert` (DER) names node `node_id` ([`node_name`]) among its DNS names.
pub fn names_node(cert: &CertificateDer<'_>, node_id: u64) -> bool {
    let Ok(name) = ServerName::try_from(node_name(node_id)) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
}

/// Reads a PEM file of at most `TLS_FILE_BYTES_MAX` bytes.
fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    crate::reload::read_bounded(path, TLS_FILE_BYTES_MAX, "TLS_FILE_BYTES_MAX")
        .map_err(|err| format!("{what} {err}"))
}

/// The certificates of a PEM file; at least one.
fn certificates(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{what} {}: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM CERTIFICATE block",
            path.display()
        ));
    }
    Ok(certs)
}

fn load(files: &TlsFiles) -> Result<Material, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("tls_cert", &files.cert)?;
    let key_bytes = read("tls_key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|err| format!("tls_key {}: {err}", files.key.display()))?;
    let roots = match &files.client_ca {
        None => None,
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("tls_client_ca", path)? {
                roots
                    .add(cert)
                    .map_err(|err| format!("tls_client_ca {}: {err}", path.display()))?;
            }
            Some(Arc::new(roots))
        }
    };
    let server = |alpn: &[u8]| -> Result<Arc<ServerConfig>, String> {
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?;
        let builder = match &roots {
            None => builder.with_no_client_auth(),
            Some(roots) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(|err| format!("tls_client_ca: {err}"))?,
            ),
        };
        let mut config = builder
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|err| {
                format!(
                    "tls_cert {} with tls_key {}: {err}",
                    files.cert.display(),
                    files.key.display()
                )
            })?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(config))
    };
    let peer = match &roots {
        None => None,
        Some(roots) => {
            let mut config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|err| err.to_string())?
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|err| format!("tls_cert as a client certificate: {err}"))?;
            config.alpn_protocols = vec![b"h2".to_vec()];
            Some(Arc::new(config))
        }
    };
    let material = Material {
        grpc: server(b"h2")?,
        admin: server(b"http/1.1")?,
        peer,
    };
    // Only material that is put in force is reported.
    check_validity(&chain, &files.cert);
    Ok(material)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, date_time_ymd};

    /// A self-signed certificate and its key for `common_name`, valid from `from` to `to`
    /// (years, January 1st), written to `dir`.
    fn issue(dir: &Path, common_name: &str, from: i32, to: i32) -> TlsFiles {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.not_before = date_time_ymd(from, 1, 1);
        params.not_after = date_time_ymd(to, 1, 1);
        let key = KeyPair::generate().expect("a key");
        let cert = params.self_signed(&key).expect("a certificate");
        let files = TlsFiles {
            cert: dir.join(format!("{common_name}.crt")),
            key: dir.join(format!("{common_name}.key")),
            client_ca: None,
        };
        std::fs::write(&files.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
        files
    }

    #[test]
    fn validity_names_the_subject_and_window_and_the_gauge_counts_down() {
        let dir = tempfile::tempdir().expect("a directory");
        let expired = issue(dir.path(), "lapsed", 2000, 2001);
        let chain = certificates("tls_cert", &expired.cert).expect("the certificate");
        let validity = Validity::of(&chain[0]).expect("readable");
        assert_eq!(validity.subject, "CN=lapsed");
        assert_eq!(validity.not_before, 946_684_800);
        assert_eq!(validity.not_after, 978_307_200);
        assert!(validity.not_after_text.contains("2001"), "{validity:?}");
        assert_eq!(validity.problem_at(1_000_000_000), Some("expired"));
        assert_eq!(validity.problem_at(900_000_000), Some("not yet valid"));
        assert_eq!(validity.problem_at(960_000_000), None);

        // Loaded all the same; the gauge says how long ago it expired.
        Tls::load(expired).expect("an expired certificate still loads");
        let now = UNIX_EPOCH + std::time::Duration::from_secs(978_307_200 + 60);
        assert_eq!(certificate_expiry_seconds(now), Some(-60.0));

        let future = issue(dir.path(), "early", 2090, 2091);
        Tls::load(future).expect("a not-yet-valid certificate still loads");
        let seconds = certificate_expiry_seconds(SystemTime::now()).expect("a certificate");
        assert!(seconds > 60.0 * 365.0 * 86_400.0, "{seconds}");
    }
}
