//! Connectors to external Kafka clusters: streams read from a topic, and sinks that deliver a
//! stream's rows to one, each run by a thread of its own over librdkafka.
//!
//! A source stream mirrors its topic's partitions one to one. Every append to a partition
//! carries, in the same log frame, the topic offset that follows its records; a restart resumes
//! from there, so that what was read before a crash is neither lost nor read twice (exactly
//! once into Weir). A sink reads its stream's log and remembers, in a file fsynced after the
//! broker acknowledged (acks=all, idempotent producer), how far each partition was delivered: a
//! crash between the acknowledgement and that file sends the last records again (at least once
//! out of Weir).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use weir_sql::catalog::{Connector, ConnectorFactory, ConnectorStatus, KafkaEndpoint, StreamEntry};
use weir_sql::{Error, Result};

use super::topics::{FetchedRecords, ProduceError, ProducedRecord, decode_records, encode_rows};

/// How long asking a cluster for a topic's partitions may take before it counts as unreachable.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// A source appends what it has read once it holds this many records...
const SOURCE_BATCH: usize = 16_384;
/// ...or once its oldest unappended record has waited this long.
const SOURCE_LINGER: Duration = Duration::from_millis(20);
/// Rows a sink reads from a partition per round.
const SINK_CHUNK: usize = 4096;
/// How long a connector waits after a failure before it tries again.
const RETRY: Duration = Duration::from_secs(1);

/// The connectors of the `weir` binary: librdkafka clients, a thread each.
#[derive(Debug, Default)]
pub struct KafkaConnectors;

impl KafkaConnectors {
    /// The factory, as [`weir_sql::Options::connectors`] takes it.
    pub fn shared() -> Arc<dyn ConnectorFactory> {
        Arc::new(Self)
    }
}

impl ConnectorFactory for KafkaConnectors {
    fn topic_partitions(&self, endpoint: &KafkaEndpoint) -> Result<u32> {
        topic_partitions(endpoint)
    }

    fn start_source(
        &self,
        stream: Arc<StreamEntry>,
        endpoint: KafkaEndpoint,
    ) -> Result<Arc<dyn Connector>> {
        Ok(Arc::new(KafkaConnector::start(
            "source", stream, endpoint, None,
        )?))
    }

    fn start_sink(
        &self,
        stream: Arc<StreamEntry>,
        endpoint: KafkaEndpoint,
        state_file: PathBuf,
    ) -> Result<Arc<dyn Connector>> {
        Ok(Arc::new(KafkaConnector::start(
            "sink",
            stream,
            endpoint,
            Some(state_file),
        )?))
    }
}

/// A running source or sink; dropping it stops its thread and waits for it.
#[derive(Debug)]
pub struct KafkaConnector {
    /// The stream it belongs to.
    pub stream: String,
    /// `source` or `sink`.
    pub kind: &'static str,
    /// Where it reads from or writes to.
    pub endpoint: KafkaEndpoint,
    status: Arc<Mutex<ConnectorStatus>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KafkaConnector {
    fn start(
        kind: &'static str,
        stream: Arc<StreamEntry>,
        endpoint: KafkaEndpoint,
        state_file: Option<PathBuf>,
    ) -> Result<Self> {
        let status = Arc::new(Mutex::new(ConnectorStatus {
            state: "running".into(),
            ..ConnectorStatus::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let name = stream.def.name.clone();
        let run = {
            let (status, stop, endpoint) =
                (Arc::clone(&status), Arc::clone(&stop), endpoint.clone());
            move || {
                let r = match state_file {
                    None => source_loop(&stream, &endpoint, &status, &stop),
                    Some(file) => sink_loop(&stream, &endpoint, &file, &status, &stop),
                };
                let mut s = lock(&status);
                s.state = "stopped".into();
                if let Err(e) = r {
                    tracing::error!(stream = %stream.def.name, error = %e, "connector stopped");
                    s.last_error = Some(e.to_string());
                }
            }
        };
        let thread = std::thread::Builder::new()
            .name(format!("{kind}-{name}"))
            .spawn(run)
            .map_err(|e| Error::Internal(format!("starting a connector thread failed: {e}")))?;
        tracing::info!(stream = %name, kind, topic = %endpoint.topic, brokers = %endpoint.brokers, "connector started");
        Ok(Self {
            stream: name,
            kind,
            endpoint,
            status,
            stop,
            thread: Some(thread),
        })
    }
}

impl Connector for KafkaConnector {
    fn stream(&self) -> &str {
        &self.stream
    }

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn endpoint(&self) -> &KafkaEndpoint {
        &self.endpoint
    }

    fn status(&self) -> ConnectorStatus {
        lock(&self.status).clone()
    }
}

impl Drop for KafkaConnector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(status: &Mutex<ConnectorStatus>) -> std::sync::MutexGuard<'_, ConnectorStatus> {
    status.lock().unwrap_or_else(|e| e.into_inner())
}

fn retrying(status: &Mutex<ConnectorStatus>, stream: &str, e: &dyn std::fmt::Display) {
    tracing::warn!(stream, error = %e, "connector failed; retrying");
    let mut s = lock(status);
    s.state = "retrying".into();
    s.last_error = Some(e.to_string());
}

fn client_config(endpoint: &KafkaEndpoint) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &endpoint.brokers)
        // librdkafka's own log goes to tracing through the errors it reports, not to stderr.
        .set("log_level", "3");
    c
}

fn unreachable(endpoint: &KafkaEndpoint, e: &KafkaError) -> Error {
    Error::WrongObject {
        sqlstate: "08001",
        message: format!(
            "cannot reach Kafka brokers {} for topic {}: {e}",
            endpoint.brokers, endpoint.topic
        ),
    }
}

/// The number of partitions of the endpoint's topic, asked of its cluster (this blocks for up
/// to ten seconds). An unreachable cluster is 08001, a missing topic 42704.
pub fn topic_partitions(endpoint: &KafkaEndpoint) -> Result<u32> {
    let consumer: BaseConsumer = client_config(endpoint)
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|e| unreachable(endpoint, &e))?;
    let metadata = consumer
        .fetch_metadata(Some(endpoint.topic.as_str()), METADATA_TIMEOUT)
        .map_err(|e| unreachable(endpoint, &e))?;
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == endpoint.topic);
    match topic {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().len() as u32)
        }
        _ => Err(Error::WrongObject {
            sqlstate: "42704",
            message: format!(
                "topic {} does not exist on Kafka brokers {}",
                endpoint.topic, endpoint.brokers
            ),
        }),
    }
}

/// Reads the topic into the stream until told to stop.
fn source_loop(
    stream: &StreamEntry,
    endpoint: &KafkaEndpoint,
    status: &Mutex<ConnectorStatus>,
    stop: &AtomicBool,
) -> Result<()> {
    let name = &stream.def.name;
    let consumer: BaseConsumer = client_config(endpoint)
        .set("group.id", format!("weir-{name}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| unreachable(endpoint, &e))?;
    let partitions = stream.log.partitions();
    let mut assignment = TopicPartitionList::new();
    for (p, partition) in partitions.iter().enumerate() {
        let from = match partition.source_next() {
            Some(next) => Offset::Offset(next),
            None if endpoint.start.as_deref() == Some("latest") => Offset::End,
            None => Offset::Beginning,
        };
        if let Offset::Offset(next) = from {
            lock(status).positions.insert(p as i32, next);
        }
        assignment
            .add_partition_offset(&endpoint.topic, p as i32, from)
            .map_err(|e| Error::Internal(format!("assigning partition {p}: {e}")))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| unreachable(endpoint, &e))?;
    // Records read but not yet appended, per partition; borrowed from librdkafka, not copied.
    let mut pending: Vec<Vec<BorrowedMessage<'_>>> =
        partitions.iter().map(|_| Vec::new()).collect();
    let mut held = 0usize;
    let mut oldest: Option<Instant> = None;
    let mut ends_seen: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        if ends_seen.is_none_or(|t| t.elapsed() >= ENDS_EVERY) {
            ends_seen = Some(Instant::now());
            note_topic_ends(&consumer, endpoint, partitions.len(), status);
        }
        let wait = oldest.map_or(Duration::from_millis(100), |t| {
            SOURCE_LINGER.saturating_sub(t.elapsed())
        });
        match consumer.poll(wait) {
            Some(Ok(m)) => match usize::try_from(m.partition())
                .ok()
                .filter(|&p| p < pending.len())
            {
                Some(p) => {
                    pending[p].push(m);
                    held += 1;
                    oldest.get_or_insert_with(Instant::now);
                }
                None => tracing::warn!(
                    stream = %name,
                    partition = m.partition(),
                    "a record of a partition the stream does not have (the topic grew); skipped"
                ),
            },
            Some(Err(e)) => {
                retrying(status, name, &e);
                std::thread::sleep(Duration::from_millis(100));
            }
            None => {}
        }
        let due = oldest.is_some_and(|t| t.elapsed() >= SOURCE_LINGER);
        if held >= SOURCE_BATCH || (held > 0 && due) {
            for (p, messages) in pending.iter_mut().enumerate() {
                if messages.is_empty() {
                    continue;
                }
                // An append that fails (a full disk, say) is tried again with the same records,
                // so that none is skipped.
                while let Err(e) = append_messages(stream, p, messages, status) {
                    retrying(status, name, &e);
                    if stop.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    std::thread::sleep(RETRY);
                }
                messages.clear();
            }
            held = 0;
            oldest = None;
            let mut s = lock(status);
            s.state = "running".into();
            s.last_error = None;
        }
    }
    Ok(())
}

/// How often a source asks its cluster where the topic's partitions end, for its lag.
const ENDS_EVERY: Duration = Duration::from_secs(2);

/// Records where each partition of the topic ends (its high watermark), and, for a partition
/// not read yet, where reading starts, in the status: `weir_connectors.lag` is the difference.
/// A cluster that does not answer quickly leaves the last ends as they were.
fn note_topic_ends(
    consumer: &BaseConsumer,
    endpoint: &KafkaEndpoint,
    partitions: usize,
    status: &Mutex<ConnectorStatus>,
) {
    let latest = endpoint.start.as_deref() == Some("latest");
    for p in 0..partitions as i32 {
        let Ok((low, high)) =
            consumer.fetch_watermarks(&endpoint.topic, p, Duration::from_millis(200))
        else {
            continue;
        };
        let mut s = lock(status);
        s.ends.insert(p, high);
        s.positions
            .entry(p)
            .or_insert(if latest { high } else { low });
    }
}

/// Decodes one partition's records, skipping (and counting) those that do not decode, and
/// appends the rows with the offset after the last record.
fn append_messages(
    stream: &StreamEntry,
    partition: usize,
    messages: &[BorrowedMessage<'_>],
    status: &Mutex<ConnectorStatus>,
) -> Result<()> {
    let Some(last) = messages.last() else {
        return Ok(());
    };
    let next = last.offset() + 1;
    let mut records: Vec<(i64, ProducedRecord<'_>)> = messages
        .iter()
        .map(|m| {
            (
                m.offset(),
                ProducedRecord {
                    key: m.key(),
                    value: m.payload(),
                    timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
                    headers: None,
                },
            )
        })
        .collect();
    let mut bad: Vec<String> = Vec::new();
    let batch = loop {
        let produced: Vec<ProducedRecord<'_>> = records.iter().map(|(_, r)| r.clone()).collect();
        match decode_records(stream, &produced) {
            Ok(batch) => break batch,
            Err(ProduceError::InvalidRecord {
                index: Some(i),
                message,
            }) if i < records.len() => {
                let (offset, _) = records.remove(i);
                bad.push(format!("partition {partition} offset {offset}: {message}"));
            }
            Err(_) => {
                // No single record was blamed: decode them one at a time to find the bad ones.
                let mut good = Vec::with_capacity(records.len());
                for (offset, r) in records.drain(..) {
                    match decode_records(stream, std::slice::from_ref(&r)) {
                        Ok(_) => good.push((offset, r)),
                        Err(e) => bad.push(format!(
                            "partition {partition} offset {offset}: {}",
                            produce_error_text(&e)
                        )),
                    }
                }
                records = good;
            }
        }
    };
    if !bad.is_empty() {
        tracing::warn!(
            stream = %stream.def.name,
            partition,
            skipped = bad.len(),
            first = %bad[0],
            "records that do not decode into the stream's columns were skipped"
        );
    }
    if batch.num_rows() > 0 {
        stream
            .log
            .append_from_source(partition as u32, &[batch], next)?;
    }
    let mut s = lock(status);
    s.records += records.len() as u64;
    s.bad_records += bad.len() as u64;
    if let Some(b) = bad.pop() {
        s.last_bad_record = Some(b);
    }
    s.positions.insert(partition as i32, next);
    Ok(())
}

fn produce_error_text(e: &ProduceError) -> String {
    match e {
        ProduceError::InvalidRecord { message, .. } => message.clone(),
        other => format!("{other:?}"),
    }
}

/// Delivers the stream's rows until told to stop.
fn sink_loop(
    stream: &StreamEntry,
    endpoint: &KafkaEndpoint,
    state_file: &Path,
    status: &Mutex<ConnectorStatus>,
    stop: &AtomicBool,
) -> Result<()> {
    let name = &stream.def.name;
    let producer: FutureProducer = client_config(endpoint)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The Java client's partitioner: a key goes where Java producers would put it.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .map_err(|e| unreachable(endpoint, &e))?;
    let partitions = stream.log.partitions();
    let mut delivered = load_delivered(state_file, partitions.len())?;
    {
        let mut s = lock(status);
        for (p, d) in delivered.iter().enumerate() {
            s.positions.insert(p as i32, *d as i64);
        }
    }
    let mut seen = stream.log.notifier().generation();
    while !stop.load(Ordering::Acquire) {
        {
            let mut s = lock(status);
            for (p, partition) in partitions.iter().enumerate() {
                s.ends.insert(p as i32, partition.committed() as i64);
            }
        }
        let mut progressed = false;
        for (p, partition) in partitions.iter().enumerate() {
            let chunk = match partition.read(delivered[p], SINK_CHUNK) {
                Ok(c) => c,
                Err(e) => {
                    retrying(status, name, &e);
                    std::thread::sleep(RETRY);
                    continue;
                }
            };
            let mut records = FetchedRecords::default();
            for (base, batch) in chunk {
                let skip = delivered[p].saturating_sub(base) as usize;
                if skip >= batch.num_rows() {
                    continue;
                }
                let batch = batch.slice(skip, batch.num_rows() - skip);
                encode_rows(stream, &batch, base + skip as u64, &mut records)?;
            }
            let Some(&last) = records.offsets.last() else {
                continue;
            };
            match deliver(&producer, &endpoint.topic, &records, stop) {
                Ok(()) => {
                    delivered[p] = last + 1;
                    store_delivered(state_file, &delivered)?;
                    progressed = true;
                    let mut s = lock(status);
                    s.records += records.len() as u64;
                    s.positions.insert(p as i32, delivered[p] as i64);
                    s.state = "running".into();
                    s.last_error = None;
                }
                Err(e) => {
                    retrying(status, name, &e);
                    std::thread::sleep(RETRY);
                }
            }
        }
        if !progressed {
            seen = stream
                .log
                .notifier()
                .wait_past(seen, Duration::from_millis(200));
        }
    }
    Ok(())
}

/// Sends `records` and waits until the broker acknowledged every one of them.
fn deliver(
    producer: &FutureProducer,
    topic: &str,
    records: &FetchedRecords,
    stop: &AtomicBool,
) -> std::result::Result<(), String> {
    let mut deliveries = Vec::with_capacity(records.len());
    for i in 0..records.len() {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).payload(records.value(i));
        if let Some(k) = records.key(i) {
            record = record.key(k);
        }
        if records.timestamps_ms[i] >= 0 {
            record = record.timestamp(records.timestamps_ms[i]);
        }
        loop {
            match producer.send_result(record) {
                Ok(f) => {
                    deliveries.push(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if stop.load(Ordering::Acquire) {
                        return Err("stopped".into());
                    }
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.to_string()),
            }
        }
    }
    for result in futures::executor::block_on(futures::future::join_all(deliveries)) {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(format!("delivery failed: {e}")),
            Err(_) => return Err("the producer went away before delivering".into()),
        }
    }
    Ok(())
}

fn load_delivered(file: &Path, partitions: usize) -> Result<Vec<u64>> {
    let mut delivered = match fs::read(file) {
        Ok(bytes) => serde_json::from_slice::<Vec<u64>>(&bytes).map_err(|e| {
            Error::Engine(weir_engine::Error::Corrupt(format!(
                "{} does not hold delivered offsets: {e}",
                file.display()
            )))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(Error::Engine(weir_engine::Error::Io {
                context: format!("reading {}", file.display()),
                source: e,
            }));
        }
    };
    delivered.resize(partitions, 0);
    Ok(delivered)
}

/// Replaces the delivered offsets durably: a crash leaves the old file or the new one.
fn store_delivered(file: &Path, delivered: &[u64]) -> Result<()> {
    let io = |context: String, source: std::io::Error| {
        Error::Engine(weir_engine::Error::Io { context, source })
    };
    let tmp = file.with_extension("tmp");
    let bytes = serde_json::to_vec(delivered)
        .map_err(|e| Error::Internal(format!("encoding delivered offsets: {e}")))?;
    let mut f = fs::File::create(&tmp).map_err(|e| io(format!("creating {}", tmp.display()), e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, file).map_err(|e| io(format!("renaming {}", tmp.display()), e))?;
    if let Some(dir) = file.parent() {
        weir_engine::log::sync_dir(dir)?;
    }
    Ok(())
}
