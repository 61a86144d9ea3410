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

/// Where a frame starts or ends, from the current row: so many rows (ROWS) or nanoseconds of
/// the ORDER BY timestamp (RANGE) before or after it (`None`: unbounded), or the current row
/// (with its peers, for RANGE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameBound {
    /// `n PRECEDING` or `UNBOUNDED PRECEDING`.
    Preceding(Option<i64>),
    /// `CURRENT ROW`.
    CurrentRow,
    /// `n FOLLOWING` or `UNBOUNDED FOLLOWING`.
    Following(Option<i64>),
}

/// A frame over rows that change: any bounds, since a result may change when later rows come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangingFrame {
    /// ROWS (else RANGE).
    pub rows: bool,
    /// Where it starts.
    pub start: FrameBound,
    /// Where it ends.
    pub end: FrameBound,
}

impl From<OverFrame> for ChangingFrame {
    fn from(frame: OverFrame) -> Self {
        let (rows, start) = match frame {
            OverFrame::Rows(n) => (true, n.map(|n| i64::try_from(n).unwrap_or(i64::MAX))),
            OverFrame::Range(d) => (false, d),
        };
        Self {
            rows,
            start: FrameBound::Preceding(start),
            end: FrameBound::CurrentRow,
        }
    }
}

impl std::fmt::Display for ChangingFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let amount = |n: i64| match self.rows {
            true => n.to_string(),
            false => super::tumble::format_duration_ns(n),
        };
        let bound = |b: FrameBound| match b {
            FrameBound::Preceding(None) => "UNBOUNDED PRECEDING".to_string(),
            FrameBound::Preceding(Some(n)) => format!("{} PRECEDING", amount(n)),
            FrameBound::CurrentRow => "CURRENT ROW".to_string(),
            FrameBound::Following(Some(n)) => format!("{} FOLLOWING", amount(n)),
            FrameBound::Following(None) => "UNBOUNDED FOLLOWING".to_string(),
        };
        write!(
            f,
            "{} BETWEEN {} AND {}",
            if self.rows { "ROWS" } else { "RANGE" },
            bound(self.start),
            bound(self.end)
        )
    }
}

impl ChangingFrame {
    /// Whether the frame reaches rows after the current one (and its peers): a change then
    /// moves the results of rows before it too.
    fn reaches_forward(&self) -> bool {
        matches!(self.end, FrameBound::Following(_))
    }

    /// Whether a bound needs the ORDER BY's value (a RANGE of a length).
    fn measures(&self) -> bool {
        !self.rows
            && [self.start, self.end].iter().any(|b| {
                matches!(
                    b,
                    FrameBound::Preceding(Some(_)) | FrameBound::Following(Some(_))
                )
            })
    }

    /// Row `j`'s frame [start, end) among `sorts` (the partition's sort keys, in order) and,
    /// for a RANGE of a length, `times` (the ORDER BY in ns, ascending).
    fn of(&self, j: usize, sorts: &[&[u8]], times: &[i64]) -> (usize, usize) {
        let n = sorts.len();
        let count = |v: i64| usize::try_from(v).unwrap_or(usize::MAX);
        let at = |bound: FrameBound, is_end: bool| -> usize {
            if self.rows {
                let j = j + usize::from(is_end);
                return match bound {
                    FrameBound::Preceding(None) => 0,
                    FrameBound::Preceding(Some(p)) => j.saturating_sub(count(p)),
                    FrameBound::CurrentRow => j,
                    FrameBound::Following(Some(f)) => j.saturating_add(count(f)).min(n),
                    FrameBound::Following(None) => n,
                };
            }
            let t = times.get(j).copied().unwrap_or(0);
            // The first row past `v` (for an end), or at or past it (for a start).
            let cut = |v: i64| match is_end {
                true => times.partition_point(|&x| x <= v),
                false => times.partition_point(|&x| x < v),
            };
            match bound {
                FrameBound::Preceding(None) => 0,
                FrameBound::Preceding(Some(d)) => cut(t.saturating_sub(d)),
                FrameBound::CurrentRow => match is_end {
                    true => sorts.partition_point(|s| *s <= sorts[j]),
                    false => sorts.partition_point(|s| *s < sorts[j]),
                },
                FrameBound::Following(Some(d)) => cut(t.saturating_add(d)),
                FrameBound::Following(None) => n,
            }
        };
        let start = at(self.start, false);
        (start, at(self.end, true).max(start))
    }
}

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
    frame: ChangingFrame,
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
        frame: ChangingFrame,
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
        let range_unit_ns = match (frame.measures(), order.as_slice()) {
            (false, _) => None,
            (true, [o]) if !o.options.descending => match o.expr.data_type(input)? {
                DataType::Timestamp(unit, _) => Some(unit_nanos(unit)),
                t => {
                    return Err(Error::InvalidArgument(format!(
                        "a RANGE frame of a length orders by a timestamp, not {t}"
                    )));
                }
            },
            (true, _) => {
                return Err(Error::InvalidArgument(
                    "a RANGE frame of a length orders by one ascending timestamp".into(),
                ));
            }
        };
        // Without ORDER BY every row is a peer of every other: one constant sort column.
        let mut order = order;
        if order.is_empty() {
            order.push(TopNOrder {
                expr: Arc::new(datafusion::physical_expr::expressions::Literal::new(
                    ScalarValue::Boolean(Some(true)),
                )),
                options: Default::default(),
            });
        }
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
    /// partition whose frames can hold a row whose sort key is at least `from`: those from it
    /// on, or, for a frame that reaches forward, all of them.
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
        let n = sorts.len();
        let first = match self.frame.reaches_forward() {
            true => 0,
            false => sorts.partition_point(|s| *s < from),
        };
        if first == n {
            return Ok(Vec::new());
        }
        // The rows a frame can reach back to: the first result's frame's start, for ROWS (its
        // frames start in order); all of them for RANGE.
        let base = match self.frame.rows {
            true => self.frame.of(first, &sorts, &[]).0.min(first),
            false => 0,
        };
        let parser = self.rows.parser();
        let columns = self
            .rows
            .convert_rows(bytes[base..].iter().map(|b| parser.parse(b)))?;
        let batch = RecordBatch::try_new(Arc::clone(&self.values), columns)?;
        let times = self.range_times(&batch)?;
        let times: &[i64] = times.as_ref().map_or(&[], |t| t.values());
        // Per result row, its frame [start, end) over `batch` (offset by `base`).
        let frames: Vec<(usize, usize)> = (first..n)
            .map(|j| {
                let (start, end) = self.frame.of(j, &sorts, times);
                (start.max(base) - base, end.max(base) - base)
            })
            .collect();
        let mut columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| c.slice(first - base, n - first))
            .collect();
        for agg in &self.aggregates {
            let args = evaluate(&agg.expressions().iter().collect::<Vec<_>>(), &batch)?;
            let mut values: Vec<ScalarValue> = Vec::with_capacity(frames.len());
            // Frames that start at the partition's first row and grow (running totals, the
            // whole partition) share one accumulator fed row by row; a frame equal to the one
            // before has its value; any other frame is aggregated on its own.
            let mut running: Option<(Box<dyn datafusion::logical_expr::Accumulator>, usize)> = None;
            let mut previous: Option<(usize, usize)> = None;
            let slice = |from: usize, to: usize| -> Vec<ArrayRef> {
                args.iter().map(|a| a.slice(from, to - from)).collect()
            };
            for &(start, end) in &frames {
                if let (Some(p), Some(v)) = (previous, values.last()) {
                    if p == (start, end) {
                        values.push(v.clone());
                        continue;
                    }
                }
                previous = Some((start, end));
                match running.as_mut() {
                    Some((acc, fed)) if start == 0 && end >= *fed => {
                        acc.update_batch(&slice(*fed, end))?;
                        *fed = end;
                        values.push(acc.evaluate()?);
                    }
                    _ if start == 0 => {
                        let mut acc = agg.create_accumulator()?;
                        acc.update_batch(&slice(0, end))?;
                        values.push(acc.evaluate()?);
                        running = Some((acc, end));
                    }
                    _ => {
                        let mut acc = agg.create_accumulator()?;
                        acc.update_batch(&slice(start, end))?;
                        values.push(acc.evaluate()?);
                    }
                }
            }
            let field = self.schema.field(columns.len());
            let array = match values.is_empty() {
                true => datafusion::arrow::array::new_empty_array(field.data_type()),
                false => cast(&ScalarValue::iter_to_array(values)?, field.data_type())?,
            };
            columns.push(array);
        }
        let encoded = self.results.convert_columns(&columns)?;
        Ok(encoded.iter().map(|r| r.data().into()).collect())
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
            "RetractOverAggregate: partition_by=[{}] order_by=[{}] {} aggregates=[{}], results \
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
    fn operator(frame: ChangingFrame) -> RetractOverOperator {
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
                // The SUM of an empty frame is NULL: 0 here, told apart by its count of 0.
                let sum = if s.is_null(i) { 0 } else { s.value(i) };
                let e = view
                    .entry((k.value(i), v.value(i), ts.value(i), sum, n.value(i)))
                    .or_default();
                *e += if inserted.value(i) { 1 } else { -1 };
            }
        }
        view.retain(|_, c| *c != 0);
    }

    /// The results in batch: per partition in (ts, row) order, each row's frame, found from
    /// the definitions (positions for ROWS; times for RANGE, in seconds here).
    fn expected(
        rows: &BTreeMap<Row, i64>,
        frame: ChangingFrame,
    ) -> BTreeMap<(i64, i64, i64, i64, i64), i64> {
        let mut by_key: BTreeMap<i64, Vec<Row>> = BTreeMap::new();
        for (&r, &c) in rows {
            for _ in 0..c {
                by_key.entry(r.0).or_default().push(r);
            }
        }
        let secs = |d: i64| d / 1_000_000_000;
        let mut out = BTreeMap::new();
        for list in by_key.values_mut() {
            // Peers in the order the operator keeps them: by the row's bytes, which for these
            // non-negative numbers is their numeric order.
            list.sort_by_key(|r| (r.2, r.1));
            for (j, r) in list.iter().enumerate() {
                let (j, t) = (j as i64, r.2);
                let holds = |i: i64, o: &Row| -> bool {
                    let after_start = match (frame.rows, frame.start) {
                        (_, FrameBound::Preceding(None)) => true,
                        (true, FrameBound::Preceding(Some(p))) => i >= j - p,
                        (true, FrameBound::CurrentRow) => i >= j,
                        (true, FrameBound::Following(Some(f))) => i >= j + f,
                        (false, FrameBound::Preceding(Some(d))) => o.2 >= t - secs(d),
                        (false, FrameBound::CurrentRow) => o.2 >= t,
                        (false, FrameBound::Following(Some(d))) => o.2 >= t + secs(d),
                        (_, FrameBound::Following(None)) => false,
                    };
                    let before_end = match (frame.rows, frame.end) {
                        (_, FrameBound::Following(None)) => true,
                        (true, FrameBound::Following(Some(f))) => i <= j + f,
                        (true, FrameBound::CurrentRow) => i <= j,
                        (true, FrameBound::Preceding(Some(p))) => i <= j - p,
                        (false, FrameBound::Following(Some(d))) => o.2 <= t + secs(d),
                        (false, FrameBound::CurrentRow) => o.2 <= t,
                        (false, FrameBound::Preceding(Some(d))) => o.2 <= t - secs(d),
                        (_, FrameBound::Preceding(None)) => false,
                    };
                    after_start && before_end
                };
                let frame_rows: Vec<&Row> = list
                    .iter()
                    .enumerate()
                    .filter(|(i, o)| holds(*i as i64, o))
                    .map(|(_, o)| o)
                    .collect();
                let s: i64 = frame_rows.iter().map(|o| o.1).sum();
                *out.entry((r.0, r.1, r.2, s, frame_rows.len() as i64))
                    .or_default() += 1;
            }
        }
        out
    }

    fn bounds(rows: bool) -> impl Strategy<Value = FrameBound> {
        let unit = if rows { 1 } else { 1_000_000_000 };
        prop_oneof![
            Just(FrameBound::Preceding(None)),
            (0i64..4).prop_map(move |n| FrameBound::Preceding(Some(n * unit))),
            Just(FrameBound::CurrentRow),
            (0i64..4).prop_map(move |n| FrameBound::Following(Some(n * unit))),
            Just(FrameBound::Following(None)),
        ]
    }

    fn frames() -> impl Strategy<Value = ChangingFrame> {
        any::<bool>().prop_flat_map(|rows| {
            (bounds(rows), bounds(rows)).prop_map(move |(start, end)| ChangingFrame {
                rows,
                start,
                end,
            })
        })
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
