//! The rows of a view fed a changelog: a multiset of rows, each with how many times it holds.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};

use super::{Change, IN_STORE, in_store, stored_count};
use crate::checkpoint::OperatorState;
use crate::state_store::{KeyedSpill, StateTable};
use crate::{Error, Result};

/// Rows read back from the state store at a time.
const STORE_CHUNK: usize = 64 * 1024;

/// Bytes a distinct row costs beyond its own (the map entry and its allocation).
const ENTRY_OVERHEAD: usize = 48;

/// A multiset of rows kept by value. Incoming batches carry one more, last, boolean column
/// (the changelog's `weir_inserted`): true adds one copy of the row, false takes one back.
/// Rows without a key of their own (an outer join's, a Top-N's with ties, a projection that
/// drops a group key) can only be kept this way, and identical rows stay as many as they are.
pub(super) struct CountedRows {
    schema: SchemaRef,
    converter: RowConverter,
    counts: foldhash::HashMap<OwnedRow, u64>,
    /// Rows in memory, counting repeats.
    rows: usize,
    bytes: usize,
    /// With a state store: each distinct row's count as of the last checkpoint, so that
    /// rows can leave memory (see [`CountedRows::attach`]).
    store: Option<CountedStore>,
}

#[derive(Debug)]
struct CountedStore {
    spill: KeyedSpill,
    /// Rows (counting repeats) in the store and not in memory.
    outside: usize,
}

impl std::fmt::Debug for CountedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountedRows")
            .field("distinct", &self.counts.len())
            .field("rows", &self.rows)
            .finish()
    }
}

impl CountedRows {
    /// An empty multiset of rows of `schema` (without the trailing changelog column).
    pub(super) fn try_new(schema: SchemaRef) -> Result<Self> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            converter: RowConverter::new(fields)?,
            schema,
            counts: foldhash::HashMap::default(),
            rows: 0,
            bytes: 0,
            store: None,
        })
    }

    /// Keeps each distinct row's count in `table` from now on: each checkpoint writes the
    /// counts that changed since the one before, and [`CountedRows::evict`] drops from memory
    /// what the store holds.
    pub(super) fn attach(&mut self, table: StateTable) {
        self.store = Some(CountedStore {
            spill: KeyedSpill::new(table),
            outside: 0,
        });
    }

    /// Whether the counts go to a state store.
    pub(super) fn is_stored(&self) -> bool {
        self.store.is_some()
    }

    /// Applies a changelog batch in row order; with `changes`, says what changed, in order.
    /// Taking back a row that is not there is an error: the changelog and the rows disagree.
    pub(super) fn apply(
        &mut self,
        batch: &RecordBatch,
        changes: Option<&mut Vec<Change>>,
    ) -> Result<()> {
        let last = batch.num_columns().checked_sub(1).ok_or_else(|| {
            Error::Internal("a changelog batch without its inserted column".into())
        })?;
        let inserted = batch.column(last).as_boolean().clone();
        let values =
            RecordBatch::try_new(Arc::clone(&self.schema), batch.columns()[..last].to_vec())?;
        let rows = self.converter.convert_columns(values.columns())?;
        for i in 0..values.num_rows() {
            let add = inserted.is_valid(i) && inserted.value(i);
            self.step(rows.row(i), add, true)?;
        }
        if let Some(changes) = changes {
            push_runs(
                &values,
                |i| inserted.is_valid(i) && inserted.value(i),
                changes,
            )?;
        }
        Ok(())
    }

    /// Adds the rows of `batch` (the table's columns), as a restore from a snapshot does
    /// (with a store, they are written there at the next checkpoint).
    pub(super) fn insert(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = self.converter.convert_columns(batch.columns())?;
        for row in rows.iter() {
            self.step(row, true, self.store.is_some())?;
        }
        Ok(())
    }

    /// Adds or takes back one copy of `row`; with `mark`, its new count goes to the store at
    /// the next checkpoint.
    fn step(&mut self, row: datafusion::arrow::row::Row<'_>, add: bool, mark: bool) -> Result<()> {
        let owned = row.owned();
        self.fault_in(&owned)?;
        self.count(&owned, add)?;
        if mark && let Some(store) = &mut self.store {
            match self.counts.contains_key(&owned) {
                true => store.spill.changed(owned.row().data()),
                false => store.spill.removed(owned.row().data().into()),
            }
        }
        Ok(())
    }

    /// Reads `row`'s count back from the store into memory, if it left memory.
    fn fault_in(&mut self, row: &OwnedRow) -> Result<()> {
        let Some(store) = &mut self.store else {
            return Ok(());
        };
        if !store.spill.is_partial() || self.counts.contains_key(row) {
            return Ok(());
        }
        let Some(value) = store.spill.fetch(row.row().data())? else {
            return Ok(());
        };
        let count = u64::from_le_bytes(
            value
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("a view's stored row count is not 8 bytes".into()))?,
        );
        let n = usize::try_from(count).unwrap_or(usize::MAX);
        store.outside = store
            .outside
            .checked_sub(n)
            .ok_or_else(|| Error::Internal("a view read back more rows than it stored".into()))?;
        self.rows += n;
        self.bytes += row.as_ref().len() + ENTRY_OVERHEAD;
        self.counts.insert(row.clone(), count);
        Ok(())
    }

    fn count(&mut self, owned: &OwnedRow, add: bool) -> Result<()> {
        if add {
            match self.counts.get_mut(owned) {
                Some(count) => *count += 1,
                None => {
                    self.bytes += owned.as_ref().len() + ENTRY_OVERHEAD;
                    self.counts.insert(owned.clone(), 1);
                }
            }
            self.rows += 1;
            return Ok(());
        }
        let Some(count) = self.counts.get_mut(owned) else {
            return Err(Error::Internal(
                "a result row was taken back that the view does not hold; this is a bug".into(),
            ));
        };
        *count -= 1;
        self.rows -= 1;
        if *count == 0 {
            self.counts.remove(owned);
            self.bytes -= owned.as_ref().len() + ENTRY_OVERHEAD;
        }
        Ok(())
    }

    /// Every row, each as many times as it holds: those in memory, then those only in the
    /// store.
    pub(super) fn current(&self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        if self.rows > 0 {
            let mut picks = Vec::with_capacity(self.rows);
            for (row, &count) in &self.counts {
                for _ in 0..count {
                    picks.push(row.row());
                }
            }
            out.push(self.batch(picks)?);
        }
        let Some(store) = self.store.as_ref().filter(|s| s.spill.is_partial()) else {
            return Ok(out);
        };
        let here: foldhash::HashSet<&[u8]> = self.counts.keys().map(|k| k.row().data()).collect();
        let parser = self.converter.parser();
        let mut keys: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut flush = |keys: &mut Vec<(Vec<u8>, u64)>| -> Result<()> {
            let picks = keys
                .iter()
                .flat_map(|(k, n)| std::iter::repeat_n(parser.parse(k), *n as usize))
                .collect::<Vec<_>>();
            if !picks.is_empty() {
                out.push(self.batch(picks)?);
            }
            keys.clear();
            Ok(())
        };
        store.spill.table().scan(.., |key, value| {
            if !here.contains(key) && !store.spill.is_gone(key) {
                let n = value.try_into().map(u64::from_le_bytes).map_err(|_| {
                    Error::Corrupt("a view's stored row count is not 8 bytes".into())
                })?;
                keys.push((key.to_vec(), n));
                if keys.len() >= STORE_CHUNK {
                    flush(&mut keys)?;
                }
            }
            Ok(())
        })?;
        flush(&mut keys)?;
        Ok(out)
    }

    fn batch<'a>(
        &self,
        rows: impl IntoIterator<Item = datafusion::arrow::row::Row<'a>>,
    ) -> Result<RecordBatch> {
        let columns = self.converter.convert_rows(rows)?;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// A checkpoint's part: with a store, stages the counts changed and gone since the last
    /// checkpoint (the part then says so, and how many rows there are); without, every row.
    pub(super) fn checkpoint(&mut self) -> Result<OperatorState> {
        let total = self.num_rows();
        let Some(store) = &mut self.store else {
            return Ok(OperatorState {
                values: Vec::new(),
                batches: self.current()?,
            });
        };
        let (counts, parser) = (&self.counts, self.converter.parser());
        store.spill.stage(|key| {
            counts
                .get(&parser.parse(key).owned())
                .map(|c| c.to_le_bytes().to_vec())
        });
        Ok(OperatorState {
            values: vec![Some(IN_STORE), Some(total as i64)],
            batches: Vec::new(),
        })
    }

    /// Puts back a checkpoint's part made by [`CountedRows::checkpoint`] into an empty table.
    pub(super) fn restore(&mut self, state: OperatorState) -> Result<()> {
        if let Some(store) = in_store(&state, self.store.as_mut())? {
            store.outside = stored_count(&state, 1)? as usize;
            store.spill.restored();
            return Ok(());
        }
        for b in state.batches.iter().filter(|b| b.num_rows() > 0) {
            self.insert(b)?;
        }
        Ok(())
    }

    /// Drops from memory every count the store holds as it is (after a durable checkpoint).
    pub(super) fn evict(&mut self) {
        let Some(store) = &mut self.store else {
            return;
        };
        store.spill.restored();
        let (mut rows, mut bytes) = (0, 0);
        self.counts.retain(|k, &mut n| {
            let keep = store.spill.is_dirty(k.row().data());
            if !keep {
                rows += n as usize;
                bytes += k.as_ref().len() + ENTRY_OVERHEAD;
            }
            keep
        });
        self.rows -= rows;
        self.bytes -= bytes;
        store.outside += rows;
    }

    /// Rows held, counting repeats, in memory or not.
    pub(super) fn num_rows(&self) -> usize {
        self.rows + self.store.as_ref().map_or(0, |s| s.outside)
    }

    /// Bytes the distinct rows hold.
    pub(super) fn memory_bytes(&self) -> usize {
        self.bytes
    }
}

/// Splits `values` into runs of rows with the same direction, as changes.
fn push_runs(
    values: &RecordBatch,
    inserted: impl Fn(usize) -> bool,
    changes: &mut Vec<Change>,
) -> Result<()> {
    let n = values.num_rows();
    let mut start = 0;
    while start < n {
        let add = inserted(start);
        let mut end = start + 1;
        while end < n && inserted(end) == add {
            end += 1;
        }
        let picks = UInt32Array::from_iter_values((start..end).map(|i| i as u32));
        changes.push(Change {
            diff: if add { 1 } else { -1 },
            rows: take_record_batch(values, &picks)?,
            watermark_ns: None,
        });
        start = end;
    }
    Ok(())
}
