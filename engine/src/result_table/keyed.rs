//! The rows of a view kept by key: the latest row per key, in memory or in the state store.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt32Array};
use datafusion::arrow::array::{DynComparator, make_comparator};
use datafusion::arrow::compute::{SortOptions, concat_batches, interleave, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};

use super::{Change, IN_STORE, in_store, stored_count};
use crate::checkpoint::OperatorState;
use crate::state_store::{KeyedSpill, StateTable};
use crate::{Error, Result};

/// Chunks kept before superseded rows are dropped by a compaction.
#[cfg(not(test))]
pub(super) const MAX_CHUNKS: usize = 64;
/// Few in tests, so that compactions happen between their other steps.
#[cfg(test)]
pub(super) const MAX_CHUNKS: usize = 4;

/// Rows read from or written to the state store at a time.
const STORE_CHUNK: usize = 64 * 1024;

/// The latest row per key, as chunks of emitted batches plus where each key's row is.
pub(super) struct KeyedRows {
    key: Vec<usize>,
    /// `None` without key columns: the table holds a single row (an aggregate without GROUP BY).
    converter: Option<RowConverter>,
    pub(super) chunks: Vec<RecordBatch>,
    pub(super) live: foldhash::HashMap<OwnedRow, (usize, usize)>,
    /// Incoming batches carry one more, last, boolean column: false deletes the row's key.
    pub(super) visibility: bool,
    /// With a state store: rows that left memory are there (see [`KeyedRows::attach`]).
    store: Option<KeyedStore>,
}

/// What a keyed table keeps of its rows in the query's state store: each key's row in the
/// row format of all the table's columns, as of the query's last checkpoint.
struct KeyedStore {
    spill: KeyedSpill,
    /// Encodes and decodes whole rows.
    values: RowConverter,
    /// The table's schema, of rows read back.
    schema: SchemaRef,
    /// Rows in the store and not in memory (nor gone since).
    outside: usize,
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
            .field("stored", &self.store.is_some())
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

impl KeyedRows {
    /// An empty table keyed by the columns `key` of `schema`.
    pub(super) fn try_new(schema: &Schema, key: Vec<usize>) -> Result<Self> {
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
            key,
            converter,
            chunks: Vec::new(),
            live: foldhash::HashMap::default(),
            visibility: false,
            store: None,
        })
    }

    /// Keeps the rows in `table` from now on: each checkpoint writes the rows changed since
    /// the one before, and [`KeyedRows::evict`] drops from memory what the store holds.
    /// Returns false (and keeps everything in memory) for columns the row format cannot hold.
    pub(super) fn attach(&mut self, schema: &SchemaRef, table: StateTable) -> Result<bool> {
        let fields: Vec<SortField> = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        if !RowConverter::supports_fields(&fields) {
            return Ok(false);
        }
        self.store = Some(KeyedStore {
            spill: KeyedSpill::new(table),
            values: RowConverter::new(fields)?,
            schema: Arc::clone(schema),
            outside: 0,
        });
        Ok(true)
    }

    /// Whether the rows go to a state store.
    pub(super) fn is_stored(&self) -> bool {
        self.store.is_some()
    }

    /// Bytes the rows in memory hold: the chunks, and the keys by a sample's average width
    /// (walking millions of keys on every check would cost more than the query).
    pub(super) fn memory_bytes(&self) -> usize {
        let chunks: usize = self.chunks.iter().map(crate::compact::batch_bytes).sum();
        let sample: Vec<usize> = self
            .live
            .keys()
            .take(64)
            .map(|k| k.as_ref().len())
            .collect();
        let width = sample.iter().sum::<usize>() / sample.len().max(1);
        chunks + self.live.len() * (width + 48)
    }

    /// Rows in the table, in memory or not.
    pub(super) fn len(&self) -> usize {
        self.live.len() + self.store.as_ref().map_or(0, |s| s.outside)
    }

    /// The row-format key of each row of `columns` (the key columns, in key order).
    pub(super) fn keys_of(&self, columns: &[ArrayRef], n: usize) -> Result<Vec<OwnedRow>> {
        match &self.converter {
            None => Ok(vec![single_key(); n]),
            Some(c) => Ok(c
                .convert_columns(columns)?
                .iter()
                .map(|r| r.owned())
                .collect()),
        }
    }

    /// The row-format key of each row of `batch` (the table's columns).
    fn keys_of_batch(&self, batch: &RecordBatch) -> Result<Vec<OwnedRow>> {
        let keys: Vec<ArrayRef> = self
            .key
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        self.keys_of(&keys, batch.num_rows())
    }

    /// Whether rows may be in the store and not in memory: lookups by key then need it.
    pub(super) fn is_partial(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.spill.is_partial())
    }

    pub(super) fn upsert(
        &mut self,
        batch: RecordBatch,
        changes: Option<&mut Vec<Change>>,
    ) -> Result<()> {
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
        self.put(batch, visible, changes, true)
    }

    /// Upserts the rows of `batch`, or removes the keys of those `visible` says are gone; with
    /// `changes`, also says what changed, in order (a replaced row is a delete then an insert).
    /// With `mark`, what changes is written to the store at the next checkpoint (not so for
    /// rows put back from one, or moved by a compaction).
    fn put(
        &mut self,
        batch: RecordBatch,
        visible: Option<BooleanArray>,
        changes: Option<&mut Vec<Change>>,
        mark: bool,
    ) -> Result<()> {
        let rows = self.keys_of_batch(&batch)?;
        // Rows of these keys that left memory come back first: what replaces or removes them
        // must know they exist. (Rows put back or compacted are in memory already.)
        if mark {
            self.fault_in(&rows)?;
        }
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
                let old = self.live.remove(&row);
                if mark && old.is_some() {
                    self.mark_removed(&row);
                }
                old
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
                if mark && let Some(s) = &mut self.store {
                    s.spill.changed(row.row().data());
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

    fn mark_removed(&mut self, row: &OwnedRow) {
        if let Some(s) = &mut self.store {
            s.spill.removed(row.row().data().into());
        }
    }

    /// Reads the rows of `keys` that are in the store and not in memory back into memory, as
    /// one more chunk.
    fn fault_in(&mut self, keys: &[OwnedRow]) -> Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        if !store.spill.is_partial() {
            return Ok(());
        }
        let mut wanted: foldhash::HashSet<&OwnedRow> = foldhash::HashSet::default();
        let mut found: Vec<(OwnedRow, Vec<u8>)> = Vec::new();
        for key in keys {
            if self.live.contains_key(key) || !wanted.insert(key) {
                continue;
            }
            if let Some(bytes) = store.spill.fetch(key.row().data())? {
                found.push((key.clone(), bytes));
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        let parser = store.values.parser();
        let batch = store.decode(found.iter().map(|(_, v)| parser.parse(v)))?;
        let chunk = self.chunks.len();
        self.chunks.push(batch);
        let n = found.len();
        for (i, (key, _)) in found.into_iter().enumerate() {
            self.live.insert(key, (chunk, i));
        }
        if let Some(s) = &mut self.store {
            s.outside = s.outside.checked_sub(n).ok_or_else(|| {
                Error::Internal("a view read back more rows than it stored".into())
            })?;
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
            changes.push(Change {
                diff,
                rows: RecordBatch::try_new(Arc::clone(&schema), pick_from(&self.chunks, &picks)?)?,
                watermark_ns: None,
            });
            start = end;
        }
        Ok(())
    }

    /// Removes the rows with the keys of `batch`'s key columns.
    pub(super) fn delete(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = self.keys_of_batch(batch)?;
        self.fault_in(&rows)?;
        for row in rows {
            if self.live.remove(&row).is_some() {
                self.mark_removed(&row);
            }
        }
        Ok(())
    }

    /// The rows in memory.
    fn in_memory(&self) -> Result<Vec<RecordBatch>> {
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

    /// Every row: those in memory, then those only in the store.
    pub(super) fn current(&self) -> Result<Vec<RecordBatch>> {
        let mut out = self.in_memory()?;
        let Some(store) = self.store.as_ref().filter(|s| s.spill.is_partial()) else {
            return Ok(out);
        };
        let here: foldhash::HashSet<&[u8]> = self.live.keys().map(|k| k.row().data()).collect();
        let parser = store.values.parser();
        let mut values: Vec<Vec<u8>> = Vec::new();
        let mut flush = |values: &mut Vec<Vec<u8>>| -> Result<()> {
            if !values.is_empty() {
                out.push(store.decode(values.iter().map(|v| parser.parse(v)))?);
                values.clear();
            }
            Ok(())
        };
        store.spill.table().scan(.., |key, value| {
            if !here.contains(key) && !store.spill.is_gone(key) {
                values.push(value.to_vec());
                if values.len() >= STORE_CHUNK {
                    flush(&mut values)?;
                }
            }
            Ok(())
        })?;
        flush(&mut values)?;
        Ok(out)
    }

    /// Drops superseded rows so memory follows the number of keys, not of updates.
    pub(super) fn compact(&mut self) -> Result<()> {
        let Some(first) = self.chunks.first() else {
            return Ok(());
        };
        let merged = concat_batches(&first.schema(), &self.in_memory()?)?;
        self.chunks.clear();
        self.live.clear();
        self.put(merged, None, None, false)
    }

    /// A checkpoint's part: with a store, stages the rows changed and gone since the last
    /// checkpoint (the part then only says so, and how many rows the table has); without,
    /// every row.
    pub(super) fn checkpoint(&mut self) -> Result<OperatorState> {
        if self.store.is_none() {
            return Ok(OperatorState {
                values: Vec::new(),
                batches: self.current()?,
            });
        }
        let total = self.len();
        let (live, chunks, converter) = (&self.live, &self.chunks, &self.converter);
        let store = self.store.as_mut().expect("checked above");
        let values = &store.values;
        let parser = converter.as_ref().map(RowConverter::parser);
        store.spill.stage_encoded(|keys| {
            let mut out = Vec::with_capacity(keys.len());
            for part in keys.chunks(STORE_CHUNK) {
                let picks = part
                    .iter()
                    .map(|k| {
                        let key = match &parser {
                            None => single_key(),
                            Some(p) => p.parse(k).owned(),
                        };
                        live.get(&key).copied().ok_or_else(|| {
                            Error::Internal("a changed row of a view is not in memory".into())
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let columns = pick_from(chunks, &picks)?;
                let rows = values.convert_columns(&columns)?;
                out.extend(rows.iter().map(|r| r.data().to_vec()));
            }
            Ok(out)
        })?;
        Ok(OperatorState {
            values: vec![Some(IN_STORE), Some(total as i64)],
            batches: Vec::new(),
        })
    }

    /// Puts back a checkpoint's part made by [`KeyedRows::checkpoint`] into an empty table.
    pub(super) fn restore(&mut self, state: OperatorState) -> Result<()> {
        if let Some(store) = in_store(&state, self.store.as_mut())? {
            store.outside = stored_count(&state, 1)? as usize;
            store.spill.restored();
            return Ok(());
        }
        // From a checkpoint without the store (or before it): with one, the next checkpoint
        // writes them all there.
        for b in state.batches.into_iter().filter(|b| b.num_rows() > 0) {
            self.put(b, None, None, self.store.is_some())?;
        }
        Ok(())
    }

    /// Drops from memory every row the store holds as it is (after a checkpoint that is
    /// durable); they are read back when their keys come again.
    pub(super) fn evict(&mut self) -> Result<()> {
        let Some(store) = &mut self.store else {
            return Ok(());
        };
        store.spill.restored();
        let before = self.live.len();
        self.live
            .retain(|k, _| store.spill.is_dirty(k.row().data()));
        store.outside += before - self.live.len();
        if self.live.is_empty() {
            self.chunks.clear();
            Ok(())
        } else {
            self.compact()
        }
    }
}

/// The columns of the rows at `picks` (`(chunk, row)` each) of `chunks`.
fn pick_from(chunks: &[RecordBatch], picks: &[(usize, usize)]) -> Result<Vec<ArrayRef>> {
    let Some(first) = chunks.first() else {
        return Ok(Vec::new());
    };
    (0..first.num_columns())
        .map(|c| {
            let sources: Vec<&dyn Array> = chunks.iter().map(|b| b.column(c).as_ref()).collect();
            Ok(interleave(&sources, picks)?)
        })
        .collect()
}

impl KeyedStore {
    /// Rows of the store as a batch of the table's schema.
    fn decode<'a>(
        &self,
        rows: impl IntoIterator<Item = datafusion::arrow::row::Row<'a>>,
    ) -> Result<RecordBatch> {
        // The row format gives dictionaries back as their values: cast back.
        crate::operator::batch_of(&self.schema, self.values.convert_rows(rows)?)
    }
}
