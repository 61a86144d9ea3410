//! The engine's error type.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// Result with the engine's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error, with what the engine was doing when it happened.
    #[error("{context}: {source}")]
    Io {
        /// What the engine was doing, with the path involved.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Data on disk fails its checksum or framing where no torn tail can explain it.
    #[error("corrupt log: {0}")]
    Corrupt(String),
    /// A caller passed something the engine cannot accept (bad configuration, wrong schema, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// A partition refuses appends after an fsync failed: the page cache may have dropped the data,
    /// so only a restart (which recovers from what is on disk) may continue.
    #[error("partition {0} stopped after an fsync failure; restart Weir to recover")]
    Poisoned(String),
    /// An idempotent producer's batch does not follow its previous one (a gap in sequence
    /// numbers, or an older epoch).
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// A NULL for a column declared NOT NULL.
    #[error("{0}")]
    NotNull(String),
    /// A bound on resources was reached (a subscriber fell too far behind, for example).
    #[error("{0}")]
    LimitExceeded(String),
    /// A query's state outgrew its memory budget; the query stops, the server goes on.
    #[error("{0}")]
    MemoryExceeded(String),
    /// An Arrow error.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    /// A DataFusion error (expression evaluation, accumulators).
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// An invariant the engine relies on was broken.
    #[error("internal error: {0}; this is a bug")]
    Internal(String),
    /// The query was asked to stop (DROP, shutdown) in the middle of a batch: what it was doing
    /// is dropped, and it resumes from its last checkpoint.
    #[error("the query was stopped")]
    Stopped,
}

/// Adds context to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    /// Wraps an I/O error with a description of the operation, computed only on error.
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}
