//! Scalar functions Weir adds to DataFusion's, so that SQL written for Postgres and Flink runs.

use datafusion::arrow::compute::kernels::numeric::rem;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// `mod(a, b)`: the remainder of `a / b` with the sign of `a`, as `a % b` (Postgres, Flink).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ModFunction {
    signature: Signature,
}

impl ModFunction {
    /// The function, for integers and floating point numbers.
    pub fn new() -> Self {
        Self {
            signature: Signature::uniform(
                2,
                vec![DataType::Int64, DataType::Float64],
                Volatility::Immutable,
            ),
        }
    }
}

impl Default for ModFunction {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for ModFunction {
    fn name(&self) -> &str {
        "mod"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Int64))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [a, b] = arrays.as_slice() else {
            return datafusion::common::plan_err!("mod takes two arguments");
        };
        Ok(ColumnarValue::Array(rem(a, b)?))
    }
}
