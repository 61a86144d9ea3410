//! Runs continuous queries: reads their source log, drives their pipeline, fills their results.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::LineDelimitedWriter;

use crate::dataflow::Dataflow;
use crate::log::Notifier;
use crate::log::StreamLog;
use crate::result_table::{Progress, ResultTable};
use crate::watermark::{WatermarkTracker, max_event_time_ns};
use crate::{Error, Result};

/// Rows read from one partition per round, so that one busy partition cannot starve the others.
const ROWS_PER_ROUND: usize = 64 * 1024;

/// A stream a continuous query reads, and how its watermark is made.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// The stream, read in every partition from the start.
    pub log: Arc<StreamLog>,
    /// The event-time column of the source, if it has one.
    pub event_time: Option<usize>,
    /// The watermark delay (ns): how far behind the largest event time the watermark stays.
    pub delay_ns: i64,
    /// After this long without data, a partition stops holding the watermark back.
    pub idle_timeout: Duration,
}

/// Everything a continuous query needs to run.
#[derive(Debug)]
pub struct QuerySpec {
    /// The query's name (the view's), for logs.
    pub name: String,
    /// The streams it reads; [`Dataflow::Source`] nodes refer to them by position.
    pub sources: Vec<SourceSpec>,
    /// The operators.
    pub dataflow: Dataflow,
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
    wake: Arc<Notifier>,
    handle: Option<JoinHandle<()>>,
}

impl RunningQuery {
    /// Starts `spec` on a new thread.
    pub fn spawn(spec: QuerySpec) -> Result<Self> {
        spec.dataflow
            .check_output(spec.sink.schema(), usize::from(spec.sink.has_visibility()))?;
        if spec.dataflow.source_count() > spec.sources.len() {
            return Err(Error::Internal(format!(
                "query {} reads source {} of {}; this is a bug",
                spec.name,
                spec.dataflow.source_count() - 1,
                spec.sources.len()
            )));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let name = spec.name.clone();
        // One notifier wakes the query when any of its sources commits rows.
        let wake = Arc::new(Notifier::default());
        for s in &spec.sources {
            s.log.notifier().forward_to(&wake);
        }
        let flag = Arc::clone(&stop);
        let thread_wake = Arc::clone(&wake);
        let handle = std::thread::Builder::new()
            .name(format!("query-{}", spec.name))
            .spawn(move || {
                let sink = Arc::clone(&spec.sink);
                let name = spec.name.clone();
                if let Err(e) = run(spec, &flag, &thread_wake) {
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
            wake,
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
        self.wake.notify();
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

/// One source as the query reads it.
struct SourceState {
    spec: SourceSpec,
    offsets: Vec<u64>,
    tracker: WatermarkTracker,
}

fn run(mut spec: QuerySpec, stop: &AtomicBool, wake: &Notifier) -> Result<()> {
    let mut sources: Vec<SourceState> = spec
        .sources
        .iter()
        .map(|s| SourceState {
            offsets: s
                .log
                .partitions()
                .iter()
                .map(|p| p.start_offset())
                .collect(),
            tracker: WatermarkTracker::new(s.log.partitions().len(), s.delay_ns, s.idle_timeout),
            spec: s.clone(),
        })
        .collect();
    // Wake up often enough to notice partitions going idle.
    let idle = sources
        .iter()
        .map(|s| s.spec.idle_timeout)
        .min()
        .unwrap_or(Duration::from_secs(5));
    let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_millis(500));
    let mut last_watermarks: Vec<Option<i64>> = vec![None; sources.len()];
    let mut last_watermark = None;
    tracing::info!(query = %spec.name, sources = sources.len(), "continuous query started");
    while !stop.load(Ordering::Acquire) {
        let seen = wake.generation();
        let mut progressed = false;
        for (s, source) in sources.iter_mut().enumerate() {
            let partitions = source.spec.log.partitions().to_vec();
            let ends = source.spec.log.snapshot_offsets();
            for (p, partition) in partitions.iter().enumerate() {
                for (offset, batch) in
                    partition.read_until(source.offsets[p], ends[p], ROWS_PER_ROUND)?
                {
                    if offset > source.offsets[p] {
                        // Retention removed rows this query had not read yet.
                        tracing::warn!(
                            query = %spec.name,
                            source = s,
                            partition = p,
                            skipped = offset - source.offsets[p],
                            "rows were deleted by retention before the query read them"
                        );
                    }
                    source.offsets[p] = offset + batch.num_rows() as u64;
                    progressed = true;
                    if let Some(t) = source.spec.event_time {
                        if let Some(max) = max_event_time_ns(batch.column(t).as_ref())? {
                            source.tracker.observe(p, max, Instant::now());
                        }
                    }
                    let out = spec.dataflow.process_batch(s, &batch)?;
                    spec.sink.append(out)?;
                    let late = spec.dataflow.take_late();
                    if !late.is_empty() {
                        spec.late
                            .append(vec![late_events(&spec.name, last_watermark, &late)?])?;
                    }
                }
            }
        }
        let now = Instant::now();
        let watermarks: Vec<Option<i64>> = sources
            .iter_mut()
            .map(|s| s.tracker.watermark(now))
            .collect();
        if watermarks != last_watermarks {
            let out = spec.dataflow.on_watermark(&watermarks)?;
            spec.sink.append(out)?;
            let late = spec.dataflow.take_late();
            if !late.is_empty() {
                spec.late
                    .append(vec![late_events(&spec.name, last_watermark, &late)?])?;
            }
            last_watermarks = watermarks.clone();
        }
        let watermark = watermarks
            .iter()
            .copied()
            .try_fold(i64::MAX, |m, w| w.map(|w| m.min(w)));
        last_watermark = watermark.or(last_watermark);
        spec.sink.set_progress(Progress {
            offsets: sources.iter().flat_map(|s| s.offsets.clone()).collect(),
            watermark_ns: watermark,
            late_rows: spec.dataflow.late_rows(),
            error: None,
        });
        if !progressed {
            wake.wait_past(seen, tick);
        }
    }
    Ok(())
}
