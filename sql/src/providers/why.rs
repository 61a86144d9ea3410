//! `weir_why(view [, window_end])`: why a window is not in a view yet, in one row: the
//! watermark it waits for, the view's, the partition that holds it back and since when.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, Float64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::logical_expr::Expr;

use crate::catalog::{Registry, ViewEntry};

/// The name of the table function.
pub const WHY: &str = "weir_why";

/// `weir_why`, reading the registry at each call.
#[derive(Debug)]
pub struct WhyFunction {
    registry: Registry,
}

impl WhyFunction {
    /// The function over `registry`'s views.
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }
}

fn why_schema() -> SchemaRef {
    let time = |n: &str| Field::new(n, DataType::Timestamp(TimeUnit::Microsecond, None), true);
    Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        // The window asked about (its end), if one was.
        time("window_end"),
        // The view's watermark now: windows ending at or before it are final.
        time("watermark"),
        // Whether the window still waits for the watermark (or for the view to catch up).
        Field::new("waiting", DataType::Boolean, false),
        // How far the watermark is from the window's end.
        Field::new("short_by_seconds", DataType::Float64, true),
        // `stream/partition`: the active partition with the lowest watermark.
        Field::new("held_back_by", DataType::Utf8, true),
        time("partition_watermark"),
        Field::new("seconds_since_event", DataType::Float64, true),
        // The answer, in words.
        Field::new("reason", DataType::Utf8, false),
    ]))
}

/// A timestamp argument: a timestamp literal, or text that reads as one; in nanoseconds.
fn timestamp_arg(e: &Expr) -> Option<i64> {
    let literal = match e {
        Expr::Literal(v, _) => v.clone(),
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(v, _) => v.clone(),
            _ => return None,
        },
        _ => return None,
    };
    // Text or a timestamp; a number would cast to nanoseconds after 1970, meant or not.
    let text_or_time = matches!(
        literal.data_type(),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Timestamp(..)
    );
    if !text_or_time {
        return None;
    }
    let array = literal.to_array().ok()?;
    let ns = cast(&array, &DataType::Timestamp(TimeUnit::Nanosecond, None)).ok()?;
    let ns = ns.as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>();
    (ns.len() == 1 && ns.is_valid(0)).then(|| ns.value(0))
}

/// The partition holding `view`'s watermark back, if one does: its name, watermark, seconds
/// since its last event, and the idle timeout after which it stops counting.
fn holder(
    view: &ViewEntry,
    progress: &weir_engine::result_table::Progress,
    now: Instant,
) -> Option<(String, i64, Option<f64>, u64)> {
    let (s, i, w, last) = super::watermarks::lowest_active(progress)?;
    let source = view.sources.get(s);
    let name = source.map_or("?", |e| e.def.name.as_str());
    let idle = source.map_or(0, |e| e.def.idle_timeout_ms);
    let since = last.map(|t| now.saturating_duration_since(t).as_secs_f64());
    Some((format!("{name}/{i}"), w, since, idle))
}

/// The answer for `view` and, if given, the window ending at `end` (ns).
fn answer(view: &ViewEntry, end: Option<i64>) -> datafusion::error::Result<RecordBatch> {
    let now = Instant::now();
    let progress = view.table.progress();
    let watermark = progress.watermark_ns;
    let held = holder(view, &progress, now).filter(|_| !view.processing_time);
    let committed: u64 = view.source_offsets().iter().sum();
    let backlog = committed.saturating_sub(view.table.read());
    let stamp = |ns: i64| {
        chrono::DateTime::from_timestamp_nanos(ns)
            .naive_utc()
            .to_string()
    };
    let passed = matches!((end, watermark), (Some(e), Some(w)) if w >= e);
    let waiting = end.is_none_or(|_| !passed) && progress.error.is_none();
    let short_by = match (end, watermark) {
        (Some(e), Some(w)) if e > w => Some((e - w) as f64 / 1e9),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    let window = end.map_or_else(
        || "windows".to_string(),
        |e| format!("the window ending {}", stamp(e)),
    );
    let mut reason = if let Some(error) = &progress.error {
        format!("the view stopped: {error}")
    } else if view.def.emit_on_update {
        "the view shows open windows as they change (EMIT ON UPDATE): a window is in it as soon \
         as one of its events is"
            .to_string()
    } else if passed {
        format!(
            "{window} is final: the watermark ({}) has passed its end. If it is not in the view, \
             none of its events came, or they came late ({} late events so far, in \
             weir_late_events)",
            stamp(watermark.unwrap_or_default()),
            progress.late_rows
        )
    } else if view.processing_time {
        let mut r = format!(
            "{window} close{} by processing time: the watermark is the clock PROCTIME() stamps \
             rows with (now {}), so a window closes when the clock passes its end, events or not",
            if end.is_some() { "s" } else { "" },
            stamp(watermark.unwrap_or_default())
        );
        if let Some(s) = short_by {
            r.push_str(&format!(", {s:.1} s from now"));
        }
        r
    } else if watermark.is_none() {
        "no watermark yet: no source partition has delivered an event with an event time"
            .to_string()
    } else {
        let mut r = format!(
            "{window} wait{} for the watermark, now {}",
            if end.is_some() { "s" } else { "" },
            stamp(watermark.unwrap_or_default())
        );
        if let Some(s) = short_by {
            r.push_str(&format!(", {s:.1} s short of its end"));
        }
        if let Some((name, w, since, idle)) = &held {
            r.push_str(&format!(
                "; partition {name} holds it back: its newest event time minus the delay is {}",
                stamp(*w)
            ));
            if let Some(since) = since {
                r.push_str(&format!(
                    ", its last event came {since:.1} s ago, and it stops counting once silent \
                     for {idle} ms (idle_timeout_ms); the watermark moves when it gets later \
                     events"
                ));
            }
        } else {
            r.push_str(
                "; no source partition is active (each has been silent longer than its \
                 stream's idle_timeout_ms), so the watermark stays until an event comes",
            );
        }
        r
    };
    if backlog > 0 && progress.error.is_none() {
        reason.push_str(&format!(
            ". The view is {backlog} events behind its streams and catching up"
        ));
    }
    let micros = |ns: Option<i64>| TimestampMicrosecondArray::from(vec![ns.map(|n| n / 1000)]);
    Ok(RecordBatch::try_new(
        why_schema(),
        vec![
            Arc::new(StringArray::from(vec![view.def.name.clone()])),
            Arc::new(micros(end)),
            Arc::new(micros(watermark)),
            Arc::new(BooleanArray::from(vec![waiting || backlog > 0])),
            Arc::new(Float64Array::from(vec![short_by])),
            Arc::new(StringArray::from(vec![held.as_ref().map(|h| h.0.clone())])),
            Arc::new(micros(held.as_ref().map(|h| h.1))),
            Arc::new(Float64Array::from(vec![held.as_ref().and_then(|h| h.2)])),
            Arc::new(StringArray::from(vec![reason])),
        ],
    )?)
}

impl TableFunctionImpl for WhyFunction {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        const USAGE: &str = "weir_why('view') or weir_why('view', TIMESTAMP 'window end')";
        let name = match exprs.first() {
            Some(Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _)) => {
                s.clone()
            }
            Some(Expr::Column(c)) if c.relation.is_none() => c.name.clone(),
            _ => return plan_err!("{USAGE}"),
        };
        let end = match exprs.get(1) {
            None => None,
            Some(e) => match timestamp_arg(e) {
                Some(ns) => Some(ns),
                None => return plan_err!("{USAGE}: the window end must be a timestamp, not {e}"),
            },
        };
        if exprs.len() > 2 {
            return plan_err!("{USAGE}");
        }
        let Some(view) = self.registry.view(&name) else {
            return Err(datafusion::error::DataFusionError::External(Box::new(
                crate::Error::UndefinedRelation(name),
            )));
        };
        let batch = answer(&view, end)?;
        let table = datafusion::datasource::MemTable::try_new(why_schema(), vec![vec![batch]])?;
        Ok(Arc::new(table))
    }
}
