//! `weir_checkpoints`: the newest checkpoints of every running view and stream query (up to
//! twenty each): when each became durable, how long it took, its size and the events it covers,
//! or why it failed.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;

use crate::Result;
use crate::catalog::Registry;

/// The name of the relation.
pub const CHECKPOINTS: &str = "weir_checkpoints";

fn checkpoints_schema() -> SchemaRef {
    let int = |n: &str| Field::new(n, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        int("epoch"),
        Field::new(
            "finished",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        int("write_ms"),
        int("bytes"),
        // Source events it covers: a restart from it replays only what came after.
        int("events"),
        Field::new("error", DataType::Utf8, true),
    ]))
}

/// The relation as it is now.
pub(crate) fn checkpoints_table(registry: &Registry) -> Result<Arc<dyn TableProvider>> {
    let mut view = Vec::new();
    let (mut epoch, mut finished, mut write_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bytes, mut events, mut error) = (Vec::new(), Vec::new(), Vec::new());
    for entry in registry.queries() {
        let query = entry.query.lock().unwrap_or_else(|e| e.into_inner());
        let Some(query) = query.as_ref() else {
            continue;
        };
        for c in query.checkpoints() {
            view.push(entry.def.name.clone());
            epoch.push(c.epoch as i64);
            finished.push(
                c.finished
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64),
            );
            write_ms.push(c.write_ms as i64);
            bytes.push(c.bytes as i64);
            events.push(c.events as i64);
            error.push(c.error);
        }
    }
    let schema = checkpoints_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(view)),
            Arc::new(Int64Array::from(epoch)),
            Arc::new(TimestampMicrosecondArray::from(finished)),
            Arc::new(Int64Array::from(write_ms)),
            Arc::new(Int64Array::from(bytes)),
            Arc::new(Int64Array::from(events)),
            Arc::new(StringArray::from(error)),
        ],
    )?;
    let table = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]])?;
    Ok(Arc::new(table))
}
