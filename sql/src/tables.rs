//! DataFusion table providers over Weir objects: streams (read from the log, written by INSERT),
//! `TUMBLE(...)` windowed streams, and materialized views.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{
    Session as DfSession, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::{DataFusionError, ScalarValue, exec_err, not_impl_err, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use futures::TryStreamExt;
use weir_engine::operator::{HopOperator, Operator, SessionOperator, TumbleOperator};

use crate::database::{Database, StreamEntry, ViewEntry};

/// How long a read of a view waits for the view to catch up with its source.
pub(crate) const VIEW_READ_WAIT: Duration = Duration::from_secs(10);

fn external(e: impl Into<crate::Error>) -> DataFusionError {
    DataFusionError::External(Box::new(e.into()))
}

async fn read_log(entry: Arc<StreamEntry>) -> datafusion::error::Result<Vec<Vec<RecordBatch>>> {
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
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if let Some(producer) = &self.producer {
            wait_for_producer(Arc::clone(producer)).await?;
        }
        let partitions = read_log(Arc::clone(&self.entry)).await?;
        Ok(MemorySourceConfig::try_new_exec(
            &partitions,
            self.schema(),
            projection.cloned(),
        )?)
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

/// Which windows a window table function assigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// `TUMBLE(stream, time, size)`.
    Tumble {
        /// Window size in nanoseconds.
        size_ns: i64,
    },
    /// `SESSION(stream, time, gap)`: per group key, sessions end after `gap` without events.
    Session {
        /// The gap in nanoseconds.
        gap_ns: i64,
    },
    /// `HOP(stream, time, slide, size)`.
    Hop {
        /// Distance between window starts in nanoseconds.
        slide_ns: i64,
        /// Window size in nanoseconds.
        size_ns: i64,
    },
}

impl WindowSpec {
    /// The window size in nanoseconds; `None` for sessions, whose length varies.
    pub fn size_ns(&self) -> Option<i64> {
        match self {
            Self::Tumble { size_ns } | Self::Hop { size_ns, .. } => Some(*size_ns),
            Self::Session { .. } => None,
        }
    }
}

/// What a window table function windows.
#[derive(Debug, Clone)]
pub enum WindowInput {
    /// A stream's rows.
    Stream(Arc<StreamEntry>),
    /// The rows of a materialized view (a derived stream).
    View(Arc<ViewEntry>),
    /// The rows of a subquery (`TUMBLE((SELECT ...), ts, ...)`), as planned.
    Query(Arc<LogicalPlan>),
}

/// A window table function applied to a stream or view: its rows with `window_start` and
/// `window_end`.
#[derive(Debug)]
pub struct WindowTable {
    /// What is windowed.
    pub input: WindowInput,
    /// The schema of the rows windowed.
    pub input_schema: SchemaRef,
    /// Index of the time column in the input.
    pub time_index: usize,
    /// The windows.
    pub spec: WindowSpec,
    schema: SchemaRef,
}

impl WindowTable {
    /// Builds the window assigner for this table.
    pub fn operator(&self) -> weir_engine::Result<Box<dyn Operator>> {
        let schema = &self.input_schema;
        Ok(match self.spec {
            WindowSpec::Tumble { size_ns } => {
                Box::new(TumbleOperator::try_new(schema, self.time_index, size_ns)?)
            }
            WindowSpec::Hop { slide_ns, size_ns } => Box::new(HopOperator::try_new(
                schema,
                self.time_index,
                slide_ns,
                size_ns,
            )?),
            WindowSpec::Session { gap_ns } => {
                Box::new(SessionOperator::try_new(schema, self.time_index, gap_ns)?)
            }
        })
    }
}

#[async_trait]
impl TableProvider for WindowTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if let WindowSpec::Session { .. } = self.spec {
            return not_impl_err!(
                "SESSION windows are formed per GROUP BY key, so they exist only in continuous \
                 views; in a batch query, number sessions with LAG(ts) OVER (PARTITION BY key ORDER BY ts)"
            );
        }
        let partitions = match &self.input {
            WindowInput::Stream(stream) => read_log(Arc::clone(stream)).await?,
            WindowInput::View(view) => vec![read_view(Arc::clone(view)).await?],
            WindowInput::Query(plan) => {
                let exec = state.create_physical_plan(plan).await?;
                vec![datafusion::physical_plan::collect(exec, state.task_ctx()).await?]
            }
        };
        let mut op = self.operator().map_err(external)?;
        let windowed = partitions
            .into_iter()
            .map(|p| {
                p.into_iter()
                    .map(|b| op.process_batch(b))
                    .collect::<weir_engine::Result<Vec<_>>>()
                    .map(|v| v.into_iter().flatten().collect::<Vec<_>>())
            })
            .collect::<weir_engine::Result<Vec<_>>>()
            .map_err(external)?;
        Ok(MemorySourceConfig::try_new_exec(
            &windowed,
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// The window table functions: `tumble` and `hop`.
#[derive(Debug)]
pub struct WindowFunction {
    db: Database,
    kind: WindowKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WindowKind {
    Tumble,
    Hop,
    Session,
}

impl WindowFunction {
    /// `TUMBLE(stream, time_column, size)`, resolving streams in `db`.
    pub fn tumble(db: Database) -> Self {
        Self {
            db,
            kind: WindowKind::Tumble,
        }
    }

    /// `HOP(stream, time_column, slide, size)`, resolving streams in `db`.
    pub fn hop(db: Database) -> Self {
        Self {
            db,
            kind: WindowKind::Hop,
        }
    }

    /// `SESSION(stream, time_column, gap)`, resolving streams in `db`.
    pub fn session(db: Database) -> Self {
        Self {
            db,
            kind: WindowKind::Session,
        }
    }
}

/// The name an argument names: a bare identifier or a string literal.
fn name_arg(e: &Expr) -> Option<String> {
    match e {
        Expr::Column(c) if c.relation.is_none() => Some(c.name.clone()),
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _) => {
            Some(s.clone())
        }
        _ => None,
    }
}

/// The length of an interval literal in nanoseconds; months are refused (not a fixed length).
pub fn interval_ns(e: &Expr) -> Option<i64> {
    let v = match e {
        Expr::Literal(v, _) => v,
        Expr::Alias(a) => return interval_ns(&a.expr),
        _ => return None,
    };
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i64::from(i.days) * 86_400_000_000_000 + i.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i64::from(i.days) * 86_400_000_000_000 + i64::from(i.milliseconds) * 1_000_000)
        }
        _ => None,
    }
}

impl WindowFunction {
    /// The stream or view a window function names.
    fn relation(&self, name: &str) -> datafusion::error::Result<(WindowInput, SchemaRef)> {
        if let Some(entry) = self.db.stream(name) {
            let schema = Arc::clone(&entry.schema);
            Ok((WindowInput::Stream(entry), schema))
        } else if let Some(view) = self.db.view(name) {
            let schema = Arc::clone(view.table.schema());
            Ok((WindowInput::View(view), schema))
        } else {
            Err(external(crate::Error::UndefinedRelation(name.to_string())))
        }
    }
}

impl TableFunctionImpl for WindowFunction {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let (name, usage, expected) = match self.kind {
            WindowKind::Tumble => ("TUMBLE", "TUMBLE(stream, time_column, INTERVAL size)", 3),
            WindowKind::Hop => (
                "HOP",
                "HOP(stream, time_column, INTERVAL slide, INTERVAL size)",
                4,
            ),
            WindowKind::Session => ("SESSION", "SESSION(stream, time_column, INTERVAL gap)", 3),
        };
        if exprs.len() != expected {
            return plan_err!("{name} takes {usage}, got {} arguments", exprs.len());
        }
        let (stream, time) = (&exprs[0], &exprs[1]);
        // `TUMBLE((SELECT ...), ...)` arrives as EXISTS (SELECT ...): see the parser.
        let (input, input_schema, stream_name) = if let Expr::Exists(e) = stream {
            let sq = &e.subquery;
            let schema = Arc::new(sq.subquery.schema().as_arrow().clone());
            (
                WindowInput::Query(Arc::clone(&sq.subquery)),
                schema,
                "the subquery".to_string(),
            )
        } else {
            let Some(stream_name) = name_arg(stream) else {
                return plan_err!(
                    "{name}'s first argument must name a stream or view, or be a (SELECT ...), not {stream}"
                );
            };
            let (input, schema) = self.relation(&stream_name)?;
            (input, schema, stream_name)
        };
        let Some(time_name) = name_arg(time) else {
            return plan_err!("{name}'s second argument must name a timestamp column, not {time}");
        };
        for column in ["window_start", "window_end"] {
            if input_schema.index_of(column).is_ok() {
                return Err(external(crate::Error::WrongObject {
                    sqlstate: "42701",
                    message: format!(
                        "{stream_name} already has a column {column}, which {name} adds; \
                         rename it in {stream_name} ({column} AS ...)"
                    ),
                }));
            }
        }
        let Ok(time_index) = input_schema.index_of(&time_name) else {
            return Err(external(crate::Error::UndefinedColumn(format!(
                "column \"{time_name}\" does not exist in {stream_name}"
            ))));
        };
        let duration = |e: &Expr, what: &str| {
            interval_ns(e).filter(|n| *n > 0).ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "{name}'s {what} must be a positive INTERVAL of fixed length (no months), not {e}"
                ))
            })
        };
        let spec = match self.kind {
            WindowKind::Hop => {
                let slide_ns = duration(&exprs[2], "slide")?;
                let size_ns = duration(&exprs[3], "size")?;
                WindowSpec::Hop { slide_ns, size_ns }
            }
            WindowKind::Tumble => WindowSpec::Tumble {
                size_ns: duration(&exprs[2], "size")?,
            },
            WindowKind::Session => WindowSpec::Session {
                gap_ns: duration(&exprs[2], "gap")?,
            },
        };
        let mut table = WindowTable {
            schema: Arc::clone(&input_schema),
            input,
            input_schema,
            time_index,
            spec,
        };
        table.schema = table.operator().map_err(external)?.schema();
        Ok(Arc::new(table))
    }
}

/// Waits (briefly) until the query of a stream made `AS SELECT` (and those upstream of it)
/// has appended the results of everything committed to its sources, so that a read after an
/// insert sees its effect: results reach the stream with the query's checkpoints.
async fn wait_for_producer(producer: Arc<ViewEntry>) -> datafusion::error::Result<()> {
    let deadline = std::time::Instant::now() + VIEW_READ_WAIT;
    let error = tokio::task::spawn_blocking(move || wait_flushed(&producer, deadline))
        .await
        .map_err(|e| DataFusionError::Internal(format!("stream reader failed: {e}")))?;
    match error {
        Some(e) => exec_err!("the query that writes this stream stopped: {e}"),
        None => Ok(()),
    }
}

/// See [`wait_for_producer`]; returns the error a query stopped on, if one did.
fn wait_flushed(producer: &ViewEntry, deadline: std::time::Instant) -> Option<String> {
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
async fn read_view(entry: Arc<ViewEntry>) -> datafusion::error::Result<Vec<RecordBatch>> {
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
        return exec_err!(
            "materialized view {} stopped on an error: {error}",
            entry.def.name
        );
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

/// `weir_late_events`: every view's late events (view, watermark, event as JSON), read after
/// each view has caught up with its source.
#[derive(Debug)]
pub struct LateEventsTable {
    db: Database,
}

impl LateEventsTable {
    /// The relation over `db`'s views.
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

/// The name of the late-events relation.
pub const LATE_EVENTS: &str = "weir_late_events";

#[async_trait]
impl TableProvider for LateEventsTable {
    fn schema(&self) -> SchemaRef {
        weir_engine::runtime::late_events_schema()
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
        let views = self.db.queries();
        let batches = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            for v in &views {
                let offsets = v.source_offsets();
                v.table.wait_for(&offsets, VIEW_READ_WAIT);
                all.extend(v.late.snapshot()?);
            }
            Ok::<_, weir_engine::Error>(all)
        })
        .await
        .map_err(|e| DataFusionError::Internal(format!("late events reader failed: {e}")))?
        .map_err(external)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// The name of the relation of each view's progress through its sources.
pub const VIEW_PROGRESS: &str = "weir_view_progress";

/// `weir_view_progress`: per view, the events it has processed, the events committed to its
/// sources (their difference is its backlog), its watermark, and its newest checkpoint (epoch
/// and the events it covers: a restart replays only the events after them); read as is,
/// without waiting.
#[derive(Debug)]
pub struct ViewProgressTable {
    db: Database,
}

impl ViewProgressTable {
    /// The relation over `db`'s views.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    fn progress_schema() -> SchemaRef {
        use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
        Arc::new(Schema::new(vec![
            Field::new("view", DataType::Utf8, false),
            Field::new("processed", DataType::Int64, false),
            Field::new("committed", DataType::Int64, false),
            Field::new(
                "watermark",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
            Field::new("checkpoint_epoch", DataType::Int64, true),
            Field::new("checkpointed", DataType::Int64, true),
        ]))
    }
}

#[async_trait]
impl TableProvider for ViewProgressTable {
    fn schema(&self) -> SchemaRef {
        Self::progress_schema()
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
        use datafusion::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
        let views = self.db.queries();
        let mut names = Vec::new();
        let mut processed = Vec::new();
        let mut committed = Vec::new();
        let mut watermarks = Vec::new();
        let mut epochs = Vec::new();
        let mut checkpointed = Vec::new();
        for v in &views {
            let p = v.table.progress();
            names.push(v.def.name.clone());
            processed.push(v.table.read() as i64);
            committed.push(v.source_offsets().iter().sum::<u64>() as i64);
            watermarks.push(p.watermark_ns.map(|w| w / 1000));
            epochs.push(p.checkpoint.map(|c| c.0 as i64));
            checkpointed.push(p.checkpoint.map(|c| c.1 as i64));
        }
        let batch = RecordBatch::try_new(
            self.schema(),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(Int64Array::from(processed)),
                Arc::new(Int64Array::from(committed)),
                Arc::new(TimestampMicrosecondArray::from(watermarks)),
                Arc::new(Int64Array::from(epochs)),
                Arc::new(Int64Array::from(checkpointed)),
            ],
        )?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}
