//! Aggregates OVER a frame of preceding rows over results that change (`AVG(price) OVER
//! (PARTITION BY seller ORDER BY ts ROWS BETWEEN 10 PRECEDING AND CURRENT ROW)` over a Top-1
//! that moves, Nexmark q6): keeps every input row, and when rows come or are taken back emits
//! the changes to the rows whose frames they are in, as a changelog.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::scalar::ScalarValue;
use foldhash::{HashMap, HashMapExt};

use super::over_aggregate::OverFrame;
use super::top_n::{TopNOrder, evaluate};
use super::{INSERTED, Operator};
use crate::checkpoint::OperatorState;
use crate::watermark::unit_nanos;
use crate::{Error, Result};

/// Bytes a kept row costs beyond its sort key and values.
const ENTRY_OVERHEAD: usize = 64;

/// A partition's rows, ordered by (sort key, row bytes), each with how many times it holds.
type Sorted = BTreeMap<(Box<[u8]>, Box<[u8]>), u64>;

/// Aggregates over a frame ending at the current row, per partition, in ORDER BY order, over a
/// changelog (its last column is [`INSERTED`]). Among rows equal in ORDER BY (peers), rows are
/// in the order of their bytes: a ROWS frame then holds a fixed choice of peers (batch takes
/// any); a RANGE frame holds them all. The output is the input's columns, the aggregates and
/// [`INSERTED`]: the changes, per batch, to every row's aggregates.
#[derive(Debug)]
pub struct RetractOverOperator {
    partition: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<TopNOrder>,
    frame: OverFrame,
    /// For RANGE frames of a length: the ORDER BY timestamp's nanoseconds per unit.
    range_unit_ns: Option<i64>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// The input's columns, without its changelog column.
    values: SchemaRef,
    schema: SchemaRef,
    rows: RowConverter,
    sort: RowConverter,
    keys: Option<RowConverter>,
    /// Output rows (values and aggregates), to tell changed results from unchanged ones.
    results: RowConverter,
    partitions: HashMap<Box<[u8]>, Sorted>,
    bytes: usize,
    kept_rows: usize,
}

impl RetractOverOperator {
    /// Aggregates per `partition` in `order` over a changelog of `input`; the output is the
    /// input's columns, one column per aggregate (typed as in `output`, which lists the input's
    /// columns and the aggregates) and [`INSERTED`]. A RANGE frame of a length needs one
    /// ascending timestamp in `order`.
    pub fn try_new(
        input: &Schema,
        partition: Vec<Arc<dyn PhysicalExpr>>,
        order: Vec<TopNOrder>,
        frame: OverFrame,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
        output: &Schema,
    ) -> Result<Self> {
        let width = input.fields().len().checked_sub(1).ok_or_else(|| {
            Error::InvalidArgument("a changelog ends with its inserted column".into())
        })?;
        if output.fields().len() != width + aggregates.len() {
            return Err(Error::InvalidArgument(
                "an OVER aggregate's output is its input and its aggregates".into(),
            ));
        }
        let range_unit_ns = match (frame, order.as_slice()) {
            (OverFrame::Range(Some(_)), [o]) if !o.options.descending => {
                match o.expr.data_type(input)? {
                    DataType::Timestamp(unit, _) => Some(unit_nanos(unit)),
                    t => {
                        return Err(Error::InvalidArgument(format!(
                            "a RANGE frame of a length orders by a timestamp, not {t}"
                        )));
                    }
                }
            }
            (OverFrame::Range(Some(_)), _) => {
                return Err(Error::InvalidArgument(
                    "a RANGE frame of a length orders by one ascending timestamp".into(),
                ));
            }
            _ => None,
        };
        let values = Arc::new(Schema::new(input.fields()[..width].to_vec()));
        let field = |f: &Field| SortField::new(f.data_type().clone());
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
        let mut out: Vec<Field> = output.fields().iter().map(|f| f.as_ref().clone()).collect();
        let results = RowConverter::new(out.iter().map(field).collect())?;
        out.push(Field::new(INSERTED, DataType::Boolean, false));
        Ok(Self {
            rows: RowConverter::new(values.fields().iter().map(|f| field(f)).collect())?,
            sort: RowConverter::new(sort)?,
            keys: match keys.is_empty() {
                true => None,
                false => Some(RowConverter::new(keys)?),
            },
            results,
            partition,
            order,
            frame,
            range_unit_ns,
            aggregates,
            values,
            schema: Arc::new(Schema::new(out)),
            partitions: HashMap::new(),
            bytes: 0,
            kept_rows: 0,
        })
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
                "an OVER aggregate's input took back a row it never had; this is a bug".into(),
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

    /// The results (values and aggregates, as rows of [`Self::results`]) of the rows of `key`'s
    /// partition whose sort key is at least `from`: rows before it keep their frames.
    fn results_from(&self, key: &[u8], from: &[u8]) -> Result<Vec<Box<[u8]>>> {
        let Some(rows) = self.partitions.get(key) else {
            return Ok(Vec::new());
        };
        // Every row, as many times as it holds, in order; and where the results start.
        let mut sorts: Vec<&[u8]> = Vec::new();
        let mut bytes: Vec<&[u8]> = Vec::new();
        for ((sort, row), &count) in rows {
            for _ in 0..count {
                sorts.push(sort);
                bytes.push(row);
            }
        }
        let first = sorts.partition_point(|s| *s < from);
        let n = sorts.len();
        if first == n {
            return Ok(Vec::new());
        }
        // The rows a frame can reach back to: all of them but for a ROWS frame of a length.
        let base = match self.frame {
            OverFrame::Rows(Some(p)) => first.saturating_sub(usize::try_from(p).unwrap_or(first)),
            _ => 0,
        };
        let parser = self.rows.parser();
        let columns = self
            .rows
            .convert_rows(bytes[base..].iter().map(|b| parser.parse(b)))?;
        let batch = RecordBatch::try_new(Arc::clone(&self.values), columns)?;
        let times = self.range_times(&batch)?;
        let peer_end = |j: usize| {
            let mut e = j + 1;
            while e < n && sorts[e] == sorts[j] {
                e += 1;
            }
            e
        };
        // Per result row, its frame [start, end) over `batch` (offset by `base`).
        let frames: Vec<(usize, usize)> = (first..n)
            .map(|j| match self.frame {
                OverFrame::Rows(Some(p)) => {
                    let p = usize::try_from(p).unwrap_or(usize::MAX);
                    (j.saturating_sub(p) - base, j + 1 - base)
                }
                OverFrame::Rows(None) => (0, j + 1 - base),
                OverFrame::Range(None) => (0, peer_end(j) - base),
                OverFrame::Range(Some(d)) => {
                    let t = times.as_ref().map_or(0, |t| t.value(j - base));
                    let low = t.saturating_sub(d);
                    let start = times
                        .as_ref()
                        .map_or(0, |t| t.values()[..j - base].partition_point(|&v| v < low));
                    (start, peer_end(j) - base)
                }
            })
            .collect();
        let mut columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| c.slice(first - base, n - first))
            .collect();
        for agg in &self.aggregates {
            let args = evaluate(&agg.expressions().iter().collect::<Vec<_>>(), &batch)?;
            let mut values = Vec::with_capacity(frames.len());
            for &(start, end) in &frames {
                let mut acc = agg.create_accumulator()?;
                let slice: Vec<ArrayRef> =
                    args.iter().map(|a| a.slice(start, end - start)).collect();
                acc.update_batch(&slice)?;
                values.push(acc.evaluate()?);
            }
            let field = self.results_field(columns.len());
            let array = match values.is_empty() {
                true => datafusion::arrow::array::new_empty_array(field.data_type()),
                false => cast(&ScalarValue::iter_to_array(values)?, field.data_type())?,
            };
            columns.push(array);
        }
        let encoded = self.results.convert_columns(&columns)?;
        Ok(encoded.iter().map(|r| r.data().into()).collect())
    }

    /// The output field at `i` (a value or an aggregate).
    fn results_field(&self, i: usize) -> &Field {
        self.schema.field(i)
    }

    /// The ORDER BY timestamp of `batch`'s rows in ns, for a RANGE frame of a length.
    fn range_times(&self, batch: &RecordBatch) -> Result<Option<Int64Array>> {
        let (Some(unit), [o]) = (self.range_unit_ns, self.order.as_slice()) else {
            return Ok(None);
        };
        let column = o.expr.evaluate(batch)?.into_array(batch.num_rows())?;
        let raw = cast(&column, &DataType::Int64)?;
        Ok(Some(
            raw.as_primitive::<Int64Type>()
                .unary::<_, Int64Type>(|v| v.saturating_mul(unit)),
        ))
    }

    /// The changelog from `before` to `after` (result rows), rows taken back first.
    fn output(&self, before: Vec<Box<[u8]>>, after: Vec<Box<[u8]>>) -> Result<Vec<RecordBatch>> {
        let mut counts: BTreeMap<Box<[u8]>, i64> = BTreeMap::new();
        for r in before {
            *counts.entry(r).or_default() -= 1;
        }
        for r in after {
            *counts.entry(r).or_default() += 1;
        }
        let mut changes: Vec<(&[u8], bool)> = Vec::new();
        for (r, &n) in &counts {
            for _ in 0..n.unsigned_abs() {
                changes.push((r, n > 0));
            }
        }
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        changes.sort_by_key(|(_, inserted)| *inserted);
        let parser = self.results.parser();
        let mut columns = self
            .results
            .convert_rows(changes.iter().map(|(r, _)| parser.parse(r)))?;
        columns.push(Arc::new(BooleanArray::from_iter(
            changes.iter().map(|(_, inserted)| Some(*inserted)),
        )));
        Ok(vec![RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?])
    }
}

impl Operator for RetractOverOperator {
    fn name(&self) -> &'static str {
        "RetractOverAggregate"
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
        // Per partition the batch touches: its rows, and the smallest sort key they have.
        let mut touched: HashMap<&[u8], (Vec<usize>, &[u8])> = HashMap::new();
        for i in 0..n {
            let s = sort.row(i).data();
            let e = touched.entry(key_of(i)).or_insert((Vec::new(), s));
            e.0.push(i);
            e.1 = e.1.min(s);
        }
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for (key, (members, from)) in touched {
            before.extend(self.results_from(key, from)?);
            for i in members {
                let add = inserted.is_valid(i) && inserted.value(i);
                self.step(key, sort.row(i).data(), rows.row(i).data(), add)?;
            }
            after.extend(self.results_from(key, from)?);
        }
        self.output(before, after)
    }

    fn explain(&self) -> String {
        let partition: Vec<String> = self.partition.iter().map(|e| e.to_string()).collect();
        let aggregates: Vec<&str> = self.aggregates.iter().map(|a| a.fun().name()).collect();
        format!(
            "RetractOverAggregate: partition_by=[{}] order_by=[{}] {} aggregates=[{}] over rows \
             that change; state: every input row (a row that comes or is taken back changes the \
             results of the rows whose frames it is in), a changelog of rows and their aggregates",
            partition.join(", "),
            super::top_n::order_text(&self.order),
            self.frame,
            aggregates.join(", ")
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
        let parser = self.rows.parser();
        let rows: Vec<_> = self
            .partitions
            .values()
            .flat_map(|p| p.iter())
            .flat_map(|((_, row), &count)| std::iter::repeat_n(parser.parse(row), count as usize))
            .collect();
        if rows.is_empty() {
            return Ok(OperatorState::default());
        }
        let columns = self.rows.convert_rows(rows)?;
        Ok(OperatorState {
            values: Vec::new(),
            batches: vec![RecordBatch::try_new(Arc::clone(&self.values), columns)?],
        })
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        for batch in state.batches {
            let mut columns = batch.columns().to_vec();
            columns.push(Arc::new(BooleanArray::from(vec![true; batch.num_rows()])));
            let mut fields: Vec<_> = self.values.fields().iter().cloned().collect();
            fields.push(Arc::new(Field::new(INSERTED, DataType::Boolean, false)));
            let changes = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
            // Restoring emits nothing: the view's rows come back from the checkpoint too.
            self.process_batch(changes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{Int64Array, TimestampSecondArray};
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::Column;
    use proptest::prelude::*;

    use super::*;

    /// (k, v, ts in seconds)
    type Row = (i64, i64, i64);

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Second, None), false),
            Field::new(INSERTED, DataType::Boolean, false),
        ]))
    }

    /// SUM(v) and COUNT(v) OVER (PARTITION BY k ORDER BY ts `frame`).
    fn operator(frame: OverFrame) -> RetractOverOperator {
        let schema = input();
        let agg = |udaf| {
            Arc::new(
                AggregateExprBuilder::new(udaf, vec![Arc::new(Column::new("v", 1)) as _])
                    .schema(Arc::clone(&schema))
                    .alias("a")
                    .build()
                    .expect("aggregate"),
            )
        };
        let mut fields: Vec<Field> = schema.fields()[..3]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("s", DataType::Int64, true));
        fields.push(Field::new("n", DataType::Int64, false));
        RetractOverOperator::try_new(
            &schema,
            vec![Arc::new(Column::new("k", 0))],
            vec![TopNOrder {
                expr: Arc::new(Column::new("ts", 2)),
                options: SortOptions::default(),
            }],
            frame,
            vec![agg(sum_udaf()), agg(count_udaf())],
            &Schema::new(fields),
        )
        .expect("operator")
    }

    fn batch(rows: &[(Row, bool)]) -> RecordBatch {
        RecordBatch::try_new(
            input(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0.1))),
                Arc::new(TimestampSecondArray::from_iter_values(
                    rows.iter().map(|r| r.0.2),
                )),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.1)))),
            ],
        )
        .expect("batch")
    }

    /// Applies a changelog to a multiset of (k, v, ts, sum, count).
    fn apply(view: &mut BTreeMap<(i64, i64, i64, i64, i64), i64>, out: &[RecordBatch]) {
        for b in out {
            let col = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
            let ts = cast(b.column(2), &DataType::Int64).expect("ts");
            let ts = ts.as_primitive::<Int64Type>();
            let (k, v, s, n) = (col(0), col(1), col(3), col(4));
            let inserted = b.column(5).as_boolean();
            for i in 0..b.num_rows() {
                let e = view
                    .entry((k.value(i), v.value(i), ts.value(i), s.value(i), n.value(i)))
                    .or_default();
                *e += if inserted.value(i) { 1 } else { -1 };
            }
        }
        view.retain(|_, c| *c != 0);
    }

    /// The results in batch: per partition in (ts, row) order, each row's frame.
    fn expected(
        rows: &BTreeMap<Row, i64>,
        frame: OverFrame,
    ) -> BTreeMap<(i64, i64, i64, i64, i64), i64> {
        let mut by_key: BTreeMap<i64, Vec<Row>> = BTreeMap::new();
        for (&r, &c) in rows {
            for _ in 0..c {
                by_key.entry(r.0).or_default().push(r);
            }
        }
        let mut out = BTreeMap::new();
        for list in by_key.values_mut() {
            // Peers in the order the operator keeps them: by the row's bytes, which for these
            // non-negative numbers is their numeric order.
            list.sort_by_key(|r| (r.2, r.1));
            for (j, r) in list.iter().enumerate() {
                let frame_rows: Vec<&Row> = match frame {
                    OverFrame::Rows(Some(p)) => {
                        list[j.saturating_sub(p as usize)..=j].iter().collect()
                    }
                    OverFrame::Rows(None) => list[..=j].iter().collect(),
                    OverFrame::Range(None) => list.iter().filter(|o| o.2 <= r.2).collect(),
                    OverFrame::Range(Some(d)) => list
                        .iter()
                        .filter(|o| o.2 <= r.2 && o.2 >= r.2 - d / 1_000_000_000)
                        .collect(),
                };
                let s: i64 = frame_rows.iter().map(|o| o.1).sum();
                *out.entry((r.0, r.1, r.2, s, frame_rows.len() as i64))
                    .or_default() += 1;
            }
        }
        out
    }

    fn frames() -> impl Strategy<Value = OverFrame> {
        prop_oneof![
            (0u64..4).prop_map(|n| OverFrame::Rows(Some(n))),
            Just(OverFrame::Rows(None)),
            Just(OverFrame::Range(None)),
            (0i64..4).prop_map(|s| OverFrame::Range(Some(s * 1_000_000_000))),
        ]
    }

    proptest! {
        /// Rows come and are taken back in random batches; the view the changelog builds
        /// always equals every row's aggregates over its frame computed from scratch.
        #[test]
        fn the_changelog_keeps_every_rows_frame(
            frame in frames(),
            steps in prop::collection::vec(
                prop::collection::vec((0i64..3, 0i64..20, 0i64..8, any::<bool>()), 1..6),
                1..12,
            ),
        ) {
            let mut op = operator(frame);
            let mut held: BTreeMap<Row, i64> = BTreeMap::new();
            let mut view = BTreeMap::new();
            for step in steps {
                let mut changes = Vec::new();
                for (k, v, ts, take_back) in step {
                    let row = (k, v, ts);
                    // Only rows held can be taken back.
                    let inserted = !(take_back && held.get(&row).is_some_and(|&c| c > 0));
                    *held.entry(row).or_default() += if inserted { 1 } else { -1 };
                    changes.push((row, inserted));
                }
                held.retain(|_, c| *c > 0);
                let out = op.process_batch(batch(&changes)).expect("batch");
                apply(&mut view, &out);
                prop_assert_eq!(&view, &expected(&held, frame));
            }
            // A restored operator goes on from the same rows.
            let state = op.snapshot().expect("snapshot");
            let mut restored = operator(frame);
            restored.restore(state).expect("restore");
            let row = (1, 5, 3);
            let out = restored.process_batch(batch(&[(row, true)])).expect("batch");
            apply(&mut view, &out);
            *held.entry(row).or_default() += 1;
            prop_assert_eq!(&view, &expected(&held, frame));
        }
    }
}
