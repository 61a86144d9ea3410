//! The contents of a materialized view, and how far its query has read.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::checkpoint::OperatorState;
use crate::{Error, Result};

mod append;
mod counted;
mod keyed;
use append::AppendRows;
use counted::CountedRows;
use keyed::KeyedRows;

/// The first value of a checkpoint part whose rows are in the query's state store.
const IN_STORE: i64 = 1;

/// The count at value `i` of a checkpoint part whose rows are in the state store (see
/// [`in_store`]).
fn stored_count(state: &OperatorState, i: usize) -> Result<u64> {
    state
        .values
        .get(i)
        .copied()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| Error::Corrupt("a view's checkpoint lacks its row counts".into()))
}

/// For a checkpoint's part that keeps the rows in the state store, the table's `store`; `None`
/// for a part that holds its rows itself, and an error for one in a store the table lacks.
fn in_store<'s, S>(state: &OperatorState, store: Option<&'s mut S>) -> Result<Option<&'s mut S>> {
    if state.values.first() != Some(&Some(IN_STORE)) {
        return Ok(None);
    }
    store.map(Some).ok_or_else(|| {
        Error::Corrupt("a view's checkpoint is in a state store it does not have".into())
    })
}

/// Why a continuous query stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// What went wrong.
    pub message: String,
    /// Whether its state outgrew the query's memory budget ([`Error::MemoryExceeded`]).
    pub out_of_memory: bool,
}

impl From<&Error> for QueryError {
    fn from(e: &Error) -> Self {
        Self {
            message: e.to_string(),
            out_of_memory: matches!(e, Error::MemoryExceeded(_)),
        }
    }
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// How far a continuous query has got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Per source partition, the next offset to read: everything below was processed.
    pub offsets: Vec<u64>,
    /// The query's watermark (ns since the epoch), once it has one.
    pub watermark_ns: Option<i64>,
    /// Events that arrived after their window had closed.
    pub late_rows: u64,
    /// Set when the query stopped on an error.
    pub error: Option<QueryError>,
    /// Per source partition (as `offsets`), the offset from which the query's oldest kept
    /// checkpoint replays: the log must keep everything from there. `None` while the query has
    /// no checkpoint, when a restart would replay from the start.
    pub checkpoint_offsets: Option<Vec<u64>>,
    /// The epoch of the query's newest durable checkpoint and the events it covers (the sum
    /// of its source offsets), once it has one.
    pub checkpoint: Option<(u64, u64)>,
    /// Per source, each partition's watermark as it stood when the progress was published.
    pub partitions: Vec<Vec<crate::watermark::PartitionWatermark>>,
}

/// The rows of a view: appended (closed windows are final), upserted by a key (results that
/// change: EMIT ON UPDATE, aggregates over a whole stream), or counted (a changelog of results
/// that change without a key of their own).
#[derive(Debug)]
enum Rows {
    Append(AppendRows),
    Keyed(KeyedRows),
    Counted(CountedRows),
}

impl Rows {
    /// Bytes of memory the rows hold (see [`ResultTable::memory_bytes`]).
    fn memory_bytes(&self) -> usize {
        match self {
            Rows::Append(all) => all.memory_bytes(),
            Rows::Keyed(keyed) => keyed.memory_bytes(),
            Rows::Counted(counted) => counted.memory_bytes(),
        }
    }
}

/// A view's result rows and how far its query has read.
#[derive(Debug)]
pub struct ResultTable {
    schema: SchemaRef,
    rows: RwLock<Rows>,
    progress: Mutex<Progress>,
    /// Events the query has read so far (ahead of `progress` while a round is under way).
    read: std::sync::atomic::AtomicU64,
    advanced: Condvar,
    subscribers: Mutex<Vec<Weak<Subscriber>>>,
}

/// One change to a result table: rows inserted (`diff` 1) or deleted (`diff` -1).
#[derive(Debug, Clone)]
pub struct Change {
    /// 1 for inserted rows, -1 for deleted ones.
    pub diff: i64,
    /// The rows, with the table's columns.
    pub rows: RecordBatch,
    /// The query's watermark when the change was made.
    pub watermark_ns: Option<i64>,
}

#[derive(Debug, Default)]
struct Pending {
    changes: VecDeque<Change>,
    rows: usize,
    overflowed: bool,
}

/// A live feed of a result table's changes, buffered up to a bound: a subscriber that falls
/// further behind is cut off (and told so) rather than slowing the query down.
#[derive(Debug)]
pub struct Subscriber {
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
    max_rows: usize,
}

impl Subscriber {
    /// Queues the changes of one append together, so that a reader never sees half of them
    /// (the delete of an update without its insert).
    fn push(&self, changes: &[Change]) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.overflowed {
            return;
        }
        for change in changes {
            p.rows += change.rows.num_rows();
            if p.rows > self.max_rows {
                p.overflowed = true;
                p.changes.clear();
                break;
            }
            p.changes.push_back(change.clone());
        }
        drop(p);
        self.wake.notify_one();
    }

    /// Rows waiting to be read, and the most that may wait before the subscriber is cut off
    /// (a subscriber that was cut off is full).
    pub fn buffered(&self) -> (usize, usize) {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let rows = if p.overflowed { self.max_rows } else { p.rows };
        (rows, self.max_rows)
    }

    /// The next change, if one is waiting; an error once the subscriber fell too far behind.
    pub fn try_next(&self) -> Result<Option<Change>> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.overflowed {
            return Err(Error::LimitExceeded(format!(
                "the subscriber fell more than {} rows behind the view and was cut off; subscribe again",
                self.max_rows
            )));
        }
        let next = p.changes.pop_front();
        if let Some(c) = &next {
            p.rows -= c.rows.num_rows();
        }
        Ok(next)
    }

    /// Waits for the next change.
    pub async fn next(&self) -> Result<Change> {
        loop {
            let notified = self.wake.notified();
            if let Some(c) = self.try_next()? {
                return Ok(c);
            }
            notified.await;
        }
    }
}

impl ResultTable {
    /// An empty append-only table.
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            rows: RwLock::new(Rows::Append(AppendRows::default())),
            progress: Mutex::new(Progress::default()),
            read: Default::default(),
            advanced: Condvar::new(),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// An empty table that keeps the latest row per value of the `key` columns.
    pub fn keyed(schema: SchemaRef, key: Vec<usize>) -> Result<Self> {
        let mut table = Self::new(Arc::clone(&schema));
        table.rows = RwLock::new(Rows::Keyed(KeyedRows::try_new(&schema, key)?));
        Ok(table)
    }

    /// A keyed table whose incoming batches carry one more, last, boolean column: rows with
    /// false there remove their key (a group that stopped passing HAVING), the others upsert.
    pub fn keyed_with_visibility(schema: SchemaRef, key: Vec<usize>) -> Result<Self> {
        let table = Self::keyed(schema, key)?;
        if let Rows::Keyed(k) = &mut *table.rows.write().unwrap_or_else(|e| e.into_inner()) {
            k.visibility = true;
        }
        Ok(table)
    }

    /// An empty table fed a changelog: incoming batches carry one more, last, boolean column,
    /// true for a row inserted and false for one taken back; identical rows are kept as many
    /// times as they are inserted.
    pub fn counted(schema: SchemaRef) -> Result<Self> {
        let mut table = Self::new(Arc::clone(&schema));
        table.rows = RwLock::new(Rows::Counted(CountedRows::try_new(schema)?));
        Ok(table)
    }

    /// How many columns incoming batches carry after the table's own: a visibility column
    /// (see [`Self::keyed_with_visibility`]) or a changelog's (see [`Self::counted`]).
    pub fn trailing_columns(&self) -> usize {
        match &*self.rows.read().unwrap_or_else(|e| e.into_inner()) {
            Rows::Keyed(k) if k.visibility => 1,
            Rows::Counted(_) => 1,
            _ => 0,
        }
    }

    /// The schema of the rows.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Adds result rows (or, for a keyed table, replaces the rows with the same keys).
    pub fn append(&self, batches: Vec<RecordBatch>) -> Result<()> {
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|s| s.strong_count() > 0);
        let mut changes = (!subscribers.is_empty()).then(Vec::new);
        for b in batches.into_iter().filter(|b| b.num_rows() > 0) {
            match &mut *rows {
                Rows::Append(all) => {
                    if let Some(c) = changes.as_mut() {
                        c.push(Change {
                            diff: 1,
                            rows: b.clone(),
                            watermark_ns: None,
                        });
                    }
                    all.push(b);
                }
                Rows::Keyed(keyed) => keyed.upsert(b, changes.as_mut())?,
                Rows::Counted(counted) => counted.apply(&b, changes.as_mut())?,
            }
        }
        if let Some(changes) = changes {
            let watermark_ns = self.progress().watermark_ns;
            let changes = changes
                .into_iter()
                .map(|c| {
                    // Rows in the feed have the table's schema (names as the view declares them).
                    Ok(Change {
                        diff: c.diff,
                        rows: RecordBatch::try_new(
                            Arc::clone(&self.schema),
                            c.rows.columns().to_vec(),
                        )?,
                        watermark_ns,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            for s in subscribers.iter().filter_map(Weak::upgrade) {
                s.push(&changes);
            }
        }
        Ok(())
    }

    /// The rows as of now and a feed of every change after them, taken together so that no
    /// change is missed or seen twice. The feed buffers at most `max_rows` rows.
    pub fn subscribe(&self, max_rows: usize) -> Result<(Vec<RecordBatch>, Arc<Subscriber>)> {
        let rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        let snapshot = match &*rows {
            Rows::Append(all) => all.current()?,
            Rows::Keyed(keyed) => keyed.current()?,
            Rows::Counted(counted) => counted.current()?,
        };
        let subscriber = Arc::new(Subscriber {
            pending: Mutex::new(Pending::default()),
            wake: tokio::sync::Notify::new(),
            max_rows,
        });
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&subscriber));
        drop(rows);
        Ok((snapshot, subscriber))
    }

    /// Removes the rows whose keys appear in `batch` (a keyed table's schema; only the key
    /// columns are read). An append-only table refuses.
    pub fn delete(&self, batch: &RecordBatch) -> Result<()> {
        match &mut *self.rows.write().unwrap_or_else(|e| e.into_inner()) {
            Rows::Append(_) | Rows::Counted(_) => Err(Error::Internal(
                "delete by key from a result table without keys".into(),
            )),
            Rows::Keyed(keyed) => keyed.delete(batch),
        }
    }

    /// Whether a row with each of these keys (columns in key order) exists.
    pub fn contains_keys(&self, keys: &[ArrayRef]) -> Result<Vec<bool>> {
        Ok(self.lookup(keys)?.1.iter().map(Option::is_some).collect())
    }

    /// Looks up rows by key (columns in key order): the table's chunks, and per key the
    /// `(chunk, row)` of its row if there is one, ready for Arrow's `interleave`.
    pub fn lookup(
        &self,
        keys: &[ArrayRef],
    ) -> Result<(Vec<RecordBatch>, Vec<Option<(usize, usize)>>)> {
        match &*self.rows.read().unwrap_or_else(|e| e.into_inner()) {
            Rows::Append(_) | Rows::Counted(_) => Err(Error::Internal(
                "lookup by key in a result table without keys".into(),
            )),
            Rows::Keyed(keyed) if keyed.is_partial() => Err(Error::Internal(
                "lookup by key in a view whose rows are in its state store".into(),
            )),
            Rows::Keyed(keyed) => {
                let n = keys.first().map_or(0, |k| k.len());
                let found = keyed
                    .keys_of(keys, n)?
                    .iter()
                    .map(|r| keyed.live.get(r).copied())
                    .collect();
                Ok((keyed.chunks.clone(), found))
            }
        }
    }

    /// The rows as of now.
    pub fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        match &*self.rows.read().unwrap_or_else(|e| e.into_inner()) {
            Rows::Append(all) => all.current(),
            Rows::Keyed(keyed) => keyed.current(),
            Rows::Counted(counted) => counted.current(),
        }
    }

    /// Puts back rows from [`ResultTable::snapshot`] (of a table made the same way) into an
    /// empty table, as a query restored from a checkpoint does. Subscribers are not told.
    pub fn restore(&self, batches: Vec<RecordBatch>) -> Result<()> {
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        for b in batches.into_iter().filter(|b| b.num_rows() > 0) {
            match &mut *rows {
                Rows::Append(all) => all.push(b),
                Rows::Keyed(keyed) => keyed.restore(OperatorState {
                    values: Vec::new(),
                    batches: vec![b],
                })?,
                Rows::Counted(counted) => counted.insert(&b)?,
            }
        }
        Ok(())
    }

    /// Keeps the rows in the query's state store from now on, as `name` (a view's, with
    /// checkpoints): each checkpoint then writes only the rows that changed since the one
    /// before ([`ResultTable::checkpoint`]), and [`ResultTable::evict`] may drop from memory
    /// what the store holds. Returns whether the table keeps its rows there; keyed rows of
    /// types the row format cannot hold stay in memory.
    pub fn attach_store(
        &self,
        tables: &mut dyn crate::operator::TableSource,
        name: &str,
    ) -> Result<bool> {
        match &mut *self.rows.write().unwrap_or_else(|e| e.into_inner()) {
            Rows::Append(all) => {
                all.attach(tables.table(name)?);
                Ok(true)
            }
            Rows::Keyed(keyed) => keyed.attach(&self.schema, tables.table(name)?),
            Rows::Counted(counted) => {
                counted.attach(tables.table(name)?);
                Ok(true)
            }
        }
    }

    /// The rows' part of a query's checkpoint: with a state store, what changed since the last
    /// checkpoint is staged there; without, every row.
    pub fn checkpoint(&self) -> Result<OperatorState> {
        match &mut *self.rows.write().unwrap_or_else(|e| e.into_inner()) {
            Rows::Append(all) => all.checkpoint(),
            Rows::Keyed(keyed) => keyed.checkpoint(),
            Rows::Counted(counted) => counted.checkpoint(),
        }
    }

    /// Puts back the rows of a checkpoint's part made by [`ResultTable::checkpoint`] into an
    /// empty table (with the same store attached). Subscribers are not told.
    pub fn restore_checkpoint(&self, state: OperatorState) -> Result<()> {
        match &mut *self.rows.write().unwrap_or_else(|e| e.into_inner()) {
            Rows::Append(all) => all.restore(state),
            Rows::Keyed(keyed) => keyed.restore(state),
            Rows::Counted(counted) => counted.restore(state),
        }
    }

    /// After a durable checkpoint: drops from memory the rows the state store holds as they
    /// are. Reads still see every row.
    pub fn evict(&self) -> Result<()> {
        match &mut *self.rows.write().unwrap_or_else(|e| e.into_inner()) {
            Rows::Append(all) => {
                all.evict();
                Ok(())
            }
            Rows::Keyed(keyed) => keyed.evict(),
            Rows::Counted(counted) => {
                counted.evict();
                Ok(())
            }
        }
    }

    /// Number of result rows.
    pub fn num_rows(&self) -> usize {
        match &*self.rows.read().unwrap_or_else(|e| e.into_inner()) {
            Rows::Append(all) => all.len(),
            Rows::Keyed(keyed) => keyed.len(),
            Rows::Counted(counted) => counted.num_rows(),
        }
    }

    /// Bytes of memory the rows hold (for the query's memory budget): each batch's own rows,
    /// so a batch sliced from a larger one counts its slice.
    pub fn memory_bytes(&self) -> usize {
        self.rows
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .memory_bytes()
    }

    /// Of [`ResultTable::memory_bytes`], what [`ResultTable::evict`] can move to the state
    /// store: 0 for rows that stay in memory.
    pub fn spillable_bytes(&self) -> usize {
        let rows = self.rows.read().unwrap_or_else(|e| e.into_inner());
        let stored = match &*rows {
            Rows::Append(all) => all.is_stored(),
            Rows::Keyed(keyed) => keyed.is_stored(),
            Rows::Counted(counted) => counted.is_stored(),
        };
        if stored { rows.memory_bytes() } else { 0 }
    }

    /// Publishes the query's progress and wakes waiters.
    pub fn set_progress(&self, progress: Progress) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = progress;
        self.advanced.notify_all();
    }

    /// Records how many events the query has read in all (for progress displays; readers that
    /// need results wait on [`ResultTable::wait_for`]).
    pub fn set_read(&self, events: u64) {
        self.read
            .store(events, std::sync::atomic::Ordering::Relaxed);
    }

    /// Events the query has read so far, at least as many as its progress says it processed.
    pub fn read(&self) -> u64 {
        let processed: u64 = self.progress().offsets.iter().sum();
        processed.max(self.read.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The query's progress.
    pub fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the query has processed every partition up to `offsets` (or stopped on an
    /// error), at most `timeout`. Returns the progress reached.
    ///
    /// Reading a view after this gives read-your-writes: the view reflects every row that was
    /// committed to its source when `offsets` were taken.
    pub fn wait_for(&self, offsets: &[u64], timeout: Duration) -> Progress {
        let deadline = Instant::now() + timeout;
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let caught_up = p.offsets.len() == offsets.len()
                && p.offsets
                    .iter()
                    .zip(offsets)
                    .all(|(have, want)| have >= want);
            if caught_up || p.error.is_some() {
                return p.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                return p.clone();
            }
            p = self
                .advanced
                .wait_timeout(p, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, BooleanArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use std::collections::HashMap;

    use super::keyed::MAX_CHUNKS;
    use super::*;
    use crate::state_store::StateStore;

    fn batch(rows: &[(i64, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
            ],
        )
        .expect("batch")
    }

    fn contents(t: &ResultTable) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = t
            .snapshot()
            .expect("snapshot")
            .iter()
            .flat_map(|b| {
                let k = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("k")
                    .clone();
                let v = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("v")
                    .clone();
                (0..b.num_rows()).map(move |i| (k.value(i), v.value(i)))
            })
            .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn keyed_tables_keep_the_latest_row_per_key_and_compact() {
        let t = ResultTable::keyed(batch(&[]).schema(), vec![0]).expect("keyed");
        t.append(vec![batch(&[(1, 10), (2, 20)])]).expect("append");
        t.append(vec![batch(&[(1, 11)])]).expect("append");
        assert_eq!(contents(&t), vec![(1, 11), (2, 20)]);
        for i in 0..(3 * MAX_CHUNKS as i64) {
            t.append(vec![batch(&[(i % 5, i)])]).expect("append");
        }
        let n = 3 * MAX_CHUNKS as i64;
        let mut expected: Vec<(i64, i64)> = (n - 5..n).map(|i| (i % 5, i)).collect();
        expected.sort_unstable();
        assert_eq!(contents(&t), expected);
        assert_eq!(t.num_rows(), 5);
    }

    fn pairs(b: &RecordBatch) -> Vec<(i64, i64)> {
        let k = b
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let v = b
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        (0..b.num_rows())
            .map(|i| (k.value(i), v.value(i)))
            .collect()
    }

    #[test]
    fn subscribers_see_the_snapshot_then_every_change_in_order() {
        let t = ResultTable::keyed(batch(&[]).schema(), vec![0]).expect("keyed");
        t.append(vec![batch(&[(1, 10)])]).expect("append");
        let (snapshot, feed) = t.subscribe(100).expect("subscribe");
        assert_eq!(
            snapshot.iter().flat_map(pairs).collect::<Vec<_>>(),
            vec![(1, 10)]
        );
        t.append(vec![batch(&[(1, 11), (2, 20)])]).expect("append");
        let mut seen = Vec::new();
        while let Some(c) = feed.try_next().expect("within bounds") {
            seen.extend(pairs(&c.rows).into_iter().map(|p| (c.diff, p)));
        }
        assert_eq!(seen, vec![(-1, (1, 10)), (1, (1, 11)), (1, (2, 20))]);
        // The same values again are no change.
        t.append(vec![batch(&[(2, 20)])]).expect("append");
        assert!(feed.try_next().expect("within bounds").is_none());
        // A subscriber that falls too far behind is cut off with an error.
        let big: Vec<(i64, i64)> = (0..200).map(|i| (i, i)).collect();
        t.append(vec![batch(&big)]).expect("append");
        assert!(feed.try_next().is_err());
    }

    fn changelog(rows: &[(i64, i64, bool)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
            Field::new("weir_inserted", DataType::Boolean, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.2)))),
            ],
        )
        .expect("changelog batch")
    }

    #[test]
    fn counted_tables_keep_repeats_and_take_rows_back() {
        let t = ResultTable::counted(batch(&[]).schema()).expect("counted");
        assert_eq!(t.trailing_columns(), 1);
        t.append(vec![changelog(&[
            (1, 10, true),
            (1, 10, true),
            (2, 20, true),
        ])])
        .expect("append");
        assert_eq!(contents(&t), vec![(1, 10), (1, 10), (2, 20)]);
        let (_, feed) = t.subscribe(100).expect("subscribe");
        t.append(vec![changelog(&[(1, 10, false), (3, 30, true)])])
            .expect("append");
        assert_eq!(contents(&t), vec![(1, 10), (2, 20), (3, 30)]);
        assert_eq!(t.num_rows(), 3);
        let mut seen = Vec::new();
        while let Some(c) = feed.try_next().expect("within bounds") {
            seen.extend(pairs(&c.rows).into_iter().map(|p| (c.diff, p)));
        }
        assert_eq!(seen, vec![(-1, (1, 10)), (1, (3, 30))]);
        // A restore puts back the same multiset.
        let copy = ResultTable::counted(batch(&[]).schema()).expect("counted");
        copy.restore(t.snapshot().expect("snapshot"))
            .expect("restore");
        assert_eq!(contents(&copy), contents(&t));
        // Taking back a row the table does not hold is an error, not a silent no-op.
        assert!(t.append(vec![changelog(&[(9, 9, false)])]).is_err());
    }

    /// A step of the store test below.
    #[derive(Debug, Clone)]
    enum Step {
        /// Upserts (visible) or removes (not) keys.
        Rows(Vec<(i64, i64, bool)>),
        /// A checkpoint stages what changed, written later (as by the writer thread).
        Stage,
        /// The staged checkpoint is written.
        Commit,
        /// A checkpoint written at once, then the rows it holds leave memory.
        Spill,
        /// A restart from the last written checkpoint.
        Restart,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => proptest::collection::vec((0i64..24, 0i64..4, proptest::bool::weighted(0.8)), 1..12)
                .prop_map(Step::Rows),
            1 => Just(Step::Stage),
            1 => Just(Step::Commit),
            2 => Just(Step::Spill),
            1 => Just(Step::Restart),
        ]
    }

    /// The kinds of a view's rows.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Kind {
        /// Keyed, with HAVING's visibility column.
        Keyed,
        Append,
        /// A changelog's multiset.
        Counted,
    }

    fn table(kind: Kind) -> ResultTable {
        let schema = batch(&[]).schema();
        match kind {
            Kind::Keyed => ResultTable::keyed_with_visibility(schema, vec![0]).expect("keyed"),
            Kind::Append => ResultTable::new(schema),
            Kind::Counted => ResultTable::counted(schema).expect("counted"),
        }
    }

    /// A batch for a table of `kind` that `now` (its rows) can take: a changelog takes back
    /// only rows it holds, so other take-backs become inserts.
    fn rows_batch(kind: Kind, rows: &[(i64, i64, bool)], now: &[(i64, i64)]) -> RecordBatch {
        match kind {
            Kind::Keyed => changelog(rows),
            Kind::Append => batch(&rows.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>()),
            Kind::Counted => {
                let mut held: HashMap<(i64, i64), usize> = HashMap::new();
                for &r in now {
                    *held.entry(r).or_default() += 1;
                }
                let valid: Vec<(i64, i64, bool)> = rows
                    .iter()
                    .map(|&(k, v, add)| {
                        let n = held.entry((k, v)).or_default();
                        let add = add || *n == 0;
                        if add {
                            *n += 1
                        } else {
                            *n -= 1
                        }
                        (k, v, add)
                    })
                    .collect();
                changelog(&valid)
            }
        }
    }

    /// Drives a table whose rows are in a state store (staged, written, evicted, restarted
    /// from there) and the same table in memory through `steps`: after each, both hold the
    /// same rows and count, and their subscribers saw the same changes.
    fn stored_rows_equal_rows_in_memory(kind: Kind, steps: &[Step]) {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || {
            let mut store = StateStore::open(dir.path()).expect("store");
            let t = table(kind);
            assert!(t.attach_store(&mut store, "view-rows").expect("attach"));
            (store, t)
        };
        let (mut store, mut stored) = open();
        let mut memory = table(kind);
        // The checkpoint staged and not yet written, and the one written: its part and the
        // rows in memory as it was taken.
        let mut staged: Option<(OperatorState, Vec<RecordBatch>)> = None;
        let mut written: Option<(OperatorState, Vec<RecordBatch>)> = None;
        let (_, mut feed_stored) = stored.subscribe(1 << 20).expect("subscribe");
        let (_, mut feed_memory) = memory.subscribe(1 << 20).expect("subscribe");
        for step in steps {
            match step {
                Step::Rows(rows) => {
                    let b = rows_batch(kind, rows, &contents(&memory));
                    stored.append(vec![b.clone()]).expect("append");
                    memory.append(vec![b]).expect("append");
                }
                Step::Stage if staged.is_none() => {
                    staged = Some((
                        stored.checkpoint().expect("stage"),
                        memory.snapshot().expect("rows"),
                    ));
                }
                Step::Stage => {}
                Step::Commit | Step::Spill | Step::Restart => {
                    // A restart loses a checkpoint not yet written, as a crash would.
                    if let Some(s) = staged.take()
                        && !matches!(step, Step::Restart)
                    {
                        store.commit(b"checkpoint").expect("commit");
                        written = Some(s);
                    }
                    if matches!(step, Step::Spill) {
                        let part = stored.checkpoint().expect("stage");
                        store.commit(b"checkpoint").expect("commit");
                        written = Some((part, memory.snapshot().expect("rows")));
                        stored.evict().expect("evict");
                    }
                    if matches!(step, Step::Restart) {
                        drop((store, stored));
                        (store, stored) = open();
                        memory = table(kind);
                        if let Some((part, rows)) = &written {
                            stored.restore_checkpoint(part.clone()).expect("restore");
                            memory.restore(rows.clone()).expect("restore");
                        }
                        (_, feed_stored) = stored.subscribe(1 << 20).expect("subscribe");
                        (_, feed_memory) = memory.subscribe(1 << 20).expect("subscribe");
                    }
                }
            }
            assert_eq!(contents(&stored), contents(&memory), "after {step:?}");
            assert_eq!(stored.num_rows(), memory.num_rows(), "after {step:?}");
            let drain = |feed: &Subscriber| {
                let mut seen = Vec::new();
                while let Some(c) = feed.try_next().expect("within bounds") {
                    seen.extend(pairs(&c.rows).into_iter().map(|p| (c.diff, p)));
                }
                seen
            };
            assert_eq!(drain(&feed_stored), drain(&feed_memory), "after {step:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// A keyed view's rows in the state store: upserts and removals of rows that left
        /// memory, checkpoints staged while rows change, restarts, and (past `MAX_CHUNKS`
        /// batches) compactions.
        #[test]
        fn keyed_rows_in_the_store_equal_rows_in_memory(steps in proptest::collection::vec(step(), 1..160)) {
            stored_rows_equal_rows_in_memory(Kind::Keyed, &steps);
        }

        /// An append-only view's rows in the state store.
        #[test]
        fn appended_rows_in_the_store_equal_rows_in_memory(steps in proptest::collection::vec(step(), 1..40)) {
            stored_rows_equal_rows_in_memory(Kind::Append, &steps);
        }

        /// A changelog's rows (a multiset) in the state store.
        #[test]
        fn counted_rows_in_the_store_equal_rows_in_memory(steps in proptest::collection::vec(step(), 1..60)) {
            stored_rows_equal_rows_in_memory(Kind::Counted, &steps);
        }
    }
}
