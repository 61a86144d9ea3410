//! Text to `bytea` as PostgreSQL reads it: `'\x0102ff'` is three bytes in hex, and backslash
//! escapes (`\\`, `\ooo`) in the escape format; DataFusion's cast would keep the text's bytes.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BinaryBuilder, StringArray};
use datafusion::arrow::compute::kernels::cast::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{ExprSchema, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    Cast, ColumnarValue, Expr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};

/// `bytea_in(text)`: the bytes a PostgreSQL `bytea` literal denotes.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ByteaIn {
    signature: Signature,
}

impl ByteaIn {
    fn new() -> Self {
        Self {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        }
    }
}

fn invalid(message: String) -> ArrowError {
    ArrowError::ParseError(message)
}

/// The bytes of one `bytea` literal, in the hex format (`\x` then pairs of hex digits, spaces
/// between pairs allowed) or the escape format.
fn parse(text: &str) -> std::result::Result<Vec<u8>, ArrowError> {
    if let Some(hex) = text.strip_prefix("\\x") {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if digits.len() % 2 == 1 {
            return Err(invalid(format!(
                "invalid hexadecimal data: odd number of digits in {text:?}"
            )));
        }
        return digits
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).unwrap_or("");
                u8::from_str_radix(pair, 16)
                    .map_err(|_| invalid(format!("invalid hexadecimal digit in {text:?}")))
            })
            .collect();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 4)) {
            (b'\\', _) if bytes.get(i + 1) == Some(&b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            (b'\\', Some(&[a, b, c]))
                if (b'0'..=b'3').contains(&a)
                    && (b'0'..=b'7').contains(&b)
                    && (b'0'..=b'7').contains(&c) =>
            {
                out.push((a - b'0') * 64 + (b - b'0') * 8 + (c - b'0'));
                i += 4;
            }
            (b'\\', _) => {
                return Err(invalid(format!(
                    "invalid input syntax for type bytea: {text:?}"
                )));
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Ok(out)
}

impl ScalarUDFImpl for ByteaIn {
    fn name(&self) -> &str {
        "bytea_in"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [text] = arrays.as_slice() else {
            return datafusion::common::plan_err!("bytea_in takes one argument");
        };
        let text = cast(text, &DataType::Utf8)?;
        let text = text
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| invalid("bytea_in reads text".into()))?;
        let mut out = BinaryBuilder::with_capacity(text.len(), text.value_data().len());
        for value in text.iter() {
            match value {
                Some(v) => out.append_value(parse(v)?),
                None => out.append_null(),
            }
        }
        let out: ArrayRef = Arc::new(out.finish());
        super::result_of(&args.args, out)
    }
}

/// Rewrites casts from text to a binary type in `expr` into [`ByteaIn`], then the binary type.
pub(crate) fn bytea_input(expr: Expr, schema: &dyn ExprSchema) -> Result<Transformed<Expr>> {
    expr.transform_up(|e| {
        let Expr::Cast(Cast { expr: inner, field }) = &e else {
            return Ok(Transformed::no(e));
        };
        let to = field.data_type();
        let from = inner.get_type(schema)?;
        let text = matches!(
            from,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        );
        let binary = matches!(
            to,
            DataType::Binary | DataType::BinaryView | DataType::LargeBinary
        );
        if !text || !binary {
            return Ok(Transformed::no(e));
        }
        let read = Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::new(ScalarUDF::from(ByteaIn::new())),
            vec![Expr::Cast(Cast::new(inner.clone(), DataType::Utf8))],
        ));
        Ok(Transformed::yes(Expr::Cast(Cast::new_from_field(
            Box::new(read),
            field.clone(),
        ))))
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_both_bytea_formats() {
        assert_eq!(parse("\\x0102ff").unwrap(), [1, 2, 255]);
        assert_eq!(parse("\\x01 02").unwrap(), [1, 2]);
        assert_eq!(parse("abc").unwrap(), b"abc");
        assert_eq!(parse("a\\\\b\\001").unwrap(), b"a\\b\x01");
        assert!(parse("\\x0").is_err());
        assert!(parse("\\xzz").is_err());
        assert!(parse("a\\b").is_err());
    }
}
