//! `weir bench kafka`: produce and fetch throughput of the Kafka listener, measured with one
//! librdkafka producer (acks=all, default batching) and one librdkafka consumer in the same
//! process as the server, and peak memory.

use std::io::Write;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::bench::peak_rss_mib;
use weir_server::{ServeConfig, Server};

/// How the Kafka benchmark runs.
#[derive(Debug, Clone)]
pub struct KafkaBenchOptions {
    /// Records to produce, then fetch.
    pub records: u64,
    /// Where the CSV goes.
    pub csv: std::path::PathBuf,
}

const PARTITIONS: i32 = 4;

/// Runs the benchmark against a temporary embedded server and prints one table.
pub async fn kafka(options: KafkaBenchOptions) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary data dir: {e}"))?;
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        data_dir: dir.path().to_path_buf(),
        users: None,
        tls: None,
        checkpoint_interval: Duration::from_secs(1),
        view_memory_limit: weir_sql::DEFAULT_VIEW_MEMORY_LIMIT,
        kafka_listen: Some("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?),
        kafka_auto_create: false,
        http_listen: None,
    };
    let server = Server::bind(&config).await.map_err(|e| e.to_string())?;
    let broker = server
        .kafka_addr()
        .ok_or("the Kafka listener did not start")?
        .to_string();
    let db = server.database().clone();
    let session = weir_sql::Session::new(db.clone());
    for r in session
        .execute(&format!(
            "CREATE STREAM clicks (user_id BIGINT, url TEXT, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
             WITH (partitions = {PARTITIONS}, key = 'user_id', format = 'json')"
        ))
        .await
    {
        r.map_err(|e| e.to_string())?;
    }
    let running = tokio::spawn(server.run());
    let records = options.records;
    let (produce_secs, fetch_secs, fetched) = tokio::task::spawn_blocking(move || {
        let produce = produce(&broker, records)?;
        let (fetch, fetched) = fetch(&broker, records)?;
        Ok::<_, String>((produce, fetch, fetched))
    })
    .await
    .map_err(|e| format!("the benchmark thread failed: {e}"))??;
    let stored: u64 = db
        .stream("clicks")
        .ok_or("stream clicks vanished")?
        .log
        .committed_offsets()
        .iter()
        .sum();
    running.abort();
    if stored != records || fetched != records {
        return Err(format!(
            "produced {records} records, {stored} stored and {fetched} fetched"
        ));
    }
    let rss = peak_rss_mib();
    let mut out = std::io::stdout();
    let mut csv = String::from("step,records,seconds,records_per_second,peak_rss_mib\n");
    let _ = writeln!(
        out,
        "{:<28} {:>10} {:>8} {:>12}",
        "step", "records", "seconds", "records/s"
    );
    for (step, secs) in [
        ("produce (acks=all)", produce_secs),
        ("fetch (one consumer)", fetch_secs),
    ] {
        let rate = records as f64 / secs;
        let _ = writeln!(out, "{step:<28} {records:>10} {secs:>8.2} {rate:>12.0}");
        csv.push_str(&format!("{step},{records},{secs:.3},{rate:.0},{rss:.0}\n"));
    }
    let _ = writeln!(
        out,
        "peak RSS {rss:.0} MiB (server, producer and consumer in one process)"
    );
    std::fs::write(&options.csv, csv).map_err(|e| format!("{}: {e}", options.csv.display()))?;
    let _ = writeln!(out, "written to {}", options.csv.display());
    Ok(())
}

/// Produces `records` small keyed JSON records (about 60 bytes); returns the seconds taken
/// until every one was acknowledged.
fn produce(broker: &str, records: u64) -> Result<f64, String> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("acks", "all")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    let mut key = String::new();
    let mut value = String::new();
    let started = Instant::now();
    for i in 0..records {
        use std::fmt::Write as _;
        key.clear();
        value.clear();
        let user = i % 10_000;
        let _ = write!(key, "{user}");
        let _ = write!(
            value,
            "{{\"user_id\":{user},\"url\":\"/page/{}\",\"ts\":\"2026-01-01 00:{:02}:{:02}\"}}",
            i % 100,
            i / 60_000 % 60,
            i / 1000 % 60
        );
        let mut record = BaseRecord::to("clicks")
            .key(key.as_str())
            .payload(value.as_str());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(format!("produce: {e}")),
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| format!("flush: {e}"))?;
    Ok(started.elapsed().as_secs_f64())
}

/// Fetches every partition from the beginning until `records` records came; returns the seconds
/// taken and the records seen.
fn fetch(broker: &str, records: u64) -> Result<(f64, u64), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", "weir-bench")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset("clicks", p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut seen = 0u64;
    let mut bytes = 0usize;
    while seen < records {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                seen += 1;
                bytes += m.payload().map_or(0, <[u8]>::len);
            }
            Some(Err(e)) => return Err(format!("fetch: {e}")),
            None => return Err(format!("fetch: nothing for 10 s after {seen} records")),
        }
    }
    tracing::debug!(bytes, "fetched");
    Ok((started.elapsed().as_secs_f64(), seen))
}
