//! A continuous query's operators as a tree: pipelines over sources, joined by two-input operators.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::checkpoint::OperatorState;
use crate::operator::{BinaryOperator, Side};
use crate::pipeline::Pipeline;
use crate::stats::OperatorStats;
use crate::{Error, Result};

/// Feeds what the inputs of a join produced into the join, and what it joins through `pipeline`.
fn join_inputs(
    join: &mut dyn BinaryOperator,
    stats: &OperatorStats,
    pipeline: &mut Pipeline,
    from_left: Vec<RecordBatch>,
    from_right: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for (side, batches) in [(Side::Left, from_left), (Side::Right, from_right)] {
        for b in batches {
            let since = crate::stats::start();
            let rows = b.num_rows();
            let joined = join.process_batch(side, b)?;
            stats.record(rows, joined.iter().map(RecordBatch::num_rows).sum(), since);
            for j in joined {
                out.extend(pipeline.process_batch(j)?);
            }
        }
    }
    Ok(out)
}

/// Where an operator of a query sits, with its counters.
#[derive(Debug, Clone)]
pub struct OperatorPlace {
    /// What the operator's pipeline reads: `source N` (the query's source N) or `join`.
    pub input: String,
    /// The index (in [`Dataflow::stats`]) of the operator its output goes to; `None` for the
    /// query's top operator, whose output is the result.
    pub parent: Option<usize>,
    /// Its counters.
    pub stats: Arc<OperatorStats>,
}

/// One node of a query's operator tree; the root's output is the query's result.
#[derive(Debug)]
pub enum Dataflow {
    /// Rows of source number `source` (an index into the query's sources), through `pipeline`.
    Source {
        /// Which of the query's sources feeds this pipeline.
        source: usize,
        /// The operators applied to the source's rows.
        pipeline: Pipeline,
    },
    /// The outputs of two subtrees combined by `join`, then `pipeline`.
    Join {
        /// The first input.
        left: Box<Dataflow>,
        /// The second input.
        right: Box<Dataflow>,
        /// The two-input operator.
        join: Box<dyn BinaryOperator>,
        /// The operators applied to the join's output.
        pipeline: Pipeline,
        /// The watermark last passed to `join`.
        watermark: Option<i64>,
        /// The join's counters.
        stats: Arc<OperatorStats>,
    },
    /// One subtree feeding both inputs of a join (a subplan the query uses twice, as Nexmark
    /// q5's two sides or a view joined with itself): computed once, its rows go through `left`
    /// to the join's first input and through `right` to its second.
    Fork {
        /// The subtree computed once.
        input: Box<Dataflow>,
        /// The operators between it and the join's first input.
        left: Pipeline,
        /// The operators between it and the join's second input.
        right: Pipeline,
        /// The two-input operator.
        join: Box<dyn BinaryOperator>,
        /// The operators applied to the join's output.
        pipeline: Pipeline,
        /// The watermark last passed to `join`.
        watermark: Option<i64>,
        /// The join's counters.
        stats: Arc<OperatorStats>,
    },
}

/// Adds `sub` to `lines` under `name`, indented.
fn indent(lines: &mut Vec<String>, name: &str, sub: Vec<String>) {
    for (i, l) in sub.into_iter().enumerate() {
        lines.push(if i == 0 {
            format!("  {name}: {l}")
        } else {
            format!("    {l}")
        });
    }
}

/// Restores a join and the watermark it was last given from the next of `parts`.
fn restore_join(
    join: &mut dyn BinaryOperator,
    watermark: &mut Option<i64>,
    parts: &mut dyn Iterator<Item = OperatorState>,
) -> Result<()> {
    let mut state = parts.next().ok_or_else(|| {
        Error::Corrupt("checkpoint has fewer operator states than the plan".into())
    })?;
    *watermark = state
        .values
        .pop()
        .ok_or_else(|| Error::Corrupt("checkpoint lacks a join's watermark".into()))?;
    join.restore(state)
}

/// `batches` through `pipeline`, one after another.
fn through(pipeline: &mut Pipeline, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for b in batches {
        out.extend(pipeline.process_batch(b.clone())?);
    }
    Ok(out)
}

impl Dataflow {
    /// A single pipeline over source 0.
    pub fn single(pipeline: Pipeline) -> Self {
        Self::Source {
            source: 0,
            pipeline,
        }
    }

    /// `join` over `left` and `right`, followed by `pipeline` (over the join's output).
    pub fn join(
        left: Dataflow,
        right: Dataflow,
        join: Box<dyn BinaryOperator>,
        pipeline: Pipeline,
    ) -> Self {
        let stats = Arc::new(OperatorStats::new("Join", join.explain()));
        Self::Join {
            left: Box::new(left),
            right: Box::new(right),
            join,
            pipeline,
            watermark: None,
            stats,
        }
    }

    /// `join` over `input`'s rows twice: through `left` as its first input and through `right`
    /// as its second; then `pipeline` over the join's output.
    pub fn fork(
        input: Dataflow,
        left: Pipeline,
        right: Pipeline,
        join: Box<dyn BinaryOperator>,
        pipeline: Pipeline,
    ) -> Self {
        let stats = Arc::new(OperatorStats::new("Join", join.explain()));
        Self::Fork {
            input: Box::new(input),
            left,
            right,
            join,
            pipeline,
            watermark: None,
            stats,
        }
    }

    /// The schema of the rows this node emits.
    pub fn schema(&self) -> SchemaRef {
        self.pipeline().schema()
    }

    /// The pipeline at the top of this node.
    pub fn pipeline(&self) -> &Pipeline {
        match self {
            Self::Source { pipeline, .. }
            | Self::Join { pipeline, .. }
            | Self::Fork { pipeline, .. } => pipeline,
        }
    }

    /// The highest source number used, plus one.
    pub fn source_count(&self) -> usize {
        match self {
            Self::Source { source, .. } => source + 1,
            Self::Join { left, right, .. } => left.source_count().max(right.source_count()),
            Self::Fork { input, .. } => input.source_count(),
        }
    }

    /// Feeds one batch of source `source` to every pipeline reading it.
    pub fn process_batch(
        &mut self,
        source: usize,
        batch: &RecordBatch,
    ) -> Result<Vec<RecordBatch>> {
        match self {
            Self::Source {
                source: s,
                pipeline,
            } => {
                if *s == source {
                    pipeline.process_batch(batch.clone())
                } else {
                    Ok(Vec::new())
                }
            }
            Self::Join {
                left,
                right,
                join,
                pipeline,
                stats,
                ..
            } => {
                let from_left = left.process_batch(source, batch)?;
                let from_right = right.process_batch(source, batch)?;
                join_inputs(join.as_mut(), stats, pipeline, from_left, from_right)
            }
            Self::Fork {
                input,
                left,
                right,
                join,
                pipeline,
                stats,
                ..
            } => {
                let shared = input.process_batch(source, batch)?;
                if shared.is_empty() {
                    return Ok(Vec::new());
                }
                let from_left = through(left, &shared)?;
                let from_right = through(right, &shared)?;
                join_inputs(join.as_mut(), stats, pipeline, from_left, from_right)
            }
        }
    }

    /// What the dataflow produces before any input ([`Pipeline::start`]), through joins too.
    pub fn start(&mut self) -> Result<Vec<RecordBatch>> {
        match self {
            Self::Source { pipeline, .. } => pipeline.start(),
            Self::Join {
                left,
                right,
                join,
                pipeline,
                stats,
                ..
            } => {
                let from_left = left.start()?;
                let from_right = right.start()?;
                let mut out = join_inputs(join.as_mut(), stats, pipeline, from_left, from_right)?;
                out.extend(pipeline.start()?);
                Ok(out)
            }
            Self::Fork {
                input,
                left,
                right,
                join,
                pipeline,
                stats,
                ..
            } => {
                let shared = input.start()?;
                let mut from_left = through(left, &shared)?;
                from_left.extend(left.start()?);
                let mut from_right = through(right, &shared)?;
                from_right.extend(right.start()?);
                let mut out = join_inputs(join.as_mut(), stats, pipeline, from_left, from_right)?;
                out.extend(pipeline.start()?);
                Ok(out)
            }
        }
    }

    /// This node's watermark given every source's: a join's is the smaller of its inputs'.
    pub fn watermark(&self, sources: &[Option<i64>]) -> Option<i64> {
        match self {
            Self::Source { source, .. } => sources.get(*source).copied().flatten(),
            Self::Join { left, right, .. } => {
                Some(left.watermark(sources)?.min(right.watermark(sources)?))
            }
            Self::Fork { input, .. } => input.watermark(sources),
        }
    }

    /// Passes every source's current watermark down the tree: each input's releases reach the
    /// join before the join sees the watermark, and so on up.
    pub fn on_watermark(&mut self, sources: &[Option<i64>]) -> Result<Vec<RecordBatch>> {
        let own = self.watermark(sources);
        match self {
            Self::Source { pipeline, .. } => match own {
                Some(w) => pipeline.on_watermark(w),
                None => Ok(Vec::new()),
            },
            Self::Join {
                left,
                right,
                join,
                pipeline,
                watermark,
                stats,
            } => {
                let from_left = left.on_watermark(sources)?;
                let from_right = right.on_watermark(sources)?;
                let mut out = join_inputs(join.as_mut(), stats, pipeline, from_left, from_right)?;
                if let Some(w) = own.filter(|&w| *watermark != Some(w)) {
                    *watermark = Some(w);
                    let since = crate::stats::start();
                    let released = join.on_watermark(w)?;
                    stats.watermark(w);
                    stats.record(0, released.iter().map(RecordBatch::num_rows).sum(), since);
                    for b in released {
                        out.extend(pipeline.process_batch(b)?);
                    }
                    out.extend(pipeline.on_watermark(w)?);
                }
                Ok(out)
            }
            Self::Fork {
                input,
                left,
                right,
                join,
                pipeline,
                watermark,
                stats,
            } => {
                let shared = input.on_watermark(sources)?;
                let mut from_left = through(left, &shared)?;
                let mut from_right = through(right, &shared)?;
                if let Some(w) = own {
                    from_left.extend(left.on_watermark(w)?);
                    from_right.extend(right.on_watermark(w)?);
                }
                let mut out = join_inputs(join.as_mut(), stats, pipeline, from_left, from_right)?;
                if let Some(w) = own.filter(|&w| *watermark != Some(w)) {
                    *watermark = Some(w);
                    let since = crate::stats::start();
                    let released = join.on_watermark(w)?;
                    stats.watermark(w);
                    stats.record(0, released.iter().map(RecordBatch::num_rows).sum(), since);
                    for b in released {
                        out.extend(pipeline.process_batch(b)?);
                    }
                    out.extend(pipeline.on_watermark(w)?);
                }
                Ok(out)
            }
        }
    }

    /// Passes the query's memory limit to the operators whose single outputs could exceed it.
    pub fn limit_memory(&mut self, bytes: usize) {
        match self {
            Self::Source { .. } => {}
            Self::Join {
                left, right, join, ..
            } => {
                left.limit_memory(bytes);
                right.limit_memory(bytes);
                join.limit_memory(bytes);
            }
            Self::Fork { input, join, .. } => {
                input.limit_memory(bytes);
                join.limit_memory(bytes);
            }
        }
    }

    /// [`Dataflow::state_bytes`], each pipeline operator's also kept in its counters.
    pub fn measure_state(&self) -> usize {
        match self {
            Self::Source { pipeline, .. } => pipeline.measure_state(),
            Self::Join {
                left,
                right,
                join,
                pipeline,
                stats,
                ..
            } => {
                let own = join.state_bytes();
                stats.state(own, join.state_rows());
                left.measure_state() + right.measure_state() + own + pipeline.measure_state()
            }
            Self::Fork {
                input,
                left,
                right,
                join,
                pipeline,
                stats,
                ..
            } => {
                let own = join.state_bytes();
                stats.state(own, join.state_rows());
                input.measure_state()
                    + left.measure_state()
                    + right.measure_state()
                    + own
                    + pipeline.measure_state()
            }
        }
    }

    /// The counters of every operator, inputs first, each with where it is (see
    /// [`OperatorPlace`]).
    pub fn stats(&self) -> Vec<OperatorPlace> {
        let mut out = Vec::new();
        self.places(&mut out);
        out
    }

    /// Adds this subtree's operators to `out`, inputs first; the subtree's top operator (if it
    /// has any) is left without a parent, for the caller to set.
    fn places(&self, out: &mut Vec<OperatorPlace>) {
        // The operator below the next one of `pipeline`: the join, over a join.
        let (input, pipeline, mut below) = match self {
            Self::Source { source, pipeline } => (format!("source {source}"), pipeline, None),
            Self::Join {
                left,
                right,
                pipeline,
                stats,
                ..
            } => {
                let first = out.len();
                left.places(out);
                right.places(out);
                let join = out.len();
                for place in &mut out[first..] {
                    if place.parent.is_none() {
                        place.parent = Some(join);
                    }
                }
                out.push(OperatorPlace {
                    input: "join".to_string(),
                    parent: None,
                    stats: Arc::clone(stats),
                });
                ("join".to_string(), pipeline, Some(join))
            }
            Self::Fork {
                input,
                left,
                right,
                pipeline,
                stats,
                ..
            } => {
                let first = out.len();
                input.places(out);
                let shared_top = (first..out.len()).find(|&i| out[i].parent.is_none());
                // The shared input feeds both sides; as a tree, it hangs under the first.
                let mut side_tops = Vec::new();
                for (k, side) in [left, right].into_iter().enumerate() {
                    let mut below = if k == 0 { shared_top } else { None };
                    for s in side.stats() {
                        if let Some(b) = below {
                            out[b].parent = Some(out.len());
                        }
                        below = Some(out.len());
                        out.push(OperatorPlace {
                            input: "shared".to_string(),
                            parent: None,
                            stats: Arc::clone(s),
                        });
                    }
                    side_tops.push(below);
                }
                let join = out.len();
                for top in side_tops.into_iter().flatten() {
                    out[top].parent = Some(join);
                }
                out.push(OperatorPlace {
                    input: "join".to_string(),
                    parent: None,
                    stats: Arc::clone(stats),
                });
                ("join".to_string(), pipeline, Some(join))
            }
        };
        for s in pipeline.stats() {
            if let Some(b) = below {
                out[b].parent = Some(out.len());
            }
            below = Some(out.len());
            out.push(OperatorPlace {
                input: input.clone(),
                parent: None,
                stats: Arc::clone(s),
            });
        }
    }
    /// Bytes of memory the state of every operator holds.
    pub fn state_bytes(&self) -> usize {
        match self {
            Self::Source { pipeline, .. } => pipeline.state_bytes(),
            Self::Join {
                left,
                right,
                join,
                pipeline,
                ..
            } => {
                left.state_bytes()
                    + right.state_bytes()
                    + join.state_bytes()
                    + pipeline.state_bytes()
            }
            Self::Fork {
                input,
                left,
                right,
                join,
                pipeline,
                ..
            } => {
                input.state_bytes()
                    + left.state_bytes()
                    + right.state_bytes()
                    + join.state_bytes()
                    + pipeline.state_bytes()
            }
        }
    }

    /// Late rows counted by every operator.
    pub fn late_rows(&self) -> u64 {
        match self {
            Self::Source { pipeline, .. } => pipeline.late_rows(),
            Self::Join {
                left,
                right,
                join,
                pipeline,
                ..
            } => left.late_rows() + right.late_rows() + join.late_rows() + pipeline.late_rows(),
            Self::Fork {
                input,
                left,
                right,
                join,
                pipeline,
                ..
            } => {
                input.late_rows()
                    + left.late_rows()
                    + right.late_rows()
                    + join.late_rows()
                    + pipeline.late_rows()
            }
        }
    }

    /// Late input rows of every operator since the last call.
    pub fn take_late(&mut self) -> Vec<RecordBatch> {
        match self {
            Self::Source { pipeline, .. } => pipeline.take_late(),
            Self::Join {
                left,
                right,
                join,
                pipeline,
                ..
            } => {
                let mut late = left.take_late();
                late.extend(right.take_late());
                late.extend(join.take_late());
                late.extend(pipeline.take_late());
                late
            }
            Self::Fork {
                input,
                left,
                right,
                join,
                pipeline,
                ..
            } => {
                let mut late = input.take_late();
                late.extend(left.take_late());
                late.extend(right.take_late());
                late.extend(join.take_late());
                late.extend(pipeline.take_late());
                late
            }
        }
    }

    /// Appends the state of every operator in the tree (inputs before the join above them).
    pub fn snapshot(&mut self, out: &mut Vec<OperatorState>) -> Result<()> {
        match self {
            Self::Source { pipeline, .. } => pipeline.snapshot(out),
            Self::Join {
                left,
                right,
                join,
                pipeline,
                watermark,
                ..
            } => {
                left.snapshot(out)?;
                right.snapshot(out)?;
                let mut state = join.snapshot()?;
                state.values.push(*watermark);
                out.push(state);
                pipeline.snapshot(out)
            }
            Self::Fork {
                input,
                left,
                right,
                join,
                pipeline,
                watermark,
                ..
            } => {
                input.snapshot(out)?;
                left.snapshot(out)?;
                right.snapshot(out)?;
                let mut state = join.snapshot()?;
                state.values.push(*watermark);
                out.push(state);
                pipeline.snapshot(out)
            }
        }
    }

    /// Restores the tree from `parts`, in the order [`Dataflow::snapshot`] wrote them.
    pub fn restore(&mut self, parts: &mut dyn Iterator<Item = OperatorState>) -> Result<()> {
        match self {
            Self::Source { pipeline, .. } => pipeline.restore(parts),
            Self::Join {
                left,
                right,
                join,
                pipeline,
                watermark,
                ..
            } => {
                left.restore(parts)?;
                right.restore(parts)?;
                restore_join(join.as_mut(), watermark, parts)?;
                pipeline.restore(parts)
            }
            Self::Fork {
                input,
                left,
                right,
                join,
                pipeline,
                watermark,
                ..
            } => {
                input.restore(parts)?;
                left.restore(parts)?;
                right.restore(parts)?;
                restore_join(join.as_mut(), watermark, parts)?;
                pipeline.restore(parts)
            }
        }
    }

    /// The operator tree for EXPLAIN, top first; `source` names source number `i`.
    pub fn explain(&self, source: &dyn Fn(usize) -> Vec<String>) -> Vec<String> {
        match self {
            Self::Source {
                source: s,
                pipeline,
            } => {
                let mut lines = pipeline.explain();
                lines.extend(source(*s));
                lines
            }
            Self::Join {
                left,
                right,
                join,
                pipeline,
                ..
            } => {
                let mut lines = pipeline.explain();
                lines.push(join.explain());
                for (name, input) in [("left", left), ("right", right)] {
                    indent(&mut lines, name, input.explain(source));
                }
                lines
            }
            Self::Fork {
                input,
                left,
                right,
                join,
                pipeline,
                ..
            } => {
                let mut lines = pipeline.explain();
                lines.push(join.explain());
                for (name, side) in [("left", left), ("right", right)] {
                    let mut sub = side.explain();
                    sub.push("the shared input below".to_string());
                    indent(&mut lines, name, sub);
                }
                indent(
                    &mut lines,
                    "shared (computed once, read by both sides)",
                    input.explain(source),
                );
                lines
            }
        }
    }

    /// Checks that the tree ends at `output` (same column types), plus `extra` trailing columns
    /// that the sink consumes itself.
    pub fn check_output(&self, output: &SchemaRef, extra: usize) -> Result<()> {
        self.pipeline().check_output(output, extra)
    }
}
