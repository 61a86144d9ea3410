//! Enriches each event with the current row of a keyed table (stream JOIN table).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{interleave, take};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;

use super::Operator;
use crate::result_table::ResultTable;
use crate::{Error, Result};

/// A lookup join: for every event, the table row whose primary key equals the event's join key,
/// as the table is when the event is processed.
#[derive(Debug)]
pub struct LookupJoinOperator {
    table_name: String,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    table: Arc<ResultTable>,
    /// Which table rows may match at all (over the table's schema).
    table_filter: Option<Arc<dyn PhysicalExpr>>,
    /// Table columns to output, by index in the table.
    table_columns: Vec<usize>,
    /// Keep events without a table row (LEFT JOIN), with NULL table columns.
    keep_unmatched: bool,
    /// The table's columns come first in the output (`table JOIN stream`).
    table_first: bool,
    schema: SchemaRef,
}

impl LookupJoinOperator {
    /// A join of events (evaluating `keys`, in the table's key order) with `table`.
    pub fn try_new(
        table_name: String,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        table: Arc<ResultTable>,
        table_filter: Option<Arc<dyn PhysicalExpr>>,
        table_columns: Vec<usize>,
        keep_unmatched: bool,
        table_first: bool,
        output: SchemaRef,
    ) -> Result<Self> {
        if table_columns
            .iter()
            .any(|&i| i >= table.schema().fields().len())
        {
            return Err(Error::Internal("lookup join column out of range".into()));
        }
        Ok(Self {
            table_name,
            keys,
            table,
            table_filter,
            table_columns,
            keep_unmatched,
            table_first,
            schema: output,
        })
    }
}

impl LookupJoinOperator {
    /// Forgets the hits whose table row fails `filter`.
    fn filter_table_rows(
        &self,
        filter: &Arc<dyn PhysicalExpr>,
        chunks: &[RecordBatch],
        found: &mut [Option<(usize, usize)>],
    ) -> Result<()> {
        let picks: Vec<(usize, usize)> = found.iter().flatten().copied().collect();
        if picks.is_empty() {
            return Ok(());
        }
        let schema = Arc::clone(self.table.schema());
        let columns = (0..schema.fields().len())
            .map(|c| {
                let sources: Vec<&dyn Array> =
                    chunks.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(interleave(&sources, &picks)?)
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let rows = RecordBatch::try_new(schema, columns)?;
        let mask = filter.evaluate(&rows)?.into_array(rows.num_rows())?;
        let mask = mask.as_boolean();
        let mut i = 0;
        for hit in found.iter_mut().filter(|h| h.is_some()) {
            if !(mask.is_valid(i) && mask.value(i)) {
                *hit = None;
            }
            i += 1;
        }
        Ok(())
    }
}

/// The output of a stream-table join: rows `events` of `batch` beside `table_columns` (one
/// row each), the table's first if `table_first`.
pub(super) fn joined(
    schema: &SchemaRef,
    batch: &RecordBatch,
    events: Vec<u32>,
    table_columns: Vec<ArrayRef>,
    table_first: bool,
) -> Result<Vec<RecordBatch>> {
    let events = UInt32Array::from(events);
    let event_columns = batch
        .columns()
        .iter()
        .map(|c| Ok(take(c, &events, None)?))
        .collect::<Result<Vec<ArrayRef>>>()?;
    let columns = if table_first {
        table_columns.into_iter().chain(event_columns).collect()
    } else {
        event_columns.into_iter().chain(table_columns).collect()
    };
    Ok(vec![RecordBatch::try_new(Arc::clone(schema), columns)?])
}

impl Operator for LookupJoinOperator {
    fn name(&self) -> &'static str {
        "LookupJoin"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        let keys = self
            .keys
            .iter()
            .map(|k| k.evaluate(&batch)?.into_array(n))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let (chunks, mut found) = self.table.lookup(&keys)?;
        if let Some(filter) = &self.table_filter {
            self.filter_table_rows(filter, &chunks, &mut found)?;
        }
        // SQL equality never matches NULL keys.
        let null_key = |row: usize| keys.iter().any(|k| k.is_null(row));
        let mut events = Vec::with_capacity(n);
        let mut picks = Vec::with_capacity(n);
        let null_chunk = chunks.len();
        for (row, hit) in found.into_iter().enumerate() {
            match hit.filter(|_| !null_key(row)) {
                Some(p) => {
                    events.push(row as u32);
                    picks.push(p);
                }
                None if self.keep_unmatched => {
                    events.push(row as u32);
                    picks.push((null_chunk, 0));
                }
                None => {}
            }
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let table_schema: &Schema = self.table.schema();
        let table_columns = self
            .table_columns
            .iter()
            .map(|&c| {
                let nulls = new_null_array(table_schema.field(c).data_type(), 1);
                let mut sources: Vec<&dyn Array> =
                    chunks.iter().map(|b| b.column(c).as_ref()).collect();
                sources.push(nulls.as_ref());
                Ok(interleave(&sources, &picks)?)
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        joined(
            &self.schema,
            &batch,
            events,
            table_columns,
            self.table_first,
        )
    }

    fn explain(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        format!(
            "LookupJoin: {} join of table {} on its primary key = [{}] (each event with the table's current row)",
            if self.keep_unmatched { "left" } else { "inner" },
            self.table_name,
            keys.join(", ")
        )
    }
}
