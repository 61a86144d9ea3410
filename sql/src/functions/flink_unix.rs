//! Flink's `UNIX_TIMESTAMP(text [, pattern])` and `FROM_UNIXTIME(seconds [, pattern])`: epoch
//! seconds from and to text in Java `DateTimeFormatter` patterns (default
//! `yyyy-MM-dd HH:mm:ss`), in UTC, the zone of Weir's timestamps without time zone.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, Int64Builder, StringArray, StringBuilder};
use datafusion::arrow::compute::kernels::cast::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

use super::JavaPattern;

/// Flink's default pattern for both functions.
const DEFAULT_PATTERN: &str = "yyyy-MM-dd HH:mm:ss";

/// Which of the two functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnixTime {
    /// `UNIX_TIMESTAMP(text [, pattern])`: the epoch seconds of a date-time text.
    ToSeconds,
    /// `FROM_UNIXTIME(seconds [, pattern])`: epoch seconds as date-time text.
    FromSeconds,
}

/// `UNIX_TIMESTAMP` or `FROM_UNIXTIME`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UnixTimeFunction {
    which: UnixTime,
    signature: Signature,
}

impl UnixTimeFunction {
    /// The function.
    pub fn new(which: UnixTime) -> Self {
        let value = match which {
            UnixTime::ToSeconds => DataType::Utf8,
            UnixTime::FromSeconds => DataType::Int64,
        };
        Self {
            which,
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![value.clone()]),
                    TypeSignature::Exact(vec![value, DataType::Utf8]),
                    TypeSignature::Nullary,
                ],
                Volatility::Immutable,
            ),
        }
    }

    fn title(&self) -> &'static str {
        match self.which {
            UnixTime::ToSeconds => "UNIX_TIMESTAMP",
            UnixTime::FromSeconds => "FROM_UNIXTIME",
        }
    }

    /// The pattern argument, which must be a constant.
    fn pattern(&self, args: &[ColumnarValue]) -> Result<JavaPattern> {
        let text = match args.get(1) {
            None => DEFAULT_PATTERN.to_string(),
            Some(ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(p))
                | ScalarValue::Utf8View(Some(p))
                | ScalarValue::LargeUtf8(Some(p)),
            )) => p.clone(),
            Some(_) => {
                return exec_err!(
                    "{}'s pattern must be a constant text, such as 'yyyy-MM-dd'",
                    self.title()
                );
            }
        };
        JavaPattern::parse(&text).map_err(|e| {
            datafusion::error::DataFusionError::Execution(format!(
                "{} pattern '{text}': {e}",
                self.title()
            ))
        })
    }
}

impl ScalarUDFImpl for UnixTimeFunction {
    fn name(&self) -> &str {
        match self.which {
            UnixTime::ToSeconds => "unix_timestamp",
            UnixTime::FromSeconds => "from_unixtime",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if arg_types.is_empty() {
            return plan_err!(
                "{}() without arguments reads the wall clock (processing time), which Weir \
                 does not support; give it the time to convert",
                self.title()
            );
        }
        Ok(match self.which {
            UnixTime::ToSeconds => DataType::Int64,
            UnixTime::FromSeconds => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(value) = args.args.first() else {
            return exec_err!("{} takes a value", self.title());
        };
        let pattern = self.pattern(&args.args)?;
        let rows = args.number_rows;
        let out: Arc<dyn Array> = match self.which {
            UnixTime::ToSeconds => {
                let texts = cast(&value.to_array(rows)?, &DataType::Utf8)?;
                let texts = texts
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| datafusion::error::DataFusionError::Internal("text".into()))?;
                let mut out = Int64Builder::with_capacity(texts.len());
                for text in texts.iter() {
                    match text {
                        None => out.append_null(),
                        Some(t) => match pattern.parse_datetime(t) {
                            Ok(at) => out.append_value(at.and_utc().timestamp()),
                            // Flink returns Long.MIN_VALUE here, a number that looks like a
                            // time; Weir says what it could not read instead.
                            Err(e) => {
                                return Err(datafusion::error::DataFusionError::ArrowError(
                                    Box::new(datafusion::arrow::error::ArrowError::ParseError(
                                        format!("{}: cannot read {t:?}: {e}", self.title()),
                                    )),
                                    None,
                                ));
                            }
                        },
                    }
                }
                Arc::new(out.finish())
            }
            UnixTime::FromSeconds => {
                let seconds = cast(&value.to_array(rows)?, &DataType::Int64)?;
                let seconds = seconds
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| datafusion::error::DataFusionError::Internal("i64".into()))?;
                let mut out = StringBuilder::with_capacity(seconds.len(), seconds.len() * 19);
                let mut text = String::new();
                for s in seconds.iter() {
                    match s.and_then(|s| chrono::DateTime::from_timestamp(s, 0)) {
                        None if s.is_some() => {
                            return exec_err!("{}: {s:?} seconds is out of range", self.title());
                        }
                        None => out.append_null(),
                        Some(at) => {
                            text.clear();
                            pattern.format(&at.naive_utc(), &mut text);
                            out.append_value(&text);
                        }
                    }
                }
                Arc::new(out.finish())
            }
        };
        super::result_of(&args.args, out)
    }
}
