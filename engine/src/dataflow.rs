//! A continuous query's operators as a tree: pipelines over sources, joined by two-input operators.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::checkpoint::OperatorState;
use crate::operator::{BinaryOperator, Side};
use crate::pipeline::Pipeline;
use crate::stats::OperatorStats;
use crate::{Error, Result};

/// The most rows of a join's output that go through the operators after it at once.
const JOINED_SLICE_ROWS: usize = 64 * 1024;

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

/// A two-input operator with the operators over its output: the top of a join node.
#[derive(Debug)]
pub struct JoinStage {
    join: Box<dyn BinaryOperator>,
    /// The operators applied to the join's output.
    pipeline: Pipeline,
    /// The watermark last passed to `join`.
    watermark: Option<i64>,
    /// The join's counters.
    stats: Arc<OperatorStats>,
}

impl JoinStage {
    fn new(join: Box<dyn BinaryOperator>, pipeline: Pipeline) -> Self {
        let stats = Arc::new(OperatorStats::new("Join", join.explain()));
        Self {
            join,
            pipeline,
            watermark: None,
            stats,
        }
    }

    /// Feeds what the inputs produced into the join, and what it joins through `pipeline`.
    fn feed(
        &mut self,
        from_left: Vec<RecordBatch>,
        from_right: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for (side, batches) in [(Side::Left, from_left), (Side::Right, from_right)] {
            for b in batches {
                let since = crate::stats::start();
                let rows = b.num_rows();
                let joined = self.join.process_batch(side, b)?;
                let joined_rows = joined.iter().map(RecordBatch::num_rows).sum();
                self.stats.record(rows, joined_rows, since);
                // A join's output can be far larger than its input: it goes on in slices, so
                // that a stop is seen between them (see `check_stop`).
                for j in joined {
                    let mut at = 0;
                    while at < j.num_rows() {
                        let len = JOINED_SLICE_ROWS.min(j.num_rows() - at);
                        out.extend(self.pipeline.process_batch(j.slice(at, len))?);
                        at += len;
                    }
                }
            }
        }
        Ok(out)
    }

    /// What the join and `pipeline` give before any input, after the inputs' own (`from_*`).
    fn start(
        &mut self,
        from_left: Vec<RecordBatch>,
        from_right: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = self.feed(from_left, from_right)?;
        out.extend(self.pipeline.start()?);
        Ok(out)
    }

    /// Feeds the inputs' releases, then passes the join's watermark `own` on, if it moved.
    fn on_watermark(
        &mut self,
        own: Option<i64>,
        from_left: Vec<RecordBatch>,
        from_right: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = self.feed(from_left, from_right)?;
        if let Some(w) = own.filter(|&w| self.watermark != Some(w)) {
            self.watermark = Some(w);
            let since = crate::stats::start();
            let released = self.join.on_watermark(w)?;
            self.stats.watermark(w);
            let released_rows = released.iter().map(RecordBatch::num_rows).sum();
            self.stats.record(0, released_rows, since);
            for b in released {
                out.extend(self.pipeline.process_batch(b)?);
            }
            out.extend(self.pipeline.on_watermark(w)?);
        }
        Ok(out)
    }

    fn measure_state(&self) -> usize {
        let own = self.join.state_bytes();
        self.stats.state(own, self.join.state_rows());
        own + self.pipeline.measure_state()
    }

    fn state_bytes(&self) -> usize {
        self.join.state_bytes() + self.pipeline.state_bytes()
    }

    fn late_rows(&self) -> u64 {
        self.join.late_rows() + self.pipeline.late_rows()
    }

    fn take_late(&mut self, late: &mut Vec<RecordBatch>) {
        late.extend(self.join.take_late());
        late.extend(self.pipeline.take_late());
    }

    fn snapshot(&mut self, out: &mut Vec<OperatorState>) -> Result<()> {
        let mut state = self.join.snapshot()?;
        state.values.push(self.watermark);
        out.push(state);
        self.pipeline.snapshot(out)
    }

    /// Restores the join and the watermark it was last given, then `pipeline`.
    fn restore(&mut self, parts: &mut dyn Iterator<Item = OperatorState>) -> Result<()> {
        let mut state = parts.next().ok_or_else(|| {
            Error::Corrupt("checkpoint has fewer operator states than the plan".into())
        })?;
        self.watermark = state
            .values
            .pop()
            .ok_or_else(|| Error::Corrupt("checkpoint lacks a join's watermark".into()))?;
        self.join.restore(state)?;
        self.pipeline.restore(parts)
    }

    /// The join's place in `out`, the parent of every operator after `first` still without
    /// one (the tops of its inputs).
    fn place(&self, out: &mut Vec<OperatorPlace>, first: usize) -> usize {
        let join = out.len();
        for place in &mut out[first..] {
            if place.parent.is_none() {
                place.parent = Some(join);
            }
        }
        out.push(OperatorPlace {
            input: "join".to_string(),
            parent: None,
            stats: Arc::clone(&self.stats),
        });
        join
    }
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
    /// The outputs of two subtrees combined by a join.
    Join {
        /// The first input.
        left: Box<Dataflow>,
        /// The second input.
        right: Box<Dataflow>,
        /// The join and the operators over its output.
        stage: JoinStage,
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
        /// The join and the operators over its output.
        stage: JoinStage,
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

/// Adds `pipeline`'s operators to `out` as reading `input`, each the parent of the one before
/// (the first, of `below`).
fn push_places(
    out: &mut Vec<OperatorPlace>,
    input: &str,
    pipeline: &Pipeline,
    mut below: Option<usize>,
) {
    for s in pipeline.stats() {
        if let Some(b) = below {
            out[b].parent = Some(out.len());
        }
        below = Some(out.len());
        out.push(OperatorPlace {
            input: input.to_string(),
            parent: None,
            stats: Arc::clone(s),
        });
    }
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
        Self::Join {
            left: Box::new(left),
            right: Box::new(right),
            stage: JoinStage::new(join, pipeline),
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
        Self::Fork {
            input: Box::new(input),
            left,
            right,
            stage: JoinStage::new(join, pipeline),
        }
    }

    /// The schema of the rows this node emits.
    pub fn schema(&self) -> SchemaRef {
        self.pipeline().schema()
    }

    /// The pipeline at the top of this node.
    pub fn pipeline(&self) -> &Pipeline {
        match self {
            Self::Source { pipeline, .. } => pipeline,
            Self::Join { stage, .. } | Self::Fork { stage, .. } => &stage.pipeline,
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
            Self::Join { left, right, stage } => {
                let from_left = left.process_batch(source, batch)?;
                let from_right = right.process_batch(source, batch)?;
                stage.feed(from_left, from_right)
            }
            Self::Fork {
                input,
                left,
                right,
                stage,
            } => {
                let shared = input.process_batch(source, batch)?;
                if shared.is_empty() {
                    return Ok(Vec::new());
                }
                stage.feed(through(left, &shared)?, through(right, &shared)?)
            }
        }
    }

    /// What the dataflow produces before any input ([`Pipeline::start`]), through joins too.
    pub fn start(&mut self) -> Result<Vec<RecordBatch>> {
        match self {
            Self::Source { pipeline, .. } => pipeline.start(),
            Self::Join { left, right, stage } => {
                let from_left = left.start()?;
                let from_right = right.start()?;
                stage.start(from_left, from_right)
            }
            Self::Fork {
                input,
                left,
                right,
                stage,
            } => {
                let shared = input.start()?;
                let mut from_left = through(left, &shared)?;
                from_left.extend(left.start()?);
                let mut from_right = through(right, &shared)?;
                from_right.extend(right.start()?);
                stage.start(from_left, from_right)
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
            Self::Join { left, right, stage } => {
                let from_left = left.on_watermark(sources)?;
                let from_right = right.on_watermark(sources)?;
                stage.on_watermark(own, from_left, from_right)
            }
            Self::Fork {
                input,
                left,
                right,
                stage,
            } => {
                let shared = input.on_watermark(sources)?;
                let mut from_left = through(left, &shared)?;
                let mut from_right = through(right, &shared)?;
                if let Some(w) = own {
                    from_left.extend(left.on_watermark(w)?);
                    from_right.extend(right.on_watermark(w)?);
                }
                stage.on_watermark(own, from_left, from_right)
            }
        }
    }

    /// Offers every pipeline operator a table of the query's state store (see
    /// [`crate::operator::Operator::attach_store`]), numbered in plan order from `*next`;
    /// returns whether any took one.
    pub fn attach_store(
        &mut self,
        tables: &mut dyn crate::operator::TableSource,
        next: &mut usize,
    ) -> Result<bool> {
        self.attach_tables(tables, next, &mut 0)
    }

    /// [`Dataflow::attach_store`], the joins numbered apart from `*joins` (so that the
    /// tables of the pipelines' operators keep the names they had before joins took any).
    fn attach_tables(
        &mut self,
        tables: &mut dyn crate::operator::TableSource,
        next: &mut usize,
        joins: &mut usize,
    ) -> Result<bool> {
        let join = |stage: &mut JoinStage,
                    tables: &mut dyn crate::operator::TableSource,
                    joins: &mut usize| {
            *joins += 1;
            stage.join.attach_store(tables, &format!("join-{joins}"))
        };
        Ok(match self {
            Self::Source { pipeline, .. } => pipeline.attach_store(tables, next)?,
            Self::Join { left, right, stage } => {
                let l = left.attach_tables(tables, next, joins)?;
                let r = right.attach_tables(tables, next, joins)?;
                let j = join(stage, tables, joins)?;
                l | r | j | stage.pipeline.attach_store(tables, next)?
            }
            Self::Fork {
                input,
                left,
                right,
                stage,
            } => {
                let i = input.attach_tables(tables, next, joins)?;
                let l = left.attach_store(tables, next)?;
                let r = right.attach_store(tables, next)?;
                let j = join(stage, tables, joins)?;
                i | l | r | j | stage.pipeline.attach_store(tables, next)?
            }
        })
    }

    /// Has every operator drop from memory what the last committed checkpoint stored.
    pub fn evict(&mut self) {
        match self {
            Self::Source { pipeline, .. } => pipeline.evict(),
            Self::Join { left, right, stage } => {
                left.evict();
                right.evict();
                stage.join.evict();
                stage.pipeline.evict();
            }
            Self::Fork {
                input,
                left,
                right,
                stage,
            } => {
                input.evict();
                left.evict();
                right.evict();
                stage.join.evict();
                stage.pipeline.evict();
            }
        }
    }

    /// Passes the query's memory limit to every operator: joins, whose single outputs could
    /// exceed it, and operators that move their state to the store past a share of it.
    pub fn limit_memory(&mut self, bytes: usize) {
        match self {
            Self::Source { pipeline, .. } => pipeline.limit_memory(bytes),
            Self::Join { left, right, stage } => {
                left.limit_memory(bytes);
                right.limit_memory(bytes);
                stage.join.limit_memory(bytes);
                stage.pipeline.limit_memory(bytes);
            }
            Self::Fork {
                input,
                left,
                right,
                stage,
            } => {
                input.limit_memory(bytes);
                left.limit_memory(bytes);
                right.limit_memory(bytes);
                stage.join.limit_memory(bytes);
                stage.pipeline.limit_memory(bytes);
            }
        }
    }

    /// [`Dataflow::state_bytes`], each pipeline operator's also kept in its counters.
    pub fn measure_state(&self) -> usize {
        match self {
            Self::Source { pipeline, .. } => pipeline.measure_state(),
            Self::Join { left, right, stage } => {
                left.measure_state() + right.measure_state() + stage.measure_state()
            }
            Self::Fork {
                input,
                left,
                right,
                stage,
            } => {
                input.measure_state()
                    + left.measure_state()
                    + right.measure_state()
                    + stage.measure_state()
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
        let first = out.len();
        // The operator below the next one of the top pipeline: the join, over a join.
        let (input, below) = match self {
            Self::Source { source, .. } => (format!("source {source}"), None),
            Self::Join { left, right, stage } => {
                left.places(out);
                right.places(out);
                ("join".to_string(), Some(stage.place(out, first)))
            }
            Self::Fork {
                input,
                left,
                right,
                stage,
            } => {
                input.places(out);
                // The shared input feeds both sides; as a tree, it hangs under the first.
                let shared_top = (first..out.len()).find(|&i| out[i].parent.is_none());
                push_places(out, "shared", left, shared_top);
                push_places(out, "shared", right, None);
                // The sides' tops (or the shared input's, under an empty side) feed the join.
                ("join".to_string(), Some(stage.place(out, first)))
            }
        };
        push_places(out, &input, self.pipeline(), below);
    }

    /// Bytes of memory the state of every operator holds.
    pub fn state_bytes(&self) -> usize {
        match self {
            Self::Source { pipeline, .. } => pipeline.state_bytes(),
            Self::Join { left, right, stage } => {
                left.state_bytes() + right.state_bytes() + stage.state_bytes()
            }
            Self::Fork {
                input,
                left,
                right,
                stage,
            } => {
                input.state_bytes() + left.state_bytes() + right.state_bytes() + stage.state_bytes()
            }
        }
    }

    /// Late rows counted by every operator.
    pub fn late_rows(&self) -> u64 {
        match self {
            Self::Source { pipeline, .. } => pipeline.late_rows(),
            Self::Join { left, right, stage } => {
                left.late_rows() + right.late_rows() + stage.late_rows()
            }
            Self::Fork {
                input,
                left,
                right,
                stage,
            } => input.late_rows() + left.late_rows() + right.late_rows() + stage.late_rows(),
        }
    }

    /// Late input rows of every operator since the last call.
    pub fn take_late(&mut self) -> Vec<RecordBatch> {
        match self {
            Self::Source { pipeline, .. } => pipeline.take_late(),
            Self::Join { left, right, stage } => {
                let mut late = left.take_late();
                late.extend(right.take_late());
                stage.take_late(&mut late);
                late
            }
            Self::Fork {
                input,
                left,
                right,
                stage,
            } => {
                let mut late = input.take_late();
                late.extend(left.take_late());
                late.extend(right.take_late());
                stage.take_late(&mut late);
                late
            }
        }
    }

    /// Appends the state of every operator in the tree (inputs before the join above them).
    pub fn snapshot(&mut self, out: &mut Vec<OperatorState>) -> Result<()> {
        match self {
            Self::Source { pipeline, .. } => pipeline.snapshot(out),
            Self::Join { left, right, stage } => {
                left.snapshot(out)?;
                right.snapshot(out)?;
                stage.snapshot(out)
            }
            Self::Fork {
                input,
                left,
                right,
                stage,
            } => {
                input.snapshot(out)?;
                left.snapshot(out)?;
                right.snapshot(out)?;
                stage.snapshot(out)
            }
        }
    }

    /// Restores the tree from `parts`, in the order [`Dataflow::snapshot`] wrote them.
    pub fn restore(&mut self, parts: &mut dyn Iterator<Item = OperatorState>) -> Result<()> {
        match self {
            Self::Source { pipeline, .. } => pipeline.restore(parts),
            Self::Join { left, right, stage } => {
                left.restore(parts)?;
                right.restore(parts)?;
                stage.restore(parts)
            }
            Self::Fork {
                input,
                left,
                right,
                stage,
            } => {
                input.restore(parts)?;
                left.restore(parts)?;
                right.restore(parts)?;
                stage.restore(parts)
            }
        }
    }

    /// The operator tree for EXPLAIN, top first; `source` names source number `i`.
    pub fn explain(&self, source: &dyn Fn(usize) -> Vec<String>) -> Vec<String> {
        let mut lines = self.pipeline().explain();
        match self {
            Self::Source { source: s, .. } => lines.extend(source(*s)),
            Self::Join { left, right, stage } => {
                lines.push(stage.join.explain());
                for (name, input) in [("left", left), ("right", right)] {
                    indent(&mut lines, name, input.explain(source));
                }
            }
            Self::Fork {
                input,
                left,
                right,
                stage,
            } => {
                lines.push(stage.join.explain());
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
            }
        }
        lines
    }

    /// Checks that the tree ends at `output` (same column types), plus `extra` trailing columns
    /// that the sink consumes itself.
    pub fn check_output(&self, output: &SchemaRef, extra: usize) -> Result<()> {
        self.pipeline().check_output(output, extra)
    }
}
