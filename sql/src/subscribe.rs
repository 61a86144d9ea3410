//! Live results: `SUBSCRIBE`, which follows a view (or a query) from its current rows on, each
//! row with its change and the view's watermark, and the cursors that `FETCH` reads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use weir_engine::result_table::{Change, ResultTable, Subscriber};
use weir_engine::runtime::RunningQuery;

use crate::{Error, Result};

/// Rows a subscriber may fall behind by before it is cut off, unless the session's
/// `subscribe_buffer_rows` setting says otherwise.
pub const SUBSCRIBER_BUFFER_ROWS: usize = 1_000_000;

/// A subscription to a view's changes.
#[derive(Debug)]
pub struct Subscription {
    schema: SchemaRef,
    table: Arc<ResultTable>,
    snapshot: VecDeque<RecordBatch>,
    feed: Arc<Subscriber>,
    /// The temporary query of `SUBSCRIBE (SELECT ...)`, stopped when the subscription ends.
    _query: Option<RunningQuery>,
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
            table,
            snapshot: snapshot.into(),
            feed,
            _query: query,
        })
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
        while let Some(rows) = self.snapshot.pop_front() {
            if rows.num_rows() > 0 {
                let change = Change {
                    diff: 1,
                    rows,
                    watermark_ns: self.table.progress().watermark_ns,
                };
                return self.wrap(&change).map(Some);
            }
        }
        match self.feed.try_next()? {
            Some(change) => self.wrap(&change).map(Some),
            None => Ok(None),
        }
    }

    /// Waits for the next rows.
    pub async fn next(&mut self) -> Result<RecordBatch> {
        if let Some(b) = self.try_next()? {
            return Ok(b);
        }
        let change = self.feed.next().await?;
        self.wrap(&change)
    }
}

/// An open cursor: rows of a query, or a subscription.
#[derive(Debug)]
pub(crate) enum Cursor {
    /// The rows of `DECLARE c CURSOR FOR SELECT ...`, not yet fetched.
    Rows {
        schema: SchemaRef,
        batches: VecDeque<RecordBatch>,
    },
    /// `DECLARE c CURSOR FOR SUBSCRIBE ...`.
    Subscription {
        subscription: Box<Subscription>,
        /// Rows read from the subscription but not yet fetched.
        held: VecDeque<RecordBatch>,
    },
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
        let (queue, mut subscription) = match self {
            Self::Rows { batches, .. } => (batches, None),
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
                (held, Some(subscription))
            }
        };
        let mut out = Vec::new();
        let mut taken = 0;
        while taken < limit {
            if queue.is_empty() {
                match subscription
                    .as_mut()
                    .map(|s| s.try_next())
                    .transpose()?
                    .flatten()
                {
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
