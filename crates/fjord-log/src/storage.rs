//! The one seam through which the log touches the disk.
//!
//! Everything the log does to files goes through [`Storage`] and [`StorageFile`], so tests can
//! swap in [`crate::sim::SimStorage`], which injects failures and produces crash images. The
//! real implementation, [`FsStorage`], is a thin layer over `std::fs` with positional I/O.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directory tree of files.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Creates `path` and its parents if missing.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens a file for reading and writing; creates it (empty) when `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Names of the files directly in `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn exists(&self, path: &Path) -> io::Result<bool>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it (a deleted partition).
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the directories directly in `dir`.
    fn list_subdirs(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// A handle that makes everything written on the filesystem holding `dir` durable at once
    /// (Linux's syncfs(2)): every file's bytes and every directory entry. `None` where there is
    /// none, or where its failures would not all be reported (Linux before 5.17): callers then
    /// sync file by file.
    fn filesystem_sync(&self, _dir: &Path) -> io::Result<Option<Arc<dyn FilesystemSync>>> {
        Ok(None)
    }
}

/// One filesystem, made durable as a whole (see [`Storage::filesystem_sync`]).
pub trait FilesystemSync: Send + Sync + fmt::Debug {
    /// Makes every write and directory change made on the filesystem so far durable. An
    /// error means some data written since the last call may be lost, not which: the caller
    /// then syncs its files one by one to learn which (each reports its own failure).
    fn sync(&self) -> io::Result<()>;
    /// Whether `path` lies on this filesystem, so [`FilesystemSync::sync`] covers it.
    fn covers(&self, path: &Path) -> bool;
}

/// An open file. All methods take `&self`: positions are explicit, so readers and the single
/// writer share one handle without a cursor.
pub trait StorageFile: Send + Sync + fmt::Debug {
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads up to `buf.len()` bytes at `pos`; fewer only at the end of the file.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `data` at `pos`.
    fn write_at(&self, data: &[u8], pos: u64) -> io::Result<()>;
    /// Writes `pieces` back to back from `pos`; one system call where the OS allows.
    fn write_vectored_at(&self, pieces: &[&[u8]], pos: u64) -> io::Result<()> {
        let mut at = pos;
        for piece in pieces {
            self.write_at(piece, at)?;
            at += piece.len() as u64;
        }
        Ok(())
    }
    /// Makes every write so far durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    /// Cuts or extends the file to `len` bytes.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// The OS file descriptor, when there is one, for zero-copy sends (sendfile).
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

impl dyn StorageFile {
    /// Fills `buf` from `pos`, failing with `UnexpectedEof` if the file ends first.
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, pos)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file ends before byte {}", pos + buf.len() as u64),
                ));
            }
            buf = &mut buf[n..];
            pos += n as u64;
        }
        Ok(())
    }
}

/// Replaces `dir/name` with `bytes` atomically and durably: written to a temporary file,
/// synced, renamed over the old one, and the directory synced, so a crash leaves the old
/// file or the new one, never a mix.
pub fn write_atomic(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), crate::LogError> {
    use crate::LogError;
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let file = storage
        .open(&tmp, true)
        .map_err(LogError::io("creating", &tmp))?;
    file.truncate(0).map_err(LogError::io("writing", &tmp))?;
    file.write_at(bytes, 0)
        .map_err(LogError::io("writing", &tmp))?;
    file.sync().map_err(LogError::io("syncing", &tmp))?;
    storage
        .rename(&tmp, &path)
        .map_err(LogError::io("renaming", &tmp))?;
    storage.sync_dir(dir).map_err(LogError::io("syncing", dir))
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

/// Linux reports write-back failures to syncfs(2) from 5.8 (through the filesystem's error
/// sequence, once per open descriptor) and the filesystem's own sync failures (a journal that
/// cannot commit) from 5.17; before that a failed syncfs could look like a success.
#[cfg(target_os = "linux")]
const SYNCFS_REPORTS_ERRORS_FROM: (u32, u32) = (5, 17);

#[cfg(target_os = "linux")]
/// The kernel's version (major, minor), from `/proc/sys/kernel/osrelease` ("6.1.0-13-amd64").
fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    Some((parts.next()?.ok()?, parts.next()?.ok()?))
}

#[cfg(target_os = "linux")]
/// syncfs(2) on a descriptor held open for the broker's life: the filesystem's write-back
/// errors are reported to each descriptor once, from when it was opened, so a descriptor
/// opened per call could miss one another descriptor had already seen.
#[derive(Debug)]
struct FsFilesystem {
    dir: File,
    device: u64,
}

#[cfg(target_os = "linux")]
impl FilesystemSync for FsFilesystem {
    fn sync(&self) -> io::Result<()> {
        rustix::fs::syncfs(&self.dir).map_err(|e| {
            let e = io::Error::from(e);
            io::Error::new(e.kind(), format!("syncfs: {e}"))
        })
    }

    fn covers(&self, path: &Path) -> bool {
        rustix::fs::stat(path).is_ok_and(|st| st.st_dev == self.device)
    }
}

#[derive(Debug)]
struct FsFile {
    file: File,
    path: PathBuf,
}

impl Storage for FsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(FsFile {
            file,
            path: path.to_path_buf(),
        }))
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Ok(name) = entry.file_name().into_string()
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(dir)?;
        if let Some(parent) = dir.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    }

    fn list_subdirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir()
                && let Ok(name) = entry.file_name().into_string()
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    #[cfg(target_os = "linux")]
    fn filesystem_sync(&self, dir: &Path) -> io::Result<Option<Arc<dyn FilesystemSync>>> {
        if kernel_version().is_none_or(|v| v < SYNCFS_REPORTS_ERRORS_FROM) {
            return Ok(None);
        }
        let dir = File::open(dir)?;
        let device = rustix::fs::fstat(&dir)?.st_dev;
        Ok(Some(Arc::new(FsFilesystem { dir, device })))
    }
}

impl StorageFile for FsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        loop {
            match self.file.read_at(buf, pos) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn write_at(&self, data: &[u8], pos: u64) -> io::Result<()> {
        self.file
            .write_all_at(data, pos)
            .map_err(|e| io::Error::new(e.kind(), format!("write to {}: {e}", self.path.display())))
    }

    fn write_vectored_at(&self, pieces: &[&[u8]], pos: u64) -> io::Result<()> {
        let failed = |e: io::Error| {
            io::Error::new(e.kind(), format!("write to {}: {e}", self.path.display()))
        };
        let mut slices: Vec<IoSlice<'_>> = pieces
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| IoSlice::new(p))
            .collect();
        let mut rest = &mut slices[..];
        let mut pos = pos;
        while !rest.is_empty() {
            // At most IOV_MAX (1024 on Linux) slices per call.
            let n = rest.len().min(1024);
            match rustix::io::pwritev(&self.file, &rest[..n], pos) {
                Ok(0) => return Err(failed(io::ErrorKind::WriteZero.into())),
                Ok(written) => {
                    pos += written as u64;
                    IoSlice::advance_slices(&mut rest, written);
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(failed(e.into())),
            }
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.file
            .sync_data()
            .map_err(|e| io::Error::new(e.kind(), format!("fsync of {}: {e}", self.path.display())))
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filesystem_sync_covers_its_own_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let Some(fs) = FsStorage.filesystem_sync(dir.path()).unwrap() else {
            return; // not Linux 5.17+: nothing to check
        };
        let file = FsStorage.open(&dir.path().join("f"), true).unwrap();
        file.write_at(b"bytes", 0).unwrap();
        fs.sync().unwrap();
        assert!(fs.covers(&dir.path().join("f")));
        assert!(!fs.covers(Path::new("/proc/self")));
        assert!(!fs.covers(&dir.path().join("missing")));
    }

    #[test]
    fn vectored_writes_land_back_to_back_past_the_iov_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = FsStorage.open(&dir.path().join("f"), true).unwrap();
        // 3,000 pieces (more than one pwritev takes), some empty, of varied sizes.
        let pieces: Vec<Vec<u8>> = (0..3_000u32)
            .map(|i| vec![(i % 251) as u8; (i % 7) as usize * 13])
            .collect();
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        file.write_at(b"head", 0).unwrap();
        file.write_vectored_at(&refs, 4).unwrap();
        let expected: Vec<u8> = b"head".iter().copied().chain(pieces.concat()).collect();
        assert_eq!(file.len().unwrap(), expected.len() as u64);
        let mut back = vec![0u8; expected.len()];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, expected);
    }
}
