//! Keeps the rows for which a predicate is true.

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use super::Operator;
use crate::{Error, Result};

/// Filters batches with a DataFusion physical predicate; NULL counts as false, as in SQL.
#[derive(Debug)]
pub struct FilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
    schema: SchemaRef,
}

impl FilterOperator {
    /// A filter over batches of `schema`; the predicate must be boolean.
    pub fn try_new(predicate: Arc<dyn PhysicalExpr>, schema: SchemaRef) -> Result<Self> {
        let t = predicate.data_type(&schema)?;
        if t != DataType::Boolean {
            return Err(Error::InvalidArgument(format!(
                "a filter predicate must be boolean, not {t}"
            )));
        }
        Ok(Self { predicate, schema })
    }
}

impl Operator for FilterOperator {
    fn name(&self) -> &'static str {
        "Filter"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let mask = self
            .predicate
            .evaluate(&batch)?
            .into_array(batch.num_rows())?;
        let out = filter_record_batch(&batch, mask.as_boolean())?;
        Ok(if out.num_rows() == 0 {
            Vec::new()
        } else {
            vec![out]
        })
    }

    fn explain(&self) -> String {
        format!("Filter: {}", self.predicate)
    }
}
