//! Checkpoints: a consistent copy of the store at a committed position, cheap to take while
//! appends go on, that opens as a store of its own. What snapshots for lagging replicas and
//! backups ship.
//!
//! A checkpoint is taken at the committed head `P` read once at the start. Sealed segments
//! never change, so each one that lies wholly at or before `P` is hard-linked (copied where
//! the file system cannot link), with its `.idx` sidecar when it has one. The segment that
//! holds `P` is copied up to where the committed frames end (`P`'s, or an applied mark after
//! it): the committed prefix, which the writer never rewrites (it appends after it, or rolls
//! to a new segment). Nothing after `P` is in the
//! copy, so opening it gives the head `P` and the digest the store had at `P`.
//!
//! The manifest (`CHECKPOINT`, JSON) names the position, the digest, the last replicated log
//! entry recorded at or before `P`, and every file with its length and blake3, so a receiver
//! can check what it got ([`Manifest::verify`]) before it installs it. It is written last,
//! through a temporary name, fsync and rename: a directory without it is not a checkpoint.
//!
//! A hard link shares the file with the live store. That is safe because the store never
//! changes a sealed segment in place; should a future repair cut into one, it must copy first.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use super::{Committed, Store, recovery};
use crate::command::EntryId;
use crate::disk::{self, OsDisk};
use crate::error::{Error, Result};
use crate::event::{Hash, Position};
use crate::metafile;
use crate::segment;

/// The name of a checkpoint's manifest file, beside its `events/` directory.
pub const MANIFEST_FILE: &str = "CHECKPOINT";

/// What a checkpoint holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// The committed head the checkpoint was taken at; a store opened on it has this head.
    pub position: Position,
    /// The log digest at `position`, as lowercase hex.
    #[serde(with = "hex32")]
    pub digest: Hash,
    /// The last replicated log entry recorded at or before `position`, if any.
    pub applied: Option<EntryId>,
    /// Every file of the checkpoint, relative to its directory, in name order.
    pub files: Vec<ManifestFile>,
}

/// One file of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestFile {
    /// The path relative to the checkpoint directory (`events/00000000000000000001.seg`).
    pub name: String,
    /// Its length in bytes.
    pub bytes: u64,
    /// blake3 of its bytes, as lowercase hex.
    #[serde(with = "hex32")]
    pub blake3: Hash,
}

impl Manifest {
    /// Reads the manifest of the checkpoint in `dir`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = fs::read(&path).map_err(|err| Error::io(&path, err))?;
        serde_json::from_slice(&bytes)
            .map_err(|err| Error::corrupt(&path, 0, format!("manifest does not parse: {err}")))
    }

    /// Checks that every file the manifest names is in `dir` with its length and blake3, and
    /// that no other file is in its `events/`. A difference is [`Error::Corrupt`] naming the
    /// file.
    pub fn verify(&self, dir: &Path) -> Result<()> {
        let events_dir = dir.join("events");
        let mut present: Vec<String> = fs::read_dir(&events_dir)
            .map_err(|err| Error::io(&events_dir, err))?
            .map(|entry| {
                entry
                    .map(|entry| format!("events/{}", entry.file_name().to_string_lossy()))
                    .map_err(|err| Error::io(&events_dir, err))
            })
            .collect::<Result<_>>()?;
        present.sort();
        let named: Vec<&str> = self.files.iter().map(|file| file.name.as_str()).collect();
        if present != named {
            return Err(Error::corrupt(
                &events_dir,
                0,
                format!("holds {present:?}, the manifest names {named:?}"),
            ));
        }
        for file in &self.files {
            let path = dir.join(&file.name);
            let (bytes, blake3) = hash_file(&path)?;
            if bytes != file.bytes || blake3 != file.blake3 {
                return Err(Error::corrupt(
                    &path,
                    0,
                    format!(
                        "has {bytes} bytes and blake3 {}, the manifest says {} and {}",
                        hex(&blake3),
                        file.bytes,
                        hex(&file.blake3)
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Store {
    /// Writes a consistent copy of the store at its committed head into `dir` (which must not
    /// exist, or be empty), and returns its manifest. Appends go on meanwhile; the copy holds
    /// exactly the events up to the head read at the start. [`Store::open`] on `dir` gives that
    /// head and digest. Sealed segments are hard-linked, so the cost is one copy of the active
    /// segment's committed prefix plus reading every file once for its checksum.
    pub fn checkpoint(&self, dir: impl AsRef<Path>) -> Result<Manifest> {
        let dir = dir.as_ref();
        let Committed {
            head,
            digest,
            entry,
            end: (end_segment, end_offset),
        } = self.committed();
        let (segments, head_end) = {
            let index = self.shared.index.read().expect("index lock poisoned");
            let head_end = (head > 0).then(|| index.loc(head).end());
            (index.segments_through(head), head_end)
        };
        if dir.exists()
            && fs::read_dir(dir)
                .map_err(|err| Error::io(dir, err))?
                .next()
                .is_some()
        {
            return Err(Error::InvalidInput(format!(
                "checkpoint directory {} is not empty",
                dir.display()
            )));
        }
        let events_dir = dir.join("events");
        // A checkpoint is a copy beside the store, written to the real disk: the store's own
        // disk seam (a test's simulated disk) covers only the store's directory.
        disk::create_dir_all(&OsDisk, &events_dir).map_err(|err| Error::io(&events_dir, err))?;
        let (last, sealed) = segments
            .split_last()
            .expect("a log has at least one segment");
        for &first in sealed {
            let from = segment::segment_path(&self.shared.events_dir, first);
            link_or_copy(&from, &segment::segment_path(&events_dir, first))?;
            let idx = recovery::idx_path(&self.shared.events_dir, first);
            // Written by a thread of its own after the roll, and renamed into place whole: it
            // is there or not. Without it, opening the checkpoint scans the segment.
            if idx.exists() {
                link_or_copy(&idx, &recovery::idx_path(&events_dir, first))?;
            }
        }
        let from = segment::segment_path(&self.shared.events_dir, *last);
        let to = segment::segment_path(&events_dir, *last);
        // The committed frames end at `end_offset`, applied marks after the head's event
        // included. A segment starts only with an event, so the head's segment is the one the
        // committed group ended in; should it not be, the head's own frame ends the copy.
        let prefix = if *last == end_segment {
            end_offset
        } else {
            head_end.unwrap_or(segment::SEGMENT_HEADER_BYTES)
        };
        copy_prefix(&from, &to, prefix)?;
        segment::sync_dir(&OsDisk, &events_dir)?;
        let mut files = Vec::new();
        let mut names: Vec<String> = fs::read_dir(&events_dir)
            .map_err(|err| Error::io(&events_dir, err))?
            .map(|entry| {
                entry
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .map_err(|err| Error::io(&events_dir, err))
            })
            .collect::<Result<_>>()?;
        names.sort();
        for name in names {
            let (bytes, blake3) = hash_file(&events_dir.join(&name))?;
            files.push(ManifestFile {
                name: format!("events/{name}"),
                bytes,
                blake3,
            });
        }
        let manifest = Manifest {
            position: Position(head),
            digest,
            applied: entry,
            files,
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
        metafile::replace(&OsDisk, &dir.join(MANIFEST_FILE), &json)?;
        Ok(manifest)
    }
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let bytes = fs::metadata(from)
        .map_err(|err| Error::io(from, err))?
        .len();
    copy_prefix(from, to, bytes)
}

/// Copies the first `n_bytes` of `from` to a new file `to`, and syncs it.
fn copy_prefix(from: &Path, to: &Path, n_bytes: u64) -> Result<()> {
    let source = File::open(from).map_err(|err| Error::io(from, err))?;
    let mut target = File::create(to).map_err(|err| Error::io(to, err))?;
    let copied =
        std::io::copy(&mut source.take(n_bytes), &mut target).map_err(|err| Error::io(to, err))?;
    if copied != n_bytes {
        return Err(Error::corrupt(
            from,
            copied,
            format!("ends after {copied} bytes, before the committed {n_bytes}"),
        ));
    }
    target.sync_all().map_err(|err| Error::io(to, err))
}

fn hash_file(path: &Path) -> Result<(u64, Hash)> {
    let mut file = File::open(path).map_err(|err| Error::io(path, err))?;
    let mut hasher = blake3::Hasher::new();
    let bytes = std::io::copy(&mut file, &mut hasher).map_err(|err| Error::io(path, err))?;
    Ok((bytes, *hasher.finalize().as_bytes()))
}

fn hex(hash: &Hash) -> String {
    hex::encode(hash)
}

/// A 32-byte hash as 64 lowercase hex digits in JSON.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(
        hash: &[u8; 32],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::hex(hash))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&text, &mut hash)
            .map_err(|_| D::Error::custom("a hash is 64 hex digits"))?;
        Ok(hash)
    }
}
