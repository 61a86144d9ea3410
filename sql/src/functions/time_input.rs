//! Timestamp and interval text as PostgreSQL reads it, where Arrow's parser is narrower:
//! `'2026-01-01 10:00'` (no seconds) and the `hh:mm:ss` part of an interval
//! (`'1 day 02:03:04'`, which is how PostgreSQL itself writes intervals).

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::compute::{CastOptions, cast, cast_with_options};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{ExprSchema, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    Cast, ColumnarValue, Expr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};

/// A timestamp's text with `:00` seconds added where it has hours and minutes only
/// (`2026-01-01 10:00`, `2026-01-01T10:00+02`); other text as it is.
pub fn timestamp_text(text: &str) -> Cow<'_, str> {
    let t = text.trim();
    let (date, rest) = t.split_at(t.len().min(10));
    let date_like = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    let Some(time) = rest.strip_prefix([' ', 'T']) else {
        return Cow::Borrowed(text);
    };
    let clock = time
        .find(|c: char| !(c.is_ascii_digit() || c == ':'))
        .unwrap_or(time.len());
    let (hm, tail) = time.split_at(clock);
    let parts: Vec<&str> = hm.split(':').collect();
    let hours_minutes = parts.len() == 2
        && (1..=2).contains(&parts[0].len())
        && parts[1].len() == 2
        && !tail.starts_with('.');
    if !date_like || !hours_minutes {
        return Cow::Borrowed(text);
    }
    Cow::Owned(format!("{date}{}{hm}:00{tail}", &rest[..1]))
}

/// An interval's text with each `[-]h:mm[:ss[.f]]` written out in units Arrow reads
/// (`1 day 02:03:04` as `1 day 2 hours 3 minutes 4 seconds`); other text as it is.
pub fn interval_text(text: &str) -> Cow<'_, str> {
    if !text.contains(':') {
        return Cow::Borrowed(text);
    }
    let mut out: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let (sign, clock) = match word.strip_prefix('-') {
            Some(rest) => ("-", rest),
            None => ("", word.strip_prefix('+').unwrap_or(word)),
        };
        let parts: Vec<&str> = clock.split(':').collect();
        let numeric = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| numeric(p)) {
            out.push(word.to_string());
            continue;
        }
        for (value, unit) in parts.iter().zip(["hours", "minutes", "seconds"]) {
            out.push(format!("{sign}{value} {unit}"));
        }
    }
    Cow::Owned(out.join(" "))
}

/// A cast of text to a timestamp or an interval that reads PostgreSQL's forms: Arrow's cast
/// first, and only for a batch it refuses, the text rewritten by [`timestamp_text`] or
/// [`interval_text`] and cast again (still an error where PostgreSQL's would be one too).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimeInput {
    to: DataType,
    signature: Signature,
}

impl ScalarUDFImpl for TimeInput {
    fn name(&self) -> &str {
        match self.to {
            DataType::Interval(_) => "interval_in",
            _ => "timestamp_in",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.to.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [text] = arrays.as_slice() else {
            return datafusion::common::exec_err!("{} takes one argument", self.name());
        };
        let strict = CastOptions {
            safe: false,
            ..Default::default()
        };
        let out: ArrayRef = match cast_with_options(text, &self.to, &strict) {
            Ok(out) => out,
            Err(first) => {
                let text = cast(text, &DataType::Utf8)?;
                let Some(text) = text.as_any().downcast_ref::<StringArray>() else {
                    return Err(first.into());
                };
                let rewrite = match self.to {
                    DataType::Interval(_) => interval_text,
                    _ => timestamp_text,
                };
                let rewritten: StringArray = text.iter().map(|t| t.map(rewrite)).collect();
                cast_with_options(&(Arc::new(rewritten) as ArrayRef), &self.to, &strict)?
            }
        };
        super::result_of(&args.args, out)
    }
}

/// Rewrites casts from text to a timestamp or an interval in `expr` into [`TimeInput`].
pub(crate) fn time_input(expr: Expr, schema: &dyn ExprSchema) -> Result<Transformed<Expr>> {
    expr.transform_up(|e| {
        let Expr::Cast(Cast { expr: inner, field }) = &e else {
            return Ok(Transformed::no(e));
        };
        let to = field.data_type();
        let text = matches!(
            inner.get_type(schema)?,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        );
        if !text || !matches!(to, DataType::Timestamp(..) | DataType::Interval(_)) {
            return Ok(Transformed::no(e));
        }
        let udf = TimeInput {
            to: to.clone(),
            signature: Signature::any(1, Volatility::Immutable),
        };
        Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(Arc::new(ScalarUDF::from(udf)), vec![inner.as_ref().clone()]),
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::{interval_text, timestamp_text};

    #[test]
    fn reads_postgres_forms() {
        assert_eq!(timestamp_text("2026-01-01 10:00"), "2026-01-01 10:00:00");
        assert_eq!(
            timestamp_text("2026-01-01T9:05+02"),
            "2026-01-01T9:05:00+02"
        );
        assert_eq!(timestamp_text("2026-01-01 10:00:01"), "2026-01-01 10:00:01");
        assert_eq!(timestamp_text("2026-01-01"), "2026-01-01");
        assert_eq!(timestamp_text("nonsense"), "nonsense");
        assert_eq!(
            interval_text("1 day 02:03:04.5"),
            "1 day 02 hours 03 minutes 04.5 seconds"
        );
        assert_eq!(interval_text("-01:30"), "-01 hours -30 minutes");
        assert_eq!(interval_text("3 mons"), "3 mons");
    }
}
