//! Streaming operators: synchronous, deterministic transformations of Arrow batches.
//!
//! The runtime owns all I/O and drives operators through [`Operator::process_batch`] and
//! [`Operator::on_watermark`]; tests drive them directly with literal batches.

mod filter;
mod group_aggregate;
mod hop;
mod hop_aggregate;
mod lookup_join;
mod over_aggregate;
mod projection;
mod retract_join;
mod retract_over;
mod retract_top_n;
mod session;
mod static_join;
mod stream_join;
mod temporal_join;
mod top_n;
mod tumble;
mod union;
mod upsert_changelog;
mod window_aggregate;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::RowConverter;

pub use filter::FilterOperator;
pub use group_aggregate::{GroupAggregateOperator, group_aggregate_refusal};
pub use hop::HopOperator;
pub use hop_aggregate::{HopAggregateOperator, HopGroup, pane_ns};
pub use lookup_join::LookupJoinOperator;
pub use over_aggregate::{OverAggregateOperator, OverFrame};
pub use projection::ProjectionOperator;
pub use retract_join::RetractJoinOperator;
pub use retract_over::{ChangingFrame, FrameBound, RetractOverOperator};
pub use retract_top_n::RetractTopNOperator;
pub use session::{SessionAggregateOperator, SessionColumn, SessionOperator};
pub use static_join::StaticJoinOperator;
pub use stream_join::{JoinInput, StreamJoinOperator};
pub use temporal_join::{TemporalInput, TemporalJoinOperator};
pub use top_n::{RankKind, TopNExpiry, TopNOperator, TopNOrder};
pub use tumble::TumbleOperator;
pub use union::UnionOperator;
pub use upsert_changelog::{INSERTED, UpsertChangelogOperator};
pub use window_aggregate::{
    AggregateSpec, Emit, WindowAggregateOperator, WindowColumn, WindowEdge,
};

use crate::checkpoint::OperatorState;
use crate::{Error, Result};

/// A step of a continuous query.
pub trait Operator: Send + std::fmt::Debug {
    /// A short name for plans and logs.
    fn name(&self) -> &'static str;

    /// The schema of the batches this operator emits.
    fn schema(&self) -> SchemaRef;

    /// Consumes one input batch and returns the batches it produces right away.
    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>>;

    /// Tells the operator that no event older than `watermark_ns` (nanoseconds since the epoch)
    /// is still to come; returns what that completes (closed windows, for example).
    fn on_watermark(&mut self, watermark_ns: i64) -> Result<Vec<RecordBatch>> {
        let _ = watermark_ns;
        Ok(Vec::new())
    }

    /// The rows the operator produces before any input: an aggregate without GROUP BY has
    /// one row even over no rows (a COUNT of 0). Called once, when a query starts from the
    /// beginning of its sources.
    fn start(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }

    /// Events that arrived after the watermark had closed their window, so far.
    fn late_rows(&self) -> u64 {
        0
    }

    /// Hands over the late input rows seen since the last call (rows of this operator's input).
    fn take_late(&mut self) -> Vec<RecordBatch> {
        Vec::new()
    }

    /// One line describing the operator, for EXPLAIN.
    fn explain(&self) -> String {
        self.name().to_string()
    }

    /// Bytes of memory the operator's state holds (groups, accumulators, stored rows), for the
    /// query's memory budget. Stateless operators keep the default (none).
    fn state_bytes(&self) -> usize {
        0
    }

    /// Rows the operator's state holds (groups, stored rows, open sessions), for
    /// `weir_operators`; like [`Operator::state_bytes`], every stateful operator says.
    fn state_rows(&self) -> usize {
        0
    }

    /// The operator's state for a checkpoint, taken between batches; the operator goes on as
    /// if this had not been called. Stateless operators keep the default (nothing).
    fn snapshot(&mut self) -> Result<OperatorState> {
        Ok(OperatorState::default())
    }

    /// Replaces the state of a freshly made operator with one from [`Operator::snapshot`] of
    /// the same plan.
    fn restore(&mut self, state: OperatorState) -> Result<()> {
        expect_empty(self.name(), &state)
    }

    /// Offers the operator a table of the query's on-disk state store, named `name`, for
    /// state beyond memory; returns whether it takes it. One that does stages in the table
    /// only what changed since its last snapshot, and may later be told to [`Operator::evict`].
    /// Called before [`Operator::restore`]. Operators that keep all state in memory keep the
    /// default (no).
    fn attach_store(&mut self, tables: &mut dyn TableSource, name: &str) -> Result<bool> {
        let _ = (tables, name);
        Ok(false)
    }

    /// Drops from memory the state that the last committed checkpoint stored, to be read
    /// back from the store when needed. Called only right after such a checkpoint.
    fn evict(&mut self) {}

    /// The query's memory limit, for operators that keep their checkpoints whole while their
    /// state is small and move to the state store past a share of it. Others keep the default.
    fn limit_memory(&mut self, bytes: usize) {
        let _ = bytes;
    }
}

/// Where operators get their [`crate::state_store::StateTable`]s: the query's store, opened
/// on first use.
pub trait TableSource {
    /// The table `name`.
    fn table(&mut self, name: &str) -> Result<crate::state_store::StateTable>;
}

/// The [`Operator::restore`] of a stateless operator: only an empty state fits.
pub(crate) fn expect_empty(name: &str, state: &OperatorState) -> Result<()> {
    if state.is_empty() {
        Ok(())
    } else {
        Err(Error::Corrupt(format!(
            "a checkpoint holds state for stateless operator {name}"
        )))
    }
}

/// Which input of a two-input operator a batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first (left) input.
    Left,
    /// The second (right) input.
    Right,
}

impl Side {
    /// 0 for the left input, 1 for the right: where a two-input operator keeps its state.
    pub fn index(self) -> usize {
        match self {
            Self::Left => 0,
            Self::Right => 1,
        }
    }
}

/// A step of a continuous query with two inputs (a join); driven like [`Operator`].
pub trait BinaryOperator: Send + std::fmt::Debug {
    /// The schema of the batches this operator emits.
    fn schema(&self) -> SchemaRef;

    /// Consumes one batch of input `side` and returns what it produces right away.
    fn process_batch(&mut self, side: Side, batch: RecordBatch) -> Result<Vec<RecordBatch>>;

    /// Tells the operator that both inputs have delivered everything up to `watermark_ns`: each
    /// input's rows still to come lie at or after the watermark in its time column.
    fn on_watermark(&mut self, watermark_ns: i64) -> Result<Vec<RecordBatch>>;

    /// Input rows that arrived behind the watermark, so far.
    fn late_rows(&self) -> u64;

    /// Hands over the late input rows seen since the last call.
    fn take_late(&mut self) -> Vec<RecordBatch>;

    /// One line describing the operator, for EXPLAIN.
    fn explain(&self) -> String;

    /// Bytes of memory the operator's state holds (see [`Operator::state_bytes`]).
    fn state_bytes(&self) -> usize;

    /// Rows the operator's state holds (see [`Operator::state_rows`]).
    fn state_rows(&self) -> usize;

    /// The query's memory limit, which no single batch of output may exceed either (a join's
    /// output can be far larger than its input); unlimited until called.
    fn limit_memory(&mut self, bytes: usize);

    /// The operator's state for a checkpoint (see [`Operator::snapshot`]).
    fn snapshot(&mut self) -> Result<OperatorState>;

    /// Replaces the state of a freshly made operator (see [`Operator::restore`]).
    fn restore(&mut self, state: OperatorState) -> Result<()>;

    /// Offers the operator tables of the query's state store named from `name` (see
    /// [`Operator::attach_store`]); returns whether it takes them.
    fn attach_store(&mut self, tables: &mut dyn TableSource, name: &str) -> Result<bool> {
        let _ = (tables, name);
        Ok(false)
    }

    /// Drops from memory what the last committed checkpoint stored (see
    /// [`Operator::evict`]).
    fn evict(&mut self) {}
}

/// Rows `idx` of a batch's group columns, aggregate arguments and `FILTER` masks (as
/// [`aggregate_inputs`] gives them): one window's or pane's share of the batch.
pub(crate) fn take_inputs(
    groups: &[ArrayRef],
    args: &[Vec<ArrayRef>],
    filters: &[Option<BooleanArray>],
    idx: &UInt32Array,
) -> Result<(Vec<ArrayRef>, Vec<Vec<ArrayRef>>, Vec<Option<BooleanArray>>)> {
    let pick = |cols: &[ArrayRef]| -> Result<Vec<ArrayRef>> {
        cols.iter().map(|c| Ok(take(c, idx, None)?)).collect()
    };
    let groups = pick(groups)?;
    let args = args.iter().map(|a| pick(a)).collect::<Result<Vec<_>>>()?;
    let filters = filters
        .iter()
        .map(|f| -> Result<Option<BooleanArray>> {
            Ok(match f {
                Some(f) => Some(take(f, idx, None)?.as_boolean().clone()),
                None => None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((groups, args, filters))
}

/// A changelog operator's kept rows (row format, each with how many times it holds) as a
/// checkpoint of `values`'s columns: each row as many times as it holds.
pub(crate) fn kept_rows_state<'a>(
    converter: &RowConverter,
    values: &SchemaRef,
    kept: impl Iterator<Item = (&'a [u8], u64)>,
) -> Result<OperatorState> {
    let parser = converter.parser();
    let rows: Vec<_> = kept
        .flat_map(|(row, count)| std::iter::repeat_n(parser.parse(row), count as usize))
        .collect();
    if rows.is_empty() {
        return Ok(OperatorState::default());
    }
    let columns = converter.convert_rows(rows)?;
    Ok(OperatorState {
        values: Vec::new(),
        batches: vec![RecordBatch::try_new(Arc::clone(values), columns)?],
    })
}

/// Rows of `values`'s columns as a changelog of inserts: how a restore of
/// [`kept_rows_state`] feeds them in again.
pub(crate) fn as_inserts(values: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(BooleanArray::from(vec![true; batch.num_rows()])));
    let mut fields: Vec<_> = values.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(INSERTED, DataType::Boolean, false)));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Evaluates every aggregate's arguments and `FILTER` mask over `batch`.
pub(crate) fn aggregate_inputs(
    aggregates: &[AggregateSpec],
    batch: &RecordBatch,
) -> Result<(Vec<Vec<ArrayRef>>, Vec<Option<BooleanArray>>)> {
    let n = batch.num_rows();
    let mut args = Vec::with_capacity(aggregates.len());
    let mut filters = Vec::with_capacity(aggregates.len());
    for a in aggregates {
        // The arguments, then the aggregate's own ORDER BY columns (first_value(x ORDER BY ts)
        // compares them), as DataFusion's aggregation feeds its accumulators.
        let all = a.expr.all_expressions();
        args.push(
            all.args
                .iter()
                .chain(&all.order_by_exprs)
                .map(|e| e.evaluate(batch)?.into_array(n))
                .collect::<datafusion::error::Result<Vec<_>>>()?,
        );
        filters.push(match &a.filter {
            Some(f) => Some(f.evaluate(batch)?.into_array(n)?.as_boolean().clone()),
            None => None,
        });
    }
    Ok((args, filters))
}

/// A batch of operator state: `columns` under placeholder names (`c0`, `c1`, ...), any number
/// of rows (also none, and for no columns).
pub(crate) fn state_batch(columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::record_batch::RecordBatchOptions;
    let fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    let options =
        RecordBatchOptions::new().with_row_count(Some(columns.first().map_or(0, |c| c.len())));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &options,
    )?)
}

/// A join's key columns over `batch`, each cast to the type both inputs compare in.
pub(crate) fn join_keys(
    keys: &[Arc<dyn datafusion::physical_expr::PhysicalExpr>],
    types: &[datafusion::arrow::datatypes::DataType],
    batch: &RecordBatch,
) -> Result<Vec<ArrayRef>> {
    let n = batch.num_rows();
    keys.iter()
        .zip(types)
        .map(|(k, t)| {
            let a = k.evaluate(batch)?.into_array(n)?;
            Ok(if a.data_type() == t { a } else { cast(&a, t)? })
        })
        .collect()
}

/// A batch of `schema` from `columns`, casting those whose type differs (accumulators may
/// produce a related type, e.g. a different timestamp unit).
pub(crate) fn batch_of(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                Ok(cast(&c, f.data_type())?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The lines of `out` as a table, sorted: a batch's changes as a multiset, for tests that
/// compare two operators' output batch by batch.
#[cfg(test)]
pub(crate) fn sorted_lines(out: &[RecordBatch]) -> Vec<String> {
    let mut lines: Vec<String> = datafusion::arrow::util::pretty::pretty_format_batches(out)
        .expect("format")
        .to_string()
        .lines()
        .filter(|l| !l.starts_with('+'))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}
