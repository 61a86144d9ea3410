//! Runs continuous queries: reads their source log, drives their pipeline, fills their results.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::LineDelimitedWriter;

use crate::checkpoint::{Checkpoint, CheckpointStore, OperatorState};
use crate::dataflow::Dataflow;
use crate::log::StreamLog;
use crate::log::{Notifier, Partition};
use crate::result_table::{Progress, QueryError, ResultTable};
use crate::watermark::{WatermarkTracker, max_event_time_ns, processing_time_ms};
use crate::{Error, Result};

/// Rows read from one partition per round, so that one busy partition cannot starve the others.
const ROWS_PER_ROUND: usize = 64 * 1024;

thread_local! {
    /// The stop flag of the query this thread runs, for [`check_stop`].
    static STOP: std::cell::RefCell<Option<Arc<AtomicBool>>> = const { std::cell::RefCell::new(None) };
}

/// Whether the query running on this thread was asked to stop: [`Error::Stopped`] if so. Checked
/// between operators and inside operators whose one batch can take long (a join's output), so
/// that DROP and shutdown stop a query at once rather than after its batch.
pub(crate) fn check_stop() -> Result<()> {
    let stopped = STOP.with(|s| {
        s.borrow()
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Acquire))
    });
    match stopped {
        true => Err(Error::Stopped),
        false => Ok(()),
    }
}

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
    /// The query runs in processing time (its rows are stamped by `PROCTIME()`): the source's
    /// watermark is the processing-time clock ([`processing_time_ms`]), not its event times.
    pub processing_time: bool,
}

/// Where and how often a continuous query checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointSpec {
    /// The query's checkpoint files.
    pub store: CheckpointStore,
    /// How often to take a checkpoint (when the query made progress since the last one).
    pub interval: Duration,
    /// Identifies the plan: a checkpoint with another fingerprint is not restored.
    pub fingerprint: String,
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
    /// Checkpoints: restored on start, taken periodically and on stop. Without, the query
    /// starts from the beginning of its sources every time.
    pub checkpoint: Option<CheckpointSpec>,
    /// A stream the results are appended to instead of `sink` (which then only reports
    /// progress). Requires `checkpoint`: results reach the stream exactly once, with each
    /// checkpoint (see [`CheckpointSpec`]).
    pub output: Option<Arc<StreamLog>>,
    /// The most memory the query's state (operators and result rows) may hold, in bytes; past
    /// it the query stops with [`Error::MemoryExceeded`] and the server goes on.
    pub memory_limit: Option<usize>,
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

/// One checkpoint the query wrote, or tried to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// Its epoch.
    pub epoch: u64,
    /// When it was durable (or failed).
    pub finished: std::time::SystemTime,
    /// How long encoding and writing it took, in milliseconds.
    pub write_ms: u64,
    /// Bytes written; 0 if it failed.
    pub bytes: u64,
    /// Source events it covers (the sum of the offsets it replays from).
    pub events: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The newest checkpoints of a query, newest last.
type History = Arc<Mutex<VecDeque<CheckpointRecord>>>;

/// Checkpoints kept in a query's history.
const HISTORY: usize = 50;

/// A continuous query running on its own thread; dropping it stops the query.
#[derive(Debug)]
pub struct RunningQuery {
    name: String,
    /// Its newest checkpoints.
    checkpoints: History,
    /// Each operator's counters, with where it is in the plan.
    stats: Vec<crate::dataflow::OperatorPlace>,
    stop: Arc<AtomicBool>,
    wake: Arc<Notifier>,
    handle: Option<JoinHandle<()>>,
}

impl RunningQuery {
    /// Starts `spec` on a new thread.
    pub fn spawn(spec: QuerySpec) -> Result<Self> {
        spec.dataflow
            .check_output(spec.sink.schema(), spec.sink.trailing_columns())?;
        if spec.dataflow.source_count() > spec.sources.len() {
            return Err(Error::Internal(format!(
                "query {} reads source {} of {}; this is a bug",
                spec.name,
                spec.dataflow.source_count() - 1,
                spec.sources.len()
            )));
        }
        if spec.output.is_some() && spec.checkpoint.is_none() {
            return Err(Error::Internal(format!(
                "query {} writes a stream without checkpoints; this is a bug",
                spec.name
            )));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let name = spec.name.clone();
        let stats = spec.dataflow.stats();
        // One notifier wakes the query when any of its sources commits rows.
        let wake = Arc::new(Notifier::default());
        for s in &spec.sources {
            s.log.notifier().forward_to(&wake);
        }
        let flag = Arc::clone(&stop);
        let thread_wake = Arc::clone(&wake);
        let checkpoints: History = Arc::default();
        let history = Arc::clone(&checkpoints);
        let handle = std::thread::Builder::new()
            .name(format!("query-{}", spec.name))
            .spawn(move || {
                let sink = Arc::clone(&spec.sink);
                let name = spec.name.clone();
                STOP.with(|s| *s.borrow_mut() = Some(Arc::clone(&flag)));
                // A panic (a bug) stops this query with the reason, like an error, rather
                // than leaving it looking alive with its thread gone.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(spec, &flag, &thread_wake, history)
                }));
                let ran = ran.unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    Err(Error::Internal(format!(
                        "the query stopped on a bug ({what}); please report it"
                    )))
                });
                // Stopped mid-batch: no error, and no checkpoint of the half-done batch.
                let ran = ran.or_else(|e| match e {
                    Error::Stopped => Ok(()),
                    e => Err(e),
                });
                if let Err(e) = ran {
                    tracing::error!(query = %name, error = %e, "continuous query stopped");
                    let mut p = sink.progress();
                    p.error = Some(QueryError::from(&e));
                    sink.set_progress(p);
                }
            })
            .map_err(|e| Error::Io {
                context: format!("starting query thread {name}"),
                source: e,
            })?;
        Ok(Self {
            name,
            checkpoints,
            stats,
            stop,
            wake,
            handle: Some(handle),
        })
    }

    /// Each operator's counters, inputs first, with where it is in the plan (see
    /// [`Dataflow::stats`]).
    pub fn operator_stats(&self) -> &[crate::dataflow::OperatorPlace] {
        &self.stats
    }

    /// The query's newest checkpoints (at most twenty), oldest first.
    pub fn checkpoints(&self) -> Vec<CheckpointRecord> {
        self.checkpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
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

/// Everything of a running query that a checkpoint captures, besides its operators and sinks.
struct Position {
    sources: Vec<SourceState>,
    /// The watermark of every source, as last passed to the dataflow.
    last_watermarks: Vec<Option<i64>>,
    /// The query's watermark, as last published.
    last_watermark: Option<i64>,
}

impl Position {
    fn new(specs: &[SourceSpec]) -> Self {
        let sources: Vec<SourceState> = specs
            .iter()
            .map(|s| SourceState {
                offsets: s
                    .log
                    .partitions()
                    .iter()
                    .map(|p| p.start_offset())
                    .collect(),
                tracker: WatermarkTracker::new(
                    s.log.partitions().len(),
                    s.delay_ns,
                    s.idle_timeout,
                ),
                spec: s.clone(),
            })
            .collect();
        Self {
            last_watermarks: vec![None; sources.len()],
            sources,
            last_watermark: None,
        }
    }

    /// Every source's watermark at `now`: from its partitions' event times, or in processing
    /// time the clock.
    fn watermarks(&mut self, now: Instant) -> Vec<Option<i64>> {
        self.sources
            .iter_mut()
            .map(|s| match s.spec.processing_time {
                true => Some(processing_time_ms().saturating_mul(1_000_000)),
                false => s.tracker.watermark(now),
            })
            .collect()
    }

    /// Every source's partition offsets, flattened in source order.
    fn offsets(&self) -> Vec<u64> {
        self.sources
            .iter()
            .flat_map(|s| s.offsets.clone())
            .collect()
    }

    /// Values: per source its partition count, offsets, watermark tracker state and last
    /// watermark; then the query's watermark.
    fn snapshot(&self) -> OperatorState {
        let mut values = Vec::new();
        for (s, w) in self.sources.iter().zip(&self.last_watermarks) {
            values.push(Some(s.offsets.len() as i64));
            values.extend(s.offsets.iter().map(|&o| Some(o as i64)));
            values.extend(s.tracker.snapshot());
            values.push(*w);
        }
        values.push(self.last_watermark);
        OperatorState {
            values,
            batches: Vec::new(),
        }
    }

    fn restore(&mut self, state: &OperatorState) -> Result<()> {
        let corrupt = || Error::Corrupt("checkpoint positions do not fit the sources".into());
        let mut values = state.values.iter().copied();
        let now = Instant::now();
        for (s, w) in self.sources.iter_mut().zip(&mut self.last_watermarks) {
            let n = values.next().flatten().ok_or_else(corrupt)? as usize;
            if n != s.offsets.len() {
                return Err(corrupt());
            }
            for o in &mut s.offsets {
                *o = values.next().flatten().ok_or_else(corrupt)? as u64;
            }
            let tracker: Vec<Option<i64>> = values.by_ref().take(n + 1).collect();
            s.tracker.restore(&tracker, now)?;
            *w = values.next().ok_or_else(corrupt)?;
        }
        self.last_watermark = values.next().ok_or_else(corrupt)?;
        if values.next().is_some() {
            return Err(corrupt());
        }
        Ok(())
    }
}

/// What is durable of a query's checkpoints.
#[derive(Debug, Default)]
struct Durable {
    /// The newest durable checkpoint's epoch.
    epoch: u64,
    /// Source offsets of the checkpoints kept, oldest first.
    kept: VecDeque<Vec<u64>>,
    /// Set when a checkpoint of a query with an output stream could not be written: the query
    /// must stop (a restart resumes it from the last good checkpoint).
    failed: Option<String>,
}

/// A checkpoint on its way to disk, with the source offsets it replays from and the output
/// rows (per output partition) to append once it is durable.
type Pending = (Checkpoint, Vec<u64>, Vec<(u32, RecordBatch)>);

/// The stream a query appends its results to, and where each partition ends once every
/// checkpoint handed to the writer has been applied.
#[derive(Debug)]
struct Output {
    log: Arc<StreamLog>,
    ends: Vec<u64>,
}

impl Output {
    /// The output part of a checkpoint: values are the partition count, each partition's end
    /// before and after this checkpoint's rows, and the partition of each batch.
    fn part(&mut self, rows: &[(u32, RecordBatch)]) -> OperatorState {
        let before = self.ends.clone();
        for (p, b) in rows {
            self.ends[*p as usize] += b.num_rows() as u64;
        }
        let mut values = vec![Some(before.len() as i64)];
        values.extend(before.iter().map(|&o| Some(o as i64)));
        values.extend(self.ends.iter().map(|&o| Some(o as i64)));
        values.extend(rows.iter().map(|(p, _)| Some(i64::from(*p))));
        OperatorState {
            values,
            batches: rows.iter().map(|(_, b)| b.clone()).collect(),
        }
    }

    /// Brings the output stream to where the restored checkpoint says it is: rows of the
    /// checkpoint that never reached the stream (a crash right after it was written) are
    /// appended now; rows past it mean someone else wrote the stream, which is refused.
    fn restore(&mut self, state: OperatorState, query: &str) -> Result<()> {
        let corrupt = |m: String| Error::Corrupt(format!("output of {query}: {m}"));
        let n = state.value(0)?.unwrap_or(0) as usize;
        let committed = self.log.committed_offsets();
        if n != committed.len() || state.values.len() != 1 + 2 * n + state.batches.len() {
            return Err(corrupt("the checkpoint does not fit the stream".into()));
        }
        let at = |i: usize| state.values[i].unwrap_or(0) as u64;
        let partitions: Vec<u32> = (0..state.batches.len())
            .map(|i| at(1 + 2 * n + i) as u32)
            .collect();
        for p in 0..n {
            let (before, after) = (at(1 + p), at(1 + n + p));
            if committed[p] == before && after > before {
                let rows: Vec<RecordBatch> = partitions
                    .iter()
                    .zip(&state.batches)
                    .filter(|(q, _)| **q as usize == p)
                    .map(|(_, b)| b.clone())
                    .collect();
                self.log.append_to(p as u32, &rows)?;
                tracing::info!(
                    query,
                    partition = p,
                    rows = after - before,
                    "re-appended output of the last checkpoint"
                );
            } else if committed[p] != after {
                return Err(corrupt(format!(
                    "partition {p} ends at {} but the checkpoint says {after}; was the stream written by something else?",
                    committed[p]
                )));
            }
            self.ends[p] = after;
        }
        Ok(())
    }
}

/// After a checkpoint, the next waits at least this many times what the last one cost
/// (its snapshot on the query's thread and its writing), so that checkpoints of a large state
/// take at most about a fifth of the time (Flink's minimum pause between checkpoints).
const PAUSE_PER_COST: u32 = 4;

/// The tables of a query's state store, opened on first use.
struct Tables<'a>(&'a mut CheckpointStore);

impl crate::operator::TableSource for Tables<'_> {
    fn table(&mut self, name: &str) -> Result<crate::state_store::StateTable> {
        self.0.state()?.table(name)
    }
}

/// How long after a checkpoint that cost `cost` the next one waits, at `interval` apart.
fn checkpoint_wait(interval: Duration, cost: Duration) -> Duration {
    interval.max(cost.saturating_mul(PAUSE_PER_COST))
}

/// Takes and restores a query's checkpoints.
///
/// The query's thread takes each snapshot between two batches (so it is consistent); a writer
/// thread encodes and writes it, so the query goes on meanwhile. While one checkpoint is being
/// written the next waits for the following interval, and it waits longer after a costly one
/// ([`PAUSE_PER_COST`]).
struct Checkpointer {
    spec: CheckpointSpec,
    /// Whether operators keep state in the query's state store, and can so spill.
    spills: bool,
    /// The epoch of the last checkpoint handed to the writer.
    epoch: u64,
    last: Instant,
    /// How long the last snapshot took on the query's thread.
    snapshot_cost: Duration,
    /// How long writing the last checkpoint took, in milliseconds (set by the writer).
    write_ms: Arc<AtomicU64>,
    durable: Arc<Mutex<Durable>>,
    busy: Arc<AtomicBool>,
    writer: Option<(SyncSender<Pending>, JoinHandle<()>)>,
    output: Option<Output>,
}

impl Checkpointer {
    /// Restores the newest usable checkpoint into the query, if there is one, and starts the
    /// writer thread.
    fn start(
        mut spec: CheckpointSpec,
        query: &mut QuerySpec,
        position: &mut Position,
        history: History,
    ) -> Result<Self> {
        let operators = query
            .dataflow
            .attach_store(&mut Tables(&mut spec.store), &mut 0)?;
        // The view's rows too (a query writing a stream keeps none), and its late events.
        let rows = query.output.is_none()
            && query
                .sink
                .attach_store(&mut Tables(&mut spec.store), "view-rows")?;
        let late = query
            .late
            .attach_store(&mut Tables(&mut spec.store), "late-rows")?;
        let spills = operators | rows | late;
        let mut durable = Durable::default();
        let mut output = query.output.as_ref().map(|log| Output {
            ends: log.committed_offsets(),
            log: Arc::clone(log),
        });
        let restored = Self::restore(&spec, query, position, &mut durable, output.as_mut())?;
        let durable = Arc::new(Mutex::new(durable));
        let busy = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::sync_channel::<Pending>(1);
        let store = spec.store.clone();
        let name = query.name.clone();
        let output_log = query.output.clone();
        let (thread_durable, thread_busy) = (Arc::clone(&durable), Arc::clone(&busy));
        let write_ms = Arc::new(AtomicU64::new(0));
        let thread_write_ms = Arc::clone(&write_ms);
        let handle = std::thread::Builder::new()
            .name(format!("checkpoint-{}", query.name))
            .spawn(move || {
                for (checkpoint, offsets, rows) in rx {
                    let started = Instant::now();
                    // The output rows go out only once the checkpoint that holds them is
                    // durable: a crash in between re-appends them from it on restart.
                    let mut bytes = 0;
                    let written = store.write(&checkpoint).and_then(|n| {
                        bytes = n;
                        match &output_log {
                            Some(log) => rows
                                .iter()
                                .try_for_each(|(p, b)| log.append_to(*p, std::slice::from_ref(b)).map(|_| ())),
                            None => Ok(()),
                        }
                    });
                    let record = CheckpointRecord {
                        epoch: checkpoint.epoch,
                        finished: std::time::SystemTime::now(),
                        write_ms: started.elapsed().as_millis() as u64,
                        bytes: if written.is_ok() { bytes } else { 0 },
                        events: offsets.iter().sum(),
                        error: written.as_ref().err().map(ToString::to_string),
                    };
                    {
                        let mut h = history.lock().unwrap_or_else(|e| e.into_inner());
                        h.push_back(record);
                        while h.len() > HISTORY {
                            h.pop_front();
                        }
                    }
                    match written {
                        Ok(()) => {
                            let mut d = thread_durable.lock().unwrap_or_else(|e| e.into_inner());
                            d.epoch = checkpoint.epoch;
                            d.kept.push_back(offsets);
                            while d.kept.len() > crate::checkpoint::KEEP {
                                d.kept.pop_front();
                            }
                            tracing::debug!(
                                query = %name,
                                epoch = checkpoint.epoch,
                                write_us = started.elapsed().as_micros() as u64,
                                "checkpoint written"
                            );
                        }
                        Err(e) if output_log.is_some() => {
                            tracing::error!(query = %name, error = %e, "checkpoint of a query with an output stream failed; the query stops");
                            thread_durable.lock().unwrap_or_else(|e| e.into_inner()).failed =
                                Some(e.to_string());
                        }
                        Err(e) => {
                            tracing::warn!(query = %name, error = %e, "checkpoint failed; will retry")
                        }
                    }
                    let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    thread_write_ms.store(took, Ordering::Relaxed);
                    thread_busy.store(false, Ordering::Release);
                }
            })
            .map_err(|e| Error::Io {
                context: format!("starting the checkpoint thread of {}", query.name),
                source: e,
            })?;
        Ok(Self {
            spec,
            spills,
            epoch: restored,
            last: Instant::now(),
            snapshot_cost: Duration::ZERO,
            write_ms,
            durable,
            busy,
            writer: Some((tx, handle)),
            output,
        })
    }

    /// Restores the newest checkpoint of this plan; returns its epoch (0 without one).
    fn restore(
        spec: &CheckpointSpec,
        query: &mut QuerySpec,
        position: &mut Position,
        durable: &mut Durable,
        output: Option<&mut Output>,
    ) -> Result<u64> {
        let Some(checkpoint) = spec.store.latest()? else {
            if output.is_some_and(|o| o.ends.iter().any(|&e| e > 0)) {
                return Err(Error::Corrupt(format!(
                    "the output stream of {} has rows but its query has no checkpoint",
                    query.name
                )));
            }
            return Ok(0);
        };
        if checkpoint.fingerprint != spec.fingerprint {
            if output.is_some() {
                return Err(Error::Corrupt(format!(
                    "the checkpoint of {} is of another plan; its output stream cannot be resumed",
                    query.name
                )));
            }
            tracing::warn!(
                query = %query.name,
                epoch = checkpoint.epoch,
                "checkpoint is of another plan; starting from the beginning of the sources"
            );
            spec.store.clear_state()?;
            return Ok(checkpoint.epoch);
        }
        let started = Instant::now();
        let epoch = checkpoint.epoch;
        let mut parts = checkpoint.parts.into_iter();
        let missing = || Error::Corrupt("checkpoint has fewer parts than the query".into());
        position.restore(&parts.next().ok_or_else(missing)?)?;
        query.dataflow.restore(&mut parts)?;
        let sink = parts.next().ok_or_else(missing)?;
        let late = parts.next().ok_or_else(missing)?;
        if let Some(output) = output {
            output.restore(parts.next().ok_or_else(missing)?, &query.name)?;
        }
        if parts.next().is_some() {
            return Err(Error::Corrupt(
                "checkpoint has more parts than the query".into(),
            ));
        }
        query.sink.restore_checkpoint(sink)?;
        query.late.restore_checkpoint(late)?;
        // The oldest checkpoint kept is what recovery could fall back to: the log keeps
        // everything from its offsets.
        if let Some(oldest) = spec.store.oldest()?
            && oldest.epoch < epoch
            && oldest.fingerprint == spec.fingerprint
            && let Some(p) = oldest.parts.first()
        {
            let mut at = Position::new(&query.sources);
            if at.restore(p).is_ok() {
                durable.kept.push_back(at.offsets());
            }
        }
        durable.kept.push_back(position.offsets());
        durable.epoch = epoch;
        tracing::info!(
            query = %query.name,
            epoch,
            offsets = ?position.offsets(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "restored checkpoint"
        );
        Ok(epoch)
    }

    fn durable(&self) -> MutexGuard<'_, Durable> {
        self.durable.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The offsets the oldest kept checkpoint replays from.
    fn retained(&self) -> Option<Vec<u64>> {
        self.durable().kept.front().cloned()
    }

    /// The newest durable checkpoint's epoch and the events it covers.
    fn newest(&self) -> Option<(u64, u64)> {
        let d = self.durable();
        d.kept.back().map(|o| (d.epoch, o.iter().sum()))
    }

    /// Why the query must stop, if a checkpoint with output rows could not be written.
    fn failed(&self) -> Option<String> {
        self.durable().failed.clone()
    }

    /// Whether a checkpoint is due: the interval (or the pause after a costly checkpoint) has
    /// passed and the writer is free.
    fn due(&self) -> bool {
        let cost =
            self.snapshot_cost + Duration::from_millis(self.write_ms.load(Ordering::Relaxed));
        self.last.elapsed() >= checkpoint_wait(self.spec.interval, cost)
            && !self.busy.load(Ordering::Acquire)
    }

    /// Snapshots the query as it is now and hands the snapshot to the writer. A failure to
    /// snapshot is logged and the query goes on: the previous checkpoints stay valid.
    fn take(
        &mut self,
        query: &mut QuerySpec,
        position: &Position,
        results: &mut Vec<RecordBatch>,
    ) -> bool {
        self.last = Instant::now();
        let started = Instant::now();
        let snapshot = (|| -> Result<(Vec<OperatorState>, Vec<(u32, RecordBatch)>)> {
            let mut parts = vec![position.snapshot()];
            query.dataflow.snapshot(&mut parts)?;
            parts.push(query.sink.checkpoint()?);
            parts.push(query.late.checkpoint()?);
            let rows = match &mut self.output {
                Some(output) => {
                    let rows = output.log.partition_rows(results)?;
                    parts.push(output.part(&rows));
                    rows
                }
                None => Vec::new(),
            };
            Ok((parts, rows))
        })();
        let (parts, rows) = match snapshot {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(query = %query.name, error = %e, "checkpoint snapshot failed");
                return false;
            }
        };
        // The results are in the checkpoint now, on their way to the output stream.
        results.clear();
        self.epoch += 1;
        let checkpoint = Checkpoint {
            epoch: self.epoch,
            fingerprint: self.spec.fingerprint.clone(),
            parts,
        };
        self.snapshot_cost = started.elapsed();
        tracing::debug!(
            query = %query.name,
            epoch = self.epoch,
            snapshot_us = self.snapshot_cost.as_micros() as u64,
            "checkpoint taken"
        );
        if let Some((tx, _)) = &self.writer {
            self.busy.store(true, Ordering::Release);
            if tx.send((checkpoint, position.offsets(), rows)).is_err() {
                self.busy.store(false, Ordering::Release);
                tracing::warn!(query = %query.name, "the checkpoint writer is gone");
                return false;
            }
            return true;
        }
        false
    }

    fn wait_idle(&self) {
        while self.busy.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The query's operator state outgrew what it may hold in memory: writes a checkpoint
    /// now, waits until it is durable, then has the operators drop from memory what it
    /// stored, to be read back from the state store when needed.
    fn spill(
        &mut self,
        query: &mut QuerySpec,
        position: &Position,
        results: &mut Vec<RecordBatch>,
    ) {
        self.wait_idle();
        let started = Instant::now();
        let before = spillable_bytes(query);
        if !self.take(query, position, results) {
            return;
        }
        self.wait_idle();
        if self.durable().epoch != self.epoch {
            // Not durable: what is in memory is all there is.
            tracing::warn!(query = %query.name, "a checkpoint to spill state failed; state stays in memory");
            return;
        }
        query.dataflow.evict();
        for rows in [&query.sink, &query.late] {
            if let Err(e) = rows.evict() {
                tracing::warn!(query = %query.name, error = %e, "result rows could not leave memory");
            }
        }
        tracing::debug!(
            query = %query.name,
            before,
            after = spillable_bytes(query),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "operator state spilled to the state store"
        );
    }

    /// Takes a last checkpoint (when `dirty`) and waits until everything is written.
    fn finish(
        &mut self,
        query: &mut QuerySpec,
        position: &Position,
        dirty: bool,
        results: &mut Vec<RecordBatch>,
    ) {
        if dirty {
            self.wait_idle();
            self.take(query, position, results);
        }
        if let Some((tx, handle)) = self.writer.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

impl Drop for Checkpointer {
    /// Waits for the writer however the query ended (stopped mid-batch, failed): what it
    /// holds, the query's state store among them, is released before the query's thread ends,
    /// so that a restart in the same process can open them again.
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.writer.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

/// What of a query's memory can move to its state store: its operators' state and the rows of
/// its view and late events, where they keep them there.
fn spillable_bytes(spec: &QuerySpec) -> usize {
    spec.dataflow.state_bytes() + spec.sink.spillable_bytes() + spec.late.spillable_bytes()
}

/// Hands results to the view, or keeps them for the output stream's next checkpoint.
fn emit(spec: &QuerySpec, results: &mut Vec<RecordBatch>, out: Vec<RecordBatch>) -> Result<()> {
    if spec.output.is_some() {
        results.extend(out.into_iter().filter(|b| b.num_rows() > 0));
        Ok(())
    } else {
        spec.sink.append(out)
    }
}

/// Measures a query's state and checks it against its memory limit, at most every
/// [`Budget::EVERY`]: measuring walks every operator's state, and a query that grows grows over
/// many batches.
#[derive(Debug, Default)]
struct Budget {
    next: Option<Instant>,
    /// The state may have changed since it was last measured.
    stale: bool,
}

impl Budget {
    const EVERY: Duration = Duration::from_millis(100);

    /// Measures the state before the query waits, if it changed since the last measure, so
    /// that what the counters show is not left behind by a burst that ended.
    fn settle(&mut self, spec: &QuerySpec) -> Result<()> {
        if !self.stale {
            return Ok(());
        }
        self.next = None;
        self.check(spec)
    }

    fn check(&mut self, spec: &QuerySpec) -> Result<()> {
        let now = Instant::now();
        if self.next.is_some_and(|n| now < n) {
            self.stale = true;
            return Ok(());
        }
        self.next = Some(now + Self::EVERY);
        self.stale = false;
        // Also what each operator's counters show as its state.
        let state = spec.dataflow.measure_state();
        let Some(limit) = spec.memory_limit else {
            return Ok(());
        };
        let results = spec.sink.memory_bytes();
        if state + results > limit {
            return Err(Error::MemoryExceeded(format!(
                "its state ({} MiB in operators, {} MiB of result rows) outgrew its memory limit \
                 of {} MiB; bound it in time (windows, time-bounded joins), or raise \
                 WITH (memory_limit = ...)",
                state >> 20,
                results >> 20,
                limit >> 20
            )));
        }
        Ok(())
    }
}

/// Below this many rows to read in a round, partitions are read one after another: threads
/// would cost more than they save.
const PARALLEL_READ_ROWS: u64 = 32 * 1024;

/// Reads the next rows of every partition, from `offsets` up to `ends` (at most
/// [`ROWS_PER_ROUND`] each). A query catching up spends most of its time decompressing
/// frames, so with much to read the partitions are read on threads of their own, while the
/// query itself still processes them one after another, in order.
fn read_round(
    partitions: &[Arc<Partition>],
    offsets: &[u64],
    ends: &[u64],
) -> Result<Vec<Vec<(u64, RecordBatch)>>> {
    let read = |p: usize| partitions[p].read_until(offsets[p], ends[p], ROWS_PER_ROUND);
    let waiting: u64 = (0..partitions.len())
        .map(|p| ends[p].saturating_sub(offsets[p]))
        .sum();
    if partitions.len() < 2 || waiting < PARALLEL_READ_ROWS {
        return (0..partitions.len()).map(read).collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..partitions.len())
            .map(|p| scope.spawn(move || read(p)))
            .collect();
        let mut chunks = vec![read(0)?];
        for h in handles {
            chunks.push(
                h.join()
                    .map_err(|_| Error::Internal("a log reader thread panicked".into()))??,
            );
        }
        Ok(chunks)
    })
}

/// Warns when a read of `(source, partition)` from `from` began at `got`, past rows retention
/// deleted before the query read them (rows of aborted transactions are passed over too, and
/// are no loss).
fn warn_if_deleted(
    query: &str,
    (s, p): (usize, usize),
    partition: &Partition,
    from: u64,
    got: u64,
) {
    if got > from && from < partition.start_offset() {
        tracing::warn!(
            query,
            source = s,
            partition = p,
            skipped = got - from,
            "rows were deleted by retention before the query read them"
        );
    }
}

/// How long a query waits for rows: short enough to notice partitions going idle, to take
/// checkpoints on time and, in processing time, to close windows by the clock.
fn wake_interval(
    position: &Position,
    checkpointer: Option<&Checkpointer>,
    processing_time: bool,
) -> Duration {
    let idle = position
        .sources
        .iter()
        .map(|s| s.spec.idle_timeout)
        .min()
        .unwrap_or(Duration::from_secs(5));
    let mut tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_millis(500));
    if let Some(c) = checkpointer {
        tick = tick.min(c.spec.interval.max(Duration::from_millis(10)));
    }
    if processing_time {
        tick = tick.min(Duration::from_millis(100));
    }
    tick
}

/// Publishes how far the query has got, for `weir_view_progress` and readers waiting on it.
fn publish_progress(
    spec: &QuerySpec,
    position: &Position,
    checkpointer: Option<&Checkpointer>,
    watermark: Option<i64>,
    now: Instant,
) {
    spec.sink.set_progress(Progress {
        offsets: position.offsets(),
        watermark_ns: watermark,
        late_rows: spec.dataflow.late_rows(),
        error: None,
        checkpoint_offsets: checkpointer.and_then(Checkpointer::retained),
        checkpoint: checkpointer.and_then(Checkpointer::newest),
        partitions: position
            .sources
            .iter()
            .map(|s| s.tracker.partitions(now))
            .collect(),
    });
}

fn run(mut spec: QuerySpec, stop: &AtomicBool, wake: &Notifier, history: History) -> Result<()> {
    let mut position = Position::new(&spec.sources);
    let mut checkpointer = match spec.checkpoint.take() {
        Some(c) => Some(Checkpointer::start(c, &mut spec, &mut position, history)?),
        None => None,
    };
    let processing_time = spec.sources.iter().any(|s| s.processing_time);
    let tick = wake_interval(&position, checkpointer.as_ref(), processing_time);
    // Whether anything changed since the last checkpoint.
    let mut dirty = false;
    tracing::info!(query = %spec.name, sources = position.sources.len(), "continuous query started");
    // Results for the output stream, until the next checkpoint takes them.
    let mut results: Vec<RecordBatch> = Vec::new();
    // Events read in all, for progress displays.
    let mut read: u64 = position.offsets().iter().sum();
    let mut budget = Budget::default();
    if let Some(limit) = spec.memory_limit {
        spec.dataflow.limit_memory(limit);
    }
    // Operator state past this spills to the state store (see `Checkpointer::spill`): a
    // quarter of the memory limit, since what operators count of their state is less than the
    // memory it takes (allocations, maps' spare room, what is freed but not returned); or an
    // eighth of the limit more than what stayed after the last spill, so that state which
    // cannot spill does not make every batch spill.
    let spills = checkpointer.as_ref().is_some_and(|c| c.spills);
    let mut spill_at = spec.memory_limit.filter(|_| spills).map(|l| l / 4);
    if position.offsets().iter().all(|&o| o == 0) {
        // From the beginning (not resumed): rows that exist before any input, such as an
        // aggregate's over no rows. They are upserts, so a restart at offset 0 repeats them
        // harmlessly.
        let first = spec.dataflow.start()?;
        emit(&spec, &mut results, first)?;
    }
    loop {
        if stop.load(Ordering::Acquire) {
            if let Some(c) = checkpointer.as_mut() {
                c.finish(&mut spec, &position, dirty, &mut results);
                let mut p = spec.sink.progress();
                p.checkpoint_offsets = c.retained();
                p.checkpoint = c.newest();
                spec.sink.set_progress(p);
            }
            break;
        }
        if let Some(c) = checkpointer.as_mut() {
            if let Some(e) = c.failed() {
                return Err(Error::Internal(format!(
                    "a checkpoint could not be written ({e}); restart to resume from the last one"
                )));
            }
            if dirty && c.due() {
                c.take(&mut spec, &position, &mut results);
                dirty = false;
            }
        }
        let seen = wake.generation();
        let mut progressed = false;
        let mut spill_now = false;
        let last_watermark = position.last_watermark;
        'round: for (s, source) in position.sources.iter_mut().enumerate() {
            let partitions = source.spec.log.partitions().to_vec();
            let ends = source.spec.log.snapshot_offsets();
            let chunks = read_round(&partitions, &source.offsets, &ends)?;
            for ((p, partition), chunk) in partitions.iter().enumerate().zip(chunks) {
                for (offset, batch) in chunk {
                    // A stop (DROP, shutdown) is seen between batches, not only between
                    // rounds: a round of a slow query can take minutes. The offsets say
                    // exactly what was processed.
                    if stop.load(Ordering::Acquire) {
                        break 'round;
                    }
                    warn_if_deleted(&spec.name, (s, p), partition, source.offsets[p], offset);
                    let next = offset + batch.num_rows() as u64;
                    // Offsets, not rows: passed-over rows count as read, as the backlog
                    // (committed offsets less these) expects.
                    read += next.saturating_sub(source.offsets[p]);
                    source.offsets[p] = next;
                    progressed = true;
                    if batch.num_rows() == 0 {
                        // Where passed-over rows of an aborted transaction end.
                        spec.sink.set_read(read);
                        continue;
                    }
                    if let Some(t) = source.spec.event_time {
                        if let Some(max) = max_event_time_ns(batch.column(t).as_ref())? {
                            source.tracker.observe(p, max, Instant::now());
                        }
                    }
                    let out = spec.dataflow.process_batch(s, &batch)?;
                    emit(&spec, &mut results, out)?;
                    spec.sink.set_read(read);
                    let late = spec.dataflow.take_late();
                    if !late.is_empty() {
                        spec.late
                            .append(vec![late_events(&spec.name, last_watermark, &late)?])?;
                    }
                    if spill_at.is_some_and(|at| spillable_bytes(&spec) > at) {
                        spill_now = true;
                        break 'round;
                    }
                    budget.check(&spec)?;
                }
            }
        }
        if spill_now && let Some(c) = checkpointer.as_mut() {
            c.spill(&mut spec, &position, &mut results);
            dirty = false;
            let limit = spec.memory_limit.unwrap_or(usize::MAX);
            spill_at = Some((limit / 4).max(spillable_bytes(&spec).saturating_add(limit / 8)));
            budget.check(&spec)?;
        }
        let now = Instant::now();
        let watermarks = position.watermarks(now);
        if watermarks != position.last_watermarks {
            let out = spec.dataflow.on_watermark(&watermarks)?;
            // The clock moves on its own: only what it completes is worth a checkpoint.
            dirty |= !processing_time || !out.is_empty();
            emit(&spec, &mut results, out)?;
            let late = spec.dataflow.take_late();
            if !late.is_empty() {
                spec.late
                    .append(vec![late_events(&spec.name, last_watermark, &late)?])?;
            }
            position.last_watermarks = watermarks.clone();
            // Windows closed and state was freed.
            budget.stale = true;
        }
        dirty |= progressed;
        let watermark = watermarks
            .iter()
            .copied()
            .try_fold(i64::MAX, |m, w| w.map(|w| m.min(w)));
        position.last_watermark = watermark.or(position.last_watermark);
        publish_progress(&spec, &position, checkpointer.as_ref(), watermark, now);
        if !progressed {
            budget.settle(&spec)?;
            wake.wait_past(seen, tick);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::checkpoint_wait;

    #[test]
    fn a_costly_checkpoint_pauses_the_next_four_times_its_cost() {
        let second = Duration::from_secs(1);
        // Small states checkpoint every interval.
        assert_eq!(checkpoint_wait(second, Duration::from_millis(20)), second);
        // A checkpoint of 3 s: the next waits 12 s, so checkpoints take a fifth of the time.
        assert_eq!(
            checkpoint_wait(second, Duration::from_secs(3)),
            Duration::from_secs(12)
        );
    }
}
