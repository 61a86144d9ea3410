//! The Kafka protocol listener: every stream is a topic with the same partitions and offsets.
//!
//! Requests are decoded and responses encoded by the `kafka-protocol` crate; rows become
//! records and back in `weir_sql::topics`. One broker (node 0, this listener) leads every
//! partition. A connection answers its requests in order, as Kafka clients require.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    RequestHeader, RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use weir_sql::Database;
use weir_sql::topics::{ProduceError, ProducedRecord, Topic};

/// Requests larger than this close the connection (Kafka's `socket.request.max.bytes`).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// Kafka error codes Weir answers with.
mod code {
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const INVALID_REQUEST: i16 = 42;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const INVALID_RECORD: i16 = 87;
}

/// The APIs served and their version ranges: what librdkafka 2.x, kafka-python and the Java
/// client negotiate, short of the versions that address topics by id.
const APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
];

fn supported(key: ApiKey, version: i16) -> bool {
    APIS.iter()
        .any(|&(k, lo, hi)| k == key && (lo..=hi).contains(&version))
}

/// Serves the Kafka protocol on `listener` until the task is dropped.
pub async fn run(listener: TcpListener, db: Database, max_frame_bytes: usize) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "kafka accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let db = db.clone();
        tokio::spawn(async move {
            tracing::debug!(%peer, "kafka connection");
            if let Err(e) = serve_connection(socket, &db, max_frame_bytes).await {
                tracing::debug!(%peer, error = %e, "kafka connection closed");
            }
        });
    }
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("a request of {0} bytes is over the limit or malformed")]
    FrameSize(i64),
    #[error("{0}")]
    Protocol(String),
}

async fn serve_connection(
    socket: TcpStream,
    db: &Database,
    max_frame_bytes: usize,
) -> Result<(), ConnectionError> {
    socket.set_nodelay(true)?;
    let local = socket.local_addr()?;
    let (read, write) = socket.into_split();
    let mut read = BufReader::new(read);
    let mut write = BufWriter::new(write);
    loop {
        let size = match read.read_i32().await {
            Ok(n) => i64::from(n),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if size < 8 || size as u64 > max_frame_bytes as u64 {
            return Err(ConnectionError::FrameSize(size));
        }
        let mut body = vec![0u8; size as usize];
        read.read_exact(&mut body).await?;
        if let Some(response) = handle(db, local, Bytes::from(body)).await? {
            write.write_i32(response.len() as i32).await?;
            write.write_all(&response).await?;
            write.flush().await?;
        }
    }
}

/// Answers one request; `None` for a request that gets no answer (Produce with acks=0).
async fn handle(
    db: &Database,
    local: SocketAddr,
    body: Bytes,
) -> Result<Option<BytesMut>, ConnectionError> {
    let (raw_key, version) = (
        i16::from_be_bytes([body[0], body[1]]),
        i16::from_be_bytes([body[2], body[3]]),
    );
    let key = ApiKey::try_from(raw_key)
        .map_err(|_| ConnectionError::Protocol(format!("unknown api key {raw_key}")))?;
    if !supported(key, version) {
        if key == ApiKey::ApiVersions {
            // Kafka's rule: answer an ApiVersions of a version it does not know with v0 and
            // UNSUPPORTED_VERSION, so the client retries with one it does.
            let correlation = body
                .get(4..8)
                .map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            let response = api_versions().with_error_code(code::UNSUPPORTED_VERSION);
            return encode(
                correlation,
                ApiKey::ApiVersions,
                0,
                &ResponseKind::ApiVersions(response),
            )
            .map(Some);
        }
        return Err(ConnectionError::Protocol(format!(
            "{key:?} version {version} is not supported"
        )));
    }
    let (header, request) = decode(key, version, body).map_err(ConnectionError::Protocol)?;
    let response = match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions()),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata(db, local, &r)),
        RequestKind::Produce(r) => {
            let acks = r.acks;
            let response = produce(db, r).await;
            if acks == 0 {
                return Ok(None);
            }
            ResponseKind::Produce(response)
        }
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets(db, &r)),
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch(db, &r).await),
        other => {
            return Err(ConnectionError::Protocol(format!(
                "{other:?} is not served"
            )));
        }
    };
    encode(header.correlation_id, key, version, &response).map(Some)
}

fn encode(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    response: &ResponseKind,
) -> Result<BytesMut, ConnectionError> {
    let mut out = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, key.response_header_version(version))
        .and_then(|()| response.encode(&mut out, version))
        .map_err(|e| {
            ConnectionError::Protocol(format!(
                "encoding a {key:?} response failed: {e}; this is a bug"
            ))
        })?;
    Ok(out)
}

fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        APIS.iter()
            .map(|&(k, lo, hi)| {
                ApiVersion::default()
                    .with_api_key(k as i16)
                    .with_min_version(lo)
                    .with_max_version(hi)
            })
            .collect(),
    )
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn metadata(db: &Database, local: SocketAddr, request: &MetadataRequest) -> MetadataResponse {
    let names: Vec<String> = match &request.topics {
        None => db.topics().into_iter().map(|(n, _)| n).collect(),
        Some(topics) => topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str().to_string()))
            .collect(),
    };
    let topics = names
        .into_iter()
        .map(|name| {
            let topic =
                MetadataResponseTopic::default().with_name(Some(TopicName(str_bytes(&name))));
            match db.topic(&name) {
                None => topic.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION),
                Some(t) => topic.with_partitions(
                    (0..t.partitions() as i32)
                        .map(|p| {
                            MetadataResponsePartition::default()
                                .with_partition_index(p)
                                .with_leader_id(BrokerId(0))
                                .with_leader_epoch(0)
                                .with_replica_nodes(vec![BrokerId(0)])
                                .with_isr_nodes(vec![BrokerId(0)])
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(0))
                .with_host(str_bytes(&local.ip().to_string()))
                .with_port(i32::from(local.port())),
        ])
        .with_cluster_id(Some(str_bytes("weir")))
        .with_controller_id(BrokerId(0))
        .with_topics(topics)
}

async fn produce(db: &Database, request: ProduceRequest) -> ProduceResponse {
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let topic = db.topic(topic_data.name.0.as_str());
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let index = data.index;
            let outcome = match &topic {
                None => Err((code::UNKNOWN_TOPIC_OR_PARTITION, None, None)),
                Some(topic) => produce_partition(topic, index, data.records).await,
            };
            let response = PartitionProduceResponse::default()
                .with_index(index)
                .with_log_append_time_ms(-1);
            partitions.push(match outcome {
                Ok(base) => response.with_base_offset(base as i64),
                Err((error, record, message)) => response
                    .with_error_code(error)
                    .with_base_offset(-1)
                    .with_record_errors(
                        record
                            .map(|i| {
                                vec![
                                    BatchIndexAndErrorMessage::default()
                                        .with_batch_index(i as i32)
                                        .with_batch_index_error_message(
                                            message.as_deref().map(str_bytes),
                                        ),
                                ]
                            })
                            .unwrap_or_default(),
                    )
                    .with_error_message(message.as_deref().map(str_bytes)),
            });
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_partition_responses(partitions),
        );
    }
    ProduceResponse::default().with_responses(responses)
}

/// `(error code, index of the bad record, message)`.
type ProduceFailure = (i16, Option<usize>, Option<String>);

async fn produce_partition(
    topic: &Topic,
    partition: i32,
    records: Option<Bytes>,
) -> Result<u64, ProduceFailure> {
    let mut bytes = records.unwrap_or_default();
    let sets = std::panic::catch_unwind(move || RecordBatchDecoder::decode_all(&mut bytes))
        .map_err(|_| {
            (
                code::CORRUPT_MESSAGE,
                None,
                Some("the record batch does not decode".into()),
            )
        })?
        .map_err(|e| (code::CORRUPT_MESSAGE, None, Some(e.to_string())))?;
    let records: Vec<Record> = sets.into_iter().flat_map(|s| s.records).collect();
    let topic = topic.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let produced: Vec<ProducedRecord<'_>> = records
            .iter()
            .filter(|r| !r.control)
            .map(|r| ProducedRecord {
                key: r.key.as_deref(),
                value: r.value.as_deref(),
            })
            .collect();
        topic.produce(partition, &produced)
    })
    .await
    .map_err(|e| (code::KAFKA_STORAGE_ERROR, None, Some(e.to_string())))?;
    outcome.map_err(|e| match e {
        ProduceError::InvalidRecord { index, message } => {
            (code::INVALID_RECORD, index, Some(message))
        }
        ProduceError::NotWritable(m) => (code::INVALID_REQUEST, None, Some(m)),
        ProduceError::UnknownPartition => (code::UNKNOWN_TOPIC_OR_PARTITION, None, None),
        ProduceError::Storage(e) => (code::KAFKA_STORAGE_ERROR, None, Some(e.to_string())),
    })
}

fn list_offsets(db: &Database, request: &ListOffsetsRequest) -> ListOffsetsResponse {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let topic = db.topic(t.name.0.as_str());
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1);
                    let Some((start, end)) =
                        topic.as_ref().and_then(|t| t.offsets(p.partition_index))
                    else {
                        return response
                            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_offset(-1);
                    };
                    match p.timestamp {
                        -2 => response.with_offset(start as i64),
                        -1 => response.with_offset(end as i64),
                        // Offsets by time need an index of record timestamps, which the log
                        // does not keep yet.
                        _ => response
                            .with_error_code(code::INVALID_REQUEST)
                            .with_offset(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

async fn fetch(db: &Database, request: &FetchRequest) -> FetchResponse {
    let deadline =
        Instant::now() + Duration::from_millis(request.max_wait_ms.clamp(0, 30_000) as u64);
    let min_bytes = request.min_bytes.max(1) as usize;
    let max_bytes = if request.max_bytes > 0 {
        request.max_bytes as usize
    } else {
        usize::MAX
    };
    loop {
        let (response, bytes) = fetch_once(db, request, max_bytes).await;
        if bytes >= min_bytes || Instant::now() >= deadline {
            return response;
        }
        // Long poll: nothing (or too little) yet. New rows are rare enough to poll for
        // cheaply, and a poll keeps the connection's task simple.
        tokio::time::sleep(Duration::from_millis(5).min(deadline - Instant::now())).await;
    }
}

async fn fetch_once(
    db: &Database,
    request: &FetchRequest,
    max_bytes: usize,
) -> (FetchResponse, usize) {
    let mut total = 0usize;
    let mut responses = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let topic = db.topic(t.topic.0.as_str());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let response = PartitionData::default()
                .with_partition_index(p.partition)
                .with_last_stable_offset(-1)
                .with_preferred_read_replica(BrokerId(-1));
            let Some(topic) = &topic else {
                partitions.push(
                    response
                        .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                        .with_high_watermark(-1),
                );
                continue;
            };
            let Some((start, end)) = topic.offsets(p.partition) else {
                partitions.push(
                    response
                        .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                        .with_high_watermark(-1),
                );
                continue;
            };
            let response = response
                .with_high_watermark(end as i64)
                .with_last_stable_offset(end as i64)
                .with_log_start_offset(start as i64);
            let offset = p.fetch_offset;
            if offset < start as i64 || offset > end as i64 {
                partitions.push(response.with_error_code(code::OFFSET_OUT_OF_RANGE));
                continue;
            }
            let budget =
                (p.partition_max_bytes.max(1) as usize).min(max_bytes.saturating_sub(total));
            if offset == end as i64 || budget == 0 {
                partitions.push(response.with_records(Some(Bytes::new())));
                continue;
            }
            let read = {
                let topic = topic.clone();
                let partition = p.partition;
                tokio::task::spawn_blocking(move || topic.fetch(partition, offset as u64, budget))
                    .await
            };
            let rows = match read {
                Ok(Ok(rows)) => rows,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka fetch failed");
                    partitions.push(response.with_error_code(code::KAFKA_STORAGE_ERROR));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kafka fetch task failed");
                    partitions.push(response.with_error_code(code::KAFKA_STORAGE_ERROR));
                    continue;
                }
            };
            let records: Vec<Record> = rows
                .into_iter()
                .map(|r| Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: r.offset as i64,
                    sequence: -1,
                    timestamp: r.timestamp_ms,
                    key: r.key.map(Bytes::from),
                    value: Some(Bytes::from(r.value)),
                    headers: Default::default(),
                })
                .collect();
            let mut encoded = BytesMut::new();
            if !records.is_empty() {
                let options = RecordEncodeOptions {
                    version: 2,
                    compression: Compression::None,
                };
                if let Err(e) = RecordBatchEncoder::encode(&mut encoded, &records, &options) {
                    tracing::error!(error = %e, "encoding fetched records failed; this is a bug");
                    partitions.push(response.with_error_code(code::KAFKA_STORAGE_ERROR));
                    continue;
                }
            }
            total += encoded.len();
            partitions.push(response.with_records(Some(encoded.freeze())));
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions),
        );
    }
    (FetchResponse::default().with_responses(responses), total)
}

/// Decodes a request's header and body. A decoder that panics on hostile input is caught, so
/// that the connection is closed rather than its task torn down mid-write.
fn decode(
    key: ApiKey,
    version: i16,
    mut body: Bytes,
) -> Result<(RequestHeader, RequestKind), String> {
    std::panic::catch_unwind(move || {
        let header = RequestHeader::decode(&mut body, key.request_header_version(version))
            .map_err(|e| format!("bad request header: {e}"))?;
        let request = RequestKind::decode(key, &mut body, version)
            .map_err(|e| format!("bad {key:?} request: {e}"))?;
        Ok((header, request))
    })
    .unwrap_or_else(|_| Err(format!("a {key:?} request that does not decode")))
}

/// Decodes one request frame body (without its size prefix) as the listener would, records
/// included: whether it decoded. For tests that feed the decoder random and mutated frames.
pub fn decode_request(body: &[u8]) -> bool {
    if body.len() < 4 {
        return false;
    }
    let key = i16::from_be_bytes([body[0], body[1]]);
    let version = i16::from_be_bytes([body[2], body[3]]);
    let Ok(key) = ApiKey::try_from(key) else {
        return false;
    };
    if !supported(key, version) {
        return false;
    }
    let Ok((_, request)) = decode(key, version, Bytes::copy_from_slice(body)) else {
        return false;
    };
    if let RequestKind::Produce(p) = request {
        for t in p.topic_data {
            for d in t.partition_data {
                let mut records = d.records.unwrap_or_default();
                let decoded = std::panic::catch_unwind(move || {
                    RecordBatchDecoder::decode_all(&mut records).is_ok()
                });
                if !decoded.unwrap_or(false) {
                    return false;
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use proptest::prelude::*;

    use super::*;

    /// A valid Produce v9 frame body carrying `n` JSON records.
    fn produce_frame(n: usize) -> Vec<u8> {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: 1_767_225_600_000,
                key: Some(Bytes::from(i.to_string())),
                value: Some(Bytes::from(format!("{{\"user_id\":{i}}}"))),
                headers: Default::default(),
            })
            .collect();
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .expect("encodes");
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(str_bytes("clicks")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch.freeze())),
                    ]),
            ]);
        let mut out = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(9)
            .with_correlation_id(7)
            .with_client_id(Some(str_bytes("test")))
            .encode(&mut out, ApiKey::Produce.request_header_version(9))
            .expect("header");
        request.encode(&mut out, 9).expect("body");
        out.to_vec()
    }

    /// The decoders behind the listener, without the panic guard: a panic here is a decoder
    /// bug that the guard would only contain.
    fn decode_unguarded(body: &[u8]) {
        if body.len() < 4 {
            return;
        }
        let key = i16::from_be_bytes([body[0], body[1]]);
        let version = i16::from_be_bytes([body[2], body[3]]);
        let Ok(key) = ApiKey::try_from(key) else {
            return;
        };
        if !supported(key, version) {
            return;
        }
        let mut bytes = Bytes::copy_from_slice(body);
        if RequestHeader::decode(&mut bytes, key.request_header_version(version)).is_err() {
            return;
        }
        if let Ok(RequestKind::Produce(p)) = RequestKind::decode(key, &mut bytes, version) {
            for t in p.topic_data {
                for d in t.partition_data {
                    let mut records = d.records.unwrap_or_default();
                    let _ = RecordBatchDecoder::decode_all(&mut records);
                }
            }
        }
    }

    #[test]
    fn a_valid_produce_frame_decodes_and_a_flipped_crc_does_not() {
        let frame = produce_frame(3);
        assert!(decode_request(&frame));
        // The record batch's CRC covers everything after it; flip a byte of the last record.
        let mut bad = frame.clone();
        let last = bad.len() - 2;
        bad[last] ^= 0x40;
        assert!(!decode_request(&bad));
        assert!(!decode_request(&frame[..frame.len() - 5]));
        assert!(!decode_request(b"\x03\xe7\x00\x00"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_frames_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            decode_unguarded(&body);
        }

        #[test]
        fn mutated_produce_frames_never_panic(
            n in 1usize..20,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut frame = produce_frame(n);
            for (at, byte) in flips {
                let i = at.index(frame.len());
                frame[i] ^= byte;
            }
            decode_unguarded(&frame);
            let end = cut.index(frame.len() + 1);
            decode_unguarded(&frame[..end]);
        }
    }
}
