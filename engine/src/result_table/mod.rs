//! The contents of a materialized view, and how far its query has read.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt32Array};
use datafusion::arrow::array::{DynComparator, make_comparator};
use datafusion::arrow::compute::{SortOptions, concat_batches, interleave, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};

use crate::{Error, Result};

mod counted;
use counted::CountedRows;

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
    Append(Vec<RecordBatch>),
    Keyed(KeyedRows),
    Counted(CountedRows),
}

/// The latest row per key, as chunks of emitted batches plus where each key's row is.
struct KeyedRows {
    key: Vec<usize>,
    /// `None` without key columns: the table holds a single row (an aggregate without GROUP BY).
    converter: Option<RowConverter>,
    chunks: Vec<RecordBatch>,
    live: foldhash::HashMap<OwnedRow, (usize, usize)>,
    /// Incoming batches carry one more, last, boolean column: false deletes the row's key.
    visibility: bool,
}

/// The key of every row of a table without key columns.
fn single_key() -> OwnedRow {
    static KEY: std::sync::OnceLock<OwnedRow> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let converter = RowConverter::new(vec![SortField::new(DataType::Boolean)])
            .expect("a boolean row converter");
        converter
            .convert_columns(&[Arc::new(BooleanArray::from(vec![true])) as ArrayRef])
            .expect("one boolean row")
            .row(0)
            .owned()
    })
    .clone()
}

impl std::fmt::Debug for KeyedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRows")
            .field("key", &self.key)
            .field("rows", &self.live.len())
            .finish()
    }
}

/// Whether stored row `old` holds the same values as row `new` of the newest chunk; the
/// comparators of `old`'s chunk are made on first use and kept in `cache`.
fn same_values(
    cache: &mut HashMap<usize, Vec<DynComparator>>,
    chunks: &[RecordBatch],
    old: (usize, usize),
    new: (usize, usize),
) -> Result<bool> {
    let comparators = match cache.entry(old.0) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            let (x, y) = (&chunks[old.0], &chunks[new.0]);
            e.insert(
                (0..x.num_columns())
                    .map(|c| {
                        make_comparator(
                            x.column(c).as_ref(),
                            y.column(c).as_ref(),
                            SortOptions::default(),
                        )
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            )
        }
    };
    Ok(comparators
        .iter()
        .all(|cmp| cmp(old.1, new.1) == std::cmp::Ordering::Equal))
}

/// Chunks kept before superseded rows are dropped by a compaction.
const MAX_CHUNKS: usize = 64;

impl KeyedRows {
    /// The keys of `columns` (in key order).
    fn keys_of(&self, columns: &[ArrayRef], n: usize) -> Result<Vec<OwnedRow>> {
        match &self.converter {
            None => Ok(vec![single_key(); n]),
            Some(c) => Ok(c
                .convert_columns(columns)?
                .iter()
                .map(|r| r.owned())
                .collect()),
        }
    }

    fn upsert(&mut self, batch: RecordBatch, changes: Option<&mut Vec<Change>>) -> Result<()> {
        let (batch, visible) = if self.visibility {
            let last = batch.num_columns() - 1;
            let visible = batch.column(last).as_boolean().clone();
            let mut schema: Vec<_> = batch.schema().fields().iter().cloned().collect();
            schema.pop();
            let rows = RecordBatch::try_new(
                Arc::new(Schema::new(schema)),
                batch.columns()[..last].to_vec(),
            )?;
            (rows, Some(visible))
        } else {
            (batch, None)
        };
        self.put(batch, visible, changes)
    }

    /// Upserts the rows of `batch`, or removes the keys of those `visible` says are gone; with
    /// `changes`, also says what changed, in order (a replaced row is a delete then an insert).
    fn put(
        &mut self,
        batch: RecordBatch,
        visible: Option<BooleanArray>,
        changes: Option<&mut Vec<Change>>,
    ) -> Result<()> {
        let keys: Vec<ArrayRef> = self
            .key
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        let rows = self.keys_of(&keys, batch.num_rows())?;
        let chunk = self.chunks.len();
        self.chunks.push(batch);
        let mut steps: Vec<(i64, (usize, usize))> = Vec::new();
        let track = changes.is_some();
        // Column comparators per stored chunk against the new batch, made once per put.
        let mut comparators: HashMap<usize, Vec<DynComparator>> = HashMap::new();
        for (i, row) in rows.into_iter().enumerate() {
            // A row that no longer passes HAVING leaves the table.
            let old = if visible
                .as_ref()
                .is_some_and(|v| !(v.is_valid(i) && v.value(i)))
            {
                self.live.remove(&row)
            } else {
                if track {
                    match self.live.get(&row) {
                        // An update to the same values is no change.
                        Some(&p) if same_values(&mut comparators, &self.chunks, p, (chunk, i))? => {
                        }
                        Some(&p) => {
                            steps.push((-1, p));
                            steps.push((1, (chunk, i)));
                        }
                        None => steps.push((1, (chunk, i))),
                    }
                }
                self.live.insert(row, (chunk, i));
                None
            };
            if track {
                steps.extend(old.map(|p| (-1, p)));
            }
        }
        if let Some(changes) = changes {
            self.describe(&steps, changes)?;
        }
        if self.chunks.len() > MAX_CHUNKS {
            self.compact()?;
        }
        Ok(())
    }

    /// Turns `(diff, (chunk, row))` steps into change batches, one per run of equal diffs.
    fn describe(&self, steps: &[(i64, (usize, usize))], changes: &mut Vec<Change>) -> Result<()> {
        let Some(first) = self.chunks.first() else {
            return Ok(());
        };
        let schema = first.schema();
        let mut start = 0;
        while start < steps.len() {
            let diff = steps[start].0;
            let mut end = start + 1;
            while end < steps.len() && steps[end].0 == diff {
                end += 1;
            }
            let picks: Vec<(usize, usize)> = steps[start..end].iter().map(|s| s.1).collect();
            let columns = (0..schema.fields().len())
                .map(|c| {
                    let sources: Vec<&dyn Array> =
                        self.chunks.iter().map(|b| b.column(c).as_ref()).collect();
                    Ok(interleave(&sources, &picks)?)
                })
                .collect::<Result<Vec<ArrayRef>>>()?;
            changes.push(Change {
                diff,
                rows: RecordBatch::try_new(Arc::clone(&schema), columns)?,
                watermark_ns: None,
            });
            start = end;
        }
        Ok(())
    }

    fn delete(&mut self, batch: &RecordBatch) -> Result<()> {
        let keys: Vec<ArrayRef> = self
            .key
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        for row in self.keys_of(&keys, batch.num_rows())? {
            self.live.remove(&row);
        }
        Ok(())
    }

    fn current(&self) -> Result<Vec<RecordBatch>> {
        let mut picks: Vec<Vec<u32>> = vec![Vec::new(); self.chunks.len()];
        for &(chunk, row) in self.live.values() {
            picks[chunk].push(row as u32);
        }
        picks
            .into_iter()
            .enumerate()
            .filter(|(_, rows)| !rows.is_empty())
            .map(|(chunk, mut rows)| {
                rows.sort_unstable();
                Ok(take_record_batch(
                    &self.chunks[chunk],
                    &UInt32Array::from(rows),
                )?)
            })
            .collect()
    }

    /// Drops superseded rows so memory follows the number of keys, not of updates.
    fn compact(&mut self) -> Result<()> {
        let Some(first) = self.chunks.first() else {
            return Ok(());
        };
        let merged = concat_batches(&first.schema(), &self.current()?)?;
        self.chunks.clear();
        self.live.clear();
        self.put(merged, None, None)
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
            rows: RwLock::new(Rows::Append(Vec::new())),
            progress: Mutex::new(Progress::default()),
            read: Default::default(),
            advanced: Condvar::new(),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// An empty table that keeps the latest row per value of the `key` columns.
    pub fn keyed(schema: SchemaRef, key: Vec<usize>) -> Result<Self> {
        let fields = key
            .iter()
            .map(|&i| {
                schema
                    .fields()
                    .get(i)
                    .map(|f| SortField::new(f.data_type().clone()))
                    .ok_or_else(|| Error::Internal(format!("key column {i} is out of range")))
            })
            .collect::<Result<Vec<_>>>()?;
        let converter = if fields.is_empty() {
            None
        } else {
            Some(RowConverter::new(fields)?)
        };
        Ok(Self {
            rows: RwLock::new(Rows::Keyed(KeyedRows {
                key,
                converter,
                chunks: Vec::new(),
                live: foldhash::HashMap::default(),
                visibility: false,
            })),
            schema,
            progress: Mutex::new(Progress::default()),
            read: Default::default(),
            advanced: Condvar::new(),
            subscribers: Mutex::new(Vec::new()),
        })
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
            Rows::Append(all) => all.clone(),
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
            Rows::Append(all) => Ok(all.clone()),
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
                Rows::Keyed(keyed) => keyed.put(b, None, None)?,
                Rows::Counted(counted) => counted.insert(&b)?,
            }
        }
        Ok(())
    }

    /// Number of result rows.
    pub fn num_rows(&self) -> usize {
        match &*self.rows.read().unwrap_or_else(|e| e.into_inner()) {
            Rows::Append(all) => all.iter().map(RecordBatch::num_rows).sum(),
            Rows::Keyed(keyed) => keyed.live.len(),
            Rows::Counted(counted) => counted.num_rows(),
        }
    }

    /// Bytes of memory the rows hold (for the query's memory budget): each batch's own rows,
    /// so a batch sliced from a larger one counts its slice.
    pub fn memory_bytes(&self) -> usize {
        match &*self.rows.read().unwrap_or_else(|e| e.into_inner()) {
            Rows::Append(all) => all.iter().map(crate::compact::batch_bytes).sum(),
            Rows::Keyed(keyed) => {
                let chunks: usize = keyed.chunks.iter().map(crate::compact::batch_bytes).sum();
                // Keys by a sample's average width: walking millions of keys on every check
                // would cost more than the query.
                let sample: Vec<usize> = keyed
                    .live
                    .keys()
                    .take(64)
                    .map(|k| k.as_ref().len())
                    .collect();
                let width = sample.iter().sum::<usize>() / sample.len().max(1);
                let keys = keyed.live.len() * (width + 48);
                chunks + keys
            }
            Rows::Counted(counted) => counted.memory_bytes(),
        }
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
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

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
}
