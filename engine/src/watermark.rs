//! Event-time watermarks: the largest event time seen, minus the stream's declared delay.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};

use crate::{Error, Result};

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

/// Tracks the watermark of a source with several partitions.
///
/// The watermark is the largest event time delivered by any partition minus the declared delay,
/// so a partition that never received data does not hold windows open; it never moves
/// backwards. Events further behind than the delay are late. The per-partition maxima are kept
/// so that a per-partition policy (minimum over active partitions, with idleness) can replace
/// the maximum without changing callers.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    delay_ns: i64,
    max_seen: Vec<Option<i64>>,
    current: Option<i64>,
}

impl WatermarkTracker {
    /// A tracker for `partitions` partitions and the given delay.
    pub fn new(partitions: usize, delay_ns: i64) -> Self {
        Self {
            delay_ns,
            max_seen: vec![None; partitions],
            current: None,
        }
    }

    /// Records that `partition` delivered events up to `max_event_ns`.
    pub fn observe(&mut self, partition: usize, max_event_ns: i64) {
        if let Some(slot) = self.max_seen.get_mut(partition) {
            *slot = Some(slot.map_or(max_event_ns, |m| m.max(max_event_ns)));
        }
    }

    /// The current watermark in nanoseconds, if any partition has delivered data.
    pub fn watermark(&mut self) -> Option<i64> {
        let candidate = self
            .max_seen
            .iter()
            .flatten()
            .max()
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
    fn largest_event_time_minus_delay_and_monotonic() {
        let mut t = WatermarkTracker::new(3, 10);
        assert_eq!(t.watermark(), None);
        t.observe(0, 100);
        assert_eq!(
            t.watermark(),
            Some(90),
            "silent partitions do not hold it back"
        );
        t.observe(1, 50);
        assert_eq!(t.watermark(), Some(90), "never moves backwards");
        t.observe(1, 200);
        t.observe(0, 150);
        assert_eq!(t.watermark(), Some(190));
    }
}
