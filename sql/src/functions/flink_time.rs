//! Date and time functions: Flink's as Flink defines them (`DATE_FORMAT` with Java patterns,
//! `HOUR`, `MINUTE`, `SECOND`, `YEAR`, `QUARTER`, `MONTH`, `WEEK`, `DAYOFYEAR`, `DAYOFMONTH`,
//! `DAYOFWEEK`), and PostgreSQL's `to_char` with its template patterns.

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
use super::pg_pattern::PgPattern;

const NANOS: DataType = DataType::Timestamp(TimeUnit::Nanosecond, None);

/// Whether a value of `t` can be read as a timestamp without time zone: timestamps, dates, and
/// text in ISO form (Flink also formats strings such as `'2026-01-01 00:00:00'`).
pub(super) fn timestamp_like(t: &DataType) -> bool {
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
pub(super) fn timestamps(
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

pub(super) fn naive(nanos: i64) -> NaiveDateTime {
    DateTime::from_timestamp_nanos(nanos).naive_utc()
}

/// Whose patterns a [`TimeFormat`] function reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Patterns {
    /// Flink's `DATE_FORMAT`: Java `DateTimeFormatter` patterns (`'yyyy-MM-dd HH:mm'`).
    Java,
    /// PostgreSQL's `to_char`: template patterns (`'YYYY-MM-DD HH24:MI'`).
    Postgres,
}

/// A pattern compiled for one of the dialects.
enum Compiled {
    Java(JavaPattern),
    Postgres(PgPattern),
}

impl Compiled {
    fn format(&self, t: &NaiveDateTime, out: &mut String) {
        match self {
            Self::Java(p) => p.format(t, out),
            Self::Postgres(p) => p.format(t, out),
        }
    }
}

/// `DATE_FORMAT(timestamp, pattern)` as Flink defines it and `to_char(timestamp, template)` as
/// PostgreSQL does: the timestamp as text. A pattern with parts Weir cannot honour (time zones,
/// week-based fields) is refused, never printed as literal text; `to_char` of a number or an
/// interval (PostgreSQL's numeric templates) is refused too.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimeFormat {
    patterns: Patterns,
    signature: Signature,
}

impl TimeFormat {
    /// The function reading `patterns`.
    pub fn new(patterns: Patterns) -> Self {
        Self {
            patterns,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }

    fn title(&self) -> &'static str {
        match self.patterns {
            Patterns::Java => "DATE_FORMAT",
            Patterns::Postgres => "to_char",
        }
    }

    fn compile(&self, p: &str) -> datafusion::error::Result<Compiled> {
        let compiled = match self.patterns {
            Patterns::Java => JavaPattern::parse(p).map(Compiled::Java),
            Patterns::Postgres => PgPattern::parse(p).map(Compiled::Postgres),
        };
        compiled.map_err(|e| {
            datafusion::error::DataFusionError::Execution(format!(
                "{} pattern '{p}': {e}",
                self.title()
            ))
        })
    }
}

impl ScalarUDFImpl for TimeFormat {
    fn name(&self) -> &str {
        match self.patterns {
            Patterns::Java => "date_format",
            Patterns::Postgres => "to_char",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::error::Result<DataType> {
        let text = |p: &DataType| {
            matches!(
                p,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
            )
        };
        let value_ok = |t: &DataType| match self.patterns {
            Patterns::Java => timestamp_like(t),
            // PostgreSQL's to_char of text is an error too.
            Patterns::Postgres => {
                matches!(
                    t,
                    DataType::Timestamp(_, None)
                        | DataType::Date32
                        | DataType::Date64
                        | DataType::Null
                )
            }
        };
        match arg_types {
            [t, p] if value_ok(t) && text(p) => Ok(DataType::Utf8),
            [DataType::Timestamp(_, Some(_)), _] => plan_err!(
                "{} takes a TIMESTAMP without time zone; cast a TIMESTAMPTZ to the zone you mean first",
                self.title()
            ),
            [t, _]
                if t.is_numeric() || matches!(t, DataType::Interval(_) | DataType::Duration(_)) =>
            {
                plan_err!(
                    "{} of a {t} (a numeric or interval template) is not supported; format timestamps and dates",
                    self.title()
                )
            }
            _ => plan_err!(
                "{} takes a timestamp and a pattern, not {arg_types:?}",
                self.title()
            ),
        }
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let [value, pattern] = args.args.as_slice() else {
            return exec_err!("{} takes two arguments", self.title());
        };
        let rows = args.number_rows;
        let times = timestamps(value, rows)?;
        // The pattern is almost always a constant: compile it once per batch.
        let constant = match pattern {
            ColumnarValue::Scalar(s) => match scalar_text(s) {
                Some(p) => Some(Some(self.compile(&p)?)),
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
                            owned = self.compile(p.value(row))?;
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

/// Flink's `PROCTIME()`: the processing time, the moment Weir processes the row, in
/// milliseconds by the clock continuous queries' processing-time watermarks follow (it never
/// goes back). A query that calls it runs in processing time; in a batch query it is the time
/// the query runs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ProcTime {
    signature: Signature,
}

impl ProcTime {
    /// The function.
    pub fn new() -> Self {
        Self {
            signature: Signature::nullary(Volatility::Volatile),
        }
    }
}

impl Default for ProcTime {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for ProcTime {
    fn name(&self) -> &str {
        "proctime"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(
            Some(weir_engine::watermark::processing_time_ms()),
            None,
        )))
    }
}
