//! UNION ALL of two inputs: every row of either, as it comes.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::{BinaryOperator, Side, batch_of, expect_empty};
use crate::Result;
use crate::checkpoint::OperatorState;

/// Passes on the rows of both inputs (of the same columns), each batch as it comes; keeps
/// nothing. Its watermark is the smaller of its inputs', as for every two-input operator.
#[derive(Debug)]
pub struct UnionOperator {
    schema: SchemaRef,
}

impl UnionOperator {
    /// A union whose output is `schema` (both inputs' columns, in order, cast to its types).
    pub fn new(schema: SchemaRef) -> Self {
        Self { schema }
    }
}

impl BinaryOperator for UnionOperator {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, _side: Side, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![batch_of(&self.schema, batch.columns().to_vec())?])
    }

    fn on_watermark(&mut self, _watermark_ns: i64) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }

    fn late_rows(&self) -> u64 {
        0
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        Vec::new()
    }

    fn explain(&self) -> String {
        "Union: every row of both inputs, as it comes (UNION ALL); state: none".into()
    }

    fn state_bytes(&self) -> usize {
        0
    }

    fn state_rows(&self) -> usize {
        0
    }

    fn limit_memory(&mut self, _bytes: usize) {}

    fn snapshot(&mut self) -> Result<OperatorState> {
        Ok(OperatorState::default())
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        expect_empty("Union", &state)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, Int32Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn rows_of_either_input_pass_cast_to_the_output() {
        let out = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let mut op = UnionOperator::new(Arc::clone(&out));
        let narrow = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)])),
            vec![Arc::new(Int32Array::from(vec![1, 2]))],
        )
        .expect("batch");
        let wide = RecordBatch::try_new(
            Arc::clone(&out),
            vec![Arc::new(Int64Array::from(vec![Some(3), None]))],
        )
        .expect("batch");
        let a = op.process_batch(Side::Left, narrow).expect("left");
        let b = op.process_batch(Side::Right, wide).expect("right");
        assert_eq!(a[0].schema(), out);
        assert_eq!(a[0].column(0).len() + b[0].column(0).len(), 4);
        assert!(op.on_watermark(10).expect("watermark").is_empty());
        assert_eq!(op.snapshot().expect("snapshot").batches.len(), 0);
    }
}
