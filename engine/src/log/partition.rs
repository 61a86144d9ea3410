//! One partition of a stream: an ordered list of segment files, appended with group commit.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::frame::{self, FrameMeta, Stamp};
pub use super::frame::{FrameKind, ProducerSeq};
use super::{LogConfig, Notifier, now_ms, sync_dir};
use crate::error::IoContext;
use crate::{Error, Result};

static ABORT_ON_FSYNC_FAILURE: AtomicBool = AtomicBool::new(true);

/// Whether a failed fsync of a log file stops the process (the default, as PostgreSQL does):
/// pretending to go on could acknowledge writes the kernel has already dropped. With `false`
/// the partition only refuses further appends ([`crate::Error::Poisoned`]).
pub fn abort_on_fsync_failure(abort: bool) {
    ABORT_ON_FSYNC_FAILURE.store(abort, Ordering::Release);
}

/// A batch encoded for the log but not yet given offsets: the costly part of an append (IPC
/// encoding, compression), done before any lock is taken.
#[derive(Debug)]
pub struct Frame {
    bytes: Vec<u8>,
    rows: u32,
    append_ms: i64,
    producer: Option<ProducerSeq>,
    source_next: Option<i64>,
    txn: Option<(u64, FrameKind)>,
}

impl Frame {
    /// Encodes `batch`, stamped with the current wall-clock time (for time retention).
    pub fn encode(batch: &RecordBatch) -> Result<Self> {
        Self::encode_for(batch, None)
    }

    /// Encodes `batch` as sent by an idempotent producer (see [`Partition::write_frame_checked`]).
    pub fn encode_for(batch: &RecordBatch, producer: Option<ProducerSeq>) -> Result<Self> {
        Self::encode_with(batch, producer, None)
    }

    /// Encodes rows copied from an external source together with the source position that
    /// follows them (`next`, a source offset), so that a restart resumes exactly there: see
    /// [`Partition::source_next`].
    pub fn encode_from_source(batch: &RecordBatch, next: i64) -> Result<Self> {
        if next < 0 {
            return Err(Error::InvalidArgument(format!(
                "a source position must not be negative (got {next})"
            )));
        }
        Self::encode_with(batch, None, Some(next))
    }

    /// Encodes rows of log transaction `txn`: readers see them once its commit marker is
    /// durable, and never if it aborts (see [`crate::log::Transaction`]).
    pub fn encode_in(batch: &RecordBatch, txn: u64) -> Result<Self> {
        Self::encode_in_for(batch, txn, None)
    }

    /// Encodes rows of log transaction `txn` sent by an idempotent producer.
    pub fn encode_in_for(
        batch: &RecordBatch,
        txn: u64,
        producer: Option<ProducerSeq>,
    ) -> Result<Self> {
        let stamp = Stamp {
            append_ms: now_ms(),
            producer,
            source_next: None,
            txn: Some((txn, FrameKind::Rows)),
        };
        Self::encode_stamped(batch, stamp)
    }

    fn encode_with(
        batch: &RecordBatch,
        producer: Option<ProducerSeq>,
        source_next: Option<i64>,
    ) -> Result<Self> {
        let stamp = Stamp {
            append_ms: now_ms(),
            producer,
            source_next,
            txn: None,
        };
        Self::encode_stamped(batch, stamp)
    }

    fn encode_stamped(batch: &RecordBatch, stamp: Stamp) -> Result<Self> {
        let bytes = frame::encode(batch, stamp)?;
        Ok(Self {
            bytes,
            // `frame::encode` refuses batches of more rows than a u32 holds.
            rows: batch.num_rows() as u32,
            append_ms: stamp.append_ms,
            producer: stamp.producer,
            source_next: stamp.source_next,
            txn: stamp.txn,
        })
    }

    /// The marker that ends transaction `txn` in a partition: no rows, no offset.
    fn marker(txn: u64, kind: FrameKind) -> Self {
        let append_ms = now_ms();
        Self {
            bytes: frame::encode_marker(txn, kind, append_ms),
            rows: 0,
            append_ms,
            producer: None,
            source_next: None,
            txn: Some((txn, kind)),
        }
    }
}

/// What writing a producer's frame did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The rows were written at offsets `[base, end)`.
    New(u64, u64),
    /// The producer sent this batch before (a retry); it is stored at `[base, end)`.
    Duplicate(u64, u64),
}

/// The last batches of one idempotent producer, to recognise retries.
#[derive(Debug, Default)]
struct ProducerState {
    epoch: i16,
    /// `(first sequence, last sequence, base offset, end offset)`, oldest first.
    batches: std::collections::VecDeque<(i32, i32, u64, u64)>,
}

/// How many of a producer's batches are remembered: Kafka's limit on batches in flight.
const PRODUCER_BATCHES: usize = 5;

/// Where one frame lives in its segment.
#[derive(Debug, Clone, Copy)]
struct FrameRef {
    base_offset: u64,
    rows: u32,
    pos: u64,
    len: u32,
    producer: Option<ProducerSeq>,
    source_next: Option<i64>,
    /// The log transaction whose rows (or marker) the frame holds.
    txn: Option<(u64, FrameKind)>,
    /// Rows of an aborted transaction: readers pass over them.
    aborted: bool,
}

/// One segment file: frames from `base_offset` on.
#[derive(Debug)]
struct Segment {
    base_offset: u64,
    path: PathBuf,
    file: Arc<File>,
    size: u64,
    frames: Vec<FrameRef>,
    last_append_ms: i64,
}

impl Segment {
    fn end_offset(&self) -> u64 {
        self.frames
            .last()
            .map_or(self.base_offset, |f| f.base_offset + u64::from(f.rows))
    }
}

#[derive(Debug)]
struct State {
    /// Oldest first; the last one is the active segment that takes appends.
    segments: Vec<Segment>,
    /// The offset the next appended row gets.
    next_offset: u64,
    /// Idempotent producers' last batches, rebuilt from the frames on open.
    producers: std::collections::HashMap<i64, ProducerState>,
    /// Log transactions with rows here and no marker yet: transaction id to its first offset.
    /// Readers stop at the first of them (Kafka's last stable offset).
    open: std::collections::BTreeMap<u64, u64>,
}

impl State {
    /// The first offset of the oldest open transaction, `u64::MAX` without one: rows from
    /// there on are not visible yet, whatever wrote them.
    fn first_open(&self) -> u64 {
        self.open.values().copied().min().unwrap_or(u64::MAX)
    }

    /// Marks the rows of transaction `txn` as aborted, from offset `from` on.
    fn mark_aborted(&mut self, txn: u64, from: u64) {
        let first = self.segments.partition_point(|s| s.end_offset() <= from);
        for seg in &mut self.segments[first.saturating_sub(1)..] {
            for f in seg
                .frames
                .iter_mut()
                .filter(|f| f.txn == Some((txn, FrameKind::Rows)))
            {
                f.aborted = true;
            }
        }
    }

    /// Remembers a producer's batch stored at `[base, end)`.
    fn record(&mut self, p: ProducerSeq, rows: u32, base: u64, end: u64) {
        let state = self.producers.entry(p.id).or_default();
        if state.epoch != p.epoch {
            state.epoch = p.epoch;
            state.batches.clear();
        }
        let last = p.base_sequence.wrapping_add(rows as i32).wrapping_sub(1);
        state.batches.push_back((p.base_sequence, last, base, end));
        if state.batches.len() > PRODUCER_BATCHES {
            state.batches.pop_front();
        }
    }
}

/// A durable, append-only sequence of rows, each with an offset.
#[derive(Debug)]
pub struct Partition {
    name: String,
    dir: PathBuf,
    config: LogConfig,
    state: Mutex<State>,
    /// Held while syncing; holds the offset known durable. Appenders that queue here while
    /// another fsync runs are usually covered by it: that is the group commit.
    synced: Mutex<u64>,
    /// Rows below this offset are durable and visible to readers.
    committed: AtomicU64,
    poisoned: AtomicBool,
    notifier: Arc<Notifier>,
    /// The stream's schema, for the empty batch that tells a reader where skipped rows end.
    schema: SchemaRef,
    /// Transactions found committed while opening, for [`Partition::take_recovered`].
    recovered_commits: Mutex<Vec<u64>>,
}

fn segment_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

fn open_segment_file(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .ctx(|| format!("opening segment {}", path.display()))
}

impl Partition {
    /// Opens (or creates) the partition in `dir`, recovering its tail.
    ///
    /// Recovery validates every frame; a torn or corrupt tail of the newest segment, which can
    /// only hold unacknowledged appends, is truncated. Damage anywhere else is reported as
    /// [`Error::Corrupt`] rather than silently dropping acknowledged data.
    pub fn open(
        name: String,
        dir: &Path,
        schema: SchemaRef,
        config: LogConfig,
        notifier: Arc<Notifier>,
    ) -> Result<Self> {
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let file_name = entry.file_name();
            let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".log")) else {
                continue;
            };
            match stem.parse::<u64>() {
                Ok(base) => bases.push(base),
                Err(_) => {
                    tracing::warn!(file = ?entry.path(), "ignoring a file that is not a segment")
                }
            }
        }
        bases.sort_unstable();
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        let count = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let is_last = i + 1 == count;
            if let Some(prev) = segments.last() {
                if prev.end_offset() != base {
                    return Err(Error::Corrupt(format!(
                        "{name}: segment {base} does not follow segment {} (which ends at {})",
                        prev.base_offset,
                        prev.end_offset()
                    )));
                }
            }
            segments.push(recover_segment(&name, dir, base, is_last)?);
        }
        if segments.is_empty() {
            let path = segment_path(dir, 0);
            let file = open_segment_file(&path, true)?;
            sync_dir(dir)?;
            segments.push(Segment {
                base_offset: 0,
                path,
                file: Arc::new(file),
                size: 0,
                frames: Vec::new(),
                last_append_ms: now_ms(),
            });
        }
        let next_offset = segments.last().map_or(0, Segment::end_offset);
        let mut state = State {
            segments,
            next_offset,
            producers: std::collections::HashMap::new(),
            open: std::collections::BTreeMap::new(),
        };
        let recovered_commits = recover_transactions(&mut state);
        let produced: Vec<FrameRef> = state
            .segments
            .iter()
            .flat_map(|s| s.frames.iter().filter(|f| f.producer.is_some()).copied())
            .collect();
        for f in produced {
            if let Some(p) = f.producer {
                state.record(p, f.rows, f.base_offset, f.base_offset + u64::from(f.rows));
            }
        }
        let visible = next_offset.min(state.first_open());
        Ok(Self {
            name,
            dir: dir.to_path_buf(),
            config,
            state: Mutex::new(state),
            synced: Mutex::new(next_offset),
            committed: AtomicU64::new(visible),
            poisoned: AtomicBool::new(false),
            notifier,
            schema,
            recovered_commits: Mutex::new(recovered_commits),
        })
    }

    /// The transactions whose commit marker opening found in this partition (once; the
    /// stream commits them in partitions where a crash left them open).
    pub(crate) fn take_recovered(&self) -> Vec<u64> {
        std::mem::take(
            &mut *self
                .recovered_commits
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Transactions with rows here and no marker yet.
    pub(crate) fn open_transactions(&self) -> Vec<u64> {
        self.state().open.keys().copied().collect()
    }

    /// The highest transaction id this partition holds rows or markers of.
    pub(crate) fn max_transaction(&self) -> Option<u64> {
        let state = self.state();
        state
            .segments
            .iter()
            .flat_map(|s| s.frames.iter().filter_map(|f| f.txn.map(|t| t.0)))
            .max()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves `State` consistent at frame granularity (we
        // update it only after a write succeeded), so recover the guard instead of cascading.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The offset below which rows are durable and readable: the end of the durable rows, or
    /// the first row of the oldest transaction still open, whichever is lower (rows of aborted
    /// transactions below it are passed over by reads).
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The oldest offset still stored (retention deletes whole segments below it).
    pub fn start_offset(&self) -> u64 {
        self.state().segments.first().map_or(0, |s| s.base_offset)
    }

    /// Rows stored and readable: those from the start offset to the committed one, less the
    /// rows of aborted transactions among them.
    pub fn visible_rows(&self) -> u64 {
        let committed = self.committed();
        let state = self.state();
        state
            .segments
            .iter()
            .flat_map(|s| s.frames.iter())
            .take_while(|f| f.base_offset < committed)
            .filter(|f| !f.aborted)
            .map(|f| u64::from(f.rows))
            .sum()
    }

    /// Bytes stored in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.state().segments.iter().map(|s| s.size).sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.state().segments.len()
    }

    /// After a failed fsync the kernel may have dropped dirty pages: nothing written since the
    /// last good sync can be trusted. The process stops (see [`abort_on_fsync_failure`]); the
    /// next start recovers from what is on disk. Where the process goes on, the partition
    /// refuses every further append.
    fn poison(&self, error: &std::io::Error) {
        self.poisoned.store(true, Ordering::Release);
        let abort = ABORT_ON_FSYNC_FAILURE.load(Ordering::Acquire);
        tracing::error!(
            partition = %self.name,
            error = %error,
            abort,
            "fsync failed: stopping so that the next start recovers from what is on disk"
        );
        if abort {
            std::process::abort();
        }
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned(self.name.clone()));
        }
        Ok(())
    }

    /// The source position stored with the newest frame of rows copied from an external
    /// source ([`Frame::encode_from_source`]), written or not yet synced; `None` when no such
    /// frame is left. A source resumes from here after a restart, so that rows written before
    /// a crash are neither lost nor read twice: recovery keeps a frame and its position, or
    /// neither.
    pub fn source_next(&self) -> Option<i64> {
        let state = self.state();
        state
            .segments
            .iter()
            .rev()
            .flat_map(|s| s.frames.iter().rev())
            .find_map(|f| f.source_next)
    }

    /// Writes `batch` to the active segment without waiting for it to be durable.
    ///
    /// Returns the offsets `[base, end)` the rows got. The rows become visible to readers, and
    /// the append may be acknowledged, only after [`Partition::sync_to`] with `end` returned.
    pub fn write(&self, batch: &RecordBatch) -> Result<(u64, u64)> {
        self.write_frame(Frame::encode(batch)?)
    }

    /// Writes a frame made by [`Frame::encode`] (see [`Partition::write`]).
    pub fn write_frame(&self, frame: Frame) -> Result<(u64, u64)> {
        match self.write_frame_checked(frame)? {
            Written::New(base, end) | Written::Duplicate(base, end) => Ok((base, end)),
        }
    }

    /// Writes a frame, unless its producer sent the same batch before: then nothing is
    /// written and the retry learns where the batch is. A batch that skips sequence numbers,
    /// or of an older epoch, is refused ([`Error::OutOfOrderSequence`]).
    pub fn write_frame_checked(&self, frame: Frame) -> Result<Written> {
        self.check_poisoned()?;
        let Frame {
            bytes: mut frame_bytes,
            rows,
            append_ms,
            producer,
            source_next,
            txn,
        } = frame;
        let mut state = self.state();
        if let Some(p) = producer {
            if let Some(known) = state.producers.get(&p.id) {
                if p.epoch < known.epoch {
                    return Err(Error::OutOfOrderSequence(format!(
                        "producer {} epoch {} is older than its epoch {}",
                        p.id, p.epoch, known.epoch
                    )));
                }
                if p.epoch == known.epoch {
                    if let Some(&(_, _, base, end)) =
                        known.batches.iter().find(|b| b.0 == p.base_sequence)
                    {
                        return Ok(Written::Duplicate(base, end));
                    }
                    let last = known.batches.back().map(|b| b.1);
                    if let Some(last) = last.filter(|&l| p.base_sequence != l.wrapping_add(1)) {
                        return Err(Error::OutOfOrderSequence(format!(
                            "producer {} sent sequence {} after {last}",
                            p.id, p.base_sequence
                        )));
                    }
                }
            }
        }
        let base = state.next_offset;
        frame::seal(&mut frame_bytes, base);
        let frame_len = frame_bytes.len() as u64;
        let active_size = state.segments.last().map_or(0, |s| s.size);
        if active_size > 0 && active_size + frame_len > self.config.segment_bytes {
            self.roll(&mut state)?;
        }
        let active = state
            .segments
            .last_mut()
            .ok_or_else(|| Error::Internal("a partition has no active segment".into()))?;
        if let Err(e) = active.file.write_all_at(&frame_bytes, active.size) {
            // Leave no partial frame behind for the next append to follow.
            let _ = active.file.set_len(active.size);
            return Err(Error::Io {
                context: format!("appending to {}", active.path.display()),
                source: e,
            });
        }
        active.frames.push(FrameRef {
            base_offset: base,
            rows,
            pos: active.size,
            len: frame_len as u32,
            producer,
            source_next,
            txn,
            aborted: false,
        });
        active.size += frame_len;
        active.last_append_ms = append_ms;
        state.next_offset = base + u64::from(rows);
        if let Some((t, FrameKind::Rows)) = txn {
            state.open.entry(t).or_insert(base);
        }
        if let Some(p) = producer {
            let end = state.next_offset;
            state.record(p, rows, base, end);
        }
        Ok(Written::New(base, state.next_offset))
    }

    /// Takes back the last frame written, which starts at `base`, before it is synced: an
    /// append that spans partitions failed in another partition. The caller guarantees that
    /// nothing was written after it. If the file cannot be cut back the partition stops, as
    /// after a failed fsync, so the frame can never become visible.
    pub fn unwrite(&self, base: u64) -> Result<()> {
        let mut state = self.state();
        let active = state
            .segments
            .last_mut()
            .ok_or_else(|| Error::Internal("a partition has no active segment".into()))?;
        let Some(last) = active.frames.last().copied() else {
            return Err(Error::Internal("no frame to take back".into()));
        };
        if last.base_offset != base || self.committed() > base {
            return Err(Error::Internal(format!(
                "taking back frame {base} of {}, whose last frame is {}",
                self.name, last.base_offset
            )));
        }
        if let Err(e) = active.file.set_len(last.pos) {
            self.poison(&e);
            return Err(Error::Io {
                context: format!("cutting back {}", active.path.display()),
                source: e,
            });
        }
        active.frames.pop();
        active.size = last.pos;
        state.next_offset = base;
        if let Some(p) = last.producer {
            if let Some(known) = state.producers.get_mut(&p.id) {
                known.batches.retain(|b| b.2 != base);
            }
        }
        Ok(())
    }

    /// Closes the active segment (durably) and starts a new one at the next offset.
    fn roll(&self, state: &mut State) -> Result<()> {
        if let Some(active) = state.segments.last() {
            if let Err(e) = active.file.sync_data() {
                self.poison(&e);
                return Err(Error::Io {
                    context: format!("fsync of {}", active.path.display()),
                    source: e,
                });
            }
        }
        let base = state.next_offset;
        let path = segment_path(&self.dir, base);
        let file = open_segment_file(&path, true)?;
        sync_dir(&self.dir)?;
        tracing::debug!(partition = %self.name, base_offset = base, "rolled segment");
        state.segments.push(Segment {
            base_offset: base,
            path,
            file: Arc::new(file),
            size: 0,
            frames: Vec::new(),
            last_append_ms: now_ms(),
        });
        Ok(())
    }

    /// Waits until every row below `end` is durable, sharing one fsync among concurrent callers.
    pub fn sync_to(&self, end: u64) -> Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= end {
            return Ok(());
        }
        self.sync_locked(&mut synced)
    }

    /// Fsyncs everything written so far, markers included (they take no offset, so
    /// [`Partition::sync_to`] cannot tell whether one is durable).
    pub(crate) fn sync_written(&self) -> Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        self.sync_locked(&mut synced)
    }

    fn sync_locked(&self, synced: &mut u64) -> Result<()> {
        self.check_poisoned()?;
        let (target, first_open, file, path) = {
            let state = self.state();
            let active = state
                .segments
                .last()
                .ok_or_else(|| Error::Internal("a partition has no active segment".into()))?;
            (
                state.next_offset,
                state.first_open(),
                Arc::clone(&active.file),
                active.path.clone(),
            )
        };
        if let Err(e) = file.sync_data() {
            self.poison(&e);
            return Err(Error::Io {
                context: format!("fsync of {}", path.display()),
                source: e,
            });
        }
        *synced = target;
        // A transaction opened since `first_open` was read starts at or after `target`.
        self.committed
            .fetch_max(target.min(first_open), Ordering::AcqRel);
        self.notifier.notify();
        Ok(())
    }

    /// Writes the marker that ends transaction `txn` here, not yet durable
    /// ([`Partition::sync_written`]). The rows stay as they were until
    /// [`Partition::publish_end`].
    pub(crate) fn write_marker(&self, txn: u64, kind: FrameKind) -> Result<()> {
        self.write_frame(Frame::marker(txn, kind)).map(|_| ())
    }

    /// Stops the partition as after a failed fsync ([`abort_on_fsync_failure`]): what it
    /// holds on disk is right only after the next start recovers it.
    pub(crate) fn stop(&self, why: &str) {
        self.poison(&std::io::Error::other(why.to_owned()));
    }

    /// Ends transaction `txn` for readers: its rows become visible (commit) or are passed
    /// over (abort), and so do the rows behind it that it held back.
    pub(crate) fn publish_end(&self, txn: u64, kind: FrameKind) {
        let synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = self.state();
        let Some(first) = state.open.remove(&txn) else {
            return;
        };
        if kind == FrameKind::Abort {
            state.mark_aborted(txn, first);
        }
        let visible = (*synced).min(state.first_open());
        drop(state);
        drop(synced);
        self.committed.fetch_max(visible, Ordering::AcqRel);
        self.notifier.notify();
    }

    /// Appends `batch` durably and returns the offset of its first row.
    pub fn append(&self, batch: &RecordBatch) -> Result<u64> {
        let (base, end) = self.write(batch)?;
        self.sync_to(end)?;
        Ok(base)
    }

    /// Reads committed rows from offset `from` on, whole frames up to about `max_rows` rows.
    ///
    /// Returns `(offset of the first row, batch)` pairs. Reading below the start offset (rows
    /// removed by retention) starts at the start offset; reading at or past the committed offset
    /// returns nothing.
    pub fn read(&self, from: u64, max_rows: usize) -> Result<Vec<(u64, RecordBatch)>> {
        self.read_until(from, self.committed(), max_rows)
    }

    /// Like [`Partition::read`], but only rows below `until` (itself capped at the committed
    /// offset): a reader that took a consistent snapshot of a stream's offsets stays within it.
    pub fn read_until(
        &self,
        from: u64,
        until: u64,
        max_rows: usize,
    ) -> Result<Vec<(u64, RecordBatch)>> {
        let committed = self.committed().min(until);
        let mut wanted: Vec<(Arc<File>, FrameRef, PathBuf)> = Vec::new();
        // The end of aborted rows passed over after the last frame wanted: a reader that
        // gets nothing else still moves past them.
        let mut passed_to = None;
        {
            let state = self.state();
            let first_seg = state
                .segments
                .partition_point(|s| s.end_offset() <= from)
                .min(state.segments.len());
            let mut rows = 0usize;
            'outer: for seg in &state.segments[first_seg..] {
                let start = seg
                    .frames
                    .partition_point(|f| f.base_offset + u64::from(f.rows) <= from);
                for f in &seg.frames[start..] {
                    if f.base_offset >= committed || rows >= max_rows {
                        break 'outer;
                    }
                    if f.rows == 0 {
                        continue; // a transaction's marker
                    }
                    if f.aborted {
                        passed_to = Some(f.base_offset + u64::from(f.rows));
                        continue;
                    }
                    passed_to = None;
                    rows += f.rows as usize;
                    wanted.push((Arc::clone(&seg.file), *f, seg.path.clone()));
                }
            }
        }
        let mut out = Vec::with_capacity(wanted.len());
        let mut buf = Vec::new();
        for (file, f, path) in wanted {
            buf.resize(f.len as usize, 0);
            file.read_exact_at(&mut buf, f.pos)
                .ctx(|| format!("reading {} at {}", path.display(), f.pos))?;
            match frame::check(&buf) {
                Some(meta) if meta.base_offset == f.base_offset => {}
                _ => {
                    return Err(Error::Corrupt(format!(
                        "{}: frame at byte {} of {} changed on disk after it was written",
                        self.name,
                        f.pos,
                        path.display()
                    )));
                }
            }
            let batch = frame::decode(&buf)?;
            if from > f.base_offset {
                let skip = (from - f.base_offset) as usize;
                out.push((from, batch.slice(skip, batch.num_rows() - skip)));
            } else {
                out.push((f.base_offset, batch));
            }
        }
        if let Some(end) = passed_to.filter(|&end| end > from) {
            out.push((end, RecordBatch::new_empty(Arc::clone(&self.schema))));
        }
        Ok(out)
    }

    /// Deletes closed segments past the retention limits; the active segment is never deleted.
    ///
    /// Returns the number of segments deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        self.enforce_retention_keeping(now_ms, u64::MAX)
    }

    /// As [`Partition::enforce_retention`], but never deletes a segment holding a row at or
    /// after offset `keep` (a checkpoint replays from there).
    pub fn enforce_retention_keeping(&self, now_ms: i64, keep: u64) -> Result<usize> {
        let mut state = self.state();
        // An open transaction's rows are still to commit or abort.
        let keep = keep.min(state.first_open());
        let mut deleted = 0;
        let mut total: u64 = state.segments.iter().map(|s| s.size).sum();
        while state.segments.len() > 1 {
            let oldest = &state.segments[0];
            let too_old = self
                .config
                .retention_ms
                .is_some_and(|ms| oldest.last_append_ms < now_ms - ms);
            let too_big = self.config.retention_bytes.is_some_and(|b| total > b);
            // The segment's rows end where the next segment begins.
            let needed = state.segments[1].base_offset > keep;
            if !(too_old || too_big) || needed {
                break;
            }
            let oldest = state.segments.remove(0);
            fs::remove_file(&oldest.path).ctx(|| format!("deleting {}", oldest.path.display()))?;
            total -= oldest.size;
            deleted += 1;
            tracing::info!(partition = %self.name, segment = oldest.base_offset, "retention deleted segment");
        }
        if deleted > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(deleted)
    }
}

/// Scans one segment; truncates a bad tail when it is the newest segment.
fn recover_segment(name: &str, dir: &Path, base: u64, is_last: bool) -> Result<Segment> {
    let path = segment_path(dir, base);
    let file = open_segment_file(&path, false)?;
    let bytes = fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
    let mut frames = Vec::new();
    let mut pos = 0usize;
    let mut expected = base;
    let mut last_append_ms = file
        .metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(now_ms, |d| d.as_millis() as i64);
    while let Some(FrameMeta {
        base_offset,
        rows,
        append_ms,
        len,
        producer,
        source_next,
        txn,
    }) = frame::check(&bytes[pos..])
    {
        if base_offset != expected {
            break;
        }
        frames.push(FrameRef {
            base_offset,
            rows,
            pos: pos as u64,
            len,
            producer,
            source_next,
            txn,
            // Set once the transaction's markers are read (see `recover_transactions`).
            aborted: false,
        });
        pos += len as usize;
        expected += u64::from(rows);
        last_append_ms = append_ms;
    }
    if pos < bytes.len() {
        if !is_last {
            return Err(Error::Corrupt(format!(
                "{name}: closed segment {} is damaged at byte {pos} of {}",
                path.display(),
                bytes.len()
            )));
        }
        tracing::warn!(
            partition = name,
            segment = %path.display(),
            valid_bytes = pos,
            dropped_bytes = bytes.len() - pos,
            "truncating a torn or corrupt tail (never acknowledged)"
        );
        file.set_len(pos as u64)
            .ctx(|| format!("truncating {}", path.display()))?;
        file.sync_all()
            .ctx(|| format!("fsync of {}", path.display()))?;
    }
    Ok(Segment {
        base_offset: base,
        path,
        file: Arc::new(file),
        size: pos as u64,
        frames,
        last_append_ms,
    })
}

/// Finds, from the frames opening read, the transactions still open and the aborted ones (whose
/// rows it marks); returns the transactions this partition has a commit marker of.
fn recover_transactions(state: &mut State) -> Vec<u64> {
    let mut commits = Vec::new();
    let mut aborted = Vec::new();
    for f in state.segments.iter().flat_map(|s| s.frames.iter()) {
        match f.txn {
            Some((txn, FrameKind::Rows)) => {
                state.open.entry(txn).or_insert(f.base_offset);
            }
            Some((txn, FrameKind::Commit)) => {
                state.open.remove(&txn);
                commits.push(txn);
            }
            Some((txn, FrameKind::Abort)) => {
                if let Some(first) = state.open.remove(&txn) {
                    aborted.push((txn, first));
                }
            }
            None => {}
        }
    }
    for (txn, first) in aborted {
        state.mark_aborted(txn, first);
    }
    commits
}
