//! The connector interface: streams read from, and sinks delivered to, an external Kafka
//! cluster. `weir-sql` only declares it; the `weir` binary provides the implementation
//! (`server/src/kafka/connectors.rs`) when it opens a database.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::KafkaEndpoint;
use super::registry::StreamEntry;
use crate::Result;

/// What a connector has done so far, for `weir_connectors`.
#[derive(Debug, Clone, Default)]
pub struct ConnectorStatus {
    /// `running`, `retrying` (after an error) or `stopped`.
    pub state: String,
    /// Records appended (source) or delivered (sink) since the connector started.
    pub records: u64,
    /// Records of a source that did not decode into a row and were skipped.
    pub bad_records: u64,
    /// The last error, if the connector is retrying.
    pub last_error: Option<String>,
    /// Where the last skipped record was and why it did not decode.
    pub last_bad_record: Option<String>,
    /// Per partition: the next topic offset to read (source) or the next stream offset to
    /// deliver (sink).
    pub positions: BTreeMap<i32, i64>,
    /// Per partition: where the data ends, as last seen: the external topic's end (its high
    /// watermark, for a source) or the stream's committed offset (for a sink).
    pub ends: BTreeMap<i32, i64>,
}

impl ConnectorStatus {
    /// How far behind the end the connector is, summed over partitions: records of the
    /// topic not yet read (source) or rows of the stream not yet delivered (sink). `None`
    /// before the end was first seen.
    pub fn lag(&self) -> Option<i64> {
        if self.ends.is_empty() {
            return None;
        }
        Some(
            self.ends
                .iter()
                .map(|(p, &end)| (end - self.positions.get(p).copied().unwrap_or(end)).max(0))
                .sum(),
        )
    }
}

/// A running source or sink. Dropping the last handle stops it and waits for it.
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// The stream it belongs to.
    fn stream(&self) -> &str;
    /// `source` or `sink`.
    fn kind(&self) -> &'static str;
    /// Where it reads from or writes to.
    fn endpoint(&self) -> &KafkaEndpoint;
    /// A copy of its status.
    fn status(&self) -> ConnectorStatus;
}

/// Starts connectors: what a front end hands the database (in [`crate::Options`]) so that
/// streams over external Kafka topics run. Calls may block (they talk to the cluster).
pub trait ConnectorFactory: Send + Sync + std::fmt::Debug {
    /// The number of partitions of the endpoint's topic, asked of its cluster: an unreachable
    /// cluster is 08001, a missing topic 42704.
    fn topic_partitions(&self, endpoint: &KafkaEndpoint) -> Result<u32>;

    /// Starts reading `endpoint` into `stream`'s log, each partition from where it stopped.
    fn start_source(
        &self,
        stream: Arc<StreamEntry>,
        endpoint: KafkaEndpoint,
    ) -> Result<Arc<dyn Connector>>;

    /// Starts delivering `stream`'s rows to `endpoint`, remembering progress in `state_file`.
    fn start_sink(
        &self,
        stream: Arc<StreamEntry>,
        endpoint: KafkaEndpoint,
        state_file: PathBuf,
    ) -> Result<Arc<dyn Connector>>;
}
