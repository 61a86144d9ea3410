//! Kafka transactions (transactional producers) over Weir's log transactions: a producer's
//! records go to each stream's log as they come, and readers see them once EndTxn commits.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};
use weir_engine::log::Transaction;

use super::code;
use super::topics::TopicCatalog as _;

/// One transactional id: its producer and the transaction it has open.
#[derive(Debug)]
struct Producer {
    id: i64,
    epoch: i16,
    /// An open transaction is aborted once it is older than this (`transaction.timeout.ms`).
    timeout: Duration,
    /// When the producer last made a request: an id unused for [`ID_EXPIRY`] is forgotten.
    used: Instant,
    /// When the open transaction took its first partition, and its log transaction id (the
    /// same in every stream it writes).
    began: Option<(Instant, u64)>,
    /// Partitions added to the open transaction (AddPartitionsToTxn).
    partitions: HashSet<(String, i32)>,
    /// The open transaction's rows, one log transaction per stream.
    logs: HashMap<String, Transaction>,
    /// Offsets to commit with the transaction: group, topic, partition, offset.
    offsets: Vec<(String, String, i32, i64)>,
}

impl Producer {
    fn new(id: i64, epoch: i16, timeout: Duration) -> Self {
        Self {
            id,
            epoch,
            timeout,
            used: Instant::now(),
            began: None,
            partitions: HashSet::new(),
            logs: HashMap::new(),
            offsets: Vec::new(),
        }
    }

    /// Aborts the open transaction: its rows are never visible.
    fn abort(&mut self) {
        for (_, txn) in self.logs.drain() {
            txn.abort();
        }
        self.partitions.clear();
        self.offsets.clear();
        self.began = None;
    }
}

#[derive(Debug, Default)]
struct Inner {
    by_transactional_id: HashMap<String, Producer>,
    /// Producer id to transactional id, for Produce (which names only the producer).
    by_producer: HashMap<i64, String>,
}

/// The transaction coordinator: every transactional producer's state. What must outlive a
/// restart (each transactional id's producer id, epoch and timeout, and whether it has a
/// transaction open) is in a file, written before the request that changed it is answered, as
/// Kafka keeps it in `__transaction_state`. So a producer goes on across a restart of Weir
/// without calling InitProducerId again; one whose transaction the restart aborted (the log
/// drops what was not committed) is fenced by a new epoch, as Kafka's coordinator fences a
/// producer whose transaction it aborted, and its commit fails instead of committing half.
#[derive(Debug, Default)]
pub(super) struct Transactions {
    inner: Mutex<Inner>,
    /// Where the durable state is kept; `None` keeps it in memory only (unit tests).
    file: Option<IdFile>,
}

/// One transactional id as stored: id, producer id, epoch, timeout in ms, transaction open.
type StoredId = (String, i64, i16, u64, bool);

/// The transactional ids' file, rewritten whole, fsynced and renamed into place on every
/// change, so a crash leaves the old or the new version, never half of one.
#[derive(Debug)]
struct IdFile {
    path: PathBuf,
    dir: PathBuf,
}

impl IdFile {
    fn read(&self) -> std::io::Result<Vec<StoredId>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} does not parse: {e}", self.path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn write(&self, inner: &Inner) -> std::io::Result<()> {
        let ids: Vec<StoredId> = inner
            .by_transactional_id
            .iter()
            .map(|(t, p)| {
                let timeout = u64::try_from(p.timeout.as_millis()).unwrap_or(u64::MAX);
                (t.clone(), p.id, p.epoch, timeout, p.began.is_some())
            })
            .collect();
        let bytes = serde_json::to_vec(&ids).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

/// What EndTxn commits besides rows: the offsets of consumer groups (TxnOffsetCommit).
pub(super) type GroupOffsets = Vec<(String, String, i32, i64)>;

impl Transactions {
    /// The coordinator whose state is kept in `dir` (`transactional-ids.json`). Producers
    /// that had a transaction open when Weir stopped get the next epoch: the restart aborted
    /// their transaction, so their next request is fenced.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = IdFile {
            path: dir.join("transactional-ids.json"),
            dir: dir.to_path_buf(),
        };
        let mut inner = Inner::default();
        for (transactional_id, id, epoch, timeout_ms, open) in file.read()? {
            let epoch = if open {
                tracing::info!(%transactional_id, "a Kafka transaction open at the last stop was aborted; its producer is fenced");
                epoch.saturating_add(1)
            } else {
                epoch
            };
            inner.by_producer.insert(id, transactional_id.clone());
            inner.by_transactional_id.insert(
                transactional_id,
                Producer::new(id, epoch, Duration::from_millis(timeout_ms)),
            );
        }
        file.write(&inner)?;
        Ok(Self {
            inner: Mutex::new(inner),
            file: Some(file),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `inner` durable; KAFKA_STORAGE_ERROR if it cannot be.
    fn persist(&self, inner: &Inner) -> Result<(), i16> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        file.write(inner).map_err(|e| {
            tracing::warn!(error = %e, "the transaction coordinator's state could not be written");
            code::KAFKA_STORAGE_ERROR
        })
    }

    /// Marks the producer's transaction open (its first partition or group), durably before
    /// anything of it is acknowledged: a restart must know to fence it.
    fn begin(&self, inner: &mut Inner, transactional_id: &str) -> Result<(), i16> {
        let Some(p) = inner.by_transactional_id.get_mut(transactional_id) else {
            return Err(code::INVALID_PRODUCER_ID_MAPPING);
        };
        if p.began.is_some() {
            return Ok(());
        }
        p.began = Some(began());
        if let Err(e) = self.persist(inner) {
            if let Some(p) = inner.by_transactional_id.get_mut(transactional_id) {
                p.began = None;
            }
            return Err(e);
        }
        Ok(())
    }

    /// InitProducerId with a transactional id: a new producer id, or the next epoch of the
    /// one the id had, which fences the older producer and aborts what it left open.
    pub fn init(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
        new_id: impl FnOnce() -> i64,
    ) -> Result<(i64, i16), i16> {
        let mut inner = self.lock();
        let timeout = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(60_000));
        let (id, epoch) = match inner.by_transactional_id.get_mut(transactional_id) {
            Some(p) => {
                p.abort();
                p.epoch = p.epoch.saturating_add(1);
                p.timeout = timeout;
                p.used = Instant::now();
                (p.id, p.epoch)
            }
            None => {
                let id = new_id();
                inner.by_producer.insert(id, transactional_id.to_string());
                inner
                    .by_transactional_id
                    .insert(transactional_id.to_string(), Producer::new(id, 0, timeout));
                (id, 0)
            }
        };
        // Kept in memory even when the write fails: the epoch only ever moves on, so an
        // older producer stays fenced; the client retries its InitProducerId.
        self.persist(&inner)?;
        Ok((id, epoch))
    }

    /// AddPartitionsToTxn: `known` says whether a topic exists and may be written.
    pub fn add_partitions(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
        partitions: &[(String, i32)],
    ) -> Result<(), i16> {
        let mut inner = self.lock();
        checked(&mut inner, transactional_id, producer)?;
        self.begin(&mut inner, transactional_id)?;
        let p = checked(&mut inner, transactional_id, producer)?;
        p.partitions.extend(partitions.iter().cloned());
        Ok(())
    }

    /// AddOffsetsToTxn: the group's offsets will come by TxnOffsetCommit.
    pub fn add_offsets(&self, transactional_id: &str, producer: (i64, i16)) -> Result<(), i16> {
        let mut inner = self.lock();
        checked(&mut inner, transactional_id, producer)?;
        self.begin(&mut inner, transactional_id)
    }

    /// TxnOffsetCommit: offsets committed for `group` when the transaction commits.
    pub fn stage_offsets(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
        group: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), i16> {
        let mut inner = self.lock();
        let p = checked(&mut inner, transactional_id, producer)?;
        p.offsets.extend(
            offsets
                .iter()
                .map(|(t, part, o)| (group.to_string(), t.clone(), *part, *o)),
        );
        Ok(())
    }

    /// Produce in a transaction: runs `write` with the producer's log transaction over
    /// `topic` (begun by `begin` with the transaction's id the first time), once the
    /// partition was added to it.
    pub fn produce<R>(
        &self,
        producer: (i64, i16),
        topic: &str,
        partition: i32,
        begin: impl FnOnce(u64) -> Transaction,
        write: impl FnOnce(&mut Transaction) -> R,
    ) -> Result<R, i16> {
        let mut inner = self.lock();
        let Some(transactional_id) = inner.by_producer.get(&producer.0).cloned() else {
            return Err(code::INVALID_PRODUCER_ID_MAPPING);
        };
        let p = checked(&mut inner, &transactional_id, producer)?;
        let Some((_, id)) = p
            .began
            .filter(|_| p.partitions.contains(&(topic.to_string(), partition)))
        else {
            return Err(code::INVALID_TXN_STATE);
        };
        let txn = p.logs.entry(topic.to_string()).or_insert_with(|| begin(id));
        Ok(write(txn))
    }

    /// EndTxn: takes the open transaction out of the producer's state, to be committed
    /// ([`commit`]) or dropped (aborted).
    pub fn end(&self, transactional_id: &str, producer: (i64, i16)) -> Result<Ending, i16> {
        let mut inner = self.lock();
        let p = checked(&mut inner, transactional_id, producer)?;
        let ending = Ending {
            id: p.began.map(|b| b.1),
            logs: p.logs.drain().map(|(_, t)| t).collect(),
            offsets: std::mem::take(&mut p.offsets),
        };
        p.partitions.clear();
        p.began = None;
        Ok(ending)
    }

    /// Records that the producer's transaction has ended, once its commit or abort is done.
    /// Not before: a restart that finds it still open fences the producer, so a commit the
    /// crash cut short is never answered as committed when the producer retries it.
    pub fn ended(&self) -> Result<(), i16> {
        let inner = self.lock();
        self.persist(&inner)
    }

    /// Aborts every open transaction older than its producer's timeout, as Kafka's
    /// coordinator does: a producer that died mid-transaction holds no partition back for
    /// longer. Its next request is fenced (the epoch moves on).
    /// Transactional ids unused for [`ID_EXPIRY`] are forgotten (as Kafka's
    /// `transactional.id.expiration.ms`), so that clients making up new ids cannot grow the
    /// coordinator without bound.
    pub fn expire(&self) {
        let mut inner = self.lock();
        let mut changed = false;
        for (id, p) in &mut inner.by_transactional_id {
            if p.began.is_some_and(|b| b.0.elapsed() > p.timeout) {
                tracing::info!(transactional_id = %id, "aborting a Kafka transaction past its timeout");
                p.abort();
                p.epoch = p.epoch.saturating_add(1);
                changed = true;
            }
        }
        let Inner {
            by_transactional_id,
            by_producer,
        } = &mut *inner;
        by_transactional_id.retain(|_, p| {
            let keep = p.began.is_some() || p.used.elapsed() < ID_EXPIRY;
            if !keep {
                by_producer.remove(&p.id);
                changed = true;
            }
            keep
        });
        if changed {
            // A failed write is logged; the next change writes everything again.
            let _ = self.persist(&inner);
        }
    }
}

/// How long a transactional id with no open transaction is remembered: Kafka's default
/// `transactional.id.expiration.ms`.
const ID_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// When a transaction takes its first partition: now, and a fresh log transaction id.
fn began() -> (Instant, u64) {
    (Instant::now(), weir_engine::log::new_transaction_id())
}

/// A transaction taken out of its producer by EndTxn: dropping it aborts it.
#[derive(Debug)]
pub(super) struct Ending {
    id: Option<u64>,
    logs: Vec<Transaction>,
    offsets: GroupOffsets,
}

/// Commits an ended transaction: every stream's rows made durable, then, for one over several
/// streams or with consumer offsets, its decision recorded (so that a crash from here on
/// commits all of it: see [`weir_engine::log::Decisions`]), then the commit markers and the
/// offsets. Returns the Kafka error code.
pub(super) fn commit(context: &super::Context, ending: Ending) -> i16 {
    let Ending {
        id,
        mut logs,
        offsets,
    } = ending;
    if let Err(e) = logs.iter().try_for_each(Transaction::prepare) {
        tracing::warn!(error = %e, "a Kafka transaction's rows could not be made durable; it aborts");
        return code::KAFKA_STORAGE_ERROR;
    }
    let mut decision = context.db.decisions().begin();
    let decided = logs.len() > 1 || !offsets.is_empty();
    if let (true, Some(id)) = (decided, id) {
        let payload = serde_json::to_vec(&offsets).unwrap_or_default();
        if let Err(e) = decision.record(id, &payload) {
            tracing::warn!(error = %e, "a Kafka transaction's decision could not be recorded; it aborts");
            return code::KAFKA_STORAGE_ERROR;
        }
        logs.iter_mut().for_each(Transaction::decided);
    }
    let mut failed = false;
    for txn in logs {
        if let Err(e) = txn.commit() {
            // After the decision the next start commits it; before, this is the only stream.
            tracing::warn!(error = %e, "a Kafka transaction could not commit");
            failed = true;
        }
    }
    if let Err(e) = store_offsets(&context.groups, &offsets) {
        tracing::warn!(error = %e, "storing a transaction's offsets failed; the next start stores them");
        return code::KAFKA_STORAGE_ERROR;
    }
    if failed {
        return code::KAFKA_STORAGE_ERROR;
    }
    // Everything decided is durable: the decision is no longer needed.
    if decided {
        if let Err(e) = decision.done() {
            tracing::warn!(error = %e, "clearing transaction decisions failed");
        }
    }
    0
}

/// Stores consumer groups' offsets committed by transactions.
fn store_offsets(
    groups: &super::groups::Coordinator,
    offsets: &GroupOffsets,
) -> std::io::Result<()> {
    let mut by_group: HashMap<&str, Vec<(String, i32, i64)>> = HashMap::new();
    for (group, topic, partition, offset) in offsets {
        by_group
            .entry(group)
            .or_default()
            .push((topic.clone(), *partition, *offset));
    }
    by_group
        .iter()
        .try_for_each(|(group, offsets)| groups.commit(group, offsets))
}

/// At start: stores the offsets of transactions decided before a crash (their rows were
/// committed when their streams opened), then forgets the decisions.
pub(super) fn recover(db: &weir_sql::Database, groups: &super::groups::Coordinator) {
    let decisions = db.decisions();
    for (id, payload) in decisions.recovered() {
        let offsets: GroupOffsets = serde_json::from_slice(payload).unwrap_or_default();
        tracing::info!(
            txn = id,
            offsets = offsets.len(),
            "completing a Kafka transaction decided before a restart"
        );
        if let Err(e) = store_offsets(groups, &offsets) {
            tracing::error!(error = %e, "storing a decided transaction's offsets failed; kept for the next start");
            return;
        }
    }
    if !decisions.recovered().is_empty() {
        if let Err(e) = decisions.begin().done() {
            tracing::warn!(error = %e, "clearing transaction decisions failed");
        }
    }
}

/// The producer of `transactional_id` if `producer` (id, epoch) is it and current.
fn checked<'a>(
    inner: &'a mut Inner,
    transactional_id: &str,
    (id, epoch): (i64, i16),
) -> Result<&'a mut Producer, i16> {
    let Some(p) = inner.by_transactional_id.get_mut(transactional_id) else {
        return Err(code::INVALID_PRODUCER_ID_MAPPING);
    };
    if p.id != id {
        return Err(code::INVALID_PRODUCER_ID_MAPPING);
    }
    if epoch != p.epoch {
        return Err(code::PRODUCER_FENCED);
    }
    p.used = Instant::now();
    Ok(p)
}

/// AddPartitionsToTxn (versions 0–3: one transaction per request): every partition must be
/// of a topic that exists and may be written.
pub(super) fn add_partitions_to_txn(
    context: &super::Context,
    r: &AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let producer = (r.v3_and_below_producer_id.0, r.v3_and_below_producer_epoch);
    let mut wanted = Vec::new();
    let mut unknown = HashSet::new();
    for t in &r.v3_and_below_topics {
        let name = t.name.0.as_str();
        let known = context
            .db
            .topic(name)
            .filter(|topic| topic.writable())
            .is_some_and(|topic| t.partitions.iter().all(|&p| topic.offsets(p).is_some()));
        if !known {
            unknown.insert(name.to_string());
        }
        wanted.extend(t.partitions.iter().map(|&p| (name.to_string(), p)));
    }
    let outcome = if unknown.is_empty() {
        context.transactions.add_partitions(
            r.v3_and_below_transactional_id.0.as_str(),
            producer,
            &wanted,
        )
    } else {
        Ok(())
    };
    let results = r
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let error = if unknown.contains(t.name.0.as_str()) {
                code::UNKNOWN_TOPIC_OR_PARTITION
            } else if !unknown.is_empty() {
                // Kafka's answer for the partitions of a request that failed elsewhere.
                OPERATION_NOT_ATTEMPTED
            } else {
                outcome.err().unwrap_or(0)
            };
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(error)
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

/// Kafka's OPERATION_NOT_ATTEMPTED.
const OPERATION_NOT_ATTEMPTED: i16 = 55;

/// AddOffsetsToTxn: the group's offsets come next, by TxnOffsetCommit.
pub(super) fn add_offsets_to_txn(
    context: &super::Context,
    r: &AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let outcome = context.transactions.add_offsets(
        r.transactional_id.0.as_str(),
        (r.producer_id.0, r.producer_epoch),
    );
    AddOffsetsToTxnResponse::default().with_error_code(outcome.err().unwrap_or(0))
}

/// TxnOffsetCommit: offsets the transaction commits for a consumer group.
pub(super) fn txn_offset_commit(
    context: &super::Context,
    r: &TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let offsets: Vec<(String, i32, i64)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.as_str().to_string(),
                    p.partition_index,
                    p.committed_offset,
                )
            })
        })
        .collect();
    let error = context
        .transactions
        .stage_offsets(
            r.transactional_id.0.as_str(),
            (r.producer_id.0, r.producer_epoch),
            r.group_id.0.as_str(),
            &offsets,
        )
        .err()
        .unwrap_or(0);
    let topics = r
        .topics
        .iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(error)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// EndTxn: commits (see [`commit`]) or aborts.
pub(super) fn end_txn(context: &super::Context, r: &EndTxnRequest) -> EndTxnResponse {
    let producer = (r.producer_id.0, r.producer_epoch);
    let error = match context
        .transactions
        .end(r.transactional_id.0.as_str(), producer)
    {
        Err(code) => code,
        Ok(ending) => {
            let was_open = ending.id.is_some();
            let error = if r.committed {
                commit(context, ending)
            } else {
                drop(ending);
                0
            };
            // A failed write leaves the transaction open in the file, which at worst fences
            // the producer after a restart; its commit stands.
            if was_open {
                let _ = context.transactions.ended();
            }
            error
        }
    };
    EndTxnResponse::default()
        .with_error_code(error)
        .with_producer_id(r.producer_id)
        .with_producer_epoch(r.producer_epoch)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use weir_engine::log::{LogConfig, StreamLog};

    use super::*;

    fn rows(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..n))])
            .expect("batch")
    }

    #[test]
    fn partitions_must_be_added_epochs_fence_and_timeouts_abort() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = StreamLog::open(tmp.path(), rows(0).schema(), 2, None, LogConfig::default())
            .expect("open");
        let txns = Transactions::default();
        let (id, epoch) = txns.init("t", 60_000, || 7).expect("init");
        assert_eq!((id, epoch), (7, 0));
        let write = |txn: &mut Transaction| txn.append_to(0, &[rows(3)], None).map(|r| r.0);
        // Produce needs the partition added first.
        let refused = txns.produce((7, 0), "s", 0, |id| log.begin_as(id), write);
        assert_eq!(refused.err(), Some(code::INVALID_TXN_STATE));
        txns.add_partitions("t", (7, 0), &[("s".into(), 0)])
            .expect("added");
        let written = txns.produce((7, 0), "s", 0, |id| log.begin_as(id), write);
        assert_eq!(written.expect("current producer").expect("written"), 0);
        assert_eq!(log.committed_offsets(), vec![0, 0], "not visible yet");
        // A second init of the id fences the first and aborts its transaction.
        assert_eq!(txns.init("t", 60_000, || 8), Ok((7, 1)));
        assert_eq!(txns.end("t", (7, 0)).err(), Some(code::PRODUCER_FENCED));
        assert_eq!(
            txns.end("t", (9, 1)).err(),
            Some(code::INVALID_PRODUCER_ID_MAPPING)
        );
        // The next one commits.
        txns.add_partitions("t", (7, 1), &[("s".into(), 1)])
            .expect("added");
        let written = txns.produce(
            (7, 1),
            "s",
            1,
            |id| log.begin_as(id),
            |txn: &mut Transaction| txn.append_to(1, &[rows(2)], None).map(|r| r.0),
        );
        assert!(written.expect("current").is_ok());
        let ending = txns.end("t", (7, 1)).expect("current");
        assert!(ending.offsets.is_empty());
        for txn in ending.logs {
            txn.commit().expect("commits");
        }
        let visible: u64 = log.partitions().iter().map(|p| p.visible_rows()).sum();
        assert_eq!(visible, 2, "only the committed transaction's rows");
        // A transaction older than its timeout is aborted, and its producer fenced.
        let (id, epoch) = txns.init("u", 0, || 9).expect("init");
        txns.add_partitions("u", (id, epoch), &[("s".into(), 0)])
            .expect("added");
        std::thread::sleep(Duration::from_millis(5));
        txns.expire();
        assert_eq!(
            txns.end("u", (id, epoch)).err(),
            Some(code::PRODUCER_FENCED)
        );
    }

    #[test]
    fn producers_outlive_a_restart_and_one_mid_transaction_is_fenced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let txns = Transactions::open(tmp.path()).expect("open");
        let between = txns.init("between", 60_000, || 1).expect("init");
        txns.add_partitions("between", between, &[("s".into(), 0)])
            .expect("added");
        txns.end("between", between).expect("ended");
        txns.ended().expect("written");
        let open = txns.init("open", 60_000, || 2).expect("init");
        txns.add_partitions("open", open, &[("s".into(), 0)])
            .expect("added");
        drop(txns);
        let txns = Transactions::open(tmp.path()).expect("reopen");
        // Between transactions: the same producer and epoch go on.
        txns.add_partitions("between", between, &[("s".into(), 1)])
            .expect("the same producer goes on");
        // Mid-transaction: the restart aborted it, so the producer is fenced.
        assert_eq!(txns.end("open", open).err(), Some(code::PRODUCER_FENCED));
        assert_eq!(txns.init("open", 60_000, || 3), Ok((2, 2)));
    }
}
