//! Fixed lengths of time: interval literals in nanoseconds, and durations for humans.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::Expr;

/// The length of a constant interval in nanoseconds, looking through aliases and casts. Days
/// count as 24 hours; an interval with months is refused (`None`): it has no fixed length.
pub fn interval_ns(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(i)), _) if i.months == 0 => {
            Some(i64::from(i.days) * 86_400_000_000_000 + i.nanoseconds)
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(i)), _) => {
            Some(i64::from(i.days) * 86_400_000_000_000 + i64::from(i.milliseconds) * 1_000_000)
        }
        Expr::Alias(a) => interval_ns(&a.expr),
        Expr::Cast(c) => interval_ns(&c.expr),
        _ => None,
    }
}

/// A duration for humans: `0s`, `2s`, `150ms`, `7ns`.
pub fn humanize_ns(ns: i64) -> String {
    match ns {
        0 => "0s".into(),
        n if n % 1_000_000_000 == 0 => format!("{}s", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
        n => format!("{n}ns"),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, IntervalUnit};
    use datafusion::logical_expr::{cast, lit};

    use super::*;

    #[test]
    fn intervals_through_aliases_and_casts() {
        let two_days = lit(ScalarValue::IntervalMonthDayNano(Some(
            IntervalMonthDayNano::new(0, 2, 5),
        )));
        assert_eq!(interval_ns(&two_days), Some(2 * 86_400_000_000_000 + 5));
        assert_eq!(
            interval_ns(&two_days.clone().alias("x")),
            Some(2 * 86_400_000_000_000 + 5)
        );
        let casted = cast(two_days, DataType::Interval(IntervalUnit::MonthDayNano));
        assert_eq!(interval_ns(&casted), Some(2 * 86_400_000_000_000 + 5));
        let month = lit(ScalarValue::IntervalMonthDayNano(Some(
            IntervalMonthDayNano::new(1, 0, 0),
        )));
        assert_eq!(interval_ns(&month), None);
        assert_eq!(humanize_ns(2_000_000_000), "2s");
        assert_eq!(humanize_ns(150_000_000), "150ms");
    }
}
