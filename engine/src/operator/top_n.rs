//! Top-N per partition over rows that only append (`ROW_NUMBER() OVER (PARTITION BY k ORDER BY
//! x) <= N`), and so deduplication (`... = 1`): keeps each partition's best N rows and emits
//! upserts of the ranks whose row changed.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, UInt64Array};
use datafusion::arrow::compute::{SortOptions, cast};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use super::Operator;
use crate::checkpoint::OperatorState;
use crate::{Error, Result};

/// One ORDER BY expression of a Top-N.
#[derive(Debug, Clone)]
pub struct TopNOrder {
    /// The expression, over the input.
    pub expr: Arc<dyn PhysicalExpr>,
    /// Descending and where NULLs go.
    pub options: SortOptions,
}

/// A kept row: its sort key (byte-comparable) and its values.
#[derive(Debug)]
struct Ranked {
    sort: OwnedRow,
    row: OwnedRow,
}

/// Keeps the best `limit` rows per partition, ranked by `order`, ties in arrival order (as
/// Flink's append-only Top-N does). Input rows never leave (the input only appends), so every
/// partition's ranks 1..=min(rows, limit) stay filled and the output is upserts keyed by
/// (partition, rank): the rows at the ranks an arrival moved, with their new rank.
#[derive(Debug)]
pub struct TopNOperator {
    partition: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<TopNOrder>,
    limit: usize,
    input: SchemaRef,
    schema: SchemaRef,
    rows: RowConverter,
    sort: RowConverter,
    keys: Option<RowConverter>,
    /// Kept rows per partition key (`None` without PARTITION BY), best first.
    partitions: HashMap<Option<OwnedRow>, Vec<Ranked>>,
    bytes: usize,
}

fn evaluate(exprs: &[&Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    exprs
        .iter()
        .map(|e| Ok(e.evaluate(batch)?.into_array(batch.num_rows())?))
        .collect()
}

impl TopNOperator {
    /// A Top-`limit` of batches of `input` per `partition`, by `order`; the output is the input
    /// columns and the rank, a column named `rank_name` of type UInt64 (ROW_NUMBER's).
    pub fn try_new(
        input: SchemaRef,
        partition: Vec<Arc<dyn PhysicalExpr>>,
        order: Vec<TopNOrder>,
        limit: usize,
        rank_name: &str,
    ) -> Result<Self> {
        if limit == 0 {
            return Err(Error::InvalidArgument(
                "a Top-N keeps at least one row".into(),
            ));
        }
        let fields: Vec<SortField> = input
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let sort_fields = order
            .iter()
            .map(|o| {
                Ok(SortField::new_with_options(
                    o.expr.data_type(&input)?,
                    o.options,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let key_fields = partition
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(&input)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut out: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        out.push(Field::new(rank_name, DataType::UInt64, false));
        Ok(Self {
            partition,
            order,
            limit,
            schema: Arc::new(Schema::new(out)),
            input,
            rows: RowConverter::new(fields)?,
            sort: RowConverter::new(sort_fields)?,
            keys: if key_fields.is_empty() {
                None
            } else {
                Some(RowConverter::new(key_fields)?)
            },
            partitions: HashMap::new(),
            bytes: 0,
        })
    }

    /// Ranks the rows of `batch`; returns, per partition touched, the first rank that moved.
    fn rank(&mut self, batch: &RecordBatch) -> Result<HashMap<Option<OwnedRow>, usize>> {
        let n = batch.num_rows();
        let order: Vec<&Arc<dyn PhysicalExpr>> = self.order.iter().map(|o| &o.expr).collect();
        let sort = self.sort.convert_columns(&evaluate(&order, batch)?)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        let keys = match &self.keys {
            Some(k) => {
                let partition: Vec<&Arc<dyn PhysicalExpr>> = self.partition.iter().collect();
                Some(k.convert_columns(&evaluate(&partition, batch)?)?)
            }
            None => None,
        };
        let mut moved: HashMap<Option<OwnedRow>, usize> = HashMap::new();
        for i in 0..n {
            let key = keys.as_ref().map(|k| k.row(i).owned());
            let kept = self.partitions.entry(key.clone()).or_default();
            let s = sort.row(i);
            // After every row that sorts before or equal to it: ties keep arrival order.
            let at = kept.partition_point(|r| r.sort.row() <= s);
            if at >= self.limit {
                continue;
            }
            let ranked = Ranked {
                sort: s.owned(),
                row: rows.row(i).owned(),
            };
            self.bytes += ranked.sort.as_ref().len() + ranked.row.as_ref().len() + 64;
            kept.insert(at, ranked);
            if kept.len() > self.limit {
                if let Some(out) = kept.pop() {
                    self.bytes -= out.sort.as_ref().len() + out.row.as_ref().len() + 64;
                }
            }
            let first = moved.entry(key).or_insert(at);
            *first = (*first).min(at);
        }
        Ok(moved)
    }
}

impl Operator for TopNOperator {
    fn name(&self) -> &'static str {
        "TopN"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let moved = self.rank(&batch)?;
        let mut rows = Vec::new();
        let mut ranks = Vec::new();
        for (key, first) in &moved {
            let Some(kept) = self.partitions.get(key) else {
                continue;
            };
            for (r, ranked) in kept.iter().enumerate().skip(*first) {
                rows.push(ranked.row.row());
                ranks.push(r as u64 + 1);
            }
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut columns = self.rows.convert_rows(rows)?;
        columns.push(Arc::new(UInt64Array::from(ranks)));
        Ok(vec![RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?])
    }

    fn explain(&self) -> String {
        let order: Vec<String> = self
            .order
            .iter()
            .map(|o| {
                format!(
                    "{}{}",
                    o.expr,
                    if o.options.descending { " DESC" } else { "" }
                )
            })
            .collect();
        let partition: Vec<String> = self.partition.iter().map(|e| e.to_string()).collect();
        format!(
            "TopN: {} rows per [{}] by [{}], ties in arrival order; state: those rows (no time bound), upserts by partition and rank",
            self.limit,
            partition.join(", "),
            order.join(", ")
        )
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    /// The kept rows, partition by partition in rank order; restoring ranks them again in that
    /// order, which rebuilds the same ranks (ties keep the order they are restored in).
    fn snapshot(&mut self) -> Result<OperatorState> {
        let rows: Vec<_> = self
            .partitions
            .values()
            .flat_map(|kept| kept.iter().map(|r| r.row.row()))
            .collect();
        if rows.is_empty() {
            return Ok(OperatorState::default());
        }
        let columns = self.rows.convert_rows(rows)?;
        Ok(OperatorState {
            values: Vec::new(),
            batches: vec![RecordBatch::try_new(Arc::clone(&self.input), columns)?],
        })
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        for batch in state.batches {
            let columns = batch
                .columns()
                .iter()
                .zip(self.input.fields())
                .map(|(c, f)| Ok(cast(c, f.data_type())?))
                .collect::<Result<Vec<_>>>()?;
            let batch = RecordBatch::try_new(Arc::clone(&self.input), columns)?;
            self.rank(&batch)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray, Int64Array};
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::physical_expr::expressions::Column;
    use proptest::prelude::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
            Field::new("id", DataType::Int64, false),
        ]))
    }

    fn top(limit: usize, descending: bool) -> TopNOperator {
        TopNOperator::try_new(
            schema(),
            vec![Arc::new(Column::new("k", 0))],
            vec![TopNOrder {
                expr: Arc::new(Column::new("v", 1)),
                options: SortOptions {
                    descending,
                    nulls_first: false,
                },
            }],
            limit,
            "rn",
        )
        .expect("top-n")
    }

    fn batch(rows: &[(i64, i64, i64)]) -> RecordBatch {
        let col = |f: fn(&(i64, i64, i64)) -> i64| {
            Arc::new(Int64Array::from_iter_values(rows.iter().map(f))) as ArrayRef
        };
        RecordBatch::try_new(schema(), vec![col(|r| r.0), col(|r| r.1), col(|r| r.2)])
            .expect("batch")
    }

    /// Applies upserts keyed by (k, rank) to `table`.
    fn apply(table: &mut HashMap<(i64, u64), (i64, i64)>, out: &[RecordBatch]) {
        for b in out {
            let int = |c: usize| b.column(c).as_primitive::<Int64Type>().clone();
            let (k, v, id) = (int(0), int(1), int(2));
            let rank = b
                .column(3)
                .as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
            for i in 0..b.num_rows() {
                assert!(rank.is_valid(i));
                table.insert((k.value(i), rank.value(i)), (v.value(i), id.value(i)));
            }
        }
    }

    /// The same Top-N in batch: per key, rows by value (then arrival), the first `limit`.
    fn batch_top(
        rows: &[(i64, i64, i64)],
        limit: usize,
        descending: bool,
    ) -> HashMap<(i64, u64), (i64, i64)> {
        let mut by_key: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for r in rows {
            by_key.entry(r.0).or_default().push((r.1, r.2));
        }
        let mut out = HashMap::new();
        for (k, mut v) in by_key {
            // Stable: ties stay in arrival order.
            v.sort_by_key(|&(x, _)| if descending { -x } else { x });
            for (r, (x, id)) in v.into_iter().take(limit).enumerate() {
                out.insert((k, r as u64 + 1), (x, id));
            }
        }
        out
    }

    proptest! {
        /// Upserts applied in order give the batch Top-N, however the rows are split into
        /// batches, and so does a restore from a snapshot taken part-way.
        #[test]
        fn upserts_equal_batch_top_n(
            values in prop::collection::vec((0i64..4, 0i64..20), 1..200),
            cuts in prop::collection::vec(0usize..200, 0..6),
            limit in 1usize..5,
            descending: bool,
            restore_at in 0usize..6,
        ) {
            let rows: Vec<(i64, i64, i64)> =
                values.iter().enumerate().map(|(i, &(k, v))| (k, v, i as i64)).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % rows.len()).collect();
            cuts.push(0);
            cuts.push(rows.len());
            cuts.sort_unstable();
            cuts.dedup();
            let mut op = top(limit, descending);
            let mut table = HashMap::new();
            for (i, w) in cuts.windows(2).enumerate() {
                if i == restore_at {
                    let state = op.snapshot().expect("snapshot");
                    op = top(limit, descending);
                    op.restore(state).expect("restore");
                }
                let out = op.process_batch(batch(&rows[w[0]..w[1]])).expect("process");
                apply(&mut table, &out);
            }
            prop_assert_eq!(table, batch_top(&rows, limit, descending));
        }
    }

    #[test]
    fn keeps_the_last_row_per_key() {
        // Deduplication, keep last: ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) = 1.
        let mut op = top(1, true);
        let mut table = HashMap::new();
        apply(
            &mut table,
            &op.process_batch(batch(&[(1, 5, 0), (2, 1, 1)]))
                .expect("ok"),
        );
        apply(
            &mut table,
            &op.process_batch(batch(&[(1, 3, 2), (1, 9, 3)]))
                .expect("ok"),
        );
        assert_eq!(table.len(), 2);
        assert_eq!(table[&(1, 1)], (9, 3));
        assert_eq!(table[&(2, 1)], (1, 1));
        assert!(op.state_bytes() > 0);
    }
}
