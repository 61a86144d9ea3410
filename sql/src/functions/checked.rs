//! Integer `+`, `-` and `*` that fail on overflow (SQLSTATE 22003) as PostgreSQL's and Flink's
//! do, where DataFusion's wrap around and so would give a plausible wrong number.

use std::sync::Arc;

use datafusion::arrow::array::Datum;
use datafusion::arrow::compute::kernels::cast::cast;
use datafusion::arrow::compute::kernels::numeric::{add, mul, sub};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{ExprSchema, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};

/// One checked integer operation: `checked_add`, `checked_sub` or `checked_mul`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CheckedArithmetic {
    op: Operator,
    signature: Signature,
}

impl CheckedArithmetic {
    /// The checked form of `op`, one of `+`, `-` and `*`.
    fn new(op: Operator) -> Self {
        Self {
            op,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for CheckedArithmetic {
    fn name(&self) -> &str {
        match self.op {
            Operator::Plus => "checked_add",
            Operator::Minus => "checked_sub",
            _ => "checked_mul",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let [l, r] = arg_types else {
            return datafusion::common::plan_err!("{} takes two arguments", self.name());
        };
        BinaryTypeCoercer::new(l, &self.op, r).get_result_type()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [l, r] = args.args.as_slice() else {
            return datafusion::common::plan_err!("{} takes two arguments", self.name());
        };
        let ty = args.return_field.data_type();
        let (l, r) = (operand(l, ty)?, operand(r, ty)?);
        let out = match self.op {
            Operator::Plus => add(l.as_ref(), r.as_ref())?,
            Operator::Minus => sub(l.as_ref(), r.as_ref())?,
            _ => mul(l.as_ref(), r.as_ref())?,
        };
        super::result_of(&args.args, out)
    }
}

/// An argument in the result's type; a constant stays one value (`x * 2` does not make an
/// array of 2s for every batch), as DataFusion's own arithmetic does.
fn operand(value: &ColumnarValue, ty: &DataType) -> Result<Box<dyn Datum>> {
    Ok(match value {
        ColumnarValue::Array(a) if a.data_type() == ty => Box::new(Arc::clone(a)),
        ColumnarValue::Array(a) => Box::new(cast(a, ty)?),
        ColumnarValue::Scalar(s) => Box::new(s.cast_to(ty)?.to_scalar()?),
    })
}

/// Rewrites `a + b`, `a - b` and `a * b` over integers in `expr` into their checked forms.
pub(crate) fn checked_arithmetic(expr: Expr, schema: &dyn ExprSchema) -> Result<Transformed<Expr>> {
    expr.transform_up(|e| {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &e else {
            return Ok(Transformed::no(e));
        };
        if !matches!(op, Operator::Plus | Operator::Minus | Operator::Multiply)
            || !left.get_type(schema)?.is_integer()
            || !right.get_type(schema)?.is_integer()
        {
            return Ok(Transformed::no(e));
        }
        let udf = ScalarUDF::from(CheckedArithmetic::new(*op));
        let args = vec![left.as_ref().clone(), right.as_ref().clone()];
        Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(Arc::new(udf), args),
        )))
    })
}
