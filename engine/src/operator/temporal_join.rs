//! Event-time temporal join (Flink's `JOIN r FOR SYSTEM_TIME AS OF l.ts`): each row of the
//! left input joins the version of the right input's row for its key that was current at its
//! time (the latest with a time at or before it), once the watermark says no earlier version
//! can still come. The right input is a versioned table: its rows, by key, over time.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch, not, take};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use foldhash::{HashMap, HashMapExt};

use super::{BinaryOperator, Side};
use crate::checkpoint::OperatorState;
use crate::watermark::unit_nanos;
use crate::{Error, Result};

/// Bytes a kept version costs beyond its row.
const VERSION_OVERHEAD: usize = 64;

/// Right rows (row format) by key, then time (ns).
type Versions = HashMap<Box<[u8]>, BTreeMap<i64, Box<[u8]>>>;

/// One input of a temporal join: its key expressions and its time column.
#[derive(Debug)]
pub struct TemporalInput {
    /// The join key over this input's rows.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The event-time column (a timestamp) of this input.
    pub time: usize,
    /// This input's schema.
    pub schema: SchemaRef,
}

/// Joins each left row with the right row of its key current at its time. Left rows wait
/// until the watermark passes their time (no earlier right version can come then), and go out
/// joined (or, with `keep_unmatched`, with NULLs when no version was current or `filter`
/// rejects it), so the output only appends. Per key, the right versions kept are the latest
/// before the watermark and those after it. Rows of either input behind the watermark are
/// late: counted, handed over, and not used. Of two versions of a key at one time, the later
/// to arrive is kept.
#[derive(Debug)]
pub struct TemporalJoinOperator {
    left: TemporalInput,
    right: TemporalInput,
    left_unit: i64,
    right_unit: i64,
    keep_unmatched: bool,
    filter: Option<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    keys: RowConverter,
    rows: RowConverter,
    versions: Versions,
    version_bytes: usize,
    version_count: usize,
    /// Left rows waiting for the watermark.
    pending: Vec<RecordBatch>,
    watermark: Option<i64>,
    late_rows: u64,
    late: Vec<RecordBatch>,
}

fn unit_of(schema: &SchemaRef, column: usize) -> Result<i64> {
    match schema.fields().get(column).map(|f| f.data_type()) {
        Some(DataType::Timestamp(unit, _)) => Ok(unit_nanos(*unit)),
        other => Err(Error::InvalidArgument(format!(
            "a temporal join's time column is a timestamp, not {other:?}"
        ))),
    }
}

/// Evaluates `exprs` over `batch`.
fn evaluate(exprs: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    exprs
        .iter()
        .map(|e| Ok(e.evaluate(batch)?.into_array(batch.num_rows())?))
        .collect()
}

impl TemporalJoinOperator {
    /// A temporal join of `left` as of its time with the versions of `right`; the output is
    /// `schema`: the left's columns, then the right's (its leading ones: a right input may
    /// carry its time column at its end only for the join). `filter` (over the output's
    /// columns) must hold for a version to join.
    pub fn try_new(
        left: TemporalInput,
        right: TemporalInput,
        keep_unmatched: bool,
        filter: Option<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Result<Self> {
        if left.keys.is_empty() || left.keys.len() != right.keys.len() {
            return Err(Error::InvalidArgument(
                "a temporal join needs the same key on both inputs".into(),
            ));
        }
        let key_fields = left
            .keys
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(&left.schema)?)))
            .collect::<Result<Vec<_>>>()?;
        let row_fields = right
            .schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            left_unit: unit_of(&left.schema, left.time)?,
            right_unit: unit_of(&right.schema, right.time)?,
            left,
            right,
            keep_unmatched,
            filter,
            schema,
            keys: RowConverter::new(key_fields)?,
            rows: RowConverter::new(row_fields)?,
            versions: HashMap::new(),
            version_bytes: 0,
            version_count: 0,
            pending: Vec::new(),
            watermark: None,
            late_rows: 0,
            late: Vec::new(),
        })
    }

    /// Times (ns) of `batch`'s rows in column `column` of unit `unit`.
    fn times(batch: &RecordBatch, column: usize, unit: i64) -> Result<Int64Array> {
        let raw = cast(batch.column(column), &DataType::Int64)?;
        Ok(raw
            .as_primitive::<Int64Type>()
            .unary::<_, Int64Type>(|v| v.saturating_mul(unit)))
    }

    /// Splits off the rows of `batch` behind the watermark (or without a time) as late.
    fn on_time(&mut self, batch: RecordBatch, times: &Int64Array) -> Result<RecordBatch> {
        let w = self.watermark.unwrap_or(i64::MIN);
        let late: BooleanArray = (0..times.len())
            .map(|i| Some(times.is_null(i) || times.value(i) < w))
            .collect();
        let count = late.true_count();
        if count == 0 {
            return Ok(batch);
        }
        self.late_rows += count as u64;
        self.late.push(filter_record_batch(&batch, &late)?);
        Ok(filter_record_batch(&batch, &not(&late)?)?)
    }

    /// Keeps the right rows of `batch` as versions of their keys.
    fn add_versions(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = Self::times(batch, self.right.time, self.right_unit)?;
        let key_columns = evaluate(&self.right.keys, batch)?;
        let keys = self.keys.convert_columns(&key_columns)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        for i in 0..batch.num_rows() {
            // A NULL key matches nothing.
            if key_columns.iter().any(|c| c.is_null(i)) {
                continue;
            }
            let key = keys.row(i).data();
            let row: Box<[u8]> = rows.row(i).data().into();
            let added = row.len();
            let versions = self.versions.entry(key.into()).or_default();
            match versions.insert(times.value(i), row) {
                Some(old) => self.version_bytes = self.version_bytes + added - old.len(),
                None => {
                    self.version_bytes += added + key.len() + VERSION_OVERHEAD;
                    self.version_count += 1;
                }
            }
        }
        Ok(())
    }

    /// The left rows of `batch` joined with their versions: matched rows (passing the filter),
    /// and with `keep_unmatched` the others padded with NULLs.
    fn join(&self, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        let times = Self::times(batch, self.left.time, self.left_unit)?;
        let key_columns = evaluate(&self.left.keys, batch)?;
        let keys = self.keys.convert_columns(&key_columns)?;
        let null_key = |i: usize| key_columns.iter().any(|c| c.is_null(i));
        let mut matched_left = Vec::new();
        let mut matched_rows = Vec::new();
        for i in 0..n {
            if null_key(i) {
                continue;
            }
            let version = self
                .versions
                .get(keys.row(i).data())
                .and_then(|v| v.range(..=times.value(i)).next_back());
            if let Some((_, row)) = version {
                matched_left.push(i as u32);
                matched_rows.push(row);
            }
        }
        let mut out = Vec::new();
        let mut joined_mask = vec![false; n];
        if !matched_left.is_empty() {
            let idx = UInt32Array::from(matched_left.clone());
            let mut columns = batch
                .columns()
                .iter()
                .map(|c| Ok(take(c, &idx, None)?))
                .collect::<Result<Vec<ArrayRef>>>()?;
            let parser = self.rows.parser();
            let right_width = self.schema.fields().len() - self.left.schema.fields().len();
            columns.extend(
                self.rows
                    .convert_rows(matched_rows.iter().map(|r| parser.parse(r)))?
                    .into_iter()
                    .take(right_width),
            );
            let joined = super::batch_of(&self.schema, columns)?;
            let (joined, passed) = match &self.filter {
                None => (joined, None),
                Some(f) => {
                    let mask = f.evaluate(&joined)?.into_array(joined.num_rows())?;
                    let mask = mask.as_boolean().clone();
                    (filter_record_batch(&joined, &mask)?, Some(mask))
                }
            };
            for (p, &row) in matched_left.iter().enumerate() {
                if passed.as_ref().is_none_or(|m| m.is_valid(p) && m.value(p)) {
                    joined_mask[row as usize] = true;
                }
            }
            if joined.num_rows() > 0 {
                out.push(joined);
            }
        }
        if self.keep_unmatched {
            let unmatched: Vec<u32> = (0..n as u32)
                .filter(|&i| !joined_mask[i as usize])
                .collect();
            if !unmatched.is_empty() {
                let idx = UInt32Array::from(unmatched);
                let mut columns = batch
                    .columns()
                    .iter()
                    .map(|c| Ok(take(c, &idx, None)?))
                    .collect::<Result<Vec<ArrayRef>>>()?;
                let left_width = self.left.schema.fields().len();
                for f in &self.schema.fields()[left_width..] {
                    columns.push(new_null_array(f.data_type(), idx.len()));
                }
                out.push(super::batch_of(&self.schema, columns)?);
            }
        }
        Ok(out)
    }

    /// Per key, drops the versions no row still to come can join: all before the latest one
    /// before `watermark`.
    fn expire(&mut self, watermark: i64) {
        let (mut bytes, mut count) = (0usize, 0usize);
        self.versions.retain(|key, versions| {
            if let Some((&current, _)) = versions.range(..watermark).next_back() {
                let kept = versions.split_off(&current);
                for row in versions.values() {
                    bytes += row.len() + key.len() + VERSION_OVERHEAD;
                    count += 1;
                }
                *versions = kept;
            }
            !versions.is_empty()
        });
        self.version_bytes -= bytes;
        self.version_count -= count;
    }
}

impl BinaryOperator for TemporalJoinOperator {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, side: Side, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        match side {
            Side::Left => {
                let times = Self::times(&batch, self.left.time, self.left_unit)?;
                let on_time = self.on_time(batch, &times)?;
                if on_time.num_rows() > 0 {
                    self.pending.push(on_time);
                }
            }
            Side::Right => {
                let times = Self::times(&batch, self.right.time, self.right_unit)?;
                let on_time = self.on_time(batch, &times)?;
                self.add_versions(&on_time)?;
            }
        }
        Ok(Vec::new())
    }

    fn on_watermark(&mut self, watermark_ns: i64) -> Result<Vec<RecordBatch>> {
        if self.watermark.is_some_and(|w| w >= watermark_ns) {
            return Ok(Vec::new());
        }
        self.watermark = Some(watermark_ns);
        let mut out = Vec::new();
        if !self.pending.is_empty() {
            let all = concat_batches(&self.left.schema, &self.pending)?;
            self.pending.clear();
            let times = Self::times(&all, self.left.time, self.left_unit)?;
            // A left row at the watermark waits: a version at its very time can still come.
            let ready = BooleanArray::from_unary(&times, |t| t < watermark_ns);
            let waiting = filter_record_batch(&all, &not(&ready)?)?;
            if waiting.num_rows() > 0 {
                self.pending.push(waiting);
            }
            let ready = filter_record_batch(&all, &ready)?;
            if ready.num_rows() > 0 {
                out = self.join(&ready)?;
            }
        }
        self.expire(watermark_ns);
        Ok(out)
    }

    fn late_rows(&self) -> u64 {
        self.late_rows
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late)
    }

    fn explain(&self) -> String {
        let keys = |ks: &[Arc<dyn PhysicalExpr>]| {
            ks.iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "TemporalJoin: {} as of {} on [{}] = [{}]{}; state: left rows until the watermark \
             passes their time, and per key the right's current version and those after the \
             watermark",
            if self.keep_unmatched { "left" } else { "inner" },
            self.left.schema.field(self.left.time).name(),
            keys(&self.left.keys),
            keys(&self.right.keys),
            match &self.filter {
                Some(f) => format!(" filter {f}"),
                None => String::new(),
            }
        )
    }

    fn state_bytes(&self) -> usize {
        self.version_bytes
            + self
                .pending
                .iter()
                .map(RecordBatch::get_array_memory_size)
                .sum::<usize>()
    }

    fn state_rows(&self) -> usize {
        self.version_count
            + self
                .pending
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>()
    }

    fn limit_memory(&mut self, _bytes: usize) {
        // One output row per left row: no batch of output outgrows its input.
    }

    /// Values: watermark, late rows, how many batches of pending left rows come first; then
    /// the right versions as one batch.
    fn snapshot(&mut self) -> Result<OperatorState> {
        let mut batches = self.pending.clone();
        let parser = self.rows.parser();
        let rows: Vec<_> = self
            .versions
            .values()
            .flat_map(|v| v.values())
            .map(|r| parser.parse(r))
            .collect();
        if !rows.is_empty() {
            let columns = self.rows.convert_rows(rows)?;
            batches.push(RecordBatch::try_new(
                Arc::clone(&self.right.schema),
                columns,
            )?);
        }
        Ok(OperatorState {
            values: vec![
                self.watermark,
                Some(self.late_rows as i64),
                Some(self.pending.len() as i64),
            ],
            batches,
        })
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        if state.values.is_empty() {
            return Ok(());
        }
        self.watermark = state.value(0)?;
        self.late_rows = state.value(1)?.unwrap_or(0) as u64;
        let pending = state.value(2)?.unwrap_or(0) as usize;
        if pending > state.batches.len() {
            return Err(Error::Corrupt(
                "temporal join state lacks its pending rows".into(),
            ));
        }
        let mut batches = state.batches.into_iter();
        self.pending = batches.by_ref().take(pending).collect();
        for b in batches {
            let b = RecordBatch::try_new(Arc::clone(&self.right.schema), b.columns().to_vec())?;
            self.add_versions(&b)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::TimestampSecondArray;
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::physical_expr::expressions::Column;
    use proptest::prelude::*;

    use super::*;

    const S: i64 = 1_000_000_000;

    fn schema(name: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(format!("{name}k"), DataType::Int64, false),
            Field::new(format!("{name}v"), DataType::Int64, false),
            Field::new(
                format!("{name}t"),
                DataType::Timestamp(TimeUnit::Second, None),
                false,
            ),
        ]))
    }

    fn batch(s: &SchemaRef, rows: &[(i64, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::clone(s),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(TimestampSecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
            ],
        )
        .expect("batch")
    }

    fn operator(keep_unmatched: bool) -> TemporalJoinOperator {
        let (l, r) = (schema("l"), schema("r"));
        let out: Vec<Field> = l
            .fields()
            .iter()
            .chain(r.fields())
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let input = |s: &SchemaRef| TemporalInput {
            keys: vec![Arc::new(Column::new("k", 0))],
            time: 2,
            schema: Arc::clone(s),
        };
        TemporalJoinOperator::try_new(
            input(&l),
            input(&r),
            keep_unmatched,
            None,
            Arc::new(Schema::new(out)),
        )
        .expect("operator")
    }

    /// (left id, left time, right value or None), counted.
    fn rows(out: &[RecordBatch], into: &mut BTreeMap<(i64, i64, Option<i64>), usize>) {
        for b in out {
            let id = b.column(1).as_primitive::<Int64Type>();
            let t = cast(b.column(2), &DataType::Int64).expect("t");
            let t = t.as_primitive::<Int64Type>();
            let v = b.column(4).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                let value = v.is_valid(i).then(|| v.value(i));
                *into.entry((id.value(i), t.value(i), value)).or_default() += 1;
            }
        }
    }

    proptest! {
        /// Each left row on time joins the latest right row on time of its key at or before
        /// its time (the later to arrive of two at one time), once the watermark passes it;
        /// rows behind the watermark are late, and a restore goes on the same.
        #[test]
        fn each_row_joins_the_version_current_at_its_time(
            keep_unmatched in any::<bool>(),
            steps in prop::collection::vec(
                (any::<bool>(), prop::collection::vec((0i64..3, 0i64..100, 0i64..30), 0..5), 0i64..30),
                1..12,
            ),
            restore_at in 0usize..12,
        ) {
            let (l, r) = (schema("l"), schema("r"));
            let mut op = operator(keep_unmatched);
            let mut got = BTreeMap::new();
            let mut watermark = i64::MIN;
            let (mut lefts, mut versions): (Vec<(i64, i64, i64)>, Vec<(i64, i64, i64)>) = (Vec::new(), Vec::new());
            let mut late = 0u64;
            // Each step: rows (key, value or id, time) of the left or the right input, then a
            // watermark.
            for (i, (is_left, events, w)) in steps.into_iter().enumerate() {
                if i == restore_at {
                    let state = op.snapshot().expect("snapshot");
                    op = operator(keep_unmatched);
                    op.restore(state).expect("restore");
                }
                for e in &events {
                    if e.2 * S < watermark {
                        late += 1;
                    } else if is_left {
                        lefts.push(*e);
                    } else {
                        versions.push(*e);
                    }
                }
                let side = if is_left { Side::Left } else { Side::Right };
                let s = if is_left { &l } else { &r };
                rows(&op.process_batch(side, batch(s, &events)).expect("batch"), &mut got);
                let w = w * S;
                if w > watermark {
                    watermark = w;
                    rows(&op.on_watermark(w).expect("watermark"), &mut got);
                }
            }
            let mut want = BTreeMap::new();
            for &(k, id, t) in lefts.iter().filter(|e| e.2 * S < watermark) {
                // The latest version at or before t; of two at one time, the later to arrive.
                let version = versions
                    .iter()
                    .filter(|v| v.0 == k && v.2 <= t)
                    .fold(None::<&(i64, i64, i64)>, |best, v| match best {
                        Some(b) if b.2 > v.2 => Some(b),
                        _ => Some(v),
                    })
                    .map(|v| v.1);
                if version.is_some() || keep_unmatched {
                    *want.entry((id, t, version)).or_default() += 1;
                }
            }
            prop_assert_eq!(got, want);
            prop_assert_eq!(op.late_rows(), late);
        }
    }
}
