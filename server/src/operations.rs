//! `causeway.v1.OperationsService`: a backup of this node's store, streamed to the client.
//!
//! A backup is a store checkpoint ([`Store::checkpoint`]) shipped as files, the same files a
//! Raft snapshot ships (`checkpoint.rs` lists and reads them for both):
//!
//! 1. Admission: at most `BACKUPS_MAX` backups run at once; one more is RESOURCE_EXHAUSTED at
//!    once. The permit goes to the backup's thread and is held until its work has stopped,
//!    so a client that goes away frees the slot only once the thread has noticed.
//! 2. The rest runs on a blocking thread of its own (at most `BACKUPS_MAX` of them, never an
//!    async worker, never a pool thread for the whole transfer), each step taken only while
//!    the client is there:
//!    - the checkpoint, into `backup-N.tmp` in a scratch directory on the store's file system
//!      (the data directory of a single node; the snapshots directory of a cluster node), so
//!      sealed segments are hard links and the copy costs little;
//!    - the check: every committed event through the checkpoint's position, as `Verify`
//!      checks it, page by page; a break is DATA_LOSS in place of the manifest (a backup of a
//!      damaged log would otherwise be refused only at restore);
//!    - the manifest: the position, digest, and every file with its length and blake3
//!      (`CHECKPOINT` first, hashed here; the others from the checkpoint's manifest);
//!    - each file's chunks, `BACKUP_CHUNK_BYTES` at most, at most `BACKUP_BUFFER_MESSAGES`
//!      ahead of the client. A client that takes no message for `BACKUP_SEND_TIMEOUT` is cut
//!      off.
//! 3. Whatever the outcome (done, a failure, the client gone), the thread removes the
//!    checkpoint. A process that dies mid-backup leaves it behind; [`Operations::new`] removes
//!    every `backup-*.tmp` at start-up (a cluster node's state machine removes them too).
//!
//! Failures on this node's disk are answered without its paths ([`Error::Local`]).
//!
//! `Verify` checks one bounded page of the committed log (`Store::verify_range`, at most
//! `VERIFY_PAGE_BYTES_MAX` of frames) on the pool and answers where to continue; a break is
//! named by position, segment file name and offset, never by a path of this node.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use causeway_core::store::{Break, MANIFEST_FILE, Manifest};
use causeway_core::{Position, Store};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::{self, error::SendTimeoutError};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::checkpoint::{files_to_send, hash_file, read_chunks};
use crate::cluster::node::ClusterNode;
use crate::limits::{
    BACKUP_BUFFER_MESSAGES, BACKUP_CHUNK_BYTES, BACKUP_MANIFEST_BYTES_MAX, BACKUP_SEND_TIMEOUT,
    BACKUPS_MAX, VERIFY_PAGE_BYTES_MAX,
};
use crate::live::LiveStore;
use crate::pb;
use crate::pb::operations_service_server::OperationsService;
use crate::pool::Pool;
use crate::status::{Error, to_status};

/// The prefix and suffix of a backup's temporary checkpoint directory.
const TMP_PREFIX: &str = "backup-";
const TMP_SUFFIX: &str = ".tmp";

/// The service: where the store is, the pool checkpoints are taken on, and the backup slots.
#[derive(Clone, Debug)]
pub struct Operations {
    store: LiveStore,
    cluster: Option<Arc<ClusterNode>>,
    pool: Arc<Pool>,
    backups: Arc<Semaphore>,
    /// Numbers the temporary checkpoint directories of this process.
    next_backup: Arc<AtomicU64>,
}

impl Operations {
    /// The service for this node's store, after removing the checkpoints of backups a previous
    /// process left behind.
    pub async fn new(
        store: LiveStore,
        cluster: Option<Arc<ClusterNode>>,
        pool: Arc<Pool>,
    ) -> Operations {
        let operations = Operations {
            store,
            cluster,
            pool,
            backups: Arc::new(Semaphore::new(BACKUPS_MAX)),
            next_backup: Arc::new(AtomicU64::new(1)),
        };
        let scratch = operations.scratch_dir();
        let removed = tokio::task::spawn_blocking(move || remove_leftovers(&scratch)).await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "removing checkpoints of earlier backups"),
            Err(err) => tracing::warn!(%err, "removing checkpoints of earlier backups"),
        }
        operations
    }

    /// Where backups' checkpoints are taken: on the store's file system, so sealed segments
    /// are hard-linked rather than copied.
    fn scratch_dir(&self) -> PathBuf {
        match &self.cluster {
            Some(node) => node.scratch_dir().to_path_buf(),
            None => self.store.get().dir().to_path_buf(),
        }
    }
}

/// Removes every `backup-*.tmp` directory in `dir`.
fn remove_leftovers(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TMP_PREFIX) && name.ends_with(TMP_SUFFIX) {
            tracing::info!(%name, "removing the checkpoint of a backup that did not finish");
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// The stream of a backup's messages.
pub type BackupStream = ReceiverStream<Result<pb::BackupResponse, Status>>;

#[tonic::async_trait]
impl OperationsService for Operations {
    type BackupStream = BackupStream;

    async fn backup(
        &self,
        _request: Request<pb::BackupRequest>,
    ) -> Result<Response<BackupStream>, Status> {
        let permit = self
            .backups
            .clone()
            .try_acquire_owned()
            .map_err(|_| to_status(Error::BackupsFull { max: BACKUPS_MAX }))?;
        let backup_idx = self.next_backup.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .scratch_dir()
            .join(format!("{TMP_PREFIX}{backup_idx}{TMP_SUFFIX}"));
        let store = self.store.get();
        let (sender, receiver) = mpsc::channel(BACKUP_BUFFER_MESSAGES);
        let runtime = tokio::runtime::Handle::current();
        // The permit goes with the work: a client that goes away ends the work at its next
        // step, and only then is the slot free.
        tokio::task::spawn_blocking(move || {
            run_backup(&runtime, &store, &dir, &sender);
            drop(permit);
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let request = request.into_inner();
        let max_bytes = match request.max_bytes {
            0 => VERIFY_PAGE_BYTES_MAX,
            max_bytes => max_bytes.min(VERIFY_PAGE_BYTES_MAX),
        };
        let from = Position(request.from_position.max(1));
        let store = self.store.get();
        let (head, page) = self
            .pool
            .run(move || {
                let head = store.head();
                let page = store.verify_range(from, Position(u64::MAX), max_bytes, &mut |_| {});
                (head, page)
            })
            .await
            .map_err(to_status)?;
        let page = page.map_err(verify_status)?;
        if let Some(found) = &page.first_break {
            log_break(found, "verify found the log broken");
        }
        Ok(Response::new(pb::VerifyResponse {
            checked_events: page.events,
            checked_bytes: page.bytes,
            next_position: page.next.0,
            end: page.end,
            head_position: head.0,
            first_break: page.first_break.map(|found| pb::VerifyBreak {
                position: found.position.0,
                segment: found.segment,
                offset: found.offset,
                detail: found.detail,
            }),
        }))
    }
}

/// The status of a verification that failed (rather than found a break), without this
/// node's paths: the log has them.
fn verify_status(err: causeway_core::Error) -> Status {
    match err {
        causeway_core::Error::Io { source, .. } => {
            tracing::error!(%source, "verify failed on this node's disk");
            Status::unavailable(format!(
                "an i/o error on the node's disk ({}); the node's log has the details",
                source.kind()
            ))
        }
        other => to_status(Error::Core(other)),
    }
}

/// Logs a break in the log at ERROR, with where it is and what differs.
pub(crate) fn log_break(found: &Break, message: &str) {
    tracing::error!(
        position = found.position.0,
        segment = %found.segment,
        offset = found.offset,
        detail = %found.detail,
        "{message}"
    );
}

/// One backup, on its own blocking thread: the checkpoint, the check of the log, then the
/// manifest and the files, each step taken only while the client is there. The checkpoint is
/// removed whatever happens.
fn run_backup(
    runtime: &tokio::runtime::Handle,
    store: &Store,
    dir: &Path,
    sender: &mpsc::Sender<Result<pb::BackupResponse, Status>>,
) {
    let (manifest, files) = match take_checkpoint(store, dir) {
        Ok(taken) => taken,
        // The checkpoint removed what it wrote.
        Err(err) => {
            let _ = sender.try_send(Err(to_status(err)));
            return;
        }
    };
    tracing::info!(
        position = manifest.position,
        n_files = files.len(),
        "backup started"
    );
    let through = Position(manifest.position);
    let first = pb::BackupResponse {
        message: Some(pb::backup_response::Message::Manifest(manifest)),
    };
    match check_log(store, through, sender) {
        // Nothing was sent yet, so the manifest fails to go only if the client has gone.
        Ok(()) => {
            if sender.try_send(Ok(first)).is_ok() {
                send_files(runtime, dir, &files, sender);
            }
        }
        Err(Some(status)) => {
            let _ = sender.try_send(Err(status));
        }
        Err(None) => tracing::info!("backup ended: the client went away"),
    }
    if let Err(err) = std::fs::remove_dir_all(dir) {
        tracing::warn!(%err, dir = %dir.display(), "removing a backup's checkpoint");
    }
}

/// Checks every committed event through `through` as `Verify` does (each frame's CRC, each
/// event's hash), page by page, so that a backup of a damaged log is refused with DATA_LOSS
/// before its first message rather than found out when it is restored.
/// Stops between pages, with `Err(None)`, once the client has gone.
fn check_log(
    store: &Store,
    through: Position,
    client: &mpsc::Sender<Result<pb::BackupResponse, Status>>,
) -> Result<(), Option<Status>> {
    let mut from = Position(1);
    loop {
        if client.is_closed() {
            return Err(None);
        }
        let page = store
            .verify_range(from, through, VERIFY_PAGE_BYTES_MAX, &mut |_| {})
            .map_err(verify_status)?;
        if let Some(found) = page.first_break {
            log_break(&found, "backup refused: the log is broken");
            return Err(Some(Status::data_loss(format!(
                "the backup is refused: the log is broken at position {} (segment {}, offset \
                 {}): {}; `causeway verify --log` finds every break, docs/OPERATIONS.md says \
                 what to do",
                found.position.0, found.segment, found.offset, found.detail
            ))));
        }
        if page.end {
            return Ok(());
        }
        from = page.next;
    }
}

/// Takes the checkpoint into `dir` and lists its files with their lengths and blake3. On a
/// failure, removes what it wrote.
fn take_checkpoint(
    store: &Store,
    dir: &Path,
) -> Result<(pb::BackupManifest, Vec<(String, u64)>), Error> {
    let taken = (|| {
        let checkpoint = store.checkpoint(dir)?;
        let local = |err: io::Error| causeway_core::Error::Io {
            path: dir.to_path_buf(),
            source: err,
        };
        let files = files_to_send(dir).map_err(local)?;
        let (manifest_bytes, manifest_blake3) = hash_file(
            MANIFEST_FILE,
            &dir.join(MANIFEST_FILE),
            BACKUP_MANIFEST_BYTES_MAX,
        )
        .map_err(|err| local(err.into()))?;
        Ok::<_, causeway_core::Error>((checkpoint, files, manifest_bytes, manifest_blake3))
    })();
    let (checkpoint, files, manifest_bytes, manifest_blake3) = match taken {
        Ok(taken) => taken,
        Err(err) => {
            let _ = std::fs::remove_dir_all(dir);
            return Err(Error::Local(err));
        }
    };
    let Manifest {
        position,
        digest,
        files: listed,
        ..
    } = checkpoint;
    let mut wire_files = vec![pb::BackupFile {
        name: MANIFEST_FILE.to_string(),
        size_bytes: manifest_bytes,
        blake3: manifest_blake3.to_vec(),
    }];
    wire_files.extend(listed.into_iter().map(|file| pb::BackupFile {
        name: file.name,
        size_bytes: file.bytes,
        blake3: file.blake3.to_vec(),
    }));
    let manifest = pb::BackupManifest {
        position: position.0,
        digest: digest.to_vec(),
        files: wire_files,
    };
    Ok((manifest, files))
}

/// Sends every file's chunks (on a blocking thread); a failure ends the stream with a status
/// when there is room for one.
fn send_files(
    runtime: &tokio::runtime::Handle,
    dir: &Path,
    files: &[(String, u64)],
    sender: &mpsc::Sender<Result<pb::BackupResponse, Status>>,
) {
    let mut client_gone = false;
    let mut client_stalled = false;
    let read = read_chunks(dir, files, BACKUP_CHUNK_BYTES, |name, offset, data| {
        let chunk = pb::BackupResponse {
            message: Some(pb::backup_response::Message::Chunk(pb::BackupChunk {
                name: name.to_string(),
                offset,
                data,
            })),
        };
        match runtime.block_on(sender.send_timeout(Ok(chunk), BACKUP_SEND_TIMEOUT)) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Closed(_)) => {
                client_gone = true;
                Err(io::Error::other("the client went away"))
            }
            Err(SendTimeoutError::Timeout(_)) => {
                client_stalled = true;
                Err(io::Error::other("the client stopped reading"))
            }
        }
    });
    match read {
        Ok(()) => tracing::info!("backup sent"),
        Err(_) if client_gone => tracing::info!("backup ended: the client went away"),
        Err(_) if client_stalled => {
            tracing::warn!(
                timeout_s = BACKUP_SEND_TIMEOUT.as_secs(),
                "backup ended: the client took no message within BACKUP_SEND_TIMEOUT"
            );
            let _ = sender.try_send(Err(Status::deadline_exceeded(format!(
                "the backup took no message within BACKUP_SEND_TIMEOUT = {BACKUP_SEND_TIMEOUT:?}"
            ))));
        }
        Err(err) => {
            let status = to_status(Error::Local(causeway_core::Error::Io {
                path: dir.to_path_buf(),
                source: err,
            }));
            let _ = runtime.block_on(sender.send_timeout(Err(status), BACKUP_SEND_TIMEOUT));
        }
    }
}
