//! Counters each operator of a running query keeps, per batch (atomics, never per row), for
//! the `weir_operators` relation: rows in and out, batches, time spent, state size, watermark.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether operators are counted at all (on unless turned off, for measuring what counting
/// costs: `weir bench nexmark --no-operator-stats`).
static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns counting off or on for every query of the process.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// When a counted call starts: now, or `None` while counting is off.
pub(crate) fn start() -> Option<Instant> {
    ENABLED.load(Ordering::Relaxed).then(Instant::now)
}

/// The span of the recent rates.
const RECENT: Duration = Duration::from_secs(10);
/// How far back samples are kept, for the history of rates the console draws.
const HISTORY: Duration = Duration::from_secs(60);
/// How far apart samples of the counters are, at least.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The counters at one time: rows in, rows out, busy nanoseconds.
type Sample = (Instant, u64, u64, u64);

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
    state_rows: AtomicU64,
    /// The last watermark it was given; `i64::MIN` before any.
    watermark: AtomicI64,
    /// Samples of the counters, a second or more apart, the newest last: recent rates are
    /// measured against them.
    samples: Mutex<VecDeque<Sample>>,
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
    /// Rows (groups, stored rows, open sessions) of state it holds now.
    pub state_rows: u64,
    /// The last watermark it was given (nanoseconds since the epoch), if any.
    pub watermark_ns: Option<i64>,
    /// Seconds since its query started (rates are over this time).
    pub elapsed_s: f64,
    /// Rows in per second over about the last ten seconds.
    pub recent_rows_in_per_s: f64,
    /// Rows out per second over about the last ten seconds.
    pub recent_rows_out_per_s: f64,
    /// Share of time spent in it over about the last ten seconds, in percent.
    pub recent_busy_percent: f64,
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
            state_rows: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// Counts one call that took `rows_in` rows (a batch, if any) and gave `rows_out`, since
    /// `since` ([`start`]; nothing while counting is off).
    pub(crate) fn record(&self, rows_in: usize, rows_out: usize, since: Option<Instant>) {
        let Some(since) = since else {
            return;
        };
        if rows_in > 0 {
            self.rows_in.fetch_add(rows_in as u64, Ordering::Relaxed);
            self.batches.fetch_add(1, Ordering::Relaxed);
        }
        self.rows_out.fetch_add(rows_out as u64, Ordering::Relaxed);
        let busy = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy_ns.fetch_add(busy, Ordering::Relaxed);
    }

    /// Records the bytes and rows of state the operator holds (measured now and then, which
    /// is also when the counters are sampled for recent rates).
    pub(crate) fn state(&self, bytes: usize, rows: usize) {
        self.state_bytes.store(bytes as u64, Ordering::Relaxed);
        self.state_rows.store(rows as u64, Ordering::Relaxed);
        self.sample(Instant::now());
    }

    /// Keeps the counters as they are at `now`, if the last sample is a second old or more.
    fn sample(&self, now: Instant) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples
            .back()
            .is_some_and(|s| now.saturating_duration_since(s.0) < SAMPLE_EVERY)
        {
            return;
        }
        samples.push_back((
            now,
            self.rows_in.load(Ordering::Relaxed),
            self.rows_out.load(Ordering::Relaxed),
            self.busy_ns.load(Ordering::Relaxed),
        ));
        // One sample older than the history is enough to measure it.
        while samples.len() > 2 && now.saturating_duration_since(samples[1].0) >= HISTORY {
            samples.pop_front();
        }
    }

    /// Rates over about the last ten seconds: against the newest sample at least that old
    /// (counters did not move between it and the span's start, or there would be a later
    /// sample, give or take the second between samples), else against nothing at the start
    /// (every sample is younger, so everything counted came within the span).
    fn recent(&self, now: Instant, current: (u64, u64, u64)) -> (f64, f64, f64) {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let base = samples
            .iter()
            .rev()
            .find(|s| now.saturating_duration_since(s.0) >= RECENT)
            .copied()
            .unwrap_or((self.started, 0, 0, 0));
        let span = now.saturating_duration_since(base.0).min(RECENT);
        let secs = span.as_secs_f64().max(1e-9);
        (
            current.0.saturating_sub(base.1) as f64 / secs,
            current.1.saturating_sub(base.2) as f64 / secs,
            current.2.saturating_sub(base.3) as f64 / 1e9 / secs * 100.0,
        )
    }

    /// Rows in per second between consecutive samples over about the last minute, oldest
    /// first: (seconds before now that the interval ended, rate).
    pub fn rate_history(&self) -> Vec<(f64, f64)> {
        let now = Instant::now();
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .filter(|(_, b)| now.saturating_duration_since(b.0) <= HISTORY)
            .map(|(a, b)| {
                let secs = b.0.saturating_duration_since(a.0).as_secs_f64().max(1e-9);
                let ago = now.saturating_duration_since(b.0).as_secs_f64();
                (ago, b.1.saturating_sub(a.1) as f64 / secs)
            })
            .collect()
    }

    /// Records the watermark the operator was given.
    pub(crate) fn watermark(&self, watermark_ns: i64) {
        self.watermark.store(watermark_ns, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> OperatorSnapshot {
        let w = self.watermark.load(Ordering::Relaxed);
        let now = Instant::now();
        let (rows_in, rows_out, busy_ns) = (
            self.rows_in.load(Ordering::Relaxed),
            self.rows_out.load(Ordering::Relaxed),
            self.busy_ns.load(Ordering::Relaxed),
        );
        let recent = self.recent(now, (rows_in, rows_out, busy_ns));
        OperatorSnapshot {
            name: self.name,
            detail: self.detail.clone(),
            rows_in,
            rows_out,
            batches: self.batches.load(Ordering::Relaxed),
            busy_ns,
            state_bytes: self.state_bytes.load(Ordering::Relaxed),
            state_rows: self.state_rows.load(Ordering::Relaxed),
            watermark_ns: (w != i64::MIN).then_some(w),
            elapsed_s: now.saturating_duration_since(self.started).as_secs_f64(),
            recent_rows_in_per_s: recent.0,
            recent_rows_out_per_s: recent.1,
            recent_busy_percent: recent.2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_history_has_a_rate_per_interval_between_samples() {
        let stats = OperatorStats::new("Filter", "Filter: x".into());
        let t0 = Instant::now();
        stats.sample(t0);
        stats.rows_in.store(300, Ordering::Relaxed);
        stats.sample(t0 + Duration::from_millis(50));
        // Too soon after the last sample to be kept.
        assert!(stats.rate_history().is_empty());
        std::thread::sleep(Duration::from_millis(1100));
        stats.sample(Instant::now());
        let history = stats.rate_history();
        assert_eq!(history.len(), 1, "{history:?}");
        assert!(history[0].1 > 200.0 && history[0].1 <= 300.0, "{history:?}");
    }

    #[test]
    fn recent_rates_follow_the_last_ten_seconds() {
        let stats = OperatorStats::new("Filter", "Filter: x".into());
        let t0 = Instant::now();
        // 1000 rows early on, then nothing for a while: the rate since the start stays, the
        // recent one falls to zero.
        stats.rows_in.store(1000, Ordering::Relaxed);
        stats.sample(t0);
        stats.sample(t0 + Duration::from_secs(12));
        let (rows_in, _, _) = stats.recent(t0 + Duration::from_secs(25), (1000, 0, 0));
        assert_eq!(rows_in, 0.0);
        // 500 more rows in the last ten seconds: 50 per second.
        let (rows_in, _, _) = stats.recent(t0 + Duration::from_secs(25), (1500, 0, 0));
        assert!((rows_in - 50.0).abs() < 1e-9, "{rows_in}");
        // Samples are kept a second apart at least, and only a minute back.
        for s in 13..200 {
            stats.sample(t0 + Duration::from_millis(s * 1000 + 500));
            stats.sample(t0 + Duration::from_millis(s * 1000 + 700));
        }
        let kept = stats.samples.lock().expect("lock").len();
        assert!((60..=62).contains(&kept), "{kept}");
    }
}
