//! Following the leader: the server addresses a client knows, the connection to each, and the
//! rule that decides whether a failed call is sent again, and where.
//!
//! A `Router` holds the addresses given to [`crate::Client::connect`] (and leaders learned
//! since), one cached HTTP/2 channel per address, and the address calls go to now. Every call
//! runs through `Router::call`, which sends it and, on failure, asks `next_step`:
//!
//! - a follower's refusal that names the leader ([`Error::NotLeader`]) did nothing: send again
//!   at once, to the leader;
//! - a refusal without a leader ([`Error::LeaderUnknown`], an election under way) or a
//!   connection that could not be made (the request never left) did nothing either: pause,
//!   then send again to the next known address;
//! - a failure after the request may have reached the server ([`Error::OutcomeUnknown`], a
//!   connection lost mid-call, any other UNAVAILABLE) is sent again only when that is safe:
//!   a read, or an append with an idempotency key (the server applies it exactly once); a
//!   keyed append that then ends in anything but an answer is [`Error::OutcomeUnknown`];
//! - an address where no Causeway server served the call (a handshake that failed: another
//!   protocol, TLS settings it refuses; or UNIMPLEMENTED) did nothing: the call goes on to the
//!   next address, and stops with that error once every known address has failed so;
//! - anything else is an answer and goes to the caller.
//!
//! Before a call goes to an address that has not answered yet, or whose connection broke since
//! it last did, a health check must be answered within [`FIRST_ANSWER_TIMEOUT`]; an address
//! that accepts connections and stays silent (a frozen process) counts as unreachable, the call
//! unsent, and so does one whose check fails, breaks or draws an answer no Causeway server
//! gives. With other addresses known the call goes on to them; with one address, it tries that
//! one again until the deadline. Either way a write is never sent into a connection that has
//! not shown a Causeway server at its end, so its failure there is a refusal, not an unknown
//! outcome.
//!
//! Pauses start at [`FOLLOW_PAUSE_MIN`] and double up to [`FOLLOW_PAUSE_MAX`]; a call stops
//! following after [`FOLLOW_ATTEMPTS_MAX`] sends or once [`FOLLOW_DEADLINE`] has passed, which
//! rides out a leader election of a second or two. A send held past the deadline by a server
//! that stopped answering (a frozen leader, which HTTP/2's keepalive gives up on after 15 s)
//! moves the deadline once, so the call goes on to the leader the others elected meanwhile.
//! Then the call returns the last error; when that only says the last address gave no answer,
//! the last refusal a server gave comes first (a live member's "short of a quorum" says more
//! than a dead member's silence).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::client::{
    ADDRESSES_MAX, CONNECT_TIMEOUT, FIRST_ANSWER_TIMEOUT, FOLLOW_ATTEMPTS_MAX, FOLLOW_DEADLINE,
    FOLLOW_PAUSE_MAX, FOLLOW_PAUSE_MIN, HTTP2_FRAME_BYTES_MAX, KEEPALIVE_INTERVAL,
    KEEPALIVE_TIMEOUT,
};
use crate::credentials::Credentials;
use crate::error::Error;
use crate::tls::Tls;

/// The most addresses remembered as having answered: the known ones and as many learned.
const ANSWERED_MAX: usize = 2 * ADDRESSES_MAX;

/// Splits a comma-separated list of server addresses (`a:1,b:2` or URIs such as
/// `http://a:1`) into URIs, `host:port` taken as plain-text `http`. Spaces around an address
/// are ignored and a repeated address is kept once; an empty list, an empty item, more than
/// [`ADDRESSES_MAX`] addresses or one that is no URI is [`Error::InvalidAddress`].
pub fn parse_addresses(list: &str) -> Result<Vec<String>, Error> {
    parse_addresses_as(list, false)
}

/// [`parse_addresses`], taking `host:port` as `https` when `secure`.
pub(crate) fn parse_addresses_as(list: &str, secure: bool) -> Result<Vec<String>, Error> {
    let invalid = |address: &str, detail: String| Error::InvalidAddress {
        address: shortened(address),
        detail,
    };
    let mut uris: Vec<String> = Vec::new();
    for address in list.split(',').map(str::trim) {
        if address.is_empty() {
            return Err(invalid(
                list,
                "the list holds an empty address (expected HOST:PORT[,HOST:PORT...])".to_string(),
            ));
        }
        let uri = uri_as(address, secure);
        Endpoint::from_shared(uri.clone()).map_err(|err| invalid(address, error_chain(&err)))?;
        let parsed: tonic::codegen::http::Uri = uri
            .parse()
            .map_err(|err| invalid(address, error_chain(&err)))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) {
            return Err(invalid(
                address,
                "the scheme must be http:// or https:// (or none: HOST:PORT)".to_string(),
            ));
        }
        if !matches!(parsed.path(), "" | "/")
            || parsed.query().is_some()
            || uri.contains('#')
            || parsed
                .authority()
                .is_some_and(|authority| authority.as_str().contains('@'))
        {
            return Err(invalid(
                address,
                "a server address is HOST:PORT or SCHEME://HOST:PORT, without a user, path, \
                 query or fragment"
                    .to_string(),
            ));
        }
        // A port that is missing or not a number would quietly become port 80 (another
        // server's, perhaps); say so instead.
        let port = parsed
            .authority()
            .and_then(|authority| authority.as_str().rsplit_once(':'))
            .map(|(_, port)| port.to_string())
            .filter(|port| !port.contains(']'));
        let port_ok = port
            .as_deref()
            .is_some_and(|port| !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit()))
            && parsed.port_u16().is_some_and(|port| port > 0);
        let host_ok = parsed.host().is_some_and(|host| !host.is_empty());
        if !port_ok || !host_ok {
            return Err(invalid(
                address,
                format!(
                    "a server address needs a host and a port from 1 to 65535 (HOST:PORT); \
                     the port here is {}",
                    port.map_or("missing".to_string(), |port| format!("{port:?}"))
                ),
            ));
        }
        if !uris.contains(&uri) {
            uris.push(uri);
        }
    }
    if uris.len() > ADDRESSES_MAX {
        return Err(invalid(
            list,
            format!(
                "{} addresses, at most {ADDRESSES_MAX} (ADDRESSES_MAX)",
                uris.len()
            ),
        ));
    }
    Ok(uris)
}

/// `address` (a URI) as messages show it: HOST:PORT, without its scheme.
fn shown(address: &str) -> &str {
    address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address)
}

/// `text` as an error shows it: its first 120 characters, and how long it was past them.
fn shortened(text: &str) -> String {
    const SHOWN_CHARS: usize = 120;
    match text.char_indices().nth(SHOWN_CHARS) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes in all)", &text[..cut], text.len()),
    }
}

/// `address` as a URI: unchanged when it has a scheme, else `https://address` when `secure`,
/// else `http://address`.
pub(crate) fn uri_as(address: &str, secure: bool) -> String {
    if address.contains("://") {
        address.to_string()
    } else if secure {
        format!("https://{address}")
    } else {
        format!("http://{address}")
    }
}

/// Whether a call may be sent again after it may have reached the server.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Idempotence {
    /// Sending it twice has the effect of sending it once, and it changes nothing: reads.
    Idempotent,
    /// An append that carries an idempotency key: sent again like a read (the server applies
    /// it once however often it arrives), but when the call gives up after a send that may
    /// have reached the server, its outcome is unknown, as a write's is.
    Keyed,
    /// A second send may apply it twice: appends without a key, gate changes.
    NotIdempotent,
    /// A cluster change (membership, leadership): sent once, like a write, but a status the
    /// server made is its whole answer, since the server says in it what was done. Only a
    /// connection that broke after the request was sent leaves the outcome unknown.
    Change,
}

/// What to do after a failed send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send again at once, to the leader at this address.
    Redirect(String),
    /// Pause, then send again to the next known address.
    PauseAndRotate,
    /// Give the error to the caller.
    Stop,
}

/// The rule of the module comment: what follows `error` for a call of this idempotence.
pub(crate) fn next_step(error: &Error, idempotence: Idempotence) -> Step {
    let if_idempotent = match idempotence {
        Idempotence::Idempotent | Idempotence::Keyed => Step::PauseAndRotate,
        Idempotence::NotIdempotent | Idempotence::Change => Step::Stop,
    };
    match error {
        Error::NotLeader { leader } => Step::Redirect(leader.clone()),
        Error::LeaderUnknown { .. } | Error::Connect { .. } => Step::PauseAndRotate,
        // Every address is dialled with the same TLS settings: the next would refuse alike
        // (`Router::call` still tries each listed address once first).
        Error::Handshake { .. } => Step::Stop,
        Error::OutcomeUnknown { .. } => if_idempotent,
        Error::Status(status) if never_sent(status) => Step::PauseAndRotate,
        Error::Status(status) if status.code() == Code::Unavailable => if_idempotent,
        // A status made here from a broken connection: the request may have been served.
        Error::Status(status)
            if matches!(status.code(), Code::Unknown | Code::Internal) && made_here(status) =>
        {
            if_idempotent
        }
        _ => Step::Stop,
    }
}

/// The error a caller sees: a write that is not sent again after a failure that may have
/// come after the server applied it (a connection broken with the request sent) is
/// [`Error::OutcomeUnknown`], not a plain failure.
pub(crate) fn settled(error: Error, idempotence: Idempotence) -> Error {
    let may_be_applied = may_be_applied(&error);
    let Error::Status(status) = error else {
        return error;
    };
    // A cluster change's status from the server says what was done; only one made here, from
    // a broken connection, leaves it unknown.
    let hint = match idempotence {
        Idempotence::NotIdempotent if may_be_applied => {
            "the request was sent and may have been applied; an idempotency key makes sending \
             it again safe"
        }
        Idempotence::Keyed if may_be_applied => KEYED_HINT,
        Idempotence::Change if may_be_applied && made_here(&status) => {
            "the cluster change was sent and may have been made; GetClusterStatus shows whether \
             it was"
        }
        _ => return Error::Status(status),
    };
    Error::OutcomeUnknown {
        message: format!("{} ({hint})", error_chain(&status)),
    }
}

/// True when `error` says the call never reached a server: no connection, or no answer to
/// the health check before it.
fn unsent(error: &Error) -> bool {
    match error {
        Error::Connect { .. } => true,
        Error::Status(status) => never_sent(status),
        _ => false,
    }
}

/// True when `error` shows that no Causeway server served the call at its address: a
/// handshake that failed, or a server that does not implement the call (another service, or
/// a plain HTTP/2 server whose 404 tonic maps to UNIMPLEMENTED). Nothing was done there.
fn not_served(error: &Error) -> bool {
    match error {
        Error::Handshake { .. } => true,
        Error::Status(status) => status.code() == Code::Unimplemented,
        _ => false,
    }
}

/// True when `error` is a server's own refusal, not a failure of the connection to it.
fn is_answer(error: &Error) -> bool {
    match error {
        Error::LeaderUnknown { .. } | Error::OutcomeUnknown { .. } => true,
        Error::Status(status) => !made_here(status),
        _ => false,
    }
}

/// The error a call that stops following returns: its last error, unless that says only that
/// the last address gave no answer (the call never reached it) while an earlier server
/// refused it; then that refusal, noting the silence after it. A failure after the request
/// was sent is never replaced: its outcome may be unknown.
fn given_up(last: Error, last_answer: Option<Error>) -> Error {
    match last_answer {
        Some(answer) if unsent(&last) => beside_silence(answer, &last),
        _ => last,
    }
}

/// A server's refusal, with a note that the call then found no other address that answered
/// (`silence`), so a caller sees why the live member refused before what the others did not.
fn beside_silence(answer: Error, silence: &Error) -> Error {
    let note = format!("; then no other address answered ({silence})");
    match answer {
        Error::Status(status) => Error::Status(tonic::Status::with_details_and_metadata(
            status.code(),
            format!("{}{note}", status.message()),
            status.details().to_vec().into(),
            status.metadata().clone(),
        )),
        Error::LeaderUnknown { message } => Error::LeaderUnknown {
            message: format!("{message}{note}"),
        },
        Error::OutcomeUnknown { message } => Error::OutcomeUnknown {
            message: format!("{message}{note}"),
        },
        other => other,
    }
}

/// What a keyed append whose outcome is unknown should do.
const KEYED_HINT: &str = "the append was sent and may have been applied; sending it again with \
                          the same idempotency key applies it exactly once";

/// True when `error` is a failure after which the request may have been served: sent again
/// only when that is safe, and the outcome of a write that is not is unknown.
fn may_be_applied(error: &Error) -> bool {
    next_step(error, Idempotence::Idempotent) == Step::PauseAndRotate
        && next_step(error, Idempotence::NotIdempotent) == Step::Stop
}

/// True when the status was made here, from a broken or failed connection: the server's own
/// statuses carry no source.
pub(crate) fn made_here(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// True when the status is a connection this client saw break (not a server's answer, nor a
/// connection that could not be made): closed or reset under a call, which then ends as
/// UNKNOWN, INTERNAL or CANCELLED by where the break caught it.
fn broke(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unknown | Code::Internal | Code::Cancelled
    ) && made_here(status)
}

/// Why [`Router::first_answer`] does not let a call go to an address: the error the call
/// stands on there, and whether the health check's connection [`broke`] before an answer.
struct Unanswered {
    error: Error,
    broke: bool,
}

impl From<Error> for Unanswered {
    fn from(error: Error) -> Unanswered {
        Unanswered {
            error,
            broke: false,
        }
    }
}

/// True when the status says the connection could not be made, so the request never left.
pub(crate) fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The addresses a client knows, a channel per address, and where calls go now. Clones share
/// all three, so one clone's redirect moves every clone to the leader.
#[derive(Clone, Debug)]
pub(crate) struct Router {
    known: Arc<Mutex<Known>>,
    /// False for a client over a caller's channel: there is nowhere else to go, so every
    /// call is sent once, as before clusters existed.
    follows: bool,
    /// TLS for `https` addresses; when given, `host:port` addresses (a leader's, learned from a
    /// redirect, too) are dialled as `https`.
    tls: Option<ClientTlsConfig>,
    /// What every call proves itself with (a bearer token, or nothing).
    credentials: Credentials,
}

#[derive(Debug)]
struct Known {
    /// URIs, the given ones first, then leaders learned from redirects (bounded by
    /// `ADDRESSES_MAX`; a leader beyond it is used but not remembered).
    addresses: Vec<String>,
    /// The address calls go to now.
    current: String,
    /// One channel per address dialled; a channel reconnects by itself after a failure.
    channels: HashMap<String, Channel>,
    /// The addresses that have answered a call, at most `ANSWERED_MAX`: a connection closed
    /// by one of them is not a refused handshake.
    answered: Vec<String>,
    /// Addresses whose connection broke since they last answered (at most `ANSWERED_MAX`):
    /// a call goes there again only after they answer a health check.
    suspect: Vec<String>,
}

impl Known {
    /// Whether `address` has answered a call of this client.
    fn has_answered(&self, address: &str) -> bool {
        self.answered.iter().any(|known| known == address)
    }
}

impl Router {
    /// Dials `addresses` (URIs, as [`parse_addresses`] makes them) in order and keeps the
    /// first that answers; the others are dialled when calls go there. When none answers,
    /// [`Error::Connect`] names each address and why.
    pub(crate) async fn connect(
        addresses: Vec<String>,
        tls: Option<&Tls>,
    ) -> Result<Router, Error> {
        let tls = tls.map(|tls| tls.config().clone());
        let mut failures = Vec::new();
        for address in &addresses {
            match endpoint(address, tls.as_ref())?.connect().await {
                Ok(channel) => {
                    let known = Known {
                        addresses: addresses.clone(),
                        current: address.clone(),
                        channels: HashMap::from([(address.clone(), channel)]),
                        answered: Vec::new(),
                        suspect: Vec::new(),
                    };
                    return Ok(Router {
                        known: Arc::new(Mutex::new(known)),
                        follows: true,
                        tls,
                        credentials: Credentials::default(),
                    });
                }
                Err(err) => failures.push((address.clone(), with_tls_hint(&err))),
            }
        }
        Err(match <[_; 1]>::try_from(failures) {
            Ok([(address, detail)]) => Error::Connect { address, detail },
            Err(failures) => Error::Connect {
                address: addresses.join(","),
                detail: failures
                    .iter()
                    .map(|(address, detail)| format!("{address}: {detail}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        })
    }

    /// What every call proves itself with.
    pub(crate) fn credentials(&self) -> Credentials {
        self.credentials.clone()
    }

    /// Sends `credentials` with every call from now on (clones made before keep theirs).
    pub(crate) fn set_credentials(&mut self, credentials: Credentials) {
        self.credentials = credentials;
    }

    /// A router over one channel the caller made; it never goes elsewhere.
    pub(crate) fn from_channel(channel: Channel) -> Router {
        let label = "the given channel".to_string();
        let known = Known {
            addresses: vec![label.clone()],
            current: label.clone(),
            channels: HashMap::from([(label, channel)]),
            answered: Vec::new(),
            suspect: Vec::new(),
        };
        Router {
            known: Arc::new(Mutex::new(known)),
            follows: false,
            tls: None,
            credentials: Credentials::default(),
        }
    }

    /// `address` as a URI, `https` for `host:port` when this router has TLS.
    pub(crate) fn uri(&self, address: &str) -> String {
        uri_as(address, self.tls.is_some())
    }

    /// The address calls go to now.
    pub(crate) fn current(&self) -> String {
        self.lock().current.clone()
    }

    /// The channel to where calls go now, and that address.
    pub(crate) fn channel(&self) -> (String, Channel) {
        let current = self.current();
        let channel = self
            .channel_to(&current)
            .expect("every known address was checked to be a URI when it became known");
        (current, channel)
    }

    /// The channel to `address` (a URI), dialled lazily on first use and kept.
    pub(crate) fn channel_to(&self, address: &str) -> Result<Channel, Error> {
        if let Some(channel) = self.lock().channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = endpoint(address, self.tls.as_ref())?.connect_lazy();
        Ok(self
            .lock()
            .channels
            .entry(address.to_string())
            .or_insert(channel)
            .clone())
    }

    /// Sends with `send` (given the channel to where calls go now) until it succeeds or
    /// [`next_step`] says stop, following the leader as the module comment describes. `send`
    /// is called once per attempt, so it must rebuild its request each time.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        idempotence: Idempotence,
        send: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.call_within(FOLLOW_DEADLINE, idempotence, send).await
    }

    /// [`Router::call`] that stops following after `within` instead of [`FOLLOW_DEADLINE`]
    /// (a health check, which a probe waits for with a timeout of its own).
    pub(crate) async fn call_within<T, F, Fut>(
        &self,
        within: std::time::Duration,
        idempotence: Idempotence,
        mut send: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let started = Instant::now();
        let mut deadline = started + within;
        // Whether the deadline was moved once for a send held past it (below).
        let mut extended = false;
        let mut pause = FOLLOW_PAUSE_MIN;
        let mut n_attempts: u32 = 0;
        // The last refusal a server itself gave, for when the call ends at an address that
        // gave none: "no quorum" from a live member says more than a frozen member's silence.
        let mut last_answer: Option<Error> = None;
        // A keyed append's first failure after which it may have been applied: however the
        // call ends but in an answer, its outcome is then unknown.
        let mut maybe_applied: Option<String> = None;
        // Addresses where no Causeway server served the call (see `not_served`).
        let mut not_causeway: Vec<String> = Vec::new();
        loop {
            n_attempts += 1;
            let began = Instant::now();
            let (address, channel) = self.channel();
            // With whether this try's connection broke before any answer (see `broke`).
            let (error, broke_unanswered) = match self.first_answer(&address, &channel).await {
                Err(Unanswered { error, broke }) => (error, broke),
                Ok(()) => match send(channel).await {
                    Ok(answer) => {
                        self.answered(&address);
                        return Ok(answer);
                    }
                    Err(status) => {
                        if made_here(&status) {
                            self.suspect(&address);
                        }
                        let broke = broke(&status);
                        let error = match self.explained(&status, &address) {
                            Some(explained) => explained,
                            // Named by its address and causes, not tonic's bare "tcp connect
                            // error".
                            None if never_sent(&status) => Error::Connect {
                                address: address.clone(),
                                detail: error_chain(&status),
                            },
                            None => Error::from(status),
                        };
                        (error, broke)
                    }
                },
            };
            if idempotence == Idempotence::Keyed
                && maybe_applied.is_none()
                && may_be_applied(&error)
            {
                maybe_applied = Some(match &error {
                    Error::OutcomeUnknown { message } => message.clone(),
                    other => other.to_string(),
                });
            }
            let now = Instant::now();
            if !extended && began < deadline && now >= deadline && may_be_applied(&error) {
                // A send held past the deadline by a server that stopped answering (HTTP/2's
                // keepalive gives up after 15 s): the others have had that long to elect a
                // new leader, so the call follows afresh, once, to find it.
                deadline = now + within;
                extended = true;
            }
            let left = deadline.saturating_duration_since(now);
            if !self.follows || n_attempts >= FOLLOW_ATTEMPTS_MAX || left.is_zero() {
                let error = settled(given_up(error, last_answer), idempotence);
                let error = match maybe_applied {
                    Some(earlier) if !matches!(error, Error::OutcomeUnknown { .. }) => {
                        Error::OutcomeUnknown {
                            message: format!("{earlier} ({KEYED_HINT}); then: {error}"),
                        }
                    }
                    _ => error,
                };
                let mut error = self.broken_before_any_answer(error, &address, broke_unanswered);
                // A message that names one wait (a health check's) says how long the call
                // went on trying.
                if let Error::Connect { detail, .. } | Error::Handshake { detail, .. } = &mut error
                    && n_attempts > 1
                {
                    let seconds = started.elapsed().as_secs_f64();
                    detail.push_str(&format!("; tried {n_attempts} times in {seconds:.1} s"));
                }
                return Err(error);
            }
            // An address where no Causeway server served the call (another protocol or service
            // listens there, or it refuses this client's TLS settings) did nothing: the call
            // goes on to the next, and stops with this error only once every known address
            // has failed so.
            if self.follows && not_served(&error) {
                if !not_causeway.contains(&address) {
                    not_causeway.push(address.clone());
                }
                let every = self
                    .lock()
                    .addresses
                    .iter()
                    .all(|known| not_causeway.contains(known));
                if !every {
                    self.rotate(&address);
                    continue;
                }
            }
            match next_step(&error, idempotence) {
                Step::Stop => return Err(settled(error, idempotence)),
                // An address that is no URI cannot be followed; the caller sees where it was.
                Step::Redirect(leader) if endpoint(&self.uri(&leader), None).is_err() => {
                    return Err(error);
                }
                Step::Redirect(leader) if self.uri(&leader) != address => self.redirect(&leader),
                // A redirect to where the call just went: that node's view is stale.
                Step::Redirect(_) | Step::PauseAndRotate => {
                    self.rotate(&address);
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(FOLLOW_PAUSE_MAX);
                }
            }
            if is_answer(&error) {
                last_answer = Some(error);
            }
        }
    }

    /// Checks that `address` answers at all before a call is sent there, when it has not
    /// answered this client yet (or its connection broke since): a server that accepted the
    /// connection (the kernel does that for a frozen process) but gives no answer to a health
    /// check within [`FIRST_ANSWER_TIMEOUT`] is [`Error::Connect`], so the call goes to the
    /// next address (or, the only one, to this one again), unsent. Any answer, a refusal too,
    /// shows the server alive; a connection that fails or breaks before one is
    /// [`Error::Connect`] too, or [`Error::Handshake`] when [`Router::explained`] can say why
    /// (another protocol, TLS settings refused).
    async fn first_answer(&self, address: &str, channel: &Channel) -> Result<(), Unanswered> {
        let unheard = {
            let known = self.lock();
            self.follows
                && (!known.has_answered(address)
                    || known.suspect.iter().any(|suspect| suspect == address))
        };
        if !unheard {
            return Ok(());
        }
        let mut health = HealthClient::new(channel.clone());
        let check = health.check(HealthCheckRequest {
            service: String::new(),
        });
        match tokio::time::timeout(FIRST_ANSWER_TIMEOUT, check).await {
            Ok(Ok(_)) => self.answered(address),
            // What no Causeway server's health service says: another HTTP/2 server answered
            // (a web page, a 404, another service). The call goes to the next address.
            Ok(Err(status))
                if !made_here(&status)
                    && matches!(
                        status.code(),
                        Code::Internal | Code::Unimplemented | Code::Unknown | Code::DataLoss
                    ) =>
            {
                let shown = shown(address);
                return Err(Unanswered::from(Error::Handshake {
                    address: shown.to_string(),
                    detail: format!(
                        "the server at {shown} does not answer as a Causeway server: its health \
                         check said {:?}: {}",
                        status.code(),
                        status.message()
                    ),
                }));
            }
            Ok(Err(status)) if !made_here(&status) => {
                self.answered(address);
            }
            // The connection failed or broke before any answer: the call is not sent into it
            // (a write would leave its outcome unknown), and the next address is tried.
            Ok(Err(status)) => {
                return Err(Unanswered {
                    broke: broke(&status),
                    error: match self.explained(&status, address) {
                        Some(explained) => explained,
                        None => Error::Connect {
                            address: address.to_string(),
                            detail: with_tls_hint(&status),
                        },
                    },
                });
            }
            Err(_) => {
                return Err(Unanswered::from(Error::Connect {
                    address: address.to_string(),
                    detail: format!(
                        "the server accepted the connection but did not answer a health check \
                         within {FIRST_ANSWER_TIMEOUT:?} (FIRST_ANSWER_TIMEOUT)"
                    ),
                }));
            }
        }
        Ok(())
    }

    /// Notes that the connection to `address` broke (a call or a stream cut off, a keepalive
    /// unanswered): the next call there waits for a health check first, so a server that froze
    /// is passed over like one never heard from.
    pub(crate) fn suspect(&self, address: &str) {
        let mut known = self.lock();
        if !known.suspect.iter().any(|suspect| suspect == address)
            && known.suspect.len() < ANSWERED_MAX
        {
            known.suspect.push(address.to_string());
        }
    }

    /// Notes that `address` has answered a call, so its TLS handshake works.
    fn answered(&self, address: &str) {
        let mut known = self.lock();
        known.suspect.retain(|suspect| suspect != address);
        if !known.has_answered(address) && known.answered.len() < ANSWERED_MAX {
            known.answered.push(address.to_string());
        }
    }

    /// [`Error::Handshake`] for a transport failure at `address` that says more than its gRPC
    /// code: an HTTP/2 connection the client itself closed because the first bytes it read
    /// were no HTTP/2 (a plaintext client at a TLS port, whose answer is a TLS alert), or a
    /// TLS connection the server closed before it ever answered (under TLS 1.3 the server
    /// checks the client's certificate after the client's side of the handshake is done, so a
    /// missing or refused client certificate shows only as a connection closed on the first
    /// call).
    fn explained(&self, status: &tonic::Status, address: &str) -> Option<Error> {
        let tls = address.starts_with("https://");
        let never_answered = !self.lock().has_answered(address);
        let shown = shown(address);
        let mut source = std::error::Error::source(status);
        while let Some(err) = source {
            if let Some(h2) = err.downcast_ref::<h2::Error>()
                && !tls
                && h2.is_go_away()
                && h2.is_library()
                && matches!(
                    h2.reason(),
                    Some(h2::Reason::FRAME_SIZE_ERROR | h2::Reason::PROTOCOL_ERROR)
                )
            {
                return Some(Error::Handshake {
                    address: shown.to_string(),
                    detail: format!(
                        "the server at {shown} does not speak plaintext gRPC (its first bytes \
                         were not HTTP/2: {}): it may be another kind of server (a web server), \
                         or serve TLS (then use https:// and --tls-ca)",
                        error_chain(h2)
                    ),
                });
            }
            let canceled = err
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_canceled);
            if canceled && tls && never_answered {
                return Some(tls_refused(shown));
            }
            source = err.source();
        }
        // The same refusal, caught by the close at another point of the first call: what
        // reaches an address never heard from is its health check (`first_answer`), so no
        // write can be behind it.
        if tls && never_answered && broke(status) {
            return Some(tls_refused(shown));
        }
        None
    }

    /// [`Error::Handshake`] for a call that tried until the end and whose last try, at a
    /// plaintext `address` that has never answered, ended in a connection that `broke` before
    /// an answer, in the health check or the call. That is most likely a plaintext client at a
    /// TLS port whose alert was lost: the server closes as soon as it has read the client's
    /// first bytes, and when the client's next bytes arrive after that, the reset they draw
    /// discards the alert unread, so [`Router::explained`] never sees it. A write sent into
    /// such a connection is not changed here ([`settled`] made it an unknown outcome).
    fn broken_before_any_answer(&self, error: Error, address: &str, broke: bool) -> Error {
        let cause = match &error {
            Error::Status(status) => error_chain(status),
            Error::Connect { detail, .. } => detail.clone(),
            _ => return error,
        };
        let never_answered = !self.lock().has_answered(address);
        if !broke || address.starts_with("https://") || !never_answered {
            return error;
        }
        let shown = shown(address);
        Error::Handshake {
            address: shown.to_string(),
            detail: format!(
                "the server at {shown} broke every connection before answering ({cause}): most \
                 likely it does not speak plaintext gRPC; if it serves TLS, use https:// and \
                 --tls-ca"
            ),
        }
    }

    /// Sends calls to the leader at `leader` (HOST:PORT or a URI) from now on.
    fn redirect(&self, leader: &str) {
        let leader = self.uri(leader);
        let mut known = self.lock();
        if !known.addresses.contains(&leader) && known.addresses.len() < ADDRESSES_MAX {
            known.addresses.push(leader.clone());
        }
        known.current = leader;
    }

    /// Moves on from `failed` to the next known address, unless another call moved on already.
    fn rotate(&self, failed: &str) {
        let mut known = self.lock();
        if known.current != failed {
            return;
        }
        let next = match known.addresses.iter().position(|address| address == failed) {
            Some(address_idx) => (address_idx + 1) % known.addresses.len(),
            // A learned leader that was not remembered: start the list over.
            None => 0,
        };
        if let Some(address) = known.addresses.get(next) {
            known.current = address.clone();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        // Every update is a few assignments that cannot panic half-way, so the state behind
        // a poisoned lock is whole.
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The endpoint for `address` (a URI) with this crate's connection settings; an `https`
/// address over `tls`, or the system's roots without it.
fn endpoint(address: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, Error> {
    let invalid = |detail: String| Error::InvalidAddress {
        address: address.to_string(),
        detail,
    };
    let mut endpoint =
        Endpoint::from_shared(address.to_string()).map_err(|err| invalid(error_chain(&err)))?;
    if address.starts_with("https://") {
        let tls = tls
            .cloned()
            .unwrap_or_else(|| ClientTlsConfig::new().with_native_roots());
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|err| invalid(error_chain(&err)))?;
    }
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .max_frame_size(HTTP2_FRAME_BYTES_MAX)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// A TLS server that closed the connection under the first call: under TLS 1.3 the server
/// checks the client's certificate after the client's side of the handshake is done.
fn tls_refused(shown: &str) -> Error {
    Error::Handshake {
        address: shown.to_string(),
        detail: format!(
            "the server at {shown} closed the connection during the TLS handshake: it may \
             require a client certificate (--tls-cert/--tls-key) and have got none, or have \
             refused the one it got (expired, or not signed by its client CA)"
        ),
    }
}

/// What a TLS failure in `error`'s causes means for the one who set the client up, when its
/// own text does not say: a server that answers TLS with plaintext, or a certificate the
/// client has no CA for.
fn tls_hint(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut source = Some(error);
    while let Some(err) = source {
        // An `io::Error` displays the error it wraps but gives that error's source as its own.
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map_or(err, |inner| inner as &(dyn std::error::Error + 'static));
        match inner.downcast_ref::<rustls::Error>() {
            Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
                return Some(
                    "the server does not answer in TLS: if it serves plaintext, use http://",
                );
            }
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
                return Some(
                    "the server's certificate is not signed by a CA this client trusts: give \
                     the CA that signed it with --tls-ca",
                );
            }
            _ => {}
        }
        source = err.source();
    }
    None
}

/// [`error_chain`], followed by what [`tls_hint`] can tell.
fn with_tls_hint(error: &(dyn std::error::Error + 'static)) -> String {
    match tls_hint(error) {
        Some(hint) => format!("{} ({hint})", error_chain(error)),
        None => error_chain(error),
    }
}

/// An error and its causes on one line: transport errors keep the useful part in `source`.
/// A cause whose text the line already ends with, or already holds as one of its parts, is
/// left out: a wrapper that displays its source (an `io::Error` around a TLS error) would
/// otherwise say the same thing twice. A gRPC status made here from a transport error starts
/// at its message (its own text would spell out its code's description and its source's
/// debug form), or at its causes when it is named after one of them ("tcp connect error",
/// "http2 error").
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let first = match error.downcast_ref::<tonic::Status>() {
        // Named after one of its causes ("tcp connect error"): the causes say it in order.
        Some(status) if causes.iter().any(|cause| cause == status.message()) => None,
        Some(status) if error.source().is_some() => Some(status.message().to_string()),
        _ => Some(error.to_string()),
    };
    let mut text = String::new();
    for part in first.into_iter().chain(causes) {
        if text.is_empty() {
            text = part;
        } else if !text.ends_with(&part) && !text.split(": ").any(|said| said == part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

/// How long [`Router::call`] pauses before its `attempt_idx`-th resend (0 for the first),
/// for the bounds' documentation and tests: doubling from the minimum, capped at the maximum.
#[cfg(test)]
fn pause_before(attempt_idx: u32) -> std::time::Duration {
    let mut pause = FOLLOW_PAUSE_MIN;
    for _ in 0..attempt_idx {
        pause = (pause * 2).min(FOLLOW_PAUSE_MAX);
    }
    pause
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use tonic::metadata::{MetadataMap, MetadataValue};
    use tonic_types::{ErrorDetails, StatusExt as _};

    use super::*;
    use crate::error::{LEADER_METADATA_KEY, NOT_LEADER_REASON, OUTCOME_UNKNOWN_REASON};

    fn with_info(code: Code, reason: &str, metadata: &[(&str, &str)]) -> Error {
        let metadata: HashMap<String, String> = metadata
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let details = ErrorDetails::with_error_info(reason, "causeway", metadata);
        Error::from(tonic::Status::with_error_details(code, "refused", details))
    }

    #[test]
    fn with_tls_a_bare_address_is_https_and_a_written_scheme_stays() {
        assert_eq!(
            parse_addresses_as("a:1,http://b:2,https://c:3", true).expect("a valid list"),
            ["https://a:1", "http://b:2", "https://c:3"]
        );
        assert_eq!(
            parse_addresses_as("a:1", false).expect("a valid list"),
            ["http://a:1"]
        );
    }

    #[test]
    fn an_address_list_splits_on_commas_and_becomes_uris() {
        assert_eq!(
            parse_addresses("a:1, b:2 ,http://c:3").expect("a valid list"),
            ["http://a:1", "http://b:2", "http://c:3"]
        );
        assert_eq!(
            parse_addresses("a:1,http://a:1,a:1").expect("a valid list"),
            ["http://a:1"],
            "a repeated address is kept once"
        );
        assert_eq!(
            parse_addresses("127.0.0.1:7420").expect("one address"),
            ["http://127.0.0.1:7420"]
        );
    }

    #[test]
    fn an_address_list_refuses_empty_items_bad_uris_and_too_many() {
        for list in ["", " ", "a:1,", ",a:1", "a:1,,b:2"] {
            let error = parse_addresses(list).expect_err("an empty item");
            assert!(
                matches!(error, Error::InvalidAddress { .. }),
                "{list:?}: {error:?}"
            );
        }
        let bad = parse_addresses("a:1,http://exa mple:1").expect_err("a bad URI");
        let Error::InvalidAddress { address, .. } = &bad else {
            panic!("expected InvalidAddress, got {bad:?}");
        };
        assert_eq!(address, "http://exa mple:1", "the bad one is named");
        let many: Vec<String> = (1..=ADDRESSES_MAX + 1)
            .map(|port| format!("h:{port}"))
            .collect();
        let error = parse_addresses(&many.join(",")).expect_err("over the bound");
        assert!(error.to_string().contains("ADDRESSES_MAX"), "{error}");
        assert!(
            error.to_string().len() < 300,
            "the list is not echoed whole: {error}"
        );
        for wrong in [
            "ftp://a:1",
            "unix://a:1",
            "http://a:1/path",
            "http://a:1/?q=1",
            "http://user@a:1",
            "http://a:1#here",
            "http://a:99999",
            "http://a:0",
            "a:abc",
            "a:+7420",
            "http://a",
            "http://:1",
            "javascript:alert(1)",
        ] {
            let error = parse_addresses(&format!("b:2,{wrong}")).expect_err(wrong);
            let Error::InvalidAddress { address, .. } = &error else {
                panic!("{wrong}: expected InvalidAddress, got {error:?}");
            };
            assert_eq!(address, wrong, "the wrong one is named");
        }
        for right in ["http://a:1", "https://a:1/", "a:1", "[::1]:7420"] {
            parse_addresses(right).unwrap_or_else(|err| panic!("{right}: {err}"));
        }
        let at_bound = many[..ADDRESSES_MAX].join(",");
        assert_eq!(
            parse_addresses(&at_bound).expect("at the bound").len(),
            ADDRESSES_MAX
        );
    }

    #[test]
    fn refusals_that_did_nothing_are_always_sent_again() {
        use Idempotence::*;
        for idempotence in [Idempotent, Keyed, NotIdempotent, Change] {
            let named = with_info(
                Code::Unavailable,
                NOT_LEADER_REASON,
                &[("leader_id", "2"), ("leader_address", "10.0.0.2:7000")],
            );
            assert_eq!(
                next_step(&named, idempotence),
                Step::Redirect("10.0.0.2:7000".to_string())
            );
            let mut metadata = MetadataMap::new();
            metadata.insert(
                LEADER_METADATA_KEY,
                MetadataValue::from_static("10.0.0.3:7000"),
            );
            let header_only = Error::from(tonic::Status::with_metadata(
                Code::Unavailable,
                "not the leader",
                metadata,
            ));
            assert_eq!(
                next_step(&header_only, idempotence),
                Step::Redirect("10.0.0.3:7000".to_string())
            );
            let unknown_leader = with_info(Code::Unavailable, NOT_LEADER_REASON, &[]);
            assert!(
                matches!(unknown_leader, Error::LeaderUnknown { .. }),
                "{unknown_leader:?}"
            );
            assert_eq!(
                next_step(&unknown_leader, idempotence),
                Step::PauseAndRotate
            );
            let unreachable = Error::Connect {
                address: "http://a:1".to_string(),
                detail: "refused".to_string(),
            };
            assert_eq!(next_step(&unreachable, idempotence), Step::PauseAndRotate);
        }
    }

    #[test]
    fn a_write_cut_off_after_it_was_sent_has_an_unknown_outcome() {
        let broken = Error::from(tonic::Status::from_error(Box::new(std::io::Error::other(
            "connection reset",
        ))));
        let Error::OutcomeUnknown { message } = settled(broken, Idempotence::NotIdempotent) else {
            panic!("expected OutcomeUnknown");
        };
        assert!(message.contains("connection reset"), "{message}");
        let broken = Error::from(tonic::Status::from_error(Box::new(std::io::Error::other(
            "connection reset",
        ))));
        assert!(matches!(
            settled(broken, Idempotence::Idempotent),
            Error::Status(_)
        ));
        let broken = Error::from(tonic::Status::from_error(Box::new(std::io::Error::other(
            "connection reset",
        ))));
        let Error::OutcomeUnknown { message } = settled(broken, Idempotence::Keyed) else {
            panic!("a keyed append cut off is an unknown outcome too");
        };
        assert!(message.contains("same idempotency key"), "{message}");
        let denied = Error::from(tonic::Status::invalid_argument("entity is empty"));
        assert!(matches!(
            settled(denied, Idempotence::NotIdempotent),
            Error::Status(_)
        ));
    }

    #[test]
    fn a_status_made_from_a_transport_error_reads_as_its_message_and_causes() {
        let status = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "tcp connect error",
        )));
        let text = error_chain(&status);
        assert_eq!(text, "tcp connect error");
        let answered = tonic::Status::unavailable("no leader is known yet");
        assert!(
            error_chain(&answered).contains("no leader is known yet"),
            "{}",
            error_chain(&answered)
        );
    }

    #[test]
    fn a_cluster_changes_refusal_is_the_servers_answer_and_only_a_broken_call_is_unknown() {
        let refused = Error::from(tonic::Status::unavailable(
            "the leadership went to node 2, not to node 3",
        ));
        assert_eq!(next_step(&refused, Idempotence::Change), Step::Stop);
        let Error::Status(status) = settled(refused, Idempotence::Change) else {
            panic!("a server's refusal of a cluster change stays as it said");
        };
        assert_eq!(
            status.message(),
            "the leadership went to node 2, not to node 3"
        );
        let broken = Error::from(tonic::Status::from_error(Box::new(std::io::Error::other(
            "connection reset",
        ))));
        assert_eq!(next_step(&broken, Idempotence::Change), Step::Stop);
        let Error::OutcomeUnknown { message } = settled(broken, Idempotence::Change) else {
            panic!("a cluster change cut off after it was sent has an unknown outcome");
        };
        assert!(message.contains("GetClusterStatus"), "{message}");
        assert!(!message.contains("idempotency key"), "{message}");
    }

    #[test]
    fn ambiguous_failures_are_sent_again_only_when_idempotent() {
        let outcome_unknown = with_info(Code::Unavailable, OUTCOME_UNKNOWN_REASON, &[]);
        assert!(
            matches!(outcome_unknown, Error::OutcomeUnknown { .. }),
            "{outcome_unknown:?}"
        );
        let unavailable = Error::from(tonic::Status::unavailable("the server is shutting down"));
        // How tonic reports a connection that broke mid-call: a status made here, with the
        // transport's error as its source.
        let status = tonic::Status::from_error(Box::new(std::io::Error::other("stream reset")));
        assert_eq!(status.code(), Code::Unknown);
        assert!(std::error::Error::source(&status).is_some());
        let broken = Error::from(status);
        for error in [&outcome_unknown, &unavailable, &broken] {
            for idempotence in [Idempotence::Idempotent, Idempotence::Keyed] {
                assert_eq!(
                    next_step(error, idempotence),
                    Step::PauseAndRotate,
                    "{error:?}"
                );
            }
            for idempotence in [Idempotence::NotIdempotent, Idempotence::Change] {
                assert_eq!(next_step(error, idempotence), Step::Stop, "{error:?}");
            }
        }
    }

    #[test]
    fn answers_are_never_sent_again() {
        let answers = [
            Error::from(tonic::Status::not_found("no such event")),
            Error::from(tonic::Status::invalid_argument("bad id")),
            Error::from(tonic::Status::resource_exhausted("busy")),
            Error::from(tonic::Status::unknown("the server said so")),
            Error::from(tonic::Status::already_exists("key reused")),
            with_info(Code::FailedPrecondition, "TAG_TAKEN", &[("gate", "g")]),
        ];
        for error in &answers {
            for idempotence in [
                Idempotence::Idempotent,
                Idempotence::Keyed,
                Idempotence::NotIdempotent,
                Idempotence::Change,
            ] {
                assert_eq!(next_step(error, idempotence), Step::Stop, "{error:?}");
            }
        }
    }

    /// A call on a channel to a port nobody listens on fails with a status whose causes say
    /// the connection was never made, so even a write without a key goes elsewhere.
    #[tokio::test]
    async fn a_refused_connection_is_known_to_have_sent_nothing() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("bind an ephemeral port")
            .port();
        let channel = endpoint(&format!("http://127.0.0.1:{port}"), None)
            .expect("a valid endpoint")
            .connect_lazy();
        let mut stub = crate::pb::event_store_service_client::EventStoreServiceClient::new(channel);
        let status = stub
            .head(crate::pb::HeadRequest::default())
            .await
            .expect_err("nothing listens there");
        assert!(never_sent(&status), "{status:?}");
        assert_eq!(
            next_step(&Error::from(status), Idempotence::NotIdempotent),
            Step::PauseAndRotate
        );
    }

    #[test]
    fn pauses_double_up_to_the_maximum_and_fit_the_deadline() {
        assert_eq!(pause_before(0), FOLLOW_PAUSE_MIN);
        assert_eq!(pause_before(1), FOLLOW_PAUSE_MIN * 2);
        assert_eq!(pause_before(30), FOLLOW_PAUSE_MAX);
        // The attempts allowed cover the deadline, so the deadline is what ends a call that
        // waits out an election, not the count.
        let paused: Duration = (0..FOLLOW_ATTEMPTS_MAX - 1).map(pause_before).sum();
        assert!(paused >= FOLLOW_DEADLINE, "{paused:?}");
    }

    #[tokio::test]
    async fn a_redirect_is_remembered_and_rotation_walks_the_list() {
        let router = Router {
            known: Arc::new(Mutex::new(Known {
                addresses: vec!["http://a:1".to_string(), "http://b:2".to_string()],
                current: "http://a:1".to_string(),
                channels: HashMap::new(),
                answered: Vec::new(),
                suspect: Vec::new(),
            })),
            follows: true,
            tls: None,
            credentials: Credentials::default(),
        };
        router.rotate("http://a:1");
        assert_eq!(router.current(), "http://b:2");
        router.rotate("http://a:1");
        assert_eq!(
            router.current(),
            "http://b:2",
            "another call moved on already"
        );
        router.redirect("c:3");
        assert_eq!(router.current(), "http://c:3");
        router.rotate("http://c:3");
        assert_eq!(
            router.current(),
            "http://a:1",
            "the learned leader is last in the list"
        );
        let channel = router.channel_to("http://c:3").expect("a lazy channel");
        drop(channel);
        assert_eq!(
            router.lock().channels.len(),
            1,
            "one channel per address, kept"
        );
    }

    /// A cause that displays the same text as the error it is wrapped in appears once, and
    /// different causes all appear, in order. Catches the TLS refusal the CLI printed twice
    /// (`invalid peer certificate: UnknownIssuer: invalid peer certificate: UnknownIssuer`).
    /// A call that ends at a silent address reports the refusal a live server gave before it
    /// (why there is no quorum), not only that the last address did not answer; a failure
    /// after sending stays as it is, and without a refusal the silence is the answer.
    #[test]
    fn a_call_that_gives_up_reports_the_last_refusal_over_the_silence_after_it() {
        let silent = || Error::Connect {
            address: "http://c:3".to_string(),
            detail: "the server accepted the connection but did not answer".to_string(),
        };
        let refusal = || {
            Error::Status(tonic::Status::unavailable(
                "no linearizable read: only node 1 answered, short of a quorum of the voters",
            ))
        };
        let reported = given_up(silent(), Some(refusal()));
        let Error::Status(status) = &reported else {
            panic!("not the server's status: {reported:?}");
        };
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().starts_with("no linearizable read")
                && status.message().contains("no other address answered")
                && status.message().contains("http://c:3"),
            "{}",
            status.message()
        );

        let unknown = given_up(
            Error::OutcomeUnknown {
                message: "connection reset".to_string(),
            },
            Some(refusal()),
        );
        assert!(
            matches!(&unknown, Error::OutcomeUnknown { message } if message == "connection reset"),
            "{unknown:?}"
        );

        let alone = given_up(silent(), None);
        assert!(matches!(alone, Error::Connect { .. }), "{alone:?}");
    }

    #[test]
    fn an_error_chain_says_a_repeated_cause_once() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|layer| layer as _)
            }
        }
        /// The first text wrapping the second, wrapping the third, and so on.
        fn chain(texts: &[&'static str]) -> Layer {
            let (outer, inner) = texts.split_first().expect("at least one layer");
            Layer(outer, (!inner.is_empty()).then(|| Box::new(chain(inner))))
        }
        // An `io::Error` that displays the rustls error it wraps.
        let transport = chain(&[
            "transport error",
            "invalid peer certificate: UnknownIssuer",
            "invalid peer certificate: UnknownIssuer",
        ]);
        assert_eq!(
            super::error_chain(&transport),
            "transport error: invalid peer certificate: UnknownIssuer"
        );
        let distinct = chain(&["a", "b", "c"]);
        assert_eq!(super::error_chain(&distinct), "a: b: c");
        // A status named after a cause further down (hyper's "http2 error" around h2's).
        let keepalive = chain(&[
            "http2 error",
            "transport error",
            "http2 error",
            "keep-alive timed out",
        ]);
        assert_eq!(
            super::error_chain(&keepalive),
            "http2 error: transport error: keep-alive timed out"
        );
        // A status made here, named after one of its causes: the causes, in their order.
        let mut refused = tonic::Status::unavailable("tcp connect error");
        refused.set_source(std::sync::Arc::new(chain(&[
            "transport error",
            "tcp connect error",
            "Connection refused",
        ])));
        assert_eq!(
            super::error_chain(&refused),
            "transport error: tcp connect error: Connection refused"
        );
    }
}
