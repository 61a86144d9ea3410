//! Log transactions: rows written to a stream's partitions as they come, visible to every
//! reader at once when the transaction commits, and never if it aborts or a crash ends it.
//!
//! As in Kafka: a transaction's rows take offsets among other appends; readers stop at the
//! first row of the oldest open transaction (the last stable offset), and pass over rows of
//! aborted ones. Committing fsyncs the rows, writes a commit marker to each partition the
//! transaction wrote, fsyncs the markers, and only then shows the rows. A commit marker in any
//! partition is the decision: after a crash, opening the stream commits the transaction in
//! the partitions where it is still open, and aborts every transaction without one.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::RecordBatch;

use super::partition::{Frame, FrameKind, Partition, ProducerSeq, Written};
use super::{AppendReceipt, Core};
use crate::{Error, Result};

/// The next transaction id to hand out; 0 until first used. Ids must not repeat within a
/// stream's retained log, across restarts too: they start from the clock in microseconds,
/// and past every id a stream opened holds.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A transaction id not used before in any stream this process opened.
pub fn new_transaction_id() -> u64 {
    next_id()
}

fn next_id() -> u64 {
    if NEXT_ID.load(Ordering::Acquire) == 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        let _ = NEXT_ID.compare_exchange(0, now.max(1), Ordering::AcqRel, Ordering::Acquire);
    }
    NEXT_ID.fetch_add(1, Ordering::AcqRel)
}

/// Makes later ids larger than `id`.
fn ids_past(id: u64) {
    next_id();
    NEXT_ID.fetch_max(id + 1, Ordering::AcqRel);
}

/// A transaction over one stream's partitions (see the module documentation). Dropping it
/// without [`Transaction::commit`] aborts it.
#[derive(Debug)]
pub struct Transaction {
    core: Arc<Core>,
    id: u64,
    /// For every partition written: the first offset, the end of the last frame, the rows.
    written: BTreeMap<u32, (u64, u64, u64)>,
    ended: bool,
    /// Its decision to commit is recorded elsewhere ([`super::Decisions`]): it may no longer
    /// abort, only commit now or at the next start.
    decided: bool,
}

impl Transaction {
    pub(super) fn new(core: Arc<Core>) -> Self {
        Self::with_id(core, next_id())
    }

    pub(super) fn with_id(core: Arc<Core>, id: u64) -> Self {
        Self {
            core,
            id,
            written: BTreeMap::new(),
            ended: false,
            decided: false,
        }
    }

    /// Says that the transaction's decision to commit is recorded (see [`super::Decisions`]):
    /// from now on a failure stops the partition rather than abort, so that the next start
    /// commits it as the decision says.
    pub fn decided(&mut self) {
        self.decided = true;
    }

    /// Makes the rows written so far durable, still invisible: before the decision of a
    /// transaction over several streams is recorded, every stream's rows must be on disk.
    pub fn prepare(&self) -> Result<()> {
        let ranges: Vec<(u32, u64, u64)> = self
            .written
            .iter()
            .map(|(&p, &(first, end, _))| (p, first, end))
            .collect();
        self.core.sync_all(&ranges)
    }

    /// The transaction's id, as its frames and markers carry it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Rows appended so far.
    pub fn rows(&self) -> u64 {
        self.written.values().map(|w| w.2).sum()
    }

    /// Writes `batches` to the log, spread over partitions as an append would; nothing is
    /// visible, nor waited for to be durable, until [`Transaction::commit`]. After an error
    /// the transaction can only be aborted (dropped).
    pub fn append(&mut self, batches: &[RecordBatch]) -> Result<()> {
        if self.core.check(batches)? == 0 {
            return Ok(());
        }
        let batch = self.core.join(batches)?;
        let (parts, _) = self.core.split(&batch)?;
        self.append_parts(parts)
    }

    /// Writes `batches` whole to `partition` (a Kafka producer names its partition). With
    /// `producer`, a retry of a batch already written appends nothing (as
    /// [`super::StreamLog::append_idempotent`]). Returns the offsets `[base, end)` of the rows.
    pub fn append_to(
        &mut self,
        partition: u32,
        batches: &[RecordBatch],
        producer: Option<ProducerSeq>,
    ) -> Result<(u64, u64)> {
        let p = self.core.partition(partition)?;
        let batch = self.core.conform(batches)?;
        let frame = Frame::encode_in_for(&batch, self.id, producer)?;
        let rows = batch.num_rows() as u64;
        let _one_append = self.core.one_append();
        match p.write_frame_checked(frame)? {
            Written::New(base, end) => {
                let w = self.written.entry(partition).or_insert((base, end, 0));
                w.1 = end;
                w.2 += rows;
                Ok((base, end))
            }
            Written::Duplicate(base, end) => Ok((base, end)),
        }
    }

    /// Writes one batch per partition, split already.
    pub(super) fn append_parts(&mut self, parts: Vec<(u32, RecordBatch)>) -> Result<()> {
        let frames = parts
            .into_iter()
            .filter(|(_, b)| b.num_rows() > 0)
            .map(|(p, b)| Ok((p, b.num_rows() as u64, Frame::encode_in(&b, self.id)?)))
            .collect::<Result<Vec<_>>>()?;
        self.write_encoded(frames)
    }

    /// Writes frames encoded with [`Frame::encode_in`] and this transaction's id: `(partition,
    /// rows, frame)`.
    pub(super) fn write_encoded(&mut self, frames: Vec<(u32, u64, Frame)>) -> Result<()> {
        // Appends write one at a time (a failed append takes its frames back).
        let _one_append = self.core.one_append();
        for (p, rows, frame) in frames {
            let (base, end) = self.core.partitions[p as usize].write_frame(frame)?;
            let w = self.written.entry(p).or_insert((base, end, 0));
            w.1 = end;
            w.2 += rows;
        }
        Ok(())
    }

    /// Makes the rows durable, then visible to every reader in all partitions at once.
    /// Returns, per partition, the first offset and the rows (other appends may lie between
    /// a transaction's rows). An error before any commit marker is written aborts the
    /// transaction; after one, a partition that cannot take its marker stops, and the next
    /// start commits the transaction there.
    pub fn commit(mut self) -> Result<AppendReceipt> {
        self.ended = true;
        let ranges: Vec<(u32, u64, u64)> = self
            .written
            .iter()
            .map(|(&p, &(first, end, _))| (p, first, end))
            .collect();
        if let Err(e) = self.core.sync_all(&ranges) {
            // (A failed fsync stops the process by default; see `abort_on_fsync_failure`.)
            if !self.decided {
                self.abort_now();
            }
            return Err(e);
        }
        let mut marked = 0;
        {
            let _one_append = self
                .core
                .append_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for &p in self.written.keys() {
                let partition = &self.core.partitions[p as usize];
                if let Err(e) = partition.write_marker(self.id, FrameKind::Commit) {
                    if marked == 0 && !self.decided {
                        drop(_one_append);
                        self.abort_now();
                        return Err(e);
                    }
                    partition.stop(&format!(
                        "transaction {} could not commit here: {e}",
                        self.id
                    ));
                    return Err(e);
                }
                marked += 1;
            }
        }
        let partitions: Vec<&Partition> = self
            .written
            .keys()
            .map(|&p| self.core.partitions[p as usize].as_ref())
            .collect();
        in_parallel(&partitions, Partition::sync_written)?;
        let _visible_together = self
            .core
            .visibility
            .read()
            .unwrap_or_else(|e| e.into_inner());
        for p in &partitions {
            p.publish_end(self.id, FrameKind::Commit);
        }
        Ok(AppendReceipt {
            ranges: self
                .written
                .iter()
                .map(|(&p, &(first, _, rows))| (p, first, rows))
                .collect(),
        })
    }

    /// Ends the transaction: none of its rows will ever be visible.
    pub fn abort(mut self) {
        self.ended = true;
        self.abort_now();
    }

    /// Writes abort markers and passes readers over the rows. The markers need not be
    /// durable: after a crash, a transaction without a commit marker is aborted anyway.
    fn abort_now(&self) {
        let _one_append = self.core.one_append();
        for &p in self.written.keys() {
            let partition = &self.core.partitions[p as usize];
            if let Err(e) = partition.write_marker(self.id, FrameKind::Abort) {
                tracing::warn!(txn = self.id, partition = p, error = %e, "could not write an abort marker; a restart aborts the transaction");
            }
            partition.publish_end(self.id, FrameKind::Abort);
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if !self.ended {
            self.ended = true;
            self.abort_now();
        }
    }
}

/// Runs `f` on every partition, on threads of their own (each is an fsync, about a
/// millisecond); returns the first error.
fn in_parallel(partitions: &[&Partition], f: fn(&Partition) -> Result<()>) -> Result<()> {
    match partitions {
        [] => Ok(()),
        [one] => f(one),
        [first, rest @ ..] => std::thread::scope(|scope| {
            let others: Vec<_> = rest.iter().map(|p| scope.spawn(move || f(p))).collect();
            let first = f(first);
            others
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Internal("an fsync thread panicked".into())))
                })
                .fold(first, |acc, r| acc.and(r))
        }),
    }
}

/// Ends the transactions a crash left open in a stream's partitions: committed where any
/// partition holds its commit marker or its decision was recorded (`decided`), aborted
/// everywhere else.
pub(super) fn recover(
    stream: &str,
    partitions: &[Arc<Partition>],
    decided: &HashSet<u64>,
) -> Result<()> {
    let mut committed: HashSet<u64> = partitions.iter().flat_map(|p| p.take_recovered()).collect();
    committed.extend(decided);
    if let Some(max) = partitions.iter().filter_map(|p| p.max_transaction()).max() {
        ids_past(max);
    }
    for (i, p) in partitions.iter().enumerate() {
        for txn in p.open_transactions() {
            let kind = if committed.contains(&txn) {
                FrameKind::Commit
            } else {
                FrameKind::Abort
            };
            tracing::info!(
                stream,
                partition = i,
                txn,
                ?kind,
                "ending a transaction a restart found open"
            );
            p.write_marker(txn, kind)?;
            p.sync_written()?;
            p.publish_end(txn, kind);
        }
    }
    Ok(())
}
