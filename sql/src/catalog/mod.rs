//! The catalog, the lowest layer of `weir-sql`: the definitions of streams, views and tables,
//! stored as JSON in the data directory and replaced atomically on every change, and the
//! registry of the live objects built from them.

pub mod connector;
pub mod registry;
pub mod sessions;
pub mod table;

pub use connector::{Connector, ConnectorFactory, ConnectorStatus};
pub use registry::{CATALOG, ObjectKind, Registry, SCHEMA, StreamEntry, ViewEntry};
pub use table::TableEntry;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use weir_engine::log::{LogConfig, sync_dir};

use crate::{Error, Result};

/// One column of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Column name (lower case unless quoted).
    pub name: String,
    /// The Arrow type, in Arrow's display form (`Int64`, `Timestamp(ns)`, `Utf8View`...).
    pub data_type: String,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

/// A stream's watermark declaration: `WATERMARK FOR column AS column - INTERVAL ...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkDef {
    /// The event-time column.
    pub column: String,
    /// How far the watermark trails the largest event time seen, in nanoseconds.
    pub delay_ns: i64,
}

/// A stream: a schema stored in the partitioned log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamDef {
    /// Stream name.
    pub name: String,
    /// Columns in order.
    pub columns: Vec<ColumnDef>,
    /// Event time and watermark, if declared.
    pub watermark: Option<WatermarkDef>,
    /// Number of partitions.
    pub partitions: u32,
    /// The column whose hash picks a row's partition.
    pub key: Option<String>,
    /// Segment size in bytes.
    pub segment_bytes: u64,
    /// Time retention in milliseconds.
    pub retention_ms: Option<i64>,
    /// Size retention in bytes per partition.
    pub retention_bytes: Option<u64>,
    /// After this many milliseconds without data a partition stops holding the watermark back.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// For `CREATE STREAM ... AS SELECT`, the query whose results the stream holds.
    #[serde(default)]
    pub query: Option<String>,
    /// How records of the stream look to Kafka clients: only `json` (the default) so far.
    #[serde(default)]
    pub format: Option<String>,
    /// For a stream read from an external Kafka topic (`connector = 'kafka'`), where from.
    #[serde(default)]
    pub source: Option<KafkaEndpoint>,
    /// For a sink (`CREATE SINK ... INTO KAFKA`), the external topic its rows are delivered to.
    #[serde(default)]
    pub sink: Option<KafkaEndpoint>,
}

/// A topic of an external Kafka cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaEndpoint {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// For a source, where a partition with nothing read yet starts: `earliest` or `latest`.
    #[serde(default)]
    pub start: Option<String>,
}

/// How long a partition may stay silent before the watermark moves on without it.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 5_000;

fn default_idle_timeout_ms() -> u64 {
    DEFAULT_IDLE_TIMEOUT_MS
}

impl StreamDef {
    /// A stream of `columns` with the default options: one partition, no key, no retention.
    pub fn new(name: String, columns: Vec<ColumnDef>, watermark: Option<WatermarkDef>) -> Self {
        Self {
            name,
            columns,
            watermark,
            partitions: 1,
            key: None,
            segment_bytes: weir_engine::log::LogConfig::default().segment_bytes,
            retention_ms: None,
            retention_bytes: None,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            query: None,
            format: None,
            source: None,
            sink: None,
        }
    }

    /// The Arrow schema of the stream's rows.
    pub fn schema(&self) -> Result<SchemaRef> {
        columns_schema(&self.columns)
    }

    /// Index of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The log settings.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
        }
    }
}

/// A materialized view: its defining query, re-planned on every start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    /// View name.
    pub name: String,
    /// The SELECT that defines it.
    pub query: String,
    /// `EMIT ON UPDATE` was given: results as they change rather than per closed window.
    #[serde(default)]
    pub emit_on_update: bool,
    /// `WITH (allowed_lateness = ...)`: how long after its end a window still takes late events.
    #[serde(default)]
    pub allowed_lateness_ns: i64,
    /// `WITH (memory_limit = '256MB')`: the most memory its state may hold, in bytes; the
    /// server's default without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    /// `WITH (state_ttl = '1 day')`: state a join without a time bound keeps for a row, in
    /// event time (0: for good).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub state_ttl_ns: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// A view that is a named query (`CREATE VIEW`): expanded wherever it is read, in batch
/// queries and in the queries of materialized views alike; it holds no rows of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlainViewDef {
    /// View name.
    pub name: String,
    /// The SELECT that defines it.
    pub query: String,
}

/// A function written in SQL (`CREATE FUNCTION ... LANGUAGE SQL`): one expression over its
/// named arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionDef {
    /// Function name.
    pub name: String,
    /// Arguments in order: name and SQL type.
    pub args: Vec<(String, String)>,
    /// The SQL type it returns.
    pub returns: String,
    /// The expression it computes, as SQL over the argument names.
    pub body: String,
}

/// A table of reference data: rows inserted, updated and deleted by primary key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    /// Table name.
    pub name: String,
    /// Columns in order.
    pub columns: Vec<ColumnDef>,
    /// The primary key columns, in key order.
    pub primary_key: Vec<String>,
    /// For a table read from a file (Flink's filesystem connector), the file: its rows were
    /// loaded at CREATE and never change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl TableDef {
    /// The Arrow schema of the table's rows.
    pub fn schema(&self) -> Result<SchemaRef> {
        columns_schema(&self.columns)
    }

    /// Indexes of the primary key columns.
    pub fn key_indexes(&self) -> Result<Vec<usize>> {
        self.primary_key
            .iter()
            .map(|k| {
                self.columns
                    .iter()
                    .position(|c| &c.name == k)
                    .ok_or_else(|| {
                        Error::Internal(format!("key column {k} of table {} is missing", self.name))
                    })
            })
            .collect()
    }
}

fn columns_schema(columns: &[ColumnDef]) -> Result<SchemaRef> {
    let fields = columns
        .iter()
        .map(|c| {
            let t = DataType::from_str(&c.data_type).map_err(|e| {
                Error::Internal(format!("catalog type {} does not parse: {e}", c.data_type))
            })?;
            Ok(Field::new(&c.name, t, c.nullable))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Everything the catalog holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogData {
    /// Catalog format version.
    pub version: u32,
    /// Streams in creation order.
    pub streams: Vec<StreamDef>,
    /// Views in creation order.
    pub views: Vec<ViewDef>,
    /// Reference tables in creation order.
    #[serde(default)]
    pub tables: Vec<TableDef>,
    /// Plain views (named queries) in creation order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plain_views: Vec<PlainViewDef>,
    /// Functions written in SQL, in creation order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<FunctionDef>,
}

/// The catalog file of a data directory.
#[derive(Debug)]
pub struct CatalogFile {
    dir: PathBuf,
}

const FILE: &str = "catalog.json";

impl CatalogFile {
    /// The catalog of data directory `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Reads the catalog; an absent file is an empty catalog.
    pub fn load(&self) -> Result<CatalogData> {
        let path = self.dir.join(FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::Internal(format!("catalog {} does not parse: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CatalogData {
                version: 1,
                ..CatalogData::default()
            }),
            Err(e) => Err(io_error(format!("reading {}", path.display()), e)),
        }
    }

    /// Replaces the catalog atomically: write a temporary file, fsync, rename, fsync the directory.
    pub fn store(&self, data: &CatalogData) -> Result<()> {
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let path = self.dir.join(FILE);
        let bytes = serde_json::to_vec_pretty(data)
            .map_err(|e| Error::Internal(format!("catalog does not serialise: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| io_error(format!("writing {}", path.display()), e))?;
        sync_dir(&self.dir)?;
        Ok(())
    }
}

fn io_error(context: String, source: std::io::Error) -> Error {
    Error::Engine(weir_engine::Error::Io { context, source })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::TimeUnit;

    use super::*;

    #[test]
    fn round_trips_types_and_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = CatalogFile::new(tmp.path());
        assert_eq!(file.load().expect("empty").streams.len(), 0);
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let def = StreamDef {
            name: "s".into(),
            columns: vec![ColumnDef {
                name: "ts".into(),
                data_type: ts.to_string(),
                nullable: false,
            }],
            watermark: None,
            partitions: 2,
            key: None,
            segment_bytes: 1,
            retention_ms: None,
            retention_bytes: None,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            query: None,
            format: None,
            source: Some(KafkaEndpoint {
                brokers: "127.0.0.1:9092".into(),
                topic: "orders".into(),
                start: Some("earliest".into()),
            }),
            sink: None,
        };
        assert_eq!(def.schema().expect("schema").field(0).data_type(), &ts);
        let data = CatalogData {
            version: 1,
            streams: vec![def],
            views: vec![],
            tables: vec![],
            plain_views: vec![PlainViewDef {
                name: "recent".into(),
                query: "SELECT * FROM orders".into(),
            }],
            functions: vec![FunctionDef {
                name: "twice".into(),
                args: vec![("x".into(), "BIGINT".into())],
                returns: "BIGINT".into(),
                body: "x * 2".into(),
            }],
        };
        file.store(&data).expect("store");
        assert_eq!(file.load().expect("load"), data);
    }
}
