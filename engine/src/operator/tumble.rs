//! Assigns each event its tumbling window: adds `window_start` and `window_end` columns.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::Operator;
use crate::watermark::unit_nanos;
use crate::{Error, Result};

/// The TUMBLE window assigner: windows of a fixed size, aligned to the epoch, that do not overlap.
#[derive(Debug)]
pub struct TumbleOperator {
    time_index: usize,
    /// Window size in units of the time column.
    size: i64,
    size_ns: i64,
    time_type: DataType,
    schema: SchemaRef,
    /// The HOP (slide, size in ns) whose panes these windows are, if they are.
    panes_of: Option<(i64, i64)>,
}

impl TumbleOperator {
    /// These windows are the panes of a HOP of `slide_ns` and `size_ns` (for EXPLAIN).
    pub fn as_panes_of(mut self, slide_ns: i64, size_ns: i64) -> Self {
        self.panes_of = Some((slide_ns, size_ns));
        self
    }

    /// Windows of `size_ns` nanoseconds over timestamp column `time_index` of `input`.
    pub fn try_new(input: &Schema, time_index: usize, size_ns: i64) -> Result<Self> {
        let (schema, time_type, unit) = windowed_schema(input, time_index)?;
        if size_ns <= 0 || size_ns % unit != 0 {
            return Err(Error::InvalidArgument(format!(
                "a window size must be positive and a whole number of the time column's unit, \
                 not {size_ns} ns"
            )));
        }
        Ok(Self {
            time_index,
            size: size_ns / unit,
            size_ns,
            time_type,
            schema,
            panes_of: None,
        })
    }

    /// The window size in nanoseconds.
    pub fn size_ns(&self) -> i64 {
        self.size_ns
    }
}

impl Operator for TumbleOperator {
    fn name(&self) -> &'static str {
        "TumbleWindow"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let ts = cast(batch.column(self.time_index), &DataType::Int64)?;
        let size = self.size;
        let starts = ts
            .as_primitive::<Int64Type>()
            .unary::<_, Int64Type>(|t| t - t.rem_euclid(size));
        let ends = starts.unary::<_, Int64Type>(|s| s + size);
        let starts: ArrayRef = cast(&starts, &self.time_type)?;
        let ends: ArrayRef = cast(&ends, &self.time_type)?;
        let mut columns = batch.columns().to_vec();
        columns.push(starts);
        columns.push(ends);
        Ok(vec![RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?])
    }

    fn explain(&self) -> String {
        let time = self.schema.field(self.time_index).name();
        match self.panes_of {
            Some((slide, size)) => format!(
                "HopPanes: time={time} pane={} (HOP slide={} size={}: each event in one pane)",
                format_duration_ns(self.size_ns),
                format_duration_ns(slide),
                format_duration_ns(size)
            ),
            None => format!(
                "TumbleWindow: time={time} size={}",
                format_duration_ns(self.size_ns)
            ),
        }
    }
}

/// The schema a window assigner outputs: `input` plus `window_start` and `window_end` of the
/// time column's type; also that type and its unit in nanoseconds.
pub(crate) fn windowed_schema(
    input: &Schema,
    time_index: usize,
) -> Result<(SchemaRef, DataType, i64)> {
    let field = input.fields().get(time_index).ok_or_else(|| {
        Error::InvalidArgument(format!("no column {time_index} for the window time"))
    })?;
    let DataType::Timestamp(unit, _) = field.data_type() else {
        return Err(Error::InvalidArgument(format!(
            "a window needs a timestamp column; {} is {}",
            field.name(),
            field.data_type()
        )));
    };
    let time_type = field.data_type().clone();
    let nullable = field.is_nullable();
    let mut fields: Vec<_> = input.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(
        "window_start",
        time_type.clone(),
        nullable,
    )));
    fields.push(Arc::new(Field::new(
        "window_end",
        time_type.clone(),
        nullable,
    )));
    Ok((Arc::new(Schema::new(fields)), time_type, unit_nanos(*unit)))
}

/// A duration for humans: `1m`, `10s`, `250ms`.
pub(crate) fn format_duration_ns(ns: i64) -> String {
    const UNITS: [(i64, &str); 6] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
    ];
    for (n, unit) in UNITS {
        if ns % n == 0 && ns != 0 {
            return format!("{}{unit}", ns / n);
        }
    }
    format!("{ns}ns")
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::TimestampMillisecondArray;
    use datafusion::arrow::datatypes::TimeUnit;

    use super::*;

    #[test]
    fn assigns_epoch_aligned_windows_including_before_1970() {
        let schema = Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        )]);
        let mut op = TumbleOperator::try_new(&schema, 0, 60_000_000_000).expect("valid");
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(TimestampMillisecondArray::from(vec![
                0, 59_999, 60_000, -1,
            ]))],
        )
        .expect("batch");
        let out = op.process_batch(batch).expect("process");
        let starts = cast(out[0].column(1), &DataType::Int64).expect("cast");
        let ends = cast(out[0].column(2), &DataType::Int64).expect("cast");
        assert_eq!(
            starts.as_primitive::<Int64Type>().values(),
            &[0, 0, 60_000, -60_000]
        );
        assert_eq!(
            ends.as_primitive::<Int64Type>().values(),
            &[60_000, 60_000, 120_000, 0]
        );
        assert!(out[0].column(1).null_count() == 0);
    }
}
