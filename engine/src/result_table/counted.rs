//! The rows of a view fed a changelog: a multiset of rows, each with how many times it holds.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};

use super::Change;
use crate::{Error, Result};

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
    rows: usize,
    bytes: usize,
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
        })
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
            self.step(rows.row(i), add)?;
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

    /// Adds the rows of `batch` (the table's columns), as a restore from a snapshot does.
    pub(super) fn insert(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = self.converter.convert_columns(batch.columns())?;
        for row in rows.iter() {
            self.step(row, true)?;
        }
        Ok(())
    }

    fn step(&mut self, row: datafusion::arrow::row::Row<'_>, add: bool) -> Result<()> {
        let owned = row.owned();
        if add {
            match self.counts.get_mut(&owned) {
                Some(count) => *count += 1,
                None => {
                    self.bytes += owned.as_ref().len() + ENTRY_OVERHEAD;
                    self.counts.insert(owned, 1);
                }
            }
            self.rows += 1;
            return Ok(());
        }
        let Some(count) = self.counts.get_mut(&owned) else {
            return Err(Error::Internal(
                "a result row was taken back that the view does not hold; this is a bug".into(),
            ));
        };
        *count -= 1;
        self.rows -= 1;
        if *count == 0 {
            self.counts.remove(&owned);
            self.bytes -= owned.as_ref().len() + ENTRY_OVERHEAD;
        }
        Ok(())
    }

    /// Every row, each as many times as it holds.
    pub(super) fn current(&self) -> Result<Vec<RecordBatch>> {
        if self.rows == 0 {
            return Ok(Vec::new());
        }
        let mut picks = Vec::with_capacity(self.rows);
        for (row, &count) in &self.counts {
            for _ in 0..count {
                picks.push(row.row());
            }
        }
        let columns = self.converter.convert_rows(picks)?;
        Ok(vec![RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?])
    }

    /// Rows held, counting repeats.
    pub(super) fn num_rows(&self) -> usize {
        self.rows
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
