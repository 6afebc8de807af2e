//! The file seam under the store: every call that changes a file or a directory, and every sync,
//! goes through a [`Disk`], so tests can see what a power cut would keep.
//!
//! Production uses [`OsDisk`], which calls the operating system directly: one dynamic call per
//! write, sync or directory change, nothing per byte. Reads and directory listings change
//! nothing and go to the files directly; they are not part of the seam.
//!
//! [`SimDisk`] (tests only) does every call on the real files too, and also remembers, per file,
//! the bytes that were synced and the writes since, and per directory, the entries that were
//! synced and the changes since. [`SimDisk::power_cut`] turns the disk off (every later change or
//! sync fails) and returns what a disk could hold after a power loss: every synced byte and
//! synced directory entry, and of the unsynced writes a prefix in the order they were made, the
//! last one possibly torn. It holds the POSIX rules strictly:
//! - a file's sync (`fdatasync` or `fsync`) makes its bytes and length durable, not its name;
//! - a name created, renamed or removed in a directory is durable once that directory is synced,
//!   and lost on a power cut before then (a removed file comes back with its synced bytes).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The calls that change files and directories, or make changes durable.
///
/// Each call names the path it is about (for a file also passed as a handle, the name it was
/// opened under), so an implementation can keep its own record by name.
pub trait Disk: Send + Sync + std::fmt::Debug {
    /// Opens `path` for reading and writing, creating it if it does not exist; `truncate`
    /// empties an existing file.
    fn create(&self, path: &Path, truncate: bool) -> io::Result<File>;
    /// Writes all of `bytes` at `offset` of `file`, which was opened as `path`.
    fn write_at(&self, file: &File, path: &Path, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Sets the length of `file`, cutting it or extending it with zeros.
    fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()>;
    /// Reserves the file's space up to `len` bytes (`fallocate`); the length becomes at least
    /// `len`. An error is returned as the system gave it; callers treat this as best effort.
    fn reserve(&self, file: &File, path: &Path, len: u64) -> io::Result<()>;
    /// Makes the bytes written to `file` durable, and its length (`fdatasync`).
    fn sync_data(&self, file: &File, path: &Path) -> io::Result<()>;
    /// Makes the bytes and all metadata of `file` durable (`fsync`).
    fn sync_all(&self, file: &File, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` if it exists. Durable once both directories are
    /// synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file. Durable once its directory is synced.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Creates one directory, whose parent exists. Durable once the parent is synced.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of directory `path` durable: names created, renamed or removed in it.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// The operating system's file calls: what a store uses unless a test gives it another disk.
#[derive(Copy, Clone, Debug, Default)]
pub struct OsDisk;

impl Disk for OsDisk {
    fn create(&self, path: &Path, truncate: bool) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .open(path)
    }

    fn write_at(&self, file: &File, _path: &Path, bytes: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(bytes, offset)
    }

    fn set_len(&self, file: &File, _path: &Path, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    fn reserve(&self, file: &File, _path: &Path, len: u64) -> io::Result<()> {
        rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len)
            .map_err(io::Error::from)
    }

    fn sync_data(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_all(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path).and_then(|dir| dir.sync_all())
    }
}

/// Creates `dir` and any missing parents, each made durable by syncing the directory it was
/// created in before the next is created. A directory that exists is left alone.
pub fn create_dir_all(disk: &dyn Disk, dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.as_os_str().is_empty() && fs::metadata(at).is_err() {
        missing.push(at);
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    for path in missing.into_iter().rev() {
        match disk.create_dir(path) {
            Ok(()) => {}
            // Created by someone else meanwhile; whoever created it syncs it.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
        disk.sync_dir(parent_dir(path))?;
    }
    Ok(())
}

/// The directory that holds `path` (`.` for a bare name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// A disk for tests that records what is durable and can lose the rest: see the module docs.
///
/// It tracks every file and directory under its root, whose contents at [`SimDisk::new`] count
/// as durable. Every change goes to the real files as well, so reads (which bypass the seam)
/// see what a running process would. Syncs do not call the system's sync: durability is what
/// this record says.
#[derive(Debug)]
pub struct SimDisk {
    root: PathBuf,
    sync_delay: Duration,
    state: Mutex<SimState>,
}

#[derive(Debug, Default)]
struct SimState {
    /// Set by [`SimDisk::power_cut`]: every later change or sync fails.
    off: bool,
    /// Each file's durable bytes, by inode number.
    inodes: Vec<Vec<u8>>,
    /// Changes to files not yet synced, in the order they were made.
    unsynced: Vec<Unsynced>,
    next_seq: u64,
    /// Every directory under the root (the root included), by path.
    dirs: BTreeMap<PathBuf, SimDir>,
}

#[derive(Clone, Debug, Default)]
struct SimDir {
    durable: BTreeMap<OsString, Node>,
    current: BTreeMap<OsString, Node>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Node {
    File(usize),
    Dir,
}

#[derive(Debug)]
struct Unsynced {
    seq: u64,
    inode: usize,
    op: FileOp,
}

#[derive(Clone, Debug)]
enum FileOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
    Reserve(u64),
}

impl FileOp {
    fn apply(&self, content: &mut Vec<u8>) {
        match self {
            FileOp::Write { offset, bytes } => {
                let at = usize::try_from(*offset).expect("a simulated file fits in memory");
                if content.len() < at + bytes.len() {
                    content.resize(at + bytes.len(), 0);
                }
                content[at..at + bytes.len()].copy_from_slice(bytes);
            }
            FileOp::SetLen(len) => {
                content.resize(usize::try_from(*len).expect("fits in memory"), 0);
            }
            FileOp::Reserve(len) => {
                let len = usize::try_from(*len).expect("fits in memory");
                if content.len() < len {
                    content.resize(len, 0);
                }
            }
        }
    }
}

/// What a [`SimDisk`] holds after [`SimDisk::power_cut`]: the files and directories under its
/// root that survived, with their bytes, by path relative to the root.
#[derive(Clone, Debug)]
pub struct PowerCut {
    /// Each surviving file's bytes.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// Each surviving directory, parents before children.
    pub dirs: Vec<PathBuf>,
    /// Unsynced writes (and length changes) that reached the disk, the last torn one included.
    pub writes_kept: usize,
    /// Unsynced writes that were lost.
    pub writes_lost: usize,
    /// Whether the last write kept was cut short.
    pub torn: bool,
}

impl PowerCut {
    /// Writes the surviving files and directories under `root` (which must be empty), as the
    /// disk would show them once the power is back. Runs of zeros are left as holes.
    pub fn restore(&self, root: &Path) -> io::Result<()> {
        fs::create_dir_all(root)?;
        for dir in &self.dirs {
            fs::create_dir(root.join(dir))?;
        }
        for (path, bytes) in &self.files {
            let file = File::create(root.join(path))?;
            file.set_len(bytes.len() as u64)?;
            for (block_idx, block) in bytes.chunks(4096).enumerate() {
                if block.iter().any(|&byte| byte != 0) {
                    file.write_all_at(block, block_idx as u64 * 4096)?;
                }
            }
        }
        Ok(())
    }
}

fn power_off() -> io::Error {
    io::Error::other("the simulated disk lost power")
}

fn untracked(path: &Path) -> io::Error {
    io::Error::other(format!("{} is not on the simulated disk", path.display()))
}

impl SimDisk {
    /// A simulated disk over the directory `root`, whose files and directories as they are now
    /// count as durable. Each file sync takes `sync_delay`, during which writers go on (as they
    /// would while a real disk works); only the writes made before the sync began become
    /// durable.
    pub fn new(root: &Path, sync_delay: Duration) -> io::Result<Arc<SimDisk>> {
        let mut state = SimState::default();
        state.track_existing(root)?;
        Ok(Arc::new(SimDisk {
            root: root.to_path_buf(),
            sync_delay,
            state: Mutex::new(state),
        }))
    }

    /// Cuts the power: every later change or sync fails, and the returned state is what the
    /// disk could hold. `seed` picks how much of the unsynced writes survive: all, none, or a
    /// prefix in write order whose last write may be torn at a random byte.
    pub fn power_cut(&self, seed: u64) -> PowerCut {
        let mut state = self.lock();
        state.off = true;
        let mut rng = SplitMix(seed);
        let n_unsynced = state.unsynced.len();
        let writes_kept = match rng.below(4) {
            0 => n_unsynced,
            1 => 0,
            _ => rng.below(n_unsynced as u64 + 1) as usize,
        };
        let mut contents = state.inodes.clone();
        let mut torn = false;
        for (unsynced_idx, unsynced) in state.unsynced[..writes_kept].iter().enumerate() {
            let mut op = unsynced.op.clone();
            if unsynced_idx + 1 == writes_kept
                && rng.below(2) == 0
                && let FileOp::Write { bytes, .. } = &mut op
                && bytes.len() > 1
            {
                bytes.truncate(rng.below(bytes.len() as u64) as usize);
                torn = true;
            }
            op.apply(&mut contents[unsynced.inode]);
        }
        let mut cut = PowerCut {
            files: BTreeMap::new(),
            dirs: Vec::new(),
            writes_kept,
            writes_lost: n_unsynced - writes_kept,
            torn,
        };
        state.collect(&self.root, Path::new(""), &contents, &mut cut);
        cut
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().expect("simulated disk lock poisoned")
    }

    /// The state for a change: fails once the power is off.
    fn on(&self) -> io::Result<MutexGuard<'_, SimState>> {
        let state = self.lock();
        if state.off {
            return Err(power_off());
        }
        Ok(state)
    }

    /// Records a change to the file `path` that the system already made.
    fn record(
        &self,
        mut state: MutexGuard<'_, SimState>,
        path: &Path,
        op: FileOp,
    ) -> io::Result<()> {
        let inode = state.inode(path)?;
        let seq = state.next_seq;
        state.next_seq += 1;
        state.unsynced.push(Unsynced { seq, inode, op });
        Ok(())
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let (inode, before) = {
            let state = self.on()?;
            (state.inode(path)?, state.next_seq)
        };
        if !self.sync_delay.is_zero() {
            std::thread::sleep(self.sync_delay);
        }
        let mut state = self.on()?;
        let state = &mut *state;
        let mut durable = std::mem::take(&mut state.inodes[inode]);
        state.unsynced.retain(|unsynced| {
            let synced = unsynced.inode == inode && unsynced.seq < before;
            if synced {
                unsynced.op.apply(&mut durable);
            }
            !synced
        });
        state.inodes[inode] = durable;
        Ok(())
    }
}

impl SimState {
    /// Tracks `dir` and everything under it, as durable.
    fn track_existing(&mut self, dir: &Path) -> io::Result<()> {
        let mut entries = BTreeMap::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                self.track_existing(&path)?;
                entries.insert(entry.file_name(), Node::Dir);
            } else {
                self.inodes.push(fs::read(&path)?);
                entries.insert(entry.file_name(), Node::File(self.inodes.len() - 1));
            }
        }
        self.dirs.insert(
            dir.to_path_buf(),
            SimDir {
                durable: entries.clone(),
                current: entries,
            },
        );
        Ok(())
    }

    fn dir_of(&mut self, path: &Path) -> io::Result<(&mut SimDir, OsString)> {
        let name = path.file_name().ok_or_else(|| untracked(path))?.to_owned();
        let dir = self
            .dirs
            .get_mut(parent_dir(path))
            .ok_or_else(|| untracked(path))?;
        Ok((dir, name))
    }

    fn inode(&self, path: &Path) -> io::Result<usize> {
        let node = path.file_name().and_then(|name| {
            let dir = self.dirs.get(parent_dir(path))?;
            dir.current.get(name).copied()
        });
        match node {
            Some(Node::File(inode)) => Ok(inode),
            _ => Err(untracked(path)),
        }
    }

    /// Adds the durable entries of `dir` (at `rel` under the root) to `cut`, with the files'
    /// bytes from `contents`.
    fn collect(&self, dir: &Path, rel: &Path, contents: &[Vec<u8>], cut: &mut PowerCut) {
        let Some(sim_dir) = self.dirs.get(dir) else {
            return;
        };
        for (name, node) in &sim_dir.durable {
            match node {
                Node::File(inode) => {
                    cut.files.insert(rel.join(name), contents[*inode].clone());
                }
                Node::Dir => {
                    cut.dirs.push(rel.join(name));
                    self.collect(&dir.join(name), &rel.join(name), contents, cut);
                }
            }
        }
    }
}

impl Disk for SimDisk {
    fn create(&self, path: &Path, truncate: bool) -> io::Result<File> {
        let mut state = self.on()?;
        let file = OsDisk.create(path, truncate)?;
        let state = &mut *state;
        let n_inodes = state.inodes.len();
        let (dir, name) = state.dir_of(path)?;
        match dir.current.get(&name) {
            Some(Node::File(inode)) => {
                let inode = *inode;
                if truncate {
                    let seq = state.next_seq;
                    state.next_seq += 1;
                    let op = FileOp::SetLen(0);
                    state.unsynced.push(Unsynced { seq, inode, op });
                }
            }
            Some(Node::Dir) => return Err(untracked(path)),
            None => {
                dir.current.insert(name, Node::File(n_inodes));
                state.inodes.push(Vec::new());
            }
        }
        Ok(file)
    }

    fn write_at(&self, file: &File, path: &Path, bytes: &[u8], offset: u64) -> io::Result<()> {
        let state = self.on()?;
        file.write_all_at(bytes, offset)?;
        let op = FileOp::Write {
            offset,
            bytes: bytes.to_vec(),
        };
        self.record(state, path, op)
    }

    fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        let state = self.on()?;
        file.set_len(len)?;
        self.record(state, path, FileOp::SetLen(len))
    }

    fn reserve(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        let state = self.on()?;
        OsDisk.reserve(file, path, len)?;
        self.record(state, path, FileOp::Reserve(len))
    }

    fn sync_data(&self, _file: &File, path: &Path) -> io::Result<()> {
        self.sync_file(path)
    }

    fn sync_all(&self, _file: &File, path: &Path) -> io::Result<()> {
        self.sync_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.on()?;
        fs::rename(from, to)?;
        let (from_dir, from_name) = state.dir_of(from)?;
        let node = from_dir
            .current
            .remove(&from_name)
            .ok_or_else(|| untracked(from))?;
        let (to_dir, to_name) = state.dir_of(to)?;
        to_dir.current.insert(to_name, node);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.on()?;
        fs::remove_file(path)?;
        let (dir, name) = state.dir_of(path)?;
        dir.current.remove(&name);
        Ok(())
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.on()?;
        fs::create_dir(path)?;
        let (dir, name) = state.dir_of(path)?;
        dir.current.insert(name, Node::Dir);
        state.dirs.insert(path.to_path_buf(), SimDir::default());
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.on()?;
        let dir = state.dirs.get_mut(path).ok_or_else(|| untracked(path))?;
        dir.durable = dir.current.clone();
        Ok(())
    }
}

/// A small seeded generator (SplitMix64), so a power cut replays from its seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}
