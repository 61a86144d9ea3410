//! Flink's date and time functions as Flink defines them: `DATE_FORMAT` with Java patterns, and
//! `HOUR`, `MINUTE`, `SECOND`, `YEAR`, `QUARTER`, `MONTH`, `WEEK`, `DAYOFYEAR`, `DAYOFMONTH`,
//! `DAYOFWEEK` of a timestamp.

use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike};
use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, StringBuilder, TimestampNanosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::java_pattern::JavaPattern;

const NANOS: DataType = DataType::Timestamp(TimeUnit::Nanosecond, None);

/// Whether a value of `t` can be read as a timestamp without time zone: timestamps, dates, and
/// text in ISO form (Flink also formats strings such as `'2026-01-01 00:00:00'`).
fn timestamp_like(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(_, None)
            | DataType::Date32
            | DataType::Date64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Null
    )
}

/// The argument as nanosecond timestamps, one per row.
fn timestamps(
    arg: &ColumnarValue,
    rows: usize,
) -> datafusion::error::Result<TimestampNanosecondArray> {
    let array = arg.to_array(rows)?;
    let cast = cast(&array, &NANOS)?;
    Ok(cast
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .cloned()
        .unwrap_or_else(|| TimestampNanosecondArray::new_null(rows)))
}

fn naive(nanos: i64) -> NaiveDateTime {
    DateTime::from_timestamp_nanos(nanos).naive_utc()
}

/// `DATE_FORMAT(timestamp, pattern)`: the timestamp as text in a Java `DateTimeFormatter`
/// pattern (`'yyyy-MM-dd HH:mm'`), as Flink defines it. Patterns with letters Weir cannot
/// honour (time zones, week-based fields) are refused, never printed as literal text.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DateFormat {
    signature: Signature,
}

impl DateFormat {
    /// The function.
    pub fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl Default for DateFormat {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for DateFormat {
    fn name(&self) -> &str {
        "date_format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::error::Result<DataType> {
        match arg_types {
            [t, p]
                if timestamp_like(t)
                    && matches!(
                        p,
                        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
                    ) =>
            {
                Ok(DataType::Utf8)
            }
            [DataType::Timestamp(_, Some(_)), _] => plan_err!(
                "DATE_FORMAT takes a TIMESTAMP without time zone; cast a TIMESTAMPTZ to the zone you mean first"
            ),
            _ => plan_err!(
                "DATE_FORMAT takes a timestamp and a Java pattern such as 'yyyy-MM-dd HH:mm', not {arg_types:?}"
            ),
        }
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let [value, pattern] = args.args.as_slice() else {
            return exec_err!("DATE_FORMAT takes two arguments");
        };
        let rows = args.number_rows;
        let times = timestamps(value, rows)?;
        let compile = |p: &str| {
            JavaPattern::parse(p).map_err(|e| {
                datafusion::error::DataFusionError::Execution(format!(
                    "DATE_FORMAT pattern '{p}': {e}"
                ))
            })
        };
        // The pattern is almost always a constant: compile it once per batch.
        let constant = match pattern {
            ColumnarValue::Scalar(s) => match scalar_text(s) {
                Some(p) => Some(Some(compile(&p)?)),
                None => Some(None),
            },
            ColumnarValue::Array(_) => None,
        };
        let patterns = match &constant {
            Some(_) => None,
            None => Some(cast(&pattern.to_array(rows)?, &DataType::Utf8)?),
        };
        let mut out = StringBuilder::with_capacity(rows, rows * 16);
        let mut text = String::new();
        for row in 0..rows {
            let owned;
            let compiled = match (&constant, &patterns) {
                (Some(c), _) => c.as_ref(),
                (None, Some(p)) => {
                    let p = p
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::StringArray>();
                    match p.filter(|p| p.is_valid(row)) {
                        Some(p) => {
                            owned = compile(p.value(row))?;
                            Some(&owned)
                        }
                        None => None,
                    }
                }
                (None, None) => None,
            };
            match compiled {
                Some(c) if times.is_valid(row) => {
                    text.clear();
                    c.format(&naive(times.value(row)), &mut text);
                    out.append_value(&text);
                }
                _ => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

fn scalar_text(s: &ScalarValue) -> Option<String> {
    match s {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => v.clone(),
        _ => None,
    }
}

/// Which part of a timestamp a [`TimePart`] function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// `YEAR`.
    Year,
    /// `QUARTER`: 1 to 4.
    Quarter,
    /// `MONTH`: 1 to 12.
    Month,
    /// `WEEK`: the ISO 8601 week of the year, 1 to 53.
    Week,
    /// `DAYOFYEAR`: 1 to 366.
    DayOfYear,
    /// `DAYOFMONTH`: 1 to 31.
    DayOfMonth,
    /// `DAYOFWEEK`: 1 (Sunday) to 7 (Saturday), as Flink counts.
    DayOfWeek,
    /// `HOUR`: 0 to 23.
    Hour,
    /// `MINUTE`: 0 to 59.
    Minute,
    /// `SECOND`: 0 to 59.
    Second,
}

impl Part {
    /// Every part, with its function's name.
    pub const ALL: [(Part, &'static str); 10] = [
        (Part::Year, "year"),
        (Part::Quarter, "quarter"),
        (Part::Month, "month"),
        (Part::Week, "week"),
        (Part::DayOfYear, "dayofyear"),
        (Part::DayOfMonth, "dayofmonth"),
        (Part::DayOfWeek, "dayofweek"),
        (Part::Hour, "hour"),
        (Part::Minute, "minute"),
        (Part::Second, "second"),
    ];

    fn of(self, t: &NaiveDateTime) -> i64 {
        i64::from(match self {
            Part::Year => return i64::from(t.year()),
            Part::Quarter => (t.month() - 1) / 3 + 1,
            Part::Month => t.month(),
            Part::Week => t.iso_week().week(),
            Part::DayOfYear => t.ordinal(),
            Part::DayOfMonth => t.day(),
            Part::DayOfWeek => t.weekday().num_days_from_sunday() + 1,
            Part::Hour => t.hour(),
            Part::Minute => t.minute(),
            Part::Second => t.second(),
        })
    }
}

/// `HOUR(ts)`, `MINUTE(ts)`, ...: one part of a timestamp as a BIGINT, as Flink defines them.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimePart {
    part: Part,
    name: &'static str,
    signature: Signature,
}

impl TimePart {
    /// The function for `part`, called `name`.
    pub fn new(part: Part, name: &'static str) -> Self {
        Self {
            part,
            name,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TimePart {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::error::Result<DataType> {
        match arg_types {
            [t] if timestamp_like(t) => Ok(DataType::Int64),
            _ => plan_err!(
                "{}() takes a TIMESTAMP or DATE without time zone, not {arg_types:?}",
                self.name.to_uppercase()
            ),
        }
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("{} takes one argument", self.name);
        };
        let times = timestamps(value, args.number_rows)?;
        let parts: Int64Array = times
            .iter()
            .map(|v| v.map(|n| self.part.of(&naive(n))))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(parts) as ArrayRef))
    }
}
