//! One segment: a `.log` file of record batches and its two indexes.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fjord_record::{BatchHeader, HEADER_LEN, validate_batch};

use crate::LogError;
use crate::index::{Index, OffsetEntry, TimeEntry};
use crate::storage::{Storage, StorageFile};

pub const LOG_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";
/// Suffix of files written by compaction before they replace the originals.
pub const CLEANED_SUFFIX: &str = ".cleaned";

static NEXT_SEGMENT_ID: AtomicU64 = AtomicU64::new(1);

/// `{base_offset:020}` + suffix, Kafka's segment file name.
pub fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}{suffix}")
}

/// The base offset in a segment file name, if it is one.
pub fn parse_base(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// A segment's in-memory state. The log mutates it under its lock; readers copy out the file
/// handle and positions they need and read without the lock.
#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    pub log: Arc<dyn StorageFile>,
    pub offset_index: Index<OffsetEntry>,
    pub time_index: Index<TimeEntry>,
    /// Bytes of whole batches in the file.
    pub size: u64,
    /// The offset after the last batch; `base_offset` when empty.
    pub next_offset: i64,
    /// Largest batch max timestamp, -1 when none.
    pub max_timestamp: i64,
    /// Base offset of the batch holding `max_timestamp`.
    pub max_timestamp_batch: i64,
    pub bytes_since_index: u64,
    /// Max timestamp of the first batch (for `segment.ms`), or the creation time.
    pub rolling_timestamp: i64,
    /// Identity, so compaction can tell a segment it read from a newer one with the same base.
    pub id: u64,
    /// A lookup in the indexes' files gave an answer the log contradicts: scan from the start.
    index_distrusted: AtomicBool,
}

/// The files of the segment at `base` in `dir`.
pub fn paths(dir: &Path, base: i64) -> [PathBuf; 3] {
    [
        dir.join(file_name(base, LOG_SUFFIX)),
        dir.join(file_name(base, INDEX_SUFFIX)),
        dir.join(file_name(base, TIME_INDEX_SUFFIX)),
    ]
}

impl Segment {
    /// Creates an empty segment (emptying leftover files of the same name durably).
    pub fn create(
        storage: &dyn Storage,
        dir: &Path,
        base: i64,
        now_ms: i64,
    ) -> Result<Self, LogError> {
        Self::create_named(storage, dir, base, now_ms, "")
    }

    /// As [`Segment::create`], with `suffix` after each file name (compaction's `.cleaned`).
    pub fn create_named(
        storage: &dyn Storage,
        dir: &Path,
        base: i64,
        now_ms: i64,
        suffix: &str,
    ) -> Result<Self, LogError> {
        let [log_path, index_path, time_path] = paths(dir, base).map(|p| {
            let mut name = p.into_os_string();
            name.push(suffix);
            PathBuf::from(name)
        });
        let open_empty = |path: &Path| -> Result<Arc<dyn StorageFile>, LogError> {
            let file = storage
                .open(path, true)
                .map_err(LogError::io("creating", path))?;
            if file.len().map_err(LogError::io("reading", path))? > 0 {
                // Stale bytes must not come back after a crash.
                file.truncate(0).map_err(LogError::io("emptying", path))?;
                file.sync().map_err(LogError::io("syncing", path))?;
            }
            Ok(file)
        };
        let log = open_empty(&log_path)?;
        // The index files exist from the start (empty); their descriptors are not kept.
        open_empty(&index_path)?;
        open_empty(&time_path)?;
        Ok(Self {
            base_offset: base,
            log,
            offset_index: Index::empty(index_path),
            time_index: Index::empty(time_path),
            size: 0,
            next_offset: base,
            max_timestamp: -1,
            max_timestamp_batch: base,
            bytes_since_index: 0,
            rolling_timestamp: now_ms,
            id: NEXT_SEGMENT_ID.fetch_add(1, Ordering::Relaxed),
            index_distrusted: AtomicBool::new(false),
        })
    }

    /// Opens a segment whose bytes are trusted (below the recovery point, or after a clean
    /// shutdown). The active segment's indexes are loaded if they pass the sanity checks; a
    /// sealed segment's stay in their files, checked only for size and their last entries.
    /// When a check fails, or the tail past the last index entry does not parse, `Ok(None)`
    /// says "recover this one".
    pub fn open_trusted(
        storage: &dyn Storage,
        dir: &Path,
        base: i64,
        next_base: Option<i64>,
    ) -> Result<Option<Self>, LogError> {
        let [log_path, index_path, time_path] = paths(dir, base);
        let log = storage
            .open(&log_path, false)
            .map_err(LogError::io("opening", &log_path))?;
        let size = log.len().map_err(LogError::io("reading", &log_path))?;
        if !storage
            .exists(&index_path)
            .map_err(LogError::io("checking", &index_path))?
            || !storage
                .exists(&time_path)
                .map_err(LogError::io("checking", &time_path))?
        {
            return Ok(None);
        }
        let in_size = |e: &OffsetEntry| u64::from(e.position) < size;
        let offset_index = match next_base {
            Some(_) => Index::in_file(storage, index_path.clone(), in_size),
            None => Index::load(storage, index_path.clone(), in_size),
        };
        let Some(offset_index) = offset_index.map_err(LogError::io("reading", &index_path))? else {
            return Ok(None);
        };
        // A sealed segment's newest timestamp (its retention) comes from the last entry: it
        // must name an offset inside the segment.
        let time_index = match next_base {
            Some(next) => Index::<TimeEntry>::in_file(storage, time_path.clone(), |e| {
                base + i64::from(e.relative_offset) < next
            }),
            None => Index::load(storage, time_path.clone(), |_| true),
        };
        let Some(time_index) = time_index.map_err(LogError::io("reading", &time_path))? else {
            return Ok(None);
        };
        let mut segment = Self {
            base_offset: base,
            log,
            offset_index,
            time_index,
            size,
            next_offset: base,
            max_timestamp: -1,
            max_timestamp_batch: base,
            bytes_since_index: 0,
            rolling_timestamp: -1,
            id: NEXT_SEGMENT_ID.fetch_add(1, Ordering::Relaxed),
            index_distrusted: AtomicBool::new(false),
        };
        if let Some(last) = segment.time_index.last() {
            segment.max_timestamp = last.timestamp;
            segment.max_timestamp_batch = base + i64::from(last.relative_offset);
        }
        if let Some(next_base) = next_base {
            // A sealed segment: its end is the next one's base, its newest timestamp is the
            // time index's last entry (written when it was sealed). No scan needed.
            segment.next_offset = next_base;
            return Ok(Some(segment));
        }
        // The active segment: walk the tail past the last index entry to find the end offset
        // and the newest timestamps; the walk is bounded by the index interval.
        let start = segment
            .offset_index
            .last()
            .map_or(0, |e| u64::from(e.position));
        let log = segment.log.clone();
        let mut scanner = Scanner::new(&*log, start, size);
        let mut first = true;
        while let Some((pos, header)) = match scanner.next_header() {
            Ok(h) => h,
            Err(ScanError::Io(e)) => return Err(LogError::io("reading", &log_path)(e)),
            Err(ScanError::Corrupt { .. }) => return Ok(None),
        } {
            if header.base_offset < base {
                return Ok(None);
            }
            if first && start == 0 {
                segment.rolling_timestamp = header.max_timestamp;
            }
            first = false;
            segment.note_batch(&header);
            segment.bytes_since_index = size - pos;
        }
        if scanner.pos() != size {
            return Ok(None);
        }
        if segment.rolling_timestamp < 0 {
            // The first batch's timestamp is not at hand without a read; take it.
            segment.rolling_timestamp = read_header_at(&*segment.log, 0)
                .ok()
                .flatten()
                .map_or(-1, |h| h.max_timestamp);
        }
        Ok(Some(segment))
    }

    /// Opens a segment by scanning every batch: checks each against its CRC, its length and
    /// offsets that keep rising (at least `min_offset`; with `require_dense`, exactly following
    /// on), rebuilds both indexes, and cuts the file at the first batch that fails. Returns the
    /// segment and whether it was cut.
    pub fn recover(
        storage: &dyn Storage,
        dir: &Path,
        base: i64,
        min_offset: i64,
        require_dense: bool,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> Result<(Self, bool), LogError> {
        let [log_path, index_path, time_path] = paths(dir, base);
        let log = storage
            .open(&log_path, false)
            .map_err(LogError::io("opening", &log_path))?;
        let file_len = log.len().map_err(LogError::io("reading", &log_path))?;
        // The rebuilt indexes are written by `sync_all`.
        let mut segment = Self {
            base_offset: base,
            log,
            offset_index: Index::empty(index_path.clone()),
            time_index: Index::empty(time_path),
            size: 0,
            next_offset: base,
            max_timestamp: -1,
            max_timestamp_batch: base,
            bytes_since_index: 0,
            rolling_timestamp: now_ms,
            id: NEXT_SEGMENT_ID.fetch_add(1, Ordering::Relaxed),
            index_distrusted: AtomicBool::new(false),
        };
        let mut expected = min_offset.max(base);
        let log = segment.log.clone();
        let mut scanner = Scanner::new(&*log, 0, file_len);
        let mut cut_reason = None;
        loop {
            match scanner.next_batch() {
                Ok(None) => break,
                Ok(Some((pos, bytes))) => {
                    let header = match validate_batch(bytes) {
                        Ok(h) => h,
                        Err(e) => {
                            cut_reason = Some(format!("at byte {pos}: {e}"));
                            break;
                        }
                    };
                    // The base offset is outside the CRC: a torn write can garble it. Where
                    // offsets must be dense (no compaction gaps), anything else is garbage.
                    if header.base_offset < expected
                        || (require_dense && header.base_offset != expected)
                    {
                        cut_reason = Some(format!(
                            "at byte {pos}: batch offset {} where {expected} was expected",
                            header.base_offset
                        ));
                        break;
                    }
                    if header.last_offset() - base > i64::from(u32::MAX >> 1) {
                        cut_reason =
                            Some(format!("at byte {pos}: offset too far from segment base"));
                        break;
                    }
                    if pos == 0 {
                        segment.rolling_timestamp = header.max_timestamp;
                    }
                    segment
                        .index_batch(pos, &header, index_interval_bytes)
                        .map_err(LogError::io("writing", &index_path))?;
                    segment.note_batch(&header);
                    segment.size = pos + header.total_len() as u64;
                    expected = header.next_offset();
                }
                Err(ScanError::Io(e)) => return Err(LogError::io("reading", &log_path)(e)),
                Err(ScanError::Corrupt { pos, reason }) => {
                    let mut head = vec![0u8; 64 * 1024];
                    let n = segment
                        .log
                        .read_at(&mut head, pos)
                        .map_err(LogError::io("reading", &log_path))?;
                    if fjord_record::is_legacy_message(&head[..n]) {
                        return Err(LogError::Unreadable {
                            path: log_path,
                            reason: format!(
                                "byte {pos} starts a Kafka message in format v0/v1 (before Kafka 0.11), which Fjord does not read; re-produce the data with a current client, or keep this partition on Kafka"
                            ),
                        });
                    }
                    cut_reason = Some(format!("at byte {pos}: {reason}"));
                    break;
                }
            }
        }
        let cut = segment.size < file_len;
        if cut {
            tracing::warn!(
                segment = %log_path.display(),
                kept_bytes = segment.size,
                dropped_bytes = file_len - segment.size,
                reason = cut_reason.as_deref().unwrap_or("trailing bytes"),
                "truncating unverifiable tail of segment"
            );
            segment
                .log
                .truncate(segment.size)
                .map_err(LogError::io("truncating", &log_path))?;
        }
        Ok((segment, cut))
    }

    /// Records a batch's offsets and timestamps (not its bytes or index entries).
    fn note_batch(&mut self, header: &BatchHeader) {
        self.next_offset = header.next_offset();
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.max_timestamp_batch = header.base_offset;
        }
    }

    /// Adds index entries for a batch at `pos`, if an index interval has passed. The entry
    /// goes in before the batch is counted, so a scan from any entry covers its batch.
    fn index_batch(&mut self, pos: u64, header: &BatchHeader, interval: u64) -> io::Result<()> {
        let indexed = self.bytes_since_index >= interval;
        if indexed {
            self.offset_index.append(OffsetEntry {
                relative_offset: (header.base_offset - self.base_offset) as u32,
                position: pos as u32,
            })?;
            self.bytes_since_index = 0;
        }
        if indexed || pos == 0 {
            // The newest max timestamp so far, including this batch, and the batch holding it.
            let (max_ts, holder) = if header.max_timestamp > self.max_timestamp {
                (header.max_timestamp, header.base_offset)
            } else {
                (self.max_timestamp, self.max_timestamp_batch)
            };
            if max_ts >= 0 && self.time_index.last().is_none_or(|e| max_ts > e.timestamp) {
                self.time_index.append(TimeEntry {
                    timestamp: max_ts,
                    relative_offset: (holder - self.base_offset) as u32,
                })?;
            }
        }
        self.bytes_since_index += header.total_len() as u64;
        Ok(())
    }

    /// Appends validated batches that already carry their final offsets.
    /// Appends whole batches, given as `pieces` written back to back, and indexes them.
    pub fn append(
        &mut self,
        pieces: &[&[u8]],
        headers: &[BatchHeader],
        index_interval: u64,
    ) -> io::Result<()> {
        if self.size == 0
            && let Some(first) = headers.first().filter(|h| h.max_timestamp >= 0)
        {
            self.rolling_timestamp = first.max_timestamp;
        }
        self.log.write_vectored_at(pieces, self.size)?;
        let mut pos = self.size;
        for header in headers {
            self.index_batch(pos, header, index_interval)?;
            self.note_batch(header);
            pos += header.total_len() as u64;
        }
        self.size = pos;
        Ok(())
    }

    /// Writes a last time-index entry for the newest timestamp, so a reopened segment knows its
    /// max timestamp without a scan. Called when the segment stops being the active one.
    pub fn seal(&mut self) -> io::Result<()> {
        if self.max_timestamp >= 0
            && self
                .time_index
                .last()
                .is_none_or(|e| self.max_timestamp > e.timestamp)
        {
            self.time_index.append(TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: (self.max_timestamp_batch - self.base_offset) as u32,
            })?;
        }
        Ok(())
    }

    /// Whether one more index entry would exceed `segment.index.bytes`.
    pub fn index_full(&self, segment_index_bytes: u64) -> bool {
        ((self.offset_index.len() + 1) * 8) as u64 > segment_index_bytes
    }

    /// The file position to start scanning from for `offset`. An answer from an index file is
    /// checked against the log (a batch with that base offset starts there); a file that fails
    /// the check is not asked again, and the scan starts at the segment's start (slower, never
    /// wrong).
    pub fn position_for(&self, storage: &dyn Storage, offset: i64) -> u64 {
        let rel = (offset - self.base_offset).clamp(0, i64::from(u32::MAX));
        if self.index_distrusted.load(Ordering::Relaxed) {
            return 0;
        }
        let found = match self.offset_index.floor(storage, rel, false) {
            Ok(found) => found,
            Err(e) => return self.unreadable(&e),
        };
        let Some(entry) = found else { return 0 };
        let pos = u64::from(entry.position);
        if !self.offset_index.in_memory() {
            let expected = self.base_offset + i64::from(entry.relative_offset);
            match read_header_at(&*self.log, pos) {
                Ok(Some(h)) if pos < self.size && h.base_offset == expected => {}
                Ok(_) => {
                    return self.distrust(&format!(
                        "it places offset {expected} at byte {pos}, where no batch of it starts"
                    ));
                }
                Err(e) => return self.unreadable(&e),
            }
        }
        pos
    }

    /// The position to start scanning from for the first batch with max timestamp >= `ts`.
    pub fn position_for_timestamp(&self, storage: &dyn Storage, ts: i64) -> u64 {
        if self.index_distrusted.load(Ordering::Relaxed) {
            return 0;
        }
        match self.time_index.floor(storage, ts, true) {
            Ok(Some(e)) if self.base_offset + i64::from(e.relative_offset) >= self.next_offset => {
                self.distrust(&format!(
                    "its time index names offset {}, past the segment's end",
                    self.base_offset + i64::from(e.relative_offset)
                ))
            }
            Ok(Some(e)) => {
                self.position_for(storage, self.base_offset + i64::from(e.relative_offset))
            }
            Ok(None) => 0,
            Err(e) => self.unreadable(&e),
        }
    }

    /// A lookup that could not read (a passing error: too many open files, a file being
    /// replaced): this scan starts at byte 0, the next lookup tries again.
    fn unreadable(&self, e: &io::Error) -> u64 {
        tracing::warn!(
            index = %self.offset_index.path().display(),
            error = %e,
            "segment index lookup failed; scanning the segment from its start this once"
        );
        0
    }

    /// Stops using this segment's index files after a bad answer; scans start at byte 0.
    fn distrust(&self, why: &str) -> u64 {
        if !self.index_distrusted.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                index = %self.offset_index.path().display(),
                "segment index not used any more: {why}; reads of this segment scan it from its start until the broker restarts (delete the .index and .timeindex files while it is stopped to have them rebuilt)"
            );
        }
        0
    }

    /// Bytes of memory the indexes hold.
    pub fn index_memory_bytes(&self) -> usize {
        self.offset_index.memory_bytes() + self.time_index.memory_bytes()
    }

    /// Drops the indexes from memory once their files hold them (a sealed segment's); lookups
    /// then search the files.
    pub fn release_indexes(&mut self) {
        self.offset_index.release();
        self.time_index.release();
    }

    /// Brings the indexes back into memory before the segment is the active one again (a
    /// truncation removed the ones after it); rebuilds them from the log if the files fail
    /// their checks.
    pub fn make_active(&mut self, storage: &dyn Storage, index_interval: u64) -> io::Result<()> {
        let size = self.size;
        // Indexes the log contradicted are rebuilt, not believed again.
        let loaded = !self.index_distrusted.load(Ordering::Relaxed)
            && self
                .offset_index
                .reload(storage, |e| u64::from(e.position) < size)?
            && self.time_index.reload(storage, |_| true)?;
        if !loaded {
            tracing::warn!(index = %self.offset_index.path().display(), "segment index failed its checks; rebuilding it");
            self.reindex(index_interval)?;
        }
        self.index_distrusted.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Rebuilds both indexes in memory by scanning the log.
    fn reindex(&mut self, interval: u64) -> io::Result<()> {
        self.offset_index.clear();
        self.time_index.clear();
        let next_offset = self.next_offset;
        self.bytes_since_index = 0;
        self.max_timestamp = -1;
        self.max_timestamp_batch = self.base_offset;
        let log = self.log.clone();
        let mut scanner = Scanner::new(&*log, 0, self.size);
        while let Some((pos, header)) = scanner.next_header().map_err(ScanError::into_io)? {
            self.index_batch(pos, &header, interval)?;
            self.note_batch(&header);
        }
        self.next_offset = next_offset;
        Ok(())
    }

    /// Cuts the segment at `pos` (a batch boundary) whose batches end at `next_offset`, trimming
    /// the indexes and recomputing the newest timestamp from what remains.
    pub fn truncate_to(&mut self, pos: u64, next_offset: i64) -> io::Result<()> {
        self.log.truncate(pos)?;
        self.size = pos;
        self.next_offset = next_offset.max(self.base_offset);
        let base = self.base_offset;
        self.offset_index
            .truncate_while(|e| u64::from(e.position) < pos)?;
        self.time_index
            .truncate_while(|e| base + i64::from(e.relative_offset) < next_offset)?;
        self.max_timestamp = -1;
        self.max_timestamp_batch = base;
        if let Some(last) = self.time_index.last() {
            self.max_timestamp = last.timestamp;
            self.max_timestamp_batch = base + i64::from(last.relative_offset);
        }
        let start = self
            .offset_index
            .last()
            .map_or(0, |e| u64::from(e.position));
        let log = self.log.clone();
        let mut scanner = Scanner::new(&*log, start, pos);
        while let Some((p, header)) = scanner.next_header().map_err(ScanError::into_io)? {
            if header.max_timestamp > self.max_timestamp {
                self.max_timestamp = header.max_timestamp;
                self.max_timestamp_batch = header.base_offset;
            }
            self.bytes_since_index = pos - p;
        }
        if pos == 0 {
            self.bytes_since_index = 0;
        }
        Ok(())
    }

    /// Syncs the log file and writes both index files durably.
    pub fn sync_all(&mut self, storage: &dyn Storage) -> io::Result<()> {
        self.log.sync()?;
        self.persist_indexes(storage)
    }

    /// Writes both index files durably, if they do not hold the entries in memory already.
    pub fn persist_indexes(&mut self, storage: &dyn Storage) -> io::Result<()> {
        self.offset_index.persist(storage)?;
        self.time_index.persist(storage)
    }

    /// Points the indexes at their files after the segment's files were renamed.
    pub fn renamed(&mut self, index: &Path, time_index: &Path) {
        self.offset_index.set_path(index);
        self.time_index.set_path(time_index);
    }
}

/// Reads the batch header at `pos`, `Ok(None)` at the end of the file.
pub fn read_header_at(file: &dyn StorageFile, pos: u64) -> io::Result<Option<BatchHeader>> {
    let mut buf = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = file.read_at(&mut buf[got..], pos + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    if got < HEADER_LEN {
        return Ok(None);
    }
    Ok(BatchHeader::parse(&buf).ok())
}

/// Why a scan stopped early.
#[derive(Debug)]
pub enum ScanError {
    Io(io::Error),
    /// The bytes at `pos` are not a batch (bad header, or a batch running past the end).
    Corrupt {
        pos: u64,
        reason: String,
    },
}

impl ScanError {
    pub fn into_io(self) -> io::Error {
        match self {
            Self::Io(e) => e,
            Self::Corrupt { pos, reason } => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("at byte {pos}: {reason}"),
            ),
        }
    }
}

/// Walks the batches of a segment file between two positions with buffered positional reads.
///
/// Reading whole batches (recovery, compaction) fills the buffer in large chunks. Walking only
/// headers (fetch, truncation) reads just a header after a large batch, so a read of big
/// batches touches little more than the bytes it will send.
#[derive(Debug)]
pub struct Scanner<'a> {
    file: &'a dyn StorageFile,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    buf_start: u64,
    /// Size of the last batch skipped by `next_header`.
    last_skipped: usize,
}

const SCAN_CHUNK: usize = 256 * 1024;
const HEADER_CHUNK: usize = 8 * 1024;

impl<'a> Scanner<'a> {
    pub fn new(file: &'a dyn StorageFile, pos: u64, end: u64) -> Self {
        Self {
            file,
            pos,
            end,
            buf: Vec::new(),
            buf_start: pos,
            last_skipped: 0,
        }
    }

    /// The position of the next batch.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Makes `len` bytes from `self.pos` available in the buffer; false if the range ends first.
    fn fill(&mut self, len: usize, chunk: usize) -> Result<bool, ScanError> {
        if self.pos + len as u64 > self.end {
            return Ok(false);
        }
        let have_from = self.pos.checked_sub(self.buf_start).map(|o| o as usize);
        if let Some(off) = have_from
            && off + len <= self.buf.len()
        {
            return Ok(true);
        }
        let want = len.max(chunk).min((self.end - self.pos) as usize);
        self.buf.resize(want, 0);
        let mut got = 0;
        while got < want {
            let n = self
                .file
                .read_at(&mut self.buf[got..], self.pos + got as u64)
                .map_err(ScanError::Io)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        self.buf.truncate(got);
        self.buf_start = self.pos;
        Ok(got >= len)
    }

    fn at(&self, len: usize) -> &[u8] {
        let off = (self.pos - self.buf_start) as usize;
        &self.buf[off..off + len]
    }

    fn header(&mut self, chunk: usize) -> Result<Option<BatchHeader>, ScanError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        if self.end - self.pos < HEADER_LEN as u64 || !self.fill(HEADER_LEN, chunk)? {
            return Err(ScanError::Corrupt {
                pos: self.pos,
                reason: format!(
                    "{} bytes left, less than a batch header",
                    self.end - self.pos
                ),
            });
        }
        let header = BatchHeader::parse(self.at(HEADER_LEN)).map_err(|e| ScanError::Corrupt {
            pos: self.pos,
            reason: e.to_string(),
        })?;
        if self.pos + header.total_len() as u64 > self.end {
            return Err(ScanError::Corrupt {
                pos: self.pos,
                reason: format!("batch of {} bytes runs past the end", header.total_len()),
            });
        }
        Ok(Some(header))
    }

    /// The next batch's position and header; its bytes are skipped.
    pub fn next_header(&mut self) -> Result<Option<(u64, BatchHeader)>, ScanError> {
        // After a big batch the next header is likely far away too: read only the header.
        let chunk = if self.last_skipped > HEADER_CHUNK / 2 {
            HEADER_LEN
        } else {
            HEADER_CHUNK
        };
        let Some(header) = self.header(chunk)? else {
            return Ok(None);
        };
        let pos = self.pos;
        self.last_skipped = header.total_len();
        self.pos += header.total_len() as u64;
        Ok(Some((pos, header)))
    }

    /// The next batch's position and bytes (not validated).
    pub fn next_batch(&mut self) -> Result<Option<(u64, &[u8])>, ScanError> {
        let Some(header) = self.header(SCAN_CHUNK)? else {
            return Ok(None);
        };
        let len = header.total_len();
        if !self.fill(len, SCAN_CHUNK)? {
            return Err(ScanError::Corrupt {
                pos: self.pos,
                reason: "file shorter than its batches".into(),
            });
        }
        let pos = self.pos;
        let off = (pos - self.buf_start) as usize;
        self.pos += len as u64;
        Ok(Some((pos, &self.buf[off..off + len])))
    }
}
