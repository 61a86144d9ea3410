//! The Kafka protocol listener: every stream is a topic with the same partitions and offsets.
//!
//! Requests are decoded and responses encoded by the `kafka-protocol` crate; rows become
//! records and back in `topics`. One broker (node 0, this listener) leads every
//! partition and coordinates every consumer group ([`groups`]). A connection answers its
//! requests in order, as Kafka clients require.

pub mod connectors;
pub mod groups;
pub mod topics;
mod txn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatResponse, InitProducerIdRequest, InitProducerIdResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    ProduceRequest, ProduceResponse, ProducerId, RequestHeader, RequestKind, ResponseHeader,
    ResponseKind, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use topics::{ProduceError, ProducedRecord, ProducerBatch, Topic, TopicCatalog as _};
use weir_sql::Database;

/// Requests larger than this close the connection (Kafka's `socket.request.max.bytes`).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// Kafka error codes Weir answers with.
mod code {
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const INVALID_REQUEST: i16 = 42;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const INVALID_RECORD: i16 = 87;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_TXN_STATE: i16 = 48;
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    pub const PRODUCER_FENCED: i16 = 90;
}

/// The APIs served and their version ranges: what librdkafka 2.x, kafka-python and the Java
/// client negotiate, short of the versions that address topics by id.
const APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
];

/// What every connection shares.
#[derive(Debug)]
struct Context {
    db: Database,
    groups: groups::Coordinator,
    /// Whether Metadata and Produce for an unknown topic create it (`--kafka-auto-create`).
    auto_create: bool,
    /// The next producer id to hand out. It starts at the start time in microseconds, so
    /// ids stay unique across restarts (the log remembers producers by id).
    next_producer_id: std::sync::atomic::AtomicI64,
    /// Transactional producers and their open transactions.
    transactions: txn::Transactions,
}

fn supported(key: ApiKey, version: i16) -> bool {
    APIS.iter()
        .any(|&(k, lo, hi)| k == key && (lo..=hi).contains(&version))
}

/// Serves the Kafka protocol on `listener` until the task is dropped. Consumer groups'
/// committed offsets are kept in `kafka/` under the data directory.
pub async fn run(listener: TcpListener, db: Database, max_frame_bytes: usize, auto_create: bool) {
    let groups = match groups::Coordinator::open(&db.dir().join("kafka")) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the consumer groups' offsets; the Kafka listener stops");
            return;
        }
    };
    txn::recover(&db, &groups);
    let transactions = match txn::Transactions::open(&db.dir().join("kafka")) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the transaction coordinator's state; the Kafka listener stops");
            return;
        }
    };
    let started_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let context = Arc::new(Context {
        db,
        groups,
        auto_create,
        next_producer_id: std::sync::atomic::AtomicI64::new(started_us),
        transactions,
    });
    let sweeper = {
        let context = Arc::clone(&context);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                context.groups.expire_sessions();
                // Aborting writes markers: off the async workers.
                let expiring = Arc::clone(&context);
                let _ = tokio::task::spawn_blocking(move || expiring.transactions.expire()).await;
            }
        })
    };
    let _stop_sweeper = crate::AbortOnDrop(sweeper);
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "kafka accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let context = Arc::clone(&context);
        tokio::spawn(async move {
            tracing::debug!(%peer, "kafka connection");
            if let Err(e) = serve_connection(socket, &context, max_frame_bytes).await {
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
    context: &Context,
    max_frame_bytes: usize,
) -> Result<(), ConnectionError> {
    socket.set_nodelay(true)?;
    let local = socket.local_addr()?;
    let peer = socket.peer_addr()?;
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
        if let Some(response) = handle(context, local, peer, Bytes::from(body)).await? {
            write.write_i32(response.len() as i32).await?;
            write.write_all(&response).await?;
            write.flush().await?;
        }
    }
}

/// Answers one request; `None` for a request that gets no answer (Produce with acks=0).
async fn handle(
    context: &Context,
    local: SocketAddr,
    peer: SocketAddr,
    body: Bytes,
) -> Result<Option<BytesMut>, ConnectionError> {
    let db = &context.db;
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
        RequestKind::Metadata(r) => {
            if context.auto_create && r.allow_auto_topic_creation {
                for t in r.topics.iter().flatten() {
                    if let Some(name) = &t.name {
                        auto_create(db, name.0.as_str());
                    }
                }
            }
            ResponseKind::Metadata(metadata(db, local, &r))
        }
        RequestKind::Produce(r) => {
            if context.auto_create {
                for t in &r.topic_data {
                    auto_create(db, t.name.0.as_str());
                }
            }
            let acks = r.acks;
            let response = produce(context, r).await;
            if acks == 0 {
                return Ok(None);
            }
            ResponseKind::Produce(response)
        }
        // Offsets by time scan the log: off the async workers.
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(tokio::task::block_in_place(|| list_offsets(db, &r)))
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch(db, &r).await),
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator(local, &r, version))
        }
        RequestKind::JoinGroup(r) => {
            let client_id = header
                .client_id
                .as_ref()
                .map_or_else(String::new, |c| c.as_str().to_string());
            ResponseKind::JoinGroup(join_group(context, r, client_id, peer).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(sync_group(context, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(
            HeartbeatResponse::default().with_error_code(context.groups.heartbeat(
                r.group_id.0.as_str(),
                r.generation_id,
                r.member_id.as_str(),
            )),
        ),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(leave_group(context, &r)),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(offset_commit(context, r).await),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(offset_fetch(context, &r)),
        RequestKind::ListGroups(_) => ResponseKind::ListGroups(list_groups(context)),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(create_topics(db, &r)),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(delete_topics(db, &r)),
        // A transactional id's second InitProducerId aborts what it left open: writes markers.
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(tokio::task::block_in_place(|| {
                init_producer_id(context, &r)
            }))
        }
        // The first partition or group of a transaction fsyncs the coordinator's state.
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(tokio::task::block_in_place(|| {
                txn::add_partitions_to_txn(context, &r)
            }))
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(tokio::task::block_in_place(|| {
                txn::add_offsets_to_txn(context, &r)
            }))
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn::txn_offset_commit(context, &r))
        }
        // Committing fsyncs: off the async workers.
        RequestKind::EndTxn(r) => {
            ResponseKind::EndTxn(tokio::task::block_in_place(|| txn::end_txn(context, &r)))
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups(context, &r))
        }
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
    // A fetch response is megabytes of records: sized once rather than grown by doubling.
    let capacity = match response {
        ResponseKind::Fetch(f) => f.compute_size(version).unwrap_or(0) + 16,
        _ => 256,
    };
    let mut out = BytesMut::with_capacity(capacity);
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

async fn produce(context: &Context, request: ProduceRequest) -> ProduceResponse {
    let db = &context.db;
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let topic = db.topic(topic_data.name.0.as_str());
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let index = data.index;
            let outcome = match &topic {
                None => Err((code::UNKNOWN_TOPIC_OR_PARTITION, None, None)),
                Some(topic) => produce_partition(context, topic, index, data.records).await,
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
    context: &Context,
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
    // An idempotent producer's batch carries its id, epoch and first sequence number.
    let producer = records
        .iter()
        .find(|r| !r.control && r.producer_id >= 0)
        .map(|r| ProducerBatch {
            id: r.producer_id,
            epoch: r.producer_epoch,
            base_sequence: r.sequence,
        });
    fn produced(records: &[Record]) -> Vec<ProducedRecord<'_>> {
        records
            .iter()
            .filter(|r| !r.control)
            .map(|r| ProducedRecord {
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                timestamp_ms: r.timestamp,
                headers: headers_json(r),
            })
            .collect()
    }
    let outcome = if let Some(p) = producer.filter(|_| records.iter().any(|r| r.transactional)) {
        // Into the producer's open transaction; writing blocks, off the async workers.
        tokio::task::block_in_place(|| {
            let name = topic.name().to_string();
            let rows = produced(&records);
            let written = context.transactions.produce(
                (p.id, p.epoch),
                &name,
                partition,
                |id| topic.log().begin_as(id),
                |txn| topic.produce_in(txn, partition, &rows, p),
            );
            match written {
                Ok(outcome) => outcome.map_err(produce_failure),
                Err(code::PRODUCER_FENCED) => Err((code::INVALID_PRODUCER_EPOCH, None, None)),
                Err(code) => Err((code, None, None)),
            }
        })?
    } else {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || topic.produce(partition, &produced(&records), producer))
            .await
            .map_err(|e| (code::KAFKA_STORAGE_ERROR, None, Some(e.to_string())))?
            .map_err(produce_failure)?
    };
    Ok(outcome)
}

/// What a refused produce answers.
fn produce_failure(e: ProduceError) -> ProduceFailure {
    match e {
        ProduceError::InvalidRecord { index, message } => {
            (code::INVALID_RECORD, index, Some(message))
        }
        ProduceError::NotWritable(m) => (code::INVALID_REQUEST, None, Some(m)),
        ProduceError::UnknownPartition => (code::UNKNOWN_TOPIC_OR_PARTITION, None, None),
        ProduceError::OutOfOrder(m) => (code::OUT_OF_ORDER_SEQUENCE_NUMBER, None, Some(m)),
        ProduceError::Storage(e) => (code::KAFKA_STORAGE_ERROR, None, Some(e.to_string())),
    }
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
                        // The first record at or after the time; a scan, as the log keeps
                        // no index of times.
                        time => match topic
                            .as_ref()
                            .map(|t| t.offset_for_time(p.partition_index, time))
                        {
                            Some(Ok(Some(offset))) => {
                                response.with_offset(offset as i64).with_timestamp(time)
                            }
                            Some(Ok(None)) => response.with_offset(-1),
                            _ => response
                                .with_error_code(code::KAFKA_STORAGE_ERROR)
                                .with_offset(-1),
                        },
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
        let mut reading = Vec::new();
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
            let budget = (p.partition_max_bytes.max(1) as usize).min(max_bytes);
            if offset == end as i64 {
                partitions.push(response.with_records(Some(Bytes::new())));
                continue;
            }
            // Partitions are read and encoded at once, each on a blocking thread.
            let topic = topic.clone();
            let partition = p.partition;
            reading.push((
                partitions.len(),
                tokio::task::spawn_blocking(move || {
                    read_records(&topic, partition, offset as u64, budget)
                }),
            ));
            partitions.push(response);
        }
        for (i, read) in reading.drain(..) {
            let response = std::mem::take(&mut partitions[i]);
            partitions[i] = match read.await {
                Ok(Ok(encoded)) => {
                    total += encoded.len();
                    response.with_records(Some(encoded.freeze()))
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka fetch failed");
                    response.with_error_code(code::KAFKA_STORAGE_ERROR)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kafka fetch task failed");
                    response.with_error_code(code::KAFKA_STORAGE_ERROR)
                }
            };
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions),
        );
    }
    (FetchResponse::default().with_responses(responses), total)
}

/// Reads a partition's rows from `offset` on (about `budget` bytes) as one encoded record batch.
fn read_records(
    topic: &Topic,
    partition: i32,
    offset: u64,
    budget: usize,
) -> Result<BytesMut, String> {
    let mut rows = topic
        .fetch(partition, offset, budget)
        .map_err(|e| e.to_string())?;
    // Records share the fetch's two buffers: a slice each, not a copy each.
    let keys = Bytes::from(std::mem::take(&mut rows.keys));
    let values = Bytes::from(std::mem::take(&mut rows.values));
    let records: Vec<Record> = (0..rows.len())
        .map(|i| {
            let (start, end) = rows.value_spans[i];
            record(
                rows.offsets[i] as i64,
                rows.timestamps_ms[i],
                rows.key_spans[i].map(|(s, e)| keys.slice(s..e)),
                values.slice(start..end),
            )
        })
        .collect();
    // Sized up front: growing it record by record copied the batch over and over.
    let mut encoded = BytesMut::with_capacity(61 + 24 * records.len() + keys.len() + values.len());
    if !records.is_empty() {
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut encoded, &records, &options)
            .map_err(|e| format!("encoding fetched records failed: {e}; this is a bug"))?;
    }
    Ok(encoded)
}

/// Creates a raw topic of one partition (Kafka's default) if `name` is unknown.
fn auto_create(db: &Database, name: &str) {
    if db.topic(name).is_none() {
        match db.create_topic(name, 1) {
            Ok(()) => tracing::info!(topic = name, "created a raw topic on first use"),
            Err(e) => tracing::debug!(topic = name, error = %e, "no topic created"),
        }
    }
}

/// Creates raw topics (see `Database::create_topic`); -1 partitions means Kafka's default, 1.
fn create_topics(db: &Database, r: &CreateTopicsRequest) -> CreateTopicsResponse {
    CreateTopicsResponse::default().with_topics(
        r.topics
            .iter()
            .map(|t| {
                let name = t.name.0.as_str();
                let result = CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_replication_factor(1);
                let partitions = if t.num_partitions == -1 {
                    1
                } else {
                    t.num_partitions
                };
                let outcome = if !(1..=1024).contains(&partitions) {
                    Err((
                        code::INVALID_PARTITIONS,
                        format!("a topic has 1 to 1024 partitions, not {partitions}"),
                    ))
                } else if db.topic(name).is_some() {
                    Err((code::TOPIC_ALREADY_EXISTS, format!("topic {name} exists")))
                } else if r.validate_only {
                    Ok(())
                } else {
                    db.create_topic(name, partitions as u32).map_err(|e| {
                        let error = match &e {
                            weir_sql::Error::DuplicateRelation(_) => code::TOPIC_ALREADY_EXISTS,
                            _ => code::INVALID_TOPIC_EXCEPTION,
                        };
                        (error, e.to_string())
                    })
                };
                match outcome {
                    Ok(()) => result.with_num_partitions(partitions),
                    Err((error, message)) => result
                        .with_error_code(error)
                        .with_error_message(Some(str_bytes(&message)))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1),
                }
            })
            .collect(),
    )
}

/// Deletes topics: their streams, unless views or queries read them.
fn delete_topics(db: &Database, r: &DeleteTopicsRequest) -> DeleteTopicsResponse {
    let names: Vec<TopicName> = if r.topic_names.is_empty() {
        r.topics.iter().filter_map(|t| t.name.clone()).collect()
    } else {
        r.topic_names.clone()
    };
    DeleteTopicsResponse::default().with_responses(
        names
            .into_iter()
            .map(|name| {
                let result = DeletableTopicResult::default().with_name(Some(name.clone()));
                if db.topic(name.0.as_str()).is_none() {
                    return result.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION);
                }
                match db.drop_stream(name.0.as_str(), false) {
                    Ok(()) => result,
                    Err(e) => result
                        .with_error_code(code::POLICY_VIOLATION)
                        .with_error_message(Some(str_bytes(&e.to_string()))),
                }
            })
            .collect(),
    )
}

/// Hands an idempotent producer its id; a producer that already has one gets the next epoch.
/// A transactional producer gets its transactional id's producer, at the next epoch, which
/// fences the one before and aborts what it left open.
fn init_producer_id(context: &Context, r: &InitProducerIdRequest) -> InitProducerIdResponse {
    if let Some(transactional_id) = &r.transactional_id {
        let initialized = context.transactions.init(
            transactional_id.0.as_str(),
            r.transaction_timeout_ms,
            || {
                context
                    .next_producer_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        );
        return match initialized {
            Ok((id, epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch),
            Err(code) => InitProducerIdResponse::default()
                .with_error_code(code)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        };
    }
    let (id, epoch) = if r.producer_id.0 >= 0 {
        (r.producer_id.0, r.producer_epoch.saturating_add(1))
    } else {
        (
            context
                .next_producer_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            0,
        )
    };
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
}

fn find_coordinator(
    local: SocketAddr,
    request: &FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let host = str_bytes(&local.ip().to_string());
    let port = i32::from(local.port());
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(
            request
                .coordinator_keys
                .iter()
                .map(|key| {
                    Coordinator::default()
                        .with_key(key.clone())
                        .with_node_id(BrokerId(0))
                        .with_host(host.clone())
                        .with_port(port)
                })
                .collect(),
        );
    }
    FindCoordinatorResponse::default()
        .with_node_id(BrokerId(0))
        .with_host(host)
        .with_port(port)
}

async fn join_group(
    context: &Context,
    r: JoinGroupRequest,
    client_id: String,
    peer: SocketAddr,
) -> JoinGroupResponse {
    let rebalance_ms = if r.rebalance_timeout_ms > 0 {
        r.rebalance_timeout_ms
    } else {
        r.session_timeout_ms
    };
    let outcome = context
        .groups
        .join(groups::Join {
            group_id: r.group_id.0.as_str().to_string(),
            member_id: r.member_id.as_str().to_string(),
            client_id,
            client_host: peer.ip().to_string(),
            protocol_type: r.protocol_type.as_str().to_string(),
            protocols: r
                .protocols
                .iter()
                .map(|p| (p.name.as_str().to_string(), p.metadata.clone()))
                .collect(),
            session_timeout: Duration::from_millis(
                r.session_timeout_ms.clamp(1000, 3_600_000) as u64
            ),
            rebalance_timeout: Duration::from_millis(rebalance_ms.clamp(1000, 3_600_000) as u64),
        })
        .await;
    JoinGroupResponse::default()
        .with_error_code(outcome.error)
        .with_generation_id(outcome.generation)
        .with_protocol_type(Some(str_bytes(&outcome.protocol_type)))
        .with_protocol_name(outcome.protocol.as_deref().map(str_bytes))
        .with_leader(str_bytes(&outcome.leader))
        .with_member_id(str_bytes(&outcome.member_id))
        .with_members(
            outcome
                .members
                .into_iter()
                .map(|(id, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&id))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}

async fn sync_group(context: &Context, r: SyncGroupRequest) -> SyncGroupResponse {
    let (error, assignment) = context
        .groups
        .sync(
            r.group_id.0.as_str(),
            r.generation_id,
            r.member_id.as_str(),
            r.assignments
                .into_iter()
                .map(|a| (a.member_id.as_str().to_string(), a.assignment))
                .collect(),
        )
        .await;
    SyncGroupResponse::default()
        .with_error_code(error)
        .with_protocol_type(r.protocol_type)
        .with_protocol_name(r.protocol_name)
        .with_assignment(assignment)
}

fn leave_group(context: &Context, r: &LeaveGroupRequest) -> LeaveGroupResponse {
    let members: Vec<String> = if r.members.is_empty() {
        vec![r.member_id.as_str().to_string()]
    } else {
        r.members
            .iter()
            .map(|m| m.member_id.as_str().to_string())
            .collect()
    };
    let codes = context.groups.leave(r.group_id.0.as_str(), &members);
    let error = if r.members.is_empty() {
        codes.first().copied().unwrap_or(0)
    } else {
        0
    };
    LeaveGroupResponse::default()
        .with_error_code(error)
        .with_members(
            members
                .iter()
                .zip(codes)
                .map(|(m, code)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(m))
                        .with_error_code(code)
                })
                .collect(),
        )
}

async fn offset_commit(context: &Context, r: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = r.group_id.0.as_str().to_string();
    let allowed = context.groups.may_commit(
        &group,
        r.generation_id_or_member_epoch,
        r.member_id.as_str(),
    );
    let mut offsets = Vec::new();
    let mut topics = Vec::with_capacity(r.topics.len());
    for t in &r.topics {
        let known = context.db.topic(t.name.0.as_str());
        let partitions = t
            .partitions
            .iter()
            .map(|p| {
                let exists = known
                    .as_ref()
                    .and_then(|k| k.offsets(p.partition_index))
                    .is_some();
                let error = if allowed != 0 {
                    allowed
                } else if !exists {
                    code::UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    offsets.push((
                        t.name.0.as_str().to_string(),
                        p.partition_index,
                        p.committed_offset,
                    ));
                    0
                };
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error)
            })
            .collect();
        topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    if !offsets.is_empty() {
        let context_groups = &context.groups;
        // The fsync blocks: keep it off the async workers.
        let stored = tokio::task::block_in_place(|| context_groups.commit(&group, &offsets));
        if let Err(e) = stored {
            tracing::warn!(error = %e, group = %group, "storing committed offsets failed");
            for t in &mut topics {
                for p in &mut t.partitions {
                    if p.error_code == 0 {
                        p.error_code = code::KAFKA_STORAGE_ERROR;
                    }
                }
            }
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}

fn offset_fetch(context: &Context, r: &OffsetFetchRequest) -> OffsetFetchResponse {
    let group = r.group_id.0.as_str();
    let wanted: Vec<(TopicName, Vec<i32>)> = match &r.topics {
        Some(topics) => topics
            .iter()
            .map(|t| (t.name.clone(), t.partition_indexes.clone()))
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
            for (t, p, _) in context.groups.committed_all(group) {
                by_topic.entry(t).or_default().push(p);
            }
            by_topic
                .into_iter()
                .map(|(t, ps)| (TopicName(str_bytes(&t)), ps))
                .collect()
        }
    };
    OffsetFetchResponse::default().with_topics(
        wanted
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|p| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(
                                context
                                    .groups
                                    .committed(group, name.0.as_str(), p)
                                    .unwrap_or(-1),
                            )
                            .with_committed_leader_epoch(-1)
                            .with_metadata(Some(str_bytes("")))
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(name)
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

fn list_groups(context: &Context) -> ListGroupsResponse {
    ListGroupsResponse::default().with_groups(
        context
            .groups
            .list()
            .into_iter()
            .map(|(id, g)| {
                ListedGroup::default()
                    .with_group_id(GroupId(str_bytes(&id)))
                    .with_protocol_type(str_bytes(&g.protocol_type))
                    .with_group_state(str_bytes(g.state.name()))
            })
            .collect(),
    )
}

fn describe_groups(context: &Context, r: &DescribeGroupsRequest) -> DescribeGroupsResponse {
    let all: std::collections::HashMap<String, groups::Group> =
        context.groups.list().into_iter().collect();
    DescribeGroupsResponse::default().with_groups(
        r.groups
            .iter()
            .map(|id| {
                let described = DescribedGroup::default().with_group_id(id.clone());
                let Some(g) = all.get(id.0.as_str()) else {
                    return described.with_group_state(str_bytes("Dead"));
                };
                described
                    .with_group_state(str_bytes(g.state.name()))
                    .with_protocol_type(str_bytes(&g.protocol_type))
                    .with_protocol_data(str_bytes(g.protocol.as_deref().unwrap_or("")))
                    .with_members(
                        g.members
                            .iter()
                            .map(|(mid, m)| {
                                DescribedGroupMember::default()
                                    .with_member_id(str_bytes(mid))
                                    .with_client_id(str_bytes(&m.client_id))
                                    .with_client_host(str_bytes(&m.client_host))
                                    .with_member_metadata(
                                        m.protocols
                                            .iter()
                                            .find(|(n, _)| Some(n) == g.protocol.as_ref())
                                            .map(|(_, md)| md.clone())
                                            .unwrap_or_default(),
                                    )
                                    .with_member_assignment(m.assignment.clone())
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// A record's headers as a JSON object (values as text, or null), for raw topics.
fn headers_json(r: &Record) -> Option<String> {
    if r.headers.is_empty() {
        return None;
    }
    let map: serde_json::Map<String, serde_json::Value> = r
        .headers
        .iter()
        .map(|(k, v)| {
            let v = v.as_ref().map_or(serde_json::Value::Null, |v| {
                serde_json::Value::String(String::from_utf8_lossy(v).into_owned())
            });
            (k.as_str().to_string(), v)
        })
        .collect();
    Some(serde_json::Value::Object(map).to_string())
}

/// A plain record (no producer id, no transaction) at `offset`.
fn record(offset: i64, timestamp: i64, key: Option<Bytes>, value: Bytes) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: -1,
        timestamp,
        key,
        value: Some(value),
        headers: Default::default(),
    }
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
            .map(|i| {
                record(
                    i as i64,
                    1_767_225_600_000,
                    Some(Bytes::from(i.to_string())),
                    Bytes::from(format!("{{\"user_id\":{i}}}")),
                )
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
