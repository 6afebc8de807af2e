//! `causewayd restore --from DIR --data-dir NEW`: makes a data directory of a backup (as
//! `causeway backup --to DIR` writes one; layout in docs/FORMAT.md), or refuses, naming the
//! file that is wrong.
//!
//! The order is what makes a refusal safe and a success trustworthy:
//! 1. `NEW` must be absent or empty: a restore never mixes into, or replaces, a store. It must
//!    end in a directory name, not be a symbolic link, have a parent directory, and lie
//!    outside the backup.
//! 2. `BACKUP` (position, digest, blake3 of `CHECKPOINT`) is read; `CHECKPOINT` must hash to
//!    what it says and name the same position and digest; the backup's top level holds
//!    nothing else but `events/`, and `events/` exactly the files `CHECKPOINT` lists.
//! 3. Every file is copied into `NEW.tmp-PID` (beside `NEW`), hashed as it is copied and
//!    checked against its length and blake3; each file and directory is synced.
//! 4. The copy is opened as a store, `verify()` re-hashes every event and its chain, and the
//!    head and digest must be the backup's.
//! 5. Only then is the copy renamed to `NEW` (and the parent directory synced). A refusal or a
//!    failure at any step removes the temporary copy: nothing that looks usable is left.
//!
//! The result is a single-node data directory, also when the backup came from a cluster
//! member (a backup holds the store, not the Raft state). It is grown back into a cluster as
//! any single node is: start it with `--node-id 1`, `causeway cluster init`, then add and
//! promote the other nodes, which start from a snapshot of it.

use std::fmt;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use causeway_core::disk::{self, Disk, OsDisk};
use causeway_core::store::{MANIFEST_FILE, Manifest};
use causeway_core::{Hash, Position, Store};

use crate::checkpoint::{
    FileError, Problem, check_listing, copy_checkpoint, hash_file, hex, regular_file,
};
use crate::limits::{BACKUP_FILE_BYTES_MAX, BACKUP_FILES_MAX, BACKUP_MANIFEST_BYTES_MAX};

/// The name of a backup's own manifest file, written last by `causeway backup`.
pub const BACKUP_FILE: &str = "BACKUP";
/// The version of the `BACKUP` file's format.
pub const BACKUP_FORMAT: u32 = 1;

/// Invisible characters that reorder or hide text: zero-width marks, bidi controls and
/// isolates, the byte-order mark.
const HIDDEN: [std::ops::RangeInclusive<char>; 4] = [
    '\u{200b}'..='\u{200f}',
    '\u{202a}'..='\u{202e}',
    '\u{2066}'..='\u{2069}',
    '\u{feff}'..='\u{feff}',
];

/// What `causewayd` does instead of serving.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Make a data directory of a backup (from `causeway backup`), after checking every file
    /// and the hash chain; refuses a damaged or incomplete backup, naming the file.
    Restore(RestoreArgs),
    /// Cut the event log at a damaged frame that open refuses ("frame N is damaged but frame M
    /// after it is whole"): says what it will cut, and cuts (keeping the bytes in
    /// events/quarantine/) only with --yes. The server must be stopped.
    Repair(crate::repair::RepairArgs),
}

/// Where a restore reads and writes.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct RestoreArgs {
    /// The backup directory.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The data directory to create; it must not exist, or be empty.
    #[arg(long, value_name = "NEW")]
    pub data_dir: PathBuf,
}

/// What a restore made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The head of the restored store: the backup's position.
    pub position: Position,
    /// The log digest at it: the backup's digest.
    pub digest: Hash,
    /// Events whose hashes and chains were checked.
    pub events: u64,
}

/// Why a restore did not happen.
#[derive(Debug)]
pub enum RestoreError {
    /// The target data directory cannot be used.
    Target {
        /// The directory.
        dir: PathBuf,
        /// Why.
        detail: String,
    },
    /// The backup is damaged or incomplete; nothing was restored.
    Refused {
        /// The file of the backup that is wrong, relative to it.
        file: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An I/O error while writing the restored copy.
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        source: io::Error,
    },
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::Target { dir, detail } => {
                write!(f, "cannot restore into {}: {detail}", dir.display())
            }
            // The names come from the backup's manifest: a hostile one must not reach a
            // terminal as control sequences.
            RestoreError::Refused { file, detail } => write!(
                f,
                "the backup is refused: {} {}",
                printable(file),
                printable(detail)
            ),
            RestoreError::Io { what, source } => write!(f, "{}: {source}", printable(what)),
        }
    }
}

impl std::error::Error for RestoreError {}

impl From<FileError> for RestoreError {
    fn from(err: FileError) -> RestoreError {
        match err.problem {
            // A read error on the backup or a write error on the copy: not the backup's fault
            // alone, but its file is the one to look at.
            crate::checkpoint::Problem::Io(source) => RestoreError::Io {
                what: format!("copying {}", err.name),
                source,
            },
            _ => {
                let detail = err.to_string();
                let detail = detail
                    .strip_prefix(&format!("{} ", err.name))
                    .unwrap_or(&detail)
                    .to_string();
                RestoreError::Refused {
                    file: err.name,
                    detail,
                }
            }
        }
    }
}

/// `text` with control characters and the [`HIDDEN`] ones written as escapes.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            let hidden = c.is_control() || HIDDEN.iter().any(|range| range.contains(&c));
            if hidden {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn refused(file: &str, detail: impl Into<String>) -> RestoreError {
    RestoreError::Refused {
        file: file.to_string(),
        detail: detail.into(),
    }
}

/// Runs `causewayd restore` when the command line asks for it, printing what was restored;
/// `None` when the command line asks to serve.
pub fn run_if_requested() -> Option<anyhow::Result<()>> {
    use clap::Parser as _;
    let Some(Command::Restore(args)) = crate::config::Args::parse().command else {
        return None;
    };
    Some(match restore(&args.from, &args.data_dir) {
        Ok(restored) => {
            println!(
                "restored position {} digest {} ({} events verified) into {}",
                restored.position.0,
                hex(&restored.digest),
                restored.events,
                args.data_dir.display()
            );
            Ok(())
        }
        Err(err) => Err(err.into()),
    })
}

/// Restores the backup in `from` into a new data directory `to`; see the module documentation.
pub fn restore(from: &Path, to: &Path) -> Result<Restored, RestoreError> {
    check_target(to)?;
    check_outside(from, to)?;
    let tmp = temporary_name(to);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|source| RestoreError::Io {
            what: format!("removing {}", tmp.display()),
            source,
        })?;
    }
    let restored = check_and_copy(from, &tmp);
    let restored = match restored {
        Ok(restored) => restored,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(err);
        }
    };
    let io = |what: &str| {
        let what = what.to_string();
        move |source| RestoreError::Io { what, source }
    };
    let disk = OsDisk;
    let placed = (|| {
        if to.exists() {
            // Checked empty above; a rename replaces an empty directory, not a full one.
            std::fs::remove_dir(to).map_err(io("replacing the empty target directory"))?;
        }
        std::fs::rename(&tmp, to).map_err(io("renaming the restored copy into place"))
    })();
    if let Err(err) = placed {
        // Nothing usable-looking is left behind a refusal.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(err);
    }
    disk.sync_dir(disk::parent_dir(to))
        .map_err(io("syncing the target's parent directory"))?;
    Ok(restored)
}

/// The target must be absent or an empty directory, not a symbolic link (the copy is renamed
/// into its place, which would replace the link, not fill what it points to).
fn check_target(to: &Path) -> Result<(), RestoreError> {
    let target = |detail: &str| RestoreError::Target {
        dir: to.to_path_buf(),
        detail: detail.to_string(),
    };
    // By its text: `components` reads `x/.` as `x`.
    let text = to.as_os_str().as_encoded_bytes();
    let ends_in_dots = [b".".as_slice(), b".."]
        .iter()
        .any(|dots| text == *dots || text.ends_with(&[b"/", *dots].concat()));
    if ends_in_dots || to.file_name().is_none() {
        return Err(target(
            "it does not end in a directory name (`.`, `..` or a root): name the new directory",
        ));
    }
    if std::fs::symlink_metadata(to).is_ok_and(|meta| meta.file_type().is_symlink()) {
        return Err(target(
            "it is a symbolic link: name the directory it points to, or a new path",
        ));
    }
    let parent = disk::parent_dir(to);
    if !parent.is_dir() {
        return Err(target(&format!(
            "its parent {} is not a directory (a restore creates only the target itself)",
            parent.display()
        )));
    }
    match std::fs::read_dir(to) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(target(
                "it is not empty (a restore never writes into an existing store)",
            )),
        },
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(target(&err.to_string())),
    }
}

/// The target must not be inside the backup: the copy would land among the backup's own files,
/// and every later restore of it would find a file its manifest does not name.
fn check_outside(from: &Path, to: &Path) -> Result<(), RestoreError> {
    let (Ok(from), Ok(parent)) = (
        std::fs::canonicalize(from),
        std::fs::canonicalize(disk::parent_dir(to)),
    ) else {
        // A backup that cannot be found is refused with its own message when it is read.
        return Ok(());
    };
    if parent.starts_with(&from) {
        return Err(RestoreError::Target {
            dir: to.to_path_buf(),
            detail: format!(
                "it is inside the backup being restored ({}): restore beside it",
                from.display()
            ),
        });
    }
    Ok(())
}

/// `NEW.tmp-PID`, beside `NEW`.
fn temporary_name(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    to.with_file_name(name)
}

/// Checks the backup in `from`, copies it into `tmp` and checks the copy as a store.
fn check_and_copy(from: &Path, tmp: &Path) -> Result<Restored, RestoreError> {
    let backup = read_backup_file(from)?;
    let (checkpoint_bytes, checkpoint_blake3) = hash_file(
        MANIFEST_FILE,
        &from.join(MANIFEST_FILE),
        BACKUP_MANIFEST_BYTES_MAX,
    )?;
    if checkpoint_blake3 != backup.checkpoint_blake3 {
        return Err(refused(
            MANIFEST_FILE,
            format!(
                "is damaged: its blake3 is {} ({checkpoint_bytes} bytes), {BACKUP_FILE} says {}",
                hex(&checkpoint_blake3),
                hex(&backup.checkpoint_blake3)
            ),
        ));
    }
    let manifest = Manifest::read(from).map_err(|err| refused(MANIFEST_FILE, err.to_string()))?;
    if manifest.position != backup.position || manifest.digest != backup.digest {
        return Err(refused(
            MANIFEST_FILE,
            format!(
                "names position {} digest {}, {BACKUP_FILE} says position {} digest {}",
                manifest.position.0,
                hex(&manifest.digest),
                backup.position.0,
                hex(&backup.digest)
            ),
        ));
    }
    if manifest.files.len() > BACKUP_FILES_MAX {
        return Err(refused(
            MANIFEST_FILE,
            format!(
                "lists {} files, over BACKUP_FILES_MAX = {BACKUP_FILES_MAX}",
                manifest.files.len()
            ),
        ));
    }
    check_top_level(from)?;
    check_listing(from, &manifest.files)?;
    copy_checkpoint(&OsDisk, from, tmp, &manifest.files)?;

    let store = Store::open(tmp, causeway_core::Config::default())
        .map_err(|err| store_refusal(tmp, err))?;
    let checked = check_store(&store, &manifest);
    let closed = store.close().map_err(|err| store_refusal(tmp, err));
    let restored = checked?;
    closed?;
    Ok(restored)
}

/// Re-hashes every event and its chain, and compares the head and digest with the manifest's.
fn check_store(store: &Store, manifest: &Manifest) -> Result<Restored, RestoreError> {
    let report = store
        .verify()
        .map_err(|err| store_refusal(store.dir(), err))?;
    if let Some((position, why)) = report.first_break {
        return Err(refused(
            &segment_of(manifest, position),
            format!("breaks the hash chain at position {}: {why}", position.0),
        ));
    }
    let (head, digest) = store.head_and_digest();
    if head != manifest.position || digest != manifest.digest {
        return Err(refused(
            "events/",
            format!(
                "restore to head {} digest {}, the backup says position {} digest {}",
                head.0,
                hex(&digest),
                manifest.position.0,
                hex(&manifest.digest)
            ),
        ));
    }
    Ok(Restored {
        position: head,
        digest,
        events: report.events,
    })
}

/// A store error on the restored copy, as a refusal naming the file relative to the backup.
fn store_refusal(tmp: &Path, err: causeway_core::Error) -> RestoreError {
    match &err {
        causeway_core::Error::Corrupt { file, .. } => {
            let name = file
                .strip_prefix(tmp)
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "events/".to_string());
            refused(&name, format!("does not open as a store: {err}"))
        }
        _ => refused("events/", format!("does not open as a store: {err}")),
    }
}

/// The segment file of the manifest that holds `position` (segments are named by their first
/// position).
fn segment_of(manifest: &Manifest, position: Position) -> String {
    manifest
        .files
        .iter()
        .filter(|file| file.name.ends_with(".seg"))
        .filter(|file| {
            file.name
                .trim_start_matches("events/")
                .trim_end_matches(".seg")
                .parse::<u64>()
                .is_ok_and(|first| first <= position.0)
        })
        .map(|file| file.name.clone())
        .next_back()
        .unwrap_or_else(|| "events/".to_string())
}

/// The backup's top level holds `BACKUP`, `CHECKPOINT` and `events/`, nothing else.
fn check_top_level(from: &Path) -> Result<(), RestoreError> {
    let entries = std::fs::read_dir(from).map_err(|source| RestoreError::Io {
        what: format!("listing {}", from.display()),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| RestoreError::Io {
            what: format!("listing {}", from.display()),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ![BACKUP_FILE, MANIFEST_FILE, "events"].contains(&name.as_str()) {
            return Err(refused(&name, "is not part of a backup"));
        }
    }
    if !from.join("events").is_dir() {
        return Err(refused("events/", "is missing"));
    }
    Ok(())
}

/// The contents of a `BACKUP` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupFile {
    /// The position the backup was taken at.
    pub position: Position,
    /// The log digest at it.
    pub digest: Hash,
    /// blake3 of the backup's `CHECKPOINT` file.
    pub checkpoint_blake3: Hash,
}

/// Reads and parses `from/BACKUP`: UTF-8 `key=value` lines, unknown keys ignored.
fn read_backup_file(from: &Path) -> Result<BackupFile, RestoreError> {
    let path = from.join(BACKUP_FILE);
    match regular_file(BACKUP_FILE, &path, BACKUP_FILE_BYTES_MAX) {
        Err(FileError {
            problem: Problem::Missing,
            ..
        }) => {
            return Err(refused(
                BACKUP_FILE,
                "is missing: not a backup, or one that did not finish",
            ));
        }
        Err(err) => return Err(err.into()),
        Ok(_) => {}
    }
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|file| file.take(BACKUP_FILE_BYTES_MAX + 1).read_to_end(&mut bytes))
        .map_err(|err| refused(BACKUP_FILE, format!("cannot be read: {}", err.kind())))?;
    if bytes.len() as u64 > BACKUP_FILE_BYTES_MAX {
        return Err(refused(
            BACKUP_FILE,
            format!("is over BACKUP_FILE_BYTES_MAX = {BACKUP_FILE_BYTES_MAX} bytes"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| refused(BACKUP_FILE, "is not UTF-8 text"))?;
    let value = |key: &str| {
        let mut found = text
            .lines()
            .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='));
        match (found.next(), found.next()) {
            (Some(value), None) => Ok(value),
            (None, _) => Err(refused(BACKUP_FILE, format!("has no {key}"))),
            (Some(_), Some(_)) => Err(refused(BACKUP_FILE, format!("names {key} twice"))),
        }
    };
    let format = value("format")?;
    if format != BACKUP_FORMAT.to_string() {
        return Err(refused(
            BACKUP_FILE,
            format!("has format {format:?}; this build reads format {BACKUP_FORMAT}"),
        ));
    }
    let position = value("position")?
        .parse::<u64>()
        .map_err(|_| refused(BACKUP_FILE, "has a position that is not a number"))?;
    Ok(BackupFile {
        position: Position(position),
        digest: parse_hash(value("digest")?, "digest")?,
        checkpoint_blake3: parse_hash(value("checkpoint_blake3")?, "checkpoint_blake3")?,
    })
}

fn parse_hash(text: &str, key: &str) -> Result<Hash, RestoreError> {
    let bad = || {
        refused(
            BACKUP_FILE,
            format!("has a {key} that is not 64 hex digits"),
        )
    };
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text, &mut hash).map_err(|_| bad())?;
    Ok(hash)
}
