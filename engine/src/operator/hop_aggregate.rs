//! HOP window aggregation by panes: each event is aggregated once, into its pane (a tumbling
//! window of gcd(slide, size)); when the watermark passes a window's end, the window's result
//! merges the partial states of the size/pane panes it covers, as two-phase aggregation does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::logical_expr::EmitTo;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::scalar::ScalarValue;

use super::tumble::format_duration_ns;
use super::window_aggregate::spill::WindowSpill;
use super::window_aggregate::{AggregateSpec, Partials, WindowColumn, WindowState};
use super::{Operator, TableSource, aggregate_inputs, batch_of, take_inputs};
use crate::checkpoint::OperatorState;
use crate::watermark::unit_nanos;
use crate::{Error, Result};

/// What an output group column of a HOP aggregate holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopGroup {
    /// The `i`-th group key.
    Key(usize),
    /// The window's start.
    Start,
    /// The window's end.
    End,
}

/// The groups and accumulators of one pane.
struct Pane {
    state: WindowState,
    /// Its group keys and partial states, read since its last update.
    read: Option<Partials>,
}

/// HOP windows of `size` every `slide` aggregated by panes of gcd(slide, size), per group key:
/// each row is aggregated once, into the pane its time falls in (its input carries the pane as
/// TUMBLE of the pane's size would), and a window's result is the merge of its panes' partial
/// states when the watermark passes its end. A pane is freed when its last window closes. A row
/// whose windows have all closed is late; one whose windows have partly closed goes into the
/// open ones and is late for each closed one, as when each event is copied into its windows.
pub struct HopAggregateOperator {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    key_schema: SchemaRef,
    layout: Vec<HopGroup>,
    window: WindowColumn,
    /// The input's pane columns, for late events (shown with the window they missed).
    start_column: Option<usize>,
    end_column: Option<usize>,
    unit_ns: i64,
    time_type: DataType,
    pane_ns: i64,
    slide_ns: i64,
    size_ns: i64,
    aggregates: Vec<AggregateSpec>,
    schema: SchemaRef,
    /// Panes by end (ns).
    panes: BTreeMap<i64, Pane>,
    watermark: Option<i64>,
    late_rows: u64,
    late: Vec<RecordBatch>,
    /// Panes beyond memory, in the query's state store (see [`Operator::attach_store`]).
    spill: Option<WindowSpill>,
}

impl std::fmt::Debug for HopAggregateOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HopAggregateOperator")
            .field("panes", &self.panes.len())
            .finish()
    }
}

/// The greatest common divisor: the pane of a HOP of `slide` and `size`.
pub fn pane_ns(slide_ns: i64, size_ns: i64) -> i64 {
    let (mut a, mut b) = (slide_ns.abs(), size_ns.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl HopAggregateOperator {
    /// HOP windows of `size_ns` every `slide_ns` over batches of `input`, whose column `window`
    /// holds each row's pane (of [`pane_ns`]); grouped by `keys` (none: one group per window)
    /// and laid out per `layout`, then one column per aggregate, as `output` types them.
    /// `start_column` and `end_column` are the input's pane columns, where it has them.
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        input: &Schema,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        layout: Vec<HopGroup>,
        window: WindowColumn,
        (start_column, end_column): (Option<usize>, Option<usize>),
        (slide_ns, size_ns): (i64, i64),
        aggregates: Vec<AggregateSpec>,
        output: SchemaRef,
    ) -> Result<Self> {
        let (WindowColumn::Start(index) | WindowColumn::End(index)) = window;
        let time_type = input
            .fields()
            .get(index)
            .map(|f| f.data_type().clone())
            .ok_or_else(|| Error::InvalidArgument(format!("no window column {index}")))?;
        let DataType::Timestamp(unit, _) = time_type else {
            return Err(Error::InvalidArgument(format!(
                "a window column is a timestamp, not {time_type}"
            )));
        };
        if slide_ns <= 0 || size_ns <= 0 {
            return Err(Error::InvalidArgument(
                "HOP's slide and size are positive".into(),
            ));
        }
        if output.fields().len() != layout.len() + aggregates.len() {
            return Err(Error::Internal(
                "a HOP aggregate's output does not fit its layout".into(),
            ));
        }
        // Without a key, one constant key column stands in (the group values need one).
        let mut keys = keys;
        if keys.is_empty() {
            keys.push(Arc::new(Literal::new(ScalarValue::Boolean(Some(true)))));
        }
        let fields = keys
            .iter()
            .enumerate()
            .map(|(i, e)| Ok(Field::new(format!("k{i}"), e.data_type(input)?, true)))
            .collect::<Result<Vec<_>>>()?;
        let operator = Self {
            keys,
            key_schema: Arc::new(Schema::new(fields)),
            layout,
            window,
            start_column,
            end_column,
            unit_ns: unit_nanos(unit),
            time_type,
            pane_ns: pane_ns(slide_ns, size_ns),
            slide_ns,
            size_ns,
            aggregates,
            schema: output,
            panes: BTreeMap::new(),
            watermark: None,
            late_rows: 0,
            late: Vec::new(),
            spill: None,
        };
        operator.new_pane()?;
        Ok(operator)
    }

    fn new_pane(&self) -> Result<Pane> {
        Ok(Pane {
            state: WindowState::new(&self.key_schema, &self.aggregates)?,
            read: None,
        })
    }

    /// The first and last end of the windows that cover the pane ending at `end`: windows
    /// start at multiples of the slide, so these are the starts from the first multiple at or
    /// after `end - size` to the last at or before the pane's start, plus the size.
    fn windows_of(&self, end: i64) -> (i64, i64) {
        let slide = self.slide_ns;
        let low = end.saturating_sub(self.size_ns);
        let first = low.saturating_add((slide - low.rem_euclid(slide)) % slide);
        let start = end - self.pane_ns;
        let last = start - start.rem_euclid(slide);
        (
            first.saturating_add(self.size_ns),
            last.saturating_add(self.size_ns),
        )
    }

    /// Pane end (ns) of every row, from the input's pane column.
    fn pane_ends(&self, batch: &RecordBatch) -> Result<Int64Array> {
        let (index, offset) = match self.window {
            WindowColumn::Start(i) => (i, self.pane_ns),
            WindowColumn::End(i) => (i, 0),
        };
        let raw = cast(batch.column(index), &DataType::Int64)?;
        let unit = self.unit_ns;
        Ok(raw
            .as_primitive::<Int64Type>()
            .unary::<_, Int64Type>(|v| v.saturating_mul(unit).saturating_add(offset)))
    }

    /// Adds rows to the pane ending at `end`.
    fn update_pane(
        &mut self,
        end: i64,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
    ) -> Result<()> {
        if !self.panes.contains_key(&end) {
            let pane = self.new_pane()?;
            self.panes.insert(end, pane);
        }
        let pane = self
            .panes
            .get_mut(&end)
            .ok_or_else(|| Error::Internal("a pane vanished".into()))?;
        let mut ids = Vec::new();
        pane.state.groups.intern(keys, &mut ids)?;
        let total = pane.state.groups.len();
        for ((acc, args), filter) in pane.state.accumulators.iter_mut().zip(args).zip(filters) {
            acc.update_batch(args, &ids, filter.as_ref(), total)?;
        }
        pane.read = None;
        if let Some(spill) = &mut self.spill {
            spill.touched();
        }
        Ok(())
    }

    /// The pane's keys and partial states, leaving it as it was (see [`WindowState::read`]):
    /// read once per update, its windows share the copy kept.
    fn partials(&mut self, end: i64) -> Result<&Partials> {
        let pane = self
            .panes
            .get_mut(&end)
            .ok_or_else(|| Error::Internal("a pane vanished".into()))?;
        if pane.read.is_none() {
            pane.read = Some(pane.state.read(&self.key_schema, &self.aggregates)?);
        }
        pane.read
            .as_ref()
            .ok_or_else(|| Error::Internal("a pane was not read".into()))
    }

    /// The result of the window ending at `end`, into `out`: its panes' partial states
    /// merged; where panes have runs in the state store, one part of the groups at a time.
    fn window_result(&mut self, end: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        let range = end - self.size_ns + 1..=end;
        let panes: Vec<i64> = self.panes.range(range.clone()).map(|(e, _)| *e).collect();
        if let Some(spill) = &self.spill {
            let stored = spill.ends_in(range);
            if !stored.is_empty() {
                let memory = panes
                    .iter()
                    .map(|&p| self.partials(p).cloned())
                    .collect::<Result<Vec<_>>>()?;
                let memory: Vec<&Partials> = memory.iter().collect();
                let Some(spill) = &self.spill else {
                    return Err(Error::Internal("a HOP aggregate lost its store".into()));
                };
                return spill.merge(&stored, &memory, &self.key_schema, &self.aggregates, |w| {
                    out.extend(self.result_batch(end, w)?);
                    Ok(())
                });
            }
        }
        let mut window = WindowState::new(&self.key_schema, &self.aggregates)?;
        let mut ids = Vec::new();
        for pane in panes {
            let (keys, partials) = self.partials(pane)?;
            window.groups.intern(keys, &mut ids)?;
            let total = window.groups.len();
            for (acc, partial) in window.accumulators.iter_mut().zip(partials) {
                acc.merge_batch(partial, &ids, total)?;
            }
        }
        out.extend(self.result_batch(end, window)?);
        Ok(())
    }

    /// The result rows of the window ending at `end` from its merged state, if it has groups.
    fn result_batch(&self, end: i64, mut window: WindowState) -> Result<Option<RecordBatch>> {
        let n = window.groups.len();
        if n == 0 {
            return Ok(None);
        }
        let keys = window.groups.emit(EmitTo::All)?;
        let edge = |ns: i64| {
            cast(
                &Int64Array::from_value(ns / self.unit_ns, n),
                &self.time_type,
            )
        };
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for g in &self.layout {
            columns.push(match g {
                HopGroup::Key(i) => Arc::clone(
                    keys.get(*i)
                        .ok_or_else(|| Error::Internal("a HOP group key is missing".into()))?,
                ),
                HopGroup::Start => edge(end - self.size_ns)?,
                HopGroup::End => edge(end)?,
            });
        }
        for acc in &mut window.accumulators {
            columns.push(acc.evaluate(EmitTo::All)?);
        }
        Ok(Some(batch_of(&self.schema, columns)?))
    }

    /// Records rows of `batch` as late, `windows` (row, window end) each: a copy of the row
    /// per window it missed, showing that window.
    fn record_late(&mut self, batch: &RecordBatch, windows: &[(u32, Option<i64>)]) -> Result<()> {
        self.late_rows += windows.len() as u64;
        let rows = UInt32Array::from_iter_values(windows.iter().map(|(r, _)| *r));
        let mut late = take_record_batch(batch, &rows)?;
        let unit = self.unit_ns;
        let at = |shift: i64| -> Result<ArrayRef> {
            let ns: Int64Array = windows
                .iter()
                .map(|(_, e)| e.map(|e| (e - shift) / unit))
                .collect();
            Ok(cast(&ns, &self.time_type)?)
        };
        let mut columns = late.columns().to_vec();
        if let Some(i) = self.start_column {
            columns[i] = at(self.size_ns)?;
        }
        if let Some(i) = self.end_column {
            columns[i] = at(0)?;
        }
        late = RecordBatch::try_new(late.schema(), columns)?;
        self.late.push(late);
        Ok(())
    }
}

impl Operator for HopAggregateOperator {
    fn name(&self) -> &'static str {
        "HopAggregate"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let ends = self.pane_ends(&batch)?;
        let keys = self
            .keys
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(n))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let (args, filters) = aggregate_inputs(&self.aggregates, &batch)?;
        let closed = self.watermark.unwrap_or(i64::MIN);
        let values = ends.values();
        let first = values[0];
        if ends.null_count() == 0 && first > closed && values.iter().all(|&e| e == first) {
            self.update_pane(first, &keys, &args, &filters)?;
            return Ok(Vec::new());
        }
        // Rows of several panes, or of windows already closed: each pane's rows apart.
        let mut buckets: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        let mut late: Vec<(u32, Option<i64>)> = Vec::new();
        for (row, &end) in values.iter().enumerate() {
            if ends.is_null(row) {
                late.push((row as u32, None));
                continue;
            }
            let (first_window, last_window) = self.windows_of(end);
            let mut window = first_window;
            while window <= last_window && window <= closed {
                late.push((row as u32, Some(window)));
                window += self.slide_ns;
            }
            if window <= last_window {
                buckets.entry(end).or_default().push(row as u32);
            }
        }
        if !late.is_empty() {
            self.record_late(&batch, &late)?;
        }
        for (end, rows) in buckets {
            let (k, a, f) = take_inputs(&keys, &args, &filters, &UInt32Array::from(rows))?;
            self.update_pane(end, &k, &a, &f)?;
        }
        Ok(Vec::new())
    }

    fn on_watermark(&mut self, watermark_ns: i64) -> Result<Vec<RecordBatch>> {
        let previous = self.watermark.unwrap_or(i64::MIN);
        let wm = previous.max(watermark_ns);
        self.watermark = Some(wm);
        // The windows that close now: those of the panes kept, ending past the old watermark.
        let mut panes: BTreeSet<i64> = self.panes.keys().copied().collect();
        if let Some(spill) = &self.spill {
            panes.extend(spill.ends_in(i64::MIN..=i64::MAX));
        }
        let mut closing = BTreeSet::new();
        for &end in &panes {
            let (first, last) = self.windows_of(end);
            // The first of these ends past the old watermark (ends are `first` plus slides).
            let mut window = first;
            if previous >= first {
                let behind = previous - first;
                window = first.saturating_add((behind / self.slide_ns + 1) * self.slide_ns);
            }
            while window <= last.min(wm) {
                closing.insert(window);
                window += self.slide_ns;
            }
        }
        let mut out = Vec::new();
        for end in closing {
            self.window_result(end, &mut out)?;
        }
        // A pane whose last window has closed is not needed any more.
        let done: Vec<i64> = panes
            .into_iter()
            .filter(|&end| self.windows_of(end).1 <= wm)
            .collect();
        for end in done {
            self.panes.remove(&end);
            if let Some(spill) = &mut self.spill {
                spill.forget(end);
            }
        }
        Ok(out)
    }

    fn late_rows(&self) -> u64 {
        self.late_rows
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late)
    }

    fn state_rows(&self) -> usize {
        self.panes.values().map(|p| p.state.groups.len()).sum()
    }

    fn state_bytes(&self) -> usize {
        self.panes
            .values()
            .map(|p| {
                let read = p.read.as_ref().map_or(0, |(k, s)| {
                    k.iter()
                        .chain(s.iter().flatten())
                        .map(|a| a.get_array_memory_size())
                        .sum()
                });
                p.state.groups.size()
                    + p.state.accumulators.iter().map(|a| a.size()).sum::<usize>()
                    + read
            })
            .sum()
    }

    /// Values: watermark, late rows, then the end of each pane; one batch per pane with its
    /// group keys followed by every accumulator's partial state columns.
    ///
    /// Once the state has passed an eighth of the memory limit (and from then on), each
    /// pane's state in memory is staged in the state store instead (see [`WindowSpill`]).
    fn snapshot(&mut self) -> Result<OperatorState> {
        let bytes = self.state_bytes();
        if self.spill.as_mut().is_some_and(|s| s.track(bytes)) {
            let ends: Vec<i64> = self.panes.keys().copied().collect();
            for end in ends {
                let partials = self.partials(end)?.clone();
                if let Some(spill) = &mut self.spill {
                    spill.stage(end, &partials)?;
                }
            }
            if let Some(spill) = &mut self.spill {
                return spill.checkpoint(self.watermark, self.late_rows);
            }
        }
        let mut state = OperatorState {
            values: vec![self.watermark, Some(self.late_rows as i64)],
            batches: Vec::new(),
        };
        let ends: Vec<i64> = self.panes.keys().copied().collect();
        for end in ends {
            let batch = WindowState::to_batch(self.partials(end)?)?;
            state.values.push(Some(end));
            state.batches.push(batch);
        }
        Ok(state)
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        self.watermark = state.value(0)?;
        self.late_rows = state.value(1)?.unwrap_or(0) as u64;
        if WindowSpill::is_stored(&state) {
            self.panes.clear();
            return match &mut self.spill {
                Some(spill) => spill.restore(&state),
                None => Err(Error::Corrupt(
                    "a HOP aggregate's checkpoint is in a state store it does not have".into(),
                )),
            };
        }
        if state.values.len() != state.batches.len() + 2 {
            return Err(Error::Corrupt(
                "HOP pane state has panes without rows".into(),
            ));
        }
        self.panes.clear();
        for (end, batch) in state.values[2..].iter().zip(state.batches) {
            let end = end.ok_or_else(|| Error::Corrupt("a pane without an end".into()))?;
            let pane = Pane {
                state: WindowState::from_batch(&batch, &self.key_schema, &self.aggregates)?,
                read: None,
            };
            self.panes.insert(end, pane);
        }
        Ok(())
    }

    fn attach_store(&mut self, tables: &mut dyn TableSource, name: &str) -> Result<bool> {
        if !WindowSpill::supports(&self.key_schema) {
            return Ok(false);
        }
        self.spill = WindowSpill::new(tables.table(name)?, &self.key_schema);
        Ok(self.spill.is_some())
    }

    fn evict(&mut self) {
        if self.spill.as_mut().is_some_and(WindowSpill::evict) {
            self.panes.clear();
        }
    }

    fn limit_memory(&mut self, bytes: usize) {
        if let Some(spill) = &mut self.spill {
            spill.limit_memory(bytes);
        }
    }

    fn explain(&self) -> String {
        let aggs: Vec<&str> = self.aggregates.iter().map(|a| a.expr.name()).collect();
        let keys: Vec<String> = self
            .layout
            .iter()
            .filter_map(|g| match g {
                HopGroup::Key(i) => self.keys.get(*i).map(|k| k.to_string()),
                _ => None,
            })
            .collect();
        let keys: Vec<String> = std::iter::once("pane".to_string()).chain(keys).collect();
        format!(
            "HopAggregate: by panes of {} (each event aggregated once; a window of {} every {} \
             merges {} panes) state_key=[{}] aggregates=[{}] emit=on window close{}",
            format_duration_ns(self.pane_ns),
            format_duration_ns(self.size_ns),
            format_duration_ns(self.slide_ns),
            self.size_ns / self.pane_ns,
            keys.join(", "),
            aggs.join(", "),
            if WindowSpill::supports(&self.key_schema) {
                " state=spills to disk past a quarter of the memory limit"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::TimestampMillisecondArray;
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::{Column, lit};
    use proptest::prelude::*;

    use super::*;
    use crate::operator::{HopOperator, TumbleOperator, WindowAggregateOperator, WindowEdge};

    const MS: i64 = 1_000_000;

    /// (k, v, ts in ms)
    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]))
    }

    fn batch(rows: &[(i64, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            input(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
            ],
        )
        .expect("batch")
    }

    fn aggregates(windowed: &SchemaRef) -> Vec<AggregateSpec> {
        let count = AggregateExprBuilder::new(count_udaf(), vec![lit(1i64)])
            .schema(Arc::clone(windowed))
            .alias("n")
            .build()
            .expect("count");
        let sum = AggregateExprBuilder::new(sum_udaf(), vec![Arc::new(Column::new("v", 1))])
            .schema(Arc::clone(windowed))
            .alias("s")
            .build()
            .expect("sum");
        vec![
            AggregateSpec {
                expr: Arc::new(count),
                filter: None,
            },
            AggregateSpec {
                expr: Arc::new(sum),
                filter: None,
            },
        ]
    }

    /// k, window_start, count, sum.
    fn output(windowed: &SchemaRef) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            windowed.field(3).clone(),
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Int64, true),
        ]))
    }

    /// Copies per window, then a window aggregate: the reference.
    fn copies(slide: i64, size: i64) -> (HopOperator, WindowAggregateOperator) {
        let hop = HopOperator::try_new(&input(), 2, slide * MS, size * MS).expect("hop");
        let windowed = hop.schema();
        let groups = vec![
            (
                Arc::new(Column::new("k", 0)) as Arc<dyn PhysicalExpr>,
                "k".to_string(),
            ),
            (
                Arc::new(Column::new("window_start", 3)) as _,
                "window_start".to_string(),
            ),
        ];
        let agg = WindowAggregateOperator::try_new(
            &windowed,
            groups,
            Some(WindowColumn::Start(3)),
            size * MS,
            aggregates(&windowed),
            output(&windowed),
            super::super::Emit::OnWindowClose,
        )
        .expect("aggregate")
        .with_window_edges(&[(1, WindowEdge::Start)])
        .expect("edges");
        (hop, agg)
    }

    /// Panes, then the HOP aggregate.
    fn panes(slide: i64, size: i64) -> (TumbleOperator, HopAggregateOperator) {
        let pane = pane_ns(slide * MS, size * MS);
        let tumble = TumbleOperator::try_new(&input(), 2, pane).expect("panes");
        let windowed = tumble.schema();
        let agg = HopAggregateOperator::try_new(
            &windowed,
            vec![Arc::new(Column::new("k", 0))],
            vec![HopGroup::Key(0), HopGroup::Start],
            WindowColumn::Start(3),
            (Some(3), Some(4)),
            (slide * MS, size * MS),
            aggregates(&windowed),
            output(&windowed),
        )
        .expect("hop aggregate");
        (tumble, agg)
    }

    /// (k, window_start ms, count, sum) of `out`, counted.
    fn rows(out: &[RecordBatch], into: &mut BTreeMap<(i64, i64, i64, i64), usize>) {
        for b in out {
            let int = |i: usize| {
                cast(b.column(i), &DataType::Int64)
                    .expect("int")
                    .as_primitive::<Int64Type>()
                    .clone()
            };
            let (k, w, n, s) = (int(0), int(1), int(2), int(3));
            for i in 0..b.num_rows() {
                *into
                    .entry((k.value(i), w.value(i), n.value(i), s.value(i)))
                    .or_default() += 1;
            }
        }
    }

    /// The window of each late event (start ms), counted.
    fn late(batches: Vec<RecordBatch>, into: &mut BTreeMap<(i64, i64, i64), usize>) {
        for b in batches {
            let int = |i: usize| {
                cast(b.column(i), &DataType::Int64)
                    .expect("int")
                    .as_primitive::<Int64Type>()
                    .clone()
            };
            let (k, ts, start) = (int(0), int(2), int(3));
            for i in 0..b.num_rows() {
                *into
                    .entry((k.value(i), ts.value(i), start.value(i)))
                    .or_default() += 1;
            }
        }
    }

    /// HOP windows per (k, window start), counted, and late rows, of one step.
    type Emitted = (
        BTreeMap<(i64, i64, i64, i64), usize>,
        BTreeMap<(i64, i64, i64), usize>,
    );

    /// `events`, then the watermark, through the pane operator `pane`.
    fn step(
        pane: &mut HopAggregateOperator,
        (slide, size): (i64, i64),
        (events, watermark): &(Vec<(i64, i64, i64)>, i64),
    ) -> Emitted {
        let (mut tumble, _) = panes(slide, size);
        let mut out = (BTreeMap::new(), BTreeMap::new());
        for p in tumble.process_batch(batch(events)).expect("tumble") {
            rows(&pane.process_batch(p).expect("panes"), &mut out.0);
        }
        rows(
            &pane.on_watermark(watermark * MS).expect("panes"),
            &mut out.0,
        );
        late(pane.take_late(), &mut out.1);
        out
    }

    proptest! {
        /// Panes whose state goes to the state store (checkpoints committed at once or a step
        /// later, spills, `kill -9` and replay; see `spilled_equals_memory`) give what the same
        /// panes in memory give, step by step.
        #[test]
        fn panes_spilled_to_the_store_and_merged_change_nothing(
            (slide, size) in prop_oneof![Just((2i64, 10i64)), Just((3, 10)), Just((5, 5)), Just((1, 3))],
            steps in prop::collection::vec(
                (prop::collection::vec((0i64..30, 0i64..50, 0i64..20), 0..12), 0i64..4, 0u8..6),
                1..24,
            ),
        ) {
            let mut watermark = 0;
            let mut given: Vec<_> = steps
                .into_iter()
                .map(|(events, advance, action)| {
                    let events = events.into_iter().map(|(k, v, t)| (k, v, watermark + t - 2)).collect();
                    watermark += advance;
                    (vec![(events, watermark)], action)
                })
                .collect();
            given.push((vec![(Vec::new(), watermark + 100)], 0));
            crate::operator::window_aggregate::spill::tests::spilled_equals_memory(
                panes(slide, size).1,
                |store| {
                    let mut op = panes(slide, size).1;
                    assert!(op.attach_store(&mut store.clone(), "operator-1").unwrap());
                    op.limit_memory(0);
                    op
                },
                &given,
                |op, input| step(op, (slide, size), input),
                &["operator-1"],
            )?;
        }

        /// Panes give what copying each event into each of its windows gives: the same windows,
        /// the same late events (one per window missed), batch by batch and watermark by
        /// watermark, also after a checkpoint and restore.
        #[test]
        fn panes_equal_copies(
            (slide, size) in prop_oneof![
                Just((2i64, 10i64)), Just((3, 10)), Just((5, 5)), Just((4, 6)), Just((1, 3))
            ],
            steps in prop::collection::vec(
                (prop::collection::vec((0i64..3, 0i64..50, 0i64..60), 0..8), 0i64..60),
                1..10,
            ),
            restore_at in 0usize..10,
        ) {
            let (mut hop, mut copy) = copies(slide, size);
            let (mut tumble, mut pane) = panes(slide, size);
            let (mut want, mut got) = (BTreeMap::new(), BTreeMap::new());
            let (mut want_late, mut got_late) = (BTreeMap::new(), BTreeMap::new());
            for (i, (events, watermark)) in steps.into_iter().enumerate() {
                if i == restore_at {
                    let state = pane.snapshot().expect("snapshot");
                    pane = panes(slide, size).1;
                    pane.restore(state).expect("restore");
                }
                let b = batch(&events);
                for w in hop.process_batch(b.clone()).expect("hop") {
                    rows(&copy.process_batch(w).expect("copy"), &mut want);
                }
                for p in tumble.process_batch(b).expect("tumble") {
                    rows(&pane.process_batch(p).expect("panes"), &mut got);
                }
                rows(&copy.on_watermark(watermark * MS).expect("copy"), &mut want);
                rows(&pane.on_watermark(watermark * MS).expect("panes"), &mut got);
                late(copy.take_late(), &mut want_late);
                late(pane.take_late(), &mut got_late);
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(&got_late, &want_late);
                prop_assert_eq!(pane.late_rows(), copy.late_rows());
            }
        }
    }
}
