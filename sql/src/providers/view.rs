//! A materialized view as a DataFusion table, and the waits that make a read see everything
//! committed before it.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use weir_engine::result_table::QueryError;

use super::stream::external;
use crate::catalog::ViewEntry;

/// How long a read of a view waits for the view to catch up with its source.
pub(crate) const VIEW_READ_WAIT: Duration = Duration::from_secs(10);

/// Waits (briefly) until the query of a stream made `AS SELECT` (and those upstream of it)
/// has appended the results of everything committed to its sources, so that a read after an
/// insert sees its effect: results reach the stream with the query's checkpoints.
pub(crate) async fn wait_for_producer(producer: Arc<ViewEntry>) -> datafusion::error::Result<()> {
    let deadline = std::time::Instant::now() + VIEW_READ_WAIT;
    let error = tokio::task::spawn_blocking(move || wait_flushed(&producer, deadline))
        .await
        .map_err(|e| DataFusionError::Internal(format!("stream reader failed: {e}")))?;
    match error {
        Some(e) => Err(external(crate::Error::query_stopped(
            "the query that writes this stream",
            &e,
        ))),
        None => Ok(()),
    }
}

/// See [`wait_for_producer`]; returns the error a query stopped on, if one did.
fn wait_flushed(producer: &ViewEntry, deadline: std::time::Instant) -> Option<QueryError> {
    for up in &producer.upstream {
        if let Some(e) = wait_flushed(up, deadline) {
            return Some(e);
        }
    }
    let wanted: u64 = producer.source_offsets().iter().sum();
    loop {
        let progress = producer.table.progress();
        let flushed = progress.checkpoint.map_or(0, |(_, events)| events) >= wanted;
        if flushed || progress.error.is_some() || std::time::Instant::now() >= deadline {
            return progress.error;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A view's rows once it has processed everything committed to its sources (waiting briefly).
pub(crate) async fn read_view(
    entry: Arc<ViewEntry>,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    for up in &entry.upstream {
        wait_for_producer(Arc::clone(up)).await?;
    }
    let waiting = Arc::clone(&entry);
    let progress = tokio::task::spawn_blocking(move || {
        let offsets = waiting.source_offsets();
        waiting.table.wait_for(&offsets, VIEW_READ_WAIT)
    })
    .await
    .map_err(|e| DataFusionError::Internal(format!("view reader failed: {e}")))?;
    if let Some(error) = progress.error {
        return Err(external(crate::Error::query_stopped(
            &format!("materialized view {}", entry.def.name),
            &error,
        )));
    }
    entry.table.snapshot().map_err(external)
}

/// A materialized view as a table. A scan first waits (briefly) until the view has processed
/// everything committed to its source, so a SELECT after an INSERT sees that INSERT's effect.
#[derive(Debug)]
pub struct ViewTable {
    entry: Arc<ViewEntry>,
}

impl ViewTable {
    /// The table of a view.
    pub fn new(entry: Arc<ViewEntry>) -> Self {
        Self { entry }
    }

    /// The view.
    pub fn entry(&self) -> Arc<ViewEntry> {
        Arc::clone(&self.entry)
    }
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.entry.table.schema())
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let batches = read_view(Arc::clone(&self.entry)).await?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// Keeps `Any` in scope for downcasts of providers.
pub(crate) fn provider_as<T: 'static>(p: &Arc<dyn TableProvider>) -> Option<&T> {
    (p.as_ref() as &dyn Any).downcast_ref::<T>()
}
