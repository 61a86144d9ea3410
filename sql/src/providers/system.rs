//! Weir's system relations: `weir_late_events`, `weir_view_progress` and `weir_connectors`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Builder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::stream::external;
use super::view::VIEW_READ_WAIT;
use crate::Result;
use crate::catalog::{Connector, Registry};

/// The system table listing every connector and how it is doing.
pub const CONNECTORS: &str = "weir_connectors";

/// `weir_late_events`: every view's late events (view, watermark, event as JSON), read after
/// each view has caught up with its source.
#[derive(Debug)]
pub struct LateEventsTable {
    db: Registry,
}

impl LateEventsTable {
    /// The relation over `db`'s views.
    pub fn new(db: Registry) -> Self {
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
/// and the events it covers: a restart replays only the events after them); events per second
/// over about the last ten seconds, how far its watermark is behind the wall clock, and the
/// source partition that holds the watermark back; read as is, without waiting.
#[derive(Debug)]
pub struct ViewProgressTable {
    db: Registry,
}

impl ViewProgressTable {
    /// The relation over `db`'s views.
    pub fn new(db: Registry) -> Self {
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
            Field::new("events_per_s", DataType::Float64, true),
            Field::new("lag_seconds", DataType::Float64, true),
            // `stream/partition`: the active partition with the lowest watermark.
            Field::new("held_back_by", DataType::Utf8, true),
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
        let (mut rates, mut lags, mut held) = (Vec::new(), Vec::new(), Vec::new());
        for v in &views {
            let p = v.table.progress();
            names.push(v.def.name.clone());
            processed.push(v.table.read() as i64);
            committed.push(v.source_offsets().iter().sum::<u64>() as i64);
            watermarks.push(p.watermark_ns.map(|w| w / 1000));
            epochs.push(p.checkpoint.map(|c| c.0 as i64));
            checkpointed.push(p.checkpoint.map(|c| c.1 as i64));
            rates.push(events_per_s(v));
            lags.push(p.watermark_ns.map(lag_seconds));
            held.push(held_back_by(v, &p));
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
                Arc::new(datafusion::arrow::array::Float64Array::from(rates)),
                Arc::new(datafusion::arrow::array::Float64Array::from(lags)),
                Arc::new(StringArray::from(held)),
            ],
        )?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// Events per second a view reads, over about the last ten seconds: what the first operator
/// over each of its sources took; `None` for a view without operators.
pub(crate) fn events_per_s(view: &crate::catalog::ViewEntry) -> Option<f64> {
    let query = view.query.lock().unwrap_or_else(|e| e.into_inner());
    let stats = query.as_ref()?.operator_stats();
    let mut seen: Vec<&str> = Vec::new();
    let mut total = None;
    for place in stats {
        let input = place.input.as_str();
        if input.starts_with("source") && !seen.contains(&input) {
            seen.push(input);
            *total.get_or_insert(0.0) += place.stats.snapshot().recent_rows_in_per_s;
        }
    }
    total
}

/// Seconds from event time `watermark_ns` to now (negative for a watermark in the future):
/// how far a view's results are behind the wall clock.
pub(crate) fn lag_seconds(watermark_ns: i64) -> f64 {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    (now_ns - watermark_ns) as f64 / 1e9
}

/// `stream/partition` of the active source partition with the lowest watermark, if any.
fn held_back_by(
    view: &crate::catalog::ViewEntry,
    progress: &weir_engine::result_table::Progress,
) -> Option<String> {
    super::watermarks::lowest_active(progress).map(|(s, i, ..)| {
        let name = view.sources.get(s).map_or("?", |e| e.def.name.as_str());
        format!("{name}/{i}")
    })
}

/// `weir_connectors`: every external source and sink, as it is now.
pub(crate) fn connectors_table(registry: &Registry) -> Result<Arc<dyn TableProvider>> {
    let batch = status_batch(&registry.connectors())?;
    let table = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    Ok(Arc::new(table))
}

/// The schema of `weir_connectors`.
fn status_schema() -> SchemaRef {
    let text = |n: &str, nullable| Field::new(n, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("stream", false),
        text("kind", false),
        text("brokers", false),
        text("topic", false),
        text("state", false),
        Field::new("records", DataType::Int64, false),
        Field::new("bad_records", DataType::Int64, false),
        text("last_error", true),
        text("last_bad_record", true),
        text("positions", false),
        Field::new("lag", DataType::Int64, true),
    ]))
}

/// One row per connector, for `weir_connectors`.
fn status_batch(connectors: &[Arc<dyn Connector>]) -> Result<RecordBatch> {
    let mut text: Vec<StringBuilder> = (0..5).map(|_| StringBuilder::new()).collect();
    let mut records = Int64Builder::new();
    let mut bad = Int64Builder::new();
    let mut last_error = StringBuilder::new();
    let mut last_bad = StringBuilder::new();
    let mut positions = StringBuilder::new();
    let mut lag = Int64Builder::new();
    for c in connectors {
        let s = c.status();
        text[0].append_value(c.stream());
        text[1].append_value(c.kind());
        text[2].append_value(&c.endpoint().brokers);
        text[3].append_value(&c.endpoint().topic);
        text[4].append_value(&s.state);
        records.append_value(s.records as i64);
        bad.append_value(s.bad_records as i64);
        last_error.append_option(s.last_error.as_deref());
        last_bad.append_option(s.last_bad_record.as_deref());
        let p: Vec<String> = s
            .positions
            .iter()
            .map(|(p, o)| format!("{p}:{o}"))
            .collect();
        positions.append_value(p.join(","));
        lag.append_option(s.lag());
    }
    let mut columns: Vec<ArrayRef> = text.iter_mut().map(|b| Arc::new(b.finish()) as _).collect();
    columns.push(Arc::new(records.finish()));
    columns.push(Arc::new(bad.finish()));
    columns.push(Arc::new(last_error.finish()));
    columns.push(Arc::new(last_bad.finish()));
    columns.push(Arc::new(positions.finish()));
    columns.push(Arc::new(lag.finish()));
    Ok(RecordBatch::try_new(status_schema(), columns)?)
}
