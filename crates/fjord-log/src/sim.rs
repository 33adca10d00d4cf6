//! A simulated disk for tests: fault injection and crash images.
//!
//! The model is the one the log is written against (docs/storage.md, "What the code assumes of
//! the disk"):
//! - a file's bytes become durable only when the file is synced; a crash keeps the durable
//!   bytes, and may keep any prefix of the bytes written after them (a torn tail), possibly with
//!   garbage in it;
//! - creating, renaming and removing files becomes durable only when the directory is synced;
//!   a crash brings back the directory as of its last sync (renaming or removing a whole
//!   directory is durable at once, as if its parent were synced with it).
//!
//! - a filesystem-wide sync ([`Storage::filesystem_sync`], syncfs(2)) does both for every file
//!   and directory at once, except under directories mounted as other filesystems
//!   ([`SimStorage::mount`]); files under a failing directory stay as they were and make it fail.
//!
//! [`SimStorage::fail_writeback_under`] makes write-backs of files under a directory fail
//! while their writes succeed, as Linux handles it: the dirty bytes are dropped (the cache
//! marks them clean; they never become durable), and the failure is reported once to the
//! file's next sync and once to the next filesystem-wide sync (the error sequences of the
//! file and of the filesystem), whichever saw the write-back fail.
//!
//! Directories themselves are implicit: every path has one.
//!
//! Faults: [`SimStorage::fail_op`] makes the Nth mutating operation (write, sync, truncate,
//! create, rename, remove, directory sync) fail, once or from then on;
//! [`SimStorage::fail_under`] makes every mutating operation on files under a directory fail
//! (one partition's disk going bad) until [`SimStorage::heal`].
//!
//! Stalls: [`SimStorage::hold_syncs`] makes every sync (of a file or of the filesystem) wait
//! until [`SimStorage::release_syncs`], as a disk slow to write back does.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::storage::{FilesystemSync, Storage, StorageFile};

/// An in-memory disk with a durability model, shared by clones.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<SimState>>,
    gate: Arc<SyncGate>,
}

/// Holds syncs back while closed (see [`SimStorage::hold_syncs`]).
#[derive(Debug, Default)]
struct SyncGate {
    /// (held, syncs waiting at the gate)
    state: Mutex<(bool, usize)>,
    opened: Condvar,
}

#[derive(Debug, Default)]
struct SimState {
    files: BTreeMap<PathBuf, Arc<SimFile>>,
    durable_files: BTreeMap<PathBuf, Arc<SimFile>>,
    ops: u64,
    fail_at: Option<u64>,
    fail_forever: bool,
    /// Mutating operations on paths under these directories fail.
    fail_dirs: Vec<PathBuf>,
    failures: u64,
    bytes_read: u64,
    /// Directories that are other filesystems: a filesystem-wide sync skips them.
    mounts: Vec<PathBuf>,
    /// A write-back failed since the last filesystem-wide sync reported one.
    fs_unreported: bool,
    /// Syncs of files under these directories fail (write-back errors); writes succeed.
    fail_sync_dirs: Vec<PathBuf>,
}

#[derive(Debug, Default)]
struct SimFile {
    data: Mutex<FileData>,
}

#[derive(Debug, Default, Clone)]
struct FileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// The lowest byte changed since the last sync.
    dirty_from: usize,
    /// A write-back of this file failed when it had this many durable bytes: the bytes after
    /// them that the cache held were dropped, and none past here ever become durable.
    lost_from: Option<usize>,
    /// That failure has not been reported to a sync of the file yet.
    unreported: bool,
}

#[derive(Debug)]
struct SimHandle {
    file: Arc<SimFile>,
    path: PathBuf,
    storage: SimStorage,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SimStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes mutating operation number `n` (counting from 0, from now) fail; with `forever`,
    /// every operation after it fails too.
    pub fn fail_op(&self, n: u64, forever: bool) {
        let mut s = lock(&self.state);
        s.fail_at = Some(s.ops + n);
        s.fail_forever = forever;
    }

    /// Makes every mutating operation on a path under `dir` fail, from now until
    /// [`Self::heal`].
    pub fn fail_under(&self, dir: impl Into<PathBuf>) {
        lock(&self.state).fail_dirs.push(dir.into());
    }

    /// Makes `dir` another filesystem: a filesystem-wide sync neither covers nor syncs it.
    pub fn mount(&self, dir: impl Into<PathBuf>) {
        lock(&self.state).mounts.push(dir.into());
    }

    /// Makes syncing any file under `dir` fail while writes to it still succeed (the disk
    /// failing to write back what the cache took), from now until [`Self::heal`].
    pub fn fail_writeback_under(&self, dir: impl Into<PathBuf>) {
        lock(&self.state).fail_sync_dirs.push(dir.into());
    }

    /// Stops injecting failures.
    pub fn heal(&self) {
        let mut s = lock(&self.state);
        s.fail_sync_dirs.clear();
        s.fail_at = None;
        s.fail_forever = false;
        s.fail_dirs.clear();
    }

    /// Makes every sync from now on wait until [`Self::release_syncs`] (writes go on).
    pub fn hold_syncs(&self) {
        lock(&self.gate.state).0 = true;
    }

    /// Lets held syncs and later ones through.
    pub fn release_syncs(&self) {
        lock(&self.gate.state).0 = false;
        self.gate.opened.notify_all();
    }

    /// How many syncs are waiting for [`Self::release_syncs`].
    pub fn held_syncs(&self) -> usize {
        lock(&self.gate.state).1
    }

    fn pass_gate(&self) {
        let mut g = lock(&self.gate.state);
        if !g.0 {
            return;
        }
        g.1 += 1;
        while g.0 {
            g = self.gate.opened.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.1 -= 1;
    }

    /// How many mutating operations have run so far.
    pub fn op_count(&self) -> u64 {
        lock(&self.state).ops
    }

    /// How many bytes have been read from files so far.
    pub fn bytes_read(&self) -> u64 {
        lock(&self.state).bytes_read
    }

    /// How many operations failed by injection.
    pub fn failures(&self) -> u64 {
        lock(&self.state).failures
    }

    /// What survives a crash now, as a new independent disk: the durable directory entries
    /// with their durable bytes. With a `seed`, each file whose unsynced bytes extend past its
    /// durable ones also keeps a seeded-random prefix of them (a torn write), sometimes with a
    /// garbage byte inside.
    pub fn crash_image(&self, seed: Option<u64>) -> SimStorage {
        let s = lock(&self.state);
        let mut rng = seed.map(XorShift::new);
        let mut files = BTreeMap::new();
        for (path, file) in &s.durable_files {
            let d = lock(&file.data);
            let mut bytes = d.durable.clone();
            if let Some(rng) = rng.as_mut().filter(|_| d.lost_from.is_none()) {
                let intact = d.dirty_from.min(d.current.len());
                if d.current.len() > bytes.len() && intact >= bytes.len() {
                    let tail = &d.current[bytes.len()..];
                    let keep = (rng.next_u64() % (tail.len() as u64 + 1)) as usize;
                    let start = bytes.len();
                    bytes.extend_from_slice(&tail[..keep]);
                    if keep > 0 && rng.next_u64() % 4 == 0 {
                        let at = start + (rng.next_u64() % keep as u64) as usize;
                        bytes[at] ^= 0xa5;
                    }
                }
            }
            let len = bytes.len();
            let file = Arc::new(SimFile {
                data: Mutex::new(FileData {
                    current: bytes.clone(),
                    durable: bytes,
                    dirty_from: len,
                    ..FileData::default()
                }),
            });
            files.insert(path.clone(), file);
        }
        SimStorage {
            state: Arc::new(Mutex::new(SimState {
                durable_files: files.clone(),
                files,
                ..SimState::default()
            })),
            gate: Arc::default(),
        }
    }

    /// The current (not necessarily durable) contents of a file, for assertions.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = lock(&self.state);
        s.files.get(path).map(|f| lock(&f.data).current.clone())
    }

    /// Overwrites bytes of a file as if the disk corrupted them (durably, no fault counting).
    pub fn corrupt(&self, path: &Path, at: usize, bytes: &[u8]) {
        let s = lock(&self.state);
        if let Some(f) = s.files.get(path) {
            let mut d = lock(&f.data);
            let end = (at + bytes.len()).min(d.current.len());
            if at < end {
                let n = end - at;
                d.current[at..end].copy_from_slice(&bytes[..n]);
                let cur = d.current.clone();
                d.durable = cur;
                d.dirty_from = d.current.len();
            }
        }
    }

    /// Counts a mutating operation on `path`, failing it if a fault says so.
    fn tick(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        let op = s.ops;
        s.ops += 1;
        let fail = match s.fail_at {
            Some(at) if s.fail_forever => op >= at,
            Some(at) => op == at,
            None => false,
        } || s.fail_dirs.iter().any(|d| path.starts_with(d));
        if fail {
            s.failures += 1;
            return Err(io::Error::other(format!(
                "injected I/O failure (operation {op})"
            )));
        }
        Ok(())
    }
}

/// The whole simulated disk as one filesystem (less [`SimStorage::mount`]ed directories).
#[derive(Debug)]
struct SimFilesystem {
    storage: SimStorage,
    root: PathBuf,
}

impl FilesystemSync for SimFilesystem {
    fn sync(&self) -> io::Result<()> {
        self.storage.pass_gate();
        self.storage.tick(&self.root)?;
        let mut s = lock(&self.storage.state);
        let elsewhere = |p: &Path, s: &SimState| s.mounts.iter().any(|m| p.starts_with(m));
        let failing = |p: &Path, s: &SimState| s.fail_dirs.iter().any(|d| p.starts_with(d));
        let losing = |p: &Path, s: &SimState| s.fail_sync_dirs.iter().any(|d| p.starts_with(d));
        let mut failed = None;
        let mut lost = false;
        let mut entries = BTreeMap::new();
        for (path, file) in &s.files {
            if elsewhere(path, &s) || failing(path, &s) {
                let d = lock(&file.data);
                if !elsewhere(path, &s) && is_dirty(&d) {
                    failed = Some(path.clone());
                }
                continue;
            }
            let mut d = lock(&file.data);
            if losing(path, &s) {
                lost |= write_back_fails(&mut d);
                continue;
            }
            sync_data(&mut d);
            entries.insert(path.clone(), file.clone());
        }
        // Entries of this filesystem become what they are now; elsewhere and under failing
        // directories they stay as last synced.
        let kept: Vec<(PathBuf, Arc<SimFile>)> = s
            .durable_files
            .iter()
            .filter(|(p, _)| elsewhere(p, &s) || failing(p, &s) || losing(p, &s))
            .map(|(p, f)| (p.clone(), f.clone()))
            .collect();
        s.durable_files = entries;
        s.durable_files.extend(kept);
        // A failed write-back is reported to one filesystem-wide sync, once (the superblock's
        // error sequence), besides to the file's own next sync.
        let report = std::mem::take(&mut s.fs_unreported) || lost;
        if let Some(path) = failed {
            s.failures += 1;
            return Err(io::Error::other(format!(
                "injected I/O failure (write-back of {})",
                path.display()
            )));
        }
        if report {
            s.failures += 1;
            return Err(io::Error::other("injected write-back failure"));
        }
        Ok(())
    }

    fn covers(&self, path: &Path) -> bool {
        let s = lock(&self.storage.state);
        !s.mounts.iter().any(|m| path.starts_with(m))
    }
}

/// Makes a file's current bytes its durable ones (none past a failed write-back).
fn sync_data(d: &mut FileData) {
    let keep = d.dirty_from.min(d.current.len()).min(d.durable.len());
    d.durable.truncate(keep);
    let from = d.durable.len();
    let tail = d.current[from..].to_vec();
    d.durable.extend_from_slice(&tail);
    if let Some(lost) = d.lost_from {
        d.durable.truncate(lost);
    }
    d.dirty_from = d.current.len();
}

/// Whether a sync has something to write (bytes lost in a failed write-back are clean).
fn is_dirty(d: &FileData) -> bool {
    d.dirty_from < d.current.len()
        || d.durable.len() > d.current.len()
        || (d.lost_from.is_none() && d.durable.len() < d.current.len())
}

/// A write-back of the file's dirty bytes fails, as Linux handles it: the cache drops them
/// (marked clean, so no later sync writes them) and the failure waits to be reported. True if
/// there was something to write.
fn write_back_fails(d: &mut FileData) -> bool {
    if !is_dirty(d) {
        return false;
    }
    let lost = d.lost_from.unwrap_or(usize::MAX).min(d.durable.len());
    d.lost_from = Some(lost);
    d.dirty_from = d.current.len();
    d.unreported = true;
    true
}

impl Storage for SimStorage {
    fn filesystem_sync(&self, dir: &Path) -> io::Result<Option<Arc<dyn FilesystemSync>>> {
        Ok(Some(Arc::new(SimFilesystem {
            storage: self.clone(),
            root: dir.to_path_buf(),
        })))
    }

    fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let existing = lock(&self.state).files.get(path).cloned();
        let file = match existing {
            Some(f) => f,
            None if create => {
                self.tick(path)?;
                let f = Arc::new(SimFile::default());
                lock(&self.state)
                    .files
                    .insert(path.to_path_buf(), f.clone());
                f
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} not found", path.display()),
                ));
            }
        };
        Ok(Arc::new(SimHandle {
            file,
            path: path.to_path_buf(),
            storage: self.clone(),
        }))
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = lock(&self.state);
        Ok(s.files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(lock(&self.state).files.contains_key(path))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.tick(path)?;
        match lock(&self.state).files.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found", path.display()),
            )),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.tick(from)?;
        let mut s = lock(&self.state);
        let subtree: Vec<PathBuf> = s
            .files
            .keys()
            .filter(|p| Self::under(p, from))
            .cloned()
            .collect();
        if !s.files.contains_key(from) && !subtree.is_empty() {
            // A directory: like renaming a tree and syncing its parent, durable at once.
            for durable in [false, true] {
                let map = if durable {
                    &mut s.durable_files
                } else {
                    &mut s.files
                };
                let moved: Vec<PathBuf> = map
                    .keys()
                    .filter(|p| Self::under(p, from))
                    .cloned()
                    .collect();
                for p in moved {
                    if let (Some(f), Ok(rest)) = (map.remove(&p), p.strip_prefix(from)) {
                        map.insert(to.join(rest), f);
                    }
                }
            }
            return Ok(());
        }
        let Some(f) = s.files.remove(from) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found", from.display()),
            ));
        };
        s.files.insert(to.to_path_buf(), f);
        Ok(())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.tick(dir)?;
        let mut s = lock(&self.state);
        s.files.retain(|p, _| !Self::under(p, dir));
        // Like unlinking a tree and syncing its parent: durable at once.
        s.durable_files.retain(|p, _| !Self::under(p, dir));
        Ok(())
    }

    fn list_subdirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = lock(&self.state);
        let mut names: Vec<String> = s
            .files
            .keys()
            .filter_map(|p| p.strip_prefix(dir).ok())
            .filter(|rest| rest.components().count() > 1)
            .filter_map(|rest| {
                rest.components()
                    .next()?
                    .as_os_str()
                    .to_str()
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.tick(dir)?;
        let mut s = lock(&self.state);
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        s.durable_files.retain(|p, _| !in_dir(p));
        let entries: Vec<_> = s
            .files
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, f)| (p.clone(), f.clone()))
            .collect();
        s.durable_files.extend(entries);
        Ok(())
    }
}

impl SimStorage {
    fn under(path: &Path, dir: &Path) -> bool {
        path.starts_with(dir) && path != dir
    }
}

impl StorageFile for SimHandle {
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.file.data).current.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let n = {
            let d = lock(&self.file.data);
            let pos = usize::try_from(pos).unwrap_or(usize::MAX);
            if pos >= d.current.len() {
                return Ok(0);
            }
            let n = buf.len().min(d.current.len() - pos);
            buf[..n].copy_from_slice(&d.current[pos..pos + n]);
            n
        };
        lock(&self.storage.state).bytes_read += n as u64;
        Ok(n)
    }

    fn write_at(&self, data: &[u8], pos: u64) -> io::Result<()> {
        self.storage.tick(&self.path)?;
        let mut d = lock(&self.file.data);
        let pos = pos as usize;
        if d.current.len() < pos + data.len() {
            d.current.resize(pos + data.len(), 0);
        }
        d.current[pos..pos + data.len()].copy_from_slice(data);
        d.dirty_from = d.dirty_from.min(pos);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.storage.pass_gate();
        self.storage.tick(&self.path)?;
        let mut s = lock(&self.storage.state);
        let mut d = lock(&self.file.data);
        if s.fail_sync_dirs
            .iter()
            .any(|dir| self.path.starts_with(dir))
            && write_back_fails(&mut d)
        {
            s.fs_unreported = true;
        }
        if std::mem::take(&mut d.unreported) {
            s.failures += 1;
            return Err(io::Error::other(format!(
                "injected write-back failure of {}",
                self.path.display()
            )));
        }
        sync_data(&mut d);
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.storage.tick(&self.path)?;
        let mut d = lock(&self.file.data);
        let len = len as usize;
        d.current.resize(len, 0);
        d.dirty_from = d.dirty_from.min(len);
        Ok(())
    }
}

/// A tiny deterministic generator, so crash images are reproducible from a seed.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Fuzz entry point: `data` becomes the only segment of a partition with no checkpoint (so all
/// of it is recovered). Recovery must not panic, and whatever the recovered log serves must be
/// valid batches at rising offsets; the log must then accept an append at its end.
pub fn fuzz_recovery(data: &[u8]) {
    use crate::{AppendOrigin, Log, LogConfig, ReadUpTo};

    let disk = SimStorage::new();
    let dir = Path::new("/fuzz/partition-0");
    let path = dir.join(crate::segment::file_name(0, crate::segment::LOG_SUFFIX));
    let file = disk
        .open(&path, true)
        .expect("simulated disk creates files");
    file.write_at(data, 0).expect("simulated disk writes");
    let storage: Arc<dyn Storage> = Arc::new(disk);
    let log = match Log::open(storage, dir, LogConfig::default(), 0) {
        Ok(log) => log,
        // Refusing to open (e.g. overlapping segments) is an answer; panicking is not.
        Err(_) => return,
    };
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut last = -1i64;
    while offset < end {
        let read = log
            .read(offset, 1 << 16, ReadUpTo::LogEnd, true)
            .expect("a recovered log serves its offsets");
        let Some(slice) = read.data else { break };
        let bytes = slice.read().expect("served ranges are readable");
        for batch in fjord_record::split_batches(&bytes) {
            let batch = batch.expect("served ranges hold whole batches");
            let header = fjord_record::validate_batch(batch).expect("served batches verify");
            assert!(header.base_offset > last, "offsets rise");
            last = header.last_offset();
        }
        assert!(slice.next_offset > offset, "reads make progress");
        offset = slice.next_offset;
    }
    let mut b = fjord_record::BatchBuilder::default();
    b.push(0, Some(b"k"), Some(b"v"));
    let batch = b.build().expect("a small batch builds");
    let info = log
        .append(&batch, AppendOrigin::Client, 0)
        .expect("a recovered log accepts appends");
    assert_eq!(info.first_offset, end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_synced_bytes_and_entries_survive() {
        let disk = SimStorage::new();
        let dir = Path::new("/d");
        let a = disk.open(&dir.join("a"), true).unwrap();
        a.write_at(b"hello", 0).unwrap();
        a.sync().unwrap();
        a.write_at(b" world", 5).unwrap();
        // Entry not yet durable: the whole file vanishes.
        assert!(disk.crash_image(None).read_file(&dir.join("a")).is_none());
        disk.sync_dir(dir).unwrap();
        let img = disk.crash_image(None);
        assert_eq!(img.read_file(&dir.join("a")).unwrap(), b"hello");
        a.sync().unwrap();
        assert_eq!(
            disk.crash_image(None).read_file(&dir.join("a")).unwrap(),
            b"hello world"
        );
        // A truncation is not durable until synced.
        a.truncate(2).unwrap();
        assert_eq!(
            disk.crash_image(None).read_file(&dir.join("a")).unwrap(),
            b"hello world"
        );
        a.sync().unwrap();
        assert_eq!(
            disk.crash_image(None).read_file(&dir.join("a")).unwrap(),
            b"he"
        );
    }

    #[test]
    fn torn_tail_keeps_a_prefix_of_unsynced_bytes() {
        let disk = SimStorage::new();
        let p = Path::new("/d/f");
        let f = disk.open(p, true).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        f.write_at(b"durable", 0).unwrap();
        f.sync().unwrap();
        f.write_at(b"-pending-bytes", 7).unwrap();
        for seed in 0..50 {
            let got = disk.crash_image(Some(seed)).read_file(p).unwrap();
            assert!(got.len() >= 7 && got.len() <= 21);
            assert_eq!(&got[..7], b"durable");
        }
    }

    #[test]
    fn a_filesystem_sync_makes_everything_durable_but_other_mounts_and_failing_dirs() {
        let disk = SimStorage::new();
        disk.mount("/other");
        let fs = disk.filesystem_sync(Path::new("/d")).unwrap().unwrap();
        let files: Vec<_> = ["/d/a/f", "/d/b/f", "/other/f"]
            .into_iter()
            .map(|p| {
                let f = disk.open(Path::new(p), true).unwrap();
                f.write_at(b"data", 0).unwrap();
                f
            })
            .collect();
        fs.sync().unwrap();
        let img = disk.crash_image(None);
        assert_eq!(img.read_file(Path::new("/d/a/f")).unwrap(), b"data");
        assert_eq!(img.read_file(Path::new("/d/b/f")).unwrap(), b"data");
        assert!(img.read_file(Path::new("/other/f")).is_none());
        assert!(fs.covers(Path::new("/d/a")) && !fs.covers(Path::new("/other/f")));
        // A failing directory fails the sync and keeps its unsynced bytes out; the rest lands.
        files[0].write_at(b"more", 4).unwrap();
        files[1].write_at(b"more", 4).unwrap();
        disk.fail_under("/d/a");
        assert!(fs.sync().is_err());
        let img = disk.crash_image(None);
        assert_eq!(img.read_file(Path::new("/d/a/f")).unwrap(), b"data");
        assert_eq!(img.read_file(Path::new("/d/b/f")).unwrap(), b"datamore");
    }

    #[test]
    fn nth_operation_fails() {
        let disk = SimStorage::new();
        let f = disk.open(Path::new("/f"), true).unwrap();
        disk.fail_op(1, false);
        f.write_at(b"a", 0).unwrap();
        assert!(f.write_at(b"b", 1).is_err());
        f.write_at(b"c", 1).unwrap();
        assert_eq!(disk.failures(), 1);
    }
}
