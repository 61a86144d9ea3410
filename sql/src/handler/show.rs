//! SHOW STREAMS and SHOW MATERIALIZED VIEWS.

use std::sync::Arc;

use datafusion::arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::Handler;
use crate::Result;
use crate::output::Output;
use crate::time::humanize_ns;

impl Handler {
    pub(crate) fn show_streams(&self) -> Result<Output> {
        let streams = self.db.streams();
        let schema = show_streams_schema();
        let mut name = Vec::new();
        let mut parts = Vec::new();
        let mut key = Vec::new();
        let mut event_time = Vec::new();
        let mut delay = Vec::new();
        let mut row_count = Vec::new();
        for s in &streams {
            name.push(s.def.name.clone());
            parts.push(s.def.partitions as i32);
            key.push(s.def.key.clone());
            event_time.push(s.def.watermark.as_ref().map(|w| w.column.clone()));
            delay.push(s.def.watermark.as_ref().map(|w| humanize_ns(w.delay_ns)));
            row_count.push(
                s.log
                    .partitions()
                    .iter()
                    .map(|p| p.visible_rows() as i64)
                    .sum::<i64>(),
            );
        }
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(name)),
                Arc::new(Int32Array::from(parts)),
                Arc::new(StringArray::from(key)),
                Arc::new(StringArray::from(event_time)),
                Arc::new(StringArray::from(delay)),
                Arc::new(Int64Array::from(row_count)),
            ],
        )?;
        Ok(Output::batch(schema, batch))
    }

    /// `SHOW MATERIALIZED VIEWS`: each view as it is now, without waiting for views that are
    /// behind (their `backlog` says by how many events); a SELECT from a view waits instead.
    pub(crate) async fn show_views(&self) -> Result<Output> {
        let views = self.db.views();
        let progress: Vec<_> = views.iter().map(|v| v.table.progress()).collect();
        let schema = show_views_schema();
        let mut name = Vec::new();
        let mut source = Vec::new();
        let mut row_count = Vec::new();
        let mut watermark = Vec::new();
        let mut late = Vec::new();
        let mut backlog = Vec::new();
        let mut status = Vec::new();
        let mut definition = Vec::new();
        for (v, p) in views.iter().zip(progress) {
            name.push(v.def.name.clone());
            source.push(
                v.sources
                    .iter()
                    .map(|s| s.def.name.as_str())
                    .chain(v.tables.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            row_count.push(v.table.num_rows() as i64);
            watermark.push(p.watermark_ns.map(|ns| ns / 1000));
            late.push(p.late_rows as i64);
            let committed = v.source_offsets().iter().sum::<u64>();
            backlog.push(committed.saturating_sub(v.table.read()) as i64);
            status.push(match p.error {
                Some(e) => format!("failed: {e}"),
                None => "running".into(),
            });
            definition.push(v.def.query.clone());
        }
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(name)),
                Arc::new(StringArray::from(source)),
                Arc::new(Int64Array::from(row_count)),
                Arc::new(datafusion::arrow::array::TimestampMicrosecondArray::from(
                    watermark,
                )),
                Arc::new(Int64Array::from(late)),
                Arc::new(Int64Array::from(backlog)),
                Arc::new(StringArray::from(status)),
                Arc::new(StringArray::from(definition)),
            ],
        )?;
        Ok(Output::batch(schema, batch))
    }
}

pub(crate) fn show_streams_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("partitions", DataType::Int32, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("event_time", DataType::Utf8, true),
        Field::new("watermark_delay", DataType::Utf8, true),
        Field::new("rows", DataType::Int64, false),
    ]))
}

pub(crate) fn show_views_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new(
            "watermark",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("late_events", DataType::Int64, false),
        // Events committed to the view's sources that it has not processed yet.
        Field::new("backlog", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("definition", DataType::Utf8, false),
    ]))
}
