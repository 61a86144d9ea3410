//! A stream as a DataFusion table: scans read the log, INSERT appends to it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::{DataFusionError, exec_err, not_impl_err};
use datafusion::datasource::TableType;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use futures::{StreamExt, TryStreamExt};
use weir_engine::log::Partition;

use super::view::wait_for_producer;
use crate::catalog::{StreamEntry, ViewEntry};

pub(crate) fn external(e: impl Into<crate::Error>) -> DataFusionError {
    DataFusionError::External(Box::new(e.into()))
}

pub(crate) async fn read_log(
    entry: Arc<StreamEntry>,
) -> datafusion::error::Result<Vec<Vec<RecordBatch>>> {
    tokio::task::spawn_blocking(move || entry.log.read_all())
        .await
        .map_err(|e| DataFusionError::Internal(format!("log reader failed: {e}")))?
        .map_err(external)
}

/// A stream as a table: a scan reads every committed row of every partition (one DataFusion
/// partition per log partition); INSERT appends through the log.
#[derive(Debug)]
pub struct StreamTable {
    entry: Arc<StreamEntry>,
    /// The query that writes the stream, if it was made `AS SELECT`.
    producer: Option<Arc<ViewEntry>>,
}

impl StreamTable {
    /// The table of a stream, and the query that writes it if it was made `AS SELECT`.
    pub fn new(entry: Arc<StreamEntry>, producer: Option<Arc<ViewEntry>>) -> Self {
        Self { entry, producer }
    }

    /// The stream.
    pub fn entry(&self) -> Arc<StreamEntry> {
        Arc::clone(&self.entry)
    }
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.entry.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if let Some(producer) = &self.producer {
            wait_for_producer(Arc::clone(producer)).await?;
        }
        // Each partition up to what is committed now: one consistent snapshot, read a chunk
        // at a time as the query pulls rows, so a scan of any length runs in bounded memory.
        let partitions: Vec<Arc<dyn PartitionStream>> = self
            .entry
            .log
            .partitions()
            .iter()
            .map(|p| {
                Arc::new(LogPartitionStream {
                    schema: self.schema(),
                    until: p.committed(),
                    partition: Arc::clone(p),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        Ok(Arc::new(StreamingTableExec::try_new(
            self.schema(),
            partitions,
            projection,
            Vec::new(),
            false,
            limit,
        )?))
    }

    async fn insert_into(
        &self,
        _state: &dyn DfSession,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return not_impl_err!(
                "{insert_op} into a stream is not supported: streams are append-only"
            );
        }
        if self.producer.is_some() {
            return Err(external(crate::Error::WrongObject {
                sqlstate: "42809",
                message: format!(
                    "stream {} holds the results of its query (CREATE STREAM ... AS SELECT); \
                     it cannot be written by INSERT",
                    self.entry.def.name
                ),
            }));
        }
        let entry = Arc::clone(&self.entry);
        let sink = InsertSink::new(
            format!("stream {}", entry.def.name),
            Arc::clone(&entry.schema),
            move |batches| Ok(entry.log.append(&batches)?.rows()),
        );
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// Rows a scan reads from a log partition at a time.
const SCAN_CHUNK_ROWS: usize = 64 * 1024;

/// One log partition as a DataFusion partition: its rows from the start offset up to `until`,
/// read a chunk at a time on a blocking thread.
#[derive(Debug)]
struct LogPartitionStream {
    schema: SchemaRef,
    partition: Arc<Partition>,
    /// The committed offset when the scan was planned.
    until: u64,
}

impl PartitionStream for LogPartitionStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let partition = Arc::clone(&self.partition);
        let until = self.until;
        let start = partition.start_offset();
        let chunks = futures::stream::unfold(Some(start), move |next| {
            let partition = Arc::clone(&partition);
            async move {
                let from = next?;
                if from >= until {
                    return None;
                }
                let read = tokio::task::spawn_blocking(move || {
                    partition.read_until(from, until, SCAN_CHUNK_ROWS)
                })
                .await;
                let chunk = match read {
                    Ok(Ok(chunk)) => chunk,
                    Ok(Err(e)) => return Some((Err(external(e)), None)),
                    Err(e) => {
                        let e = DataFusionError::Internal(format!("log reader failed: {e}"));
                        return Some((Err(e), None));
                    }
                };
                let (last_offset, last) = chunk.last()?;
                let next = last_offset + last.num_rows() as u64;
                let batches: Vec<RecordBatch> = chunk.into_iter().map(|(_, b)| b).collect();
                Some((Ok(batches), Some(next)))
            }
        });
        let batches = chunks.flat_map(|r| match r {
            Ok(batches) => futures::stream::iter(batches.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(e) => futures::stream::iter(vec![Err(e)]),
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        ))
    }
}

/// Writes an INSERT's rows: collected whole and cast to the target's types, then written in one
/// step by `write` on a blocking thread, so that a statement that fails writes nothing.
pub(crate) struct InsertSink {
    /// What is written to, for plans (`stream clicks`).
    label: String,
    schema: SchemaRef,
    write: Arc<dyn Fn(Vec<RecordBatch>) -> crate::Result<u64> + Send + Sync>,
}

impl InsertSink {
    /// A sink into `label` with `schema`, writing through `write`.
    pub(crate) fn new(
        label: String,
        schema: SchemaRef,
        write: impl Fn(Vec<RecordBatch>) -> crate::Result<u64> + Send + Sync + 'static,
    ) -> Self {
        Self {
            label,
            schema,
            write: Arc::new(write),
        }
    }
}

impl std::fmt::Debug for InsertSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InsertSink({})", self.label)
    }
}

impl DisplayAs for InsertSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InsertSink: {}", self.label)
    }
}

#[async_trait]
impl DataSink for InsertSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> datafusion::error::Result<u64> {
        // Collect first: a bad value anywhere fails the statement before anything is written.
        let batches: Vec<RecordBatch> = data.try_collect().await?;
        // Parameters can arrive as a related type (Utf8 for a Utf8View column).
        let batches = batches
            .iter()
            .map(|b| conform(b, &self.schema))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let write = Arc::clone(&self.write);
        tokio::task::spawn_blocking(move || write(batches))
            .await
            .map_err(|e| DataFusionError::Internal(format!("write failed: {e}")))?
            .map_err(external)
    }
}

/// Casts `batch` to the column types of `schema` (values may come as a related type, Utf8 for a
/// Utf8View column); NOT NULL is checked where the rows are stored.
pub(crate) fn conform(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> datafusion::error::Result<RecordBatch> {
    if batch.num_columns() != schema.fields().len() {
        return exec_err!(
            "INSERT produced {} columns for a stream of {}",
            batch.num_columns(),
            schema.fields().len()
        );
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}
