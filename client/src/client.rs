//! [`Client`]: a connection to a Causeway server or cluster and a typed method per RPC.
//!
//! The methods are thin: they build the request, send it through the client's
//! [`Router`](crate::follow) (which follows the leader of a cluster), unwrap the response's one
//! interesting field and turn a `tonic::Status` into [`Error`]. The client is cheap to clone
//! (clones share the HTTP/2 connections and the knowledge of where the leader is) and every
//! method takes `&self`, so it can be shared across tasks.
//!
//! Given several addresses, the client talks to the first that answers and follows the leader
//! by itself: a follower's refusal naming the leader is sent again there, an election is
//! waited out, and a failure that may have reached the server is sent again only when that is
//! safe (a read, or an append with an idempotency key). `follow.rs` states the rule; the
//! bounds are the `FOLLOW_*` constants here.

use std::time::Duration;

use tokio_stream::{Stream, StreamExt as _};
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::append::AppendBuilder;
use crate::credentials::{Credentials, InvalidToken, Transport};
use crate::error::Error;
use crate::follow::{Idempotence, Router, made_here, parse_addresses, parse_addresses_as};
use crate::pb;
use crate::pb::event_store_service_client::EventStoreServiceClient;
use crate::pb::operations_service_client::OperationsServiceClient;
use crate::tls::Tls;

/// How long [`Client::connect`] waits for the TCP and HTTP/2 handshake, per address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response message accepted. The server cuts read responses well below this, and
/// a subscription message holds whole appends, each at most 16 MiB plus framing.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The largest request message sent: the server's message limit, its per-request bound
/// (`APPEND_BYTES_MAX`, 16 MiB) plus 4 MiB for the protobuf framing of the events' fields, so
/// an append over the bound reaches the server and is refused there, naming the limit.
pub const REQUEST_BYTES_MAX: usize = (16 + 4) * 1024 * 1024;
/// How long a connection may go without hearing from its server before it is pinged, so a
/// call or a subscription to a server that vanished or froze ends with an error (and `tail`
/// resumes elsewhere) within `KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT`, instead of waiting
/// forever.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is considered dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest HTTP/2 frame the server may send (`SETTINGS_MAX_FRAME_SIZE`; the protocol's
/// default is 16 KiB), so a page of events or a subscription batch of hundreds of kilobytes
/// arrives in a few frames, each a system call on both sides, rather than one per 16 KiB. The
/// server accepts the same from clients (`HTTP2_FRAME_BYTES_MAX` in the server's limits).
pub const HTTP2_FRAME_BYTES_MAX: u32 = 1024 * 1024;
/// Events asked for per page by [`Client::read_log_all`] and [`Client::read_entity_all`]: the
/// server's per-read maximum.
pub const READ_PAGE_EVENTS: u32 = 10_000;
/// The most server addresses a client knows: those given plus leaders learned from redirects.
/// A cluster has a handful of members; a longer list is a mistake.
pub const ADDRESSES_MAX: usize = 64;
/// How long one call keeps following the leader (redirects, pauses, resends) before it
/// returns its last error (or the last server's refusal, when the last address was silent).
/// An election takes one to two election timeouts (the server's default is 500 ms); this
/// rides out several. A call already sent is not cut short by it, and a send held past it by
/// a server that stopped answering moves it once, from that send's end.
pub const FOLLOW_DEADLINE: Duration = Duration::from_secs(10);
/// The most sends of one call, redirects included: ends a redirect loop between nodes with
/// stale views sooner than [`FOLLOW_DEADLINE`] would.
pub const FOLLOW_ATTEMPTS_MAX: u32 = 48;
/// The first pause before a call is sent again elsewhere (no leader known, a node
/// unreachable); each further pause doubles, up to [`FOLLOW_PAUSE_MAX`].
pub const FOLLOW_PAUSE_MIN: Duration = Duration::from_millis(50);
/// The longest pause between two sends of one call.
pub const FOLLOW_PAUSE_MAX: Duration = Duration::from_millis(250);
/// How long [`Client::health`] goes on trying (a server that is silent, or breaks every
/// connection, and the others listed), shorter than a call's [`FOLLOW_DEADLINE`] because a
/// probe that asks has a timeout of its own.
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(3);
/// How long a call waits for a server it has not heard from yet to answer a health check,
/// before the call is sent there: a member that accepts connections but does not answer (a
/// frozen process) is passed over for the next address (a lone one is tried again until the
/// follow deadline) instead of holding the call until the HTTP/2 keepalive gives up on it,
/// after which a write's outcome would be unknown.
pub const FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`crate::ClusterAdmin::status_at`] waits for one member's status, so a member that
/// is down or cut off shows as unreachable in a survey instead of holding it up.
pub const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a subscription starts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// At this position, inclusive; to resume, the last position seen plus one.
    Position(u64),
    /// With the first event committed after the subscription starts.
    Now,
}

/// One message of a subscription.
#[derive(Clone, Debug, PartialEq)]
pub enum SubscribeItem {
    /// Matching events, in position order; the events of one append always come together.
    Events(Vec<pb::Event>),
    /// Catch-up from disk is over: everything up to this head position has been delivered, and
    /// live events follow.
    CaughtUp(u64),
    /// Everything up to this position was delivered or filtered out: resume after it.
    Checkpoint(u64),
}

/// A connection to a Causeway server, or to a cluster through any of its members.
#[derive(Clone, Debug)]
pub struct Client {
    router: Router,
    /// How fresh reads must be (in a cluster); linearizable unless changed.
    consistency: pb::ReadConsistency,
}

impl Client {
    /// Connects to `addresses`: one address, or several separated by commas
    /// (`10.0.0.1:7420,10.0.0.2:7420`), each a URI (`http://127.0.0.1:7420`) or `host:port`,
    /// taken as plain-text `http` (`https://` addresses are TLS with the system's roots; see
    /// [`Client::connect_tls`] for a CA or a client certificate). The first address that answers is used; the others (and the
    /// leader, once a follower names it) are where calls go when it stops answering or is not
    /// the leader. Requests and responses are gzip-compressed.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), causeway_client::Error> {
    /// use causeway_client::Client;
    ///
    /// let client = Client::connect("127.0.0.1:7420").await?;
    /// let head = client.head().await?;
    /// println!("the log ends at position {}", head.position);
    ///
    /// // A cluster, through any of its members: calls find the leader and follow it.
    /// let cluster = Client::connect("127.0.0.1:7420,127.0.0.2:7420,127.0.0.3:7420").await?;
    /// # let _ = cluster;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(addresses: &str) -> Result<Client, Error> {
        Ok(Client {
            router: Router::connect(parse_addresses(addresses)?, None).await?,
            consistency: pb::ReadConsistency::Linearizable,
        })
    }

    /// [`Client::connect`] over TLS: `host:port` addresses are dialled as `https`, trusting and
    /// presenting what `tls` says (an explicit `http://` address stays plaintext).
    pub async fn connect_tls(addresses: &str, tls: &Tls) -> Result<Client, Error> {
        Ok(Client {
            router: Router::connect(parse_addresses_as(addresses, true)?, Some(tls)).await?,
            consistency: pb::ReadConsistency::Linearizable,
        })
    }

    /// [`Client::connect`] with the addresses as a slice; an item may itself be a
    /// comma-separated list.
    pub async fn connect_many(addresses: &[impl AsRef<str>]) -> Result<Client, Error> {
        let list: Vec<&str> = addresses.iter().map(AsRef::as_ref).collect();
        Client::connect(&list.join(",")).await
    }

    /// A client over an existing channel (for TLS or custom settings), with gzip and the
    /// message bounds of this module. It has nowhere else to go, so it sends every call once
    /// and returns a follower's refusal as [`Error::NotLeader`].
    pub fn from_channel(channel: Channel) -> Client {
        Client {
            router: Router::from_channel(channel),
            consistency: pb::ReadConsistency::Linearizable,
        }
    }

    /// The address calls go to now: the leader's, once a follower named it.
    pub fn address(&self) -> String {
        self.router.current()
    }

    /// The same client, reading at `consistency`: `Linearizable` (the default) sees every
    /// append acknowledged before the read; `Leader` and `Local` are cheaper and may lag (a
    /// `Local` read on a follower says how far it had applied).
    pub fn with_consistency(mut self, consistency: pb::ReadConsistency) -> Client {
        self.consistency = consistency;
        self
    }

    /// The generated stub over the connection to where calls go now, for calls this wrapper
    /// does not cover; calls through it do not follow the leader.
    pub fn raw(&self) -> EventStoreServiceClient<Transport> {
        stub(self.router.channel().1, self.router.credentials())
    }

    /// The same client, sending `token` as `authorization: Bearer <token>` on every call,
    /// streaming ones included (the server's policy file maps it to a principal).
    pub fn with_token(mut self, token: &str) -> Result<Client, InvalidToken> {
        self.router.set_credentials(Credentials::bearer(token)?);
        Ok(self)
    }

    /// The connection to where calls go now (the leader's, once a follower named it), for
    /// other services on the same server (gRPC health); calls through it do not follow the
    /// leader.
    pub fn channel(&self) -> Channel {
        self.router.channel().1
    }

    /// The `OperationsService` stub over the connection to where calls go now. A backup is of
    /// the node asked, so it is sent once and never redirected.
    pub fn operations(&self) -> OperationsServiceClient<Transport> {
        OperationsServiceClient::new(self.router.credentials().attach(self.channel()))
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(RESPONSE_BYTES_MAX)
            .max_encoding_message_size(REQUEST_BYTES_MAX)
    }

    /// Sends a call built by `call` (on a fresh stub each attempt), following the leader.
    async fn call<T, F, Fut>(&self, idempotence: Idempotence, mut call: F) -> Result<T, Error>
    where
        F: FnMut(EventStoreServiceClient<Transport>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let response = self
            .router
            .call(idempotence, |channel| {
                call(stub(channel, self.router.credentials()))
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Appends events atomically under the append's conditions and gates; answers after the
    /// events are durable. A refusal is [`Error::Denied`] or [`Error::Conflict`], and nothing of
    /// the append was written.
    ///
    /// ```no_run
    /// # async fn run(client: causeway_client::Client) -> Result<(), causeway_client::Error> {
    /// use causeway_client::{AppendBuilder, Error, EventBuilder, Expected};
    ///
    /// let pay = AppendBuilder::new()
    ///     .event(EventBuilder::new("acme", "order-7", "OrderPaid"))
    ///     .expect("acme", "order-7", Expected::Exact(1))
    ///     .idempotency_key("pay-order-7");
    /// match client.append(pay.clone()).await {
    ///     Ok(receipt) => println!("written at position {}", receipt.events[0].position),
    ///     Err(Error::Conflict { actual, .. }) => println!("order-7 is at {actual}: re-read"),
    ///     Err(Error::Denied { gate, code, .. }) => println!("refused by {gate}: {code}"),
    ///     // Sending it again with the same key writes it at most once.
    ///     Err(Error::OutcomeUnknown { .. }) => {
    ///         client.append(pay).await?;
    ///     }
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn append(&self, append: AppendBuilder) -> Result<pb::Receipt, Error> {
        let request = append.build();
        // With a key the server applies the append once however often it is sent.
        let idempotence = if request.idempotency_key.is_empty() {
            Idempotence::NotIdempotent
        } else {
            Idempotence::Keyed
        };
        let response = self
            .call(idempotence, |mut stub| {
                let request = request.clone();
                async move { stub.append(request).await }
            })
            .await?;
        response.receipt.ok_or(Error::MissingField("receipt"))
    }

    /// Opens an [`AppendStream`](crate::AppendStream) to where calls go now (the leader, once
    /// known): many appends over one call, answered in order. Its messages are not compressed.
    pub async fn append_stream(&self) -> Result<crate::AppendStream, Error> {
        let (requests, sent) = crate::stream::request_channel();
        let mut stub =
            EventStoreServiceClient::new(self.router.credentials().attach(self.router.channel().1))
                .max_decoding_message_size(RESPONSE_BYTES_MAX)
                .max_encoding_message_size(REQUEST_BYTES_MAX);
        let answers = stub.append_stream(sent).await?.into_inner();
        Ok(crate::AppendStream::new(requests, answers))
    }

    /// Evaluates an append's conditions and gates without writing; returns the (unsigned)
    /// receipt it would get now. A later append may change the answer.
    pub async fn dry_run(&self, append: AppendBuilder) -> Result<pb::Receipt, Error> {
        let request = pb::DryRunRequest {
            append: Some(append.build()),
        };
        let response = self
            .call(Idempotence::Idempotent, |mut stub| {
                let request = request.clone();
                async move { stub.dry_run(request).await }
            })
            .await?;
        response.receipt.ok_or(Error::MissingField("receipt"))
    }

    /// One event by id; an unknown id is a NOT_FOUND [`Error::Status`].
    pub async fn get(&self, id: &str) -> Result<pb::Event, Error> {
        let request = pb::GetRequest {
            id: id.to_string(),
            consistency: self.consistency.into(),
        };
        let response = self
            .call(Idempotence::Idempotent, |mut stub| {
                let request = request.clone();
                async move { stub.get(request).await }
            })
            .await?;
        response.event.ok_or(Error::MissingField("event"))
    }

    /// Up to `limit` events of one entity, from `from_version` (inclusive) in `direction`;
    /// backward from 0 starts at the entity's last event. Fewer only at the entity's end: a
    /// page the server cut short (its answers stop near 4 MiB) is followed by the next
    /// ([`Client::read_entity_all`] says where to continue).
    ///
    /// ```no_run
    /// # async fn run(client: causeway_client::Client) -> Result<(), causeway_client::Error> {
    /// use causeway_client::pb::Direction;
    ///
    /// let history = client.read_entity("acme", "order-7", 1, Direction::Forward, 100).await?;
    /// let last = client.read_entity("acme", "order-7", 0, Direction::Backward, 1).await?;
    /// # let _ = (history, last);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_entity(
        &self,
        scope: &str,
        entity: &str,
        from_version: u64,
        direction: pb::Direction,
        limit: u32,
    ) -> Result<Vec<pb::Event>, Error> {
        let all = self
            .read_entity_all(scope, entity, from_version, direction, limit as usize)
            .await?;
        Ok(all.events)
    }

    /// One page of an entity: its events from `from_version` in `direction`, at most `limit`
    /// and fewer when their bytes would pass the server's bound for one answer; where to
    /// continue (`next_version`) and whether the entity's end was reached.
    pub async fn read_entity_page(
        &self,
        scope: &str,
        entity: &str,
        from_version: u64,
        direction: pb::Direction,
        limit: u32,
    ) -> Result<pb::ReadEntityResponse, Error> {
        let request = pb::ReadEntityRequest {
            scope: scope.to_string(),
            entity: entity.to_string(),
            from_version,
            direction: direction.into(),
            limit,
            consistency: self.consistency.into(),
        };
        self.call(Idempotence::Idempotent, |mut stub| {
            let request = request.clone();
            async move { stub.read_entity(request).await }
        })
        .await
    }

    /// Reads an entity page by page until its end or until `max_events` events were read, and
    /// answers like one big page: the events, where to continue, and whether the end was
    /// reached. Every event is held in memory: bound `max_events`, or page with
    /// [`Client::read_entity_page`]. A `max_events` of 0 is refused by the server, as a page's
    /// limit of 0 is.
    pub async fn read_entity_all(
        &self,
        scope: &str,
        entity: &str,
        from_version: u64,
        direction: pb::Direction,
        max_events: usize,
    ) -> Result<pb::ReadEntityResponse, Error> {
        let mut all = pb::ReadEntityResponse {
            events: Vec::new(),
            next_version: from_version,
            end: false,
            applied_position: 0,
        };
        loop {
            let wanted = u32::try_from(max_events - all.events.len()).unwrap_or(u32::MAX);
            let page = self
                .read_entity_page(
                    scope,
                    entity,
                    all.next_version,
                    direction,
                    wanted.min(READ_PAGE_EVENTS),
                )
                .await?;
            let stalled = page.events.is_empty() && !page.end;
            all.events.extend(page.events);
            all.next_version = page.next_version;
            all.end = page.end;
            all.applied_position = page.applied_position;
            // A page that neither ends the read nor holds an event would loop forever.
            if page.end || stalled || all.events.len() >= max_events {
                return Ok(all);
            }
        }
    }

    /// One page of the log: up to `limit` matching events from `from_position` (inclusive) in
    /// `direction`, where to continue, and whether the read reached the end. Backward from 0
    /// starts at the head. A page may hold fewer events than `limit` (even none) before the
    /// end, when the filter skipped many events; continue from `next_position`.
    ///
    /// ```no_run
    /// # async fn run(client: causeway_client::Client) -> Result<(), causeway_client::Error> {
    /// use causeway_client::FilterBuilder;
    /// use causeway_client::pb::Direction;
    ///
    /// // Every event tagged customer:42, page by page.
    /// let filter = FilterBuilder::new().item(Vec::<String>::new(), ["customer:42"]).build();
    /// let mut from = 1;
    /// loop {
    ///     let page = client.read_log(from, Direction::Forward, 500, filter.clone()).await?;
    ///     for event in &page.events {
    ///         println!("#{} {}", event.position, event.r#type);
    ///     }
    ///     if page.end {
    ///         break;
    ///     }
    ///     from = page.next_position;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_log(
        &self,
        from_position: u64,
        direction: pb::Direction,
        limit: u32,
        filter: pb::Filter,
    ) -> Result<pb::ReadLogResponse, Error> {
        let request = pb::ReadLogRequest {
            from_position,
            direction: direction.into(),
            limit,
            filter: Some(filter),
            consistency: self.consistency.into(),
        };
        self.call(Idempotence::Idempotent, |mut stub| {
            let request = request.clone();
            async move { stub.read_log(request).await }
        })
        .await
    }

    /// Reads the log page by page until its end or until `max_events` matching events were
    /// read, and answers like one big page: the events, where to continue, and whether the end
    /// was reached. Every event is held in memory: bound `max_events`, or page with
    /// [`Client::read_log`]. A forward page of the server holds the whole append of its last
    /// event, so it may hold more than was asked; what is cut off here is not skipped: where
    /// to continue is then the position after the last event returned.
    pub async fn read_log_all(
        &self,
        from_position: u64,
        direction: pb::Direction,
        filter: pb::Filter,
        max_events: usize,
    ) -> Result<pb::ReadLogResponse, Error> {
        let mut all = pb::ReadLogResponse {
            applied_position: 0,
            events: Vec::new(),
            next_position: from_position,
            end: false,
        };
        // At least one request, so that a `max_events` of 0 is refused as a page's limit of 0.
        loop {
            // Never ask for more than is still wanted, so `next_position` stays exact.
            let wanted =
                u32::try_from(max_events.saturating_sub(all.events.len())).unwrap_or(u32::MAX);
            let page = self
                .read_log(
                    all.next_position,
                    direction,
                    wanted.min(READ_PAGE_EVENTS),
                    filter.clone(),
                )
                .await?;
            let stalled = page.next_position == all.next_position && page.events.is_empty();
            all.events.extend(page.events);
            all.next_position = page.next_position;
            all.end = page.end;
            // A page that neither ends the read nor moves the cursor would loop forever.
            if page.end || stalled || all.events.len() >= max_events {
                break;
            }
        }
        if all.events.len() > max_events {
            all.events.truncate(max_events);
            let last = all
                .events
                .last()
                .map_or(from_position, |event| event.position);
            all.next_position = match direction {
                pb::Direction::Backward => last.saturating_sub(1),
                _ => last + 1,
            };
            all.end = false;
        }
        Ok(all)
    }

    /// The committed head position (0 for an empty log) and the log digest there.
    pub async fn head(&self) -> Result<pb::HeadResponse, Error> {
        let request = pb::HeadRequest {
            consistency: self.consistency.into(),
        };
        self.call(Idempotence::Idempotent, |mut stub| async move {
            stub.head(request).await
        })
        .await
    }

    /// The serving status the server's gRPC health service gives for `service` (`""` for the
    /// server as a whole), asked as any read is but for at most [`HEALTH_DEADLINE`]: an
    /// address that is no Causeway server, or that does not answer, is named as such
    /// ([`Error::Handshake`], [`Error::Connect`]). An unknown service is the server's
    /// NOT_FOUND.
    pub async fn health(&self, service: &str) -> Result<ServingStatus, Error> {
        let response = self
            .router
            .call_within(HEALTH_DEADLINE, Idempotence::Idempotent, |channel| {
                let request = HealthCheckRequest {
                    service: service.to_string(),
                };
                async move { HealthClient::new(channel).check(request).await }
            })
            .await?;
        Ok(ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown))
    }

    /// Follows the log from `start`: matching events from disk, then [`SubscribeItem::CaughtUp`],
    /// then live events as they are committed, with [`SubscribeItem::Checkpoint`]s while the
    /// filter skips events. Ordered, without duplicates or gaps; the stream ends with an error
    /// (or `None` when the server closes it) and can be resumed from the last position seen
    /// plus one.
    ///
    /// ```no_run
    /// # async fn run(client: causeway_client::Client) -> Result<(), causeway_client::Error> {
    /// use causeway_client::{FilterBuilder, Start, SubscribeItem};
    /// use tokio_stream::StreamExt as _;
    ///
    /// let filter = FilterBuilder::new().scope("acme").build();
    /// let mut stream = client.subscribe(Start::Position(1), filter).await?;
    /// // Where to resume after an error: one past the last position seen.
    /// let mut resume_at = 1;
    /// while let Some(item) = stream.next().await {
    ///     match item? {
    ///         SubscribeItem::Events(events) => {
    ///             for event in &events {
    ///                 println!("#{} {}", event.position, event.r#type);
    ///                 resume_at = event.position + 1;
    ///             }
    ///         }
    ///         SubscribeItem::CaughtUp(head) => println!("caught up at {head}; live from here"),
    ///         SubscribeItem::Checkpoint(position) => resume_at = position + 1,
    ///     }
    /// }
    /// # let _ = resume_at;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn subscribe(
        &self,
        start: Start,
        filter: pb::Filter,
    ) -> Result<impl Stream<Item = Result<SubscribeItem, Error>> + Send + Unpin + 'static, Error>
    {
        let start = match start {
            Start::Position(position) => pb::subscribe_request::Start::FromPosition(position),
            Start::Now => pb::subscribe_request::Start::FromNow(true),
        };
        let request = pb::SubscribeRequest {
            start: Some(start),
            filter: Some(filter),
        };
        // Opening the subscription follows like a read; once open, an error ends the stream
        // and the caller resumes from the last position seen. A stream cut off marks its
        // server suspect, so the resume goes elsewhere unless that server still answers.
        let stream = self
            .call(Idempotence::Idempotent, |mut stub| {
                let request = request.clone();
                async move { stub.subscribe(request).await }
            })
            .await?;
        let router = self.router.clone();
        let address = router.current();
        Ok(stream.filter_map(move |message| match message {
            Err(status) => {
                if made_here(&status) {
                    router.suspect(&address);
                }
                Some(Err(Error::from(status)))
            }
            Ok(response) => subscribe_item(response).map(Ok),
        }))
    }

    /// The event and its causes, following up to `depth` causation links, at most `limit`
    /// nodes; `truncated` says when either bound cut the walk short.
    pub async fn ancestors(&self, id: &str, depth: u32, limit: u32) -> Result<pb::Graph, Error> {
        let request = pb::GetAncestorsRequest {
            id: id.to_string(),
            depth,
            limit,
        };
        let response = self
            .call(Idempotence::Idempotent, |mut stub| {
                let request = request.clone();
                async move { stub.get_ancestors(request).await }
            })
            .await?;
        response.graph.ok_or(Error::MissingField("graph"))
    }

    /// The event and its effects, following up to `depth` causation links, at most `limit`
    /// nodes.
    pub async fn descendants(&self, id: &str, depth: u32, limit: u32) -> Result<pb::Graph, Error> {
        let request = pb::GetDescendantsRequest {
            id: id.to_string(),
            depth,
            limit,
        };
        let response = self
            .call(Idempotence::Idempotent, |mut stub| {
                let request = request.clone();
                async move { stub.get_descendants(request).await }
            })
            .await?;
        response.graph.ok_or(Error::MissingField("graph"))
    }

    /// Every event of a correlation, in position order (a causal order), at most `limit`.
    pub async fn correlation(&self, correlation_id: &str, limit: u32) -> Result<pb::Graph, Error> {
        let request = pb::GetCorrelationRequest {
            correlation_id: correlation_id.to_string(),
            limit,
        };
        let response = self
            .call(Idempotence::Idempotent, |mut stub| {
                let request = request.clone();
                async move { stub.get_correlation(request).await }
            })
            .await?;
        response.graph.ok_or(Error::MissingField("graph"))
    }

    /// Registers a gate, or replaces the one with the same name; returns the receipt of the
    /// registration event, whose position is the gate's version. A CEL syntax error is refused.
    pub async fn register_gate(
        &self,
        definition: pb::GateDefinition,
    ) -> Result<pb::Receipt, Error> {
        let request = pb::RegisterGateRequest {
            definition: Some(definition),
        };
        let response = self
            .call(Idempotence::NotIdempotent, |mut stub| {
                let request = request.clone();
                async move { stub.register_gate(request).await }
            })
            .await?;
        response.receipt.ok_or(Error::MissingField("receipt"))
    }

    /// The gates in force, by name.
    pub async fn list_gates(&self) -> Result<Vec<pb::RegisteredGate>, Error> {
        let response = self
            .call(Idempotence::Idempotent, |mut stub| async move {
                stub.list_gates(pb::ListGatesRequest {}).await
            })
            .await?;
        Ok(response.gates)
    }

    /// Removes a registered gate; returns the receipt of the removal event.
    pub async fn remove_gate(&self, name: &str) -> Result<pb::Receipt, Error> {
        let request = pb::RemoveGateRequest {
            name: name.to_string(),
        };
        let response = self
            .call(Idempotence::NotIdempotent, |mut stub| {
                let request = request.clone();
                async move { stub.remove_gate(request).await }
            })
            .await?;
        response.receipt.ok_or(Error::MissingField("receipt"))
    }

    /// One page of `OperationsService.Verify` on the server this client talks to now: checks
    /// the committed log from `from_position` (frames' CRCs and the hash chain), reading about
    /// `max_bytes` (0: the server's page bound), and says where to continue or where the log
    /// breaks.
    pub async fn verify_log(
        &self,
        from_position: u64,
        max_bytes: u64,
    ) -> Result<pb::VerifyResponse, Error> {
        self.operations()
            .verify(pb::VerifyRequest {
                from_position,
                max_bytes,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::from)
    }

    /// Asks the server to check a receipt against its stored events and its signing key. For
    /// a check that does not trust the server, use [`crate::receipt::verify`].
    pub async fn verify_receipt(
        &self,
        receipt: pb::Receipt,
    ) -> Result<pb::VerifyReceiptResponse, Error> {
        let request = pb::VerifyReceiptRequest {
            receipt: Some(receipt),
        };
        self.call(Idempotence::Idempotent, |mut stub| {
            let request = request.clone();
            async move { stub.verify_receipt(request).await }
        })
        .await
    }
}

/// The item a subscription message carries; `None` for a message with nothing set (from a
/// newer server's variant this client does not know).
fn subscribe_item(response: pb::SubscribeResponse) -> Option<SubscribeItem> {
    use pb::subscribe_response::Message;
    match response.message? {
        Message::Events(batch) => Some(SubscribeItem::Events(batch.events)),
        Message::CaughtUp(caught_up) => Some(SubscribeItem::CaughtUp(caught_up.position)),
        Message::Checkpoint(checkpoint) => Some(SubscribeItem::Checkpoint(checkpoint.position)),
    }
}

/// The generated stub over `channel`, with gzip and the message bounds of this module.
fn stub(channel: Channel, credentials: Credentials) -> EventStoreServiceClient<Transport> {
    EventStoreServiceClient::new(credentials.attach(channel))
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(RESPONSE_BYTES_MAX)
        .max_encoding_message_size(REQUEST_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_messages_map_to_items() {
        use pb::subscribe_response::Message;
        let event = pb::Event {
            position: 9,
            ..pb::Event::default()
        };
        let events = pb::SubscribeResponse {
            message: Some(Message::Events(pb::EventBatch {
                events: vec![event.clone()],
            })),
        };
        assert_eq!(
            subscribe_item(events),
            Some(SubscribeItem::Events(vec![event]))
        );
        let caught_up = pb::SubscribeResponse {
            message: Some(Message::CaughtUp(pb::CaughtUp { position: 12 })),
        };
        assert_eq!(subscribe_item(caught_up), Some(SubscribeItem::CaughtUp(12)));
        let checkpoint = pb::SubscribeResponse {
            message: Some(Message::Checkpoint(pb::Checkpoint { position: 30 })),
        };
        assert_eq!(
            subscribe_item(checkpoint),
            Some(SubscribeItem::Checkpoint(30))
        );
        assert_eq!(
            subscribe_item(pb::SubscribeResponse { message: None }),
            None
        );
    }

    /// The client's connection preface tells the server it may send frames of up to
    /// `HTTP2_FRAME_BYTES_MAX`. A bare listener reads the preface's SETTINGS frame.
    #[tokio::test]
    async fn connect_asks_for_large_http2_frames() {
        use std::io::Read;

        const MAX_FRAME_SIZE: u16 = 0x5;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let reader = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut preface = [0u8; 24];
            stream.read_exact(&mut preface).expect("the client preface");
            assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
            let mut header = [0u8; 9];
            stream.read_exact(&mut header).expect("the first frame");
            assert_eq!(header[3], 0x4, "the preface goes on with a SETTINGS frame");
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).expect("the settings");
            payload.chunks_exact(6).find_map(|setting| {
                (u16::from_be_bytes([setting[0], setting[1]]) == MAX_FRAME_SIZE)
                    .then(|| u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]))
            })
        });
        // The listener never answers, so the connection attempt is left to time out.
        let connecting = tokio::spawn(async move { Client::connect(&addr.to_string()).await });
        let max_frame_size = tokio::task::spawn_blocking(move || reader.join())
            .await
            .expect("join")
            .expect("the reader thread");
        connecting.abort();
        assert_eq!(max_frame_size, Some(HTTP2_FRAME_BYTES_MAX));
    }

    #[tokio::test]
    async fn connect_refuses_a_bad_address_and_names_an_unreachable_one() {
        let bad = Client::connect("http://exa mple:1").await;
        assert!(matches!(bad, Err(Error::InvalidAddress { .. })), "{bad:?}");
        // A port nobody listens on: bind one, then drop the listener.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("bind an ephemeral port")
            .port();
        let error = Client::connect(&format!("127.0.0.1:{port}"))
            .await
            .expect_err("nothing listens there");
        let Error::Connect { address, .. } = &error else {
            panic!("expected Connect, got {error:?}");
        };
        assert_eq!(address, &format!("http://127.0.0.1:{port}"));
    }
}
