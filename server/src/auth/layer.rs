//! The tower layer that authenticates every request of a `causeway.v1` service before tonic
//! decodes it: who it comes from, whether the principal's rate allows it, and whether the
//! principal may call the method in any scope at all ([`METHODS`]). An admitted request carries
//! its [`Caller`] to the handler, which checks each scope the request names.
//!
//! Requests of other services pass untouched: health and reflection are open, and the
//! node-to-node `causeway.cluster.v1.RaftService` checks its peer's mTLS node identity itself.
//! A `causeway.v1` method missing from [`METHODS`] needs `admin` on `*`, so a new RPC fails
//! closed until it has a row (the integration test checks the table against the descriptors).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use governor::clock::{Clock, DefaultClock};
use http::{Request, Response};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{
    Action, Auth, Caller, Credential, Principal, REASON_PRINCIPAL_LIMIT, audit, denial, resolve,
};
use crate::limits::TOKEN_BYTES_MAX;
use crate::status::ERROR_DOMAIN;

/// What a method needs before its handler runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// The action in at least one scope; the handler checks the scopes the request names.
    Somewhere(Action),
    /// The action on every scope (`*`): the operator's methods.
    Everywhere(Action),
}

/// Every method of the public services and what it needs (docs/SECURITY.md has the same
/// table with what the handler checks per scope).
pub const METHODS: &[(&str, Need)] = &[
    (
        "/causeway.v1.EventStoreService/Append",
        Need::Somewhere(Action::Append),
    ),
    (
        "/causeway.v1.EventStoreService/AppendStream",
        Need::Somewhere(Action::Append),
    ),
    (
        "/causeway.v1.EventStoreService/DryRun",
        Need::Somewhere(Action::Append),
    ),
    (
        "/causeway.v1.EventStoreService/Get",
        Need::Somewhere(Action::Read),
    ),
    (
        "/causeway.v1.EventStoreService/ReadEntity",
        Need::Somewhere(Action::Read),
    ),
    (
        "/causeway.v1.EventStoreService/ReadLog",
        Need::Somewhere(Action::Read),
    ),
    (
        "/causeway.v1.EventStoreService/Head",
        Need::Somewhere(Action::Read),
    ),
    (
        "/causeway.v1.EventStoreService/Subscribe",
        Need::Somewhere(Action::Subscribe),
    ),
    (
        "/causeway.v1.EventStoreService/GetAncestors",
        Need::Somewhere(Action::Read),
    ),
    (
        "/causeway.v1.EventStoreService/GetDescendants",
        Need::Somewhere(Action::Read),
    ),
    (
        "/causeway.v1.EventStoreService/GetCorrelation",
        Need::Somewhere(Action::Read),
    ),
    (
        "/causeway.v1.EventStoreService/RegisterGate",
        Need::Somewhere(Action::Gates),
    ),
    (
        "/causeway.v1.EventStoreService/ListGates",
        Need::Somewhere(Action::Gates),
    ),
    (
        "/causeway.v1.EventStoreService/RemoveGate",
        Need::Somewhere(Action::Gates),
    ),
    (
        "/causeway.v1.EventStoreService/VerifyReceipt",
        Need::Somewhere(Action::Read),
    ),
    (
        "/causeway.v1.OperationsService/Backup",
        Need::Everywhere(Action::Admin),
    ),
    (
        "/causeway.v1.OperationsService/Verify",
        Need::Everywhere(Action::Admin),
    ),
    (
        "/causeway.v1.ClusterService/InitCluster",
        Need::Everywhere(Action::Admin),
    ),
    (
        "/causeway.v1.ClusterService/AddLearner",
        Need::Everywhere(Action::Admin),
    ),
    (
        "/causeway.v1.ClusterService/PromoteVoter",
        Need::Everywhere(Action::Admin),
    ),
    (
        "/causeway.v1.ClusterService/RemoveNode",
        Need::Everywhere(Action::Admin),
    ),
    (
        "/causeway.v1.ClusterService/TransferLeader",
        Need::Everywhere(Action::Admin),
    ),
    (
        "/causeway.v1.ClusterService/GetClusterStatus",
        Need::Everywhere(Action::Admin),
    ),
];

/// The path prefix of the services this layer guards.
const GUARDED_PREFIX: &str = "/causeway.v1.";

/// The layer: wrap a service in [`Authenticate`].
#[derive(Clone, Debug)]
pub struct AuthLayer {
    auth: Auth,
}

impl AuthLayer {
    /// A layer that checks requests against `auth`'s policy in force.
    pub fn new(auth: Auth) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone, Debug)]
pub struct Authenticate<S> {
    inner: S,
    auth: Auth,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, Body, ResBody> tower::Service<Request<Body>> for Authenticate<S>
where
    S: tower::Service<Request<Body>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        if !request.uri().path().starts_with(GUARDED_PREFIX) {
            return Box::pin(self.inner.call(request));
        }
        match admit(&self.auth, &request) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

/// The caller of a request, or the status that refuses it.
fn admit<B>(auth: &Auth, request: &Request<B>) -> Result<Caller, Status> {
    let Some(policy) = auth.policy() else {
        return Ok(auth.caller(None));
    };
    let path = request.uri().path();
    let method = path.rsplit('/').next().unwrap_or(path);
    let credential = credential(request).map_err(|detail| {
        refused_credential(auth, method, detail, || {
            Status::unauthenticated(format!("the credentials are not accepted: {detail}"))
        })
    })?;
    let proven = resolve(&policy, &credential).map_err(|rejected| {
        refused_credential(auth, method, &rejected.0, || {
            Status::unauthenticated("the bearer token is not accepted")
        })
    })?;
    let principal = proven.principal.clone();
    check_rate(&principal, method)?;
    let need = METHODS
        .iter()
        .find(|(known, _)| *known == path)
        .map_or(Need::Everywhere(Action::Admin), |(_, need)| *need);
    let allowed = match need {
        Need::Somewhere(action) => principal.may_somewhere(action),
        Need::Everywhere(action) => principal.may_everywhere(action),
    };
    if !allowed {
        let (action, scope) = match need {
            Need::Somewhere(action) => (action, ""),
            Need::Everywhere(action) => (action, "*"),
        };
        audit(&principal.name, method, scope, "denied", action.name());
        return Err(denial(Some(&principal), action, scope));
    }
    Ok(auth.admitted(policy, proven, credential))
}

/// The answer to a request whose credential is refused: `refusal`, audited, while fewer than
/// [`AUTH_FAILURES_PER_SEC`] come in a second; past that RESOURCE_EXHAUSTED with `RetryInfo`
/// and no audit line, so neither guessing nor the audit log can go faster.
///
/// [`AUTH_FAILURES_PER_SEC`]: crate::limits::AUTH_FAILURES_PER_SEC
fn refused_credential(
    auth: &Auth,
    method: &str,
    detail: &str,
    refusal: impl FnOnce() -> Status,
) -> Status {
    let Err(not_until) = auth.failures.check() else {
        audit("-", method, "-", "unauthenticated", detail);
        return refusal();
    };
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    let rate = crate::limits::AUTH_FAILURES_PER_SEC;
    let mut metadata = HashMap::new();
    metadata.insert("limit".to_string(), "AUTH_FAILURES_PER_SEC".to_string());
    metadata.insert("max".to_string(), rate.to_string());
    let mut details = ErrorDetails::with_error_info(REASON_PRINCIPAL_LIMIT, ERROR_DOMAIN, metadata);
    details.set_retry_info(Some(wait));
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "more than AUTH_FAILURES_PER_SEC = {rate} refused credentials a second; retry in {} ms",
            wait.as_millis()
        ),
        details,
    )
}

/// What a request proves itself with: a bearer token or JWT, else the names of a client
/// certificate, else nothing. `Err` says why an `authorization` header is unusable.
fn credential<B>(request: &Request<B>) -> Result<Credential, &'static str> {
    let mut headers = request
        .headers()
        .get_all(http::header::AUTHORIZATION)
        .iter();
    if let Some(header) = headers.next() {
        // Two credentials in one request would be judged by whichever is read first.
        if headers.next().is_some() {
            return Err("the request carries more than one authorization header");
        }
        if header.len() > TOKEN_BYTES_MAX + "Bearer ".len() {
            return Err("the authorization header is over TOKEN_BYTES_MAX");
        }
        let value = header
            .to_str()
            .map_err(|_| "the authorization header is not ASCII")?;
        return match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Ok(Credential::Bearer(Arc::from(token.trim())))
            }
            _ => Err("the authorization header is not `Bearer <token>`"),
        };
    }
    Ok(match certificate_names(request) {
        Some(names) => Credential::Certificate(Arc::from(names)),
        None => Credential::Nothing,
    })
}

/// The DNS subject alternative names of the client certificate the connection presented.
fn certificate_names<B>(request: &Request<B>) -> Option<Vec<String>> {
    let info = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    let leaf = certs.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    Some(cert.valid_dns_names().map(str::to_string).collect())
}

/// Takes one request from the principal's `requests_per_sec` bucket, or refuses it with
/// RESOURCE_EXHAUSTED (reason `PRINCIPAL_LIMIT_EXCEEDED`) and when to retry. Every call takes
/// one at the layer, and each append of an `AppendStream` one more.
pub(crate) fn check_rate(principal: &Principal, method: &str) -> Result<(), Status> {
    let Some(limiter) = &principal.limiter else {
        return Ok(());
    };
    let Err(not_until) = limiter.check() else {
        return Ok(());
    };
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    audit(&principal.name, method, "-", "limited", "requests_per_sec");
    let rate = principal.requests_per_sec.unwrap_or_default();
    let mut metadata = HashMap::new();
    metadata.insert("limit".to_string(), "requests_per_sec".to_string());
    metadata.insert("max".to_string(), rate.to_string());
    let mut details = ErrorDetails::with_error_info(REASON_PRINCIPAL_LIMIT, ERROR_DOMAIN, metadata);
    details.set_retry_info(Some(wait));
    Err(Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "principal {} is over its requests_per_sec = {rate}; retry in {} ms",
            crate::status::echo(&principal.name),
            wait.as_millis()
        ),
        details,
    ))
}
