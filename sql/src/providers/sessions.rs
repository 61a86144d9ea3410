//! `weir_sessions`: the sessions open now, who they are and what each runs (or ran last), like
//! PostgreSQL's `pg_stat_activity`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;

use crate::Result;
use crate::catalog::Registry;

/// The name of the relation.
pub const SESSIONS: &str = "weir_sessions";

fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The relation as it is now.
pub(crate) fn sessions_table(registry: &Registry) -> Result<Arc<dyn TableProvider>> {
    let time = |n: &str, nullable| {
        Field::new(
            n,
            DataType::Timestamp(TimeUnit::Microsecond, None),
            nullable,
        )
    };
    let text = |n: &str| Field::new(n, DataType::Utf8, false);
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("session", DataType::Int64, false),
        text("user"),
        // `host:port`, empty for an embedded session (the shell).
        text("address"),
        text("application"),
        time("started", false),
        // `active` while a statement runs, else `idle`.
        text("state"),
        // The running statement, or the last one.
        text("statement"),
        time("statement_started", true),
        Field::new("statements", DataType::Int64, false),
        // Over its view subscriptions (SUBSCRIBE, cursors), NULL without one: the rows waiting
        // for it to read them, and that as a share of what may wait before it is cut off.
        Field::new("subscribe_buffered_rows", DataType::Int64, true),
        Field::new("subscribe_buffer_percent", DataType::Float64, true),
    ]));
    let sessions = registry.sessions().open();
    let column = |f: &dyn Fn(&crate::catalog::sessions::SessionState) -> String| {
        Arc::new(StringArray::from_iter_values(sessions.iter().map(f)))
    };
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(
                sessions.iter().map(|s| s.id as i64),
            )),
            column(&|s| s.client.user.clone()),
            column(&|s| s.client.address.clone()),
            column(&|s| s.client.application.clone()),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                sessions.iter().map(|s| micros(s.started)),
            )),
            column(&|s| if s.active { "active" } else { "idle" }.to_string()),
            column(&|s| s.statement.clone()),
            Arc::new(TimestampMicrosecondArray::from(
                sessions
                    .iter()
                    .map(|s| s.statement_started.map(micros))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from_iter_values(
                sessions.iter().map(|s| s.statements as i64),
            )),
            Arc::new(Int64Array::from_iter(
                sessions
                    .iter()
                    .map(|s| s.subscribed.map(|(rows, _)| rows as i64)),
            )),
            Arc::new(Float64Array::from_iter(sessions.iter().map(|s| {
                s.subscribed
                    .map(|(rows, max)| rows as f64 / max.max(1) as f64 * 100.0)
            }))),
        ],
    )?;
    let table = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]])?;
    Ok(Arc::new(table))
}
