//! The durable, partitioned, append-only log that every stream is stored in.
//!
//! # Layout
//!
//! A stream is a directory with one subdirectory per partition (`0/`, `1/`, ...). A partition is a
//! sequence of segment files named by the offset of their first row, zero-padded to 20 digits
//! (`00000000000000000000.log`, `00000000000000052311.log`, ...). Every row has an offset, dense
//! and increasing within its partition, as in Kafka. The newest segment takes appends; it rolls
//! (is closed and fsynced, and a new one started) once it would grow past
//! [`LogConfig::segment_bytes`]. Retention deletes whole closed segments, oldest first, once they
//! are older than [`LogConfig::retention_ms`] or the partition is larger than
//! [`LogConfig::retention_bytes`].
//!
//! # Record format
//!
//! A segment is a concatenation of frames, one per appended batch:
//!
//! ```text
//! frame   := length:u32le  crc32c:u32le  payload[length]
//! payload := "WB" 0x00 0x03                 magic and format version 3
//!            base_offset:u64le              offset of the frame's first row
//!            rows:u32le                     rows in the frame
//!            append_ms:i64le                wall-clock append time, for time retention
//!            producer_id:i64le              idempotent producer, or -1
//!            producer_epoch:i32le           its epoch, or -1
//!            base_sequence:i32le            sequence number of the first row, or -1
//!            source_next:i64le              external source offset after these rows, or -1
//!            ipc_len:u32le  lz4_block       an Arrow IPC stream (schema + one record batch),
//!                                           compressed whole as one LZ4 block
//! ```
//!
//! Versions 1 (no producer, no source fields) and 2 (no source field) are still read; their
//! IPC stream is stored as is, with each buffer compressed as an LZ4 frame.
//!
//! The CRC32C covers the whole payload. Storing Arrow IPC means a read is a checksum, one LZ4
//! decompression into one buffer and a zero-copy IPC decode from it: no row parsing.
//!
//! # Durability
//!
//! An append is acknowledged only after the segment is fsynced. Appenders that arrive while an
//! fsync is in flight wait for it and are then usually covered by the next single fsync (group
//! commit, see [`Partition::sync_to`]). Readers see only durable rows. On open, recovery checks
//! every frame; a bad tail of the newest segment (a torn write, which was never acknowledged) is
//! truncated, and damage anywhere else is an error rather than silent loss.

mod coalesce;
mod decisions;
mod frame;
mod group_commit;
mod partition;
mod partitioner;
mod transaction;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::Duration;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;

pub use decisions::{Decision, Decisions};
pub use partition::{Frame, FrameKind, Partition, ProducerSeq, Written, abort_on_fsync_failure};
pub use partitioner::{murmur2, partition_indices, supports_key_type};
pub use transaction::{Transaction, new_transaction_id};

use crate::error::IoContext;
use crate::{Error, Result};

/// Segment and retention settings of a stream's partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment rolls once an append would take it past this many bytes.
    pub segment_bytes: u64,
    /// Closed segments whose newest row was appended longer ago than this are deleted.
    pub retention_ms: Option<i64>,
    /// Closed segments are deleted, oldest first, while a partition is larger than this.
    pub retention_bytes: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
            retention_ms: None,
            retention_bytes: None,
        }
    }
}

/// Wakes readers when new rows are committed to any partition of a stream.
#[derive(Debug, Default)]
pub struct Notifier {
    generation: Mutex<u64>,
    changed: Condvar,
    /// Notifiers signalled along with this one (a query reading several streams waits on one).
    forward: Mutex<Vec<std::sync::Weak<Notifier>>>,
}

impl Notifier {
    /// Signals that something changed.
    pub fn notify(&self) {
        {
            let mut g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
            *g += 1;
            self.changed.notify_all();
        }
        let mut forward = self.forward.lock().unwrap_or_else(|e| e.into_inner());
        forward.retain(|w| match w.upgrade() {
            Some(n) => {
                n.notify();
                true
            }
            None => false,
        });
    }

    /// From now on, every signal of this notifier also signals `other` (until `other` is dropped).
    pub fn forward_to(&self, other: &Arc<Notifier>) {
        self.forward
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(other));
    }

    /// The current generation, to pass to [`Notifier::wait_past`].
    pub fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until the generation moves past `seen` or `timeout` elapses; returns the generation.
    pub fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        let g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .changed
            .wait_timeout_while(g, timeout, |g| *g <= seen)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Fsyncs a directory so that file creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("fsync of directory {}", dir.display()))
}

/// Where an append put its rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendReceipt {
    /// `(partition, first offset, rows)` for every partition that received rows.
    pub ranges: Vec<(u32, u64, u64)>,
}

impl AppendReceipt {
    /// Rows appended in all.
    pub fn rows(&self) -> u64 {
        self.ranges.iter().map(|r| r.2).sum()
    }
}

/// The partitions of one stream, and how rows are spread over them.
#[derive(Debug)]
pub struct StreamLog {
    dir: PathBuf,
    notifier: Arc<Notifier>,
    core: Arc<Core>,
    /// Small appends queue here to be written together (see [`group_commit`]); the committer
    /// thread starts with the first small append and ends when the stream is dropped.
    committer: OnceLock<group_commit::Committer>,
}

/// What an append needs, shared with the committer thread.
#[derive(Debug)]
struct Core {
    schema: SchemaRef,
    key: Option<usize>,
    partitions: Vec<Arc<Partition>>,
    round_robin: AtomicUsize,
    /// Appends hold it shared until every partition they wrote is committed; a snapshot of
    /// the offsets holds it exclusively, so that it sees each append whole or not at all.
    visibility: RwLock<()>,
    /// Held while an append writes its frames (see [`Core::write_frames`]).
    append_lock: Mutex<()>,
}

impl StreamLog {
    /// Opens the stream stored in `dir` with `partitions` partitions, creating what is missing.
    ///
    /// `key` is the index of the column whose hash picks a row's partition; without one, each
    /// append goes whole to the next partition in turn.
    pub fn open(
        dir: &Path,
        schema: SchemaRef,
        partitions: u32,
        key: Option<usize>,
        config: LogConfig,
    ) -> Result<Self> {
        Self::open_deciding(
            dir,
            schema,
            partitions,
            key,
            config,
            &std::collections::HashSet::new(),
        )
    }

    /// [`StreamLog::open`], committing the transactions in `decided` (see [`Decisions`]) that
    /// a crash left open here.
    pub fn open_deciding(
        dir: &Path,
        schema: SchemaRef,
        partitions: u32,
        key: Option<usize>,
        config: LogConfig,
        decided: &std::collections::HashSet<u64>,
    ) -> Result<Self> {
        if partitions == 0 {
            return Err(Error::InvalidArgument(
                "a stream needs at least one partition".into(),
            ));
        }
        if let Some(k) = key {
            let field = schema
                .fields()
                .get(k)
                .ok_or_else(|| Error::InvalidArgument(format!("no key column {k}")))?;
            if !supports_key_type(field.data_type()) {
                return Err(Error::InvalidArgument(format!(
                    "a stream cannot be partitioned by column {} of type {}",
                    field.name(),
                    field.data_type()
                )));
            }
        }
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let notifier = Arc::new(Notifier::default());
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let partitions = (0..partitions)
            .map(|p| {
                Partition::open(
                    format!("{name}/{p}"),
                    &dir.join(p.to_string()),
                    Arc::clone(&schema),
                    config,
                    Arc::clone(&notifier),
                )
                .map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        sync_dir(dir)?;
        transaction::recover(&name, &partitions, decided)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            notifier,
            core: Arc::new(Core {
                schema,
                key,
                partitions,
                round_robin: AtomicUsize::new(0),
                visibility: RwLock::new(()),
                append_lock: Mutex::new(()),
            }),
            committer: OnceLock::new(),
        })
    }

    /// The directory the stream lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The schema of every row.
    pub fn schema(&self) -> &SchemaRef {
        &self.core.schema
    }

    /// The partitions, by number.
    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.core.partitions
    }

    /// Signalled whenever rows are committed to any partition.
    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    /// The committed offset of every partition.
    pub fn committed_offsets(&self) -> Vec<u64> {
        self.core.partitions.iter().map(|p| p.committed()).collect()
    }

    /// The committed offsets of every partition at one moment between appends: an append
    /// that spans several partitions is in it whole or not at all. Readers that stay within a
    /// snapshot never see one partition of an append without the others (which could move a
    /// watermark past rows still to come in the others).
    pub fn snapshot_offsets(&self) -> Vec<u64> {
        let _appends_done = self
            .core
            .visibility
            .write()
            .unwrap_or_else(|e| e.into_inner());
        self.committed_offsets()
    }

    /// Starts a log transaction: rows appended through it go to the log as they come and
    /// become visible, in every partition at once, only when it commits.
    pub fn begin(&self) -> Transaction {
        Transaction::new(Arc::clone(&self.core))
    }

    /// Starts a part of transaction `id` (from [`new_transaction_id`]) over this stream: the
    /// parts of one transaction over several streams share its id, which its decision record
    /// names (see [`Decisions`]).
    pub fn begin_as(&self, id: u64) -> Transaction {
        Transaction::with_id(Arc::clone(&self.core), id)
    }

    /// Appends `batches` durably and atomically (each partition gets one frame; an append of
    /// several partitions is all or nothing across a crash too, except small ones written by
    /// the group commit, which are all or nothing while the process runs).
    ///
    /// Returns only after every row is fsynced. The batches must have the stream's column types.
    /// Small appends that arrive together share one frame per partition and one fsync (group
    /// commit); each still gets its own offsets, and fails or succeeds on its own for what is
    /// wrong with its rows.
    pub fn append(&self, batches: &[RecordBatch]) -> Result<AppendReceipt> {
        let rows = self.core.check(batches)?;
        if rows == 0 {
            return Ok(AppendReceipt::default());
        }
        if rows >= group_commit::COALESCE_BELOW_ROWS {
            return self.core.append_whole(&self.core.join(batches)?);
        }
        self.committer().submit_blocking(batches, rows)
    }

    /// [`StreamLog::append`] for async callers: small appends wait for the group commit without
    /// holding a thread; large ones are written on a blocking thread.
    pub async fn append_async(
        self: &Arc<Self>,
        batches: Vec<RecordBatch>,
    ) -> Result<AppendReceipt> {
        let rows = self.core.check(&batches)?;
        if rows == 0 {
            return Ok(AppendReceipt::default());
        }
        if rows >= group_commit::COALESCE_BELOW_ROWS {
            let batch = self.core.join(&batches)?;
            let core = Arc::clone(&self.core);
            return tokio::task::spawn_blocking(move || core.append_whole(&batch))
                .await
                .map_err(|e| Error::Internal(format!("an append thread failed: {e}")))?;
        }
        self.committer().submit(batches, rows).await
    }

    fn committer(&self) -> &group_commit::Committer {
        self.committer
            .get_or_init(|| group_commit::Committer::start(Arc::clone(&self.core)))
    }

    /// Appends `batch` whole to partition `partition`, bypassing the partitioner.
    pub fn append_to(&self, partition: u32, batches: &[RecordBatch]) -> Result<AppendReceipt> {
        self.append_whole_to(partition, batches, Frame::encode)
    }

    /// Appends rows read from an external source to `partition` whole, with `source_next`,
    /// the source offset that follows them, in the same frame: once the append returns, the
    /// rows and the position are durable together ([`Partition::source_next`]).
    pub fn append_from_source(
        &self,
        partition: u32,
        batches: &[RecordBatch],
        source_next: i64,
    ) -> Result<AppendReceipt> {
        self.append_whole_to(partition, batches, |b| {
            Frame::encode_from_source(b, source_next)
        })
    }

    /// Appends an idempotent producer's batch whole to `partition`: a retry of a batch already
    /// stored appends nothing and gets the original offsets, once they are durable. The
    /// producer's last batches are kept in the frames, so this holds across restarts.
    pub fn append_idempotent(
        &self,
        partition: u32,
        batches: &[RecordBatch],
        producer: ProducerSeq,
    ) -> Result<AppendReceipt> {
        self.append_whole_to(partition, batches, |b| Frame::encode_for(b, Some(producer)))
    }

    fn append_whole_to(
        &self,
        partition: u32,
        batches: &[RecordBatch],
        encode: impl FnOnce(&RecordBatch) -> Result<Frame>,
    ) -> Result<AppendReceipt> {
        let p = self.core.partition(partition)?;
        let batch = self.core.conform(batches)?;
        if batch.num_rows() == 0 {
            return Ok(AppendReceipt::default());
        }
        let frame = encode(&batch)?;
        let _visible_together = self
            .core
            .visibility
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let written = {
            let _one_append = self
                .core
                .append_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            p.write_frame_checked(frame)?
        };
        let (Written::New(base, end) | Written::Duplicate(base, end)) = written;
        p.sync_to(end)?;
        Ok(AppendReceipt {
            ranges: vec![(partition, base, end - base)],
        })
    }

    /// Splits rows by the partition an append would put them in: one batch per partition that
    /// gets rows, with exactly the stream's schema.
    pub fn partition_rows(&self, batches: &[RecordBatch]) -> Result<Vec<(u32, RecordBatch)>> {
        let batch = self.core.conform(batches)?;
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        Ok(self.core.split(&batch)?.0)
    }

    /// Reads every committed row of every partition (for batch queries).
    ///
    /// Returns one list of batches per partition.
    pub fn read_all(&self) -> Result<Vec<Vec<RecordBatch>>> {
        self.core
            .partitions
            .iter()
            .map(|p| {
                let end = p.committed();
                let mut from = p.start_offset();
                let mut out = Vec::new();
                while from < end {
                    let chunk = p.read(from, 1 << 20)?;
                    let Some((last_off, last)) = chunk.last() else {
                        break;
                    };
                    from = last_off + last.num_rows() as u64;
                    out.extend(chunk.into_iter().map(|(_, b)| b));
                }
                Ok(out)
            })
            .collect()
    }

    /// Applies retention to every partition; returns the number of segments deleted.
    pub fn enforce_retention(&self) -> Result<usize> {
        self.enforce_retention_keeping(&[])
    }

    /// Applies retention, but keeps every row at or after `keep[p]` in partition `p` (what
    /// checkpoints of queries still need); partitions past the end of `keep` are unconstrained.
    pub fn enforce_retention_keeping(&self, keep: &[u64]) -> Result<usize> {
        let now = now_ms();
        self.core
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.enforce_retention_keeping(now, keep.get(i).copied().unwrap_or(u64::MAX))
            })
            .sum::<Result<usize>>()
    }
}

impl Core {
    /// Partition `partition`, or an error naming how many there are.
    fn partition(&self, partition: u32) -> Result<&Arc<Partition>> {
        self.partitions.get(partition as usize).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "partition {partition} does not exist (the stream has {})",
                self.partitions.len()
            ))
        })
    }

    /// Held while an append writes its frames: appends write one at a time, so that a failed
    /// one can take its frames back.
    fn one_append(&self) -> std::sync::MutexGuard<'_, ()> {
        self.append_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes one batch as one frame per partition and waits for it to be durable. Rows for
    /// several partitions go in a log transaction, so that a crash keeps all of them or none.
    fn append_whole(self: &Arc<Self>, batch: &RecordBatch) -> Result<AppendReceipt> {
        let (parts, _) = self.split(batch)?;
        if parts.len() > 1 {
            let mut txn = Transaction::new(Arc::clone(self));
            txn.append_parts(parts)?;
            return txn.commit();
        }
        let written = self.write_and_sync(parts)?;
        Ok(AppendReceipt {
            ranges: written.into_iter().map(|(p, b, e)| (p, b, e - b)).collect(),
        })
    }

    /// Encodes, writes and fsyncs one batch per partition; returns `(partition, base, end)`.
    fn write_and_sync(&self, parts: Vec<(u32, RecordBatch)>) -> Result<Vec<(u32, u64, u64)>> {
        let frames = parts
            .into_iter()
            .map(|(p, part)| Ok((p, Frame::encode(&part)?)))
            .collect::<Result<Vec<_>>>()?;
        self.write_encoded(frames)
    }

    /// Writes and fsyncs encoded frames, at most one per partition, all or none.
    fn write_encoded(&self, frames: Vec<(u32, Frame)>) -> Result<Vec<(u32, u64, u64)>> {
        let _visible_together = self.visibility.read().unwrap_or_else(|e| e.into_inner());
        let written = self.write_frames(frames)?;
        self.sync_all(&written)?;
        Ok(written)
    }

    /// Waits until every written frame is durable. Each fsync takes about a millisecond, so
    /// the partitions of one append are synced in parallel rather than one after another.
    fn sync_all(&self, written: &[(u32, u64, u64)]) -> Result<()> {
        match written {
            [] => Ok(()),
            [(p, _, end)] => self.partitions[*p as usize].sync_to(*end),
            [(p, _, end), rest @ ..] => std::thread::scope(|scope| {
                let others: Vec<_> = rest
                    .iter()
                    .map(|&(p, _, end)| {
                        let partition = &self.partitions[p as usize];
                        scope.spawn(move || partition.sync_to(end))
                    })
                    .collect();
                let first = self.partitions[*p as usize].sync_to(*end);
                others
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::Internal("an fsync thread panicked".into()))
                        })
                    })
                    .fold(first, |acc, r| acc.and(r))
            }),
        }
    }

    /// Writes one frame per partition, all or none: if a write fails (a full disk, say) the
    /// frames already written are taken back before the error is returned, so a failed
    /// append never becomes visible with a later one. Appends write one at a time, which
    /// makes taking back safe; encoding before and fsyncing after still overlap.
    fn write_frames(&self, frames: Vec<(u32, Frame)>) -> Result<Vec<(u32, u64, u64)>> {
        let _one_append = self.append_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut written = Vec::with_capacity(frames.len());
        for (p, frame) in frames {
            match self.partitions[p as usize].write_frame(frame) {
                Ok((base, end)) => written.push((p, base, end)),
                Err(e) => {
                    for &(p, base, _) in written.iter().rev() {
                        if let Err(undo) = self.partitions[p as usize].unwrite(base) {
                            tracing::error!(partition = p, error = %undo, "could not take back a failed append; the partition stops");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(written)
    }

    /// Checks that `batches` fit the stream (column types, NOT NULL); returns their rows.
    fn check(&self, batches: &[RecordBatch]) -> Result<usize> {
        let mut rows = 0;
        for b in batches {
            let got = b.schema_ref();
            // A batch made with the stream's own schema needs no comparison of types.
            let same = Arc::ptr_eq(got, &self.schema)
                || (got.fields().len() == self.schema.fields().len()
                    && got
                        .fields()
                        .iter()
                        .zip(self.schema.fields())
                        .all(|(a, b)| a.data_type() == b.data_type()));
            if !same {
                return Err(Error::InvalidArgument(format!(
                    "rows of schema {got} do not fit stream schema {}",
                    self.schema
                )));
            }
            for (field, col) in self.schema.fields().iter().zip(b.columns()) {
                if !field.is_nullable() && col.null_count() > 0 {
                    return Err(Error::NotNull(format!(
                        "null value in column \"{}\" violates not-null constraint",
                        field.name()
                    )));
                }
            }
            rows += b.num_rows();
        }
        Ok(rows)
    }

    /// Checks `batches` (see [`Core::check`]) and joins them (see [`Core::join`]).
    fn conform(&self, batches: &[RecordBatch]) -> Result<RecordBatch> {
        self.check(batches)?;
        self.join(batches)
    }

    /// Checked batches as one batch with exactly the stream's schema.
    fn join(&self, batches: &[RecordBatch]) -> Result<RecordBatch> {
        match batches {
            [one] => self.restamp(one),
            _ => Ok(concat_batches(&self.schema, batches)?),
        }
    }

    /// A checked batch with exactly the stream's schema, sharing its columns.
    fn restamp(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if Arc::ptr_eq(batch.schema_ref(), &self.schema) {
            return Ok(batch.clone());
        }
        Ok(RecordBatch::try_new(
            Arc::clone(&self.schema),
            batch.columns().to_vec(),
        )?)
    }

    /// Splits a batch by partition; also returns the partition of every row, when the stream
    /// has a key (without one, the whole batch goes to one partition).
    fn split(&self, batch: &RecordBatch) -> Result<(Vec<(u32, RecordBatch)>, Option<Vec<u32>>)> {
        let n = self.partitions.len() as u32;
        let Some(key) = self.key else {
            let p = (self.round_robin.fetch_add(1, Ordering::Relaxed) % n as usize) as u32;
            return Ok((vec![(p, batch.clone())], None));
        };
        let assignment = partition_indices(batch.column(key).as_ref(), n)?;
        if n == 1 {
            return Ok((vec![(0, batch.clone())], Some(vec![0; batch.num_rows()])));
        }
        let mut indices: Vec<Vec<u32>> = vec![Vec::new(); n as usize];
        for (row, p) in assignment.values().iter().enumerate() {
            indices[*p as usize].push(row as u32);
        }
        let mut out = Vec::new();
        for (p, idx) in indices.into_iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let part = if idx.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &datafusion::arrow::array::UInt32Array::from(idx))?
            };
            out.push((p as u32, part));
        }
        Ok((out, Some(assignment.values().to_vec())))
    }
}

#[cfg(test)]
mod tests;
