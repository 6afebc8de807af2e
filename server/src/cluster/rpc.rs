//! The receiving side of node-to-node traffic: `causeway.cluster.v1.RaftService`, handing each
//! message to the local openraft node after checking its header.
//!
//! A request for another node id or another cluster id is refused with FAILED_PRECONDITION and
//! the reason; a malformed message with INVALID_ARGUMENT naming what is wrong; a Raft node that
//! has stopped with UNAVAILABLE.
//!
//! A snapshot arrives as a stream: a header listing the files, then their chunks. The files are
//! written under the state machine's snapshots directory with a temporary name (removed by the
//! next open if the node crashes meanwhile); each must be exactly its listed length, names
//! must stay inside the directory, and the total is bounded by the header. Once whole, the
//! checkpoint is verified here (its manifest, every file's blake3, the metadata's last log id)
//! and refused as INVALID_ARGUMENT if it does not hold: handed to openraft, an install that fails
//! stops the node. Then openraft installs it, switching store generations in one rename.
//!
//! Over mutual TLS (a node configured with TLS), the sender's client certificate must name the
//! node its header says it comes from (`node-<id>.causeway`, see `tls.rs`): a client whose
//! certificate the CA signed for another purpose, or another node's, is refused with
//! PERMISSION_DENIED before anything reaches openraft.
//!
//! Votes, leader messages, snapshots, leadership transfers and read indexes come only from a
//! member as this node knows the membership, and from the node their vote names; a snapshot
//! that ends within what this node has committed is answered without installing anything.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::ReadPolicy;
use openraft::async_runtime::WatchReceiver;
use openraft::raft::TransferLeaderRequest;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use rustls::pki_types::CertificateDer as Certificate;

use super::identity::Identity;
use super::node::Raft;
use super::pb;
use super::pb::raft_service_server::RaftService;
use super::state::{Snapshot, SnapshotDir, check_received, decode_snapshot_meta};
use super::wire;
use crate::limits::{SNAPSHOT_CHUNK_TIMEOUT, SNAPSHOT_FILES_MAX};
use crate::status::{Error, to_status};
use crate::tls::{names_node, node_name};

/// The service, over this node's Raft.
#[derive(Clone)]
pub struct Peers {
    raft: Raft,
    identity: Identity,
    /// Where incoming snapshots are written: `{dir}/incoming-{n}.tmp`.
    snapshots_dir: PathBuf,
    /// Whether peers arrive over mutual TLS, so each must prove its node id by certificate.
    mtls: bool,
    /// Turns true when the server shuts down: a leader's replication stream into this node
    /// then ends, so the server's graceful shutdown does not wait out its grace on it.
    stopping: tokio::sync::watch::Receiver<bool>,
}

static TRANSFERS: AtomicU64 = AtomicU64::new(0);

impl Peers {
    /// The service for `raft`, checking requests against `identity` and, with `mtls`, the
    /// sender's certificate against the node id it claims; every replication stream into this
    /// node ends once `stopping` turns true.
    pub fn new(
        raft: Raft,
        identity: Identity,
        snapshots_dir: PathBuf,
        mtls: bool,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Peers {
        Peers {
            raft,
            identity,
            snapshots_dir,
            mtls,
            stopping,
        }
    }

    /// Checks a request's header, and with mutual TLS that `certs` (the sender's chain) names
    /// the node the header says sent it.
    fn check(
        &self,
        header: Option<&pb::Header>,
        certs: Option<&[Certificate<'static>]>,
    ) -> Result<(), Status> {
        let header = self.check_certs(header, certs)?;
        self.identity
            .check(header.target_node_id, &header.cluster_id)
            .map_err(|mismatch| Status::failed_precondition(mismatch.to_string()))
    }

    /// The header, present, and with mutual TLS sent by the node it names.
    fn check_certs<'h>(
        &self,
        header: Option<&'h pb::Header>,
        certs: Option<&[Certificate<'static>]>,
    ) -> Result<&'h pb::Header, Status> {
        let header = header.ok_or_else(|| bad("header", "it is missing"))?;
        if self.mtls {
            let source = header.source_node_id;
            let named = certs
                .and_then(|certs| certs.first())
                .is_some_and(|leaf| names_node(leaf, source));
            if !named {
                return Err(Status::permission_denied(format!(
                    "the client certificate does not name node {source} ({}); only that node \
                     may send as it",
                    node_name(source)
                )));
            }
        }
        Ok(header)
    }

    /// A vote or a leader's message comes from the node its vote names, and that node is a
    /// member as this node knows the membership (a node that knows none yet takes any). A node
    /// outside the cluster, such as a removed one, cannot start an election here.
    fn check_sender(
        &self,
        header: Option<&pb::Header>,
        vote: Option<&pb::Vote>,
    ) -> Result<(), Status> {
        let source = header.map_or(0, |header| header.source_node_id);
        let named = vote.map_or(0, |vote| vote.node_id);
        if source != named {
            return Err(bad(
                "header.source_node_id",
                format!("it is {source}, but the vote names node {named}"),
            ));
        }
        self.check_member(source)
    }

    /// Node `source` is a member as this node knows the membership (a node that knows none
    /// yet takes any).
    fn check_member(&self, source: u64) -> Result<(), Status> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        if membership.nodes().next().is_some() && membership.get_node(&source).is_none() {
            return Err(Status::failed_precondition(format!(
                "node {source} is not a member of this node's cluster"
            )));
        }
        Ok(())
    }

    /// The answer to a snapshot ending at `last` when this node has committed through it
    /// already: its own vote, nothing installed.
    fn already_committed(
        &self,
        last: Option<&super::types::LogId>,
    ) -> Option<pb::InstallSnapshotResponse> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let committed = metrics.local_committed.as_ref()?;
        (last.map_or(0, |last| last.index) <= committed.index).then(|| {
            pb::InstallSnapshotResponse {
                vote: Some(wire::vote_to_pb(&metrics.vote)),
            }
        })
    }
}

/// The last item of a StreamAppend answer stream: the refusal that ended its input, if one did.
struct Refusal(Option<tokio::sync::oneshot::Receiver<Status>>);

impl tokio_stream::Stream for Refusal {
    type Item = Result<pb::StreamAppendResponse, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let Some(refusal) = self.0.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let refused = std::task::ready!(std::pin::Pin::new(refusal).poll(cx));
        self.0 = None;
        std::task::Poll::Ready(refused.ok().map(Err))
    }
}

/// A field of a peer's request that does not convert: the converters name it in the message.
fn invalid(err: std::io::Error) -> Status {
    bad("request", err.to_string())
}

/// INVALID_ARGUMENT naming `field` in a BadRequest, as every one the server sends does.
fn bad(field: &str, reason: impl Into<String>) -> Status {
    to_status(Error::invalid(field, reason))
}

fn stopped(err: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("this node's raft has stopped: {err}"))
}

#[tonic::async_trait]
impl RaftService for Peers {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let certs = request.peer_certs();
        let request = request.into_inner();
        self.check(request.header.as_ref(), certs.as_deref().map(Vec::as_slice))?;
        self.check_sender(request.header.as_ref(), request.vote.as_ref())?;
        let request = wire::append_from_pb(request).map_err(invalid)?;
        let response = self.raft.append_entries(request).await.map_err(stopped)?;
        Ok(Response::new(wire::append_response_to_pb(&response)))
    }

    type StreamAppendStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::StreamAppendResponse, Status>> + Send>,
    >;

    async fn stream_append(
        &self,
        request: Request<Streaming<pb::StreamAppendRequest>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let peers = self.clone();
        let certs = request.peer_certs();
        // A request that fails its checks ends the input; its error is the stream's last item.
        let (refusal_tx, refusal_rx) = tokio::sync::oneshot::channel::<Status>();
        let mut refusal_tx = Some(refusal_tx);
        let input = request.into_inner().map_while(move |item| {
            let checked = item.and_then(|item| {
                let request = item
                    .request
                    .ok_or_else(|| bad("request", "it is missing"))?;
                peers.check(request.header.as_ref(), certs.as_deref().map(Vec::as_slice))?;
                peers.check_sender(request.header.as_ref(), request.vote.as_ref())?;
                wire::append_from_pb(request).map_err(invalid)
            });
            match checked {
                Ok(request) => Some(request),
                Err(status) => {
                    if let Some(refusal) = refusal_tx.take() {
                        let _ = refusal.send(status);
                    }
                    None
                }
            }
        });
        // The answers are the response itself, polled by the call's own task: a task and a
        // channel between them cost each round of replication one more turn of the runtime.
        // A node shutting down ends the stream, which a leader keeps open for good otherwise.
        let mut stopping = self.stopping.clone();
        let input = futures_util::StreamExt::take_until(input, async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        });
        let answers = self.raft.stream_append(input).map(|result| match result {
            Ok(result) => Ok(wire::stream_result_to_pb(&result)),
            Err(fatal) => Err(stopped(fatal)),
        });
        Ok(Response::new(Box::pin(
            answers.chain(Refusal(Some(refusal_rx))),
        )))
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        let certs = request.peer_certs();
        let request = request.into_inner();
        self.check(request.header.as_ref(), certs.as_deref().map(Vec::as_slice))?;
        self.check_sender(request.header.as_ref(), request.vote.as_ref())?;
        let request = wire::vote_request_from_pb(request).map_err(invalid)?;
        let response = self.raft.vote(request).await.map_err(stopped)?;
        Ok(Response::new(wire::vote_response_to_pb(&response)))
    }

    async fn pre_vote(
        &self,
        request: Request<pb::PreVoteRequest>,
    ) -> Result<Response<pb::PreVoteResponse>, Status> {
        let certs = request.peer_certs();
        let request = request
            .into_inner()
            .request
            .ok_or_else(|| bad("request", "it is missing"))?;
        self.check(request.header.as_ref(), certs.as_deref().map(Vec::as_slice))?;
        self.check_sender(request.header.as_ref(), request.vote.as_ref())?;
        let request = wire::vote_request_from_pb(request).map_err(invalid)?;
        let response = self.raft.pre_vote(request).await.map_err(stopped)?;
        Ok(Response::new(pb::PreVoteResponse {
            response: Some(wire::vote_response_to_pb(&response)),
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::InstallSnapshotRequest>>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        let certs = request.peer_certs();
        let mut parts = request.into_inner();
        let first = next_part(&mut parts)
            .await?
            .ok_or_else(|| bad("part", "the snapshot stream is empty"))?;
        let Some(pb::install_snapshot_request::Part::Header(header)) = first.part else {
            return Err(bad(
                "part",
                "the first message of a snapshot must be its header",
            ));
        };
        self.check(header.header.as_ref(), certs.as_deref().map(Vec::as_slice))?;
        self.check_sender(header.header.as_ref(), header.vote.as_ref())?;
        let vote = wire::vote_from_pb(header.vote, "vote").map_err(invalid)?;
        let meta = decode_snapshot_meta(&header.meta).map_err(invalid)?;
        // A snapshot that ends at or before what this node knows to be committed adds nothing
        // (this node has those entries), and openraft takes one whose terms contradict the
        // committed log for a broken invariant and stops. It is answered without installing.
        if let Some(answer) = self.already_committed(meta.last_log_id.as_ref()) {
            return Ok(Response::new(answer));
        }
        if header.files.len() > SNAPSHOT_FILES_MAX {
            return Err(bad(
                "part.header.files",
                format!(
                    "the snapshot lists {} files, over SNAPSHOT_FILES_MAX = {SNAPSHOT_FILES_MAX}",
                    header.files.len()
                ),
            ));
        }
        check_file_names(&header.files)?;
        let transfer = TRANSFERS.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .snapshots_dir
            .join(format!("incoming-{}-{transfer}.tmp", std::process::id()));
        let mut received = receive_files(&dir, &header.files, &mut parts).await;
        if received.is_ok() {
            // A checkpoint that does not hold what its metadata says is refused here, as an
            // answer to the sender; handed to openraft, an install that fails stops the node.
            let (dir, meta) = (dir.clone(), meta.clone());
            // Files are named as the sender named them, never by this machine's directories.
            let prefix = format!("{}/", dir.display());
            received = tokio::task::spawn_blocking(move || check_received(&dir, &meta))
                .await
                .map_err(|err| Status::internal(format!("checking the snapshot: {err}")))
                .and_then(|checked| {
                    checked.map_err(|err| {
                        let err = err.to_string().replace(&prefix, "");
                        bad("part", format!("the snapshot is refused: {err}"))
                    })
                });
        }
        let result = match received {
            Ok(()) => {
                let snapshot = Snapshot {
                    meta,
                    snapshot: SnapshotDir(dir.clone()),
                };
                self.raft
                    .install_full_snapshot(vote, snapshot)
                    .await
                    .map_err(stopped)
            }
            Err(status) => Err(status),
        };
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        let response = result?;
        Ok(Response::new(pb::InstallSnapshotResponse {
            vote: Some(wire::vote_to_pb(&response.vote)),
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let certs = request.peer_certs();
        let request = request.into_inner();
        self.check(request.header.as_ref(), certs.as_deref().map(Vec::as_slice))?;
        self.check_sender(request.header.as_ref(), request.from_leader.as_ref())?;
        let from = wire::vote_from_pb(request.from_leader, "from_leader").map_err(invalid)?;
        let request = TransferLeaderRequest::new(
            from,
            request.to_node_id,
            wire::log_id_from_pb(request.last_log_id),
        );
        self.raft
            .handle_transfer_leader(request)
            .await
            .map_err(stopped)?
            .map_err(|err| Status::failed_precondition(err.to_string()))?;
        Ok(Response::new(pb::TransferLeaderResponse {}))
    }

    async fn probe(
        &self,
        request: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        let certs = request.peer_certs();
        let request = request.into_inner();
        let header =
            self.check_certs(request.header.as_ref(), certs.as_deref().map(Vec::as_slice))?;
        self.identity
            .probe(header.target_node_id, &header.cluster_id)
            .map_err(|mismatch| Status::failed_precondition(mismatch.to_string()))?;
        Ok(Response::new(pb::ProbeResponse {}))
    }

    async fn read_index(
        &self,
        request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        let certs = request.peer_certs();
        let request = request.into_inner();
        self.check(request.header.as_ref(), certs.as_deref().map(Vec::as_slice))?;
        self.check_member(
            request
                .header
                .as_ref()
                .map_or(0, |header| header.source_node_id),
        )?;
        let read = self
            .raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map_err(|err| match err {
                openraft::error::RaftError::APIError(
                    openraft::error::LinearizableReadError::ForwardToLeader(_),
                ) => Status::unavailable("no read index: this node is not the leader"),
                err => Status::unavailable(format!("no read index: {err}")),
            })?;
        Ok(Response::new(pb::ReadIndexResponse {
            index: read.log_id().index,
        }))
    }
}

async fn next_part(
    parts: &mut Streaming<pb::InstallSnapshotRequest>,
) -> Result<Option<pb::InstallSnapshotRequest>, Status> {
    match tokio::time::timeout(SNAPSHOT_CHUNK_TIMEOUT, parts.next()).await {
        Ok(part) => part.transpose(),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no snapshot chunk within {SNAPSHOT_CHUNK_TIMEOUT:?}"
        ))),
    }
}

/// A file name of a snapshot as a relative path that stays inside the snapshot directory.
fn safe_name(name: &str) -> Result<PathBuf, Status> {
    // Part by part, as text: `Path::components` drops a `.` and an empty part, so `events/.`
    // would pass as `events` and be written as a file. No empty part also means no root.
    let inside = !name.is_empty()
        && name.len() <= 255
        && !name.contains('\0')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if !inside {
        return Err(bad(
            "part.header.files.name",
            format!(
                "snapshot file name {:?} is not a relative path inside the snapshot",
                name.chars().take(64).collect::<String>()
            ),
        ));
    }
    Ok(PathBuf::from(name))
}

/// Each name is a [`safe_name`], given once, and no file's name is another's directory (`events`
/// beside `events/x`): the files can all be written, before any is.
fn check_file_names(files: &[pb::SnapshotFile]) -> Result<(), Status> {
    let mut names = std::collections::BTreeSet::new();
    for file in files {
        safe_name(&file.name)?;
        if !names.insert(file.name.as_str()) {
            return Err(bad(
                "part.header.files.name",
                format!(
                    "snapshot file {:?} is listed twice",
                    file.name.chars().take(64).collect::<String>()
                ),
            ));
        }
    }
    for name in &names {
        let clash = name
            .match_indices('/')
            .map(|(at, _)| &name[..at])
            .find(|directory| names.contains(directory));
        if let Some(directory) = clash {
            return Err(bad(
                "part.header.files.name",
                format!(
                    "snapshot file {:?} is also the directory of another listed file",
                    directory.chars().take(64).collect::<String>()
                ),
            ));
        }
    }
    Ok(())
}

/// Writes every listed file from the stream's chunks; each must be exactly its length, and no
/// chunk may follow the last file.
async fn receive_files(
    dir: &Path,
    files: &[pb::SnapshotFile],
    parts: &mut Streaming<pb::InstallSnapshotRequest>,
) -> Result<(), Status> {
    let io = |err: std::io::Error| Status::internal(format!("writing the snapshot: {err}"));
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    for file in files {
        let path = dir.join(safe_name(&file.name)?);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        let mut out = tokio::fs::File::create(&path).await.map_err(io)?;
        let mut left = file.length;
        while left > 0 {
            let part = next_part(parts).await?.ok_or_else(|| {
                bad(
                    "part",
                    format!(
                        "the snapshot stream ended {left} bytes before the end of {:?}",
                        file.name
                    ),
                )
            })?;
            let Some(pb::install_snapshot_request::Part::Chunk(chunk)) = part.part else {
                return Err(bad("part.header", "a second snapshot header"));
            };
            if chunk.data.len() as u64 > left {
                return Err(bad(
                    "part.chunk.data",
                    format!(
                        "a chunk runs past the end of {:?} ({} bytes listed)",
                        file.name, file.length
                    ),
                ));
            }
            left -= chunk.data.len() as u64;
            out.write_all(&chunk.data).await.map_err(io)?;
        }
        // A tokio file writes on a blocking thread: flushing waits for the last write.
        out.flush().await.map_err(io)?;
    }
    if next_part(parts).await?.is_some() {
        return Err(bad(
            "part",
            "the snapshot stream goes on past its last file",
        ));
    }
    Ok(())
}
