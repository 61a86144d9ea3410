//! Grouped aggregation per event-time window, emitted once per window when the watermark passes
//! its end (EMIT ON WINDOW CLOSE).

pub(super) mod spill;

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::{cast, take, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use self::spill::WindowSpill;
use super::tumble::format_duration_ns;
use super::{Operator, TableSource, aggregate_inputs, batch_of, take_inputs};
use crate::checkpoint::OperatorState;
use crate::watermark::unit_nanos;
use crate::{Error, Result};

/// The input column that says which window a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowColumn {
    /// The column holds the window's start.
    Start(usize),
    /// The column holds the window's end.
    End(usize),
}

/// Which edge of its window a group column holds: the same value for every row of a window,
/// so it is not hashed with the group key but put back when the window's rows go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowEdge {
    /// The window's start.
    Start,
    /// The window's end.
    End,
}

/// When an aggregation publishes results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emit {
    /// Each window once, final, when the watermark passes its end (append-only output).
    #[default]
    OnWindowClose,
    /// After every input batch, the current result of every window the batch touched; each
    /// output row replaces the earlier row with the same group key (upsert output).
    OnUpdate,
}

/// One aggregate of a window aggregation, with its `FILTER (WHERE ...)` clause if any.
#[derive(Debug, Clone)]
pub struct AggregateSpec {
    /// The aggregate function and its argument expressions.
    pub expr: Arc<AggregateFunctionExpr>,
    /// Rows for which this is false or NULL do not feed the aggregate.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// The groups and accumulators of one open window (or of a HOP's pane).
pub(super) struct WindowState {
    pub(super) groups: Box<dyn GroupValues>,
    pub(super) accumulators: Vec<Box<dyn GroupsAccumulator>>,
}

/// Group keys and every accumulator's partial state columns, as [`WindowState::read`] gives.
pub(super) type Partials = (Vec<ArrayRef>, Vec<Vec<ArrayRef>>);

impl WindowState {
    /// No groups yet, keyed by columns of `keys`, with an accumulator per aggregate.
    pub(super) fn new(keys: &SchemaRef, aggregates: &[AggregateSpec]) -> Result<Self> {
        let accumulators = aggregates
            .iter()
            .map(|a| -> Result<Box<dyn GroupsAccumulator>> {
                if a.expr.groups_accumulator_supported() {
                    Ok(a.expr.create_groups_accumulator()?)
                } else {
                    let expr = Arc::clone(&a.expr);
                    Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                        expr.create_accumulator()
                    })))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            groups: new_group_values(Arc::clone(keys), &GroupOrdering::None)?,
            accumulators,
        })
    }

    /// The group keys and partial states, leaving the state as it was.
    ///
    /// DataFusion's group-by structures only hand out values by draining, so this drains and
    /// rebuilds: group keys are re-interned in order (so group ids stay the same: the `i`-th
    /// key is group `i`) and each partial state is merged into a fresh accumulator to keep.
    /// The cost is proportional to the groups.
    pub(super) fn read(
        &mut self,
        keys: &SchemaRef,
        aggregates: &[AggregateSpec],
    ) -> Result<Partials> {
        let mut fresh = Self::new(keys, aggregates)?;
        let emitted = self.groups.emit(EmitTo::All)?;
        let n = emitted.first().map_or(0, |k| k.len());
        let mut ids = Vec::with_capacity(n);
        fresh.groups.intern(&emitted, &mut ids)?;
        if ids.iter().enumerate().any(|(i, g)| *g != i) {
            return Err(Error::Internal(
                "re-interned group keys changed their ids".into(),
            ));
        }
        let mut partials = Vec::with_capacity(self.accumulators.len());
        for (acc, kept) in self.accumulators.iter_mut().zip(&mut fresh.accumulators) {
            let partial = acc.state(EmitTo::All)?;
            kept.merge_batch(&partial, &ids, n)?;
            partials.push(partial);
        }
        *self = fresh;
        Ok((emitted, partials))
    }

    /// Keys and partial states as one batch, for a checkpoint ([`WindowState::from_batch`]).
    pub(super) fn to_batch((keys, partials): &Partials) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = keys
            .iter()
            .chain(partials.iter().flatten())
            .cloned()
            .collect();
        super::state_batch(columns)
    }

    /// The state a checkpoint batch of [`WindowState::to_batch`] holds.
    pub(super) fn from_batch(
        batch: &RecordBatch,
        keys: &SchemaRef,
        aggregates: &[AggregateSpec],
    ) -> Result<Self> {
        let mut state = Self::new(keys, aggregates)?;
        state.merge(batch, keys, aggregates)?;
        Ok(state)
    }

    /// Merges into this state the groups and partial states of a batch of
    /// [`WindowState::to_batch`]: groups already here combine with theirs.
    pub(super) fn merge(
        &mut self,
        batch: &RecordBatch,
        keys: &SchemaRef,
        aggregates: &[AggregateSpec],
    ) -> Result<()> {
        let columns = batch.columns();
        let (key_columns, mut rest) = columns.split_at(keys.fields().len().min(columns.len()));
        let mut ids = Vec::with_capacity(batch.num_rows());
        self.groups.intern(key_columns, &mut ids)?;
        let n = self.groups.len();
        for (acc, spec) in self.accumulators.iter_mut().zip(aggregates) {
            let width = spec.expr.state_fields()?.len();
            if rest.len() < width {
                return Err(Error::Corrupt(
                    "aggregate state lacks accumulator columns".into(),
                ));
            }
            let (partial, tail) = rest.split_at(width);
            acc.merge_batch(partial, &ids, n)?;
            rest = tail;
        }
        Ok(())
    }
}

impl std::fmt::Debug for WindowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowState")
            .field("groups", &self.groups.len())
            .finish()
    }
}

/// Aggregates rows per (window, group key) with DataFusion's vectorised group-by machinery.
///
/// State is held per open window only; a window's state is freed as soon as it is emitted. Rows
/// whose window had already closed when they arrived are counted in [`Operator::late_rows`].
#[derive(Debug)]
pub struct WindowAggregateOperator {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    group_names: Vec<String>,
    /// The group columns that are hashed: all but the window's edges.
    group_schema: SchemaRef,
    /// Per group column, the window edge it holds, if it holds one.
    edges: Vec<Option<WindowEdge>>,
    /// Per group column, its type.
    group_types: Vec<DataType>,
    /// `None` for an aggregation over the whole stream (one window that never closes).
    window: Option<WindowColumn>,
    emit: Emit,
    size_ns: i64,
    unit_ns: i64,
    aggregates: Vec<AggregateSpec>,
    schema: SchemaRef,
    /// Open windows by end time (ns), so that closing is a range split.
    windows: BTreeMap<i64, WindowState>,
    watermark: Option<i64>,
    /// How long after its end a window still takes late events (and re-emits its result).
    lateness_ns: i64,
    late_rows: u64,
    late: Vec<RecordBatch>,
    group_ids: Vec<usize>,
    /// Per window updated by the batch being processed, the group ids it touched: only their
    /// rows are emitted again (the output is upserts by group key).
    touched: BTreeMap<i64, Vec<usize>>,
    /// Open windows beyond memory, in the query's state store (see [`Operator::attach_store`]).
    spill: Option<WindowSpill>,
}

impl WindowAggregateOperator {
    /// Keeps each window's state for `lateness_ns` after the watermark passes its end: events
    /// arriving in that time update the window and its result is emitted again, replacing the
    /// earlier one (so the output becomes upserts by group key).
    pub fn with_allowed_lateness(mut self, lateness_ns: i64) -> Self {
        self.lateness_ns = lateness_ns.max(0);
        self
    }

    /// Takes group columns `edges` (position, edge) as holding their window's start or end:
    /// they are not hashed with the group key, each row is checked to hold its window's edge
    /// (a row that does not fails the query rather than merging groups), and they are put back
    /// in the output. At least one group column stays hashed.
    pub fn with_window_edges(mut self, edges: &[(usize, WindowEdge)]) -> Result<Self> {
        if self.window.is_none() || edges.len() >= self.group_exprs.len() {
            return Ok(self);
        }
        for &(g, edge) in edges {
            let Some(slot) = self.edges.get_mut(g) else {
                return Err(Error::InvalidArgument(format!("no group column {g}")));
            };
            if !matches!(self.group_types[g], DataType::Timestamp(..)) {
                return Err(Error::InvalidArgument(format!(
                    "window edge {} must be a timestamp, not {}",
                    self.group_names[g], self.group_types[g]
                )));
            }
            *slot = Some(edge);
        }
        let hashed: Vec<Field> = self
            .group_schema
            .fields()
            .iter()
            .zip(&self.edges)
            .filter(|(_, e)| e.is_none())
            .map(|(f, _)| f.as_ref().clone())
            .collect();
        self.group_schema = Arc::new(Schema::new(hashed));
        // Made again over the hashed columns only.
        self.new_window()?;
        Ok(self)
    }

    /// The hashed group columns of a batch, after checking that each window-edge column holds
    /// its row's window edge (`ends`, in ns).
    fn hashed_groups(&self, groups: Vec<ArrayRef>, ends: &Int64Array) -> Result<Vec<ArrayRef>> {
        let mut hashed = Vec::with_capacity(groups.len());
        for ((column, edge), name) in groups.into_iter().zip(&self.edges).zip(&self.group_names) {
            let Some(edge) = edge else {
                hashed.push(column);
                continue;
            };
            let DataType::Timestamp(unit, _) = column.data_type() else {
                return Err(Error::Internal(format!(
                    "window edge {name} is not a timestamp"
                )));
            };
            let unit = unit_nanos(*unit);
            let raw = cast(&column, &DataType::Int64)?;
            let raw = raw.as_primitive::<Int64Type>();
            let offset = match edge {
                WindowEdge::Start => self.size_ns,
                WindowEdge::End => 0,
            };
            let end_of = |v: i64| v.saturating_mul(unit).saturating_add(offset);
            let holds = if ends.null_count() == 0 && raw.null_count() == 0 {
                raw.values()
                    .iter()
                    .zip(ends.values())
                    .all(|(&v, &end)| end_of(v) == end)
            } else {
                // Rows without a window (late, dropped) need not hold anything.
                (0..raw.len()).all(|i| {
                    ends.is_null(i) || (raw.is_valid(i) && end_of(raw.value(i)) == ends.value(i))
                })
            };
            if !holds {
                return Err(Error::Internal(format!(
                    "group column {name} does not hold its rows' window {}; this is a bug",
                    match edge {
                        WindowEdge::Start => "start",
                        WindowEdge::End => "end",
                    }
                )));
            }
        }
        Ok(hashed)
    }

    /// Every group column of `n` rows of the window ending at `end`: the hashed ones, with the
    /// window's edges put back.
    fn with_edges(&self, end: i64, hashed: Vec<ArrayRef>, n: usize) -> Result<Vec<ArrayRef>> {
        if self.edges.iter().all(Option::is_none) {
            return Ok(hashed);
        }
        let mut hashed = hashed.into_iter();
        let mut out = Vec::with_capacity(self.edges.len());
        for (edge, t) in self.edges.iter().zip(&self.group_types) {
            let Some(edge) = edge else {
                out.push(
                    hashed
                        .next()
                        .ok_or_else(|| Error::Internal("a window lacks group columns".into()))?,
                );
                continue;
            };
            let ns = match edge {
                WindowEdge::Start => end - self.size_ns,
                WindowEdge::End => end,
            };
            let DataType::Timestamp(unit, _) = t else {
                return Err(Error::Internal("a window edge is not a timestamp".into()));
            };
            let value = ns / unit_nanos(*unit);
            out.push(cast(&Int64Array::from_value(value, n), t)?);
        }
        Ok(out)
    }

    /// Whether output rows replace earlier rows with the same group key (rather than append).
    pub fn upserts(&self) -> bool {
        self.emit == Emit::OnUpdate || self.lateness_ns > 0
    }

    /// A window aggregation over batches of `input`.
    ///
    /// `group_exprs` must include the window column, if there is one; without one the
    /// aggregation covers the whole stream and must emit on update. The output has the group
    /// columns followed by one column per aggregate, with the types of `output`.
    pub fn try_new(
        input: &Schema,
        group_exprs: Vec<(Arc<dyn PhysicalExpr>, String)>,
        window: Option<WindowColumn>,
        size_ns: i64,
        aggregates: Vec<AggregateSpec>,
        output: SchemaRef,
        emit: Emit,
    ) -> Result<Self> {
        let unit_ns = match window {
            Some(WindowColumn::Start(index) | WindowColumn::End(index)) => {
                let field = input.fields().get(index).ok_or_else(|| {
                    Error::InvalidArgument(format!("no window column {index} in {input}"))
                })?;
                let DataType::Timestamp(unit, _) = field.data_type() else {
                    return Err(Error::InvalidArgument(format!(
                        "window column {} must be a timestamp, not {}",
                        field.name(),
                        field.data_type()
                    )));
                };
                unit_nanos(*unit)
            }
            None if emit == Emit::OnWindowClose => {
                return Err(Error::InvalidArgument(
                    "an aggregation without a window never closes, so it must emit on update"
                        .into(),
                ));
            }
            None => 1,
        };
        let group_fields = group_exprs
            .iter()
            .map(|(e, name)| Ok(Field::new(name, e.data_type(input)?, e.nullable(input)?)))
            .collect::<Result<Vec<_>>>()?;
        if output.fields().len() != group_exprs.len() + aggregates.len() {
            return Err(Error::Internal(format!(
                "window aggregate output has {} columns for {} groups and {} aggregates",
                output.fields().len(),
                group_exprs.len(),
                aggregates.len()
            )));
        }
        // Aggregates with an ORDER BY of their own (first_value(x ORDER BY ts), array_agg(x
        // ORDER BY y)) carry it in their accumulators, which order rows whatever order they
        // arrive in (and merge partial states in order), so they need nothing here.
        let group_types = group_fields.iter().map(|f| f.data_type().clone()).collect();
        let operator = Self {
            edges: vec![None; group_exprs.len()],
            group_types,
            group_names: group_exprs.iter().map(|(_, n)| n.clone()).collect(),
            group_exprs: group_exprs.into_iter().map(|(e, _)| e).collect(),
            group_schema: Arc::new(Schema::new(group_fields)),
            window,
            emit,
            size_ns,
            unit_ns,
            aggregates,
            schema: output,
            windows: BTreeMap::new(),
            watermark: None,
            lateness_ns: 0,
            late_rows: 0,
            late: Vec::new(),
            group_ids: Vec::new(),
            touched: BTreeMap::new(),
            spill: None,
        };
        // Accumulators are created per window as windows open; create one set now so that an
        // aggregate that cannot run on these types fails here, at CREATE time, not later.
        operator.new_window()?;
        for a in &operator.aggregates {
            if !a.expr.groups_accumulator_supported() {
                a.expr.create_accumulator()?;
            }
        }
        Ok(operator)
    }

    /// Number of windows currently open.
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    fn new_window(&self) -> Result<WindowState> {
        WindowState::new(&self.group_schema, &self.aggregates)
    }

    /// The current rows of the windows ending at `ends` that were just updated: all of them in
    /// [`Emit::OnUpdate`] mode, else those already emitted once (late corrections).
    fn emit_updates(&mut self, ends: impl IntoIterator<Item = i64>) -> Result<Vec<RecordBatch>> {
        let closed_up_to = self.watermark.unwrap_or(i64::MIN);
        let mut out = Vec::new();
        for end in ends {
            if self.emit == Emit::OnWindowClose && end > closed_up_to {
                continue;
            }
            let mut columns = self.current_values(end)?;
            // Group ids are the rows' positions: keep the rows of the groups just updated.
            let rows = columns.first().map_or(0, |c| c.len());
            if let Some(mut ids) = self.touched.remove(&end) {
                ids.sort_unstable();
                ids.dedup();
                if ids.len() < rows {
                    let ids = UInt32Array::from_iter_values(ids.into_iter().map(|i| i as u32));
                    columns = columns
                        .iter()
                        .map(|c| Ok(take(c, &ids, None)?))
                        .collect::<Result<Vec<_>>>()?;
                }
            }
            out.push(batch_of(&self.schema, columns)?);
        }
        self.touched.clear();
        Ok(out)
    }

    /// The group keys and intermediate aggregate states of one window, leaving its state as
    /// it was (see [`WindowState::read`]).
    fn window_state(&mut self, end: i64) -> Result<Partials> {
        self.windows
            .get_mut(&end)
            .ok_or_else(|| Error::Internal("updated window vanished".into()))?
            .read(&self.group_schema, &self.aggregates)
    }

    /// The group keys and current aggregate values of one window, leaving its state as it was.
    fn current_values(&mut self, end: i64) -> Result<Vec<ArrayRef>> {
        let (keys, partials) = self.window_state(end)?;
        let n = keys.first().map_or(0, |k| k.len());
        let mut columns = self.with_edges(end, keys, n)?;
        // Group `i` is the `i`-th key (see `WindowState::read`).
        let ids: Vec<usize> = (0..n).collect();
        for (eval, partial) in self.new_window()?.accumulators.iter_mut().zip(&partials) {
            eval.merge_batch(partial, &ids, n)?;
            columns.push(eval.evaluate(EmitTo::All)?);
        }
        Ok(columns)
    }

    /// Window end (ns) of every row; `i64::MAX` (never closes) without a window.
    fn window_ends(&self, batch: &RecordBatch) -> Result<Int64Array> {
        let (index, offset) = match self.window {
            Some(WindowColumn::Start(i)) => (i, self.size_ns),
            Some(WindowColumn::End(i)) => (i, 0),
            None => return Ok(Int64Array::from_value(i64::MAX, batch.num_rows())),
        };
        let raw = cast(batch.column(index), &DataType::Int64)?;
        let unit = self.unit_ns;
        Ok(raw
            .as_primitive::<Int64Type>()
            .unary::<_, Int64Type>(|v| v.saturating_mul(unit).saturating_add(offset)))
    }

    fn update_window(
        &mut self,
        end: i64,
        groups: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
    ) -> Result<()> {
        if !self.windows.contains_key(&end) {
            let state = self.new_window()?;
            self.windows.insert(end, state);
        }
        let state = self
            .windows
            .get_mut(&end)
            .ok_or_else(|| Error::Internal("window vanished during update".into()))?;
        state.groups.intern(groups, &mut self.group_ids)?;
        if let Some(spill) = &mut self.spill {
            spill.touched();
        }
        self.touched
            .entry(end)
            .or_default()
            .extend_from_slice(&self.group_ids);
        let total = state.groups.len();
        for ((acc, args), filter) in state.accumulators.iter_mut().zip(args).zip(filters) {
            acc.update_batch(args, &self.group_ids, filter.as_ref(), total)?;
        }
        Ok(())
    }
}

impl WindowAggregateOperator {
    /// The result rows of the window ending at `end`, from its final state.
    fn final_batch(&self, end: i64, mut state: WindowState) -> Result<RecordBatch> {
        let keys = state.groups.emit(EmitTo::All)?;
        let n = keys.first().map_or(0, |k| k.len());
        let mut columns = self.with_edges(end, keys, n)?;
        for acc in &mut state.accumulators {
            columns.push(acc.evaluate(EmitTo::All)?);
        }
        batch_of(&self.schema, columns)
    }

    /// Emits into `out` the window ending at `end` whose runs are in the state store, merged
    /// with `state` (what memory holds of it) one part of its groups at a time.
    fn close_spilled(
        &mut self,
        end: i64,
        state: Option<WindowState>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let memory = match state {
            Some(mut state) => {
                let keys = state.groups.emit(EmitTo::All)?;
                let partials = state
                    .accumulators
                    .iter_mut()
                    .map(|a| Ok(a.state(EmitTo::All)?))
                    .collect::<Result<Vec<_>>>()?;
                vec![(keys, partials)]
            }
            None => Vec::new(),
        };
        let Some(spill) = &self.spill else {
            return Err(Error::Internal(
                "closing a spilled window without a store".into(),
            ));
        };
        let memory: Vec<&Partials> = memory.iter().collect();
        spill.merge(
            &[end],
            &memory,
            &self.group_schema,
            &self.aggregates,
            |part| {
                out.push(self.final_batch(end, part)?);
                Ok(())
            },
        )?;
        if let Some(spill) = &mut self.spill {
            spill.forget(end);
        }
        Ok(())
    }

    /// Whether the open windows can go to a state store: only windows emitted once, at close
    /// (a window updated after it was emitted needs all its groups at hand), whose group keys
    /// have a row format to split them by.
    fn spillable(&self) -> bool {
        self.window.is_some()
            && self.emit == Emit::OnWindowClose
            && self.lateness_ns == 0
            && WindowSpill::supports(&self.group_schema)
    }
}

impl Operator for WindowAggregateOperator {
    fn name(&self) -> &'static str {
        "WindowAggregate"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let ends = self.window_ends(&batch)?;
        let groups = self
            .group_exprs
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(n))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let groups = self.hashed_groups(groups, &ends)?;
        let (args, filters) = aggregate_inputs(&self.aggregates, &batch)?;
        // Windows past their allowed lateness have no state any more: their rows are late.
        let closed_up_to = self
            .watermark
            .map_or(i64::MIN, |w| w.saturating_sub(self.lateness_ns));
        let values = ends.values();
        let first = values[0];
        let single =
            ends.null_count() == 0 && first > closed_up_to && values.iter().all(|&e| e == first);
        if single {
            self.update_window(first, &groups, &args, &filters)?;
            return self.emit_updates([first]);
        }
        // Rows of several windows (or late rows): route each window's rows separately.
        let mut buckets: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        let mut late = Vec::new();
        for (row, &end) in values.iter().enumerate() {
            if ends.is_null(row) || end <= closed_up_to {
                late.push(row as u32);
            } else {
                buckets.entry(end).or_default().push(row as u32);
            }
        }
        if !late.is_empty() {
            self.late_rows += late.len() as u64;
            tracing::debug!(
                late = late.len(),
                "events arrived after their window closed"
            );
            self.late
                .push(take_record_batch(&batch, &UInt32Array::from(late))?);
        }
        let touched: Vec<i64> = buckets.keys().copied().collect();
        for (end, rows) in buckets {
            let (g, a, f) = take_inputs(&groups, &args, &filters, &UInt32Array::from(rows))?;
            self.update_window(end, &g, &a, &f)?;
        }
        self.emit_updates(touched)
    }

    fn on_watermark(&mut self, watermark_ns: i64) -> Result<Vec<RecordBatch>> {
        let previous = self.watermark.unwrap_or(i64::MIN);
        let wm = previous.max(watermark_ns);
        self.watermark = Some(wm);
        let mut out = Vec::new();
        let expire = wm.saturating_sub(self.lateness_ns);
        if self.emit == Emit::OnWindowClose && self.lateness_ns > 0 {
            // Newly closed windows that stay open for late events: emit, keep the state.
            let retained: Vec<i64> = self
                .windows
                .range(previous.saturating_add(1)..=wm)
                .map(|(end, _)| *end)
                .filter(|end| *end > expire)
                .collect();
            for end in retained {
                let columns = self.current_values(end)?;
                out.push(batch_of(&self.schema, columns)?);
            }
        }
        // Windows past their allowed lateness are final: emit those not emitted yet, free all.
        let kept = self.windows.split_off(&expire.saturating_add(1));
        let mut expired = std::mem::replace(&mut self.windows, kept);
        if self.emit == Emit::OnWindowClose {
            let mut ends: Vec<i64> = expired.keys().copied().collect();
            if let Some(spill) = &self.spill {
                ends.extend(spill.ends_in(i64::MIN..=expire));
                ends.sort_unstable();
                ends.dedup();
            }
            for end in ends {
                let state = expired.remove(&end);
                if self.spill.as_ref().is_some_and(|s| s.has_runs(end)) {
                    self.close_spilled(end, state, &mut out)?;
                } else if let Some(state) = state
                    && end > previous
                {
                    out.push(self.final_batch(end, state)?);
                }
            }
        }
        // On update, a window's final values went out with its last update.
        Ok(out)
    }

    fn state_rows(&self) -> usize {
        self.windows.values().map(|w| w.groups.len()).sum()
    }

    fn state_bytes(&self) -> usize {
        self.windows
            .values()
            .map(|w| w.groups.size() + w.accumulators.iter().map(|a| a.size()).sum::<usize>())
            .sum()
    }

    fn late_rows(&self) -> u64 {
        self.late_rows
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late)
    }

    /// Values: watermark, late rows, then the end of each open window; one batch per window
    /// with its group keys followed by every accumulator's intermediate state columns.
    ///
    /// Once the state has passed an eighth of the memory limit (and from then on), each
    /// window's state in memory is staged in the state store instead (see [`WindowSpill`]).
    fn snapshot(&mut self) -> Result<OperatorState> {
        let bytes = self.state_bytes();
        if self.spill.as_mut().is_some_and(|s| s.track(bytes)) {
            let ends: Vec<i64> = self.windows.keys().copied().collect();
            for end in ends {
                let partials = self.window_state(end)?;
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
        let ends: Vec<i64> = self.windows.keys().copied().collect();
        for end in ends {
            let partials = self.window_state(end)?;
            state.values.push(Some(end));
            state.batches.push(WindowState::to_batch(&partials)?);
        }
        Ok(state)
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        self.watermark = state.value(0)?;
        self.late_rows = state.value(1)?.unwrap_or(0) as u64;
        if WindowSpill::is_stored(&state) {
            self.windows.clear();
            return match &mut self.spill {
                Some(spill) => spill.restore(&state),
                None => Err(Error::Corrupt(
                    "a window aggregate's checkpoint is in a state store it does not have".into(),
                )),
            };
        }
        if state.values.len() != state.batches.len() + 2 {
            return Err(Error::Corrupt(
                "window aggregate state has windows without rows".into(),
            ));
        }
        self.windows.clear();
        for (end, batch) in state.values[2..].iter().zip(state.batches) {
            let end = end.ok_or_else(|| Error::Corrupt("a window without an end".into()))?;
            let window = WindowState::from_batch(&batch, &self.group_schema, &self.aggregates)?;
            self.windows.insert(end, window);
        }
        Ok(())
    }

    fn attach_store(&mut self, tables: &mut dyn TableSource, name: &str) -> Result<bool> {
        if !self.spillable() {
            return Ok(false);
        }
        self.spill = WindowSpill::new(tables.table(name)?, &self.group_schema);
        Ok(self.spill.is_some())
    }

    fn evict(&mut self) {
        if self.spill.as_mut().is_some_and(WindowSpill::evict) {
            self.windows.clear();
        }
    }

    fn limit_memory(&mut self, bytes: usize) {
        if let Some(spill) = &mut self.spill {
            spill.limit_memory(bytes);
        }
    }

    fn explain(&self) -> String {
        let aggs: Vec<String> = self
            .aggregates
            .iter()
            .map(|a| a.expr.name().to_string())
            .collect();
        let emit = match self.emit {
            Emit::OnWindowClose => "on window close",
            Emit::OnUpdate => "on update",
        };
        let lateness = if self.lateness_ns > 0 {
            format!(" allowed_lateness={}", format_duration_ns(self.lateness_ns))
        } else {
            String::new()
        };
        let (hashed, edges): (Vec<_>, Vec<_>) = self
            .group_names
            .iter()
            .zip(&self.edges)
            .partition(|(_, e)| e.is_none());
        let names = |columns: Vec<(&String, &Option<WindowEdge>)>| {
            columns
                .into_iter()
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>()
        };
        let (hashed, edges) = (names(hashed), names(edges));
        let edges = if edges.is_empty() {
            String::new()
        } else {
            format!(" from_window=[{}]", edges.join(", "))
        };
        let spills = if self.spillable() {
            " state=spills to disk past a quarter of the memory limit"
        } else {
            ""
        };
        match self.window {
            Some(_) => format!(
                "WindowAggregate: state_key=[window, {}]{edges} aggregates=[{}] window_size={} emit={emit}{lateness}{spills}",
                hashed.join(", "),
                aggs.join(", "),
                format_duration_ns(self.size_ns)
            ),
            None => format!(
                "UpdatingAggregate: state_key=[{}] aggregates=[{}] emit={emit}",
                self.group_names.join(", "),
                aggs.join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, TimestampSecondArray};
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::{Column, lit};

    use super::*;

    /// Input: (window_start: Timestamp(s), key: Int64, value: Int64).
    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(
                "window_start",
                DataType::Timestamp(TimeUnit::Second, None),
                false,
            ),
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]))
    }

    pub(super) fn batch(rows: &[(i64, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            input(),
            vec![
                Arc::new(TimestampSecondArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
            ],
        )
        .expect("batch")
    }

    /// COUNT(*) and SUM(v) per (window_start, k) over 10-second windows.
    pub(super) fn operator(emit: Emit) -> WindowAggregateOperator {
        let schema = input();
        let count = AggregateExprBuilder::new(count_udaf(), vec![lit(1i64)])
            .schema(Arc::clone(&schema))
            .alias("n")
            .build()
            .expect("count");
        let sum = AggregateExprBuilder::new(sum_udaf(), vec![Arc::new(Column::new("v", 2))])
            .schema(Arc::clone(&schema))
            .alias("total")
            .build()
            .expect("sum");
        let output = Arc::new(Schema::new(vec![
            Field::new(
                "window_start",
                DataType::Timestamp(TimeUnit::Second, None),
                false,
            ),
            Field::new("k", DataType::Int64, false),
            Field::new("n", DataType::Int64, false),
            Field::new("total", DataType::Int64, true),
        ]));
        WindowAggregateOperator::try_new(
            &schema,
            vec![
                (
                    Arc::new(Column::new("window_start", 0)),
                    "window_start".into(),
                ),
                (Arc::new(Column::new("k", 1)), "k".into()),
            ],
            Some(WindowColumn::Start(0)),
            10_000_000_000,
            vec![
                AggregateSpec {
                    expr: Arc::new(count),
                    filter: None,
                },
                AggregateSpec {
                    expr: Arc::new(sum),
                    filter: None,
                },
            ],
            output,
            emit,
        )
        .expect("operator")
    }

    pub(super) fn rows(batches: &[RecordBatch]) -> Vec<(i64, i64, i64, i64)> {
        let mut out = Vec::new();
        for b in batches {
            let ws = cast(b.column(0), &DataType::Int64).expect("cast");
            let ws = ws.as_primitive::<Int64Type>();
            let k = b.column(1).as_primitive::<Int64Type>();
            let n = b.column(2).as_primitive::<Int64Type>();
            let t = b.column(3).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                out.push((ws.value(i), k.value(i), n.value(i), t.value(i)));
            }
        }
        out.sort_unstable();
        out
    }

    pub(super) const S: i64 = 1_000_000_000;

    #[test]
    fn a_window_edge_is_not_hashed_and_comes_back_in_the_output() {
        let mut plain = operator(Emit::OnWindowClose);
        let mut edged = operator(Emit::OnWindowClose)
            .with_window_edges(&[(0, WindowEdge::Start)])
            .expect("edges");
        assert!(
            edged
                .explain()
                .contains("state_key=[window, k] from_window=[window_start]")
        );
        let input = batch(&[(0, 1, 5), (0, 2, 7), (10, 1, 1), (0, 1, 3)]);
        for op in [&mut plain, &mut edged] {
            op.process_batch(input.clone()).expect("p");
        }
        // Through a checkpoint: the state holds the hashed columns only.
        let mut restored = operator(Emit::OnWindowClose)
            .with_window_edges(&[(0, WindowEdge::Start)])
            .expect("edges");
        restored
            .restore(edged.snapshot().expect("snapshot"))
            .expect("restore");
        let expected = rows(&plain.on_watermark(20 * S).expect("wm"));
        assert_eq!(expected, vec![(0, 1, 2, 8), (0, 2, 1, 7), (10, 1, 1, 1)]);
        assert_eq!(rows(&edged.on_watermark(20 * S).expect("wm")), expected);
        assert_eq!(rows(&restored.on_watermark(20 * S).expect("wm")), expected);
        // A column that does not hold the edge it is taken for fails the batch, not merges
        // groups: window_start taken for the window's end.
        let mut wrong = operator(Emit::OnWindowClose)
            .with_window_edges(&[(0, WindowEdge::End)])
            .expect("edges");
        let e = wrong
            .process_batch(input)
            .expect_err("a start is not an end");
        assert!(
            e.to_string().contains("does not hold its rows' window end"),
            "{e}"
        );
        // Every group column a window edge: nothing would be hashed, so all stay hashed.
        let all = operator(Emit::OnWindowClose)
            .with_window_edges(&[(0, WindowEdge::Start), (1, WindowEdge::End)])
            .expect("edges");
        assert!(
            all.explain()
                .contains("state_key=[window, window_start, k]")
        );
    }

    #[test]
    fn emits_each_window_once_when_the_watermark_passes_its_end() {
        let mut op = operator(Emit::OnWindowClose);
        assert!(
            op.process_batch(batch(&[(0, 1, 5), (0, 2, 7), (10, 1, 1)]))
                .expect("p")
                .is_empty()
        );
        assert!(op.process_batch(batch(&[(0, 1, 3)])).expect("p").is_empty());
        assert_eq!(op.open_windows(), 2);
        assert!(
            op.on_watermark(9 * S).expect("wm").is_empty(),
            "window [0,10) still open"
        );
        let out = op.on_watermark(10 * S).expect("wm");
        assert_eq!(rows(&out), vec![(0, 1, 2, 8), (0, 2, 1, 7)]);
        assert_eq!(op.open_windows(), 1, "the closed window's state is freed");
        assert!(
            op.on_watermark(10 * S).expect("wm").is_empty(),
            "never emitted twice"
        );
        // A row for the closed window is late: counted, not aggregated.
        assert!(
            op.process_batch(batch(&[(0, 1, 100), (10, 1, 2)]))
                .expect("p")
                .is_empty()
        );
        assert_eq!(op.late_rows(), 1);
        let out = op.on_watermark(25 * S).expect("wm");
        assert_eq!(rows(&out), vec![(10, 1, 2, 3)]);
        assert_eq!(op.open_windows(), 0);
    }

    #[test]
    fn on_update_emits_current_values_and_keeps_state() {
        let mut op = operator(Emit::OnUpdate);
        let out = op
            .process_batch(batch(&[(0, 1, 5), (0, 2, 7), (10, 1, 1)]))
            .expect("p");
        assert_eq!(rows(&out), vec![(0, 1, 1, 5), (0, 2, 1, 7), (10, 1, 1, 1)]);
        let out = op.process_batch(batch(&[(0, 1, 3)])).expect("p");
        assert_eq!(
            rows(&out),
            vec![(0, 1, 2, 8)],
            "the touched group only: the output is upserts by group"
        );
        let out = op.process_batch(batch(&[(0, 1, 1), (0, 3, 2)])).expect("p");
        assert_eq!(rows(&out), vec![(0, 1, 3, 9), (0, 3, 1, 2)]);
        assert!(
            op.on_watermark(10 * S).expect("wm").is_empty(),
            "final values already out"
        );
        assert_eq!(op.open_windows(), 1, "closed windows are freed");
    }

    #[test]
    fn allowed_lateness_reemits_corrected_windows_then_frees_them() {
        let mut op = operator(Emit::OnWindowClose).with_allowed_lateness(5 * S);
        assert!(op.upserts());
        assert!(op.process_batch(batch(&[(0, 1, 5)])).expect("p").is_empty());
        let out = op.on_watermark(10 * S).expect("wm");
        assert_eq!(
            rows(&out),
            vec![(0, 1, 1, 5)],
            "emitted when the watermark passes the end"
        );
        // Within the allowed lateness: the window is corrected and emitted again.
        let out = op.process_batch(batch(&[(0, 1, 2), (0, 2, 1)])).expect("p");
        assert_eq!(rows(&out), vec![(0, 1, 2, 7), (0, 2, 1, 1)]);
        assert_eq!(op.late_rows(), 0);
        assert!(
            op.on_watermark(14 * S).expect("wm").is_empty(),
            "nothing new to emit"
        );
        assert_eq!(op.open_windows(), 1);
        assert!(
            op.on_watermark(15 * S).expect("wm").is_empty(),
            "already emitted: just freed"
        );
        assert_eq!(op.open_windows(), 0);
        // Past the allowed lateness the event is late.
        assert!(
            op.process_batch(batch(&[(0, 1, 100)]))
                .expect("p")
                .is_empty()
        );
        assert_eq!(op.late_rows(), 1);
    }
}
