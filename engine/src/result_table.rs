//! The contents of a materialized view, and how far its query has read.

use std::sync::{Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

/// How far a continuous query has got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Per source partition, the next offset to read: everything below was processed.
    pub offsets: Vec<u64>,
    /// The query's watermark (ns since the epoch), once it has one.
    pub watermark_ns: Option<i64>,
    /// Events that arrived after their window had closed.
    pub late_rows: u64,
    /// Set when the query stopped on an error.
    pub error: Option<String>,
}

/// An append-only table of results (closed windows are final, so results only ever grow).
#[derive(Debug)]
pub struct ResultTable {
    schema: SchemaRef,
    batches: RwLock<Vec<RecordBatch>>,
    progress: Mutex<Progress>,
    advanced: Condvar,
}

impl ResultTable {
    /// An empty table.
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            batches: RwLock::new(Vec::new()),
            progress: Mutex::new(Progress::default()),
            advanced: Condvar::new(),
        }
    }

    /// The schema of the rows.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Adds result rows.
    pub fn append(&self, batches: Vec<RecordBatch>) {
        let batches: Vec<_> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        if batches.is_empty() {
            return;
        }
        self.batches
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(batches);
    }

    /// The rows as of now (cheap: batches are reference counted).
    pub fn snapshot(&self) -> Vec<RecordBatch> {
        self.batches
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Number of result rows.
    pub fn num_rows(&self) -> usize {
        self.batches
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(RecordBatch::num_rows)
            .sum()
    }

    /// Publishes the query's progress and wakes waiters.
    pub fn set_progress(&self, progress: Progress) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = progress;
        self.advanced.notify_all();
    }

    /// The query's progress.
    pub fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the query has processed every partition up to `offsets` (or stopped on an
    /// error), at most `timeout`. Returns the progress reached.
    ///
    /// Reading a view after this gives read-your-writes: the view reflects every row that was
    /// committed to its source when `offsets` were taken.
    pub fn wait_for(&self, offsets: &[u64], timeout: Duration) -> Progress {
        let deadline = Instant::now() + timeout;
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let caught_up = p.offsets.len() == offsets.len()
                && p.offsets
                    .iter()
                    .zip(offsets)
                    .all(|(have, want)| have >= want);
            if caught_up || p.error.is_some() {
                return p.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                return p.clone();
            }
            p = self
                .advanced
                .wait_timeout(p, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}
