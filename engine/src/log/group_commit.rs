//! Group commit of small appends: rows that arrive together are written as one frame per
//! partition and made durable by one fsync, while each append keeps its own offsets.
//!
//! One fsync costs about a millisecond whatever it covers, so a stream fed by many small
//! appends (single-row INSERTs from many connections) is bound by fsyncs unless they are
//! shared. Sharing the fsync alone (see [`super::Partition::sync_to`]) still encodes,
//! checksums and indexes one frame per append. Here each appender copies its
//! rows into the open group's column buffers (see [`super::coalesce`]), on its own thread and
//! while they are still in its cache, and one thread writes each group whole.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};

use datafusion::arrow::array::RecordBatch;
use tokio::sync::oneshot;

use super::coalesce::RowBuffer;
use super::{AppendReceipt, Core, Frame, Transaction};
use crate::{Error, Result};

/// Appends of fewer rows than this are coalesced; larger ones are written on their own, with
/// encoding on the caller's thread so that several of them encode in parallel.
pub(super) const COALESCE_BELOW_ROWS: usize = 4096;

/// A group takes no more appends past this many rows or bytes, which bounds one round's
/// latency and one frame's size; appends that find it full start the next group.
const GROUP_ROWS: usize = 64 * 1024;
const GROUP_BYTES: usize = 64 << 20;

/// Where an append's outcome goes.
enum Reply {
    Blocking(mpsc::SyncSender<Result<AppendReceipt>>),
    Async(oneshot::Sender<Result<AppendReceipt>>),
}

impl Reply {
    fn send(self, outcome: Result<AppendReceipt>) {
        // A caller that went away (a cancelled statement) no longer needs the answer; its rows
        // are durable either way.
        match self {
            Self::Blocking(tx) => {
                let _ = tx.send(outcome);
            }
            Self::Async(tx) => {
                let _ = tx.send(outcome);
            }
        }
    }
}

/// The appends gathered for the next group: their rows, copied into column buffers by the
/// appenders themselves, and where to answer each.
struct Open {
    rows: RowBuffer,
    bytes: usize,
    /// Each append's row count and reply, in the order of its rows.
    appends: Vec<(usize, Reply)>,
}

impl Open {
    fn new(core: &Core) -> Self {
        Self {
            rows: RowBuffer::new(&core.schema),
            bytes: 0,
            appends: Vec::new(),
        }
    }

    /// Whether `rows` more rows would take the group past its bounds.
    fn full_for(&self, rows: usize) -> bool {
        !self.appends.is_empty()
            && (self.rows.rows() + rows > GROUP_ROWS || self.bytes > GROUP_BYTES)
    }
}

/// The groups not yet taken by the committer thread, oldest first: appends go to the newest
/// until it is full.
struct Queue {
    groups: VecDeque<Open>,
    closed: bool,
}

/// The open groups, shared by appenders and the committer thread.
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a group gets its first append, and on close.
    wake: Condvar,
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stream's open group and the thread that writes it.
pub(super) struct Committer {
    core: Arc<Core>,
    shared: Arc<Shared>,
    running: bool,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl Committer {
    /// Starts the committer thread, which ends when the stream (and so this) is dropped.
    ///
    /// The thread takes the whole open group each time it has written the one before, so a
    /// group grows with the load. (Encoding the next group while the previous one is fsynced
    /// was measured: its groups came out smaller and single-row appends slower.)
    pub(super) fn start(core: Arc<Core>) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                groups: VecDeque::new(),
                closed: false,
            }),
            wake: Condvar::new(),
        });
        let (for_thread, core_for_thread) = (Arc::clone(&shared), Arc::clone(&core));
        let started = std::thread::Builder::new()
            .name("weir-group-commit".into())
            .spawn(move || run(&core_for_thread, &for_thread));
        let running = match started {
            Ok(_) => true,
            Err(e) => {
                // Every submit then writes its append alone: slower, never wrong.
                tracing::warn!(error = %e, "no group-commit thread; small appends are written one by one");
                false
            }
        };
        Self {
            core,
            shared,
            running,
        }
    }

    /// Appends `batches` (already checked against the stream's column types, `rows` rows in
    /// all) as one append and waits for its receipt.
    pub(super) fn submit_blocking(
        &self,
        batches: &[RecordBatch],
        rows: usize,
    ) -> Result<AppendReceipt> {
        let (tx, rx) = mpsc::sync_channel(1);
        if !self.enqueue(batches, rows, Reply::Blocking(tx))? {
            return self.core.append_whole(&self.core.join(batches)?);
        }
        rx.recv().map_err(|_| {
            Error::Internal("the group-commit thread ended without answering an append".into())
        })?
    }

    /// [`Committer::submit_blocking`] without holding a thread.
    pub(super) async fn submit(
        &self,
        batches: Vec<RecordBatch>,
        rows: usize,
    ) -> Result<AppendReceipt> {
        let (tx, rx) = oneshot::channel();
        if !self.enqueue(&batches, rows, Reply::Async(tx))? {
            let core = Arc::clone(&self.core);
            return tokio::task::spawn_blocking(move || core.append_whole(&core.join(&batches)?))
                .await
                .map_err(|e| Error::Internal(format!("an append thread failed: {e}")))?;
        }
        // The rows are copied; the caller's arrays are freed on the caller's thread.
        drop(batches);
        rx.await.map_err(|_| {
            Error::Internal("the group-commit thread ended without answering an append".into())
        })?
    }

    /// Copies the rows of `batches` into the newest open group as one append; false when they
    /// are to be written on their own (no committer thread).
    fn enqueue(&self, batches: &[RecordBatch], rows: usize, reply: Reply) -> Result<bool> {
        if !self.running {
            return Ok(false);
        }
        let mut queue = lock(&self.shared.queue);
        if queue.closed {
            // The committer thread is gone (it panicked; this is a bug).
            return Ok(false);
        }
        if queue.groups.back().is_none_or(|g| g.full_for(rows)) {
            queue.groups.push_back(Open::new(&self.core));
        }
        let Some(open) = queue.groups.back_mut() else {
            return Err(Error::Internal(
                "no open group right after opening one; this is a bug".into(),
            ));
        };
        let start = open.rows.rows();
        let mut bytes = 0;
        for batch in batches {
            match open.rows.push(batch) {
                Ok(b) => bytes += b,
                Err(e) => {
                    // All of the append or none of it.
                    open.rows.truncate(start);
                    return Err(e);
                }
            }
        }
        open.bytes += bytes;
        open.appends.push((rows, reply));
        let first = open.appends.len() == 1;
        drop(queue);
        if first {
            self.shared.wake.notify_one();
        }
        Ok(true)
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_all();
    }
}

/// The committer thread: writes each group that has appends, until the stream is closed.
fn run(core: &Arc<Core>, shared: &Shared) {
    /// However the thread ends, later appends are written on their own, and the appends still
    /// queued are answered (their replies dropped) rather than left waiting.
    struct Stopped<'a>(&'a Shared);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            let mut queue = lock(&self.0.queue);
            queue.closed = true;
            queue.groups.clear();
        }
    }
    let _stopped = Stopped(shared);
    loop {
        let group = {
            let mut queue = lock(&shared.queue);
            loop {
                match queue.groups.pop_front() {
                    Some(g) if !g.appends.is_empty() => break g,
                    Some(_) => {}
                    None if queue.closed => return,
                    None => queue = shared.wake.wait(queue).unwrap_or_else(|e| e.into_inner()),
                }
            }
        };
        if let Some(encoded) = encode_group(core, group) {
            write_group(core, encoded);
        }
    }
}

/// A group ready to be written: its frames and what is needed to answer each append.
struct Encoded {
    frames: Vec<(u32, u64, Frame)>,
    /// For a group of several partitions, the transaction its frames belong to, so that a
    /// crash keeps all of the group or none.
    txn: Option<Transaction>,
    /// The rows of each append, in order.
    rows: Vec<usize>,
    /// The partition of every row of the group, for a keyed stream.
    assignment: Option<Vec<u32>>,
    replies: Vec<Reply>,
}

/// Builds a group's rows into one batch and encodes it as one frame per partition; a group
/// that cannot be encoded is answered with the error at once.
fn encode_group(core: &Arc<Core>, group: Open) -> Option<Encoded> {
    let Open { rows, appends, .. } = group;
    let (counts, replies): (Vec<usize>, Vec<Reply>) = appends.into_iter().unzip();
    let encoded = (|| -> Result<_> {
        let whole = rows.finish(&core.schema)?;
        let (parts, assignment) = core.split(&whole)?;
        let txn = (parts.len() > 1).then(|| Transaction::new(Arc::clone(core)));
        let frames = parts
            .into_iter()
            .map(|(p, part)| {
                let frame = match &txn {
                    Some(t) => Frame::encode_in(&part, t.id())?,
                    None => Frame::encode(&part)?,
                };
                Ok((p, part.num_rows() as u64, frame))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((frames, txn, assignment))
    })();
    match encoded {
        Ok((frames, txn, assignment)) => Some(Encoded {
            frames,
            txn,
            rows: counts,
            assignment,
            replies,
        }),
        Err(e) => {
            fail_all(replies, &e);
            None
        }
    }
}

/// Writes an encoded group, all or nothing, and answers each of its appends.
fn write_group(core: &Core, group: Encoded) {
    let Encoded {
        frames,
        txn,
        rows,
        assignment,
        replies,
    } = group;
    let written = match txn {
        Some(mut txn) => txn
            .write_encoded(frames)
            .and_then(|()| txn.commit())
            .map(|r| {
                r.ranges
                    .into_iter()
                    .map(|(p, first, rows)| (p, first, first + rows))
                    .collect()
            }),
        None => core.write_encoded(frames.into_iter().map(|(p, _, f)| (p, f)).collect()),
    };
    match written {
        Ok(written) => {
            let receipts = receipts(
                core.partitions.len(),
                &written,
                &rows,
                assignment.as_deref(),
            );
            for (reply, receipt) in replies.into_iter().zip(receipts) {
                reply.send(Ok(receipt));
            }
        }
        Err(e) => fail_all(replies, &e),
    }
}

fn fail_all(replies: Vec<Reply>, e: &Error) {
    tracing::warn!(error = %e, appends = replies.len(), "a group of appends failed");
    for reply in replies {
        reply.send(Err(copy_error(e)));
    }
}

/// Each append's receipt. Within a partition the rows keep the order of the concatenation,
/// so each append's rows there are contiguous, after those of the appends before it.
fn receipts(
    partitions: usize,
    written: &[(u32, u64, u64)],
    rows: &[usize],
    assignment: Option<&[u32]>,
) -> Vec<AppendReceipt> {
    let mut next = vec![0u64; partitions];
    for &(p, base, _) in written {
        next[p as usize] = base;
    }
    let Some(assignment) = assignment else {
        // Without a key the whole group went to one partition.
        let Some(&(p, mut offset, _)) = written.first() else {
            return rows.iter().map(|_| AppendReceipt::default()).collect();
        };
        return rows
            .iter()
            .map(|&n| {
                let receipt = AppendReceipt {
                    ranges: vec![(p, offset, n as u64)],
                };
                offset += n as u64;
                receipt
            })
            .collect();
    };
    let mut start = 0;
    let mut counts = vec![0u64; partitions];
    rows.iter()
        .map(|&n| {
            let end = start + n;
            counts.iter_mut().for_each(|c| *c = 0);
            for &p in &assignment[start..end] {
                counts[p as usize] += 1;
            }
            start = end;
            let ranges = counts
                .iter()
                .enumerate()
                .filter(|&(_, &c)| c > 0)
                .map(|(p, &c)| {
                    let range = (p as u32, next[p], c);
                    next[p] += c;
                    range
                })
                .collect();
            AppendReceipt { ranges }
        })
        .collect()
}

/// The same error for every append of a failed group; an I/O error keeps its OS code, so a full
/// disk is still reported as one.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::Io { context, source } => Error::Io {
            context: context.clone(),
            source: source.raw_os_error().map_or_else(
                || std::io::Error::new(source.kind(), source.to_string()),
                std::io::Error::from_raw_os_error,
            ),
        },
        Error::Corrupt(m) => Error::Corrupt(m.clone()),
        Error::InvalidArgument(m) => Error::InvalidArgument(m.clone()),
        Error::NotNull(m) => Error::NotNull(m.clone()),
        Error::Poisoned(m) => Error::Poisoned(m.clone()),
        Error::LimitExceeded(m) => Error::LimitExceeded(m.clone()),
        Error::MemoryExceeded(m) => Error::MemoryExceeded(m.clone()),
        Error::OutOfOrderSequence(m) => Error::OutOfOrderSequence(m.clone()),
        Error::Internal(m) => Error::Internal(m.clone()),
        Error::Stopped => Error::Stopped,
        Error::Arrow(_) | Error::DataFusion(_) => Error::InvalidArgument(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use crate::log::{LogConfig, StreamLog};

    fn batch(ids: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids.to_vec()))])
            .expect("valid batch")
    }

    /// Many concurrent small appends: each receipt names exactly the offsets where that
    /// append's rows are, and nothing is lost or doubled. The large round has more rows in
    /// flight than one group takes, so appends queue in several groups.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn coalesced_appends_get_their_own_offsets() {
        for (key, rows_each) in [(Some(0), 5), (None, 5), (Some(0), 3000)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let schema = batch(&[]).schema();
            let log = Arc::new(
                StreamLog::open(dir.path(), schema, 3, key, LogConfig::default()).expect("open"),
            );
            let tasks: Vec<_> = (0..200i64)
                .map(|t| {
                    let log = Arc::clone(&log);
                    tokio::spawn(async move {
                        let ids: Vec<i64> = (0..((t * 37) % rows_each + 1))
                            .map(|i| t * 10_000 + i)
                            .collect();
                        let receipt = log.append_async(vec![batch(&ids)]).await.expect("append");
                        (ids, receipt)
                    })
                })
                .collect();
            let mut total = 0;
            for task in tasks {
                let (ids, receipt) = task.await.expect("task");
                assert_eq!(receipt.rows(), ids.len() as u64);
                let mut found = Vec::new();
                for &(p, base, rows) in &receipt.ranges {
                    let got = log.partitions()[p as usize]
                        .read_until(base, base + rows, rows as usize)
                        .expect("read range");
                    for (offset, b) in got {
                        let col = b
                            .column(0)
                            .as_any()
                            .downcast_ref::<Int64Array>()
                            .expect("int64");
                        for i in 0..b.num_rows() {
                            let at = offset + i as u64;
                            if at >= base && at < base + rows {
                                found.push(col.value(i));
                            }
                        }
                    }
                }
                found.sort_unstable();
                assert_eq!(found, ids, "receipt {receipt:?}");
                total += ids.len();
            }
            let stored: usize = log
                .read_all()
                .expect("read")
                .iter()
                .flatten()
                .map(|b| b.num_rows())
                .sum();
            assert_eq!(stored, total);
            // The blocking path goes through the same queue.
            let r = log.append(&[batch(&[7])]).expect("append");
            assert_eq!(r.rows(), 1);
        }
    }
}
