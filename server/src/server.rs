//! Starting, serving and stopping: the store, the pool, the listener and the gRPC services.
//!
//! [`Server::bind`] first binds the admin HTTP port (`monitor.rs`: metrics, health, the
//! console), so `/readyz` answers while the store opens; then it opens the store (on the pool:
//! recovery reads the disk) and binds the gRPC listener, so the caller learns both addresses
//! before serving (`--listen 127.0.0.1:0` picks a free port). [`Server::serve`] serves
//! `causeway.v1.EventStoreService` (gzip and zstd both ways, message limit
//! `MESSAGE_BYTES_MAX`), `OperationsService` (backups), `grpc.health.v1.Health` (kept in step
//! with readiness), and reflection (`grpc.reflection.v1` and `v1alpha`), every request
//! through the `observe.rs`, `malformed.rs` and `auth/` layers and at most `max_connections` connections open
//! (`incoming.rs`), until the shutdown future resolves.
//!
//! Shutdown, in order: health turns NOT_SERVING; the listener closes; subscriptions end with
//! UNAVAILABLE and where to resume, and a leader's replication streams into a cluster member
//! end; in-flight requests finish (for at most `SHUTDOWN_GRACE`);
//! then the store closes, which lets the writer finish and sync what it has, and the admin
//! port closes last. An append is
//! acknowledged only after its fsync, so nothing acknowledged is lost, however the shutdown
//! ends.

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use causeway_core::{Signer, Store};
use tokio::sync::{oneshot, watch};
use tonic::codec::CompressionEncoding;
use tonic_health::ServingStatus;

use crate::auth::Auth;
use crate::auth::layer::AuthLayer;
use crate::budget::{BudgetLayer, RequestBudget};
use crate::cluster::admin::Admin;
use crate::cluster::node::{ClusterNode, RAFT_DIR};
use crate::cluster::pb::raft_service_server::RaftServiceServer;
use crate::config::{Config, ConfigError};
use crate::incoming::BoundedListener;
use crate::limits::{
    CONNECTION_AGE_GRACE, HTTP2_CONNECTION_WINDOW_BYTES, HTTP2_FRAME_BYTES_MAX,
    HTTP2_HEADER_LIST_BYTES_MAX, HTTP2_LOCAL_ERROR_RESETS_MAX, HTTP2_PENDING_RESETS_MAX,
    HTTP2_STREAM_WINDOW_BYTES, HTTP2_STREAMS_PER_CONNECTION_MAX, KEEPALIVE_INTERVAL,
    KEEPALIVE_TIMEOUT, MESSAGE_BYTES_MAX, RESPONSE_BYTES_MAX, SHUTDOWN_GRACE,
    SIGNING_KEY_FILE_BYTES_MAX, subscribe_reads_max,
};
use crate::live::LiveStore;
use crate::malformed::MalformedLayer;
use crate::monitor::{self, Parts, Readiness};
use crate::observe::ObserveLayer;
use crate::pb;
use crate::pb::cluster_service_server::ClusterServiceServer;
use crate::pb::event_store_service_server::EventStoreServiceServer;
use crate::pool::Pool;
use crate::scrub::Scrubber;
use crate::service::{Service, key_id};
use crate::subscribe::Hub;
use crate::tls::{Port, Tls};

/// Why the server could not start or serve.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is unusable.
    Config(ConfigError),
    /// The pool's threads could not start.
    Threads(std::io::Error),
    /// The signing key file cannot be used.
    SigningKey(String),
    /// The TLS files cannot be used.
    Tls(String),
    /// The policy file cannot be used.
    Auth(String),
    /// The store could not be opened.
    Store(causeway_core::Error),
    /// The cluster node's Raft state could not be opened or started.
    Cluster(std::io::Error),
    /// The listen address could not be bound.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The reflection service rejected the descriptor sets (a build problem).
    Reflection(String),
    /// The transport failed while serving.
    Serve(tonic::transport::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(err) => write!(f, "configuration: {err}"),
            StartError::Threads(err) => write!(f, "starting threads: {err}"),
            StartError::SigningKey(detail) => write!(f, "signing key: {detail}"),
            StartError::Tls(detail) => write!(f, "TLS: {detail}"),
            StartError::Auth(detail) => write!(f, "auth file: {detail}"),
            StartError::Store(err) => write!(f, "opening the store: {err}"),
            StartError::Cluster(err) => write!(f, "starting the cluster node: {err}"),
            StartError::Bind { addr, source } => write!(f, "binding {addr}: {source}"),
            StartError::Reflection(detail) => write!(f, "reflection service: {detail}"),
            StartError::Serve(err) => write!(f, "serving: {err}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A server with its store open and its address bound, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    max_connections: usize,
    /// The bytes of requests every call shares (`budget.rs`).
    budget: RequestBudget,
    /// The age at which a connection is asked to go away, if any.
    max_connection_age: Option<std::time::Duration>,
    /// The scrubber's pace; 0 runs none.
    scrub_bytes_per_sec: u64,
    /// TLS on the gRPC port (and between nodes), when configured.
    tls: Option<Tls>,
    /// Whether answers are compressed for clients that accept it (`Config::compress_responses`).
    compress_responses: bool,
    /// The policy every `causeway.v1` request is checked against (`auth/`).
    auth: Auth,
    /// Stops the admin port, once the store is closed.
    admin_stop: watch::Sender<bool>,
    readiness: Arc<Readiness>,
    store: LiveStore,
    cluster: Option<Arc<ClusterNode>>,
    service: Service,
    stopping: watch::Sender<bool>,
}

impl Server {
    /// Starts the pool, opens the store and binds the listen address. Call it on a tokio
    /// runtime; the store is opened on the pool.
    pub async fn bind(config: &Config) -> Result<Server, StartError> {
        config.check().map_err(StartError::Config)?;
        let tls = match config.tls.clone() {
            None => None,
            Some(files) => {
                let tls = tokio::task::spawn_blocking(move || Tls::load(files))
                    .await
                    .map_err(|err| StartError::Tls(err.to_string()))?
                    .map_err(StartError::Tls)?;
                tokio::spawn(tls.clone().watch());
                Some(tls)
            }
        };
        let auth = match config.auth_file.clone() {
            None => Auth::open(),
            Some(file) => {
                let auth = tokio::task::spawn_blocking(move || Auth::load(file))
                    .await
                    .map_err(|err| StartError::Auth(err.to_string()))?
                    .map_err(StartError::Auth)?;
                tokio::spawn(auth.clone().watch());
                auth
            }
        };
        // The policy guards the client services; the node-to-node service is guarded only by
        // mutual TLS (each peer's certificate names its node id). Without it, anyone who
        // reaches the port can speak Raft to this node.
        let mutual_tls = config
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca.is_some());
        if config.auth_file.is_some() && config.cluster.is_some() && !mutual_tls {
            tracing::warn!(
                "an auth policy is in force but the node-to-node Raft service is not guarded: \
                 it checks peers only by mutual TLS (--tls-cert, --tls-key, --tls-client-ca); \
                 without it any client that reaches the port can send Raft messages"
            );
        }
        // The admin port comes up first, so /readyz can say the store is still opening.
        let readiness = Arc::new(Readiness::default());
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let admin_addr = match config.admin_listen {
            None => None,
            Some(admin_listen) => {
                let bind_error = |source| StartError::Bind {
                    addr: admin_listen,
                    source,
                };
                let listener = tokio::net::TcpListener::bind(admin_listen)
                    .await
                    .map_err(bind_error)?;
                let addr = listener.local_addr().map_err(bind_error)?;
                let admin = monitor::Admin {
                    readiness: readiness.clone(),
                    metrics: crate::metrics::install(),
                    console: config.auth_file.is_none(),
                };
                tokio::spawn(monitor::serve(listener, tls.clone(), admin, admin_stop_rx));
                Some(addr)
            }
        };
        let pool = Arc::new(
            Pool::new(config.pool_threads, config.pool_queue).map_err(StartError::Threads)?,
        );
        let data_dir = config.data_dir.clone();
        let signing_key = config.signing_key.clone();
        let signer = pool
            .run(move || signing_key.as_deref().map(load_signer).transpose())
            .await
            .map_err(|err| StartError::Threads(std::io::Error::other(format!("{err:?}"))))??;
        let (store, cluster) = match &config.cluster {
            None => {
                let store = open_single(&pool, config, signer.clone()).await?;
                (LiveStore::new(store), None)
            }
            Some(cluster) => {
                let node = ClusterNode::start(
                    &data_dir,
                    config.listen,
                    cluster,
                    signer.clone(),
                    tls.clone(),
                )
                .await
                .map_err(StartError::Cluster)?;
                let node = Arc::new(node);
                if let Some(record_denials) = config.record_denials {
                    tokio::spawn(configure_when_leader(node.clone(), record_denials));
                }
                (node.live(), Some(node))
            }
        };
        let head = store.get().head().0;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let (stopping, stopping_rx) = watch::channel(false);
        let hub = Hub::new(
            store.clone(),
            pool.clone(),
            config.max_subscriptions,
            subscribe_reads_max(config.pool_threads),
            store.head(),
            stopping_rx,
        );
        readiness.opened(Parts {
            store: store.clone(),
            cluster: cluster.clone(),
            hub: hub.clone(),
            pool: pool.clone(),
            signing_key: signer.as_ref().map(|s| (key_id(s), s.public_key())),
        });
        let service = Service::new(
            store.clone(),
            cluster.clone(),
            pool,
            config.pool_threads + config.pool_queue,
            hub,
            signer.as_ref(),
        );
        tracing::info!(
            %addr,
            admin_addr = admin_addr.map(|addr| addr.to_string()),
            data_dir = %config.data_dir.display(),
            head,
            durability = ?config.durability,
            node_id = config.cluster.as_ref().map(|cluster| cluster.node_id),
            advertise = config.cluster.as_ref().map(|cluster| cluster.advertise.as_str()),
            tls = tls.is_some(),
            auth = auth.policy().is_some(),
            client_certs_required = tls.as_ref().is_some_and(Tls::requires_client_certs),
            signing_key_id = signer.as_ref().map(key_id),
            signing_public_key = signer.as_ref().map(|signer| hex::encode(signer.public_key())),
            "store open"
        );
        Ok(Server {
            listener,
            addr,
            admin_addr,
            max_connections: config.max_connections,
            budget: RequestBudget::new(
                usize::try_from(config.max_in_flight_request_bytes).unwrap_or(usize::MAX),
            ),
            max_connection_age: config.max_connection_age,
            scrub_bytes_per_sec: config.scrub_bytes_per_sec,
            compress_responses: config.compress_responses,
            tls,
            auth,
            admin_stop,
            readiness,
            store,
            cluster,
            service,
            stopping,
        })
    }

    /// The address the server listens on (with the port chosen, when it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the admin HTTP port listens on, if it has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully (see the module doc) and
    /// closes the store.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        // Every service accepts compressed requests, not just the store's.
        let health_service = health_service
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
        health
            .set_serving::<EventStoreServiceServer<Service>>()
            .await;
        health.set_service_status("", ServingStatus::Serving).await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|err| StartError::Reflection(err.to_string()))?
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|err| StartError::Reflection(err.to_string()))?
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
        let operations = crate::operations::Operations::new(
            self.store.clone(),
            self.cluster.clone(),
            self.service.pool(),
        )
        .await;
        let operations =
            crate::pb::operations_service_server::OperationsServiceServer::new(operations)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd);
        let mut api = EventStoreServiceServer::new(self.service)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RESPONSE_BYTES_MAX);
        if self.compress_responses {
            api = api
                .send_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Zstd);
        }

        let scrubber = match self.scrub_bytes_per_sec {
            0 => None,
            bytes_per_sec => Some(
                Scrubber::start(
                    self.store.clone(),
                    bytes_per_sec,
                    self.readiness.scrub_findings(),
                )
                .map_err(StartError::Threads)?,
            ),
        };
        let stopping = self.stopping;
        let mut grace_started = stopping.subscribe();
        let peers_stopping = stopping.subscribe();
        let mut incoming_stop = stopping.subscribe();
        tokio::spawn(monitor::watch_readiness(
            self.readiness.clone(),
            health.clone(),
            stopping.subscribe(),
        ));
        let readiness = self.readiness.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; finishing requests in flight");
            readiness.stopping();
            health
                .set_not_serving::<EventStoreServiceServer<Service>>()
                .await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            stopping.send_replace(true);
        };
        let incoming = BoundedListener::new(self.listener, self.max_connections, "grpc")
            .into_stream(async move {
                let _ = incoming_stop.wait_for(|stopping| *stopping).await;
            });
        let (peers, admin) = match &self.cluster {
            Some(node) => (
                Some(
                    RaftServiceServer::new(node.peer_service(peers_stopping))
                        .accept_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Zstd)
                        .max_decoding_message_size(MESSAGE_BYTES_MAX)
                        .max_encoding_message_size(MESSAGE_BYTES_MAX),
                ),
                Some({
                    let admin = ClusterServiceServer::new(Admin::new(node.clone()))
                        .accept_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Zstd);
                    if self.compress_responses {
                        admin
                            .send_compressed(CompressionEncoding::Gzip)
                            .send_compressed(CompressionEncoding::Zstd)
                    } else {
                        admin
                    }
                }),
            ),
            None => (None, None),
        };
        // One server for clients and peers alike, so these bounds hold for the node-to-node
        // RaftService too (only the request budget leaves it out; see budget.rs).
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .max_concurrent_streams(HTTP2_STREAMS_PER_CONNECTION_MAX)
            .http2_max_header_list_size(HTTP2_HEADER_LIST_BYTES_MAX)
            .http2_max_pending_accept_reset_streams(Some(HTTP2_PENDING_RESETS_MAX))
            .http2_max_local_error_reset_streams(Some(HTTP2_LOCAL_ERROR_RESETS_MAX));
        if let Some(age) = self.max_connection_age {
            builder = builder
                .max_connection_age(age)
                .max_connection_age_grace(CONNECTION_AGE_GRACE);
        }
        let router = builder
            .layer(ObserveLayer)
            .layer(MalformedLayer {
                clustered: self.cluster.is_some(),
            })
            .layer(AuthLayer::new(self.auth.clone()))
            .layer(BudgetLayer::new(self.budget.clone()))
            .max_frame_size(Some(HTTP2_FRAME_BYTES_MAX))
            .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW_BYTES))
            .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW_BYTES))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(api)
            .add_service(operations)
            .add_optional_service(peers)
            .add_optional_service(admin);
        // One future either way: the TLS path hands tonic the connections whose handshake
        // succeeded, with the certificates they presented.
        let serving = async move {
            match &self.tls {
                None => router.serve_with_incoming_shutdown(incoming, signal).await,
                Some(tls) => {
                    let incoming = tls.accept(incoming, Port::Grpc);
                    router.serve_with_incoming_shutdown(incoming, signal).await
                }
            }
        };
        let grace = async {
            // Resolves only once shutdown has begun and the grace period is over.
            let _ = grace_started.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let served = tokio::select! {
            served = serving => served.map_err(StartError::Serve),
            () = grace => {
                tracing::warn!(
                    grace_s = SHUTDOWN_GRACE.as_secs(),
                    "requests still in flight after the grace period; closing the store anyway"
                );
                Ok(())
            }
        };
        if let Some(scrubber) = scrubber {
            let _ = tokio::task::spawn_blocking(move || scrubber.stop()).await;
        }
        if let Some(node) = self.cluster {
            node.shutdown().await;
        }
        close_store(self.store.get()).await;
        self.admin_stop.send_replace(true);
        served
    }
}

/// Opens a single node's store (on the pool: recovery reads the disk), after checking that the
/// data directory is not a cluster member's, and applies `record_denials` if it differs.
async fn open_single(
    pool: &Pool,
    config: &Config,
    signer: Option<Signer>,
) -> Result<Arc<Store>, StartError> {
    let data_dir = config.data_dir.clone();
    let store_config = causeway_core::Config {
        durability: config.durability.into(),
        signer,
        writer_spin: config.writer_spin,
        ..causeway_core::Config::default()
    };
    let record_denials = config.record_denials;
    pool.run(move || {
        if data_dir.join(RAFT_DIR).exists() {
            return Err(StartError::Config(ConfigError(format!(
                "{} holds a cluster member's state (raft/); start it with its --node-id",
                data_dir.display()
            ))));
        }
        let store = Store::open(&data_dir, store_config).map_err(StartError::Store)?;
        // The setting lives in the log; the flag only changes it, once, when it differs.
        let mut settings = store.settings();
        if let Some(record_denials) = record_denials
            && record_denials != settings.record_denials
        {
            settings.record_denials = record_denials;
            store.configure(settings).map_err(StartError::Store)?;
        }
        Ok::<_, StartError>(Arc::new(store))
    })
    .await
    .map_err(|err| StartError::Threads(std::io::Error::other(format!("{err:?}"))))?
}

/// Writes `record_denials` to the log once this node leads, if the log says otherwise: a log
/// setting is changed through the log, by the leader, like any write.
async fn configure_when_leader(node: Arc<ClusterNode>, record_denials: bool) {
    loop {
        if node.check_leader().is_ok() {
            let store = node.live().get();
            let mut settings = store.settings();
            if settings.record_denials == record_denials {
                return;
            }
            settings.record_denials = record_denials;
            match store.stamp_settings(settings) {
                Ok(command) => match node.write(command).await {
                    Ok(_) => {
                        tracing::info!(record_denials, "record_denials written to the log");
                        return;
                    }
                    Err(err) => tracing::warn!(?err, "writing record_denials; retrying"),
                },
                Err(err) => tracing::warn!(%err, "stamping record_denials; retrying"),
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Closes the store on a plain thread (it joins the writer, which syncs what it has), and logs
/// the outcome.
async fn close_store(store: Arc<Store>) {
    let (done, closed) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("causeway-close".to_string())
        .spawn(move || {
            let result = store.close();
            let _ = done.send(result);
        });
    if let Err(err) = spawned {
        tracing::error!(%err, "could not start a thread to close the store; it closes on exit");
        return;
    }
    match closed.await {
        Ok(Ok(())) => tracing::info!("store closed; every acknowledged append is on disk"),
        Ok(Err(err)) => tracing::error!(%err, "closing the store failed"),
        Err(_) => tracing::error!("the thread closing the store panicked"),
    }
}

/// Reads an Ed25519 secret key: 64 hex digits, surrounding whitespace ignored.
fn load_signer(path: &Path) -> Result<Signer, StartError> {
    let fail = |detail: String| StartError::SigningKey(format!("{}: {detail}", path.display()));
    // Read at most one byte past the bound, so a FIFO or /dev/zero given as the key cannot
    // make the server read forever (their metadata reports no size).
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(SIGNING_KEY_FILE_BYTES_MAX + 1)
                .read_to_string(&mut text)
        })
        .map_err(|err| fail(err.to_string()))?;
    if text.len() as u64 > SIGNING_KEY_FILE_BYTES_MAX {
        return Err(fail(format!(
            "over SIGNING_KEY_FILE_BYTES_MAX = {SIGNING_KEY_FILE_BYTES_MAX} bytes"
        )));
    }
    let hex = text.trim();
    if hex.len() != 64 || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(fail(
            "expected 64 hex digits (a 32-byte Ed25519 secret key)".to_string(),
        ));
    }
    let mut secret = [0u8; 32];
    hex::decode_to_slice(hex, &mut secret)
        .map_err(|_| fail("expected 64 hex digits (a 32-byte Ed25519 secret key)".to_string()))?;
    let unnamed = Signer::new("", secret);
    Ok(Signer::new(key_id(&unnamed), secret))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
