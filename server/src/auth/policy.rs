//! The policy file (`--auth-file`): principals, how each proves who it is, and what each may do
//! in which scopes.
//!
//! ```toml
//! [anonymous]                      # optional; without it a request with no credentials fails
//! permissions = [{ scopes = ["public-*"], actions = ["read", "subscribe"] }]
//!
//! [[principals]]
//! name = "orders"
//! token_hashes = ["<blake3 hex of the token>"]   # `causeway auth hash-token`
//! cert_subjects = ["orders.internal"]            # a client certificate's CN or DNS SAN
//! requests_per_sec = 500                         # token bucket, burst = one second's worth
//! subscriptions_max = 8
//! permissions = [{ scopes = ["orders-*"], actions = ["append", "read", "subscribe", "gates"] }]
//!
//! [jwt]                            # optional: bearer JWTs whose `sub` names a principal
//! jwks_file = "jwks.json"          # relative to the policy file
//! issuer = "https://id.example.com"
//! audience = "causeway"
//! ```
//!
//! Invariants of a loaded [`Policy`]:
//! - every name, token hash and certificate subject appears once (a file that repeats one is
//!   refused, so a credential never maps to two principals);
//! - tokens are kept only as blake3 hashes and compared as `blake3::Hash`, whose equality is
//!   constant-time;
//! - a scope pattern is `*`, a prefix ending in `*` (`orders-*`), or an exact scope.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::limits::{AUTH_FILE_BYTES_MAX, PRINCIPAL_REQUESTS_PER_SEC_MAX, PRINCIPALS_MAX};

/// What a permission allows; each RPC needs one (docs/SECURITY.md has the table).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Append events (and dry-run an append) in the scope.
    Append,
    /// Read the scope's events: by id, by entity, from the log, as graph nodes.
    Read,
    /// Receive the scope's events on a subscription.
    Subscribe,
    /// Register, remove and list gates bound to the scope.
    Gates,
    /// Operate the server: verify, back up, change the cluster. Only a grant on `*` counts.
    Admin,
}

impl Action {
    /// The name the policy file and the audit log use.
    pub fn name(self) -> &'static str {
        match self {
            Action::Append => "append",
            Action::Read => "read",
            Action::Subscribe => "subscribe",
            Action::Gates => "gates",
            Action::Admin => "admin",
        }
    }
}

/// Which scopes a grant covers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// Every scope.
    Any,
    /// Every scope that starts with this.
    Prefix(String),
    /// This scope only.
    Exact(String),
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("a scope pattern is empty".to_string());
        }
        match text.strip_suffix('*') {
            Some("") => Ok(Pattern::Any),
            Some(prefix) if prefix.contains('*') => Err(format!(
                "scope pattern {text:?} has a `*` other than at its end"
            )),
            Some(prefix) => Ok(Pattern::Prefix(prefix.to_string())),
            None if text.contains('*') => Err(format!(
                "scope pattern {text:?} has a `*` other than at its end"
            )),
            None => Ok(Pattern::Exact(text.to_string())),
        }
    }

    fn matches(&self, scope: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Prefix(prefix) => scope.starts_with(prefix.as_str()),
            Pattern::Exact(exact) => scope == exact,
        }
    }
}

/// One grant: these actions on the scopes matching this pattern.
#[derive(Clone, Debug)]
struct Grant {
    pattern: Pattern,
    actions: HashSet<Action>,
}

/// Someone the policy knows: a name, what it may do, and its limits.
#[derive(Debug)]
pub struct Principal {
    /// The name the audit log and errors use.
    pub name: String,
    /// Whether this is the anonymous principal (requests with no credentials).
    pub anonymous: bool,
    grants: Vec<Grant>,
    /// The token bucket of its requests, when it has `requests_per_sec`: one per principal,
    /// shared by every connection; a reload starts it full again.
    pub limiter: Option<DefaultDirectRateLimiter>,
    /// Its `requests_per_sec`, for the error that names it.
    pub requests_per_sec: Option<u32>,
    /// Its `subscriptions_max`: subscriptions it may hold open at once.
    pub subscriptions_max: Option<usize>,
}

impl Principal {
    /// A principal with no rights at all, treated as anonymous.
    pub fn none() -> Principal {
        Principal {
            name: ANONYMOUS.to_string(),
            anonymous: true,
            grants: Vec::new(),
            limiter: None,
            requests_per_sec: None,
            subscriptions_max: None,
        }
    }

    /// Whether it may do `action` in `scope`. `Admin` counts only from a grant on `*`.
    pub fn may(&self, action: Action, scope: &str) -> bool {
        self.grants.iter().any(|grant| {
            grant.actions.contains(&action)
                && (action != Action::Admin || grant.pattern == Pattern::Any)
                && grant.pattern.matches(scope)
        })
    }

    /// Whether it may do `action` in every scope (a grant on `*`).
    pub fn may_everywhere(&self, action: Action) -> bool {
        self.grants
            .iter()
            .any(|grant| grant.actions.contains(&action) && grant.pattern == Pattern::Any)
    }

    /// Whether it may do `action` in some scope.
    pub fn may_somewhere(&self, action: Action) -> bool {
        self.grants.iter().any(|grant| {
            grant.actions.contains(&action)
                && (action != Action::Admin || grant.pattern == Pattern::Any)
        })
    }
}

/// How bearer JWTs are checked.
#[derive(Debug)]
pub struct Jwt {
    keys: JwkSet,
    issuer: String,
    audience: String,
    leeway_secs: u64,
}

/// A loaded policy file.
#[derive(Debug)]
pub struct Policy {
    principals: HashMap<String, Arc<Principal>>,
    anonymous: Option<Arc<Principal>>,
    tokens: Vec<(blake3::Hash, Arc<Principal>)>,
    subjects: HashMap<String, Arc<Principal>>,
    jwt: Option<Jwt>,
    /// The JWKS file, watched for changes beside the policy file.
    pub jwks_file: Option<PathBuf>,
}

/// A principal a credential proved, and until when the proof holds.
#[derive(Clone, Debug)]
pub struct Proven {
    /// Who it is.
    pub principal: Arc<Principal>,
    /// A JWT's `exp` (plus the policy's leeway), in seconds since the Unix epoch; `None` for a
    /// credential that does not expire.
    pub expires_at_secs: Option<u64>,
}

/// Why a credential was not accepted; logged in the audit log, never sent in full.
#[derive(Debug)]
pub struct Rejected(pub String);

impl Policy {
    /// The principal for requests with no credentials, if the file grants anonymous access.
    pub fn anonymous(&self) -> Option<&Arc<Principal>> {
        self.anonymous.as_ref()
    }

    /// The principal a bearer credential names: a JWT when it has the shape of one and the
    /// file configures `[jwt]`, else a token looked up by its hash.
    pub fn bearer(&self, token: &str) -> Result<Proven, Rejected> {
        let as_jwt = match &self.jwt {
            Some(jwt) if token.split('.').count() == 3 => Some(self.jwt_principal(jwt, token)),
            _ => None,
        };
        if let Some(Ok(proven)) = as_jwt {
            return Ok(proven);
        }
        let presented = blake3::hash(token.as_bytes());
        // Every stored hash is compared (constant time each), so the time taken does not say
        // how far down the list a match was.
        let mut found = None;
        for (hash, principal) in &self.tokens {
            if *hash == presented {
                found = Some(principal.clone());
            }
        }
        // A token shaped like a JWT that is not a valid one may still be an opaque token; if it
        // is neither, the JWT's reason is the useful one.
        found
            .map(|principal| Proven {
                principal,
                expires_at_secs: None,
            })
            .ok_or_else(|| match as_jwt {
                Some(Err(rejected)) => rejected,
                _ => Rejected("the token is not in the policy file".to_string()),
            })
    }

    fn jwt_principal(&self, jwt: &Jwt, token: &str) -> Result<Proven, Rejected> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| Rejected(format!("the JWT header does not decode: {err}")))?;
        let jwk = match &header.kid {
            Some(kid) => jwt.keys.find(kid),
            None if jwt.keys.keys.len() == 1 => jwt.keys.keys.first(),
            None => None,
        }
        .ok_or_else(|| Rejected("no key of the JWKS matches the JWT's kid".to_string()))?;
        // The key's own algorithm when the JWKS says it, so a token cannot choose another.
        let algorithm = match jwk.common.key_algorithm {
            Some(key_algorithm) => Algorithm::try_from(key_algorithm)
                .map_err(|err| Rejected(format!("the JWKS key's alg: {err}")))?,
            None => header.alg,
        };
        let key =
            DecodingKey::from_jwk(jwk).map_err(|err| Rejected(format!("the JWKS key: {err}")))?;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&jwt.issuer]);
        validation.set_audience(&[&jwt.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = jwt.leeway_secs;
        // jsonwebtoken checks `nbf` only when asked; a token not valid yet is refused.
        validation.validate_nbf = true;
        #[derive(Deserialize)]
        struct Claims {
            sub: String,
            exp: u64,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|err| {
            // The library's message can quote a claim the sender chose: cut it.
            Rejected(format!(
                "the JWT is not valid: {}",
                crate::status::echo(&err.to_string())
            ))
        })?;
        let principal = self
            .principals
            .get(&data.claims.sub)
            .cloned()
            .ok_or_else(|| {
                Rejected("the JWT's sub names no principal of the policy".to_string())
            })?;
        Ok(Proven {
            principal,
            expires_at_secs: Some(data.claims.exp.saturating_add(jwt.leeway_secs)),
        })
    }

    /// The principal a client certificate's DNS subject alternative names map to (the first
    /// name the policy lists).
    pub fn subject(&self, names: &[String]) -> Option<Arc<Principal>> {
        names
            .iter()
            .find_map(|name| self.subjects.get(name).cloned())
    }

    /// Loads the policy file (and the JWKS file it names); an error names the file and the
    /// entry that is wrong.
    pub fn load(path: &Path) -> Result<Policy, String> {
        let text = read(path)?;
        let doc: Doc = toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
        parse(doc, path).map_err(|err| format!("{}: {err}", path.display()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    anonymous: Option<AnonymousDoc>,
    #[serde(default)]
    principals: Vec<PrincipalDoc>,
    jwt: Option<JwtDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnonymousDoc {
    #[serde(default)]
    permissions: Vec<GrantDoc>,
    requests_per_sec: Option<u32>,
    subscriptions_max: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalDoc {
    name: String,
    #[serde(default)]
    token_hashes: Vec<String>,
    #[serde(default)]
    cert_subjects: Vec<String>,
    #[serde(default)]
    permissions: Vec<GrantDoc>,
    requests_per_sec: Option<u32>,
    subscriptions_max: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantDoc {
    scopes: Vec<String>,
    actions: Vec<Action>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtDoc {
    jwks_file: PathBuf,
    issuer: String,
    audience: String,
    #[serde(default)]
    leeway_secs: u64,
}

/// The name the anonymous principal carries in the audit log.
pub const ANONYMOUS: &str = "anonymous";

fn parse(doc: Doc, path: &Path) -> Result<Policy, String> {
    // Nothing to grant is a mistake, not a lockdown: most often a file caught half-written (a
    // copy truncates first) or emptied by accident, which at a reload would refuse every client.
    if doc.principals.is_empty() && doc.anonymous.is_none() {
        return Err(
            "the policy grants nothing: it has no [[principals]] and no [anonymous]".to_string(),
        );
    }
    if doc.principals.len() > PRINCIPALS_MAX {
        return Err(format!(
            "{} principals, over PRINCIPALS_MAX = {PRINCIPALS_MAX}",
            doc.principals.len()
        ));
    }
    let mut policy = Policy {
        principals: HashMap::new(),
        anonymous: None,
        tokens: Vec::new(),
        subjects: HashMap::new(),
        jwt: None,
        jwks_file: None,
    };
    if let Some(anonymous) = doc.anonymous {
        policy.anonymous = Some(Arc::new(principal(
            ANONYMOUS,
            true,
            &anonymous.permissions,
            anonymous.requests_per_sec,
            anonymous.subscriptions_max,
        )?));
    }
    let mut hashes = HashSet::new();
    for (idx, doc) in doc.principals.into_iter().enumerate() {
        let at = format!("principals[{idx}]");
        if doc.name.is_empty() || doc.name == ANONYMOUS {
            return Err(format!("{at}.name is empty or {ANONYMOUS:?}"));
        }
        let principal = Arc::new(
            principal(
                &doc.name,
                false,
                &doc.permissions,
                doc.requests_per_sec,
                doc.subscriptions_max,
            )
            .map_err(|err| format!("{at}: {err}"))?,
        );
        if policy
            .principals
            .insert(doc.name.clone(), principal.clone())
            .is_some()
        {
            return Err(format!("{at}.name {:?} is listed twice", doc.name));
        }
        for (hash_idx, hex) in doc.token_hashes.iter().enumerate() {
            let hash = blake3::Hash::from_hex(hex.trim()).map_err(|_| {
                format!("{at}.token_hashes[{hash_idx}] is not 64 hex digits of a blake3 hash")
            })?;
            if !hashes.insert(*hash.as_bytes()) {
                return Err(format!(
                    "{at}.token_hashes[{hash_idx}] is listed for another principal too"
                ));
            }
            policy.tokens.push((hash, principal.clone()));
        }
        for (subject_idx, subject) in doc.cert_subjects.iter().enumerate() {
            if policy
                .subjects
                .insert(subject.clone(), principal.clone())
                .is_some()
            {
                return Err(format!(
                    "{at}.cert_subjects[{subject_idx}] {subject:?} is listed twice"
                ));
            }
        }
    }
    if let Some(jwt) = doc.jwt {
        let jwks_file = match path.parent() {
            Some(dir) if jwt.jwks_file.is_relative() => dir.join(&jwt.jwks_file),
            _ => jwt.jwks_file.clone(),
        };
        let text = read(&jwks_file).map_err(|err| format!("jwt.jwks_file: {err}"))?;
        let keys: JwkSet = serde_json::from_str(&text)
            .map_err(|err| format!("jwt.jwks_file {}: {err}", jwks_file.display()))?;
        if keys.keys.is_empty() {
            return Err(format!(
                "jwt.jwks_file {}: the key set is empty",
                jwks_file.display()
            ));
        }
        policy.jwt = Some(Jwt {
            keys,
            issuer: jwt.issuer,
            audience: jwt.audience,
            leeway_secs: jwt.leeway_secs,
        });
        policy.jwks_file = Some(jwks_file);
    }
    Ok(policy)
}

fn principal(
    name: &str,
    anonymous: bool,
    grants: &[GrantDoc],
    requests_per_sec: Option<u32>,
    subscriptions_max: Option<usize>,
) -> Result<Principal, String> {
    let mut parsed = Vec::with_capacity(grants.len());
    for (idx, grant) in grants.iter().enumerate() {
        if grant.scopes.is_empty() {
            return Err(format!("permissions[{idx}].scopes is empty"));
        }
        for scope in &grant.scopes {
            parsed.push(Grant {
                pattern: Pattern::parse(scope)
                    .map_err(|err| format!("permissions[{idx}].scopes: {err}"))?,
                actions: grant.actions.iter().copied().collect(),
            });
        }
    }
    let limiter = match requests_per_sec {
        None => None,
        Some(rate) => {
            let per_sec = NonZeroU32::new(rate)
                .filter(|rate| rate.get() <= PRINCIPAL_REQUESTS_PER_SEC_MAX)
                .ok_or_else(|| {
                    format!(
                        "requests_per_sec is {rate}; give 1 to \
                         PRINCIPAL_REQUESTS_PER_SEC_MAX = {PRINCIPAL_REQUESTS_PER_SEC_MAX}"
                    )
                })?;
            Some(RateLimiter::direct(Quota::per_second(per_sec)))
        }
    };
    Ok(Principal {
        name: name.to_string(),
        anonymous,
        grants: parsed,
        limiter,
        requests_per_sec,
        subscriptions_max,
    })
}

/// Reads a file of at most `AUTH_FILE_BYTES_MAX` bytes that is a regular file, as text.
fn read(path: &Path) -> Result<String, String> {
    let bytes = crate::reload::read_bounded(path, AUTH_FILE_BYTES_MAX, "AUTH_FILE_BYTES_MAX")?;
    String::from_utf8(bytes)
        .map_err(|_| format!("{}: stream did not contain valid UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<Policy, String> {
        let doc: Doc = toml::from_str(text).map_err(|err| err.to_string())?;
        parse(doc, Path::new("auth.toml"))
    }

    #[test]
    fn patterns_match_exact_prefix_and_any() {
        let policy = policy(&format!(
            r#"
            [[principals]]
            name = "orders"
            token_hashes = ["{}"]
            permissions = [
                {{ scopes = ["orders-*"], actions = ["read"] }},
                {{ scopes = ["billing"], actions = ["append"] }},
                {{ scopes = ["*"], actions = ["subscribe"] }},
                {{ scopes = ["orders-eu"], actions = ["admin"] }},
            ]
            "#,
            blake3::hash(b"secret").to_hex()
        ))
        .expect("the policy parses");
        let orders = policy
            .bearer("secret")
            .expect("the token is known")
            .principal;
        assert!(orders.may(Action::Read, "orders-eu"));
        assert!(!orders.may(Action::Read, "order"));
        assert!(orders.may(Action::Append, "billing"));
        assert!(!orders.may(Action::Append, "billing-2"));
        assert!(orders.may(Action::Subscribe, "anything"));
        // Admin counts only from a grant on every scope.
        assert!(!orders.may(Action::Admin, "orders-eu"));
        assert!(!orders.may_somewhere(Action::Admin));
        assert!(policy.bearer("other").is_err());
    }

    #[test]
    fn bad_files_name_the_entry() {
        let err = policy("[[principals]]\nname = \"a\"\ntoken_hashes = [\"abc\"]\n")
            .expect_err("a short hash");
        assert!(err.contains("principals[0].token_hashes[0]"), "{err}");
        let err = policy(
            "[[principals]]\nname = \"a\"\npermissions = [{ scopes = [\"a*b\"], actions = [\"read\"] }]\n",
        )
        .expect_err("a star inside");
        assert!(
            err.contains("principals[0]: permissions[0].scopes"),
            "{err}"
        );
        let err = policy("[[principals]]\nname = \"a\"\n[[principals]]\nname = \"a\"\n")
            .expect_err("a name twice");
        assert!(err.contains("listed twice"), "{err}");
        let err = policy("[[principals]]\nname = \"a\"\nrequests_per_sec = 0\n")
            .expect_err("a zero rate");
        assert!(err.contains("requests_per_sec"), "{err}");
        let err = policy("[[principals]]\nname = \"a\"\npermissions = [{ scopes = [\"*\"], actions = [\"write\"] }]\n")
            .expect_err("an unknown action");
        assert!(err.contains("write"), "{err}");
        for empty in ["", "# nothing yet\n"] {
            let err = policy(empty).expect_err("a policy that grants nothing");
            assert!(err.contains("grants nothing"), "{err}");
        }
    }
}
