//! Runs continuous queries: reads their source log, drives their pipeline, fills their results.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::LineDelimitedWriter;

use crate::log::StreamLog;
use crate::pipeline::Pipeline;
use crate::result_table::{Progress, ResultTable};
use crate::watermark::{WatermarkTracker, max_event_time_ns};
use crate::{Error, Result};

/// Rows read from one partition per round, so that one busy partition cannot starve the others.
const ROWS_PER_ROUND: usize = 64 * 1024;

/// Everything a continuous query needs to run.
#[derive(Debug)]
pub struct QuerySpec {
    /// The query's name (the view's), for logs.
    pub name: String,
    /// The stream it reads, every partition from the start.
    pub source: Arc<StreamLog>,
    /// The event-time column of the source, if it has one.
    pub event_time: Option<usize>,
    /// The watermark delay (ns): how far behind the largest event time the watermark stays.
    pub delay_ns: i64,
    /// After this long without data, a partition stops holding the watermark back.
    pub idle_timeout: Duration,
    /// The operators.
    pub pipeline: Pipeline,
    /// Where results go.
    pub sink: Arc<ResultTable>,
    /// Where late events go, one row each (see [`late_events_schema`]).
    pub late: Arc<ResultTable>,
}

/// The schema of a query's late events: the query, the watermark the event arrived behind,
/// and the event (the row as the windowed aggregate saw it) as a JSON object.
pub fn late_events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        Field::new(
            "watermark",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("event", DataType::Utf8, false),
    ]))
}

/// Renders late rows as rows of [`late_events_schema`].
fn late_events(view: &str, watermark_ns: Option<i64>, rows: &[RecordBatch]) -> Result<RecordBatch> {
    let mut json = Vec::new();
    {
        let mut writer = LineDelimitedWriter::new(&mut json);
        for b in rows {
            writer.write(b)?;
        }
        writer.finish()?;
    }
    let json = String::from_utf8(json)
        .map_err(|e| Error::Internal(format!("the JSON writer produced invalid UTF-8: {e}")))?;
    let events: StringArray = json.lines().map(Some).collect();
    let n = events.len();
    Ok(RecordBatch::try_new(
        late_events_schema(),
        vec![
            Arc::new(StringArray::from(vec![view; n])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                watermark_ns
                    .map(|w| w / 1000);
                n
            ])),
            Arc::new(events),
        ],
    )?)
}

/// A continuous query running on its own thread; dropping it stops the query.
#[derive(Debug)]
pub struct RunningQuery {
    name: String,
    stop: Arc<AtomicBool>,
    source: Arc<StreamLog>,
    handle: Option<JoinHandle<()>>,
}

impl RunningQuery {
    /// Starts `spec` on a new thread.
    pub fn spawn(spec: QuerySpec) -> Result<Self> {
        spec.pipeline.check_output(spec.sink.schema())?;
        let stop = Arc::new(AtomicBool::new(false));
        let name = spec.name.clone();
        let source = Arc::clone(&spec.source);
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name(format!("query-{}", spec.name))
            .spawn(move || {
                let sink = Arc::clone(&spec.sink);
                let name = spec.name.clone();
                if let Err(e) = run(spec, &flag) {
                    tracing::error!(query = %name, error = %e, "continuous query stopped");
                    let mut p = sink.progress();
                    p.error = Some(e.to_string());
                    sink.set_progress(p);
                }
            })
            .map_err(|e| Error::Io {
                context: format!("starting query thread {name}"),
                source: e,
            })?;
        Ok(Self {
            name,
            stop,
            source,
            handle: Some(handle),
        })
    }

    /// The query's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops the query and waits for its thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.source.notifier().notify();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for RunningQuery {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(mut spec: QuerySpec, stop: &AtomicBool) -> Result<()> {
    let partitions = spec.source.partitions().to_vec();
    let mut offsets: Vec<u64> = partitions.iter().map(|p| p.start_offset()).collect();
    let mut tracker = WatermarkTracker::new(partitions.len(), spec.delay_ns, spec.idle_timeout);
    // Wake up often enough to notice partitions going idle.
    let tick = (spec.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(500));
    let mut last_watermark = None;
    let notifier = Arc::clone(spec.source.notifier());
    tracing::info!(query = %spec.name, partitions = partitions.len(), "continuous query started");
    while !stop.load(Ordering::Acquire) {
        let seen = notifier.generation();
        let mut progressed = false;
        for (p, partition) in partitions.iter().enumerate() {
            for (offset, batch) in partition.read(offsets[p], ROWS_PER_ROUND)? {
                if offset > offsets[p] {
                    // Retention removed rows this query had not read yet.
                    tracing::warn!(
                        query = %spec.name,
                        partition = p,
                        skipped = offset - offsets[p],
                        "rows were deleted by retention before the query read them"
                    );
                }
                offsets[p] = offset + batch.num_rows() as u64;
                progressed = true;
                if let Some(t) = spec.event_time {
                    if let Some(max) = max_event_time_ns(batch.column(t).as_ref())? {
                        tracker.observe(p, max, Instant::now());
                    }
                }
                let out = spec.pipeline.process_batch(batch)?;
                spec.sink.append(out)?;
                let late = spec.pipeline.take_late();
                if !late.is_empty() {
                    spec.late
                        .append(vec![late_events(&spec.name, last_watermark, &late)?])?;
                }
            }
        }
        let watermark = tracker.watermark(Instant::now());
        if let Some(wm) = watermark {
            if Some(wm) != last_watermark {
                let out = spec.pipeline.on_watermark(wm)?;
                spec.sink.append(out)?;
                last_watermark = Some(wm);
            }
        }
        spec.sink.set_progress(Progress {
            offsets: offsets.clone(),
            watermark_ns: watermark,
            late_rows: spec.pipeline.late_rows(),
            error: None,
        });
        if !progressed {
            notifier.wait_past(seen, tick);
        }
    }
    Ok(())
}
