//! Aggregates OVER a frame of preceding rows in event-time order (`AVG(x) OVER (PARTITION BY k
//! ORDER BY ts ROWS BETWEEN 10 PRECEDING AND CURRENT ROW)`): each row is emitted once, with its
//! aggregates, when the watermark passes its time, so the output only appends and is final.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, filter, filter_record_batch, not, take};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::scalar::ScalarValue;
use foldhash::{HashMap, HashMapExt};

use super::Operator;
use crate::checkpoint::OperatorState;
use crate::compact::batch_bytes;
use crate::watermark::unit_nanos;
use crate::{Error, Result};

/// Where an OVER frame starts; it ends at the current row (with its peers, for RANGE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverFrame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW`; `None` for UNBOUNDED PRECEDING.
    Rows(Option<u64>),
    /// `RANGE BETWEEN d PRECEDING AND CURRENT ROW` over the time column (d in ns); `None` for
    /// UNBOUNDED PRECEDING. Rows with the same time (peers) are in each other's frames.
    Range(Option<i64>),
}

impl std::fmt::Display for OverFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rows(Some(n)) => write!(f, "ROWS BETWEEN {n} PRECEDING AND CURRENT ROW"),
            Self::Rows(None) => f.write_str("ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"),
            Self::Range(Some(ns)) => write!(
                f,
                "RANGE BETWEEN {} PRECEDING AND CURRENT ROW",
                super::tumble::format_duration_ns(*ns)
            ),
            Self::Range(None) => f.write_str("RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"),
        }
    }
}

/// What a partition keeps between watermarks.
#[derive(Debug, Default)]
struct History {
    /// Earlier rows that rows still to come may have in their frame: the time (ns) and each
    /// aggregate's arguments (bounded frames only).
    rows: Option<RecordBatch>,
    /// The running aggregates (UNBOUNDED PRECEDING frames only).
    running: Vec<Box<dyn Accumulator>>,
}

/// Holds rows until the watermark passes their time, then emits them in time order per
/// partition, each with its aggregates over its frame. Rows arriving behind the watermark are
/// late: counted and handed over, not emitted.
#[derive(Debug)]
pub struct OverAggregateOperator {
    input: SchemaRef,
    schema: SchemaRef,
    partition: Vec<Arc<dyn PhysicalExpr>>,
    keys: RowConverter,
    time: usize,
    unit_ns: i64,
    frame: OverFrame,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Whether each aggregate can slide (take rows back exactly) rather than be recomputed.
    sliding: Vec<bool>,
    /// The schema of [`History::rows`].
    history_schema: SchemaRef,
    pending: Vec<RecordBatch>,
    partitions: HashMap<Box<[u8]>, History>,
    watermark: Option<i64>,
    late_rows: u64,
    late: Vec<RecordBatch>,
}

/// Evaluates `exprs` over `batch`.
fn evaluate(exprs: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    exprs
        .iter()
        .map(|e| Ok(e.evaluate(batch)?.into_array(batch.num_rows())?))
        .collect()
}

impl OverAggregateOperator {
    /// Aggregates over batches of `input`, per `partition`, in order of the timestamp column
    /// `time`; the output is the input's columns followed by one per aggregate, typed as in
    /// `output`.
    pub fn try_new(
        input: SchemaRef,
        partition: Vec<Arc<dyn PhysicalExpr>>,
        time: usize,
        frame: OverFrame,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
        output: SchemaRef,
    ) -> Result<Self> {
        let DataType::Timestamp(unit, _) = input.field(time).data_type() else {
            return Err(Error::InvalidArgument(format!(
                "an OVER aggregate orders by a timestamp, not {}",
                input.field(time).data_type()
            )));
        };
        let unit_ns = unit_nanos(*unit);
        let mut sort = vec![SortField::new(DataType::Boolean)];
        for e in &partition {
            sort.push(SortField::new(e.data_type(&input)?));
        }
        let mut fields = vec![Field::new("time", DataType::Int64, false)];
        let mut sliding = Vec::with_capacity(aggregates.len());
        for (a, agg) in aggregates.iter().enumerate() {
            let mut exact = agg.create_sliding_accumulator()?.supports_retract_batch();
            for (i, e) in agg.expressions().iter().enumerate() {
                let t = e.data_type(&input)?;
                exact &= !t.is_floating();
                fields.push(Field::new(format!("a{a}_{i}"), t, true));
            }
            sliding.push(exact);
        }
        Ok(Self {
            keys: RowConverter::new(sort)?,
            history_schema: Arc::new(Schema::new(fields)),
            input,
            schema: output,
            partition,
            time,
            unit_ns,
            frame,
            aggregates,
            sliding,
            pending: Vec::new(),
            partitions: HashMap::new(),
            watermark: None,
            late_rows: 0,
            late: Vec::new(),
        })
    }

    /// Event times of `batch`'s rows in ns.
    fn times(&self, batch: &RecordBatch) -> Result<Int64Array> {
        let raw = cast(batch.column(self.time), &DataType::Int64)?;
        let unit = self.unit_ns;
        Ok(raw
            .as_primitive::<Int64Type>()
            .unary::<_, Int64Type>(|v| v.saturating_mul(unit)))
    }

    /// Partition keys as rows; a leading constant column makes a key without PARTITION BY.
    fn partition_rows(&self, batch: &RecordBatch) -> Result<Rows> {
        let mut columns =
            vec![Arc::new(BooleanArray::from(vec![true; batch.num_rows()])) as ArrayRef];
        columns.extend(evaluate(&self.partition, batch)?);
        Ok(self.keys.convert_columns(&columns)?)
    }

    /// Time and aggregate arguments of `batch`'s rows: the layout of [`History::rows`].
    fn frame_columns(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = vec![Arc::new(self.times(batch)?)];
        for a in &self.aggregates {
            columns.extend(evaluate(&a.expressions(), batch)?);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.history_schema),
            columns,
            &options,
        )?)
    }

    /// The aggregates' values for the rows of `frame` from `first` on (a partition's history
    /// followed by its released rows), updating the partition's history.
    fn compute(
        &self,
        history: &mut History,
        frame: &RecordBatch,
        first: usize,
    ) -> Result<Vec<Vec<ScalarValue>>> {
        let times = frame.column(0).as_primitive::<Int64Type>();
        let n = frame.num_rows();
        let mut values = vec![Vec::with_capacity(n - first); self.aggregates.len()];
        let mut column = 1;
        for (a, agg) in self.aggregates.iter().enumerate() {
            let width = agg.expressions().len();
            let args: Vec<ArrayRef> = frame.columns()[column..column + width].to_vec();
            column += width;
            let slice = |from: usize, to: usize| -> Vec<ArrayRef> {
                args.iter().map(|c| c.slice(from, to - from)).collect()
            };
            let out = &mut values[a];
            match self.frame {
                OverFrame::Rows(None) | OverFrame::Range(None) => {
                    if history.running.len() <= a {
                        history.running.push(agg.create_accumulator()?);
                    }
                    let acc = &mut history.running[a];
                    let mut i = first;
                    while i < n {
                        // A RANGE frame takes in the row's peers (same time) at once.
                        let mut end = i + 1;
                        if matches!(self.frame, OverFrame::Range(_)) {
                            while end < n && times.value(end) == times.value(i) {
                                end += 1;
                            }
                        }
                        acc.update_batch(&slice(i, end))?;
                        let v = acc.evaluate()?;
                        out.extend(std::iter::repeat_n(v, end - i));
                        i = end;
                    }
                }
                OverFrame::Rows(Some(_)) | OverFrame::Range(Some(_)) => {
                    let mut acc = if self.sliding[a] {
                        Some(agg.create_sliding_accumulator()?)
                    } else {
                        None
                    };
                    let (mut lo, mut hi) = (0, 0);
                    for i in first..n {
                        let (start, end) = self.bounds(times, i, n);
                        let v = match acc.as_mut() {
                            Some(acc) => {
                                if end > hi {
                                    acc.update_batch(&slice(hi.max(lo), end))?;
                                    hi = end;
                                }
                                if start > lo {
                                    acc.retract_batch(&slice(lo, start))?;
                                    lo = start;
                                }
                                acc.evaluate()?
                            }
                            None => {
                                let mut fresh = agg.create_accumulator()?;
                                fresh.update_batch(&slice(start, end))?;
                                fresh.evaluate()?
                            }
                        };
                        out.push(v);
                    }
                }
            }
        }
        // Keep the rows that the frames of rows still to come can reach.
        history.rows = match self.frame {
            OverFrame::Rows(Some(k)) => {
                let keep = usize::try_from(k).unwrap_or(usize::MAX).min(n);
                (keep > 0).then(|| frame.slice(n - keep, keep))
            }
            OverFrame::Range(Some(d)) => {
                let last = times.value(n - 1);
                let from = (0..n)
                    .find(|&i| times.value(i) >= last.saturating_sub(d))
                    .unwrap_or(n);
                Some(frame.slice(from, n - from))
            }
            _ => None,
        };
        Ok(values)
    }

    /// The frame `[start, end)` of row `i` among `n` rows in time order.
    fn bounds(&self, times: &Int64Array, i: usize, n: usize) -> (usize, usize) {
        match self.frame {
            OverFrame::Rows(Some(k)) => {
                let back = usize::try_from(k).unwrap_or(usize::MAX);
                (i.saturating_sub(back), i + 1)
            }
            OverFrame::Range(Some(d)) => {
                let t = times.value(i);
                let lowest = t.saturating_sub(d);
                let values = times.values();
                let start = values[..=i].partition_point(|&x| x < lowest);
                let end = i + values[i..n].partition_point(|&x| x <= t);
                (start, end)
            }
            _ => (0, i + 1),
        }
    }

    /// Emits the pending rows the watermark `w` has passed.
    fn release(&mut self, w: i64) -> Result<Vec<RecordBatch>> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let all = concat_batches(&self.input, &self.pending)?;
        let times = self.times(&all)?;
        let done = BooleanArray::from_unary(&times, |t| t < w);
        if done.true_count() == 0 {
            self.pending = vec![all];
            return Ok(Vec::new());
        }
        let rest = filter_record_batch(&all, &not(&done)?)?;
        self.pending = if rest.num_rows() > 0 {
            vec![rest]
        } else {
            Vec::new()
        };
        let released = filter_record_batch(&all, &done)?;
        let times = filter(&times, &done)?.as_primitive::<Int64Type>().clone();
        let keys = self.partition_rows(&released)?;
        // By partition, then time, then arrival.
        let mut order: Vec<u32> = (0..released.num_rows() as u32).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            keys.row(a)
                .cmp(&keys.row(b))
                .then(times.value(a).cmp(&times.value(b)))
                .then(a.cmp(&b))
        });
        let order = UInt32Array::from(order);
        let sorted = take_batch(&released, &order)?;
        let columns = self.frame_columns(&sorted)?;
        // The partition key of the j-th row in sorted order.
        let key_at = |j: usize| keys.row(order.value(j) as usize);
        let mut values = vec![Vec::with_capacity(sorted.num_rows()); self.aggregates.len()];
        let mut start = 0;
        let n = sorted.num_rows();
        while start < n {
            let key = key_at(start);
            let mut end = start + 1;
            while end < n && key_at(end) == key {
                end += 1;
            }
            let mut history = self.partitions.remove(key.data()).unwrap_or_default();
            let run = columns.slice(start, end - start);
            let (frame, first) = match history.rows.take() {
                Some(h) => (
                    concat_batches(&self.history_schema, [&h, &run])?,
                    h.num_rows(),
                ),
                None => (run, 0),
            };
            let computed = self.compute(&mut history, &frame, first)?;
            for (all, mut more) in values.iter_mut().zip(computed) {
                all.append(&mut more);
            }
            self.partitions.insert(key.data().into(), history);
            start = end;
        }
        let mut out = sorted.columns().to_vec();
        for v in values {
            out.push(ScalarValue::iter_to_array(v)?);
        }
        Ok(vec![super::batch_of(&self.schema, out)?])
    }
}

fn take_batch(batch: &RecordBatch, indices: &UInt32Array) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| Ok(take(c.as_ref(), indices, None)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

impl Operator for OverAggregateOperator {
    fn name(&self) -> &'static str {
        "OverAggregate"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let Some(w) = self.watermark else {
            self.pending.push(batch);
            return Ok(Vec::new());
        };
        let times = self.times(&batch)?;
        let late = BooleanArray::from_unary(&times, |t| t < w);
        if late.true_count() > 0 {
            self.late_rows += late.true_count() as u64;
            self.late.push(filter_record_batch(&batch, &late)?);
            let on_time = filter_record_batch(&batch, &not(&late)?)?;
            if on_time.num_rows() > 0 {
                self.pending.push(on_time);
            }
        } else {
            self.pending.push(batch);
        }
        Ok(Vec::new())
    }

    fn on_watermark(&mut self, watermark_ns: i64) -> Result<Vec<RecordBatch>> {
        if self.watermark.is_some_and(|w| w >= watermark_ns) {
            return Ok(Vec::new());
        }
        self.watermark = Some(watermark_ns);
        self.release(watermark_ns)
    }

    fn late_rows(&self) -> u64 {
        self.late_rows
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late)
    }

    fn explain(&self) -> String {
        let partition: Vec<String> = self.partition.iter().map(|e| e.to_string()).collect();
        let aggregates: Vec<&str> = self.aggregates.iter().map(|a| a.name()).collect();
        format!(
            "OverAggregate: partition_by=[{}] order_by={} {} aggregates=[{}] emit=on watermark",
            partition.join(", "),
            self.input.field(self.time).name(),
            self.frame,
            aggregates.join(", ")
        )
    }

    fn state_rows(&self) -> usize {
        let pending: usize = self.pending.iter().map(RecordBatch::num_rows).sum();
        // A bounded frame keeps earlier rows; an unbounded one, its running aggregates (a row).
        let history: usize = self
            .partitions
            .values()
            .map(|h| {
                h.rows
                    .as_ref()
                    .map_or(usize::from(!h.running.is_empty()), RecordBatch::num_rows)
            })
            .sum();
        pending + history
    }

    fn state_bytes(&self) -> usize {
        let pending: usize = self.pending.iter().map(batch_bytes).sum();
        let history: usize = self
            .partitions
            .iter()
            .map(|(k, h)| {
                k.len()
                    + 64
                    + h.rows.as_ref().map_or(0, batch_bytes)
                    + h.running.iter().map(|a| a.size()).sum::<usize>()
            })
            .sum();
        pending + history
    }

    fn snapshot(&mut self) -> Result<OperatorState> {
        let mut state = OperatorState {
            values: vec![self.watermark, Some(self.late_rows as i64)],
            batches: Vec::new(),
        };
        let pending = concat_batches(&self.input, &self.pending)?;
        state.batches.push(pending);
        // Per partition: its key (row bytes, as binary), then its history rows or running
        // aggregates' states.
        let mut keys = Vec::new();
        let mut histories = Vec::new();
        let mut running: Vec<Vec<Vec<ScalarValue>>> = vec![Vec::new(); self.aggregates.len()];
        let mut running_keys = Vec::new();
        for (key, history) in &mut self.partitions {
            if let Some(rows) = &history.rows {
                keys.extend(std::iter::repeat_n(key.as_ref(), rows.num_rows()));
                histories.push(rows.clone());
            }
            if !history.running.is_empty() {
                running_keys.push(key.as_ref());
                for (a, acc) in history.running.iter_mut().enumerate() {
                    running[a].push(acc.state()?);
                }
            }
        }
        let rows = concat_batches(&self.history_schema, &histories)?;
        let mut columns = vec![
            Arc::new(datafusion::arrow::array::BinaryArray::from_iter_values(
                keys,
            )) as ArrayRef,
        ];
        columns.extend(rows.columns().iter().cloned());
        state.batches.push(super::state_batch(columns)?);
        let mut columns = vec![
            Arc::new(datafusion::arrow::array::BinaryArray::from_iter_values(
                running_keys,
            )) as ArrayRef,
        ];
        for (a, states) in running.into_iter().enumerate() {
            let width = self.aggregates[a].state_fields()?.len();
            for f in 0..width {
                let column: Vec<ScalarValue> = states.iter().map(|s| s[f].clone()).collect();
                columns.push(if column.is_empty() {
                    datafusion::arrow::array::new_empty_array(
                        self.aggregates[a].state_fields()?[f].data_type(),
                    )
                } else {
                    ScalarValue::iter_to_array(column)?
                });
            }
        }
        state.batches.push(super::state_batch(columns)?);
        Ok(state)
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        let corrupt = || Error::Corrupt("OVER aggregate state is malformed".into());
        self.watermark = state.value(0)?;
        self.late_rows = state.value(1)?.unwrap_or(0) as u64;
        let [pending, histories, running] =
            <[RecordBatch; 3]>::try_from(state.batches).map_err(|_| corrupt())?;
        let columns = pending
            .columns()
            .iter()
            .zip(self.input.fields())
            .map(|(c, f)| Ok(cast(c, f.data_type())?))
            .collect::<Result<Vec<_>>>()?;
        self.pending = vec![RecordBatch::try_new(Arc::clone(&self.input), columns)?];
        self.partitions.clear();
        let keys = histories
            .column(0)
            .as_binary_opt::<i32>()
            .ok_or_else(corrupt)?;
        let rows = RecordBatch::try_new(
            Arc::clone(&self.history_schema),
            histories.columns()[1..].to_vec(),
        )?;
        let mut start = 0;
        while start < rows.num_rows() {
            let mut end = start + 1;
            while end < rows.num_rows() && keys.value(end) == keys.value(start) {
                end += 1;
            }
            self.partitions
                .entry(keys.value(start).into())
                .or_default()
                .rows = Some(rows.slice(start, end - start));
            start = end;
        }
        let keys = running
            .column(0)
            .as_binary_opt::<i32>()
            .ok_or_else(corrupt)?;
        for i in 0..running.num_rows() {
            let history = self.partitions.entry(keys.value(i).into()).or_default();
            let mut column = 1;
            for agg in &self.aggregates {
                let width = agg.state_fields()?.len();
                let states: Vec<ArrayRef> = running
                    .columns()
                    .get(column..column + width)
                    .ok_or_else(corrupt)?
                    .iter()
                    .map(|c| c.slice(i, 1))
                    .collect();
                column += width;
                let mut acc = agg.create_accumulator()?;
                acc.merge_batch(&states)?;
                history.running.push(acc);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::TimestampSecondArray;
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::min_max::max_udaf;
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::Column;
    use proptest::prelude::*;

    use super::*;

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Second, None), false),
        ]))
    }

    /// SUM(v), COUNT(v) and MAX(v) OVER (PARTITION BY k ORDER BY ts `frame`).
    fn operator(frame: OverFrame) -> OverAggregateOperator {
        let schema = input();
        let v = || Arc::new(Column::new("v", 1)) as Arc<dyn PhysicalExpr>;
        let agg = |udaf, name: &str| {
            Arc::new(
                AggregateExprBuilder::new(udaf, vec![v()])
                    .schema(Arc::clone(&schema))
                    .alias(name)
                    .build()
                    .expect("aggregate"),
            )
        };
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("s", DataType::Int64, true));
        fields.push(Field::new("n", DataType::Int64, false));
        fields.push(Field::new("m", DataType::Int64, true));
        OverAggregateOperator::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Column::new("k", 0))],
            2,
            frame,
            vec![
                agg(sum_udaf(), "s"),
                agg(count_udaf(), "n"),
                agg(max_udaf(), "m"),
            ],
            Arc::new(Schema::new(fields)),
        )
        .expect("operator")
    }

    type Row = (i64, Option<i64>, i64);

    fn batch(rows: &[Row]) -> RecordBatch {
        RecordBatch::try_new(
            input(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(TimestampSecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
            ],
        )
        .expect("batch")
    }

    /// (k, v, ts, sum, count, max) of every output row.
    fn rows(out: &[RecordBatch]) -> Vec<(i64, Option<i64>, i64, Option<i64>, i64, Option<i64>)> {
        let mut all = Vec::new();
        for b in out {
            let int = |c: usize| b.column(c).as_primitive::<Int64Type>().clone();
            let (k, v, s, n, m) = (int(0), int(1), int(3), int(4), int(5));
            let ts = b
                .column(2)
                .as_primitive::<datafusion::arrow::datatypes::TimestampSecondType>();
            let opt = |a: &Int64Array, i: usize| a.is_valid(i).then(|| a.value(i));
            for i in 0..b.num_rows() {
                all.push((
                    k.value(i),
                    opt(&v, i),
                    ts.value(i),
                    opt(&s, i),
                    n.value(i),
                    opt(&m, i),
                ));
            }
        }
        all
    }

    /// The same, computed row by row from every row in (k, ts, arrival) order.
    fn expected(
        all: &[Row],
        frame: OverFrame,
    ) -> Vec<(i64, Option<i64>, i64, Option<i64>, i64, Option<i64>)> {
        let mut sorted: Vec<(usize, Row)> = all.iter().copied().enumerate().collect();
        sorted.sort_by_key(|(i, r)| (r.0, r.2, *i));
        let mut out = Vec::new();
        for (p, (_, r)) in sorted.iter().enumerate() {
            let frame_rows: Vec<&Row> = sorted
                .iter()
                .enumerate()
                .filter(|(q, (_, o))| {
                    o.0 == r.0
                        && match frame {
                            OverFrame::Rows(Some(n)) => *q <= p && p - q <= n as usize,
                            OverFrame::Rows(None) => *q <= p,
                            OverFrame::Range(Some(d)) => {
                                o.2 <= r.2 && o.2 * 1_000_000_000 >= r.2 * 1_000_000_000 - d
                            }
                            OverFrame::Range(None) => o.2 <= r.2,
                        }
                })
                .map(|(_, (_, o))| o)
                .collect();
            let values: Vec<i64> = frame_rows.iter().filter_map(|o| o.1).collect();
            out.push((
                r.0,
                r.1,
                r.2,
                (!values.is_empty()).then(|| values.iter().sum()),
                values.len() as i64,
                values.iter().max().copied(),
            ));
        }
        out
    }

    fn frames() -> impl Strategy<Value = OverFrame> {
        prop_oneof![
            (0u64..4).prop_map(|n| OverFrame::Rows(Some(n))),
            Just(OverFrame::Rows(None)),
            (0i64..5).prop_map(|s| OverFrame::Range(Some(s * 1_000_000_000))),
            Just(OverFrame::Range(None)),
        ]
    }

    proptest! {
        /// Rows in batches, each followed by a watermark below every later row (so none is
        /// late), with the operator snapshotted and restored at times: every row comes out once
        /// with the aggregates of its frame.
        #[test]
        fn each_row_has_the_aggregates_of_its_frame(
            steps in prop::collection::vec(
                prop::collection::vec((0i64..3, prop::option::of(-20i64..20), 0i64..6), 1..6),
                1..8,
            ),
            frame in frames(),
            restart in any::<u8>(),
        ) {
            let mut op = operator(frame);
            let mut all = Vec::new();
            let mut out = Vec::new();
            let mut base = 0;
            for (s, step) in steps.iter().enumerate() {
                let rows: Vec<Row> = step.iter().map(|&(k, v, dt)| (k, v, base + dt)).collect();
                all.extend(rows.iter().copied());
                out.extend(op.process_batch(batch(&rows)).unwrap());
                // The next batch's rows are at or after the new watermark.
                base += 3;
                out.extend(op.on_watermark(base * 1_000_000_000).unwrap());
                if restart & (1 << s) != 0 {
                    let state = op.snapshot().unwrap();
                    op = operator(frame);
                    op.restore(state).unwrap();
                }
            }
            out.extend(op.on_watermark(i64::MAX).unwrap());
            prop_assert_eq!(op.late_rows(), 0);
            let mut got = rows(&out);
            let mut want = expected(&all, frame);
            // ROWS frames among rows of one time follow arrival; compare as sets of rows.
            got.sort();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn rows_behind_the_watermark_are_late() {
        let mut op = operator(OverFrame::Rows(Some(1)));
        op.on_watermark(10_000_000_000).unwrap();
        op.process_batch(batch(&[(1, Some(1), 5), (1, Some(2), 12)]))
            .unwrap();
        assert_eq!(op.late_rows(), 1);
        assert_eq!(op.take_late()[0].num_rows(), 1);
        let out = op.on_watermark(20_000_000_000).unwrap();
        assert_eq!(rows(&out), vec![(1, Some(2), 12, Some(2), 1, Some(2))]);
    }
}
