//! Joins two append-only inputs (window joins, interval joins), keeping each input's rows only
//! while a row still to come from the other input could match them.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{cast, filter, filter_record_batch, interleave, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampNanosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use super::tumble::format_duration_ns;
use super::{BinaryOperator, Side};
use crate::{Error, Result};

/// How one input of a [`StreamJoinOperator`] is matched and when its rows can be forgotten.
#[derive(Debug, Clone)]
pub struct JoinInput {
    /// The equi-join keys over this input, in the same order as the other input's.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// This input's time column (a timestamp): rows still to come have
    /// `time >= watermark - time_lag_ns`, and a row below that arrived late.
    pub time: usize,
    /// See `time`.
    pub time_lag_ns: i64,
    /// A stored row cannot match any row still to come from the other input once
    /// `row[expiry_column] + expiry_offset_ns < watermark`; it is then dropped.
    pub expiry_column: usize,
    /// See `expiry_column`.
    pub expiry_offset_ns: i64,
}

/// One batch of stored rows with their evaluated keys and expiry times.
#[derive(Debug)]
struct Chunk {
    batch: RecordBatch,
    keys: Vec<ArrayRef>,
    expiry: Vec<i64>,
}

/// The stored rows of one input, indexed by key.
#[derive(Debug, Default)]
struct Stored {
    chunks: Vec<Chunk>,
    index: HashMap<OwnedRow, Vec<(usize, usize)>>,
    rows: usize,
}

/// A symmetric hash join of two append-only inputs whose matches are bounded in time.
///
/// Each arriving row is matched against the rows stored from the other input and then stored
/// itself; a stored row is dropped once the watermark shows that nothing still to come from
/// the other input can match it (an equality of window columns, or an interval condition
/// between time columns, decided by the planner). The output is append-only and final: every
/// match is emitted once, when its second row arrives. Rows that arrive behind the watermark are
/// late: counted and handed over, not joined, because their partners may already be gone.
#[derive(Debug)]
pub struct StreamJoinOperator {
    inputs: [JoinInput; 2],
    stored: [Stored; 2],
    converter: Option<RowConverter>,
    key_types: Vec<DataType>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    /// Columns of the right input (the output's last ones).
    right_width: usize,
    watermark: Option<i64>,
    late: Vec<RecordBatch>,
    late_rows: u64,
}

/// The values of a timestamp column in nanoseconds since the epoch; NULL as `i64::MIN`.
fn times_ns(column: &ArrayRef) -> Result<Vec<i64>> {
    let DataType::Timestamp(_, tz) = column.data_type() else {
        return Err(Error::Internal(format!(
            "a join time column has type {}; this is a bug",
            column.data_type()
        )));
    };
    let ns = cast(
        column,
        &DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()),
    )?;
    let ns = ns.as_primitive::<TimestampNanosecondType>();
    Ok((0..ns.len())
        .map(|i| if ns.is_null(i) { i64::MIN } else { ns.value(i) })
        .collect())
}

impl StreamJoinOperator {
    /// An inner join of `left` and `right` on their keys and `filter` (over the output, whose
    /// schema is the left columns followed by the right ones).
    pub fn try_new(
        left: JoinInput,
        right: JoinInput,
        left_schema: &SchemaRef,
        filter: Option<Arc<dyn PhysicalExpr>>,
        output: SchemaRef,
    ) -> Result<Self> {
        if left.keys.len() != right.keys.len() {
            return Err(Error::Internal(
                "join inputs have different numbers of keys; this is a bug".into(),
            ));
        }
        let key_types = left
            .keys
            .iter()
            .map(|k| Ok(k.data_type(left_schema)?))
            .collect::<Result<Vec<_>>>()?;
        let right_width = output
            .fields()
            .len()
            .checked_sub(left_schema.fields().len())
            .ok_or_else(|| {
                Error::Internal(
                    "a join's output is narrower than its left input; this is a bug".into(),
                )
            })?;
        let converter = if key_types.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                key_types.iter().cloned().map(SortField::new).collect(),
            )?)
        };
        Ok(Self {
            inputs: [left, right],
            stored: [Stored::default(), Stored::default()],
            converter,
            key_types,
            filter,
            schema: output,
            right_width,
            watermark: None,
            late: Vec::new(),
            late_rows: 0,
        })
    }

    /// Rows currently kept, per input (for tests and metrics).
    pub fn stored_rows(&self) -> [usize; 2] {
        [self.stored[0].rows, self.stored[1].rows]
    }

    fn keys_of(&self, side: usize, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let n = batch.num_rows();
        self.inputs[side]
            .keys
            .iter()
            .zip(&self.key_types)
            .map(|(k, t)| {
                let a = k.evaluate(batch)?.into_array(n)?;
                Ok(if a.data_type() == t { a } else { cast(&a, t)? })
            })
            .collect()
    }

    fn key_rows(&self, keys: &[ArrayRef], n: usize) -> Result<Vec<Option<OwnedRow>>> {
        let Some(converter) = &self.converter else {
            return Ok(vec![None; n]);
        };
        let rows = converter.convert_columns(keys)?;
        Ok((0..n).map(|i| Some(rows.row(i).owned())).collect())
    }

    fn rebuild_index(&mut self, side: usize) -> Result<()> {
        let mut index: HashMap<OwnedRow, Vec<(usize, usize)>> = HashMap::new();
        let mut rows = 0;
        for (c, chunk) in self.stored[side].chunks.iter().enumerate() {
            let n = chunk.batch.num_rows();
            rows += n;
            for (r, key) in self.key_rows(&chunk.keys, n)?.into_iter().enumerate() {
                index
                    .entry(key.unwrap_or_else(empty_row))
                    .or_default()
                    .push((c, r));
            }
        }
        self.stored[side].index = index;
        self.stored[side].rows = rows;
        Ok(())
    }

    /// Matches `batch` (of input `side`) against the other input's stored rows.
    fn probe(
        &self,
        side: usize,
        batch: &RecordBatch,
        keys: &[Option<OwnedRow>],
        usable: &[bool],
    ) -> Result<Option<RecordBatch>> {
        let other = &self.stored[1 - side];
        let mut this_rows = Vec::new();
        let mut picks = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if !usable[i] {
                continue;
            }
            let key = key.clone().unwrap_or_else(empty_row);
            if let Some(hits) = other.index.get(&key) {
                for &hit in hits {
                    this_rows.push(i as u32);
                    picks.push(hit);
                }
            }
        }
        if this_rows.is_empty() {
            return Ok(None);
        }
        let this_rows = UInt32Array::from(this_rows);
        let this_columns = batch
            .columns()
            .iter()
            .map(|c| Ok(take(c, &this_rows, None)?))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let width = other.chunks.first().map_or(0, |c| c.batch.num_columns());
        let other_columns = (0..width)
            .map(|col| {
                let sources: Vec<&dyn Array> = other
                    .chunks
                    .iter()
                    .map(|c| c.batch.column(col).as_ref())
                    .collect();
                Ok(interleave(&sources, &picks)?)
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let columns = if side == 0 {
            this_columns.into_iter().chain(other_columns).collect()
        } else {
            other_columns.into_iter().chain(this_columns).collect()
        };
        let joined = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        let joined = match &self.filter {
            None => joined,
            Some(f) => {
                let mask = f.evaluate(&joined)?.into_array(joined.num_rows())?;
                filter_record_batch(&joined, mask.as_boolean())?
            }
        };
        Ok((joined.num_rows() > 0).then_some(joined))
    }
}

/// The key of every row when the join has no equality keys (an interval condition only).
fn empty_row() -> OwnedRow {
    static EMPTY: std::sync::OnceLock<OwnedRow> = std::sync::OnceLock::new();
    EMPTY
        .get_or_init(|| {
            let converter =
                RowConverter::new(vec![SortField::new(DataType::Boolean)]).expect("boolean rows");
            let rows = converter
                .convert_columns(&[Arc::new(BooleanArray::from(vec![true])) as ArrayRef])
                .expect("one boolean row");
            rows.row(0).owned()
        })
        .clone()
}

impl BinaryOperator for StreamJoinOperator {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, side: Side, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let s = match side {
            Side::Left => 0,
            Side::Right => 1,
        };
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let input = &self.inputs[s];
        let times = times_ns(batch.column(input.time))?;
        let expiry: Vec<i64> = times_ns(batch.column(input.expiry_column))?
            .into_iter()
            .map(|t| t.saturating_add(input.expiry_offset_ns))
            .collect();
        let keys = self.keys_of(s, &batch)?;
        let late: Vec<bool> = times
            .iter()
            .map(|&t| {
                self.watermark
                    .is_some_and(|w| t < w.saturating_sub(input.time_lag_ns))
            })
            .collect();
        // SQL equality never matches NULL keys, so such rows can neither match nor be matched.
        let usable: Vec<bool> = (0..n)
            .map(|i| !late[i] && keys.iter().all(|k| !k.is_null(i)))
            .collect();
        if late.iter().any(|&l| l) {
            let mask = BooleanArray::from(late.clone());
            let rows = filter_record_batch(&batch, &mask)?;
            self.late_rows += rows.num_rows() as u64;
            self.late.push(rows);
        }
        let key_rows = self.key_rows(&keys, n)?;
        let out = self.probe(s, &batch, &key_rows, &usable)?;
        // Keep what a later row of the other input could still match.
        let keep: Vec<bool> = (0..n)
            .map(|i| usable[i] && self.watermark.is_none_or(|w| expiry[i] >= w))
            .collect();
        let kept = keep.iter().filter(|&&k| k).count();
        if kept > 0 {
            let (batch, keys, expiry) = if kept == n {
                (batch, keys, expiry)
            } else {
                let mask = BooleanArray::from(keep.clone());
                let keys = keys
                    .iter()
                    .map(|k| Ok(filter(k, &mask)?))
                    .collect::<Result<Vec<_>>>()?;
                let expiry = expiry
                    .iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(e, _)| *e)
                    .collect();
                (filter_record_batch(&batch, &mask)?, keys, expiry)
            };
            let chunk = self.stored[s].chunks.len();
            for (r, key) in self
                .key_rows(&keys, batch.num_rows())?
                .into_iter()
                .enumerate()
            {
                self.stored[s]
                    .index
                    .entry(key.unwrap_or_else(empty_row))
                    .or_default()
                    .push((chunk, r));
            }
            self.stored[s].rows += batch.num_rows();
            self.stored[s].chunks.push(Chunk {
                batch,
                keys,
                expiry,
            });
        }
        Ok(out.into_iter().collect())
    }

    fn on_watermark(&mut self, watermark_ns: i64) -> Result<Vec<RecordBatch>> {
        if self.watermark.is_some_and(|w| w >= watermark_ns) {
            return Ok(Vec::new());
        }
        self.watermark = Some(watermark_ns);
        for s in 0..2 {
            let mut changed = false;
            let chunks = std::mem::take(&mut self.stored[s].chunks);
            let mut kept = Vec::with_capacity(chunks.len());
            for chunk in chunks {
                if chunk.expiry.iter().all(|&e| e >= watermark_ns) {
                    kept.push(chunk);
                    continue;
                }
                changed = true;
                let keep: Vec<bool> = chunk.expiry.iter().map(|&e| e >= watermark_ns).collect();
                if !keep.iter().any(|&k| k) {
                    continue;
                }
                let mask = BooleanArray::from(keep.clone());
                kept.push(Chunk {
                    batch: filter_record_batch(&chunk.batch, &mask)?,
                    keys: chunk
                        .keys
                        .iter()
                        .map(|k| Ok(filter(k, &mask)?))
                        .collect::<Result<Vec<_>>>()?,
                    expiry: chunk
                        .expiry
                        .iter()
                        .zip(&keep)
                        .filter(|(_, k)| **k)
                        .map(|(e, _)| *e)
                        .collect(),
                });
            }
            self.stored[s].chunks = kept;
            if changed {
                self.rebuild_index(s)?;
            }
        }
        Ok(Vec::new())
    }

    fn late_rows(&self) -> u64 {
        self.late_rows
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late)
    }

    fn explain(&self) -> String {
        let keys = |s: usize| -> Vec<String> {
            self.inputs[s].keys.iter().map(|k| k.to_string()).collect()
        };
        let on: Vec<String> = keys(0)
            .iter()
            .zip(keys(1))
            .map(|(l, r)| format!("{l} = {r}"))
            .collect();
        let left_width = self.schema.fields().len() - self.right_width;
        let keep = |s: usize| {
            let i = &self.inputs[s];
            let column = self
                .schema
                .fields()
                .get(i.expiry_column + if s == 0 { 0 } else { left_width })
                .map_or("?", |f| f.name().as_str());
            match i.expiry_offset_ns {
                0 => column.to_string(),
                n if n < 0 => format!("{column} - {}", format_duration_ns(-n)),
                n => format!("{column} + {}", format_duration_ns(n)),
            }
        };
        format!(
            "StreamJoin: inner on [{}]{}; state: left rows until the watermark passes {}, right rows until it passes {}",
            on.join(", "),
            self.filter
                .as_ref()
                .map(|f| format!(" filter {f}"))
                .unwrap_or_default(),
            keep(0),
            keep(1)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    fn schema(prefix: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(format!("{prefix}k"), DataType::Int64, true),
            Field::new(
                format!("{prefix}t"),
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
        ]))
    }

    fn batch(s: &SchemaRef, rows: &[(Option<i64>, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::clone(s),
            vec![
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(TimestampNanosecondArray::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
            ],
        )
        .expect("test batch")
    }

    /// Windows of 10 joined on key and window end (column t): rows go when the window closes.
    fn window_join() -> (StreamJoinOperator, SchemaRef, SchemaRef) {
        let (l, r) = (schema("l"), schema("r"));
        let output = Arc::new(Schema::new(
            l.fields()
                .iter()
                .chain(r.fields())
                .cloned()
                .collect::<Vec<_>>(),
        ));
        let input = |name: &str| JoinInput {
            keys: vec![
                Arc::new(Column::new(&format!("{name}k"), 0)) as _,
                Arc::new(Column::new(&format!("{name}t"), 1)) as _,
            ],
            time: 1,
            time_lag_ns: 0,
            expiry_column: 1,
            expiry_offset_ns: 0,
        };
        let op =
            StreamJoinOperator::try_new(input("l"), input("r"), &l, None, output).expect("join");
        (op, l, r)
    }

    fn rows(out: &[RecordBatch]) -> Vec<(i64, i64, i64, i64)> {
        let mut v = Vec::new();
        for b in out {
            for i in 0..b.num_rows() {
                let int = |c: usize| {
                    b.column(c)
                        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                        .value(i)
                };
                let ts = |c: usize| {
                    b.column(c)
                        .as_primitive::<TimestampNanosecondType>()
                        .value(i)
                };
                v.push((int(0), ts(1), int(2), ts(3)));
            }
        }
        v.sort_unstable();
        v
    }

    #[test]
    fn matches_arrive_from_either_side_once() {
        let (mut op, l, r) = window_join();
        let mut out = op
            .process_batch(
                Side::Left,
                batch(&l, &[(Some(1), 10), (Some(2), 10), (None, 10)]),
            )
            .expect("left");
        assert!(out.is_empty());
        out.extend(
            op.process_batch(
                Side::Right,
                batch(&r, &[(Some(1), 10), (Some(1), 20), (None, 10)]),
            )
            .expect("right"),
        );
        out.extend(
            op.process_batch(Side::Left, batch(&l, &[(Some(1), 20)]))
                .expect("left again"),
        );
        assert_eq!(rows(&out), vec![(1, 10, 1, 10), (1, 20, 1, 20)]);
        // NULL keys are never stored.
        assert_eq!(op.stored_rows(), [3, 2]);
    }

    #[test]
    fn the_watermark_frees_closed_windows_and_later_rows_are_late() {
        let (mut op, l, r) = window_join();
        op.process_batch(Side::Left, batch(&l, &[(Some(1), 10), (Some(1), 20)]))
            .expect("left");
        op.on_watermark(15).expect("watermark");
        assert_eq!(op.stored_rows(), [1, 0]);
        // Window 10 is gone: a right row for it is late, not joined.
        let out = op
            .process_batch(Side::Right, batch(&r, &[(Some(1), 10), (Some(1), 20)]))
            .expect("right");
        assert_eq!(rows(&out), vec![(1, 20, 1, 20)]);
        assert_eq!(op.late_rows(), 1);
        assert_eq!(
            op.take_late().iter().map(|b| b.num_rows()).sum::<usize>(),
            1
        );
        op.on_watermark(21).expect("watermark");
        assert_eq!(op.stored_rows(), [0, 0]);
    }
}
