//! A chain of operators that batches and watermarks flow through in order.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use std::sync::Arc;

use crate::checkpoint::OperatorState;
use crate::operator::Operator;
use crate::stats::OperatorStats;
use crate::{Error, Result};

/// Operators applied one after another; the output of one is the input of the next.
#[derive(Debug)]
pub struct Pipeline {
    operators: Vec<Box<dyn Operator>>,
    input: SchemaRef,
    /// Each operator's counters, in operator order.
    stats: Vec<Arc<OperatorStats>>,
}

impl Pipeline {
    /// A pipeline over batches of `input`; an empty one passes batches through.
    pub fn new(input: SchemaRef, operators: Vec<Box<dyn Operator>>) -> Self {
        let stats = operators
            .iter()
            .map(|op| Arc::new(OperatorStats::new(op.name(), op.explain())))
            .collect();
        Self {
            operators,
            input,
            stats,
        }
    }

    /// Each operator's counters, first to last.
    pub fn stats(&self) -> &[Arc<OperatorStats>] {
        &self.stats
    }

    /// The schema of what comes out.
    pub fn schema(&self) -> SchemaRef {
        self.operators
            .last()
            .map_or_else(|| self.input.clone(), |op| op.schema())
    }

    /// The operators, first to last.
    pub fn operators(&self) -> &[Box<dyn Operator>] {
        &self.operators
    }

    /// Bytes of memory the operators' state holds.
    pub fn state_bytes(&self) -> usize {
        self.operators.iter().map(|op| op.state_bytes()).sum()
    }

    /// [`Pipeline::state_bytes`], each operator's also kept in its counters. Measuring walks the
    /// state, so the runtime does it now and then, not per batch.
    pub fn measure_state(&self) -> usize {
        self.operators
            .iter()
            .zip(&self.stats)
            .map(|(op, stats)| {
                let bytes = op.state_bytes();
                stats.state(bytes, op.state_rows());
                bytes
            })
            .sum()
    }

    fn push_from(
        &mut self,
        start: usize,
        mut batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        for (op, stats) in self.operators[start..].iter_mut().zip(&self.stats[start..]) {
            let mut next = Vec::with_capacity(batches.len());
            for b in batches {
                crate::runtime::check_stop()?;
                let since = crate::stats::start();
                let rows = b.num_rows();
                let out = op.process_batch(b)?;
                stats.record(rows, rows_of(&out), since);
                next.extend(out);
            }
            batches = next;
            if batches.is_empty() {
                break;
            }
        }
        Ok(batches)
    }

    /// Feeds one input batch through every operator.
    pub fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        self.push_from(0, vec![batch])
    }

    /// What the operators produce before any input ([`Operator::start`]), each operator's
    /// passed through the ones after it.
    pub fn start(&mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for i in 0..self.operators.len() {
            let first = self.operators[i].start()?;
            if !first.is_empty() {
                out.extend(self.push_from(i + 1, first)?);
            }
        }
        Ok(out)
    }

    /// Advances the watermark through the pipeline, in operator order, so that what one operator
    /// releases reaches the next before the next sees the watermark.
    pub fn on_watermark(&mut self, watermark_ns: i64) -> Result<Vec<RecordBatch>> {
        let mut pending: Vec<RecordBatch> = Vec::new();
        for (op, stats) in self.operators.iter_mut().zip(&self.stats) {
            let mut out = Vec::new();
            for b in std::mem::take(&mut pending) {
                let since = crate::stats::start();
                let rows = b.num_rows();
                let released = op.process_batch(b)?;
                stats.record(rows, rows_of(&released), since);
                out.extend(released);
            }
            let since = crate::stats::start();
            let released = op.on_watermark(watermark_ns)?;
            stats.watermark(watermark_ns);
            stats.record(0, rows_of(&released), since);
            out.extend(released);
            pending = out;
        }
        Ok(pending)
    }

    /// Late events counted by all operators.
    pub fn late_rows(&self) -> u64 {
        self.operators.iter().map(|o| o.late_rows()).sum()
    }

    /// Late input rows of every operator since the last call, with the operator's input schema.
    pub fn take_late(&mut self) -> Vec<RecordBatch> {
        self.operators
            .iter_mut()
            .flat_map(|o| o.take_late())
            .collect()
    }

    /// Appends every operator's state, first to last.
    pub fn snapshot(&mut self, out: &mut Vec<OperatorState>) -> Result<()> {
        for op in &mut self.operators {
            out.push(op.snapshot()?);
        }
        Ok(())
    }

    /// Offers each operator a table of the state store (see [`Operator::attach_store`]),
    /// numbering them from `*next`; returns whether any took one.
    pub fn attach_store(
        &mut self,
        tables: &mut dyn crate::operator::TableSource,
        next: &mut usize,
    ) -> Result<bool> {
        let mut any = false;
        for op in &mut self.operators {
            *next += 1;
            any |= op.attach_store(tables, &format!("operator-{next}"))?;
        }
        Ok(any)
    }

    /// Has every operator drop what the last committed checkpoint stored.
    pub fn evict(&mut self) {
        for op in &mut self.operators {
            op.evict();
        }
    }

    /// Passes the query's memory limit to every operator (see [`Operator::limit_memory`]).
    pub fn limit_memory(&mut self, bytes: usize) {
        for op in &mut self.operators {
            op.limit_memory(bytes);
        }
    }

    /// Restores every operator from `parts`, in the order [`Pipeline::snapshot`] wrote them.
    pub fn restore(&mut self, parts: &mut dyn Iterator<Item = OperatorState>) -> Result<()> {
        for op in &mut self.operators {
            let state = parts.next().ok_or_else(|| {
                Error::Corrupt("checkpoint has fewer operator states than the plan".into())
            })?;
            op.restore(state)?;
        }
        Ok(())
    }

    /// One line per operator, last first (as EXPLAIN prints plans).
    pub fn explain(&self) -> Vec<String> {
        self.operators.iter().rev().map(|o| o.explain()).collect()
    }

    /// Checks that the pipeline ends at `output` (same column types), plus `extra` trailing
    /// columns that the sink consumes itself.
    pub fn check_output(&self, output: &SchemaRef, extra: usize) -> Result<()> {
        let got = self.schema();
        let same = got.fields().len() == output.fields().len() + extra
            && got
                .fields()
                .iter()
                .zip(output.fields())
                .all(|(a, b)| a.data_type() == b.data_type());
        if same {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "pipeline produces {got} but its sink expects {output}"
            )))
        }
    }
}

/// The rows of `batches`.
fn rows_of(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}
