//! Small files replaced whole and atomically: what a log keeps beside its segments that is not
//! an entry, such as a Raft vote or the last membership.
//!
//! A write goes to `NAME.tmp`, is synced, renamed over `NAME`, and the directory is synced, all
//! through the [`Disk`] seam: after a crash the file holds the old bytes or the new, never a
//! mix, and once `write` returns the new bytes survive power loss. A reader checks the magic
//! (which says what the file is for), the format version, the length and a CRC32, so damage is
//! an [`Error::Corrupt`] naming the file, never wrong data.
//!
//! Layout (little-endian): magic (8 bytes), format version (u16, `1`), reserved (u16, zero),
//! payload length (u32), payload, CRC32 of everything before it (u32).

use std::path::Path;

use crate::disk::{self, Disk};
use crate::error::{Error, Result};
use crate::segment;

/// The format version this build writes and reads.
pub const METAFILE_FORMAT_VERSION: u16 = 1;
/// The largest payload a meta file holds: these are small records, and a longer length field
/// is damage, not a reason to allocate.
pub const METAFILE_PAYLOAD_BYTES_MAX: usize = 1024 * 1024;

const HEADER_BYTES: usize = 16;

/// Replaces the file at `path` with `payload`, durably.
pub fn write(disk: &dyn Disk, path: &Path, magic: [u8; 8], payload: &[u8]) -> Result<()> {
    if payload.len() > METAFILE_PAYLOAD_BYTES_MAX {
        return Err(Error::LimitExceeded {
            limit: "METAFILE_PAYLOAD_BYTES_MAX",
            max: METAFILE_PAYLOAD_BYTES_MAX as u64,
            actual: payload.len() as u64,
            what: format!("payload of {}", path.display()),
        });
    }
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len() + 4);
    bytes.extend_from_slice(&magic);
    bytes.extend_from_slice(&METAFILE_FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&[0; 2]);
    let len = u32::try_from(payload.len()).expect("bounded by METAFILE_PAYLOAD_BYTES_MAX");
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(payload);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    replace(disk, path, &bytes)
}

/// Replaces the file at `path` with `bytes`, durably and atomically: written to `NAME.tmp`,
/// synced, renamed over `NAME`, and the directory synced. After a crash the file holds the old
/// bytes or the new ones, never a mix. The one way the core replaces a small file whole.
pub fn replace(disk: &dyn Disk, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    disk.create(&tmp, true)
        .and_then(|file| {
            disk.write_at(&file, &tmp, bytes, 0)?;
            disk.sync_all(&file, &tmp)
        })
        .map_err(|err| Error::io(&tmp, err))?;
    disk.rename(&tmp, path)
        .map_err(|err| Error::io(path, err))?;
    segment::sync_dir(disk, disk::parent_dir(path))
}

/// Reads the payload of the file at `path`; `None` when there is no such file.
pub fn read(path: &Path, magic: [u8; 8]) -> Result<Option<Vec<u8>>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Error::io(path, err)),
    };
    let corrupt = |offset: usize, detail: &str| Error::corrupt(path, offset as u64, detail);
    if bytes.len() < HEADER_BYTES + 4 {
        return Err(corrupt(0, "file is shorter than its header"));
    }
    if bytes[..8] != magic {
        return Err(corrupt(
            0,
            "file has the wrong magic for what it is read as",
        ));
    }
    let version = u16::from_le_bytes(bytes[8..10].try_into().expect("2 bytes"));
    if version != METAFILE_FORMAT_VERSION {
        return Err(corrupt(8, "format version is not supported"));
    }
    let len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    if len > METAFILE_PAYLOAD_BYTES_MAX || bytes.len() != HEADER_BYTES + len + 4 {
        return Err(corrupt(12, "payload length does not match the file"));
    }
    let crc_at = HEADER_BYTES + len;
    let crc = u32::from_le_bytes(bytes[crc_at..].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..crc_at]) != crc {
        return Err(corrupt(crc_at, "file fails its checksum"));
    }
    Ok(Some(bytes[HEADER_BYTES..crc_at].to_vec()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::disk::OsDisk;

    const MAGIC: [u8; 8] = *b"CWAYVOTE";

    #[test]
    fn a_write_replaces_the_file_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("VOTE");
        assert_eq!(read(&path, MAGIC).unwrap(), None);
        write(&OsDisk, &path, MAGIC, b"term 1").unwrap();
        write(&OsDisk, &path, MAGIC, b"term 2, voted for 3").unwrap();
        assert_eq!(
            read(&path, MAGIC).unwrap().as_deref(),
            Some(&b"term 2, voted for 3"[..])
        );
        assert!(!dir.path().join("VOTE.tmp").exists());
        assert!(matches!(
            read(&path, *b"CWAYMEMB"),
            Err(Error::Corrupt { .. })
        ));
        let good = std::fs::read(&path).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                matches!(read(&path, MAGIC), Err(Error::Corrupt { .. })),
                "a flipped byte {at} was not caught"
            );
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(matches!(read(&path, MAGIC), Err(Error::Corrupt { .. })));
        assert!(matches!(
            write(
                &OsDisk,
                &path,
                MAGIC,
                &vec![0; METAFILE_PAYLOAD_BYTES_MAX + 1]
            ),
            Err(Error::LimitExceeded { .. })
        ));
    }
}
