//! PostgreSQL's `like_escape(pattern, escape)`: a LIKE pattern with its escape character
//! turned into the backslash that DataFusion's LIKE knows, for `LIKE p ESCAPE 'c'` where `p`
//! is known only when the statement runs (a bound parameter).

use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::kernels::cast::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// `pattern` with `escape` as the escape character rewritten to use backslashes: each
/// `escape` followed by a character becomes a backslash and that character, and a backslash
/// of the pattern's own becomes an escaped backslash.
pub fn backslash_escapes(pattern: &str, escape: char) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == escape {
            out.push('\\');
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

/// The `like_escape` function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LikeEscape {
    signature: Signature,
}

impl LikeEscape {
    /// The function over text.
    pub fn new() -> Self {
        Self {
            signature: Signature::exact(
                vec![DataType::Utf8, DataType::Utf8],
                Volatility::Immutable,
            ),
        }
    }
}

impl Default for LikeEscape {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for LikeEscape {
    fn name(&self) -> &str {
        "like_escape"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [patterns, escapes] = arrays.as_slice() else {
            return exec_err!("like_escape takes a pattern and an escape character");
        };
        let (patterns, escapes) = (
            cast(patterns, &DataType::Utf8)?,
            cast(escapes, &DataType::Utf8)?,
        );
        let (Some(patterns), Some(escapes)) = (
            patterns.as_any().downcast_ref::<StringArray>(),
            escapes.as_any().downcast_ref::<StringArray>(),
        ) else {
            return exec_err!("like_escape reads text");
        };
        let mut out = Vec::with_capacity(patterns.len());
        for (p, e) in patterns.iter().zip(escapes.iter()) {
            out.push(match (p, e) {
                (Some(p), Some(e)) => {
                    let mut chars = e.chars();
                    match (chars.next(), chars.next()) {
                        (Some(c), None) => Some(backslash_escapes(p, c)),
                        // PostgreSQL: an empty escape means no escape character.
                        (None, _) => Some(p.replace('\\', "\\\\")),
                        _ => {
                            return exec_err!(
                                "invalid escape string {e:?}: it must be empty or one character"
                            );
                        }
                    }
                }
                _ => None,
            });
        }
        let out: Arc<dyn Array> = Arc::new(StringArray::from(out));
        super::result_of(&args.args, out)
    }
}

#[cfg(test)]
mod tests {
    use super::backslash_escapes;

    #[test]
    fn escapes_become_backslashes() {
        assert_eq!(backslash_escapes("pg/_%", '/'), "pg\\_%");
        assert_eq!(backslash_escapes("a\\b//", '/'), "a\\\\b\\/");
    }
}
