//! Writing a backup: `causeway.v1.OperationsService.Backup` streamed into a directory, every
//! byte checked on the way.
//!
//! The stream is a manifest (position, digest, every file with its length and blake3), then
//! each file's chunks in order. [`backup`] writes them into `DIR.tmp-PID` beside the target,
//! hashing each file as it is written and comparing it with the manifest when the file is
//! complete; a chunk out of order, a stream that ends early, or a file whose blake3 differs is
//! a [`BackupError`] naming the file. Then it checks that the checkpoint's own manifest
//! (`CHECKPOINT`) names the same position and digest, writes `BACKUP` (position, digest and
//! the blake3 of `CHECKPOINT`: what `causewayd restore` starts from), syncs every file and
//! directory, and renames the directory into place. A failure removes the temporary
//! directory, so a directory named `DIR` is always a whole backup.
//!
//! File writes run on a blocking thread, never on the async runtime's threads.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Component, Path, PathBuf};

use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;

use crate::client::Client;
use crate::error::Error;
use crate::pb;

/// The backup's own manifest file, written last: position, digest, and the blake3 of
/// [`CHECKPOINT_FILE`].
pub const BACKUP_FILE: &str = "BACKUP";
/// The store checkpoint's manifest, the first file of the stream.
pub const CHECKPOINT_FILE: &str = "CHECKPOINT";
/// The version of the `BACKUP` file's format.
pub const BACKUP_FORMAT: u32 = 1;
/// Files a backup manifest may list (the server's `BACKUP_FILES_MAX`, plus `CHECKPOINT`).
pub const BACKUP_FILES_MAX: usize = 100_001;
/// Chunks received ahead of the thread that writes them.
pub const BACKUP_WRITE_QUEUE: usize = 4;

/// What [`backup`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    /// The position the backup holds events up to: a store restored from it has this head.
    pub position: u64,
    /// The log digest at `position` (32 bytes).
    pub digest: Vec<u8>,
    /// Files written, `CHECKPOINT` included (`BACKUP` not).
    pub n_files: usize,
    /// Bytes of those files.
    pub n_bytes: u64,
}

/// Why a backup was not written. Whatever the reason, nothing is left at the target.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target exists and is not an empty directory.
    #[error("{} is not empty: a backup is written into a new or empty directory", .0.display())]
    NotEmpty(PathBuf),
    /// The server refused or failed the backup, or the connection broke.
    #[error(transparent)]
    Server(#[from] Error),
    /// The stream broke its contract: a chunk out of order, a file cut short, a bad name.
    #[error("the backup stream is malformed at {file}: {detail}")]
    Stream {
        /// The file concerned, as the manifest names it.
        file: String,
        /// What was wrong.
        detail: String,
    },
    /// A file arrived whole but its blake3 differs from the manifest's.
    #[error("{file} arrived damaged: its blake3 is {actual}, the manifest says {expected}")]
    Checksum {
        /// The file, as the manifest names it.
        file: String,
        /// The blake3 of what arrived, hex.
        actual: String,
        /// The manifest's, hex.
        expected: String,
    },
    /// A local file could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

fn stream_error(file: &str, detail: impl Into<String>) -> BackupError {
    BackupError::Stream {
        file: file.to_string(),
        detail: detail.into(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Takes a backup of the store of the server `client` talks to now (any member of a cluster
/// backs up what it has applied) into `to`, which must not exist or be empty.
pub async fn backup(client: &Client, to: &Path) -> Result<Backup, BackupError> {
    check_target(to)?;
    let mut stream = client
        .operations()
        .backup(pb::BackupRequest {})
        .await
        .map_err(Error::from)?
        .into_inner();
    let manifest = match stream.next().await {
        Some(Ok(pb::BackupResponse {
            message: Some(pb::backup_response::Message::Manifest(manifest)),
        })) => manifest,
        Some(Ok(_)) => return Err(stream_error("(start)", "the first message is no manifest")),
        Some(Err(status)) => return Err(Error::from(status).into()),
        None => {
            return Err(stream_error(
                "(start)",
                "the stream ended before its manifest",
            ));
        }
    };
    check_manifest(&manifest)?;
    let tmp = temporary_name(to);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_error(&tmp))?;
    }
    let (chunks, received) = mpsc::channel(BACKUP_WRITE_QUEUE);
    let writer = {
        let tmp = tmp.clone();
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || write_files(&tmp, &manifest, received))
    };
    // Chunks go to the writer in order; a server error ends the forwarding, and the writer then
    // finds its file cut short. The server's error is the one reported.
    let mut server_error = None;
    while let Some(message) = stream.next().await {
        match message {
            Ok(pb::BackupResponse {
                message: Some(pb::backup_response::Message::Chunk(chunk)),
            }) => {
                if chunks.send(chunk).await.is_err() {
                    break; // The writer stopped on an error of its own.
                }
            }
            Ok(_) => {
                server_error = Some(stream_error("(stream)", "a second manifest"));
                break;
            }
            Err(status) => {
                server_error = Some(Error::from(status).into());
                break;
            }
        }
    }
    drop(chunks);
    let written = writer
        .await
        .map_err(|err| stream_error("(writer)", format!("the writing thread failed: {err}")));
    let result = match (server_error, written) {
        (Some(err), _) => Err(err),
        (None, Err(err)) | (None, Ok(Err(err))) => Err(err),
        (None, Ok(Ok(n_bytes))) => {
            let to = to.to_path_buf();
            let tmp = tmp.clone();
            let manifest = manifest.clone();
            tokio::task::spawn_blocking(move || finish(&tmp, &to, &manifest).map(|()| n_bytes))
                .await
                .map_err(|err| {
                    stream_error("(writer)", format!("the writing thread failed: {err}"))
                })
                .and_then(|finished| finished)
        }
    };
    match result {
        Ok(n_bytes) => Ok(Backup {
            position: manifest.position,
            digest: manifest.digest,
            n_files: manifest.files.len(),
            n_bytes,
        }),
        Err(err) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(err)
        }
    }
}

/// The target must be absent or an empty directory.
fn check_target(to: &Path) -> Result<(), BackupError> {
    match fs::read_dir(to) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(BackupError::NotEmpty(to.to_path_buf())),
        },
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotADirectory => {
            Err(BackupError::NotEmpty(to.to_path_buf()))
        }
        Err(err) => Err(io_error(to)(err)),
    }
}

/// `DIR.tmp-PID`, beside `DIR`.
fn temporary_name(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    to.with_file_name(name)
}

/// The manifest's shape: `CHECKPOINT` first, the rest inside `events/`, hashes of 32 bytes.
fn check_manifest(manifest: &pb::BackupManifest) -> Result<(), BackupError> {
    if manifest.digest.len() != 32 {
        return Err(stream_error("(manifest)", "the digest is not 32 bytes"));
    }
    if manifest.files.len() > BACKUP_FILES_MAX {
        return Err(stream_error(
            "(manifest)",
            format!(
                "it lists {} files, over BACKUP_FILES_MAX = {BACKUP_FILES_MAX}",
                manifest.files.len()
            ),
        ));
    }
    match manifest.files.first() {
        Some(first) if first.name == CHECKPOINT_FILE => {}
        _ => {
            return Err(stream_error(
                "(manifest)",
                "the first file is not CHECKPOINT",
            ));
        }
    }
    for file in &manifest.files[1..] {
        let mut components = Path::new(&file.name).components();
        let inside = components.next() == Some(Component::Normal("events".as_ref()))
            && matches!(components.next(), Some(Component::Normal(_)))
            && components.next().is_none();
        if !inside {
            return Err(stream_error(&file.name, "not a file name inside events/"));
        }
    }
    for file in &manifest.files {
        if file.blake3.len() != 32 {
            return Err(stream_error(&file.name, "its blake3 is not 32 bytes"));
        }
    }
    Ok(())
}

/// Writes every file of the manifest into `tmp` from the chunks, checking order, lengths and
/// blake3, and syncs each file; returns the bytes written.
fn write_files(
    tmp: &Path,
    manifest: &pb::BackupManifest,
    mut chunks: mpsc::Receiver<pb::BackupChunk>,
) -> Result<u64, BackupError> {
    let events_dir = tmp.join("events");
    fs::create_dir_all(&events_dir).map_err(io_error(&events_dir))?;
    let mut n_bytes = 0;
    for file in &manifest.files {
        let path = tmp.join(&file.name);
        let mut out = File::create(&path).map_err(io_error(&path))?;
        let mut hasher = blake3::Hasher::new();
        let mut written = 0u64;
        while written < file.size_bytes {
            let chunk = chunks.blocking_recv().ok_or_else(|| {
                stream_error(
                    &file.name,
                    format!(
                        "the stream ended after {written} of its {} bytes",
                        file.size_bytes
                    ),
                )
            })?;
            if chunk.name != file.name || chunk.offset != written {
                return Err(stream_error(
                    &file.name,
                    format!(
                        "expected its bytes from offset {written}, got {} at offset {}",
                        chunk.name, chunk.offset
                    ),
                ));
            }
            let n_chunk = chunk.data.len() as u64;
            if n_chunk == 0 || written + n_chunk > file.size_bytes {
                return Err(stream_error(
                    &file.name,
                    format!(
                        "a chunk of {n_chunk} bytes at offset {written} does not fit its {} bytes",
                        file.size_bytes
                    ),
                ));
            }
            hasher.update(&chunk.data);
            out.write_all(&chunk.data).map_err(io_error(&path))?;
            written += n_chunk;
        }
        let actual = hasher.finalize();
        if actual.as_bytes()[..] != file.blake3[..] {
            return Err(BackupError::Checksum {
                file: file.name.clone(),
                actual: hex::encode(actual.as_bytes()),
                expected: hex::encode(&file.blake3),
            });
        }
        out.sync_all().map_err(io_error(&path))?;
        n_bytes += written;
    }
    if let Some(chunk) = chunks.blocking_recv() {
        return Err(stream_error(
            &chunk.name,
            "a chunk after the last file's last byte",
        ));
    }
    Ok(n_bytes)
}

/// Checks `CHECKPOINT` against the manifest, writes `BACKUP`, syncs the directories and
/// renames `tmp` to `to`.
fn finish(tmp: &Path, to: &Path, manifest: &pb::BackupManifest) -> Result<(), BackupError> {
    let checkpoint_path = tmp.join(CHECKPOINT_FILE);
    let checkpoint_bytes = fs::read(&checkpoint_path).map_err(io_error(&checkpoint_path))?;
    let checkpoint: serde_json::Value = serde_json::from_slice(&checkpoint_bytes)
        .map_err(|err| stream_error(CHECKPOINT_FILE, format!("does not parse: {err}")))?;
    let digest = hex::encode(&manifest.digest);
    if checkpoint["position"].as_u64() != Some(manifest.position)
        || checkpoint["digest"].as_str() != Some(digest.as_str())
    {
        return Err(stream_error(
            CHECKPOINT_FILE,
            format!(
                "it names position {} digest {}, the manifest position {} digest {digest}",
                checkpoint["position"], checkpoint["digest"], manifest.position
            ),
        ));
    }
    let backup_file = format!(
        "format={BACKUP_FORMAT}\nposition={}\ndigest={digest}\ncheckpoint_blake3={}\n",
        manifest.position,
        hex::encode(&manifest.files[0].blake3),
    );
    let backup_path = tmp.join(BACKUP_FILE);
    let mut out = File::create(&backup_path).map_err(io_error(&backup_path))?;
    out.write_all(backup_file.as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(io_error(&backup_path))?;
    let events_dir = tmp.join("events");
    sync_dir(&events_dir)?;
    sync_dir(tmp)?;
    if to.exists() {
        // Checked empty before the backup started; rename replaces only an empty directory.
        fs::remove_dir(to).map_err(io_error(to))?;
    }
    fs::rename(tmp, to).map_err(io_error(to))?;
    let parent = match to.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    sync_dir(parent)
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(dir))
}
