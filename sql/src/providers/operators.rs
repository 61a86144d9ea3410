//! `weir_operators`: every operator of every running view and stream query, with what it has
//! done since the query started (rows in and out, rates, busy share, state, watermark).

use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;

use crate::Result;
use crate::catalog::Registry;

/// The name of the relation.
pub const OPERATORS: &str = "weir_operators";

fn operators_schema() -> SchemaRef {
    let int = |n: &str| Field::new(n, DataType::Int64, false);
    let float = |n: &str| Field::new(n, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        // Its place in the plan: 1 for the first operator over the input, counting up.
        int("operator"),
        // The operator its output goes to; NULL for the view's top operator.
        Field::new("parent", DataType::Int64, true),
        // What it reads: `source N` (the query's N-th stream) or `join`.
        Field::new("input", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        int("rows_in"),
        int("rows_out"),
        int("batches"),
        // Averages since the query started.
        float("rows_in_per_s"),
        float("rows_out_per_s"),
        float("busy_percent"),
        int("state_bytes"),
        // Groups, stored rows or open sessions.
        int("state_rows"),
        Field::new(
            "watermark",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("detail", DataType::Utf8, false),
        // Over about the last ten seconds.
        float("recent_rows_in_per_s"),
        float("recent_rows_out_per_s"),
        float("recent_busy_percent"),
    ]))
}

/// The relation as it is now: one row per operator of every running query.
pub(crate) fn operators_table(registry: &Registry) -> Result<Arc<dyn TableProvider>> {
    let mut view = Vec::new();
    let mut position = Vec::new();
    let mut parent = Vec::new();
    let mut state_rows = Vec::new();
    let mut input = Vec::new();
    let mut kind = Vec::new();
    let (mut rows_in, mut rows_out, mut batches) = (Vec::new(), Vec::new(), Vec::new());
    let (mut in_rate, mut out_rate, mut busy) = (Vec::new(), Vec::new(), Vec::new());
    let (mut state, mut watermark, mut detail) = (Vec::new(), Vec::new(), Vec::new());
    let (mut recent_in, mut recent_out, mut recent_busy) = (Vec::new(), Vec::new(), Vec::new());
    for entry in registry.queries() {
        let query = entry.query.lock().unwrap_or_else(|e| e.into_inner());
        let Some(query) = query.as_ref() else {
            continue;
        };
        for (i, place) in query.operator_stats().iter().enumerate() {
            let s = place.stats.snapshot();
            let elapsed = s.elapsed_s.max(1e-9);
            view.push(entry.def.name.clone());
            position.push(i as i64 + 1);
            parent.push(place.parent.map(|p| p as i64 + 1));
            input.push(place.input.clone());
            kind.push(s.name.to_string());
            rows_in.push(s.rows_in as i64);
            rows_out.push(s.rows_out as i64);
            batches.push(s.batches as i64);
            in_rate.push(s.rows_in as f64 / elapsed);
            out_rate.push(s.rows_out as f64 / elapsed);
            busy.push(s.busy_ns as f64 / 1e9 / elapsed * 100.0);
            state.push(s.state_bytes as i64);
            state_rows.push(s.state_rows as i64);
            watermark.push(s.watermark_ns.map(|w| w / 1000));
            detail.push(s.detail);
            recent_in.push(s.recent_rows_in_per_s);
            recent_out.push(s.recent_rows_out_per_s);
            recent_busy.push(s.recent_busy_percent);
        }
    }
    let schema = operators_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(view)),
            Arc::new(Int64Array::from(position)),
            Arc::new(Int64Array::from(parent)),
            Arc::new(StringArray::from(input)),
            Arc::new(StringArray::from(kind)),
            Arc::new(Int64Array::from(rows_in)),
            Arc::new(Int64Array::from(rows_out)),
            Arc::new(Int64Array::from(batches)),
            Arc::new(Float64Array::from(in_rate)),
            Arc::new(Float64Array::from(out_rate)),
            Arc::new(Float64Array::from(busy)),
            Arc::new(Int64Array::from(state)),
            Arc::new(Int64Array::from(state_rows)),
            Arc::new(TimestampMicrosecondArray::from(watermark)),
            Arc::new(StringArray::from(detail)),
            Arc::new(Float64Array::from(recent_in)),
            Arc::new(Float64Array::from(recent_out)),
            Arc::new(Float64Array::from(recent_busy)),
        ],
    )?;
    let table = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]])?;
    Ok(Arc::new(table))
}
