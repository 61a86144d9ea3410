//! Event-time watermarks: per partition, combined as the minimum over active partitions; and
//! the processing-time clock that stamps rows and drives processing-time watermarks.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};

use crate::{Error, Result};

/// Processing time: milliseconds since the epoch by the wall clock, never going back (a step
/// back of the system clock holds it where it was). `PROCTIME()` stamps rows with it and a
/// processing-time query's watermark is read from it, so a row stamped after a watermark was
/// taken is never behind that watermark.
pub fn processing_time_ms() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    LAST.fetch_max(now, Ordering::AcqRel).max(now)
}

/// Nanoseconds in one unit of `unit`.
pub fn unit_nanos(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// The largest event time in `column` (a timestamp column), in nanoseconds since the epoch.
pub fn max_event_time_ns(column: &dyn Array) -> Result<Option<i64>> {
    let DataType::Timestamp(_, tz) = column.data_type() else {
        return Err(Error::InvalidArgument(format!(
            "an event-time column must be a timestamp, not {}",
            column.data_type()
        )));
    };
    let ns = cast(
        column,
        &DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()),
    )?;
    Ok(max(ns.as_primitive::<TimestampNanosecondType>()))
}

/// One source partition as its watermark stands: what holds a view's windows back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionWatermark {
    /// Its largest event time minus the delay; `None` before it delivered data.
    pub watermark_ns: Option<i64>,
    /// When it last delivered data (this process's clock).
    pub last_data: Option<Instant>,
    /// Whether it counts for the source's watermark (it delivered data within the idle
    /// timeout).
    pub active: bool,
}

#[derive(Debug, Clone, Copy)]
struct PartitionState {
    max_event_ns: i64,
    last_data: Instant,
}

/// Tracks the watermark of a source with several partitions.
///
/// A partition's watermark is the largest event time it has delivered minus the declared delay.
/// The source's watermark is the minimum over active partitions: a partition that never
/// delivered data, or delivered none for `idle_timeout`, does not hold it back. When every
/// partition is idle, the largest partition watermark wins, so windows still close once input
/// stops. The watermark never moves backwards.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    delay_ns: i64,
    idle_timeout: Duration,
    partitions: Vec<Option<PartitionState>>,
    current: Option<i64>,
}

impl WatermarkTracker {
    /// A tracker for `partitions` partitions, the given delay and idle timeout.
    pub fn new(partitions: usize, delay_ns: i64, idle_timeout: Duration) -> Self {
        Self {
            delay_ns,
            idle_timeout,
            partitions: vec![None; partitions],
            current: None,
        }
    }

    /// Records that `partition` delivered events up to `max_event_ns` at `now`.
    pub fn observe(&mut self, partition: usize, max_event_ns: i64, now: Instant) {
        if let Some(slot) = self.partitions.get_mut(partition) {
            let max_event_ns = slot.map_or(max_event_ns, |s| s.max_event_ns.max(max_event_ns));
            *slot = Some(PartitionState {
                max_event_ns,
                last_data: now,
            });
        }
    }

    /// The tracker's state for a checkpoint: each partition's largest event time, then the
    /// current watermark.
    pub fn snapshot(&self) -> Vec<Option<i64>> {
        self.partitions
            .iter()
            .map(|p| p.map(|p| p.max_event_ns))
            .chain([self.current])
            .collect()
    }

    /// Restores [`WatermarkTracker::snapshot`] of a tracker with as many partitions; the
    /// restored partitions count as active from `now`.
    pub fn restore(&mut self, state: &[Option<i64>], now: Instant) -> Result<()> {
        if state.len() != self.partitions.len() + 1 {
            return Err(Error::Corrupt(format!(
                "watermark state for {} partitions restored into {}",
                state.len().saturating_sub(1),
                self.partitions.len()
            )));
        }
        for (slot, max) in self.partitions.iter_mut().zip(state) {
            *slot = max.map(|max_event_ns| PartitionState {
                max_event_ns,
                last_data: now,
            });
        }
        self.current = state[self.partitions.len()];
        Ok(())
    }

    /// Each partition as the watermark sees it at `now`: see [`PartitionWatermark`].
    pub fn partitions(&self, now: Instant) -> Vec<PartitionWatermark> {
        self.partitions
            .iter()
            .map(|p| PartitionWatermark {
                watermark_ns: p.map(|s| s.max_event_ns.saturating_sub(self.delay_ns)),
                last_data: p.map(|s| s.last_data),
                active: p.is_some_and(|s| {
                    now.saturating_duration_since(s.last_data) < self.idle_timeout
                }),
            })
            .collect()
    }

    /// The watermark at `now` in nanoseconds, once any partition has delivered data.
    pub fn watermark(&mut self, now: Instant) -> Option<i64> {
        let seen = self.partitions.iter().flatten();
        let active = seen
            .clone()
            .filter(|s| now.saturating_duration_since(s.last_data) < self.idle_timeout)
            .map(|s| s.max_event_ns)
            .min();
        let candidate = active
            .or_else(|| seen.map(|s| s.max_event_ns).max())
            .map(|m| m.saturating_sub(self.delay_ns));
        self.current = match (self.current, candidate) {
            (Some(c), Some(n)) => Some(c.max(n)),
            (c, n) => c.or(n),
        };
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processing_time_never_goes_back() {
        let mut last = processing_time_ms();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64;
        assert!(
            (last - wall).abs() < 60_000,
            "{last} is the wall clock's {wall}"
        );
        for _ in 0..10_000 {
            let now = processing_time_ms();
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn minimum_over_active_partitions_idle_ones_excluded_never_backwards() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = WatermarkTracker::new(3, 10, Duration::from_secs(5));
        assert_eq!(t.watermark(t0), None);
        t.observe(0, 100, t0);
        assert_eq!(
            t.watermark(t0),
            Some(90),
            "silent partitions do not hold it back"
        );
        t.observe(1, 50, t0);
        assert_eq!(t.watermark(t0), Some(90), "never moves backwards");
        t.observe(1, 200, t0 + s);
        t.observe(0, 150, t0 + s);
        assert_eq!(
            t.watermark(t0 + s),
            Some(140),
            "the slowest active partition"
        );
        t.observe(1, 300, t0 + 4 * s);
        assert_eq!(t.watermark(t0 + 4 * s), Some(140));
        assert_eq!(t.watermark(t0 + 7 * s), Some(290), "partition 0 went idle");
        assert_eq!(
            t.watermark(t0 + 60 * s),
            Some(290),
            "all idle: the largest wins"
        );
    }
}
