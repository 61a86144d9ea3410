//! Computes output columns from expressions over the input columns.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_expr::PhysicalExpr;

use super::Operator;
use crate::Result;

/// Evaluates one DataFusion physical expression per output column.
#[derive(Debug)]
pub struct ProjectionOperator {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectionOperator {
    /// A projection of batches of `input` into columns named as in `exprs`.
    pub fn try_new(exprs: Vec<(Arc<dyn PhysicalExpr>, String)>, input: &Schema) -> Result<Self> {
        let fields = exprs
            .iter()
            .map(|(e, name)| Ok(Field::new(name, e.data_type(input)?, e.nullable(input)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            exprs: exprs.into_iter().map(|(e, _)| e).collect(),
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

impl Operator for ProjectionOperator {
    fn name(&self) -> &'static str {
        "Projection"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        let columns = self
            .exprs
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(n))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(vec![RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?])
    }

    fn explain(&self) -> String {
        let exprs: Vec<String> = self
            .exprs
            .iter()
            .zip(self.schema.fields())
            .map(|(e, f)| format!("{e} AS {}", f.name()))
            .collect();
        format!("Projection: {}", exprs.join(", "))
    }
}
