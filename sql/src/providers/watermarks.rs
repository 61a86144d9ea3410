//! `weir_watermarks`: every source partition of every running view, with its watermark, whether
//! it counts (active) or not (idle), how long since its last event, and which holds the view's
//! watermark back: the answer to "why is my window not in the view yet?".

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;

use crate::Result;
use crate::catalog::Registry;

/// The name of the relation.
pub const WATERMARKS: &str = "weir_watermarks";

fn watermarks_schema() -> SchemaRef {
    let time = |n: &str| Field::new(n, DataType::Timestamp(TimeUnit::Microsecond, None), true);
    Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("partition", DataType::Int64, false),
        // The partition's largest event time minus the stream's delay.
        time("watermark"),
        // Whether it counts for the watermark: it delivered an event within the idle timeout.
        Field::new("active", DataType::Boolean, false),
        Field::new("seconds_since_event", DataType::Float64, true),
        time("view_watermark"),
        // The active partition with the lowest watermark: the one windows wait for.
        Field::new("holds_back", DataType::Boolean, false),
    ]))
}

/// The relation as it is now: one row per source partition of every running query.
pub(crate) fn watermarks_table(registry: &Registry) -> Result<Arc<dyn TableProvider>> {
    let now = Instant::now();
    let mut view = Vec::new();
    let mut source = Vec::new();
    let mut partition = Vec::new();
    let (mut watermark, mut active, mut since) = (Vec::new(), Vec::new(), Vec::new());
    let (mut view_watermark, mut holds_back) = (Vec::new(), Vec::new());
    for entry in registry.queries() {
        let progress = entry.table.progress();
        let lowest = lowest_active(&progress).map(|(_, _, w, _)| w);
        for (s, partitions) in progress.partitions.iter().enumerate() {
            let name = entry
                .sources
                .get(s)
                .map_or_else(|| format!("source {s}"), |e| e.def.name.clone());
            for (i, p) in partitions.iter().enumerate() {
                view.push(entry.def.name.clone());
                source.push(name.clone());
                partition.push(i as i64);
                watermark.push(p.watermark_ns.map(|w| w / 1000));
                active.push(p.active);
                since.push(
                    p.last_data
                        .map(|t| now.saturating_duration_since(t).as_secs_f64()),
                );
                view_watermark.push(progress.watermark_ns.map(|w| w / 1000));
                holds_back.push(p.active && p.watermark_ns.is_some() && p.watermark_ns == lowest);
            }
        }
    }
    let schema = watermarks_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(view)),
            Arc::new(StringArray::from(source)),
            Arc::new(Int64Array::from(partition)),
            Arc::new(TimestampMicrosecondArray::from(watermark)),
            Arc::new(BooleanArray::from(active)),
            Arc::new(Float64Array::from(since)),
            Arc::new(TimestampMicrosecondArray::from(view_watermark)),
            Arc::new(BooleanArray::from(holds_back)),
        ],
    )?;
    let table = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]])?;
    Ok(Arc::new(table))
}

/// The active source partition with the lowest watermark (the one windows wait for), if any:
/// its source's position, its own, its watermark and when it last had data.
pub(crate) fn lowest_active(
    progress: &weir_engine::result_table::Progress,
) -> Option<(usize, usize, i64, Option<Instant>)> {
    progress
        .partitions
        .iter()
        .enumerate()
        .flat_map(|(s, parts)| parts.iter().enumerate().map(move |(i, p)| (s, i, p)))
        .filter(|(_, _, p)| p.active)
        .filter_map(|(s, i, p)| p.watermark_ns.map(|w| (s, i, w, p.last_data)))
        .min_by_key(|&(s, i, w, _)| (w, s, i))
}
