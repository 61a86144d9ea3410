//! Group commit of small appends: rows that arrive together are written as one frame per
//! partition and made durable by one fsync, while each append keeps its own offsets.
//!
//! One fsync costs about a millisecond whatever it covers, so a stream fed by many small
//! appends (single-row INSERTs from many connections, Kafka produce requests) is bound by
//! fsyncs unless they are shared. Sharing the fsync alone (see [`super::Partition::sync_to`])
//! still encodes, checksums and indexes one frame per append; coalescing the rows first makes
//! the per-append cost a queue push and a slice of one concatenated batch.

use std::sync::{Arc, mpsc};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use tokio::sync::oneshot;

use super::{AppendReceipt, Core, Frame};
use crate::{Error, Result};

/// Appends of fewer rows than this are coalesced; larger ones are written on their own, with
/// encoding on the caller's thread so that several of them encode in parallel.
pub(super) const COALESCE_BELOW_ROWS: usize = 4096;

/// A group stops taking appends at this many rows, which bounds one round's latency.
const GROUP_ROWS: usize = 64 * 1024;

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

/// One append waiting for its group.
struct Queued {
    batch: RecordBatch,
    reply: Reply,
}

/// The queue of a stream's small appends and the thread that writes them.
#[derive(Debug)]
pub(super) struct Committer {
    core: Arc<Core>,
    queue: mpsc::Sender<Queued>,
}

impl Committer {
    /// Starts the committer thread, which ends when the stream (and so this) is dropped.
    ///
    /// One thread takes whatever queued while it wrote the group before, so a group grows
    /// with the load. (Encoding the next group while the previous one is fsynced was
    /// measured: its groups came out smaller and throughput lower.)
    pub(super) fn start(core: Arc<Core>) -> Self {
        let (queue, rx) = mpsc::channel::<Queued>();
        let for_thread = Arc::clone(&core);
        let started = std::thread::Builder::new()
            .name("weir-group-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut rows = first.batch.num_rows();
                    let mut group = vec![first];
                    while rows < GROUP_ROWS {
                        let Ok(next) = rx.try_recv() else { break };
                        rows += next.batch.num_rows();
                        group.push(next);
                    }
                    if let Some(encoded) = encode_group(&for_thread, group) {
                        write_group(&for_thread, encoded);
                    }
                }
            });
        if let Err(e) = started {
            // The receiver is gone with the closure, so every submit falls back to writing
            // its append alone: slower, never wrong.
            tracing::warn!(error = %e, "no group-commit thread; small appends are written one by one");
        }
        Self { core, queue }
    }

    /// Queues `batch` (already checked against the stream's column types) and waits for its
    /// receipt.
    pub(super) fn submit_blocking(&self, batch: RecordBatch) -> Result<AppendReceipt> {
        let (tx, rx) = mpsc::sync_channel(1);
        if let Err(mpsc::SendError(q)) = self.queue.send(Queued {
            batch,
            reply: Reply::Blocking(tx),
        }) {
            return self.core.append_whole(&self.core.restamp(&q.batch)?);
        }
        rx.recv().map_err(|_| {
            Error::Internal("the group-commit thread ended without answering an append".into())
        })?
    }

    /// Queues `batch` and waits for its receipt without holding a thread.
    pub(super) async fn submit(&self, batch: RecordBatch) -> Result<AppendReceipt> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::SendError(q)) = self.queue.send(Queued {
            batch,
            reply: Reply::Async(tx),
        }) {
            let core = Arc::clone(&self.core);
            return tokio::task::spawn_blocking(move || {
                core.append_whole(&core.restamp(&q.batch)?)
            })
            .await
            .map_err(|e| Error::Internal(format!("an append thread failed: {e}")))?;
        }
        rx.await.map_err(|_| {
            Error::Internal("the group-commit thread ended without answering an append".into())
        })?
    }
}

/// A group ready to be written: its frames and what is needed to answer each append.
struct Encoded {
    frames: Vec<(u32, Frame)>,
    /// The rows of each append, in order.
    rows: Vec<usize>,
    /// The partition of every row of the concatenation, for a keyed stream.
    assignment: Option<Vec<u32>>,
    replies: Vec<Reply>,
}

/// Concatenates a group into one batch and encodes it as one frame per partition; a group
/// that cannot be encoded is answered with the error at once.
fn encode_group(core: &Core, group: Vec<Queued>) -> Option<Encoded> {
    let rows: Vec<usize> = group.iter().map(|q| q.batch.num_rows()).collect();
    let (batches, replies): (Vec<RecordBatch>, Vec<Reply>) =
        group.into_iter().map(|q| (q.batch, q.reply)).unzip();
    let encoded = (|| -> Result<_> {
        // Appends come with their own schemas (names, nullability) over the stream's column
        // types; a group is written with the stream's.
        let whole = match batches.as_slice() {
            [one] => core.restamp(one)?,
            _ => concat_batches(&core.schema, &batches)?,
        };
        let (parts, assignment) = core.split(&whole)?;
        let frames = parts
            .into_iter()
            .map(|(p, part)| Ok((p, Frame::encode(&part)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok((frames, assignment))
    })();
    match encoded {
        Ok((frames, assignment)) => Some(Encoded {
            frames,
            rows,
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
        rows,
        assignment,
        replies,
    } = group;
    match core.write_encoded(frames) {
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
        Error::Poisoned(m) => Error::Poisoned(m.clone()),
        Error::LimitExceeded(m) => Error::LimitExceeded(m.clone()),
        Error::OutOfOrderSequence(m) => Error::OutOfOrderSequence(m.clone()),
        Error::Internal(m) => Error::Internal(m.clone()),
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
    /// append's rows are, and nothing is lost or doubled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn coalesced_appends_get_their_own_offsets() {
        for key in [Some(0), None] {
            let dir = tempfile::tempdir().expect("tempdir");
            let schema = batch(&[]).schema();
            let log = Arc::new(
                StreamLog::open(dir.path(), schema, 3, key, LogConfig::default()).expect("open"),
            );
            let tasks: Vec<_> = (0..200i64)
                .map(|t| {
                    let log = Arc::clone(&log);
                    tokio::spawn(async move {
                        let ids: Vec<i64> = (0..(t % 5 + 1)).map(|i| t * 100 + i).collect();
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
