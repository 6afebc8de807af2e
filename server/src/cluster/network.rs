//! The sending side of node-to-node traffic: openraft's [`RaftNetworkV2`] over
//! `causeway.cluster.v1.RaftService`, one lazily connected channel per target node.
//!
//! Every request carries a header with the target's node id and this node's cluster id; the
//! target checks both (see `identity.rs`). A refusal for a mismatch, like a connection failure,
//! is reported to openraft as `Unreachable`, so it backs off instead of hammering a node that
//! is the wrong one.
//!
//! With TLS configured, every connection to a peer is mutual TLS (`tls.rs`): this node's
//! certificate as the client's, the client CA as the only root, and the peer's certificate must
//! name the node id this connection is for (`node-<id>.causeway`), so an address that now
//! reaches another node, or a host that is no member, fails the handshake.
//!
//! Snapshots are sent as files: the header names every file of the snapshot directory and its
//! length, then each file follows in chunks of `SNAPSHOT_CHUNK_BYTES`, read on a blocking
//! thread. The target verifies the checkpoint's blake3 manifest before installing anything.

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode, OptionalSend, RaftNetworkFactory, RaftNetworkV2};
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};

use super::identity::Identity;
use super::pb;
use super::pb::raft_service_client::RaftServiceClient;
use super::state::{Snapshot, SnapshotDir, encode_snapshot_meta};
use super::types::{TypeConfig, Vote};
use super::wire;
use crate::limits::{
    HTTP2_CONNECTION_WINDOW_BYTES, HTTP2_FRAME_BYTES_MAX, HTTP2_STREAM_WINDOW_BYTES,
    MESSAGE_BYTES_MAX, PEER_ENTRIES_BYTES_MAX, PEER_TIMEOUT, SNAPSHOT_CHUNK_BYTES,
};
use crate::tls::{Tls, node_name};

/// Makes a [`Connection`] to each target openraft replicates to.
#[derive(Clone, Debug)]
pub struct Network {
    identity: Identity,
    local_ip: Option<IpAddr>,
    tls: Option<Tls>,
}

impl Network {
    /// A network that sends as the node `identity` names, from `local_ip` when given (the IP
    /// the node listens on, so a peer sees traffic come from the address it knows the node by),
    /// over mutual TLS when `tls` is given.
    pub fn new(identity: Identity, local_ip: Option<IpAddr>, tls: Option<Tls>) -> Network {
        Network {
            identity,
            local_ip,
            tls,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Connection {
        Connection {
            identity: self.identity.clone(),
            target,
            client: client(target, &node.addr, self.local_ip, self.tls.as_ref()),
            failed_opens: 0,
        }
    }
}

/// A client of node `target`'s `RaftService` at `addr`, connecting on first use (and
/// reconnecting after a failure, which tonic's channel does itself); over mutual TLS with
/// `tls`, checking the certificate names `target`.
pub fn client(
    target: u64,
    addr: &str,
    local_ip: Option<IpAddr>,
    tls: Option<&Tls>,
) -> Result<RaftServiceClient<Channel>, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|err| format!("node address {addr:?}: {err}"))?
        .local_address(local_ip)
        .connect_timeout(PEER_TIMEOUT)
        .tcp_nodelay(true)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
        .max_frame_size(HTTP2_FRAME_BYTES_MAX)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(PEER_TIMEOUT);
    let channel = match tls {
        None => endpoint.connect_lazy(),
        Some(tls) => {
            let tls = tls.clone();
            let addr = addr.to_string();
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                connect_tls(tls.clone(), target, addr.clone(), local_ip)
            }))
        }
    };
    Ok(RaftServiceClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX))
}

/// A TCP connection to `addr` (from `local_ip` when given), then a TLS handshake with the
/// material in force now, which must find `target`'s name in the peer's certificate.
async fn connect_tls(
    tls: Tls,
    target: u64,
    addr: String,
    local_ip: Option<IpAddr>,
) -> std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    let config = tls.current().peer.clone().ok_or_else(|| {
        std::io::Error::other("peer TLS needs tls_client_ca, the CA the nodes' certificates share")
    })?;
    let name = ServerName::try_from(node_name(target)).map_err(std::io::Error::other)?;
    let mut last_error = None;
    for socket_addr in tokio::net::lookup_host(&addr).await? {
        let socket = if socket_addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = local_ip.filter(|ip| ip.is_ipv4() == socket_addr.is_ipv4()) {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        match socket.connect(socket_addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                let stream = TlsConnector::from(config).connect(name, stream).await?;
                return Ok(TokioIo::new(stream));
            }
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error
        .unwrap_or_else(|| std::io::Error::other(format!("{addr} resolves to no address"))))
}

/// One target node.
pub struct Connection {
    identity: Identity,
    target: u64,
    /// The client, or why the target's address cannot be used.
    client: Result<RaftServiceClient<Channel>, String>,
    /// Stream opens that failed in a row (the target down or refusing us).
    failed_opens: u32,
}

/// The pause after a failed stream open, doubling per failure in a row up to the maximum.
/// openraft backs off between the requests of an open stream, not between failed opens, so
/// without it a leader retries a node that is down as fast as connect fails.
const REOPEN_PAUSE_MIN: Duration = Duration::from_millis(25);
const REOPEN_PAUSE_MAX: Duration = Duration::from_millis(800);

/// The pause after `failed_opens` failed opens in a row.
fn reopen_pause(failed_opens: u32) -> Duration {
    REOPEN_PAUSE_MIN
        .saturating_mul(1 << failed_opens.min(16))
        .min(REOPEN_PAUSE_MAX)
}

impl Connection {
    fn header(&self) -> pb::Header {
        pb::Header {
            target_node_id: self.target,
            source_node_id: self.identity.node_id(),
            cluster_id: self.identity.cluster_id().unwrap_or_default(),
        }
    }

    fn client(&self) -> Result<RaftServiceClient<Channel>, RPCError<TypeConfig>> {
        self.client
            .clone()
            .map_err(|detail| RPCError::Unreachable(Unreachable::new(&AnyError::error(detail))))
    }
}

/// A failed call as openraft's error: a target that cannot be reached, or refuses us as the
/// wrong sender, is unreachable (openraft backs off); anything else a network error.
fn rpc_error(status: tonic::Status) -> RPCError<TypeConfig> {
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::FailedPrecondition
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

fn decode_error(err: std::io::Error) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&err))
}

/// Runs a call with openraft's deadline for it.
async fn timed<T>(
    option: &RPCOption,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, RPCError<TypeConfig>> {
    match tokio::time::timeout(option.hard_ttl(), call).await {
        Ok(result) => result.map(tonic::Response::into_inner).map_err(rpc_error),
        Err(_) => Err(RPCError::Unreachable(Unreachable::new(&AnyError::error(
            format!("no answer within {:?}", option.hard_ttl()),
        )))),
    }
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = SnapshotDir;

    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        // Part after part; the first that is not a whole success is the answer.
        let mut answer = AppendEntriesResponse::Success;
        for part in wire::append_to_pb_parts(self.header(), &request, PEER_ENTRIES_BYTES_MAX) {
            let response = timed(&option, client.append_entries(part)).await?;
            answer = wire::append_response_from_pb(response).map_err(decode_error)?;
            if answer != AppendEntriesResponse::Success {
                break;
            }
        }
        Ok(answer)
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let header = self.header();
        let client = self.client();
        let failed_opens = &mut self.failed_opens;
        Box::pin(async move {
            // Each request goes as one message or more (`append_to_pb_parts`); how many is
            // queued as it is sent, and its answers are read back as one.
            let parts_sent = Arc::new(Mutex::new(VecDeque::new()));
            let opened = match client {
                Ok(mut client) => {
                    let parts_sent = parts_sent.clone();
                    let requests = futures_util::StreamExt::flat_map(input, move |request| {
                        let parts = wire::append_to_pb_parts(
                            header.clone(),
                            &request,
                            PEER_ENTRIES_BYTES_MAX,
                        );
                        parts_sent
                            .lock()
                            .expect("parts lock poisoned")
                            .push_back(parts.len());
                        futures_util::stream::iter(parts.into_iter().map(|part| {
                            pb::StreamAppendRequest {
                                request: Some(part),
                            }
                        }))
                    });
                    client.stream_append(requests).await.map_err(rpc_error)
                }
                Err(err) => Err(err),
            };
            let answers = match opened {
                Ok(answers) => answers.into_inner(),
                Err(err) => {
                    tokio::time::sleep(reopen_pause(*failed_opens)).await;
                    *failed_opens = failed_opens.saturating_add(1);
                    return Err(err);
                }
            };
            *failed_opens = 0;
            let answers = answers.map(|answer| {
                wire::stream_result_from_pb(answer.map_err(rpc_error)?).map_err(decode_error)
            });
            let answers = futures_util::stream::unfold(
                (Box::pin(answers), parts_sent),
                |(mut answers, parts_sent)| async move {
                    // A request's first answer comes after all its parts were queued.
                    let mut answer = answers.next().await?;
                    let parts = parts_sent
                        .lock()
                        .expect("parts lock poisoned")
                        .pop_front()
                        .unwrap_or(1);
                    for _ in 1..parts {
                        // A refusal ends the target's stream: it is the request's answer.
                        if !matches!(answer, Ok(Ok(_))) {
                            break;
                        }
                        answer = answers.next().await.unwrap_or_else(|| {
                            Err(RPCError::Network(NetworkError::new(&AnyError::error(
                                "the stream ended between the answers to one request's parts",
                            ))))
                        });
                    }
                    Some((answer, (answers, parts_sent)))
                },
            );
            Ok(Box::pin(answers) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let request = wire::vote_request_to_pb(self.header(), &request);
        let response = timed(&option, client.vote(request)).await?;
        wire::vote_response_from_pb(response).map_err(decode_error)
    }

    async fn pre_vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let request = pb::PreVoteRequest {
            request: Some(wire::vote_request_to_pb(self.header(), &request)),
        };
        let response = timed(&option, client.pre_vote(request)).await?;
        let response = response.response.ok_or_else(|| {
            decode_error(super::codec::invalid("pre-vote response is empty".into()))
        })?;
        wire::vote_response_from_pb(response).map_err(decode_error)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client().map_err(streaming_error)?;
        let dir = snapshot.snapshot.0.clone();
        let files = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || crate::checkpoint::files_to_send(&dir)
        })
        .await
        .map_err(|err| network_streaming_error(&err))?
        .map_err(|err| network_streaming_error(&err))?;
        let header = pb::SnapshotHeader {
            header: Some(self.header()),
            vote: Some(wire::vote_to_pb(&vote)),
            meta: encode_snapshot_meta(&snapshot.meta).into(),
            files: files
                .iter()
                .map(|(name, length)| pb::SnapshotFile {
                    name: name.clone(),
                    length: *length,
                })
                .collect(),
        };
        let (parts, receiver) = tokio::sync::mpsc::channel(4);
        let first = pb::InstallSnapshotRequest {
            part: Some(pb::install_snapshot_request::Part::Header(header)),
        };
        parts
            .send(first)
            .await
            .map_err(|err| network_streaming_error(&err))?;
        // The files are read on a blocking thread; it stops when the call ends and the
        // receiver is dropped.
        let reader = tokio::task::spawn_blocking(move || send_files(&dir, &files, &parts));
        let call = client.install_snapshot(ReceiverStream::new(receiver));
        let response = tokio::select! {
            response = call => response,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        let read = reader.await.map_err(|err| network_streaming_error(&err))?;
        let response = response.map_err(|status| streaming_error(rpc_error(status)))?;
        // An answer stands even when the files were not all sent: the target answers at once,
        // without reading on, a snapshot that ends where it has already committed (a learner
        // that installed this snapshot and was restarted before it answered), and the reader
        // then stops on the closed stream. Taken as a failure, the same snapshot was sent
        // again and again, and the target was never sent what follows it.
        if let Err(err) = read {
            tracing::debug!(target = self.target, %err, "the snapshot was answered before every file was sent");
        }
        let vote = wire::vote_from_pb(response.into_inner().vote, "vote")
            .map_err(|err| network_streaming_error(&err))?;
        Ok(SnapshotResponse::new(vote))
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let request = pb::TransferLeaderRequest {
            header: Some(self.header()),
            from_leader: Some(wire::vote_to_pb(request.from_leader())),
            to_node_id: *request.to_node_id(),
            last_log_id: wire::log_id_to_pb(request.last_log_id()),
        };
        timed(&option, client.transfer_leader(request)).await?;
        Ok(Ok(()))
    }

    fn backoff(&self) -> Option<Backoff> {
        Some(Backoff::new(std::iter::repeat(Duration::from_millis(200))))
    }
}

fn streaming_error(err: RPCError<TypeConfig>) -> StreamingError<TypeConfig> {
    match err {
        RPCError::Unreachable(err) => StreamingError::Unreachable(err),
        RPCError::Timeout(err) => StreamingError::Timeout(err),
        RPCError::Network(err) => StreamingError::Network(err),
        RPCError::RemoteError(err) => StreamingError::Network(NetworkError::new(&err)),
    }
}

fn network_streaming_error(err: &(impl std::error::Error + 'static)) -> StreamingError<TypeConfig> {
    StreamingError::Network(NetworkError::new(err))
}

/// Sends every file's chunks, in order, each file exactly its listed length.
fn send_files(
    dir: &std::path::Path,
    files: &[(String, u64)],
    parts: &tokio::sync::mpsc::Sender<pb::InstallSnapshotRequest>,
) -> std::io::Result<()> {
    crate::checkpoint::read_chunks(dir, files, SNAPSHOT_CHUNK_BYTES, |_name, _offset, chunk| {
        let part = pb::InstallSnapshotRequest {
            part: Some(pb::install_snapshot_request::Part::Chunk(
                pb::SnapshotChunk { data: chunk.into() },
            )),
        };
        parts
            .blocking_send(part)
            .map_err(|_| std::io::Error::other("the snapshot transfer was cut short"))
    })
}
