//! Functions written in SQL (`CREATE FUNCTION f(a BIGINT) RETURNS BIGINT LANGUAGE SQL AS
//! $$ SELECT a * 2 $$`): one expression over the arguments, evaluated a batch at a time.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::exec_err;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;

/// A function whose body is one SQL expression over its named arguments, planned (and its types
/// coerced) by the caller.
#[derive(Debug)]
pub struct SqlFunction {
    name: String,
    arguments: Arc<Schema>,
    return_type: DataType,
    /// The body as written, which identifies it.
    text: String,
    body: Arc<dyn PhysicalExpr>,
    signature: Signature,
}

impl SqlFunction {
    /// `name(arguments) RETURNS return_type` computing `body` (written `text`), an expression
    /// over a batch of the arguments' columns.
    pub fn new(
        name: String,
        arguments: Arc<Schema>,
        return_type: DataType,
        text: String,
        body: Arc<dyn PhysicalExpr>,
    ) -> Self {
        let types = arguments
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Self {
            name,
            arguments,
            return_type,
            text,
            body,
            signature: Signature::exact(types, Volatility::Immutable),
        }
    }
}

impl PartialEq for SqlFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.arguments == other.arguments
            && self.return_type == other.return_type
            && self.text == other.text
    }
}

impl Eq for SqlFunction {}

impl Hash for SqlFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.return_type.hash(state);
        self.text.hash(state);
    }
}

impl ScalarUDFImpl for SqlFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(self.return_type.clone())
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let rows = args.number_rows;
        if args.args.len() != self.arguments.fields().len() {
            return exec_err!(
                "{} takes {} arguments",
                self.name,
                self.arguments.fields().len()
            );
        }
        let columns = args
            .args
            .iter()
            .zip(self.arguments.fields())
            .map(|(a, f)| {
                let array = a.to_array(rows)?;
                Ok(if array.data_type() == f.data_type() {
                    array
                } else {
                    strict_cast(&array, f.data_type())?
                })
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch =
            RecordBatch::try_new_with_options(Arc::clone(&self.arguments), columns, &options)?;
        let out = self.body.evaluate(&batch)?.into_array(rows)?;
        Ok(ColumnarValue::Array(
            if out.data_type() == &self.return_type {
                out
            } else {
                strict_cast(&out, &self.return_type)?
            },
        ))
    }
}

/// A cast that fails on a value the type cannot hold (as PostgreSQL's does) where Arrow's
/// default cast would give NULL.
fn strict_cast(
    array: &datafusion::arrow::array::ArrayRef,
    to: &datafusion::arrow::datatypes::DataType,
) -> datafusion::error::Result<datafusion::arrow::array::ArrayRef> {
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    Ok(cast_with_options(array, to, &options)?)
}
