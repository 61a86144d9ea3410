//! Top-N over results that change (`ROW_NUMBER()`, `RANK()` or `DENSE_RANK()` over a changelog,
//! such as the ten largest counts of an updating aggregate): keeps every input row, since a row
//! taken back can bring a lower one into the top, and emits a changelog of rows and ranks.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use foldhash::{HashMap, HashMapExt};

use super::top_n::{RankKind, TopNOrder};
use super::{INSERTED, Operator};
use crate::checkpoint::OperatorState;
use crate::{Error, Result};

/// Bytes a kept row costs beyond its sort key and values.
const ENTRY_OVERHEAD: usize = 64;

/// A partition's rows, ordered by (sort key, row bytes), each with how many times it holds.
type Sorted = BTreeMap<(Box<[u8]>, Box<[u8]>), u64>;

/// A row of the top and its rank.
type Ranked = (Box<[u8]>, u64);

/// Ranks rows of a changelog per partition by `order` and emits, per batch, the changes to the
/// rows ranked up to `limit` (with their rank) as a changelog. Among rows equal in `order`, ROW_NUMBER
/// numbers them in the order of their bytes (any order is the batch answer too).
#[derive(Debug)]
pub struct RetractTopNOperator {
    partition: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<TopNOrder>,
    limit: usize,
    kind: RankKind,
    /// The input's columns, without its changelog column.
    values: SchemaRef,
    schema: SchemaRef,
    rows: RowConverter,
    sort: RowConverter,
    keys: Option<RowConverter>,
    partitions: HashMap<Box<[u8]>, Sorted>,
    bytes: usize,
    /// Distinct rows kept over all partitions.
    kept_rows: usize,
}

use super::top_n::evaluate;

impl RetractTopNOperator {
    /// A Top-`limit` by `order` per `partition` over a changelog of `input` (its last column is
    /// [`INSERTED`]); the output is the input's columns, the rank (`rank_name`, UInt64) and
    /// [`INSERTED`].
    pub fn try_new(
        input: &Schema,
        partition: Vec<Arc<dyn PhysicalExpr>>,
        order: Vec<TopNOrder>,
        limit: usize,
        kind: RankKind,
        rank_name: &str,
    ) -> Result<Self> {
        let width = input.fields().len().checked_sub(1).ok_or_else(|| {
            Error::InvalidArgument("a changelog ends with its inserted column".into())
        })?;
        if limit == 0 {
            return Err(Error::InvalidArgument(
                "a Top-N keeps at least one row".into(),
            ));
        }
        let values = Arc::new(Schema::new(input.fields()[..width].to_vec()));
        let mut out: Vec<Field> = values.fields().iter().map(|f| f.as_ref().clone()).collect();
        out.push(Field::new(rank_name, DataType::UInt64, false));
        out.push(Field::new(INSERTED, DataType::Boolean, false));
        let sort = order
            .iter()
            .map(|o| {
                Ok(SortField::new_with_options(
                    o.expr.data_type(input)?,
                    o.options,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let keys = partition
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(input)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            rows: RowConverter::new(
                values
                    .fields()
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect(),
            )?,
            sort: RowConverter::new(sort)?,
            keys: if keys.is_empty() {
                None
            } else {
                Some(RowConverter::new(keys)?)
            },
            partition,
            order,
            limit,
            kind,
            values,
            schema: Arc::new(Schema::new(out)),
            partitions: HashMap::new(),
            bytes: 0,
            kept_rows: 0,
        })
    }

    /// The rows of `rows` ranked up to the limit, with their ranks, best first.
    fn top(&self, rows: &Sorted) -> Vec<Ranked> {
        let mut out = Vec::new();
        let mut previous: Option<(&[u8], u64)> = None;
        let mut position = 0u64;
        'rows: for ((sort, row), &count) in rows {
            for _ in 0..count {
                position += 1;
                let rank = match (self.kind, previous) {
                    (RankKind::RowNumber, _) => position,
                    (_, Some((s, r))) if s == sort.as_ref() => r,
                    (RankKind::DenseRank, Some((_, r))) => r + 1,
                    _ => position,
                };
                if rank > self.limit as u64 {
                    break 'rows;
                }
                previous = Some((sort, rank));
                out.push((row.clone(), rank));
            }
        }
        out
    }

    /// Adds (or takes back) one row of a partition.
    fn step(&mut self, key: &[u8], sort: &[u8], row: &[u8], inserted: bool) -> Result<()> {
        let entry = (Box::from(sort), Box::from(row));
        let cost = sort.len() + row.len() + ENTRY_OVERHEAD;
        let partition = self.partitions.entry(key.into()).or_default();
        if inserted {
            let count = partition.entry(entry).or_insert(0);
            if *count == 0 {
                self.bytes += cost;
                self.kept_rows += 1;
            }
            *count += 1;
            return Ok(());
        }
        let Some(count) = partition.get_mut(&entry) else {
            return Err(Error::Internal(
                "a Top-N's input took back a row it never had; this is a bug".into(),
            ));
        };
        *count -= 1;
        if *count == 0 {
            partition.remove(&entry);
            self.bytes -= cost;
            self.kept_rows -= 1;
        }
        if partition.is_empty() {
            self.partitions.remove(key);
        }
        Ok(())
    }

    /// Rows of the changelog: the differences between `before` and `after` (rows with ranks).
    fn diff(before: Vec<Ranked>, after: Vec<Ranked>, out: &mut Vec<(Ranked, bool)>) {
        let mut counts: BTreeMap<Ranked, i64> = BTreeMap::new();
        for r in before {
            *counts.entry(r).or_default() -= 1;
        }
        for r in after {
            *counts.entry(r).or_default() += 1;
        }
        for (r, n) in counts {
            for _ in 0..n.unsigned_abs() {
                out.push((r.clone(), n > 0));
            }
        }
    }

    fn output(&self, mut changes: Vec<(Ranked, bool)>) -> Result<Vec<RecordBatch>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        // Rows taken back first: a view never holds a row twice in passing.
        changes.sort_by_key(|(_, inserted)| *inserted);
        let parser = self.rows.parser();
        let rows = changes.iter().map(|((row, _), _)| parser.parse(row));
        let mut columns = self.rows.convert_rows(rows)?;
        columns.push(Arc::new(UInt64Array::from_iter_values(
            changes.iter().map(|((_, rank), _)| *rank),
        )));
        columns.push(Arc::new(BooleanArray::from_iter(
            changes.iter().map(|(_, inserted)| Some(*inserted)),
        )));
        Ok(vec![RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?])
    }
}

impl Operator for RetractTopNOperator {
    fn name(&self) -> &'static str {
        "RetractTopN"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let width = self.values.fields().len();
        let inserted = batch.column(width).as_boolean().clone();
        let order: Vec<&Arc<dyn PhysicalExpr>> = self.order.iter().map(|o| &o.expr).collect();
        let sort = self.sort.convert_columns(&evaluate(&order, &batch)?)?;
        let rows = self.rows.convert_columns(&batch.columns()[..width])?;
        let keys = match &self.keys {
            Some(k) => {
                let partition: Vec<&Arc<dyn PhysicalExpr>> = self.partition.iter().collect();
                Some(k.convert_columns(&evaluate(&partition, &batch)?)?)
            }
            None => None,
        };
        let key_of = |i: usize| keys.as_ref().map_or(&[][..], |k| k.row(i).data());
        // Each partition's top before the batch, taken when the batch first touches it.
        let mut before: Vec<(Box<[u8]>, Vec<Ranked>)> = Vec::new();
        let mut seen: HashMap<&[u8], ()> = HashMap::new();
        for i in 0..n {
            let key = key_of(i);
            if seen.insert(key, ()).is_none() {
                let top = self
                    .partitions
                    .get(key)
                    .map(|p| self.top(p))
                    .unwrap_or_default();
                before.push((key.into(), top));
            }
            let add = inserted.is_valid(i) && inserted.value(i);
            self.step(key, sort.row(i).data(), rows.row(i).data(), add)?;
        }
        let mut changes = Vec::new();
        for (key, top) in before {
            let after = self
                .partitions
                .get(&key)
                .map(|p| self.top(p))
                .unwrap_or_default();
            Self::diff(top, after, &mut changes);
        }
        self.output(changes)
    }

    fn explain(&self) -> String {
        let order = super::top_n::order_text(&self.order);
        let partition: Vec<String> = self.partition.iter().map(|e| e.to_string()).collect();
        format!(
            "RetractTopN: {} {} per [{}] by [{}] over rows that change; state: every input row (a row taken back can bring another into the top), a changelog of rows and their ranks",
            self.limit,
            match self.kind {
                RankKind::RowNumber => "rows",
                _ => "ranks",
            },
            partition.join(", "),
            order
        )
    }

    fn state_rows(&self) -> usize {
        self.kept_rows
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    /// Every kept row as many times as it holds; a restore inserts them again.
    fn snapshot(&mut self) -> Result<OperatorState> {
        let kept = self
            .partitions
            .values()
            .flat_map(|p| p.iter())
            .map(|((_, row), &count)| (row.as_ref(), count));
        super::kept_rows_state(&self.rows, &self.values, kept)
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        for batch in state.batches {
            // Restoring emits nothing: the view's rows come back from the checkpoint too.
            self.process_batch(super::as_inserts(&self.values, &batch)?)?;
        }
        Ok(())
    }
}
