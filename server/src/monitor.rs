//! The admin HTTP port (`--admin-listen`, loopback by default, off the gRPC port): what an
//! operator's tools read.
//!
//! - `/metrics`: Prometheus text (see `metrics.rs` for what is counted).
//! - `/healthz` (liveness): 200 `ok` unless only a restart can help, else 503 with the reason:
//!   a failed write has made the store refuse writes until it is reopened.
//! - `/readyz` (readiness): 200 `ready` when the node can serve requests, else 503 with the
//!   reason: the store is still opening (recovery reads the disk), it refuses writes, a
//!   cluster member knows no leader (before `cluster init`, or while a minority), or the
//!   server is stopping. Damage the scrubber found (`scrub.rs`) is listed after the verdict
//!   and does not change it.
//!
//! - `/` and `/api/...`: the read-only web console (`console.rs`). The admin port checks no
//!   credentials, so while an auth policy is in force (`--auth-file`) the console is off: every
//!   path but the three above answers 403 and says why (docs/SECURITY.md).
//!
//! The same [`Readiness`] drives gRPC health: [`watch_readiness`] re-checks it every
//! `READINESS_INTERVAL` and sets the server's status (service `""`) by liveness and
//! `causeway.v1.EventStoreService` by readiness, logs each change with its reason, and sets
//! `causeway_ready`. So a probe of `""` restarts only a node a restart can cure, and a node
//! waiting for a leader stays up (and can be initialised) while it takes no traffic.
//!
//! With TLS configured the port serves HTTPS only, with the gRPC port's certificate and, given a
//! client CA, the same demand for a client certificate: the console shows events, so it is no
//! less guarded than the API.
//!
//! The port is bound before the store opens, so `/healthz` answers and `/readyz` says
//! "recovering" while a large log is read at start.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::cluster::node::ClusterNode;
use crate::incoming::{Bounded, BoundedListener};
use crate::limits::{ADMIN_CONNECTIONS_MAX, ADMIN_REQUESTS_MAX, READINESS_INTERVAL};
use crate::live::LiveStore;
use crate::metrics::UPKEEP_INTERVAL;
use crate::pb::event_store_service_server::EventStoreServiceServer;
use crate::pool::Pool;
use crate::service::Service;
use crate::subscribe::Hub;
use crate::tls::{Port, Tls};

/// What a running node is made of, as the admin port reads it.
#[derive(Clone, Debug)]
pub struct Parts {
    /// The store (replaced when a cluster node installs a snapshot).
    pub store: LiveStore,
    /// The cluster this node is a member of; `None` for a single node.
    pub cluster: Option<Arc<ClusterNode>>,
    /// The subscriptions.
    pub hub: Hub,
    /// The bounded blocking pool every store call of the console runs on.
    pub pool: Arc<Pool>,
    /// The receipt signing key's id and public key, when the server signs: the console's
    /// receipt verification checks signatures against it, as `VerifyReceipt` does.
    pub signing_key: Option<(String, [u8; 32])>,
}

/// Whether the node can serve, and why not.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Set once the store is open.
    parts: OnceLock<Parts>,
    /// Set when shutdown begins.
    stopping: std::sync::atomic::AtomicBool,
    /// What the scrubber found: reported, not a reason to stop serving.
    scrub: Arc<crate::scrub::Findings>,
}

impl Readiness {
    /// Records that the store is open and the node assembled.
    pub fn opened(&self, parts: Parts) {
        let _ = self.parts.set(parts);
    }

    /// Records that the server is shutting down.
    pub fn stopping(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Where the scrubber records what it finds.
    pub fn scrub_findings(&self) -> Arc<crate::scrub::Findings> {
        self.scrub.clone()
    }

    /// The node's parts, once the store is open.
    pub fn parts(&self) -> Option<&Parts> {
        self.parts.get()
    }

    /// `Ok` unless only a restart can help (the store refuses writes) or the server is
    /// stopping; otherwise why, in a sentence.
    pub fn live(&self) -> Result<(), String> {
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return Err("shutting down".to_string());
        }
        match self
            .parts
            .get()
            .and_then(|parts| parts.store.get().refusing_writes())
        {
            Some(reason) => Err(format!(
                "the store refuses writes until the server is restarted: {reason}"
            )),
            None => Ok(()),
        }
    }

    /// `Ok` when the node can serve; otherwise why not, in a sentence.
    pub fn check(&self) -> Result<(), String> {
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return Err("shutting down".to_string());
        }
        let parts = self
            .parts
            .get()
            .ok_or_else(|| "recovering: the store is opening".to_string())?;
        if let Some(reason) = parts.store.get().refusing_writes() {
            return Err(format!(
                "the store refuses writes until the server is restarted: {reason}"
            ));
        }
        if let Some(node) = &parts.cluster
            && node.leader().is_none()
        {
            return Err("no leader is known to this cluster member".to_string());
        }
        Ok(())
    }
}

/// The admin port's state.
#[derive(Clone, Debug)]
pub struct Admin {
    /// Whether the node can serve, and its parts once open.
    pub readiness: Arc<Readiness>,
    /// The Prometheus recorder; `None` when another recorder took the process.
    pub metrics: Option<PrometheusHandle>,
    /// Whether the console is served: not while an auth policy is in force, since it would
    /// show every scope's events to whoever reaches the port.
    pub console: bool,
}

/// The admin port's routes.
pub fn router(admin: Admin) -> Router {
    // Probes and scrapes outside the console's bound, so console readers that stall cannot
    // make a healthy node look dead.
    let probes = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(admin.clone());
    if !admin.console {
        return probes.fallback(console_off);
    }
    let console = crate::console::router(admin).layer(
        tower::limit::GlobalConcurrencyLimitLayer::new(ADMIN_REQUESTS_MAX),
    );
    probes.merge(console)
}

/// Every console path while an auth policy is in force.
async fn console_off() -> (StatusCode, &'static str) {
    (
        StatusCode::FORBIDDEN,
        "the console is off: an auth policy (--auth-file) is in force and the admin port checks \
         no credentials; read events through the gRPC API (docs/SECURITY.md)\n",
    )
}

/// Serves the admin port on `listener` until `stopping` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Tls>,
    admin: Admin,
    mut stopping: watch::Receiver<bool>,
) {
    if let Some(handle) = admin.metrics.clone() {
        tokio::spawn(async move {
            let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                upkeep.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let listener = BoundedListener::new(listener, ADMIN_CONNECTIONS_MAX, "admin");
    let stop = async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    };
    let served = match tls {
        None => {
            axum::serve(listener, router(admin))
                .with_graceful_shutdown(stop)
                .await
        }
        Some(tls) => {
            let addr = axum::serve::Listener::local_addr(&listener);
            let connections = tls.accept(listener.into_stream(std::future::pending()), Port::Admin);
            let listener = TlsListener { connections, addr };
            axum::serve(listener, router(admin))
                .with_graceful_shutdown(stop)
                .await
        }
    };
    if let Err(err) = served {
        tracing::error!(%err, "the admin port stopped serving");
    }
}

/// The admin port's connections after their TLS handshake, as axum accepts them.
struct TlsListener {
    connections: ReceiverStream<std::io::Result<TlsStream<Bounded>>>,
    addr: std::io::Result<SocketAddr>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Bounded>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TlsStream<Bounded>, SocketAddr) {
        loop {
            match self.connections.next().await {
                Some(Ok(stream)) => {
                    let peer = stream.get_ref().0.connect_info().remote_addr();
                    let fallback = SocketAddr::from(([0, 0, 0, 0], 0));
                    return (stream, peer.unwrap_or(fallback));
                }
                Some(Err(_)) => continue,
                // The accept loop has ended; axum is shutting down.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.addr {
            Ok(addr) => Ok(*addr),
            Err(err) => Err(std::io::Error::new(err.kind(), err.to_string())),
        }
    }
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    let Some(handle) = admin.metrics.clone() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "another metrics recorder is installed in this process\n".to_string(),
        );
    };
    // Sampling lists the segment files: blocking work, off the async workers.
    let readiness = admin.readiness.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        if let Some(parts) = readiness.parts() {
            crate::metrics::sample(&parts.store, parts.cluster.as_deref(), &parts.hub);
        }
        metrics::gauge!("causeway_ready").set(if readiness.check().is_ok() { 1.0 } else { 0.0 });
        handle.render()
    })
    .await;
    match rendered {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        ),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("sampling metrics failed: {err}\n"),
        ),
    }
}

async fn healthz(State(admin): State<Admin>) -> impl IntoResponse {
    match admin.readiness.live() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not live: {reason}\n"),
        ),
    }
}

async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    let (status, mut answer) = match admin.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    };
    if let Some(damage) = admin.readiness.scrub.summary() {
        answer.push_str(&damage);
        answer.push('\n');
    }
    (status, answer)
}

/// Keeps gRPC health and `causeway_ready` in step with `readiness` until `stopping` turns
/// true; logs each change with its reason.
pub async fn watch_readiness(
    readiness: Arc<Readiness>,
    health: HealthReporter,
    mut stopping: watch::Receiver<bool>,
) {
    let mut was: Option<(Result<(), String>, Result<(), String>)> = None;
    let mut interval = tokio::time::interval(READINESS_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopping.wait_for(|stopping| *stopping) => return,
        }
        let now = (readiness.live(), readiness.check());
        if was.as_ref() == Some(&now) {
            continue;
        }
        let (live, ready) = &now;
        match ready {
            Ok(()) if was.is_some() => tracing::info!("ready: serving again"),
            Ok(()) => {}
            Err(reason) => tracing::warn!(
                reason = reason.as_str(),
                live = live.is_ok(),
                "not ready: health of causeway.v1.EventStoreService is NOT_SERVING"
            ),
        }
        let status = |result: &Result<(), String>| match result {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        health
            .set_service_status(
                <EventStoreServiceServer<Service> as tonic::server::NamedService>::NAME,
                status(ready),
            )
            .await;
        health.set_service_status("", status(live)).await;
        metrics::gauge!("causeway_ready").set(if ready.is_ok() { 1.0 } else { 0.0 });
        was = Some(now);
    }
}
