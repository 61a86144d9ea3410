//! Joins each event with every matching row of a table that never changes (a table read from a
//! file), on any columns of the table: a hash join whose build side is the table.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use foldhash::{HashMap, HashMapExt};

use super::Operator;
use crate::{Error, Result};

/// The table's rows, indexed by the values of its join columns.
#[derive(Debug)]
struct Built {
    rows: RecordBatch,
    index: HashMap<Box<[u8]>, Vec<u32>>,
}

/// For every event, every row of an unchanging table whose `table_keys` columns equal the
/// event's `keys` (NULL matches nothing), as a hash join with the table as its build side. The
/// table is indexed once, from its rows when the join is made: it must not change.
#[derive(Debug)]
pub struct StaticJoinOperator {
    table_name: String,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    key_types: Vec<DataType>,
    table_keys: Vec<usize>,
    converter: RowConverter,
    built: Built,
    /// Table columns to output, by index in the table.
    table_columns: Vec<usize>,
    /// Keep events without a table row (LEFT JOIN), with NULL table columns.
    keep_unmatched: bool,
    table_first: bool,
    schema: SchemaRef,
}

impl StaticJoinOperator {
    /// A join of events (evaluating `keys`) with `rows` of a table on its columns `table_keys`,
    /// in the same order; `table_filter` (over the table) says which table rows may match.
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        table_name: String,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        table: SchemaRef,
        rows: Vec<RecordBatch>,
        table_keys: Vec<usize>,
        table_filter: Option<Arc<dyn PhysicalExpr>>,
        table_columns: Vec<usize>,
        keep_unmatched: bool,
        table_first: bool,
        output: SchemaRef,
    ) -> Result<Self> {
        if keys.len() != table_keys.len() || keys.is_empty() {
            return Err(Error::Internal(
                "a static join needs as many event keys as table keys".into(),
            ));
        }
        let key_types: Vec<DataType> = table_keys
            .iter()
            .map(|&i| {
                table
                    .fields()
                    .get(i)
                    .map(|f| f.data_type().clone())
                    .ok_or_else(|| Error::Internal("static join key out of range".into()))
            })
            .collect::<Result<_>>()?;
        let converter = RowConverter::new(key_types.iter().cloned().map(SortField::new).collect())?;
        let mut rows = concat_batches(&table, &rows)?;
        if let Some(f) = &table_filter {
            let mask = f.evaluate(&rows)?.into_array(rows.num_rows())?;
            rows = filter_record_batch(&rows, mask.as_boolean())?;
        }
        let columns: Vec<ArrayRef> = table_keys
            .iter()
            .map(|&i| Arc::clone(rows.column(i)))
            .collect();
        let converted = converter.convert_columns(&columns)?;
        let mut index: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
        for r in 0..rows.num_rows() {
            if columns.iter().any(|c| c.is_null(r)) {
                continue;
            }
            index
                .entry(converted.row(r).data().into())
                .or_default()
                .push(r as u32);
        }
        Ok(Self {
            table_name,
            keys,
            key_types,
            table_keys,
            converter,
            built: Built { rows, index },
            table_columns,
            keep_unmatched,
            table_first,
            schema: output,
        })
    }
}

impl Operator for StaticJoinOperator {
    fn name(&self) -> &'static str {
        "StaticJoin"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        let keys = super::join_keys(&self.keys, &self.key_types, &batch)?;
        let converted = self.converter.convert_columns(&keys)?;
        let mut events: Vec<u32> = Vec::with_capacity(n);
        // Table rows per output row; `None` pads an unmatched event with NULLs.
        let mut picks: Vec<Option<u32>> = Vec::with_capacity(n);
        for i in 0..n {
            let hits = if keys.iter().any(|k| k.is_null(i)) {
                None
            } else {
                self.built.index.get(converted.row(i).data())
            };
            match hits {
                Some(hits) => {
                    events.extend(std::iter::repeat_n(i as u32, hits.len()));
                    picks.extend(hits.iter().map(|&h| Some(h)));
                }
                None if self.keep_unmatched => {
                    events.push(i as u32);
                    picks.push(None);
                }
                None => {}
            }
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let picks = UInt32Array::from(picks);
        let table_columns = self
            .table_columns
            .iter()
            .map(|&c| Ok(take(self.built.rows.column(c), &picks, None)?))
            .collect::<Result<Vec<ArrayRef>>>()?;
        super::lookup_join::joined(
            &self.schema,
            &batch,
            events,
            table_columns,
            self.table_first,
        )
    }

    fn explain(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        let table_keys: Vec<&str> = self
            .table_keys
            .iter()
            .map(|&i| self.built.rows.schema_ref().field(i).name().as_str())
            .collect();
        format!(
            "StaticJoin: {} join of table {} (read from a file: {} rows, indexed on [{}]) on [{}] (each event with every matching row)",
            if self.keep_unmatched { "left" } else { "inner" },
            self.table_name,
            self.built.rows.num_rows(),
            table_keys.join(", "),
            keys.join(", ")
        )
    }

    fn state_rows(&self) -> usize {
        self.built.rows.num_rows()
    }

    fn state_bytes(&self) -> usize {
        crate::compact::batch_bytes(&self.built.rows)
            + self
                .built
                .index
                .iter()
                .map(|(k, v)| k.len() + v.len() * 4 + 48)
                .sum::<usize>()
    }
}
