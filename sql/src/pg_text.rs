//! Values as PostgreSQL 15 writes them in text form with its default settings (DateStyle ISO,
//! IntervalStyle postgres, extra_float_digits 1) and the session's TimeZone: `t` / `f`, `2026-01-01 00:00:00`,
//! `1 day 02:03:04`, `Infinity`, `\x00ff`, `{1,2}`. A column of a type PostgreSQL has no text
//! form for here is refused when the formatter is made, never written approximately.

use std::fmt::Write as _;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, DecimalType, Float16Type, Float32Type,
    Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, IntervalDayTimeType,
    IntervalMonthDayNanoType, IntervalUnit, IntervalYearMonthType, Time32MillisecondType,
    Time32SecondType, Time64MicrosecondType, Time64NanosecondType, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use crate::{Error, Result};

/// Writes the values of one column as PostgreSQL's text output.
pub struct PgText {
    array: ArrayRef,
    /// For lists: the elements' formatter.
    items: Option<Box<PgText>>,
    /// Where `timestamptz` values are written in local time; UTC without one.
    zone: Option<Zone>,
}

/// A session's `TimeZone`, in which `timestamptz` values are written (`2026-01-01
/// 01:00:00+01` in Europe/Paris): an IANA zone name, as PostgreSQL takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(chrono_tz::Tz);

impl Zone {
    /// The zone named `name` (`Europe/Paris`, `UTC`), if there is one.
    pub fn named(name: &str) -> Option<Self> {
        let name = name.trim().trim_matches('\'');
        name.parse::<chrono_tz::Tz>()
            .ok()
            .or_else(|| {
                // PostgreSQL's zone names are case-insensitive.
                chrono_tz::TZ_VARIANTS
                    .iter()
                    .find(|z| z.name().eq_ignore_ascii_case(name))
                    .copied()
            })
            .map(Self)
    }

    /// Seconds east of UTC at the instant `utc_micros`.
    fn offset_seconds(self, utc_micros: i64) -> i64 {
        use chrono::{Offset, TimeZone};
        let Some(at) = chrono::DateTime::from_timestamp_micros(utc_micros) else {
            return 0;
        };
        i64::from(
            self.0
                .offset_from_utc_datetime(&at.naive_utc())
                .fix()
                .local_minus_utc(),
        )
    }
}

impl std::fmt::Debug for PgText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgText({})", self.array.data_type())
    }
}

fn unsupported(t: &DataType) -> Error {
    Error::NotSupported(format!(
        "values of type {t} have no PostgreSQL text form in Weir yet"
    ))
}

impl PgText {
    /// A formatter for `array`, or the refusal of a type without a PostgreSQL text form here.
    pub fn try_new(array: ArrayRef) -> Result<Self> {
        let t = array.data_type().clone();
        let mut items = None;
        match &t {
            DataType::Null
            | DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::Date32
            | DataType::Date64
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Timestamp(..)
            | DataType::Interval(_)
            | DataType::Duration(_)
            | DataType::Decimal128(..) => {}
            DataType::List(_) | DataType::LargeList(_) => {
                let values = match &t {
                    DataType::List(_) => array.as_list::<i32>().values().clone(),
                    _ => array.as_list::<i64>().values().clone(),
                };
                items = Some(Box::new(Self::try_new(values)?));
            }
            other => return Err(unsupported(other)),
        }
        Ok(Self {
            array,
            items,
            zone: None,
        })
    }

    /// The formatter writing `timestamptz` values in `zone` (UTC for `None`).
    pub fn in_zone(mut self, zone: Option<Zone>) -> Self {
        self.zone = zone;
        self.items = self.items.map(|i| Box::new(i.in_zone(zone)));
        self
    }

    /// Whether row `row` is NULL.
    pub fn is_null(&self, row: usize) -> bool {
        // A NullArray has no validity buffer: its values are NULL without being marked so.
        self.array.data_type() == &DataType::Null || self.array.is_null(row)
    }

    /// Appends the text of the (non-NULL) value at `row`.
    pub fn write(&self, row: usize, out: &mut String) {
        let a = &self.array;
        match a.data_type() {
            DataType::Null => {}
            DataType::Boolean => out.push(if a.as_boolean().value(row) { 't' } else { 'f' }),
            DataType::Int8 => push(out, a.as_primitive::<Int8Type>().value(row)),
            DataType::Int16 => push(out, a.as_primitive::<Int16Type>().value(row)),
            DataType::Int32 => push(out, a.as_primitive::<Int32Type>().value(row)),
            DataType::Int64 => push(out, a.as_primitive::<Int64Type>().value(row)),
            DataType::UInt8 => push(out, a.as_primitive::<UInt8Type>().value(row)),
            DataType::UInt16 => push(out, a.as_primitive::<UInt16Type>().value(row)),
            DataType::UInt32 => push(out, a.as_primitive::<UInt32Type>().value(row)),
            DataType::UInt64 => push(out, a.as_primitive::<UInt64Type>().value(row)),
            DataType::Float16 => float(out, f64::from(a.as_primitive::<Float16Type>().value(row))),
            DataType::Float32 => float32(out, a.as_primitive::<Float32Type>().value(row)),
            DataType::Float64 => float(out, a.as_primitive::<Float64Type>().value(row)),
            DataType::Utf8 => out.push_str(a.as_string::<i32>().value(row)),
            DataType::LargeUtf8 => out.push_str(a.as_string::<i64>().value(row)),
            DataType::Utf8View => out.push_str(a.as_string_view().value(row)),
            DataType::Binary => bytea(out, a.as_binary::<i32>().value(row)),
            DataType::LargeBinary => bytea(out, a.as_binary::<i64>().value(row)),
            DataType::BinaryView => bytea(out, a.as_binary_view().value(row)),
            DataType::Date32 => date(out, i64::from(a.as_primitive::<Date32Type>().value(row))),
            DataType::Date64 => date(out, a.as_primitive::<Date64Type>().value(row) / 86_400_000),
            DataType::Time32(unit) | DataType::Time64(unit) => time(out, time_nanos(a, *unit, row)),
            DataType::Timestamp(unit, None) => timestamp(out, timestamp_nanos(a, *unit, row), None),
            DataType::Timestamp(unit, Some(_)) => {
                let nanos = timestamp_nanos(a, *unit, row);
                let offset = self
                    .zone
                    .map_or(0, |z| z.offset_seconds(nanos.div_euclid(1000)));
                timestamp(out, nanos + offset * 1_000_000_000, Some(offset))
            }
            DataType::Interval(unit) => interval_value(out, a, *unit, row),
            DataType::Duration(unit) => duration(out, a, *unit, row),
            // numeric keeps its scale's digits: 12.50.
            DataType::Decimal128(precision, scale) => {
                out.push_str(&<Decimal128Type as DecimalType>::format_decimal(
                    a.as_primitive::<Decimal128Type>().value(row),
                    *precision,
                    *scale,
                ))
            }
            DataType::List(_) | DataType::LargeList(_) => self.list(row, out),
            _ => {}
        }
    }

    /// `{1,2,NULL}`, with elements quoted where PostgreSQL quotes them.
    fn list(&self, row: usize, out: &mut String) {
        let Some(items) = &self.items else { return };
        let (start, end) = match self.array.data_type() {
            DataType::List(_) => {
                let o = self.array.as_list::<i32>().value_offsets();
                (o[row] as usize, o[row + 1] as usize)
            }
            _ => {
                let o = self.array.as_list::<i64>().value_offsets();
                (o[row] as usize, o[row + 1] as usize)
            }
        };
        out.push('{');
        for i in start..end {
            if i > start {
                out.push(',');
            }
            if items.is_null(i) {
                out.push_str("NULL");
                continue;
            }
            let mut item = String::new();
            items.write(i, &mut item);
            let quote = item.is_empty()
                || item.eq_ignore_ascii_case("null")
                || item
                    .chars()
                    .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_whitespace());
            if quote {
                out.push('"');
                for c in item.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            } else {
                out.push_str(&item);
            }
        }
        out.push('}');
    }
}

fn push(out: &mut String, v: impl std::fmt::Display) {
    let _ = write!(out, "{v}");
}

/// A float8 as PostgreSQL 15 writes it: the shortest digits that read back the same value, in
/// fixed notation for decimal exponents from -4 to 14 and as `1e+15`, `1.5e-07` otherwise.
fn float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        shortest(out, &scientific(v), 15);
    }
}

/// A float4: the same rules with float4's shortest digits, fixed notation up to exponent 5.
fn float32(out: &mut String, v: f32) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        shortest(out, &scientific(v), 6);
    }
}

/// Rust's shortest scientific form of a float (`-1.5e-7`), without allocating: it is written
/// once per value of a COPY.
fn scientific(v: impl std::fmt::LowerExp) -> ScientificBuf {
    let mut buf = ScientificBuf([0; 32], 0);
    let _ = std::fmt::Write::write_fmt(&mut buf, format_args!("{v:e}"));
    buf
}

/// Room for the longest shortest form of an f64 (`-2.2250738585072014e-308`, 24 bytes).
struct ScientificBuf([u8; 32], usize);

impl std::fmt::Write for ScientificBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.1 + s.len();
        let room = self.0.get_mut(self.1..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.1 = end;
        Ok(())
    }
}

impl std::ops::Deref for ScientificBuf {
    type Target = str;

    fn deref(&self) -> &str {
        std::str::from_utf8(&self.0[..self.1]).unwrap_or("")
    }
}

/// Lays out Rust's shortest scientific form (`-1.5e-7`) as PostgreSQL does.
fn shortest(out: &mut String, sci: &str, fixed_below: i32) {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let mut buf = [0u8; 32];
    let mut n = 0;
    for b in mantissa.bytes().filter(u8::is_ascii_digit).take(buf.len()) {
        buf[n] = b;
        n += 1;
    }
    let digits = std::str::from_utf8(&buf[..n]).unwrap_or("0");
    out.push_str(sign);
    if digits.chars().all(|c| c == '0') {
        out.push('0');
        return;
    }
    if (-4..fixed_below).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(digits);
        } else {
            let point = exp as usize + 1;
            if digits.len() <= point {
                out.push_str(digits);
                for _ in digits.len()..point {
                    out.push('0');
                }
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

fn bytea(out: &mut String, bytes: &[u8]) {
    out.push_str("\\x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// Days since 1970-01-01 as `YYYY-MM-DD` (years before 1 as PostgreSQL's `BC`).
fn date(out: &mut String, days: i64) {
    let (y, m, d) = civil(days);
    if y <= 0 {
        let _ = write!(out, "{:04}-{m:02}-{d:02} BC", 1 - y);
    } else {
        let _ = write!(out, "{y:04}-{m:02}-{d:02}");
    }
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Nanoseconds within a day as `HH:MM:SS[.ffffff]`, trailing zeros of the fraction dropped.
fn time(out: &mut String, nanos: i64) {
    let micros = nanos.div_euclid(1000);
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
    fraction(out, frac);
}

/// `.5`, `.000001`: microseconds as a fraction of a second, trailing zeros dropped.
fn fraction(out: &mut String, micros: i64) {
    if micros != 0 {
        let (mut digits, mut width) = (micros, 6);
        while digits % 10 == 0 {
            digits /= 10;
            width -= 1;
        }
        let _ = write!(out, ".{digits:0width$}");
    }
}

/// A timestamp (nanoseconds since the epoch, UTC) to microseconds, as PostgreSQL stores them;
/// `with_zone` adds the session's offset (Weir's sessions are UTC: `+00`).
/// A timestamp; with `offset` (seconds east of UTC, `nanos` already local), a timestamptz's
/// offset after it as PostgreSQL writes it: `+00`, `-04`, `+05:30`.
fn timestamp(out: &mut String, nanos: i64, offset: Option<i64>) {
    let micros = nanos.div_euclid(1000);
    let days = micros.div_euclid(86_400_000_000);
    let (y, m, d) = civil(days);
    if y <= 0 {
        let _ = write!(out, "{:04}-{m:02}-{d:02} ", 1 - y);
    } else {
        let _ = write!(out, "{y:04}-{m:02}-{d:02} ");
    }
    time(out, micros.rem_euclid(86_400_000_000) * 1000);
    if let Some(offset) = offset {
        let sign = if offset < 0 { '-' } else { '+' };
        let abs = offset.abs();
        let _ = write!(out, "{sign}{:02}", abs / 3600);
        if abs % 3600 != 0 {
            let _ = write!(out, ":{:02}", (abs / 60) % 60);
        }
        if abs % 60 != 0 {
            let _ = write!(out, ":{:02}", abs % 60);
        }
    }
    if y <= 0 {
        out.push_str(" BC");
    }
}

fn time_nanos(a: &ArrayRef, unit: TimeUnit, row: usize) -> i64 {
    match unit {
        TimeUnit::Second => {
            i64::from(a.as_primitive::<Time32SecondType>().value(row)) * 1_000_000_000
        }
        TimeUnit::Millisecond => {
            i64::from(a.as_primitive::<Time32MillisecondType>().value(row)) * 1_000_000
        }
        TimeUnit::Microsecond => a.as_primitive::<Time64MicrosecondType>().value(row) * 1000,
        TimeUnit::Nanosecond => a.as_primitive::<Time64NanosecondType>().value(row),
    }
}

fn timestamp_nanos(a: &ArrayRef, unit: TimeUnit, row: usize) -> i64 {
    match unit {
        TimeUnit::Second => a
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .saturating_mul(1_000_000_000),
        TimeUnit::Millisecond => a
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .saturating_mul(1_000_000),
        TimeUnit::Microsecond => a
            .as_primitive::<TimestampMicrosecondType>()
            .value(row)
            .saturating_mul(1000),
        TimeUnit::Nanosecond => a.as_primitive::<TimestampNanosecondType>().value(row),
    }
}

fn interval_value(out: &mut String, a: &ArrayRef, unit: IntervalUnit, row: usize) {
    let (months, days, nanos) = match unit {
        IntervalUnit::YearMonth => (a.as_primitive::<IntervalYearMonthType>().value(row), 0, 0),
        IntervalUnit::DayTime => {
            let v = a.as_primitive::<IntervalDayTimeType>().value(row);
            (0, v.days, i64::from(v.milliseconds) * 1_000_000)
        }
        IntervalUnit::MonthDayNano => {
            let v = a.as_primitive::<IntervalMonthDayNanoType>().value(row);
            (v.months, v.days, v.nanoseconds)
        }
    };
    interval(out, months, days, nanos / 1000);
}

/// A duration (the difference of two timestamps) as PostgreSQL writes that difference, an
/// interval whose whole days are taken out of its hours (`1 day 02:00:00`, not `26:00:00`).
fn duration(out: &mut String, a: &ArrayRef, unit: TimeUnit, row: usize) {
    use datafusion::arrow::datatypes::{
        DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType,
        DurationSecondType,
    };
    let micros = match unit {
        TimeUnit::Second => a
            .as_primitive::<DurationSecondType>()
            .value(row)
            .saturating_mul(1_000_000),
        TimeUnit::Millisecond => a
            .as_primitive::<DurationMillisecondType>()
            .value(row)
            .saturating_mul(1000),
        TimeUnit::Microsecond => a.as_primitive::<DurationMicrosecondType>().value(row),
        TimeUnit::Nanosecond => a.as_primitive::<DurationNanosecondType>().value(row) / 1000,
    };
    const DAY: i64 = 86_400_000_000;
    let days = i32::try_from(micros / DAY).unwrap_or(i32::MAX);
    interval(out, 0, days, micros % DAY);
}

/// An interval as IntervalStyle `postgres` writes it: `1 year 2 mons 3 days 04:05:06.5`,
/// `-1 days`, `00:00:00` for nothing.
fn interval(out: &mut String, months: i32, days: i32, micros: i64) {
    let mut parts: Vec<String> = Vec::new();
    let (years, mons) = (months / 12, months % 12);
    let unit = |n: i32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if years != 0 {
        parts.push(unit(years, "year", "years"));
    }
    if mons != 0 {
        parts.push(unit(mons, "mon", "mons"));
    }
    if days != 0 {
        parts.push(unit(days, "day", "days"));
    }
    if micros != 0 || parts.is_empty() {
        let negative = micros < 0;
        let abs = micros.unsigned_abs() as i64;
        let secs = abs / 1_000_000;
        let mut t = String::new();
        // A negative time after positive parts carries its own sign, as PostgreSQL writes it.
        if negative {
            t.push('-');
        } else if !parts.is_empty() && (months < 0 || days < 0) {
            t.push('+');
        }
        let _ = write!(
            t,
            "{:02}:{:02}:{:02}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60
        );
        fraction(&mut t, abs % 1_000_000);
        parts.push(t);
    }
    out.push_str(&parts.join(" "));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int64Array,
        IntervalMonthDayNanoArray, ListArray, StringArray, TimestampMicrosecondArray,
        TimestampNanosecondArray,
    };
    use datafusion::arrow::datatypes::{Int64Type, IntervalMonthDayNano};

    use super::*;

    fn texts(array: ArrayRef) -> Vec<String> {
        let f = PgText::try_new(array).expect("formatter");
        (0..f.array.len())
            .map(|i| {
                if f.is_null(i) {
                    return "NULL".into();
                }
                let mut s = String::new();
                f.write(i, &mut s);
                s
            })
            .collect()
    }

    #[test]
    fn scalars_as_postgres_writes_them() {
        assert_eq!(
            texts(Arc::new(BooleanArray::from(vec![
                Some(true),
                Some(false),
                None
            ]))),
            ["t", "f", "NULL"]
        );
        assert_eq!(texts(Arc::new(Int64Array::from(vec![-7, 0]))), ["-7", "0"]);
        assert_eq!(
            texts(Arc::new(Float64Array::from(vec![
                0.1,
                1.5,
                100.0,
                1e15,
                123456789012345.0,
                1.5e-7,
                0.0001,
                -2.5e20,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NAN,
                0.0,
                1.0 / 3.0,
            ]))),
            [
                "0.1",
                "1.5",
                "100",
                "1e+15",
                "123456789012345",
                "1.5e-07",
                "0.0001",
                "-2.5e+20",
                "Infinity",
                "-Infinity",
                "NaN",
                "0",
                "0.3333333333333333",
            ]
        );
        assert_eq!(
            texts(Arc::new(Float32Array::from(vec![
                1.1f32,
                1e6f32,
                123456.0f32
            ]))),
            ["1.1", "1e+06", "123456"]
        );
        assert_eq!(texts(Arc::new(StringArray::from(vec!["a\tb"]))), ["a\tb"]);
        assert_eq!(
            texts(Arc::new(BinaryArray::from(vec![&[0u8, 255][..]]))),
            ["\\x00ff"]
        );
    }

    #[test]
    fn dates_times_and_intervals() {
        assert_eq!(
            texts(Arc::new(Date32Array::from(vec![
                0, 20454, -1, -719_528, -719_529
            ]))),
            [
                "1970-01-01",
                "2026-01-01",
                "1969-12-31",
                "0001-01-01 BC",
                "0002-12-31 BC"
            ]
        );
        // 2026-01-01 00:00:00, then half a second later, then a microsecond.
        let base = 1_767_225_600_000_000_i64;
        assert_eq!(
            texts(Arc::new(TimestampMicrosecondArray::from(vec![
                base,
                base + 500_000,
                base + 1,
            ]))),
            [
                "2026-01-01 00:00:00",
                "2026-01-01 00:00:00.5",
                "2026-01-01 00:00:00.000001"
            ]
        );
        assert_eq!(
            texts(Arc::new(
                TimestampNanosecondArray::from(vec![base * 1000 + 1_999]).with_timezone("+00:00")
            )),
            ["2026-01-01 00:00:00.000001+00"]
        );
        let iv = |m, d, n| IntervalMonthDayNano::new(m, d, n);
        assert_eq!(
            texts(Arc::new(IntervalMonthDayNanoArray::from(vec![
                iv(0, 1, 7_384_000_000_000),
                iv(14, 3, 0),
                iv(0, 0, 0),
                iv(0, -1, 0),
                iv(0, 0, -1_500_000_000),
                iv(0, -1, 3_600_000_000_000),
            ]))),
            [
                "1 day 02:03:04",
                "1 year 2 mons 3 days",
                "00:00:00",
                "-1 days",
                "-00:00:01.5",
                "-1 days +01:00:00"
            ]
        );
    }

    #[test]
    fn arrays_quote_what_needs_quotes() {
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), None, Some(3)]),
            Some(vec![]),
        ]);
        assert_eq!(texts(Arc::new(list)), ["{1,NULL,3}", "{}"]);
    }

    #[test]
    fn timestamptz_in_the_session_zone() {
        use datafusion::arrow::array::TimestampMicrosecondArray;
        let at = |zone: &str, micros: i64| {
            let array: ArrayRef =
                Arc::new(TimestampMicrosecondArray::from(vec![micros]).with_timezone("+00:00"));
            let f = PgText::try_new(array)
                .expect("formatter")
                .in_zone(Zone::named(zone));
            let mut s = String::new();
            f.write(0, &mut s);
            s
        };
        let jan = 1_767_225_600_000_000; // 2026-01-01 00:00:00 UTC
        assert_eq!(at("UTC", jan), "2026-01-01 00:00:00+00");
        assert_eq!(at("europe/paris", jan), "2026-01-01 01:00:00+01");
        assert_eq!(at("Asia/Kolkata", jan), "2026-01-01 05:30:00+05:30");
        assert_eq!(at("America/St_Johns", jan), "2025-12-31 20:30:00-03:30");
        assert!(Zone::named("Mars/Olympus").is_none());
    }
}
