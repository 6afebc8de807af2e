//! A store checkpoint ([`Store::checkpoint`](causeway_core::Store::checkpoint)) as a set of
//! files to ship and to install: what a Raft snapshot transfer and a backup send, and what a
//! snapshot install and a restore copy into a new store directory.
//!
//! Invariants:
//! - Files are sent in one order: the manifest (`CHECKPOINT`) first, then the files it lists,
//!   each exactly its listed length, in chunks of at most the caller's chunk size.
//! - A copy checks every byte it writes: each file is hashed as it is copied and compared with
//!   the manifest's length and blake3 before the copy is relied on; a difference is a
//!   [`FileError`] naming the file relative to the checkpoint (never a path of this machine,
//!   so the message may go to a client).
//! - A copy is durable when it returns: every file synced, every directory it created synced.
//!   Nothing is shared by hard link, since the copy becomes a live store that is written.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Component, Path};

use causeway_core::Hash;
use causeway_core::disk::{self, Disk};
use causeway_core::store::{MANIFEST_FILE, Manifest, ManifestFile};

/// A file of a checkpoint that is not what its manifest says, or could not be read or written.
#[derive(Debug)]
pub struct FileError {
    /// The file, relative to the checkpoint (`events/00000000000000000001.seg`).
    pub name: String,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a checkpoint's file.
#[derive(Debug)]
pub enum Problem {
    /// The manifest names it and it is not there.
    Missing,
    /// It is there and the manifest does not name it.
    Unlisted,
    /// The manifest names a path that is not a plain relative path inside `events/`.
    BadName,
    /// The manifest names it twice.
    Repeated,
    /// It is not a regular file (a directory, a FIFO, a device): reading it might never end.
    NotAFile,
    /// It is longer than any file of its kind may be.
    TooLarge {
        /// Its length.
        actual: u64,
        /// The most allowed.
        max: u64,
    },
    /// Its length differs from the manifest's.
    Length {
        /// The length found.
        actual: u64,
        /// The manifest's.
        expected: u64,
    },
    /// Its length is right and its blake3 is not: the bytes were altered.
    Checksum {
        /// The blake3 found.
        actual: Hash,
        /// The manifest's.
        expected: Hash,
    },
    /// Reading or writing it failed.
    Io(io::Error),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A manifest is input: its names are shown with control characters escaped.
        let name = self.name.escape_debug().to_string();
        let name = &name;
        match &self.problem {
            Problem::Missing => write!(f, "{name} is missing"),
            Problem::Unlisted => write!(f, "{name} is not named by the manifest"),
            Problem::BadName => write!(f, "{name} is not a file name inside events/"),
            Problem::Repeated => write!(f, "{name} is named twice by the manifest"),
            Problem::NotAFile => write!(f, "{name} is not a regular file"),
            Problem::TooLarge { actual, max } => {
                write!(
                    f,
                    "{name} has {actual} bytes, over the {max} its kind may have"
                )
            }
            Problem::Length { actual, expected } => write!(
                f,
                "{name} has {actual} bytes, the manifest says {expected}{}",
                if actual < expected {
                    " (cut short)"
                } else {
                    ""
                }
            ),
            Problem::Checksum { actual, expected } => write!(
                f,
                "{name} is damaged: its blake3 is {}, the manifest says {}",
                hex(actual),
                hex(expected)
            ),
            // The operating system's message only: it names no path.
            Problem::Io(err) => write!(f, "{name}: {}", err.kind()),
        }
    }
}

impl std::error::Error for FileError {}

impl From<FileError> for io::Error {
    fn from(err: FileError) -> io::Error {
        io::Error::other(err.to_string())
    }
}

fn file_error(name: &str, problem: Problem) -> FileError {
    FileError {
        name: name.to_string(),
        problem,
    }
}

/// Every file of the checkpoint in `dir` to send, with its length: the manifest first, then
/// the files it lists.
pub fn files_to_send(dir: &Path) -> io::Result<Vec<(String, u64)>> {
    let manifest = Manifest::read(dir).map_err(io::Error::other)?;
    let manifest_len = fs::metadata(dir.join(MANIFEST_FILE))?.len();
    let mut files = vec![(MANIFEST_FILE.to_string(), manifest_len)];
    files.extend(
        manifest
            .files
            .into_iter()
            .map(|file| (file.name, file.bytes)),
    );
    Ok(files)
}

/// Reads every listed file of `dir` in chunks of at most `chunk_bytes` and hands each to
/// `send` with its file name and offset, in order; each file must be exactly its listed
/// length. Stops at the first error, `send`'s included.
pub fn read_chunks(
    dir: &Path,
    files: &[(String, u64)],
    chunk_bytes: usize,
    mut send: impl FnMut(&str, u64, Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    assert!(chunk_bytes > 0, "chunk sizes are positive constants");
    for (name, length) in files {
        let mut file = File::open(dir.join(name))?.take(*length);
        let mut offset = 0;
        while offset < *length {
            let mut chunk = vec![0u8; (length - offset).min(chunk_bytes as u64) as usize];
            file.read_exact(&mut chunk)?;
            let n_bytes = chunk.len() as u64;
            send(name, offset, chunk)?;
            offset += n_bytes;
        }
    }
    Ok(())
}

/// Checks that `name` (from a manifest) is a plain relative path inside `events/`, so a copy
/// of it stays inside the target directory.
pub fn check_name(name: &str) -> Result<(), FileError> {
    let path = Path::new(name);
    let mut components = path.components();
    let inside = name.len() <= 255
        && components.next() == Some(Component::Normal("events".as_ref()))
        && matches!(components.next(), Some(Component::Normal(_)))
        && components.next().is_none();
    if inside {
        Ok(())
    } else {
        Err(file_error(name, Problem::BadName))
    }
}

/// Checks that `dir/events/` holds exactly the files the manifest lists, by name: a missing
/// file or one the manifest does not name is a [`FileError`] naming it.
pub fn check_listing(dir: &Path, files: &[ManifestFile]) -> Result<(), FileError> {
    let events_dir = dir.join("events");
    let io = |err| file_error("events/", Problem::Io(err));
    let mut present = Vec::new();
    for entry in fs::read_dir(&events_dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        present.push(format!("events/{}", entry.file_name().to_string_lossy()));
    }
    let mut named = std::collections::HashSet::with_capacity(files.len());
    for file in files {
        check_name(&file.name)?;
        if !named.insert(file.name.as_str()) {
            return Err(file_error(&file.name, Problem::Repeated));
        }
        if !present.contains(&file.name) {
            return Err(file_error(&file.name, Problem::Missing));
        }
    }
    present.sort();
    match present
        .iter()
        .find(|name| !files.iter().any(|file| &file.name == *name))
    {
        Some(unlisted) => Err(file_error(unlisted, Problem::Unlisted)),
        None => Ok(()),
    }
}

/// Copies the files a checkpoint manifest lists from `from` to `to`, hashing each as it is
/// copied and checking it against the manifest; syncs each file and every directory it
/// created. `to` need not exist.
pub fn copy_checkpoint(
    disk: &dyn Disk,
    from: &Path,
    to: &Path,
    files: &[ManifestFile],
) -> Result<(), FileError> {
    let dir_error = |err| file_error("events/", Problem::Io(err));
    disk::create_dir_all(disk, to).map_err(dir_error)?;
    let mut dirs = vec![to.to_path_buf()];
    for file in files {
        check_name(&file.name)?;
        let target = to.join(&file.name);
        let parent = disk::parent_dir(&target).to_path_buf();
        if !dirs.contains(&parent) {
            disk::create_dir_all(disk, &parent).map_err(dir_error)?;
            dirs.push(parent);
        }
        let source = from.join(&file.name);
        // Its kind and length first: a FIFO, a device or a file of the wrong length is refused
        // before a byte is copied, and the copy reads no more than the manifest's length.
        let found = regular_file(&file.name, &source, u64::MAX)?;
        if found != file.bytes {
            return Err(file_error(
                &file.name,
                Problem::Length {
                    actual: found,
                    expected: file.bytes,
                },
            ));
        }
        let (bytes, blake3) = copy_hashed(&source, &target, file.bytes)
            .map_err(|err| file_error(&file.name, Problem::Io(err)))?;
        check_file(file, bytes, blake3)?;
    }
    for dir in dirs {
        disk.sync_dir(&dir).map_err(dir_error)?;
    }
    Ok(())
}

/// Checks a file's length and blake3, as found, against its manifest entry.
pub fn check_file(file: &ManifestFile, bytes: u64, blake3: Hash) -> Result<(), FileError> {
    if bytes != file.bytes {
        return Err(file_error(
            &file.name,
            Problem::Length {
                actual: bytes,
                expected: file.bytes,
            },
        ));
    }
    if blake3 != file.blake3 {
        return Err(file_error(
            &file.name,
            Problem::Checksum {
                actual: blake3,
                expected: file.blake3,
            },
        ));
    }
    Ok(())
}

/// The length of `path` (its name in a checkpoint: `name`), which must be a regular file (a
/// symlink is followed) of at most `max` bytes.
pub fn regular_file(name: &str, path: &Path, max: u64) -> Result<u64, FileError> {
    let meta = fs::metadata(path).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => file_error(name, Problem::Missing),
        _ => file_error(name, Problem::Io(err)),
    })?;
    if !meta.is_file() {
        return Err(file_error(name, Problem::NotAFile));
    }
    if meta.len() > max {
        return Err(file_error(
            name,
            Problem::TooLarge {
                actual: meta.len(),
                max,
            },
        ));
    }
    Ok(meta.len())
}

/// The length and blake3 of a regular file of at most `max` bytes (its name in a checkpoint:
/// `name`); reads no more than `max + 1` bytes, should it grow meanwhile.
pub fn hash_file(name: &str, path: &Path, max: u64) -> Result<(u64, Hash), FileError> {
    regular_file(name, path, max)?;
    let file = File::open(path).map_err(|err| file_error(name, Problem::Io(err)))?;
    let mut hasher = blake3::Hasher::new();
    let bytes = io::copy(&mut file.take(max.saturating_add(1)), &mut hasher)
        .map_err(|err| file_error(name, Problem::Io(err)))?;
    Ok((bytes, *hasher.finalize().as_bytes()))
}

/// Copies at most `len + 1` bytes of `from` to a new file `to` and syncs it; returns the length
/// and blake3 of the bytes written (more than `len` only if the source grew meanwhile).
fn copy_hashed(from: &Path, to: &Path, len: u64) -> io::Result<(u64, Hash)> {
    let mut source = File::open(from)?.take(len.saturating_add(1));
    let mut target = File::create(to)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        let n_read = source.read(&mut buffer)?;
        if n_read == 0 {
            break;
        }
        hasher.update(&buffer[..n_read]);
        target.write_all(&buffer[..n_read])?;
        bytes += n_read as u64;
    }
    target.sync_all()?;
    Ok((bytes, *hasher.finalize().as_bytes()))
}

/// A hash as lowercase hex.
pub fn hex(hash: &Hash) -> String {
    hex::encode(hash)
}
