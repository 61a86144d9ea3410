//! Scalar functions Weir adds to DataFusion's, so that SQL written for Postgres and Flink runs
//! with the meaning its author intended: PostgreSQL's functions keep PostgreSQL's meaning, and
//! Flink's own (`DATE_FORMAT`, `HOUR`, `REGEXP_EXTRACT`, `SPLIT_INDEX`, ...) Flink's.

mod bytea;
mod checked;
mod flink_string;
mod flink_time;
mod flink_unix;
mod java_pattern;
mod like_escape;
mod modulo;
mod pg_pattern;
mod postgres_rule;
mod sql_function;
mod time_input;

use datafusion::logical_expr::ScalarUDF;

/// A function's result `out` for `args`: a scalar when every argument is one (so that constant
/// folding keeps a constant), else the array.
fn result_of(
    args: &[datafusion::logical_expr::ColumnarValue],
    out: datafusion::arrow::array::ArrayRef,
) -> datafusion::common::Result<datafusion::logical_expr::ColumnarValue> {
    use datafusion::logical_expr::ColumnarValue;
    Ok(
        if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        },
    )
}

/// Month names in English, January first.
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Day names in English, Sunday first.
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

pub use flink_string::{RegexpExtract, SplitIndex};
pub use flink_time::{Part, Patterns, ProcTime, TimeFormat, TimePart};
pub use flink_unix::{UnixTime, UnixTimeFunction};
pub use java_pattern::JavaPattern;
pub use like_escape::{LikeEscape, backslash_escapes};
pub use modulo::ModFunction;
pub use pg_pattern::PgPattern;
pub use postgres_rule::PostgresMeaning;
pub(crate) use postgres_rule::postgres_meaning;
pub use sql_function::SqlFunction;
pub use time_input::{TimeInput, interval_text, timestamp_text};

/// Every function Weir adds, to register in a planning context (each replaces any DataFusion
/// function of the same name: DataFusion's `to_char`, alias `date_format`, takes strftime
/// patterns, and so would print PostgreSQL's `'YYYY-MM-DD'` and Flink's `'yyyy-MM-dd'` as
/// that literal text).
pub fn all() -> Vec<ScalarUDF> {
    let mut out = vec![
        ScalarUDF::from(ModFunction::new()),
        ScalarUDF::from(TimeFormat::new(Patterns::Java)),
        ScalarUDF::from(TimeFormat::new(Patterns::Postgres)),
        ScalarUDF::from(RegexpExtract::new()),
        ScalarUDF::from(SplitIndex::new()),
        ScalarUDF::from(ProcTime::new()),
        ScalarUDF::from(LikeEscape::new()),
        ScalarUDF::from(UnixTimeFunction::new(UnixTime::ToSeconds)),
        ScalarUDF::from(UnixTimeFunction::new(UnixTime::FromSeconds)),
        // PostgreSQL's name for DataFusion's signum.
        datafusion::functions::math::signum()
            .as_ref()
            .clone()
            .with_aliases(["sign"]),
    ];
    for (part, name) in Part::ALL {
        out.push(ScalarUDF::from(TimePart::new(part, name)));
    }
    out
}
