//! Flink's string functions as Flink defines them: `REGEXP_EXTRACT` and `SPLIT_INDEX`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use regex::Regex;

fn is_text(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer() || *t == DataType::Null
}

/// The argument as text, one value per row.
fn texts(arg: &ColumnarValue, rows: usize) -> datafusion::error::Result<StringArray> {
    let array = cast(&arg.to_array(rows)?, &DataType::Utf8)?;
    Ok(array
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .unwrap_or_else(|| StringArray::new_null(rows)))
}

/// The argument as BIGINTs, one value per row.
fn integers(arg: &ColumnarValue, rows: usize) -> datafusion::error::Result<Int64Array> {
    let array = cast(&arg.to_array(rows)?, &DataType::Int64)?;
    Ok(array
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .unwrap_or_else(|| Int64Array::new_null(rows)))
}

/// `REGEXP_EXTRACT(text, regex [, group])`: the text of the group (0, the default, is the whole
/// match) in the first match of `regex`, or NULL when nothing matches or the group took no
/// part in the match, as Flink defines it.
///
/// Where Flink would quietly return NULL for a regex it cannot compile or a group the regex
/// does not have, Weir refuses the query with the reason (22023). The regex is Rust's `regex`
/// syntax, which covers Java's except look-around and back-references; those are refused too.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RegexpExtract {
    signature: Signature,
}

impl RegexpExtract {
    /// The function.
    pub fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl Default for RegexpExtract {
    fn default() -> Self {
        Self::new()
    }
}

fn invalid(message: String) -> DataFusionError {
    DataFusionError::Execution(message)
}

impl ScalarUDFImpl for RegexpExtract {
    fn name(&self) -> &str {
        "regexp_extract"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::error::Result<DataType> {
        match arg_types {
            [s, r] if is_text(s) && is_text(r) => Ok(DataType::Utf8),
            [s, r, g] if is_text(s) && is_text(r) && is_integer(g) => Ok(DataType::Utf8),
            _ => plan_err!(
                "REGEXP_EXTRACT takes (text, regex) or (text, regex, group), not {arg_types:?}"
            ),
        }
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let rows = args.number_rows;
        let (value, regex) = match args.args.as_slice() {
            [v, r] | [v, r, _] => (texts(v, rows)?, texts(r, rows)?),
            _ => return exec_err!("REGEXP_EXTRACT takes two or three arguments"),
        };
        let groups = match args.args.get(2) {
            Some(g) => Some(integers(g, rows)?),
            None => None,
        };
        let mut compiled: Option<(String, Regex)> = None;
        let mut out = StringBuilder::with_capacity(rows, rows * 8);
        for row in 0..rows {
            let group = match &groups {
                Some(g) if g.is_null(row) => {
                    out.append_null();
                    continue;
                }
                Some(g) => g.value(row),
                None => 0,
            };
            if value.is_null(row) || regex.is_null(row) {
                out.append_null();
                continue;
            }
            let pattern = regex.value(row);
            // Recompiled only when the pattern changes (a constant compiles once per batch).
            if compiled.as_ref().is_none_or(|(p, _)| p != pattern) {
                let r = Regex::new(pattern).map_err(|e| {
                    invalid(format!(
                        "REGEXP_EXTRACT: invalid regular expression '{pattern}': {e}"
                    ))
                })?;
                compiled = Some((pattern.to_string(), r));
            }
            let Some((_, r)) = &compiled else {
                out.append_null();
                continue;
            };
            if group < 0 || group as usize >= r.captures_len() {
                return Err(invalid(format!(
                    "REGEXP_EXTRACT: group {group} does not exist in '{pattern}', which has {} group(s)",
                    r.captures_len() - 1
                )));
            }
            match r
                .captures(value.value(row))
                .and_then(|c| c.get(group as usize))
            {
                Some(m) => out.append_value(m.as_str()),
                None => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `SPLIT_INDEX(text, separator, index)`: the `index`-th (from 0) piece of `text` split at each
/// occurrence of `separator` (a string, or a character code), empty pieces kept; NULL when the
/// index is negative or past the last piece, or any argument is NULL, as Flink defines it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SplitIndex {
    signature: Signature,
}

impl SplitIndex {
    /// The function.
    pub fn new() -> Self {
        Self {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

impl Default for SplitIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for SplitIndex {
    fn name(&self) -> &str {
        "split_index"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::error::Result<DataType> {
        match arg_types {
            [s, sep, i] if is_text(s) && (is_text(sep) || is_integer(sep)) && is_integer(i) => {
                Ok(DataType::Utf8)
            }
            _ => plan_err!("SPLIT_INDEX takes (text, separator, index), not {arg_types:?}"),
        }
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let rows = args.number_rows;
        let [value, separator, index] = args.args.as_slice() else {
            return exec_err!("SPLIT_INDEX takes three arguments");
        };
        let value = texts(value, rows)?;
        let index = integers(index, rows)?;
        let separator: StringArray = if separator.data_type().is_integer() {
            let codes = integers(separator, rows)?;
            codes
                .iter()
                .map(|c| {
                    c.and_then(|c| u32::try_from(c).ok())
                        .and_then(char::from_u32)
                        .map(String::from)
                })
                .collect()
        } else {
            texts(separator, rows)?
        };
        let mut out = StringBuilder::with_capacity(rows, rows * 8);
        for row in 0..rows {
            if value.is_null(row) || separator.is_null(row) || index.is_null(row) {
                out.append_null();
                continue;
            }
            let (text, sep, i) = (value.value(row), separator.value(row), index.value(row));
            let piece = match usize::try_from(i) {
                // Flink (commons-lang's splitByWholeSeparatorPreserveAllTokens) gives no pieces
                // for an empty text, and splits at whitespace runs for an empty separator.
                Ok(_) if text.is_empty() => None,
                Ok(i) if sep.is_empty() => text.split_whitespace().nth(i),
                Ok(i) => text.split(sep).nth(i),
                Err(_) => None,
            };
            match piece {
                Some(p) => out.append_value(p),
                None => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;
    use datafusion::common::ScalarValue;
    use datafusion::config::ConfigOptions;

    fn call(
        f: &dyn ScalarUDFImpl,
        args: Vec<ScalarValue>,
    ) -> datafusion::error::Result<Option<String>> {
        let arg_fields = args
            .iter()
            .map(|a| Arc::new(Field::new("a", a.data_type(), true)))
            .collect();
        let types: Vec<DataType> = args.iter().map(|a| a.data_type()).collect();
        let out = f.invoke_with_args(ScalarFunctionArgs {
            args: args.into_iter().map(ColumnarValue::Scalar).collect(),
            arg_fields,
            number_rows: 1,
            return_field: Arc::new(Field::new("r", f.return_type(&types)?, true)),
            config_options: Arc::new(ConfigOptions::default()),
        })?;
        let array = cast(&out.to_array(1)?, &DataType::Utf8)?;
        let s = array.as_any().downcast_ref::<StringArray>().cloned();
        Ok(s.filter(|s| s.is_valid(0)).map(|s| s.value(0).to_string()))
    }

    fn text(s: &str) -> ScalarValue {
        ScalarValue::Utf8(Some(s.into()))
    }

    #[test]
    fn regexp_extract_as_flink() {
        let f = RegexpExtract::new();
        let url = text("https://www.nexmark.com/abc?channel_id=42&x=1");
        let re = text("(&|^)channel_id=([^&]*)");
        let q = text("a=1&channel_id=42&x=1");
        assert_eq!(
            call(&f, vec![q.clone(), re.clone(), ScalarValue::Int64(Some(2))]).expect("ok"),
            Some("42".into())
        );
        assert_eq!(
            call(&f, vec![q.clone(), re.clone()]).expect("ok"),
            Some("&channel_id=42".into())
        );
        assert!(call(&f, vec![q.clone(), re.clone(), ScalarValue::Int64(Some(3))]).is_err());
        assert!(call(&f, vec![q, text("(?<=a)b")]).is_err());
        assert_eq!(
            call(&f, vec![url, re, ScalarValue::Int64(Some(2))]).expect("ok"),
            None
        );
    }

    #[test]
    fn split_index_as_flink() {
        let f = SplitIndex::new();
        let url = text("https://www.nexmark.com/abc/def/ghi/item.htm?query=1");
        let at = |i: i64| {
            call(
                &f,
                vec![url.clone(), text("/"), ScalarValue::Int64(Some(i))],
            )
            .expect("ok")
        };
        assert_eq!(at(1), Some(String::new()));
        assert_eq!(at(3), Some("abc".into()));
        assert_eq!(at(5), Some("ghi".into()));
        assert_eq!(at(7), None);
        assert_eq!(at(-1), None);
        let code = call(
            &f,
            vec![
                text("a,b"),
                ScalarValue::Int64(Some(44)),
                ScalarValue::Int64(Some(1)),
            ],
        );
        assert_eq!(code.expect("ok"), Some("b".into()));
        let empty = call(&f, vec![text(""), text(","), ScalarValue::Int64(Some(0))]);
        assert_eq!(empty.expect("ok"), None);
    }
}
