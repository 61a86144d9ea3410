//! A chain of operators that batches and watermarks flow through in order.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::checkpoint::OperatorState;
use crate::operator::Operator;
use crate::{Error, Result};

/// Operators applied one after another; the output of one is the input of the next.
#[derive(Debug)]
pub struct Pipeline {
    operators: Vec<Box<dyn Operator>>,
    input: SchemaRef,
}

impl Pipeline {
    /// A pipeline over batches of `input`; an empty one passes batches through.
    pub fn new(input: SchemaRef, operators: Vec<Box<dyn Operator>>) -> Self {
        Self { operators, input }
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

    fn push_from(
        &mut self,
        start: usize,
        mut batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        for op in &mut self.operators[start..] {
            let mut next = Vec::with_capacity(batches.len());
            for b in batches {
                next.extend(op.process_batch(b)?);
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
        for i in 0..self.operators.len() {
            let mut out = Vec::new();
            for b in std::mem::take(&mut pending) {
                out.extend(self.operators[i].process_batch(b)?);
            }
            out.extend(self.operators[i].on_watermark(watermark_ns)?);
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
