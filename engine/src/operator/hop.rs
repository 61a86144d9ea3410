//! Assigns each event its hopping windows: one output row per window the event falls in.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, Int64Array};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::Operator;
use super::tumble::{format_duration_ns, windowed_schema};
use crate::{Error, Result};

/// The HOP window assigner: windows of `size` starting every `slide`, aligned to the epoch, so
/// each event is in about `size / slide` windows.
#[derive(Debug)]
pub struct HopOperator {
    time_index: usize,
    /// Slide and size in units of the time column.
    slide: i64,
    size: i64,
    slide_ns: i64,
    size_ns: i64,
    time_type: DataType,
    schema: SchemaRef,
}

impl HopOperator {
    /// Windows of `size_ns` every `slide_ns` over timestamp column `time_index` of `input`.
    pub fn try_new(input: &Schema, time_index: usize, slide_ns: i64, size_ns: i64) -> Result<Self> {
        let (schema, time_type, unit) = windowed_schema(input, time_index)?;
        if slide_ns <= 0 || size_ns <= 0 || slide_ns % unit != 0 || size_ns % unit != 0 {
            return Err(Error::InvalidArgument(
                "HOP's slide and size must be positive and whole numbers of the time column's unit"
                    .into(),
            ));
        }
        if size_ns / slide_ns > 1000 {
            return Err(Error::InvalidArgument(format!(
                "HOP puts every event in {} windows (size / slide); at most 1000 are allowed",
                size_ns / slide_ns
            )));
        }
        Ok(Self {
            time_index,
            slide: slide_ns / unit,
            size: size_ns / unit,
            slide_ns,
            size_ns,
            time_type,
            schema,
        })
    }
}

impl Operator for HopOperator {
    fn name(&self) -> &'static str {
        "HopWindow"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let ts = cast(batch.column(self.time_index), &DataType::Int64)?;
        let ts = ts.as_primitive::<Int64Type>();
        let (slide, size) = (self.slide, self.size);
        // The latest window an event is in starts at the last slide boundary at or before it;
        // the k-th earlier one starts k slides before, as long as it still covers the event.
        let last = ts.unary::<_, Int64Type>(|t| t - t.rem_euclid(slide));
        let windows = (size + slide - 1) / slide;
        let mut parts = Vec::with_capacity(windows as usize);
        for k in 0..windows {
            let starts: Int64Array = last.unary(|s| s - k * slide);
            let covers: BooleanArray = starts
                .iter()
                .zip(ts.iter())
                .map(|(s, t)| match (s, t) {
                    (Some(s), Some(t)) => Some(s + size > t),
                    _ => Some(false),
                })
                .collect();
            let ends: Int64Array = starts.unary(|s| s + size);
            let starts: ArrayRef = cast(&starts, &self.time_type)?;
            let ends: ArrayRef = cast(&ends, &self.time_type)?;
            let mut columns = batch.columns().to_vec();
            columns.push(starts);
            columns.push(ends);
            let all = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
            let kept = filter_record_batch(&all, &covers)?;
            if kept.num_rows() > 0 {
                parts.push(kept);
            }
        }
        Ok(match parts.len() {
            0 => Vec::new(),
            1 => parts,
            _ => vec![concat_batches(&self.schema, &parts)?],
        })
    }

    fn explain(&self) -> String {
        format!(
            "HopWindow: time={} slide={} size={}",
            self.schema.field(self.time_index).name(),
            format_duration_ns(self.slide_ns),
            format_duration_ns(self.size_ns)
        )
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::TimestampSecondArray;
    use datafusion::arrow::datatypes::{Field, TimeUnit};

    use super::*;

    #[test]
    fn each_event_lands_in_every_window_covering_it() {
        let schema = Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Second, None),
            false,
        )]);
        // 60 s windows every 20 s: three windows per event.
        let mut op =
            HopOperator::try_new(&schema, 0, 20_000_000_000, 60_000_000_000).expect("valid");
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(TimestampSecondArray::from(vec![65, 0]))],
        )
        .expect("batch");
        let out = op.process_batch(batch).expect("process");
        let mut got = Vec::new();
        for b in &out {
            let ts = cast(b.column(0), &DataType::Int64).expect("cast");
            let ws = cast(b.column(1), &DataType::Int64).expect("cast");
            let we = cast(b.column(2), &DataType::Int64).expect("cast");
            for i in 0..b.num_rows() {
                got.push((
                    ts.as_primitive::<Int64Type>().value(i),
                    ws.as_primitive::<Int64Type>().value(i),
                    we.as_primitive::<Int64Type>().value(i),
                ));
            }
        }
        got.sort_unstable();
        assert_eq!(
            got,
            vec![
                (0, -40, 20),
                (0, -20, 40),
                (0, 0, 60),
                (65, 20, 80),
                (65, 40, 100),
                (65, 60, 120)
            ]
        );
    }
}
