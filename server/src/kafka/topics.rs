//! Streams as Kafka topics: their partitions and offsets, and rows as JSON records.
//!
//! Every stream is a topic with the same partitions and offsets as its log. A record's value is
//! the row as one JSON object (column name to value; timestamps as ISO 8601 text); its key is
//! the stream's key column as text, and its timestamp the row's event time in milliseconds.
//! Produced values are decoded the same way, a whole batch of records at once, and appended
//! durably to the partition the producer chose.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::kernels::zip::zip;
use datafusion::arrow::compute::{cast, is_null};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::json::{LineDelimitedWriter, ReaderBuilder};

use weir_sql::catalog::{ColumnDef, StreamDef, StreamEntry, WatermarkDef};
use weir_sql::{Database, Error, Result};

/// The format of topics created by Kafka clients: records stored as they came.
const RAW: &str = "raw";

/// A record as a producer sent it.
#[derive(Debug, Clone)]
pub struct ProducedRecord<'a> {
    /// The record key, if any.
    pub key: Option<&'a [u8]>,
    /// The record value: one JSON object.
    pub value: Option<&'a [u8]>,
    /// The record timestamp in milliseconds since the epoch; negative for none.
    pub timestamp_ms: i64,
    /// The record headers as a JSON object, if it has any (kept by raw topics only).
    pub headers: Option<String>,
}

/// An idempotent producer's batch: with it, a retry of a batch already stored is answered
/// with the original offsets instead of being appended again, across restarts too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// The producer's id (from InitProducerId).
    pub id: i64,
    /// The producer's epoch.
    pub epoch: i16,
    /// Sequence number of the batch's first record.
    pub base_sequence: i32,
}

impl ProducerBatch {
    fn seq(self) -> weir_engine::log::ProducerSeq {
        weir_engine::log::ProducerSeq {
            id: self.id,
            epoch: self.epoch,
            base_sequence: self.base_sequence,
        }
    }
}

/// Why a produced batch was refused; nothing of it was appended.
#[derive(Debug)]
pub enum ProduceError {
    /// A record does not decode into a row of the stream.
    InvalidRecord {
        /// Index of the first bad record in the batch, when one record is to blame.
        index: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// The stream cannot take writes (its rows are the results of a query).
    NotWritable(String),
    /// The partition does not exist.
    UnknownPartition,
    /// An idempotent producer skipped sequence numbers or used an old epoch.
    OutOfOrder(String),
    /// Storing the rows failed (a full disk, say).
    Storage(Error),
}

/// Rows read back as records, column by column: the keys and the values each in one buffer,
/// so that a fetch of thousands of rows allocates a handful of times, not thrice per row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchedRecords {
    /// Each record's offset in its partition.
    pub offsets: Vec<u64>,
    /// Each record's event time in milliseconds since the epoch; -1 for a stream without
    /// event time.
    pub timestamps_ms: Vec<i64>,
    /// The keys (the key column as text) back to back.
    pub keys: Vec<u8>,
    /// Each record's key as a `start..end` span of `keys`; `None` when the stream has no key
    /// or the row's is null.
    pub key_spans: Vec<Option<(usize, usize)>>,
    /// The values (each row as one JSON object) back to back.
    pub values: Vec<u8>,
    /// Each record's value as a `start..end` span of `values`.
    pub value_spans: Vec<(usize, usize)>,
}

impl FetchedRecords {
    /// How many records there are.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Record `i`'s key, if it has one.
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        self.key_spans[i].map(|(start, end)| &self.keys[start..end])
    }

    /// Record `i`'s value.
    pub fn value(&self, i: usize) -> &[u8] {
        let (start, end) = self.value_spans[i];
        &self.values[start..end]
    }

    /// Appends a key (or its absence) for the next record.
    fn push_key(&mut self, key: Option<&[u8]>) {
        self.key_spans.push(key.map(|k| {
            let start = self.keys.len();
            self.keys.extend_from_slice(k);
            (start, self.keys.len())
        }));
    }
}

/// One stream seen as a topic.
#[derive(Debug, Clone)]
pub struct Topic {
    entry: Arc<StreamEntry>,
    writable: bool,
}

/// A database's streams seen as Kafka topics.
pub trait TopicCatalog {
    /// The names and partition counts of every stream, sorted by name.
    fn topics(&self) -> Vec<(String, u32)>;
    /// Creates a raw topic, as a Kafka client's CreateTopics does.
    fn create_topic(&self, name: &str, partitions: u32) -> Result<()>;
    /// The stream `name` as a topic.
    fn topic(&self, name: &str) -> Option<Topic>;
}

impl TopicCatalog for Database {
    /// The names and partition counts of every stream, sorted by name.
    fn topics(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self
            .streams()
            .iter()
            .map(|s| (s.def.name.clone(), s.def.partitions))
            .collect();
        out.sort();
        out
    }

    /// Creates a raw topic, as a Kafka client's CreateTopics does: a stream of the records
    /// themselves, with columns `key`, `value`, `headers` (text; headers as a JSON object),
    /// `partition` and `timestamp` (the record's, or the append time), and a watermark 5
    /// seconds behind the timestamps. JSON functions take fields out of `value`.
    fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        let text = |name: &str| ColumnDef {
            name: name.into(),
            data_type: DataType::Utf8.to_string(),
            nullable: true,
        };
        let columns = vec![
            text("key"),
            text("value"),
            text("headers"),
            ColumnDef {
                name: "partition".into(),
                data_type: DataType::Int32.to_string(),
                nullable: false,
            },
            ColumnDef {
                name: "timestamp".into(),
                data_type: DataType::Timestamp(TimeUnit::Nanosecond, None).to_string(),
                nullable: false,
            },
        ];
        let mut def = StreamDef::new(
            name.to_string(),
            columns,
            Some(WatermarkDef {
                column: "timestamp".into(),
                delay_ns: 5_000_000_000,
            }),
        );
        def.partitions = partitions;
        def.format = Some(RAW.into());
        self.create_stream(def)
    }

    /// The stream `name` as a topic.
    fn topic(&self, name: &str) -> Option<Topic> {
        let entry = self.stream(name)?;
        let writable = self.producer(name).is_none() && entry.def.source.is_none();
        Some(Topic { entry, writable })
    }
}

impl Topic {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.entry.def.name
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.entry.log.partitions().len() as u32
    }

    /// The oldest offset still stored and the offset the next row gets (the high watermark),
    /// or `None` for a partition that does not exist.
    pub fn offsets(&self, partition: i32) -> Option<(u64, u64)> {
        let p = self
            .entry
            .log
            .partitions()
            .get(usize::try_from(partition).ok()?)?;
        Some((p.start_offset(), p.committed()))
    }

    /// The first offset of `partition` whose record timestamp (the event time) is at or after
    /// `time_ms`, as ListOffsets by time asks; `Ok(None)` when there is none, or the stream has
    /// no event time. Scans the partition: the log keeps no index of times.
    pub fn offset_for_time(&self, partition: i32, time_ms: i64) -> Result<Option<u64>> {
        let def = &self.entry.def;
        let Some(t) = def
            .watermark
            .as_ref()
            .and_then(|w| def.column_index(&w.column))
        else {
            return Ok(None);
        };
        let Some(p) = usize::try_from(partition)
            .ok()
            .and_then(|p| self.entry.log.partitions().get(p))
        else {
            return Ok(None);
        };
        let mut from = p.start_offset();
        loop {
            let chunk = p.read(from, 1 << 16)?;
            let Some((last_base, last)) = chunk.last() else {
                return Ok(None);
            };
            let next = last_base + last.num_rows() as u64;
            for (base, batch) in &chunk {
                let times = cast(
                    batch.column(t),
                    &DataType::Timestamp(TimeUnit::Millisecond, None),
                )?;
                let times = times
                    .as_any()
                    .downcast_ref::<TimestampMillisecondArray>()
                    .ok_or_else(|| Error::Internal("event time did not cast".into()))?;
                let skip = from.saturating_sub(*base) as usize;
                if let Some(i) =
                    (skip..times.len()).find(|&i| times.is_valid(i) && times.value(i) >= time_ms)
                {
                    return Ok(Some(base + i as u64));
                }
            }
            if next <= from {
                return Ok(None);
            }
            from = next;
        }
    }

    /// How often rows were committed to any partition; grows with every append, so a reader
    /// that saw nothing new can wait for it to change.
    pub fn generation(&self) -> u64 {
        self.entry.log.notifier().generation()
    }

    /// Decodes `records` into rows and appends them to `partition`, durably, all or none.
    /// Returns the offset of the first row.
    pub fn produce(
        &self,
        partition: i32,
        records: &[ProducedRecord<'_>],
        producer: Option<ProducerBatch>,
    ) -> std::result::Result<u64, ProduceError> {
        let Some((p, batch)) = self.rows(partition, records)? else {
            return Ok(self.offsets(partition).map_or(0, |o| o.1));
        };
        let log = &self.entry.log;
        let appended = match producer {
            Some(b) => log.append_idempotent(p, &[batch], b.seq()),
            None => log.append_to(p, &[batch]),
        };
        let receipt = appended.map_err(produce_error)?;
        Ok(receipt.ranges.first().map_or(0, |r| r.1))
    }

    /// Decodes `records` into rows and writes them to `partition` in `txn`, a transactional
    /// producer's: visible when it commits. Returns the offset of the first row.
    pub fn produce_in(
        &self,
        txn: &mut weir_engine::log::Transaction,
        partition: i32,
        records: &[ProducedRecord<'_>],
        producer: ProducerBatch,
    ) -> std::result::Result<u64, ProduceError> {
        let Some((p, batch)) = self.rows(partition, records)? else {
            return Ok(self.offsets(partition).map_or(0, |o| o.1));
        };
        let (base, _) = txn
            .append_to(p, &[batch], Some(producer.seq()))
            .map_err(produce_error)?;
        Ok(base)
    }

    /// Whether producers may write it (not a stream read from an external topic or made by a
    /// query).
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The stream this topic writes, for a transaction over it.
    pub fn log(&self) -> &Arc<weir_engine::log::StreamLog> {
        &self.entry.log
    }

    /// `records` as rows of `partition`, checked writable; `None` when there are none.
    fn rows(
        &self,
        partition: i32,
        records: &[ProducedRecord<'_>],
    ) -> std::result::Result<Option<(u32, RecordBatch)>, ProduceError> {
        if !self.writable {
            let from = match &self.entry.def.source {
                Some(s) => format!("is read from topic {} at {}", s.topic, s.brokers),
                None => "holds the results of its query (CREATE STREAM ... AS SELECT)".into(),
            };
            return Err(ProduceError::NotWritable(format!(
                "stream {} {from}; it cannot be written",
                self.name()
            )));
        }
        let p = u32::try_from(partition)
            .ok()
            .filter(|&p| p < self.partitions())
            .ok_or(ProduceError::UnknownPartition)?;
        let batch = if self.entry.def.format.as_deref() == Some(RAW) {
            raw_rows(&self.entry, partition, records)?
        } else {
            decode_records(&self.entry, records)?
        };
        Ok((batch.num_rows() > 0).then_some((p, batch)))
    }

    /// Reads committed rows of `partition` from `offset` on, about `max_bytes` of them (at
    /// least one row if there is one).
    pub fn fetch(&self, partition: i32, offset: u64, max_bytes: usize) -> Result<FetchedRecords> {
        let mut out = FetchedRecords::default();
        let Some(p) = usize::try_from(partition)
            .ok()
            .and_then(|p| self.entry.log.partitions().get(p))
        else {
            return Ok(out);
        };
        let raw = self.entry.def.format.as_deref() == Some(RAW);
        let mut from = offset;
        let bytes = |out: &FetchedRecords| out.values.len() + out.keys.len() + 16 * out.len();
        while bytes(&out) < max_bytes.max(1) {
            let chunk = p.read(from, 4096)?;
            let before = from;
            for (base, batch) in chunk {
                if batch.num_rows() == 0 {
                    // Rows of an aborted transaction end here: the next records follow.
                    from = from.max(base);
                    continue;
                }
                let skip = from.saturating_sub(base) as usize;
                if skip >= batch.num_rows() {
                    continue;
                }
                let batch = batch.slice(skip, batch.num_rows() - skip);
                let first = base + skip as u64;
                if raw {
                    raw_records(&batch, first, &mut out)?;
                } else {
                    encode_rows(&self.entry, &batch, first, &mut out)?;
                }
                from = first + batch.num_rows() as u64;
                if bytes(&out) >= max_bytes {
                    break;
                }
            }
            // Nothing (more) committed from `from` on.
            if from == before {
                break;
            }
        }
        Ok(out)
    }
}

/// A raw topic's rows: the records as they came (text key, value and headers).
fn raw_rows(
    entry: &StreamEntry,
    partition: i32,
    records: &[ProducedRecord<'_>],
) -> std::result::Result<RecordBatch, ProduceError> {
    fn text<'a>(
        i: usize,
        what: &str,
        b: Option<&'a [u8]>,
    ) -> std::result::Result<Option<&'a str>, ProduceError> {
        b.map(|b| {
            std::str::from_utf8(b).map_err(|e| {
                invalid(
                    Some(i),
                    format!("the record {what} is not UTF-8 text ({e}); raw topics hold text"),
                )
            })
        })
        .transpose()
    }
    let keys = records
        .iter()
        .enumerate()
        .map(|(i, r)| text(i, "key", r.key))
        .collect::<std::result::Result<StringArray, _>>()?;
    let values = records
        .iter()
        .enumerate()
        .map(|(i, r)| text(i, "value", r.value))
        .collect::<std::result::Result<StringArray, _>>()?;
    let headers: StringArray = records.iter().map(|r| r.headers.as_deref()).collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let times: datafusion::arrow::array::TimestampNanosecondArray = records
        .iter()
        .map(|r| {
            let ms = if r.timestamp_ms >= 0 {
                r.timestamp_ms
            } else {
                now_ms
            };
            Some(ms.saturating_mul(1_000_000))
        })
        .collect();
    let partitions = datafusion::arrow::array::Int32Array::from(vec![partition; records.len()]);
    RecordBatch::try_new(
        Arc::clone(&entry.schema),
        vec![
            Arc::new(keys),
            Arc::new(values),
            Arc::new(headers),
            Arc::new(partitions),
            Arc::new(times),
        ],
    )
    .map_err(|e| invalid(None, format!("{e}; this is a bug")))
}

/// A raw topic's rows back as the records they were, appended to `out`.
fn raw_records(batch: &RecordBatch, first: u64, out: &mut FetchedRecords) -> Result<()> {
    let text = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Internal("a raw topic column is not text; this is a bug".into()))
    };
    let (keys, values) = (text(0)?, text(1)?);
    let times = cast(
        batch.column(4),
        &DataType::Timestamp(TimeUnit::Millisecond, None),
    )?;
    let times = times
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .ok_or_else(|| {
            Error::Internal("a raw topic timestamp did not cast; this is a bug".into())
        })?;
    for i in 0..batch.num_rows() {
        out.offsets.push(first + i as u64);
        out.timestamps_ms.push(times.value(i));
        out.push_key(keys.is_valid(i).then(|| keys.value(i).as_bytes()));
        let start = out.values.len();
        if values.is_valid(i) {
            out.values.extend_from_slice(values.value(i).as_bytes());
        }
        out.value_spans.push((start, out.values.len()));
    }
    Ok(())
}

/// Decodes record values (JSON objects) into one batch of the stream's rows. A record with a
/// key but no key column in its value takes the key column from the record key.
pub(crate) fn decode_records(
    entry: &StreamEntry,
    records: &[ProducedRecord<'_>],
) -> std::result::Result<RecordBatch, ProduceError> {
    // Decoded as nullable, so that a key missing from the value can still come from the record
    // key; NOT NULL is checked on the append.
    let schema: SchemaRef = Arc::new(datafusion::arrow::datatypes::Schema::new(
        entry
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let schema = &schema;
    let mut decoder = ReaderBuilder::new(Arc::clone(schema))
        // One more than the records, so that a value holding two objects shows as two rows
        // instead of stopping the decoder at the batch size.
        .with_batch_size(records.len() + 1)
        .build_decoder()
        .map_err(|e| invalid(None, e.to_string()))?;
    for (i, r) in records.iter().enumerate() {
        let value = r
            .value
            .ok_or_else(|| invalid(Some(i), "the record has no value".into()))?;
        let before = decoder.len();
        let read = decoder
            .decode(value)
            .map_err(|e| invalid(Some(i), e.to_string()))?;
        if read != value.len() || decoder.has_partial_record() || decoder.len() != before + 1 {
            return Err(invalid(
                Some(i),
                "the value is not exactly one JSON object".into(),
            ));
        }
    }
    let batch = match decoder.flush() {
        Ok(batch) => batch,
        // Values are typed only when the batch is built; find the record to blame.
        Err(e) => return Err(blame(schema, records, e.to_string())),
    };
    let Some(batch) = batch else {
        return Ok(RecordBatch::new_empty(Arc::clone(schema)));
    };
    let batch = fill_from_records(entry, batch, records)?;
    for (field, column) in entry.schema.fields().iter().zip(batch.columns()) {
        if !field.is_nullable() && column.null_count() > 0 {
            let first = (0..column.len()).find(|&i| column.is_null(i));
            return Err(invalid(
                first,
                format!(
                    "null value in column \"{}\" violates not-null constraint",
                    field.name()
                ),
            ));
        }
    }
    Ok(batch)
}

fn invalid(index: Option<usize>, message: String) -> ProduceError {
    ProduceError::InvalidRecord { index, message }
}

/// The first record that does not decode on its own, with its error.
fn blame(schema: &SchemaRef, records: &[ProducedRecord<'_>], message: String) -> ProduceError {
    for (i, r) in records.iter().enumerate() {
        let Ok(mut one) = ReaderBuilder::new(Arc::clone(schema)).build_decoder() else {
            break;
        };
        let decoded = one
            .decode(r.value.unwrap_or_default())
            .and_then(|_| one.flush());
        if let Err(e) = decoded {
            return invalid(Some(i), e.to_string());
        }
    }
    invalid(None, message)
}

/// Where the key column is null, takes it from the record key (as text, cast to the column's
/// type); where the event-time column is null, takes the record timestamp.
fn fill_from_records(
    entry: &StreamEntry,
    mut batch: RecordBatch,
    records: &[ProducedRecord<'_>],
) -> std::result::Result<RecordBatch, ProduceError> {
    let def = &entry.def;
    if let Some(k) = def.key.as_ref().and_then(|k| def.column_index(k)) {
        if batch.column(k).null_count() > 0 && records.iter().any(|r| r.key.is_some()) {
            let keys: StringArray = records
                .iter()
                .map(|r| r.key.and_then(|k| std::str::from_utf8(k).ok()))
                .collect();
            batch = fill_nulls(batch, k, &keys, "a record key")?;
        }
    }
    if let Some(t) = def
        .watermark
        .as_ref()
        .and_then(|w| def.column_index(&w.column))
    {
        if batch.column(t).null_count() > 0 && records.iter().any(|r| r.timestamp_ms >= 0) {
            let times: TimestampMillisecondArray = records
                .iter()
                .map(|r| (r.timestamp_ms >= 0).then_some(r.timestamp_ms))
                .collect();
            batch = fill_nulls(batch, t, &times, "a record timestamp")?;
        }
    }
    Ok(batch)
}

/// Replaces the nulls of column `i` with `values` cast to its type.
fn fill_nulls(
    batch: RecordBatch,
    i: usize,
    values: &dyn Array,
    what: &str,
) -> std::result::Result<RecordBatch, ProduceError> {
    let column = batch.column(i);
    let field = batch.schema().field(i).clone();
    let values = cast(values, column.data_type()).map_err(|e| {
        invalid(
            None,
            format!("{what} does not fit column {}: {e}", field.name()),
        )
    })?;
    let missing = is_null(column).map_err(|e| invalid(None, e.to_string()))?;
    let filled: ArrayRef =
        zip(&missing, &values, column).map_err(|e| invalid(None, e.to_string()))?;
    let mut columns = batch.columns().to_vec();
    columns[i] = filled;
    RecordBatch::try_new(batch.schema(), columns).map_err(|e| invalid(None, e.to_string()))
}

/// Turns rows into records: JSON values, the key column as key, event time as timestamp.
pub(crate) fn encode_rows(
    entry: &StreamEntry,
    batch: &RecordBatch,
    first: u64,
    out: &mut FetchedRecords,
) -> Result<()> {
    let start = out.values.len();
    {
        // Straight into the values buffer: one line per row.
        let mut writer = LineDelimitedWriter::new(&mut out.values);
        writer.write(batch)?;
        writer.finish()?;
    }
    // JSON text escapes newlines inside strings, so every newline ends a row; the newline
    // stays in the buffer, outside the row's span.
    let mut row_start = start;
    for end in memchr::memchr_iter(b'\n', &out.values[start..]) {
        let end = start + end;
        out.value_spans.push((row_start, end));
        row_start = end + 1;
    }
    let spans = out.value_spans.len() - out.offsets.len();
    if spans != batch.num_rows() {
        return Err(Error::Internal(format!(
            "{} rows made {spans} JSON lines; this is a bug",
            batch.num_rows()
        )));
    }
    out.offsets
        .extend((0..batch.num_rows() as u64).map(|i| first + i));
    let keys = match entry
        .def
        .key
        .as_ref()
        .and_then(|k| entry.def.column_index(k))
    {
        Some(k) => Some(cast(batch.column(k), &DataType::Utf8)?),
        None => None,
    };
    match keys
        .as_ref()
        .and_then(|k| k.as_any().downcast_ref::<StringArray>())
    {
        Some(keys) => {
            for i in 0..batch.num_rows() {
                out.push_key(keys.is_valid(i).then(|| keys.value(i).as_bytes()));
            }
        }
        None => out
            .key_spans
            .extend(std::iter::repeat_n(None, batch.num_rows())),
    }
    let times = match entry
        .def
        .watermark
        .as_ref()
        .and_then(|w| entry.def.column_index(&w.column))
    {
        Some(t) => Some(cast(
            batch.column(t),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?),
        None => None,
    };
    match times
        .as_ref()
        .and_then(|t| t.as_any().downcast_ref::<TimestampMillisecondArray>())
    {
        Some(t) => out
            .timestamps_ms
            .extend((0..batch.num_rows()).map(|i| if t.is_valid(i) { t.value(i) } else { -1 })),
        None => out
            .timestamps_ms
            .extend(std::iter::repeat_n(-1, batch.num_rows())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db_with_clicks() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(dir.path()).await.expect("open");
        let session = weir_sql::Session::new(db.clone());
        session
            .execute_one(
                "CREATE STREAM clicks (user_id BIGINT NOT NULL, url TEXT, ts TIMESTAMP, \
                 WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
                 WITH (partitions = 2, key = 'user_id', format = 'json')",
                None,
            )
            .await
            .expect("create");
        (dir, db)
    }

    #[tokio::test]
    async fn json_records_round_trip_with_key_and_time() {
        let (_dir, db) = db_with_clicks().await;
        let topic = db.topic("clicks").expect("topic");
        assert_eq!(topic.partitions(), 2);
        let base = topic
            .produce(
                1,
                &[
                    ProducedRecord {
                        key: Some(b"1"),
                        value: Some(br#"{"url":"/a","ts":"2026-01-01 00:00:01"}"#),
                        timestamp_ms: -1,
                        headers: None,
                    },
                    ProducedRecord {
                        key: None,
                        value: Some(br#"{"user_id":2,"url":"/b","ts":"2026-01-01T00:00:02"}"#),
                        timestamp_ms: -1,
                        headers: None,
                    },
                    // Event time from the record timestamp.
                    ProducedRecord {
                        key: Some(b"3"),
                        value: Some(br#"{"url":"/c"}"#),
                        timestamp_ms: 1_767_225_603_000,
                        headers: None,
                    },
                ],
                None,
            )
            .expect("produce");
        assert_eq!(base, 0);
        assert_eq!(topic.offsets(1), Some((0, 3)));
        let got = topic.fetch(1, 1, 1 << 20).expect("fetch");
        assert_eq!(got.len(), 2);
        assert_eq!(
            String::from_utf8_lossy(got.value(1)),
            r#"{"user_id":3,"url":"/c","ts":"2026-01-01T00:00:03"}"#
        );
        assert_eq!(got.offsets, vec![1, 2]);
        assert_eq!(got.key(0), Some(&b"2"[..]));
        assert_eq!(got.key(1), Some(&b"3"[..]));
        assert_eq!(got.timestamps_ms[0], 1_767_225_602_000);
        assert_eq!(
            String::from_utf8_lossy(got.value(0)),
            r#"{"user_id":2,"url":"/b","ts":"2026-01-01T00:00:02"}"#
        );
        assert_eq!(
            topic.offset_for_time(1, 1_767_225_602_000).expect("scan"),
            Some(1)
        );
        assert_eq!(topic.offset_for_time(1, 0).expect("scan"), Some(0));
        assert_eq!(
            topic.offset_for_time(1, 1_767_225_609_000).expect("scan"),
            None
        );
        let first = topic.fetch(1, 0, 1 << 20).expect("fetch");
        assert_eq!(first.key(0), Some(&b"1"[..]), "key from the record key");
    }

    #[tokio::test]
    async fn newlines_inside_values_keep_one_record_per_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(dir.path()).await.expect("open");
        weir_sql::Session::new(db.clone())
            .execute_one(
                "CREATE STREAM notes (body TEXT) WITH (format = 'json')",
                None,
            )
            .await
            .expect("create");
        let topic = db.topic("notes").expect("topic");
        let values: [&[u8]; 3] = [
            br#"{"body":"two\nlines"}"#,
            br#"{"body":null}"#,
            br#"{"body":"a \"quote\""}"#,
        ];
        let records: Vec<ProducedRecord<'_>> = values
            .iter()
            .map(|v| ProducedRecord {
                key: None,
                value: Some(v),
                timestamp_ms: -1,
                headers: None,
            })
            .collect();
        topic.produce(0, &records, None).expect("produce");
        let got = topic.fetch(0, 0, 1 << 20).expect("fetch");
        assert_eq!(got.len(), 3);
        assert_eq!(got.offsets, vec![0, 1, 2]);
        assert_eq!(got.value(0), br#"{"body":"two\nlines"}"#);
        assert_eq!(got.value(1), b"{}");
        assert_eq!(got.value(2), br#"{"body":"a \"quote\""}"#);
        assert_eq!(got.key_spans, vec![None; 3], "a stream without a key");
        assert_eq!(
            got.timestamps_ms,
            vec![-1; 3],
            "a stream without event time"
        );
        // A small budget still returns a row, and stops soon after.
        assert_eq!(topic.fetch(0, 1, 1).expect("fetch").offsets, vec![1, 2]);
    }

    #[tokio::test]
    async fn a_bad_record_rejects_the_whole_batch() {
        let (_dir, db) = db_with_clicks().await;
        let topic = db.topic("clicks").expect("topic");
        for bad in [
            &br#"{"user_id":"x","ts":"2026-01-01 00:00:00"}"#[..],
            &b"{not json"[..],
            &br#"{"user_id":3,"ts":"2026-01-01 00:00:00"}{"user_id":4}"#[..],
            &br#"{"url":"/no-key","ts":"2026-01-01 00:00:00"}"#[..],
            &br#"{"user_id":5}"#[..],
        ] {
            let err = topic
                .produce(
                    0,
                    &[
                        ProducedRecord {
                            key: None,
                            value: Some(br#"{"user_id":1,"ts":"2026-01-01 00:00:00"}"#),
                            timestamp_ms: -1,
                            headers: None,
                        },
                        ProducedRecord {
                            key: None,
                            value: Some(bad),
                            timestamp_ms: -1,
                            headers: None,
                        },
                    ],
                    None,
                )
                .expect_err(&format!("refused: {}", String::from_utf8_lossy(bad)));
            match err {
                ProduceError::InvalidRecord { index, message } => {
                    assert_eq!(index, Some(1), "{message}");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(topic.offsets(0), Some((0, 0)), "nothing appended");
        assert!(matches!(
            topic.produce(7, &[], None),
            Err(ProduceError::UnknownPartition)
        ));
    }

    #[tokio::test]
    async fn raw_topics_keep_records_as_they_came() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(dir.path()).await.expect("open");
        db.create_topic("events", 3).expect("create");
        let topic = db.topic("events").expect("topic");
        assert_eq!(topic.partitions(), 3);
        let base = topic
            .produce(
                2,
                &[ProducedRecord {
                    key: Some(b"k1"),
                    value: Some(br#"{"user":"ada","n":3}"#),
                    timestamp_ms: 1_767_225_600_000,
                    headers: Some(r#"{"source":"test"}"#.into()),
                }],
                None,
            )
            .expect("produce");
        assert_eq!(base, 0);
        let bad = topic.produce(
            2,
            &[ProducedRecord {
                key: None,
                value: Some(&[0xff, 0xfe]),
                timestamp_ms: -1,
                headers: None,
            }],
            None,
        );
        assert!(matches!(
            bad,
            Err(ProduceError::InvalidRecord { index: Some(0), .. })
        ));
        let got = topic.fetch(2, 0, 1 << 20).expect("fetch");
        assert_eq!(got.len(), 1);
        assert_eq!(got.key(0), Some(&b"k1"[..]));
        assert_eq!(got.value(0), br#"{"user":"ada","n":3}"#);
        assert_eq!(got.timestamps_ms[0], 1_767_225_600_000);
        // SQL reads the records, and the JSON functions take fields out of the value.
        let session = weir_sql::Session::new(db.clone());
        let out = session
            .execute_one(
                "SELECT key, json_get_str(value, 'user') AS u, json_get_int(value, 'n') AS n, \
                 partition, headers FROM events",
                None,
            )
            .await
            .expect("query");
        let weir_sql::Output::Rows { stream, .. } = out else {
            panic!("rows expected");
        };
        let batches: Vec<RecordBatch> = futures::TryStreamExt::try_collect(stream)
            .await
            .expect("batches");
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string();
        assert!(
            text.contains("| k1  | ada | 3 | 2         | {\"source\":\"test\"} |"),
            "{text}"
        );
    }
}

/// What a failed append of produced rows tells the producer.
fn produce_error(e: weir_engine::Error) -> ProduceError {
    match e {
        weir_engine::Error::InvalidArgument(message) | weir_engine::Error::NotNull(message) => {
            ProduceError::InvalidRecord {
                index: None,
                message,
            }
        }
        weir_engine::Error::OutOfOrderSequence(message) => ProduceError::OutOfOrder(message),
        other => ProduceError::Storage(other.into()),
    }
}
