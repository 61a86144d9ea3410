//! Live results: `SUBSCRIBE`, which follows a view (or a query) from its current rows on, each
//! row with its change and the view's watermark, or a stream's log from given offsets; and the
//! cursors that `FETCH` reads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use weir_engine::log::StreamLog;
use weir_engine::result_table::{Change, ResultTable, Subscriber};
use weir_engine::runtime::RunningQuery;

use crate::{Error, Result};

/// Rows a subscriber may fall behind by before it is cut off, unless the session's
/// `subscribe_buffer_rows` setting says otherwise.
pub const SUBSCRIBER_BUFFER_ROWS: usize = 1_000_000;

/// Rows of a stream read per step of a subscription to it.
const STREAM_ROWS_PER_READ: usize = 8192;

/// A subscription to a view's changes, or to a stream's rows.
#[derive(Debug)]
pub struct Subscription {
    schema: SchemaRef,
    feed: Feed,
}

#[derive(Debug)]
enum Feed {
    /// A view's rows, then its changes.
    Table {
        table: Arc<ResultTable>,
        snapshot: VecDeque<RecordBatch>,
        feed: Arc<Subscriber>,
        /// The temporary query of `SUBSCRIBE (SELECT ...)`, stopped when the subscription ends.
        _query: Option<RunningQuery>,
    },
    /// A stream's log, read on from `offsets` (the next offset per partition).
    Log {
        log: Arc<StreamLog>,
        offsets: Vec<u64>,
        /// The partition to read first next time, so that every partition gets its turn.
        next: usize,
    },
}

/// The columns of a subscription: the watermark, the change, then the view's columns.
fn subscription_schema(view: &Schema) -> SchemaRef {
    let mut fields = vec![
        Field::new(
            "weir_watermark",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("weir_diff", DataType::Int64, false),
    ];
    fields.extend(view.fields().iter().map(|f| f.as_ref().clone()));
    Arc::new(Schema::new(fields))
}

/// The columns of a stream subscription: where each row is in the log, then its columns.
fn stream_schema(stream: &Schema) -> SchemaRef {
    let mut fields = vec![
        Field::new("weir_partition", DataType::Int32, false),
        Field::new("weir_offset", DataType::Int64, false),
    ];
    fields.extend(stream.fields().iter().map(|f| f.as_ref().clone()));
    Arc::new(Schema::new(fields))
}

/// Where a stream subscription starts, from `SUBSCRIBE stream WITH (start = ..., offsets = ...)`:
/// per partition the first offset to read. `start` is `latest` (rows appended from now on, the
/// default) or `earliest` (everything still in the log); `offsets` ('partition:offset, ...')
/// overrides it for the partitions it names, so a client resumes where it stopped by giving, per
/// partition, one past the last `weir_offset` it received.
pub(crate) fn start_offsets(log: &StreamLog, options: &[(String, String)]) -> Result<Vec<u64>> {
    let partitions = log.partitions();
    let mut offsets = log.committed_offsets();
    for (key, value) in options {
        match key.as_str() {
            "start" => match value.to_ascii_lowercase().as_str() {
                "latest" => offsets = log.committed_offsets(),
                "earliest" => offsets = partitions.iter().map(|p| p.start_offset()).collect(),
                other => {
                    return Err(Error::InvalidValue(format!(
                        "SUBSCRIBE start is 'earliest' or 'latest', not '{other}'"
                    )));
                }
            },
            "offsets" => {
                for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let parsed = pair.split_once(':').and_then(|(p, o)| {
                        Some((
                            p.trim().parse::<usize>().ok()?,
                            o.trim().parse::<u64>().ok()?,
                        ))
                    });
                    let Some((p, o)) = parsed else {
                        return Err(Error::InvalidValue(format!(
                            "SUBSCRIBE offsets are 'partition:offset, ...', not '{pair}'"
                        )));
                    };
                    let slot = offsets.get_mut(p).ok_or_else(|| {
                        Error::InvalidValue(format!(
                            "partition {p} does not exist (the stream has {})",
                            partitions.len()
                        ))
                    })?;
                    *slot = o;
                }
            }
            other => {
                return Err(Error::InvalidValue(format!(
                    "unknown SUBSCRIBE option {other}; a stream takes start and offsets"
                )));
            }
        }
    }
    Ok(offsets)
}

impl Subscription {
    /// Follows `table` from its current rows on (the caller has let it catch up).
    pub(crate) fn start(
        table: Arc<ResultTable>,
        query: Option<RunningQuery>,
        buffer_rows: usize,
    ) -> Result<Self> {
        let (snapshot, feed) = table.subscribe(buffer_rows)?;
        Ok(Self {
            schema: subscription_schema(table.schema()),
            feed: Feed::Table {
                table,
                snapshot: snapshot.into(),
                feed,
                _query: query,
            },
        })
    }

    /// Follows the rows of a stream's log from `offsets` on (see [`start_offsets`]).
    pub(crate) fn tail(log: Arc<StreamLog>, offsets: Vec<u64>) -> Self {
        Self {
            schema: stream_schema(log.schema()),
            feed: Feed::Log {
                log,
                offsets,
                next: 0,
            },
        }
    }

    /// The buffer of changes of a view subscription (a stream's is read from its log as it
    /// goes, without one).
    pub(crate) fn feed(&self) -> Option<&Arc<Subscriber>> {
        match &self.feed {
            Feed::Table { feed, .. } => Some(feed),
            Feed::Log { .. } => None,
        }
    }

    /// The columns of the rows it produces.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn wrap(&self, change: &Change) -> Result<RecordBatch> {
        let n = change.rows.num_rows();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(vec![
                change
                    .watermark_ns
                    .map(|w| w / 1000);
                n
            ])),
            Arc::new(Int64Array::from(vec![change.diff; n])),
        ];
        columns.extend(change.rows.columns().iter().cloned());
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// The next rows if some are ready.
    pub fn try_next(&mut self) -> Result<Option<RecordBatch>> {
        let change = match &mut self.feed {
            Feed::Table {
                table,
                snapshot,
                feed,
                ..
            } => {
                let mut change = None;
                while let Some(rows) = snapshot.pop_front() {
                    if rows.num_rows() > 0 {
                        change = Some(Change {
                            diff: 1,
                            rows,
                            watermark_ns: table.progress().watermark_ns,
                        });
                        break;
                    }
                }
                match change {
                    Some(c) => Some(c),
                    None => feed.try_next()?,
                }
            }
            Feed::Log { log, offsets, next } => {
                let schema = Arc::clone(&self.schema);
                return read_log(&schema, log, offsets, next);
            }
        };
        change.map(|c| self.wrap(&c)).transpose()
    }

    /// Waits for the next rows.
    pub async fn next(&mut self) -> Result<RecordBatch> {
        loop {
            let notifier = match &self.feed {
                Feed::Log { log, .. } => Some(Arc::clone(log.notifier())),
                Feed::Table { .. } => None,
            };
            // Read the generation before looking, so that rows committed in between wake us.
            let seen = notifier.as_ref().map(|n| n.generation());
            if let Some(b) = self.try_next()? {
                return Ok(b);
            }
            match (notifier, seen) {
                (Some(n), Some(seen)) => {
                    tokio::task::spawn_blocking(move || n.wait_past(seen, Duration::from_secs(1)))
                        .await
                        .map_err(|e| Error::Internal(format!("waiting for rows failed: {e}")))?;
                }
                _ => {
                    let Feed::Table { feed, .. } = &self.feed else {
                        return Err(Error::Internal("a stream feed without its log".into()));
                    };
                    let change = feed.next().await?;
                    return self.wrap(&change);
                }
            }
        }
    }
}

/// Reads the next committed rows of a stream, one partition's at a time, with their partition
/// and offset in front.
fn read_log(
    schema: &SchemaRef,
    log: &StreamLog,
    offsets: &mut [u64],
    next: &mut usize,
) -> Result<Option<RecordBatch>> {
    let partitions = log.partitions();
    let ends = log.snapshot_offsets();
    for step in 0..partitions.len() {
        let p = (*next + step) % partitions.len();
        let read = partitions[p].read_until(offsets[p], ends[p], STREAM_ROWS_PER_READ)?;
        if read.is_empty() {
            continue;
        }
        *next = (p + 1) % partitions.len();
        let mut batches = Vec::with_capacity(read.len());
        for (offset, rows) in read {
            let n = rows.num_rows();
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(Int32Array::from(vec![p as i32; n])),
                Arc::new(Int64Array::from_iter_values(
                    (offset..offset + n as u64).map(|o| o as i64),
                )),
            ];
            columns.extend(rows.columns().iter().cloned());
            batches.push(RecordBatch::try_new(Arc::clone(schema), columns)?);
            offsets[p] = offset + n as u64;
        }
        let rows = concat_batches(schema, &batches)?;
        if rows.num_rows() == 0 {
            continue; // only where rows of an aborted transaction end
        }
        return Ok(Some(rows));
    }
    Ok(None)
}

/// An open cursor: rows of a query, or a subscription.
pub(crate) enum Cursor {
    /// The rows of `DECLARE c CURSOR FOR SELECT ...`: read from the query as FETCH asks for
    /// them, so a cursor over many rows holds only what a FETCH has read and not returned.
    Rows {
        schema: SchemaRef,
        stream: datafusion::execution::SendableRecordBatchStream,
        /// Rows read from the query but not yet fetched.
        batches: VecDeque<RecordBatch>,
    },
    /// `DECLARE c CURSOR FOR SUBSCRIBE ...`.
    Subscription {
        subscription: Box<Subscription>,
        /// Rows read from the subscription but not yet fetched.
        held: VecDeque<RecordBatch>,
    },
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rows { schema, .. } => f.debug_struct("Rows").field("schema", schema).finish(),
            Self::Subscription { subscription, .. } => f
                .debug_struct("Subscription")
                .field("subscription", subscription)
                .finish(),
        }
    }
}

impl Cursor {
    pub(crate) fn schema(&self) -> SchemaRef {
        match self {
            Self::Rows { schema, .. } => Arc::clone(schema),
            Self::Subscription { subscription, .. } => subscription.schema(),
        }
    }

    /// Up to `count` rows (all with `None`); a subscription first waits for at least one row,
    /// up to `timeout` if given.
    pub(crate) async fn fetch(
        &mut self,
        count: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<RecordBatch> {
        let schema = self.schema();
        let limit = count.map_or(usize::MAX, |c| c as usize);
        let (queue, mut subscription, mut rows) = match self {
            Self::Rows {
                batches, stream, ..
            } => (batches, None, Some(stream)),
            Self::Subscription { subscription, held } => {
                if held.is_empty() && limit > 0 {
                    match subscription.try_next()? {
                        Some(b) => held.push_back(b),
                        None => {
                            let next = subscription.next();
                            let b = match timeout {
                                Some(t) => match tokio::time::timeout(t, next).await {
                                    Ok(b) => Some(b?),
                                    Err(_) => None,
                                },
                                None => Some(next.await?),
                            };
                            held.extend(b);
                        }
                    }
                }
                (held, Some(subscription), None)
            }
        };
        let mut out = Vec::new();
        let mut taken = 0;
        while taken < limit {
            if queue.is_empty() {
                let next = match (&mut subscription, &mut rows) {
                    (Some(s), _) => s.try_next()?,
                    (None, Some(stream)) => {
                        use futures::StreamExt;
                        stream.next().await.transpose()?
                    }
                    (None, None) => None,
                };
                match next {
                    Some(b) => queue.push_back(b),
                    None => break,
                }
            }
            let Some(b) = queue.pop_front() else { break };
            let want = limit - taken;
            if b.num_rows() > want {
                queue.push_front(b.slice(want, b.num_rows() - want));
                out.push(b.slice(0, want));
                taken += want;
            } else {
                taken += b.num_rows();
                out.push(b);
            }
        }
        Ok(concat_batches(&schema, &out)?)
    }
}

/// Writes rows in Postgres' COPY text format: tab-separated, `\N` for NULL, escaped.
pub(crate) fn copy_text(batch: &RecordBatch) -> Result<Vec<u8>> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default();
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for row in 0..batch.num_rows() {
        for (i, (f, c)) in formatters.iter().zip(batch.columns()).enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            if c.is_null(row) {
                out.extend_from_slice(b"\\N");
                continue;
            }
            for ch in f.value(row).to_string().chars() {
                match ch {
                    '\\' => out.extend_from_slice(b"\\\\"),
                    '\t' => out.extend_from_slice(b"\\t"),
                    '\n' => out.extend_from_slice(b"\\n"),
                    '\r' => out.extend_from_slice(b"\\r"),
                    c => {
                        let mut buf = [0; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
        }
        out.push(b'\n');
    }
    Ok(out)
}

impl From<Error> for datafusion::error::DataFusionError {
    fn from(e: Error) -> Self {
        datafusion::error::DataFusionError::External(Box::new(e))
    }
}
