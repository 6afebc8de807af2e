//! Authentication and permissions: who a request comes from, and what it may do in which scope.
//!
//! - **Principals.** The policy file (`--auth-file`, [`policy`]) lists principals and, per
//!   principal, actions (`append`, `read`, `subscribe`, `gates`, `admin`) on scope patterns. A
//!   request proves who it is with `authorization: Bearer <token>` (a token whose blake3 hash
//!   the file lists, or a JWT checked against the file's JWKS, whose `sub` names the
//!   principal), or with a client certificate whose CN or a DNS SAN the file maps to a
//!   principal. With no credentials it is the anonymous principal, if the file has one.
//! - **Where it is checked.** The [`layer`] authenticates every request of a `causeway.v1`
//!   service, applies the principal's rate limit, and refuses a method the principal may not
//!   call in any scope (every admin method needs `admin` on `*`); it hands the handler a
//!   [`Caller`]. The handlers check each scope the request names before touching the store, so
//!   a denial is the same for a scope that exists and one that does not, and drop, event by
//!   event, what the caller may not read from reads across scopes and from subscriptions.
//!   The node-to-node `causeway.cluster.v1` service is left to its mTLS node identity; health
//!   and reflection stay open.
//! - **Answers.** Bad or unknown credentials, and anything the anonymous principal may not do,
//!   are UNAUTHENTICATED; a known principal without the permission gets PERMISSION_DENIED.
//! - **Without a policy file** every request is [`Caller::everyone`]: today's behaviour, kept so
//!   a laptop needs no setup (plaintext beyond loopback still needs `--insecure`).
//! - **Reload.** SIGHUP or a change of the file (or of its JWKS file) loads it again; a file
//!   that does not load keeps the policy in force and logs why. Every new call on any
//!   connection, open or new, is checked against the reloaded policy; an open subscription
//!   proves its credential again before its next page, and ends (UNAUTHENTICATED or
//!   PERMISSION_DENIED) when the new policy refuses it, or once its JWT has expired. Other calls in flight finish under the
//!   policy they were admitted with.
//! - **Audit.** Failures, denials, gate changes and reloads are logged to the tracing target
//!   `causeway::audit` with `principal`, `method`, `scope` and `outcome`; never a token or a
//!   payload.

pub mod layer;
pub mod policy;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use policy::{Action, Policy, Principal, Proven};

use crate::limits::AUTH_RELOAD_POLL_INTERVAL;
use crate::status::{ERROR_DOMAIN, echo};

/// Open subscriptions per principal name.
type OpenCounts = Arc<Mutex<HashMap<String, usize>>>;

/// The tracing target of security events.
pub const AUDIT_TARGET: &str = "causeway::audit";
/// The `ErrorInfo` reason of a refusal over a principal's own limit.
pub const REASON_PRINCIPAL_LIMIT: &str = "PRINCIPAL_LIMIT_EXCEEDED";

/// Logs one security event to [`AUDIT_TARGET`].
pub fn audit(principal: &str, method: &str, scope: &str, outcome: &str, detail: &str) {
    tracing::info!(
        target: AUDIT_TARGET,
        principal,
        method,
        scope,
        outcome,
        detail,
        "audit"
    );
}

/// The policy in force (or none), shared by the layer, the handlers and the reloader.
#[derive(Clone, Debug)]
pub struct Auth {
    file: Option<PathBuf>,
    current: Arc<watch::Sender<Option<Arc<Policy>>>>,
    /// Open subscriptions per principal name, kept across reloads.
    open: OpenCounts,
    /// Refused credentials, over the whole server ([`AUTH_FAILURES_PER_SEC`]).
    pub(crate) failures: Arc<governor::DefaultDirectRateLimiter>,
}

fn failures_limiter() -> Arc<governor::DefaultDirectRateLimiter> {
    let per_sec = std::num::NonZeroU32::new(crate::limits::AUTH_FAILURES_PER_SEC)
        .expect("AUTH_FAILURES_PER_SEC is not zero");
    Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(
        per_sec,
    )))
}

impl Auth {
    /// No policy: every request may do everything.
    pub fn open() -> Auth {
        Auth {
            file: None,
            current: Arc::new(watch::Sender::new(None)),
            open: Arc::default(),
            failures: failures_limiter(),
        }
    }

    /// Loads the policy file; an error names the file and the entry.
    pub fn load(file: PathBuf) -> Result<Auth, String> {
        let policy = Policy::load(&file)?;
        Ok(Auth {
            file: Some(file),
            current: Arc::new(watch::Sender::new(Some(Arc::new(policy)))),
            open: Arc::default(),
            failures: failures_limiter(),
        })
    }

    /// The policy in force; `None` without a policy file.
    pub fn policy(&self) -> Option<Arc<Policy>> {
        self.current.borrow().clone()
    }

    /// Loads the file again; on success it replaces the policy, on failure nothing changes.
    pub fn reload(&self) -> Result<(), String> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let policy = Policy::load(file)?;
        self.current.send_replace(Some(Arc::new(policy)));
        Ok(())
    }

    /// A caller with no policy in force: it may do everything.
    pub fn caller(&self, principal: Option<Arc<Principal>>) -> Caller {
        Caller {
            principal,
            open: self.open.clone(),
            admitted: None,
        }
    }

    /// A caller admitted under `policy` as `proven`'s principal, proven by `credential`.
    fn admitted(&self, policy: Arc<Policy>, proven: Proven, credential: Credential) -> Caller {
        Caller {
            principal: Some(proven.principal),
            open: self.open.clone(),
            admitted: Some(Admitted {
                auth: self.clone(),
                policy,
                credential,
                expires_at_secs: proven.expires_at_secs,
            }),
        }
    }

    /// Reloads on SIGHUP and when the file (or its JWKS file) changes, until the process ends;
    /// each outcome goes to the audit log.
    pub async fn watch(self) {
        if self.file.is_none() {
            return;
        }
        let watched = self.clone();
        let mut trigger =
            crate::reload::Trigger::new("the policy", AUTH_RELOAD_POLL_INTERVAL, move || {
                watched.files()
            });
        loop {
            let why = trigger.next().await;
            let auth = self.clone();
            match tokio::task::spawn_blocking(move || auth.reload()).await {
                Ok(Ok(())) => audit("-", "reload", "-", "reloaded", why),
                Ok(Err(err)) => tracing::warn!(
                    target: AUDIT_TARGET,
                    principal = "-",
                    method = "reload",
                    scope = "-",
                    outcome = "reload_failed",
                    detail = why,
                    error = %err,
                    "the policy file did not load; the policy loaded before stays in force"
                ),
                Err(err) => tracing::error!(%err, "the policy reload task failed"),
            }
        }
    }

    /// The policy file and its JWKS file, the files a reload reads.
    fn files(&self) -> Vec<std::path::PathBuf> {
        let jwks = self.policy().and_then(|policy| policy.jwks_file.clone());
        [self.file.clone(), jwks].into_iter().flatten().collect()
    }
}

/// Who a request comes from, as the layer established it: the handlers ask it before every
/// scope they touch.
#[derive(Clone, Debug)]
pub struct Caller {
    /// `None`: the server has no policy file, and the caller may do everything.
    principal: Option<Arc<Principal>>,
    open: OpenCounts,
    /// How it was admitted, so a long call can be checked again after a reload.
    admitted: Option<Admitted>,
}

/// The policy a caller was admitted under and what it proved itself with.
#[derive(Clone, Debug)]
struct Admitted {
    auth: Auth,
    policy: Arc<Policy>,
    credential: Credential,
    /// When the credential (a JWT) stops being valid, in Unix seconds.
    expires_at_secs: Option<u64>,
}

/// What a request proved itself with, kept so it can be checked against a reloaded policy.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A bearer token or JWT.
    Bearer(Arc<str>),
    /// The DNS names of a client certificate.
    Certificate(Arc<[String]>),
    /// Nothing: the anonymous principal.
    Nothing,
}

/// The principal `credential` proves under `policy`; a certificate the policy does not map,
/// and no credential at all, are the anonymous principal (with no rights when the policy grants
/// anonymous none).
pub fn resolve(policy: &Policy, credential: &Credential) -> Result<Proven, policy::Rejected> {
    let anonymous = || {
        policy
            .anonymous()
            .cloned()
            .unwrap_or_else(|| Arc::new(Principal::none()))
    };
    let principal = match credential {
        Credential::Bearer(token) => return policy.bearer(token),
        Credential::Certificate(names) => policy.subject(names).unwrap_or_else(anonymous),
        Credential::Nothing => anonymous(),
    };
    Ok(Proven {
        principal,
        expires_at_secs: None,
    })
}

impl Caller {
    /// A caller who may do everything (no policy file).
    pub fn everyone() -> Caller {
        Auth::open().caller(None)
    }

    /// The caller of a request the layer admitted. A request that did not pass the layer has
    /// none, and gets a caller with no rights at all: the check fails closed.
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(|| Caller {
                principal: Some(Arc::new(Principal::none())),
                open: Arc::default(),
                admitted: None,
            })
    }

    /// For a call that outlives a reload (a subscription): once the policy has changed, proves
    /// the caller's credential again and takes the principal it now maps to. A credential the
    /// new policy refuses is UNAUTHENTICATED; a principal left without `action` anywhere is
    /// denied. Cheap while the policy is unchanged (one pointer comparison).
    pub fn refresh(&mut self, method: &str, action: Action) -> Result<(), Status> {
        let Some(admitted) = &mut self.admitted else {
            return Ok(());
        };
        if let Some(expires_at_secs) = admitted.expires_at_secs {
            let now_secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            if now_secs > expires_at_secs {
                audit("-", method, "-", "unauthenticated", "the JWT expired");
                return Err(Status::unauthenticated("the JWT has expired"));
            }
        }
        let Some(current) = admitted.auth.policy() else {
            return Ok(());
        };
        if Arc::ptr_eq(&current, &admitted.policy) {
            return Ok(());
        }
        let proven = resolve(&current, &admitted.credential).map_err(|rejected| {
            audit("-", method, "-", "unauthenticated", &rejected.0);
            Status::unauthenticated("the credentials are no longer accepted by the policy")
        })?;
        let principal = proven.principal;
        admitted.policy = current;
        admitted.expires_at_secs = proven.expires_at_secs;
        self.principal = Some(principal.clone());
        if !principal.may_somewhere(action) {
            return Err(self.denied(method, action, ""));
        }
        Ok(())
    }

    /// Takes one request from the principal's `requests_per_sec` bucket (for each append of a
    /// stream, beyond the call the layer counted), or refuses it as the layer would.
    pub fn check_rate(&self, method: &str) -> Result<(), Status> {
        match &self.principal {
            Some(principal) => layer::check_rate(principal, method),
            None => Ok(()),
        }
    }

    /// The principal's name, for the audit log.
    pub fn name(&self) -> &str {
        match &self.principal {
            None => "-",
            Some(principal) => &principal.name,
        }
    }

    /// Whether the caller may do `action` in `scope`.
    pub fn may(&self, action: Action, scope: &str) -> bool {
        self.principal
            .as_ref()
            .is_none_or(|principal| principal.may(action, scope))
    }

    /// Whether the caller may do `action` in every scope.
    pub fn may_everywhere(&self, action: Action) -> bool {
        self.principal
            .as_ref()
            .is_none_or(|principal| principal.may_everywhere(action))
    }

    /// Refuses unless the caller may do `action` in `scope`; the refusal is the same whether
    /// the scope exists or not, and is audited.
    pub fn require(&self, method: &str, action: Action, scope: &str) -> Result<(), Status> {
        if self.may(action, scope) {
            return Ok(());
        }
        Err(self.denied(method, action, scope))
    }

    /// Refuses unless the caller may do `action` in every scope.
    pub fn require_everywhere(&self, method: &str, action: Action) -> Result<(), Status> {
        if self.may_everywhere(action) {
            return Ok(());
        }
        Err(self.denied(method, action, "*"))
    }

    /// The refusal of `action` in `scope`, audited: UNAUTHENTICATED for the anonymous
    /// principal (credentials would help), PERMISSION_DENIED for anyone else.
    pub fn denied(&self, method: &str, action: Action, scope: &str) -> Status {
        audit(self.name(), method, scope, "denied", action.name());
        denial(self.principal.as_deref(), action, scope)
    }

    /// Takes one of the principal's subscription slots, given back when the slot drops.
    pub fn open_subscription(&self) -> Result<SubscriptionSlot, Status> {
        let Some(principal) = &self.principal else {
            return Ok(SubscriptionSlot { held: None });
        };
        let mut open = self.open.lock().expect("the counts lock is never poisoned");
        let count = open.entry(principal.name.clone()).or_insert(0);
        if let Some(max) = principal.subscriptions_max
            && *count >= max
        {
            audit(
                &principal.name,
                "Subscribe",
                "-",
                "limited",
                "subscriptions_max",
            );
            let mut metadata = HashMap::new();
            metadata.insert("limit".to_string(), "subscriptions_max".to_string());
            metadata.insert("max".to_string(), max.to_string());
            return Err(Status::with_error_details(
                Code::ResourceExhausted,
                format!(
                    "principal {} has {max} subscriptions open, its subscriptions_max; close \
                     one first",
                    echo(&principal.name)
                ),
                ErrorDetails::with_error_info(REASON_PRINCIPAL_LIMIT, ERROR_DOMAIN, metadata),
            ));
        }
        *count += 1;
        Ok(SubscriptionSlot {
            held: Some((principal.name.clone(), self.open.clone())),
        })
    }
}

/// The status for a caller that may not do `action` in `scope` (`*`: in every scope; `""`: in
/// any scope at all).
pub fn denial(principal: Option<&Principal>, action: Action, scope: &str) -> Status {
    let place = match scope {
        "" => "in any scope".to_string(),
        "*" => "in every scope (a grant on *)".to_string(),
        scope => format!("in scope {}", echo(scope)),
    };
    match principal {
        Some(principal) if !principal.anonymous => Status::permission_denied(format!(
            "principal {} may not {} {place}",
            echo(&principal.name),
            action.name(),
        )),
        _ => Status::unauthenticated(format!(
            "{} {place} needs credentials: send authorization: Bearer <token>, or a client \
             certificate the policy maps",
            action.name(),
        )),
    }
}

/// One open subscription of a principal; dropping it frees the slot.
#[derive(Debug)]
pub struct SubscriptionSlot {
    held: Option<(String, OpenCounts)>,
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        if let Some((name, open)) = self.held.take() {
            let mut open = open.lock().expect("the counts lock is never poisoned");
            if let Some(count) = open.get_mut(&name) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(&name);
                }
            }
        }
    }
}
