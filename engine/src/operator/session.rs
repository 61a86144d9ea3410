//! Session windows: per group key, events closer than a gap form one session, emitted when the
//! watermark passes the session's end (its last event plus the gap).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;

use super::tumble::{format_duration_ns, windowed_schema};
use super::{AggregateSpec, Operator, aggregate_inputs, batch_of};
use crate::checkpoint::OperatorState;
use crate::watermark::unit_nanos;
use crate::{Error, Result};

/// The SESSION window assigner: gives each event the session it would open alone,
/// `[ts, ts + gap)`; the session aggregation merges them per key.
#[derive(Debug)]
pub struct SessionOperator {
    time_index: usize,
    gap: i64,
    gap_ns: i64,
    time_type: DataType,
    schema: SchemaRef,
}

impl SessionOperator {
    /// Sessions with `gap_ns` of silence between them over timestamp column `time_index`.
    pub fn try_new(input: &Schema, time_index: usize, gap_ns: i64) -> Result<Self> {
        let (schema, time_type, unit) = windowed_schema(input, time_index)?;
        if gap_ns <= 0 || gap_ns % unit != 0 {
            return Err(Error::InvalidArgument(format!(
                "a session gap must be positive and a whole number of the time column's unit, \
                 not {gap_ns} ns"
            )));
        }
        Ok(Self {
            time_index,
            gap: gap_ns / unit,
            gap_ns,
            time_type,
            schema,
        })
    }
}

impl Operator for SessionOperator {
    fn name(&self) -> &'static str {
        "SessionWindow"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let ts = cast(batch.column(self.time_index), &DataType::Int64)?;
        let gap = self.gap;
        let ends = ts
            .as_primitive::<Int64Type>()
            .unary::<_, Int64Type>(|t| t + gap);
        let mut columns = batch.columns().to_vec();
        columns.push(cast(&ts, &self.time_type)?);
        columns.push(cast(&ends, &self.time_type)?);
        Ok(vec![RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?])
    }

    fn explain(&self) -> String {
        format!(
            "SessionWindow: time={} gap={}",
            self.schema.field(self.time_index).name(),
            format_duration_ns(self.gap_ns)
        )
    }
}

/// Where a group column of the output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionColumn {
    /// The i-th key expression.
    Key(usize),
    /// The session's start.
    Start,
    /// The session's end.
    End,
}

struct Session {
    end: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
}

/// Aggregates per (key, session) and emits each session once, when the watermark passes its end.
pub struct SessionAggregateOperator {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    layout: Vec<SessionColumn>,
    start_index: usize,
    gap_ns: i64,
    unit_ns: i64,
    time_type: DataType,
    aggregates: Vec<AggregateSpec>,
    converter: RowConverter,
    /// Open sessions per key, by start (ns); sessions of one key never overlap.
    sessions: HashMap<OwnedRow, BTreeMap<i64, Session>>,
    watermark: Option<i64>,
    late_rows: u64,
    late: Vec<RecordBatch>,
    schema: SchemaRef,
}

impl std::fmt::Debug for SessionAggregateOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAggregateOperator")
            .field("layout", &self.layout)
            .field("keys", &self.sessions.len())
            .finish()
    }
}

impl SessionAggregateOperator {
    /// A session aggregation over batches of `input`, whose column `start_index` holds each
    /// event's own session start (its event time, from [`SessionOperator`]).
    ///
    /// `layout` says, for each group column of `output`, whether it is a key expression or the
    /// session's start or end; the aggregates follow.
    pub fn try_new(
        input: &Schema,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        layout: Vec<SessionColumn>,
        start_index: usize,
        gap_ns: i64,
        aggregates: Vec<AggregateSpec>,
        output: SchemaRef,
    ) -> Result<Self> {
        let field = input
            .fields()
            .get(start_index)
            .ok_or_else(|| Error::Internal(format!("no session start column {start_index}")))?;
        let DataType::Timestamp(unit, _) = field.data_type() else {
            return Err(Error::Internal(
                "the session start is not a timestamp".into(),
            ));
        };
        if output.fields().len() != layout.len() + aggregates.len() {
            return Err(Error::Internal(
                "session aggregate output does not fit its layout".into(),
            ));
        }
        // Without a key (sessions over all rows) one constant key column stands in: the row
        // format needs a column to count rows by.
        let mut keys = keys;
        if keys.is_empty() {
            keys.push(Arc::new(
                datafusion::physical_expr::expressions::Literal::new(
                    datafusion::common::ScalarValue::Boolean(Some(true)),
                ),
            ));
        }
        let fields = keys
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(input)?)))
            .collect::<Result<Vec<_>>>()?;
        for a in &aggregates {
            a.expr.create_accumulator()?;
        }
        Ok(Self {
            keys,
            layout,
            start_index,
            gap_ns,
            unit_ns: unit_nanos(*unit),
            time_type: field.data_type().clone(),
            aggregates,
            converter: RowConverter::new(fields)?,
            sessions: HashMap::new(),
            watermark: None,
            late_rows: 0,
            late: Vec::new(),
            schema: output,
        })
    }

    /// Number of open sessions.
    pub fn open_sessions(&self) -> usize {
        self.sessions.values().map(BTreeMap::len).sum()
    }
}

/// Merges `from` into `into` through their intermediate states.
fn merge(into: &mut [Box<dyn Accumulator>], from: &mut [Box<dyn Accumulator>]) -> Result<()> {
    for (a, b) in into.iter_mut().zip(from.iter_mut()) {
        let state = b
            .state()?
            .into_iter()
            .map(|s| s.to_array())
            .collect::<datafusion::error::Result<Vec<ArrayRef>>>()?;
        a.merge_batch(&state)?;
    }
    Ok(())
}

impl Operator for SessionAggregateOperator {
    fn name(&self) -> &'static str {
        "SessionAggregate"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let starts = cast(batch.column(self.start_index), &DataType::Int64)?;
        let starts = starts.as_primitive::<Int64Type>();
        let key_columns = self
            .keys
            .iter()
            .map(|k| k.evaluate(&batch)?.into_array(n))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let rows = self.converter.convert_columns(&key_columns)?;
        let (args, filters) = aggregate_inputs(&self.aggregates, &batch)?;
        // Events in event-time order per batch, so a session grows forward where it can.
        let mut order: Vec<usize> = (0..n).filter(|&i| starts.is_valid(i)).collect();
        order.sort_by_key(|&i| starts.value(i));
        let wm = self.watermark.unwrap_or(i64::MIN);
        let mut late = Vec::new();
        for i in order {
            let ts = starts.value(i).saturating_mul(self.unit_ns);
            let end = ts.saturating_add(self.gap_ns);
            let key = rows.row(i).owned();
            let sessions = self.sessions.entry(key).or_default();
            let overlapping: Vec<i64> = sessions
                .range(..end)
                .rev()
                .take_while(|(_, s)| s.end > ts)
                .map(|(start, _)| *start)
                .collect();
            if overlapping.is_empty() && ts < wm {
                // Its session may already have been emitted: the event is late.
                late.push(i as u32);
                continue;
            }
            let (mut start, mut session_end, mut accumulators) = (ts, end, None);
            for s in overlapping {
                let Some(mut old) = sessions.remove(&s) else {
                    continue;
                };
                start = start.min(s);
                session_end = session_end.max(old.end);
                match accumulators.as_mut() {
                    None => accumulators = Some(old.accumulators),
                    Some(acc) => merge(acc, &mut old.accumulators)?,
                }
            }
            let mut accumulators = match accumulators {
                Some(a) => a,
                None => self
                    .aggregates
                    .iter()
                    .map(|a| Ok(a.expr.create_accumulator()?))
                    .collect::<Result<Vec<_>>>()?,
            };
            for ((acc, args), filter) in accumulators.iter_mut().zip(&args).zip(&filters) {
                if filter
                    .as_ref()
                    .is_some_and(|f| !f.is_valid(i) || !f.value(i))
                {
                    continue;
                }
                let one: Vec<ArrayRef> = args.iter().map(|a| a.slice(i, 1)).collect();
                acc.update_batch(&one)?;
            }
            sessions.insert(
                start,
                Session {
                    end: session_end,
                    accumulators,
                },
            );
        }
        if !late.is_empty() {
            self.late_rows += late.len() as u64;
            self.late
                .push(take_record_batch(&batch, &UInt32Array::from(late))?);
        }
        self.sessions.retain(|_, s| !s.is_empty());
        Ok(Vec::new())
    }

    fn on_watermark(&mut self, watermark_ns: i64) -> Result<Vec<RecordBatch>> {
        let wm = self.watermark.map_or(watermark_ns, |w| w.max(watermark_ns));
        self.watermark = Some(wm);
        let mut keys = Vec::new();
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.aggregates.len()];
        for (key, sessions) in &mut self.sessions {
            let closed: Vec<i64> = sessions
                .iter()
                .filter(|(_, s)| s.end <= wm)
                .map(|(start, _)| *start)
                .collect();
            for start in closed {
                let Some(mut s) = sessions.remove(&start) else {
                    continue;
                };
                keys.push(key.clone());
                starts.push(start / self.unit_ns);
                ends.push(s.end / self.unit_ns);
                for (v, acc) in values.iter_mut().zip(&mut s.accumulators) {
                    v.push(acc.evaluate()?);
                }
            }
        }
        self.sessions.retain(|_, s| !s.is_empty());
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let key_columns = self.converter.convert_rows(keys.iter().map(|k| k.row()))?;
        let starts: ArrayRef = cast(
            &datafusion::arrow::array::Int64Array::from(starts),
            &self.time_type,
        )?;
        let ends: ArrayRef = cast(
            &datafusion::arrow::array::Int64Array::from(ends),
            &self.time_type,
        )?;
        let mut columns: Vec<ArrayRef> = self
            .layout
            .iter()
            .map(|c| match c {
                SessionColumn::Key(i) => Arc::clone(&key_columns[*i]),
                SessionColumn::Start => Arc::clone(&starts),
                SessionColumn::End => Arc::clone(&ends),
            })
            .collect();
        for v in values {
            columns.push(ScalarValue::iter_to_array(v)?);
        }
        Ok(vec![batch_of(&self.schema, columns)?])
    }

    fn state_rows(&self) -> usize {
        self.sessions.values().map(BTreeMap::len).sum()
    }

    fn state_bytes(&self) -> usize {
        self.sessions
            .iter()
            .map(|(key, sessions)| {
                key.as_ref().len()
                    + sessions
                        .values()
                        .map(|s| 16 + s.accumulators.iter().map(|a| a.size()).sum::<usize>())
                        .sum::<usize>()
            })
            .sum()
    }

    fn late_rows(&self) -> u64 {
        self.late_rows
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late)
    }

    /// Values: watermark, late rows; one batch (when sessions are open) with the key columns,
    /// each session's start and end (ns) and every accumulator's intermediate state.
    fn snapshot(&mut self) -> Result<OperatorState> {
        let mut state = OperatorState {
            values: vec![self.watermark, Some(self.late_rows as i64)],
            batches: Vec::new(),
        };
        let mut keys = Vec::new();
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        let mut states: Vec<Vec<ScalarValue>> = Vec::new();
        for (key, sessions) in &mut self.sessions {
            for (start, session) in sessions.iter_mut() {
                keys.push(key.clone());
                starts.push(*start);
                ends.push(session.end);
                let mut column = 0;
                for (acc, spec) in session.accumulators.iter_mut().zip(&self.aggregates) {
                    // `state` may consume what it reports: rebuild the accumulator from it.
                    let values = acc.state()?;
                    let arrays = values
                        .iter()
                        .map(ScalarValue::to_array)
                        .collect::<datafusion::error::Result<Vec<_>>>()?;
                    let mut fresh = spec.expr.create_accumulator()?;
                    fresh.merge_batch(&arrays)?;
                    *acc = fresh;
                    for v in values {
                        if states.len() <= column {
                            states.push(Vec::new());
                        }
                        states[column].push(v);
                        column += 1;
                    }
                }
            }
        }
        if keys.is_empty() {
            return Ok(state);
        }
        let mut columns = self.converter.convert_rows(keys.iter().map(|k| k.row()))?;
        columns.push(Arc::new(Int64Array::from(starts)));
        columns.push(Arc::new(Int64Array::from(ends)));
        for s in states {
            columns.push(ScalarValue::iter_to_array(s)?);
        }
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
            .collect();
        state.batches.push(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?);
        Ok(state)
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        self.watermark = state.value(0)?;
        self.late_rows = state.value(1)?.unwrap_or(0) as u64;
        self.sessions.clear();
        let corrupt = || Error::Corrupt("session state does not fit the plan".into());
        for batch in state.batches {
            let k = self.keys.len();
            if batch.num_columns() < k + 2 {
                return Err(corrupt());
            }
            let rows = self.converter.convert_columns(&batch.columns()[..k])?;
            let starts = batch
                .column(k)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(corrupt)?;
            let ends = batch
                .column(k + 1)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(corrupt)?;
            for i in 0..batch.num_rows() {
                let mut rest = &batch.columns()[k + 2..];
                let mut accumulators = Vec::with_capacity(self.aggregates.len());
                for spec in &self.aggregates {
                    let width = spec.expr.state_fields()?.len();
                    if rest.len() < width {
                        return Err(corrupt());
                    }
                    let (partial, tail) = rest.split_at(width);
                    let one: Vec<ArrayRef> = partial.iter().map(|a| a.slice(i, 1)).collect();
                    let mut acc = spec.expr.create_accumulator()?;
                    acc.merge_batch(&one)?;
                    accumulators.push(acc);
                    rest = tail;
                }
                let key = if i < rows.num_rows() {
                    rows.row(i).owned()
                } else {
                    return Err(corrupt());
                };
                self.sessions.entry(key).or_default().insert(
                    starts.value(i),
                    Session {
                        end: ends.value(i),
                        accumulators,
                    },
                );
            }
        }
        Ok(())
    }

    fn explain(&self) -> String {
        let aggs: Vec<String> = self
            .aggregates
            .iter()
            .map(|a| a.expr.name().to_string())
            .collect();
        format!(
            "SessionAggregate: state_key=[{} key columns, session] aggregates=[{}] gap={} emit=on window close",
            self.keys.len(),
            aggs.join(", "),
            format_duration_ns(self.gap_ns)
        )
    }
}
