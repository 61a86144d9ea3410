//! Counters each operator of a running query keeps, per batch (atomics, never per row), for
//! the `weir_operators` relation: rows in and out, batches, time spent, state size, watermark.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

/// One operator's counters, shared between the query's thread (which writes them) and
/// readers (which read them at any time).
#[derive(Debug)]
pub struct OperatorStats {
    /// The operator's kind (`TumbleAggregate`, `Filter`, ...).
    pub name: &'static str,
    /// The operator as EXPLAIN shows it.
    pub detail: String,
    started: Instant,
    rows_in: AtomicU64,
    rows_out: AtomicU64,
    batches: AtomicU64,
    busy_ns: AtomicU64,
    state_bytes: AtomicU64,
    /// The last watermark it was given; `i64::MIN` before any.
    watermark: AtomicI64,
}

/// What an operator has done since its query started, read at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorSnapshot {
    /// The operator's kind.
    pub name: &'static str,
    /// The operator as EXPLAIN shows it.
    pub detail: String,
    /// Rows it was given.
    pub rows_in: u64,
    /// Rows it emitted.
    pub rows_out: u64,
    /// Batches it was given.
    pub batches: u64,
    /// Time spent in it, in nanoseconds.
    pub busy_ns: u64,
    /// Bytes of state it holds now.
    pub state_bytes: u64,
    /// The last watermark it was given (nanoseconds since the epoch), if any.
    pub watermark_ns: Option<i64>,
    /// Seconds since its query started (rates are over this time).
    pub elapsed_s: f64,
}

impl OperatorStats {
    /// Counters at zero for an operator of kind `name`.
    pub fn new(name: &'static str, detail: String) -> Self {
        Self {
            name,
            detail,
            started: Instant::now(),
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            state_bytes: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
        }
    }

    /// Counts one call that took `rows_in` rows (a batch, if any) and gave `rows_out`, since
    /// `since`.
    pub(crate) fn record(&self, rows_in: usize, rows_out: usize, since: Instant) {
        if rows_in > 0 {
            self.rows_in.fetch_add(rows_in as u64, Ordering::Relaxed);
            self.batches.fetch_add(1, Ordering::Relaxed);
        }
        self.rows_out.fetch_add(rows_out as u64, Ordering::Relaxed);
        let busy = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy_ns.fetch_add(busy, Ordering::Relaxed);
    }

    /// Records the bytes of state the operator holds (measured now and then).
    pub(crate) fn state_bytes(&self, bytes: usize) {
        self.state_bytes.store(bytes as u64, Ordering::Relaxed);
    }

    /// Records the watermark the operator was given.
    pub(crate) fn watermark(&self, watermark_ns: i64) {
        self.watermark.store(watermark_ns, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> OperatorSnapshot {
        let w = self.watermark.load(Ordering::Relaxed);
        OperatorSnapshot {
            name: self.name,
            detail: self.detail.clone(),
            rows_in: self.rows_in.load(Ordering::Relaxed),
            rows_out: self.rows_out.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            busy_ns: self.busy_ns.load(Ordering::Relaxed),
            state_bytes: self.state_bytes.load(Ordering::Relaxed),
            watermark_ns: (w != i64::MIN).then_some(w),
            elapsed_s: self.started.elapsed().as_secs_f64(),
        }
    }
}
