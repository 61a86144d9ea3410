//! Grouped aggregation over a whole stream (no window) with state per group: COUNT, SUM, AVG,
//! MIN and MAX over rows that only append, or over a changelog (rows inserted, and rows taken
//! back, kept exactly); emits upserts of just the groups each batch changed.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, FixedSizeBinaryArray,
    FixedSizeBinaryBuilder, Float64Array, Int64Array, UInt32Array,
};
use datafusion::arrow::compute::{CastOptions, cast, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, TryCastExpr};

use super::{AggregateSpec, Operator, TableSource, batch_of};
use crate::checkpoint::OperatorState;
use crate::state_store::{StateTable, put_bytes, take_array, take_bytes};
use crate::{Error, Result};

/// Bytes a group costs beyond its key: the map entry, the key's allocation, counters.
const GROUP_OVERHEAD: usize = 96;
/// Bytes a distinct MIN/MAX value costs beyond its bytes (a B-tree entry and its allocation).
const VALUE_OVERHEAD: usize = 48;

/// What an aggregate keeps per group, so that rows can be taken back exactly.
#[derive(Debug)]
enum Kept {
    /// COUNT(x): how many non-NULL values.
    Count(Vec<i64>),
    /// SUM or AVG over floating-point numbers (rows that only append): the sum and how many
    /// values it has.
    FloatSum {
        avg: bool,
        sums: Vec<f64>,
        counts: Vec<i64>,
    },
    /// SUM or AVG over integers or decimals (`scale` digits after the point): the exact sum in
    /// 128 bits and how many values it has.
    Sum {
        avg: bool,
        scale: i8,
        sums: Vec<i128>,
        counts: Vec<i64>,
    },
    /// MIN or MAX: every value with its multiplicity, ordered by row-format bytes (over rows
    /// that only append, just the best value).
    Extreme {
        max: bool,
        append_only: bool,
        converter: RowConverter,
        values: Vec<BTreeMap<Box<[u8]>, i64>>,
        null: OwnedRow,
    },
    /// COUNT(DISTINCT x): every value with its multiplicity.
    CountDistinct {
        converter: RowConverter,
        values: Vec<Distinct>,
    },
}

/// COUNT(DISTINCT x): every value with its multiplicity, hashed by row-format bytes.
type Distinct = HashMap<Box<[u8]>, i64>;

/// A multiset of values by their row-format bytes: what MIN, MAX and COUNT(DISTINCT) keep.
trait Multiset: Default + Clone {
    fn entries(&self) -> Vec<(&[u8], i64)>;
    fn put(&mut self, value: &[u8], multiplicity: i64);
    /// Adds one of `value` (or takes one back); returns the change in bytes kept.
    fn add(&mut self, value: &[u8], inserted: bool) -> Result<isize>;
}

macro_rules! multiset {
    ($t:ty) => {
        impl Multiset for $t {
            fn entries(&self) -> Vec<(&[u8], i64)> {
                self.iter().map(|(k, &m)| (k.as_ref(), m)).collect()
            }

            fn put(&mut self, value: &[u8], multiplicity: i64) {
                self.insert(value.into(), multiplicity);
            }

            fn add(&mut self, value: &[u8], inserted: bool) -> Result<isize> {
                if inserted {
                    if let Some(m) = self.get_mut(value) {
                        *m += 1;
                        return Ok(0);
                    }
                    self.insert(value.into(), 1);
                    return Ok((value.len() + VALUE_OVERHEAD) as isize);
                }
                let m = self.get_mut(value).ok_or_else(|| {
                    Error::Internal("a value was taken back that was never added".into())
                })?;
                *m -= 1;
                if *m > 0 {
                    return Ok(0);
                }
                self.remove(value);
                Ok(-((value.len() + VALUE_OVERHEAD) as isize))
            }
        }
    };
}

multiset!(BTreeMap<Box<[u8]>, i64>);
multiset!(Distinct);

/// One aggregate: its argument, its filter, and its kept state.
#[derive(Debug)]
struct Retractable {
    name: String,
    arg: Arc<dyn PhysicalExpr>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    kept: Kept,
}

/// The argument of SUM or AVG as given, before a cast of an integer to a float (which
/// DataFusion's AVG puts in): the sum then stays exact in integers, and equals the float sum
/// wherever that is exact. Any other cast (to a narrower integer, to text) stays, since
/// leaving it out would change the values.
fn exact_argument(
    arg: &Arc<dyn PhysicalExpr>,
    input: &Schema,
) -> Result<(Arc<dyn PhysicalExpr>, DataType)> {
    let expr: &dyn PhysicalExpr = arg.as_ref();
    let inner = if let Some(c) = expr.downcast_ref::<CastExpr>() {
        Some(c.expr())
    } else {
        expr.downcast_ref::<TryCastExpr>().map(|c| c.expr())
    };
    let t = arg.data_type(input)?;
    if let Some(inner) = inner.filter(|_| t.is_floating()) {
        let from = inner.data_type(input)?;
        if from.is_integer() {
            return Ok((Arc::clone(inner), from));
        }
    }
    Ok((Arc::clone(arg), t))
}

/// Why `spec` cannot be kept per group by [`GroupAggregateOperator`] (over rows that may be
/// taken back if `changelog`), or `None` if it can.
pub fn group_aggregate_refusal(
    spec: &AggregateSpec,
    input: &Schema,
    changelog: bool,
) -> Result<Option<String>> {
    let name = spec.expr.fun().name().to_ascii_lowercase();
    if spec.expr.is_distinct() && !(name == "count" && spec.expr.expressions().len() == 1) {
        return Ok(Some(format!(
            "{}(DISTINCT ...) over rows that change",
            name.to_uppercase()
        )));
    }
    let args = spec.expr.expressions();
    let refusal = match (name.as_str(), args.as_slice()) {
        ("count", [_]) | ("min" | "max", [_]) => None,
        ("sum" | "avg", [arg]) => {
            let (_, t) = exact_argument(arg, input)?;
            match t {
                t if t.is_integer() => None,
                DataType::Decimal128(..) => None,
                DataType::Float64 | DataType::Float32 if !changelog => None,
                t if changelog => Some(format!(
                    "{}() of {t} over rows that change: a floating-point sum cannot take a value \
                     back exactly (PostgreSQL does not either); cast the argument to numeric",
                    name.to_uppercase()
                )),
                t => Some(format!("{}() of {t}", name.to_uppercase())),
            }
        }
        _ => Some(format!(
            "{}() over rows that change (COUNT, SUM, AVG, MIN and MAX can be kept)",
            name.to_uppercase()
        )),
    };
    Ok(refusal)
}

impl Retractable {
    fn try_new(spec: &AggregateSpec, input: &Schema, changelog: bool) -> Result<Self> {
        if let Some(why) = group_aggregate_refusal(spec, input, changelog)? {
            return Err(Error::InvalidArgument(why));
        }
        let name = spec.expr.fun().name().to_ascii_lowercase();
        let arg = Arc::clone(&spec.expr.expressions()[0]);
        let (arg, t) = if matches!(name.as_str(), "sum" | "avg") {
            exact_argument(&arg, input)?
        } else {
            let t = arg.data_type(input)?;
            (arg, t)
        };
        let kept = match name.as_str() {
            "count" if !spec.expr.is_distinct() => Kept::Count(Vec::new()),
            "sum" | "avg" if t.is_floating() => Kept::FloatSum {
                avg: name == "avg",
                sums: Vec::new(),
                counts: Vec::new(),
            },
            "sum" | "avg" => Kept::Sum {
                avg: name == "avg",
                scale: match t {
                    DataType::Decimal128(_, s) => s,
                    _ => 0,
                },
                sums: Vec::new(),
                counts: Vec::new(),
            },
            "count" => Kept::CountDistinct {
                converter: RowConverter::new(vec![SortField::new(t.clone())])?,
                values: Vec::new(),
            },
            _ => {
                let converter = RowConverter::new(vec![SortField::new(t.clone())])?;
                let null = converter
                    .convert_columns(&[datafusion::arrow::array::new_null_array(&t, 1)])?
                    .row(0)
                    .owned();
                Kept::Extreme {
                    max: name == "max",
                    append_only: !changelog,
                    converter,
                    values: Vec::new(),
                    null,
                }
            }
        };
        Ok(Self {
            name: spec.expr.name().to_string(),
            arg,
            filter: spec.filter.clone(),
            kept,
        })
    }

    /// Appends group `g`'s kept state to `out`, for the state store.
    fn encode(&self, g: usize, out: &mut Vec<u8>) {
        match &self.kept {
            Kept::Count(c) => out.extend(c[g].to_le_bytes()),
            Kept::FloatSum { sums, counts, .. } => {
                out.extend(sums[g].to_le_bytes());
                out.extend(counts[g].to_le_bytes());
            }
            Kept::Sum { sums, counts, .. } => {
                out.extend(sums[g].to_le_bytes());
                out.extend(counts[g].to_le_bytes());
            }
            Kept::Extreme { values, .. } => encode_multiset(&values[g], out),
            Kept::CountDistinct { values, .. } => encode_multiset(&values[g], out),
        }
    }

    /// Reads group `g`'s kept state from the front of `input`, as [`Retractable::encode`]
    /// wrote it; returns the bytes of kept values it now holds.
    fn decode(&mut self, g: usize, input: &mut &[u8]) -> Result<usize> {
        match &mut self.kept {
            Kept::Count(c) => c[g] = i64::from_le_bytes(take_array(input)?),
            Kept::FloatSum { sums, counts, .. } => {
                sums[g] = f64::from_le_bytes(take_array(input)?);
                counts[g] = i64::from_le_bytes(take_array(input)?);
            }
            Kept::Sum { sums, counts, .. } => {
                sums[g] = i128::from_le_bytes(take_array(input)?);
                counts[g] = i64::from_le_bytes(take_array(input)?);
            }
            Kept::Extreme { values, .. } => return decode_multiset(&mut values[g], input),
            Kept::CountDistinct { values, .. } => return decode_multiset(&mut values[g], input),
        }
        Ok(0)
    }

    /// Empties group `g`'s kept values; returns the bytes they held.
    fn release(&mut self, g: usize) -> usize {
        let held = |m: &mut dyn Iterator<Item = usize>| m.map(|len| len + VALUE_OVERHEAD).sum();
        let bytes = match &mut self.kept {
            Kept::Extreme { values, .. } => values
                .get_mut(g)
                .map_or(0, |v| held(&mut std::mem::take(v).keys().map(|k| k.len()))),
            Kept::CountDistinct { values, .. } => values
                .get_mut(g)
                .map_or(0, |v| held(&mut std::mem::take(v).keys().map(|k| k.len()))),
            _ => 0,
        };
        self.reset(g);
        bytes
    }

    /// Makes room for group `len - 1` (or clears a reused slot `g`).
    fn reset(&mut self, g: usize) {
        match &mut self.kept {
            Kept::Count(c) => set(c, g, 0),
            Kept::FloatSum { sums, counts, .. } => {
                set(sums, g, 0.0);
                set(counts, g, 0);
            }
            Kept::Sum { sums, counts, .. } => {
                set(sums, g, 0);
                set(counts, g, 0);
            }
            Kept::Extreme { values, .. } => set(values, g, BTreeMap::new()),
            Kept::CountDistinct { values, .. } => set(values, g, Distinct::default()),
        }
    }

    /// Adds (or, where `inserted` is false, takes back) the rows of `batch` into groups `ids`;
    /// returns the change in bytes of kept MIN/MAX values.
    fn update(
        &mut self,
        batch: &RecordBatch,
        ids: &[usize],
        inserted: &BooleanArray,
    ) -> Result<isize> {
        let n = batch.num_rows();
        let arg = self.arg.evaluate(batch)?.into_array(n)?;
        let mask = match &self.filter {
            Some(f) => Some(f.evaluate(batch)?.into_array(n)?.as_boolean().clone()),
            None => None,
        };
        let counts =
            |i: usize| arg.is_valid(i) && mask.as_ref().is_none_or(|m| m.is_valid(i) && m.value(i));
        let sign = |i: usize| if inserted.value(i) { 1 } else { -1 };
        let mut bytes = 0isize;
        match &mut self.kept {
            Kept::Count(c) => {
                for i in (0..n).filter(|&i| counts(i)) {
                    c[ids[i]] += sign(i);
                }
            }
            Kept::FloatSum {
                sums, counts: k, ..
            } => {
                let floats = cast(&arg, &DataType::Float64)?;
                let floats = floats.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
                for i in (0..n).filter(|&i| counts(i)) {
                    sums[ids[i]] += floats.value(i);
                    k[ids[i]] += 1;
                }
            }
            Kept::Sum {
                scale,
                sums,
                counts: k,
                ..
            } => {
                let exact = cast(&arg, &DataType::Decimal128(38, *scale))?;
                let exact = exact.as_primitive::<Decimal128Type>();
                for i in (0..n).filter(|&i| counts(i)) {
                    let g = ids[i];
                    let v = exact.value(i);
                    sums[g] = if inserted.value(i) {
                        sums[g].checked_add(v)
                    } else {
                        sums[g].checked_sub(v)
                    }
                    .ok_or_else(|| Error::InvalidArgument("a sum overflowed 128 bits".into()))?;
                    k[g] += sign(i);
                }
            }
            Kept::Extreme {
                converter,
                values,
                max,
                append_only: true,
                ..
            } => {
                // Over rows that only append, only the best value so far matters.
                let rows = converter.convert_columns(&[Arc::clone(&arg)])?;
                for i in (0..n).filter(|&i| counts(i)) {
                    let value = rows.row(i).data();
                    let set = &mut values[ids[i]];
                    let better = set.keys().next().is_none_or(|best| {
                        if *max {
                            value > best.as_ref()
                        } else {
                            value < best.as_ref()
                        }
                    });
                    if better {
                        if let Some((old, _)) = set.pop_first() {
                            bytes -= (old.len() + VALUE_OVERHEAD) as isize;
                        }
                        set.insert(value.into(), 1);
                        bytes += (value.len() + VALUE_OVERHEAD) as isize;
                    }
                }
            }
            Kept::Extreme {
                converter, values, ..
            } => {
                let rows = converter.convert_columns(&[Arc::clone(&arg)])?;
                for i in (0..n).filter(|&i| counts(i)) {
                    bytes += values[ids[i]].add(rows.row(i).data(), inserted.value(i))?;
                }
            }
            Kept::CountDistinct { converter, values } => {
                let rows = converter.convert_columns(&[Arc::clone(&arg)])?;
                for i in (0..n).filter(|&i| counts(i)) {
                    bytes += values[ids[i]].add(rows.row(i).data(), inserted.value(i))?;
                }
            }
        }
        Ok(bytes)
    }

    /// The aggregate's current value for groups `ids`, in the type `out`.
    fn evaluate(&self, ids: &[usize], out: &DataType) -> Result<ArrayRef> {
        let strict = CastOptions {
            safe: false,
            ..Default::default()
        };
        let array: ArrayRef = match &self.kept {
            Kept::Count(c) => Arc::new(Int64Array::from_iter_values(ids.iter().map(|&g| c[g]))),
            Kept::FloatSum { avg, sums, counts } => {
                Arc::new(Float64Array::from_iter(ids.iter().map(|&g| {
                    (counts[g] > 0).then(|| {
                        if *avg {
                            sums[g] / counts[g] as f64
                        } else {
                            sums[g]
                        }
                    })
                })))
            }
            Kept::Sum {
                avg: false,
                scale,
                sums,
                counts,
            } => Arc::new(
                Decimal128Array::from_iter(ids.iter().map(|&g| (counts[g] > 0).then_some(sums[g])))
                    .with_precision_and_scale(38, *scale)?,
            ),
            Kept::Sum {
                avg: true,
                scale,
                sums,
                counts,
            } => average(ids, *scale, sums, counts, out)?,
            Kept::CountDistinct { values, .. } => Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|&g| values[g].len() as i64),
            )),
            Kept::Extreme {
                max,
                converter,
                values,
                null,
                ..
            } => {
                let parser = converter.parser();
                let rows: Vec<_> = ids
                    .iter()
                    .map(|&g| {
                        let best = if *max {
                            values[g].keys().next_back()
                        } else {
                            values[g].keys().next()
                        };
                        best.map_or_else(|| null.row(), |b| parser.parse(b))
                    })
                    .collect();
                converter.convert_rows(rows)?.remove(0)
            }
        };
        if array.data_type() == out {
            Ok(array)
        } else {
            Ok(cast_with_options(&array, out, &strict)?)
        }
    }
}

/// AVG as DataFusion computes it: a float quotient for integers; for decimals, the sum scaled to
/// the result's scale and divided by the count, truncated.
fn average(
    ids: &[usize],
    scale: i8,
    sums: &[i128],
    counts: &[i64],
    out: &DataType,
) -> Result<ArrayRef> {
    if let DataType::Decimal128(precision, out_scale) = *out {
        let factor = 10i128
            .checked_pow(u32::try_from(out_scale - scale).unwrap_or(0))
            .ok_or_else(|| Error::InvalidArgument("an average's scale is too large".into()))?;
        let values = ids
            .iter()
            .map(|&g| {
                if counts[g] <= 0 {
                    return Ok(None);
                }
                let scaled = sums[g].checked_mul(factor).ok_or_else(|| {
                    Error::InvalidArgument("an average overflowed 128 bits".into())
                })?;
                Ok(Some(scaled / i128::from(counts[g])))
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Arc::new(
            Decimal128Array::from(values).with_precision_and_scale(precision, out_scale)?,
        ));
    }
    let unit = 10f64.powi(i32::from(scale));
    Ok(Arc::new(Float64Array::from_iter(ids.iter().map(|&g| {
        (counts[g] > 0).then(|| sums[g] as f64 / unit / counts[g] as f64)
    }))))
}

/// Sets `v[i]`, growing `v` with copies of `value` if it is too short.
fn set<T: Clone>(v: &mut Vec<T>, i: usize, value: T) {
    if v.len() <= i {
        v.resize(i + 1, value);
    } else {
        v[i] = value;
    }
}

/// Aggregates rows per group over a whole stream, and after each batch emits the groups it
/// changed as upserts (the group columns and one column per aggregate): work per batch is
/// proportional to the batch, however many groups there are.
///
/// Over a changelog (the input's last column is true for an inserted row, false for one taken
/// back) the output has one more, last, boolean column that is false once a group has no rows
/// left: its row leaves the view, and its state is freed.
#[derive(Debug)]
pub struct GroupAggregateOperator {
    changelog: bool,
    input: SchemaRef,
    /// An aggregate without GROUP BY (its groups are constants): one row even before any input.
    one_row: bool,
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    group_rows: RowConverter,
    aggregates: Vec<Retractable>,
    schema: SchemaRef,
    /// Group ids by the group key's row-format bytes.
    ids: HashMap<Box<[u8]>, usize>,
    /// Per group id, its key (`None` for a freed id).
    keys: Vec<Option<OwnedRow>>,
    /// Per group id, how many rows it holds.
    rows: Vec<i64>,
    free: Vec<usize>,
    bytes: usize,
    /// A state TTL (see [`GroupAggregateOperator::with_state_ttl`]).
    ttl: Option<StateTtl>,
    /// Groups beyond memory, in the query's state store (see [`Operator::attach_store`]).
    spill: Option<Spill>,
}

/// The groups of an aggregate in the query's state store: as of the last checkpoint there,
/// and read back into memory when a row of an evicted group comes.
#[derive(Debug)]
struct Spill {
    table: StateTable,
    /// Per group id, whether it changed since the last checkpoint (only those are written).
    dirty: Vec<bool>,
    /// Keys of groups freed since the last checkpoint: deleted from the store at the next,
    /// and never read back from it until then.
    freed: std::collections::HashSet<Box<[u8]>, foldhash::fast::RandomState>,
    /// Whether the store may hold groups that are not in memory (after an eviction or a
    /// restore): only then is a group missing from memory looked up there.
    partial: bool,
}

/// The value of an aggregate's checkpoint whose groups are in the state store.
const IN_STORE: i64 = 1;

/// Groups whose newest row is older than the watermark by more than `ttl_ns` are forgotten.
#[derive(Debug)]
struct StateTtl {
    /// The input's event time column.
    time: usize,
    ttl_ns: i64,
    /// Per group id, the newest event time it has seen.
    newest: Vec<i64>,
    /// (expiry, group) of every update, soonest first; stale entries are skipped.
    queue: std::collections::BinaryHeap<std::cmp::Reverse<(i64, usize)>>,
}

impl GroupAggregateOperator {
    /// Aggregates batches of `input` (a changelog if `changelog`) by `group_exprs`; `output` has
    /// the group columns, the aggregates' columns and, for a changelog, a last boolean
    /// visibility column.
    pub fn try_new(
        input: &Schema,
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        aggregates: &[AggregateSpec],
        output: SchemaRef,
        changelog: bool,
    ) -> Result<Self> {
        if changelog && input.fields().last().map(|f| f.data_type()) != Some(&DataType::Boolean) {
            return Err(Error::InvalidArgument(
                "a changelog ends with a boolean column".into(),
            ));
        }
        if output.fields().len() != group_exprs.len() + aggregates.len() + usize::from(changelog) {
            return Err(Error::InvalidArgument(format!(
                "an aggregation's output has its groups, its aggregates and (over a changelog) \
                 a visibility column, not {output}"
            )));
        }
        let sort = group_exprs
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(input)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            group_rows: RowConverter::new(sort)?,
            aggregates: aggregates
                .iter()
                .map(|a| Retractable::try_new(a, input, changelog))
                .collect::<Result<_>>()?,
            changelog,
            input: Arc::new(input.clone()),
            one_row: false,
            group_exprs,
            schema: output,
            ids: HashMap::new(),
            keys: Vec::new(),
            rows: Vec::new(),
            free: Vec::new(),
            bytes: 0,
            ttl: None,
            spill: None,
        })
    }

    /// Forgets a group once the watermark passes its newest row's event time (input column
    /// `time`, a timestamp) plus `ttl_ns` (Flink's `table.exec.state.ttl`, in event time). Its
    /// row stays in the view as it was; a later row of the group starts it again from nothing.
    /// Over rows that only append.
    pub fn with_state_ttl(mut self, time: usize, ttl_ns: i64) -> Result<Self> {
        if self.changelog {
            return Err(Error::InvalidArgument(
                "a state TTL on an aggregate over results that change would take back rows it \
                 has forgotten"
                    .into(),
            ));
        }
        self.ttl = Some(StateTtl {
            time,
            ttl_ns,
            newest: Vec::new(),
            queue: Default::default(),
        });
        Ok(self)
    }

    /// Notes the newest event time of the groups of `batch`'s rows (`ids`, per row).
    fn touch(&mut self, batch: &RecordBatch, ids: &[usize]) -> Result<()> {
        let Some(ttl) = &mut self.ttl else {
            return Ok(());
        };
        let times = cast(
            batch.column(ttl.time),
            &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, None),
        )?;
        let times = times.as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>();
        for (i, &g) in ids.iter().enumerate() {
            if times.is_null(i) {
                continue;
            }
            if ttl.newest.len() <= g {
                ttl.newest.resize(g + 1, i64::MIN);
            }
            if times.value(i) > ttl.newest[g] {
                ttl.newest[g] = times.value(i);
                ttl.queue.push(std::cmp::Reverse((
                    times.value(i).saturating_add(ttl.ttl_ns),
                    g,
                )));
            }
        }
        Ok(())
    }

    /// Frees the groups whose TTL the watermark has passed.
    fn expire(&mut self, watermark_ns: i64) {
        let Some(ttl) = &mut self.ttl else {
            return;
        };
        let mut gone = Vec::new();
        while let Some(&std::cmp::Reverse((expiry, g))) = ttl.queue.peek() {
            if expiry >= watermark_ns {
                break;
            }
            ttl.queue.pop();
            // Only the entry of the group's newest time counts; a freed group has none.
            if ttl
                .newest
                .get(g)
                .is_some_and(|&t| t.saturating_add(ttl.ttl_ns) == expiry)
            {
                ttl.newest[g] = i64::MIN;
                gone.push(g);
            }
        }
        for g in gone {
            self.forget(g);
        }
    }

    /// Whether the groups can go to a state store: not with a state TTL (which forgets groups by
    /// a queue in memory) nor for the one row of an aggregate without GROUP BY.
    fn spills(&self) -> bool {
        self.ttl.is_none() && !self.one_row
    }

    /// A checkpoint's part in the state store: stages the groups changed and freed since the
    /// last one, which are then clean.
    fn stage_changes(&mut self) -> Result<OperatorState> {
        let Some(spill) = &self.spill else {
            return Err(Error::Internal(
                "staging an aggregate without a store".into(),
            ));
        };
        let changed: Vec<(Vec<u8>, Vec<u8>)> = (0..self.keys.len())
            .filter(|&g| spill.dirty.get(g).copied().unwrap_or(false))
            .filter_map(|g| {
                let key = self.keys[g].as_ref()?.row().data().to_vec();
                Some((key, self.encode(g)))
            })
            .collect();
        let Some(spill) = &mut self.spill else {
            return Err(Error::Internal(
                "staging an aggregate without a store".into(),
            ));
        };
        // Deletions first: a key freed and made again since is written after.
        let deleted = spill.freed.drain().map(|key| (key.into_vec(), None));
        let written = changed.into_iter().map(|(k, v)| (k, Some(v)));
        spill.table.stage_all(deleted.chain(written));
        spill.dirty.iter_mut().for_each(|d| *d = false);
        Ok(OperatorState {
            values: vec![Some(IN_STORE)],
            batches: Vec::new(),
        })
    }

    /// Makes this an aggregate without GROUP BY, whose one row exists before any input: its
    /// group expressions must be constants.
    pub fn with_one_row(mut self) -> Self {
        self.one_row = true;
        self
    }

    fn group_id(&mut self, key: &[u8]) -> Result<usize> {
        if let Some(&g) = self.ids.get(key) {
            return Ok(g);
        }
        let g = self.free.pop().unwrap_or(self.keys.len());
        set(
            &mut self.keys,
            g,
            Some(self.group_rows.parser().parse(key).owned()),
        );
        set(&mut self.rows, g, 0);
        for a in &mut self.aggregates {
            a.reset(g);
        }
        self.ids.insert(key.into(), g);
        self.bytes += key.len() * 2 + GROUP_OVERHEAD;
        let stored = match &mut self.spill {
            Some(spill) => {
                set(&mut spill.dirty, g, false);
                // A group freed since the last checkpoint starts again from nothing: its
                // stored state is the one it had before it was freed.
                if !spill.partial || spill.freed.remove(key) {
                    None
                } else {
                    spill.table.get(key)?
                }
            }
            None => None,
        };
        if let Some(value) = stored {
            self.load(g, &value)?;
        }
        Ok(g)
    }

    /// Sets group `g` (just made) to the state stored for it.
    fn load(&mut self, g: usize, value: &[u8]) -> Result<()> {
        let mut input = value;
        self.rows[g] = i64::from_le_bytes(take_array(&mut input)?);
        for a in &mut self.aggregates {
            self.bytes += a.decode(g, &mut input)?;
        }
        Ok(())
    }

    /// Group `g`'s state as the state store keeps it: its rows, then each aggregate's.
    fn encode(&self, g: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 24 * self.aggregates.len());
        out.extend(self.rows[g].to_le_bytes());
        for a in &self.aggregates {
            a.encode(g, &mut out);
        }
        out
    }

    /// Forgets group `g` in memory, freeing its id.
    fn forget(&mut self, g: usize) {
        if let Some(key) = self.keys[g].take() {
            self.ids.remove(key.row().data());
            self.bytes -= key.row().data().len() * 2 + GROUP_OVERHEAD;
            for a in &mut self.aggregates {
                self.bytes = self.bytes.saturating_sub(a.release(g));
            }
            self.rows[g] = 0;
            self.free.push(g);
        }
    }

    /// The output rows of groups `ids`; groups left without rows are then freed.
    fn emit(&mut self, ids: &[usize]) -> Result<RecordBatch> {
        let keys = ids.iter().map(|&g| {
            self.keys[g]
                .as_ref()
                .map(|k| k.row())
                .ok_or_else(|| Error::Internal("a freed group was emitted".into()))
        });
        let keys = keys.collect::<Result<Vec<_>>>()?;
        let mut columns = self.group_rows.convert_rows(keys)?;
        let offset = columns.len();
        for (i, a) in self.aggregates.iter().enumerate() {
            columns.push(a.evaluate(ids, self.schema.field(offset + i).data_type())?);
        }
        if self.changelog {
            columns.push(Arc::new(BooleanArray::from_iter(
                ids.iter().map(|&g| Some(self.rows[g] > 0)),
            )));
        }
        let batch = batch_of(&self.schema, columns)?;
        for &g in ids {
            if self.rows[g] == 0
                && let Some(key) = self.keys[g].take()
            {
                self.ids.remove(key.row().data());
                self.bytes -= key.row().data().len() * 2 + GROUP_OVERHEAD;
                self.free.push(g);
                if let Some(spill) = &mut self.spill {
                    spill.dirty[g] = false;
                    spill.freed.insert(key.row().data().into());
                }
            }
        }
        Ok(batch)
    }

    /// Adds `batch`'s rows (inserted or taken back) to their groups; returns the groups touched.
    fn absorb(&mut self, batch: &RecordBatch) -> Result<Vec<usize>> {
        let n = batch.num_rows();
        let inserted = if self.changelog {
            batch.column(batch.num_columns() - 1).as_boolean().clone()
        } else {
            BooleanArray::from(vec![true; n])
        };
        let columns = self
            .group_exprs
            .iter()
            .map(|e| Ok(e.evaluate(batch)?.into_array(n)?))
            .collect::<Result<Vec<_>>>()?;
        let keys = self.group_rows.convert_columns(&columns)?;
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let g = self.group_id(keys.row(i).data())?;
            ids.push(g);
            self.rows[g] += if inserted.value(i) { 1 } else { -1 };
            if self.rows[g] < 0 {
                return Err(Error::Internal("a group lost more rows than it had".into()));
            }
        }
        self.touch(batch, &ids)?;
        for a in &mut self.aggregates {
            let change = a.update(batch, &ids, &inserted)?;
            self.bytes = self.bytes.saturating_add_signed(change);
        }
        ids.sort_unstable();
        ids.dedup();
        if let Some(spill) = &mut self.spill {
            for &g in &ids {
                spill.dirty[g] = true;
            }
        }
        Ok(ids)
    }
}

impl Operator for GroupAggregateOperator {
    fn name(&self) -> &'static str {
        "GroupAggregate"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let touched = self.absorb(&batch)?;
        Ok(vec![self.emit(&touched)?])
    }

    fn on_watermark(&mut self, watermark_ns: i64) -> Result<Vec<RecordBatch>> {
        self.expire(watermark_ns);
        Ok(Vec::new())
    }

    fn start(&mut self) -> Result<Vec<RecordBatch>> {
        if !self.one_row {
            return Ok(Vec::new());
        }
        // The group key of a single-row aggregation is constant: evaluate it over no rows.
        let empty = RecordBatch::new_empty(Arc::clone(&self.input));
        let key = self
            .group_exprs
            .iter()
            .map(|e| Ok(e.evaluate(&empty)?.into_array(1)?))
            .collect::<Result<Vec<_>>>()?;
        let keys = self.group_rows.convert_columns(&key)?;
        let g = self.group_id(keys.row(0).data())?;
        Ok(vec![self.emit(&[g])?])
    }

    fn explain(&self) -> String {
        let width = self.group_exprs.len();
        let groups: Vec<&str> = self.schema.fields()[..width]
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let aggregates: Vec<&str> = self.aggregates.iter().map(|a| a.name.as_str()).collect();
        let ttl = match &self.ttl {
            Some(t) => format!(
                " state_ttl={} (a group is forgotten once the watermark passes its newest {} plus it; its row stays, and a later row starts it again)",
                super::tumble::format_duration_ns(t.ttl_ns),
                self.input.field(t.time).name()
            ),
            None => String::new(),
        };
        format!(
            "UpdatingAggregate: state_key=[{}] aggregates=[{}] emit=on update{}{ttl}{}",
            groups.join(", "),
            aggregates.join(", "),
            if self.changelog {
                " input=changelog (rows inserted and taken back)"
            } else {
                ""
            },
            if self.spills() {
                " state=spills to disk past a quarter of the memory limit"
            } else {
                ""
            }
        )
    }

    fn state_rows(&self) -> usize {
        self.ids.len()
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    fn snapshot(&mut self) -> Result<OperatorState> {
        if self.spill.is_some() {
            return self.stage_changes();
        }
        let live: Vec<usize> = (0..self.keys.len())
            .filter(|&g| self.keys[g].is_some())
            .collect();
        if live.is_empty() {
            return Ok(OperatorState::default());
        }
        let keys: Vec<_> = live
            .iter()
            .filter_map(|&g| self.keys[g].as_ref().map(|k| k.row()))
            .collect();
        let mut columns = self.group_rows.convert_rows(keys)?;
        columns.push(int64s(&live, &self.rows));
        if let Some(ttl) = &self.ttl {
            let newest = |g: usize| ttl.newest.get(g).copied().unwrap_or(i64::MIN);
            columns.push(Arc::new(Int64Array::from_iter_values(
                live.iter().map(|&g| newest(g)),
            )));
        }
        let mut extremes = Vec::new();
        for a in &self.aggregates {
            match &a.kept {
                Kept::Count(c) => columns.push(int64s(&live, c)),
                Kept::FloatSum { sums, counts, .. } => {
                    columns.push(Arc::new(Float64Array::from_iter_values(
                        live.iter().map(|&g| sums[g]),
                    )));
                    columns.push(int64s(&live, counts));
                }
                Kept::Sum { sums, counts, .. } => {
                    columns.push(i128s(&live, sums)?);
                    columns.push(int64s(&live, counts));
                }
                Kept::Extreme {
                    converter, values, ..
                } => extremes.push(extreme_batch(&live, converter, values)?),
                Kept::CountDistinct { converter, values } => {
                    extremes.push(extreme_batch(&live, converter, values)?)
                }
            }
        }
        let mut batches = vec![super::state_batch(columns)?];
        batches.extend(extremes);
        Ok(OperatorState {
            values: Vec::new(),
            batches,
        })
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        if state.values.first() == Some(&Some(IN_STORE)) {
            return match &mut self.spill {
                Some(spill) => {
                    spill.partial = true;
                    Ok(())
                }
                None => Err(Error::Corrupt(
                    "an aggregate's checkpoint is in a state store it does not have".into(),
                )),
            };
        }
        let mut batches = state.batches.into_iter();
        let Some(groups) = batches.next() else {
            return Ok(());
        };
        let corrupt = || Error::Corrupt("aggregate state lacks columns".into());
        let width = self.group_exprs.len();
        let columns = groups.columns();
        let keys = self
            .group_rows
            .convert_columns(columns.get(..width).ok_or_else(corrupt)?)?;
        let mut next = width;
        let column = |next: &mut usize| {
            *next += 1;
            columns.get(*next - 1).cloned().ok_or_else(corrupt)
        };
        let rows = column(&mut next)?;
        let newest = match self.ttl {
            Some(_) => Some(column(&mut next)?),
            None => None,
        };
        let mut ids = Vec::with_capacity(groups.num_rows());
        for i in 0..groups.num_rows() {
            let g = self.group_id(keys.row(i).data())?;
            self.rows[g] = rows.as_primitive::<Int64Type>().value(i);
            ids.push(g);
        }
        if let (Some(ttl), Some(newest)) = (&mut self.ttl, newest) {
            for (i, &g) in ids.iter().enumerate() {
                let t = newest.as_primitive::<Int64Type>().value(i);
                set(&mut ttl.newest, g, t);
                ttl.queue
                    .push(std::cmp::Reverse((t.saturating_add(ttl.ttl_ns), g)));
            }
        }
        for a in &mut self.aggregates {
            let change = match &mut a.kept {
                Kept::Count(c) => {
                    c.copy_from_slice(column(&mut next)?.as_primitive::<Int64Type>().values());
                    0
                }
                Kept::FloatSum { sums, counts, .. } => {
                    let s = column(&mut next)?;
                    sums.copy_from_slice(
                        s.as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                            .values(),
                    );
                    counts.copy_from_slice(column(&mut next)?.as_primitive::<Int64Type>().values());
                    0
                }
                Kept::Sum { sums, counts, .. } => {
                    let s = column(&mut next)?;
                    for (g, bytes) in s.as_fixed_size_binary().iter().enumerate() {
                        let bytes: [u8; 16] =
                            bytes.and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?;
                        sums[g] = i128::from_le_bytes(bytes);
                    }
                    counts.copy_from_slice(column(&mut next)?.as_primitive::<Int64Type>().values());
                    0
                }
                Kept::Extreme {
                    converter, values, ..
                } => restore_extreme(batches.next().ok_or_else(corrupt)?, converter, values)?,
                Kept::CountDistinct { converter, values } => {
                    restore_extreme(batches.next().ok_or_else(corrupt)?, converter, values)?
                }
            };
            self.bytes = self.bytes.saturating_add_signed(change);
        }
        // From a checkpoint file written before the store: the next checkpoint stores all.
        if let Some(spill) = &mut self.spill {
            for &g in &ids {
                set(&mut spill.dirty, g, true);
            }
        }
        Ok(())
    }

    fn attach_store(&mut self, tables: &mut dyn TableSource, name: &str) -> Result<bool> {
        if !self.spills() {
            return Ok(false);
        }
        self.spill = Some(Spill {
            table: tables.table(name)?,
            dirty: vec![false; self.keys.len()],
            freed: Default::default(),
            partial: false,
        });
        Ok(true)
    }

    fn evict(&mut self) {
        let Some(spill) = &mut self.spill else {
            return;
        };
        spill.partial = true;
        let spill = &*spill;
        let clean: Vec<usize> = (0..self.keys.len())
            .filter(|&g| self.keys[g].is_some() && !spill.dirty.get(g).copied().unwrap_or(true))
            .collect();
        for g in clean {
            self.forget(g);
        }
    }
}

/// A multiset as its count, then each value's length, bytes and multiplicity.
fn encode_multiset<M: Multiset>(m: &M, out: &mut Vec<u8>) {
    let entries = m.entries();
    out.extend((entries.len() as u32).to_le_bytes());
    for (value, multiplicity) in entries {
        put_bytes(out, value);
        out.extend(multiplicity.to_le_bytes());
    }
}

/// Reads a multiset written by [`encode_multiset`] into `m`; returns the bytes it holds.
fn decode_multiset<M: Multiset>(m: &mut M, input: &mut &[u8]) -> Result<usize> {
    let n = u32::from_le_bytes(take_array(input)?);
    let mut bytes = 0;
    for _ in 0..n {
        let value = take_bytes(input)?;
        m.put(value, i64::from_le_bytes(take_array(input)?));
        bytes += value.len() + VALUE_OVERHEAD;
    }
    Ok(bytes)
}

fn int64s(live: &[usize], v: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(live.iter().map(|&g| v[g])))
}

fn i128s(live: &[usize], v: &[i128]) -> Result<ArrayRef> {
    let mut b = FixedSizeBinaryBuilder::with_capacity(live.len(), 16);
    for &g in live {
        b.append_value(v[g].to_le_bytes())?;
    }
    Ok(Arc::new(b.finish()) as Arc<FixedSizeBinaryArray>)
}

/// A MIN/MAX's values as (the group's position among `live`, value, multiplicity).
fn extreme_batch<M: Multiset>(
    live: &[usize],
    converter: &RowConverter,
    values: &[M],
) -> Result<RecordBatch> {
    let parser = converter.parser();
    let (mut position, mut rows, mut counts) = (Vec::new(), Vec::new(), Vec::new());
    for (p, &g) in live.iter().enumerate() {
        for (value, m) in values[g].entries() {
            position.push(p as u32);
            rows.push(parser.parse(value));
            counts.push(m);
        }
    }
    let mut columns = vec![Arc::new(UInt32Array::from(position)) as ArrayRef];
    columns.push(converter.convert_rows(rows)?.remove(0));
    columns.push(Arc::new(Int64Array::from(counts)));
    super::state_batch(columns)
}

/// Restores a MIN/MAX from [`extreme_batch`] into groups numbered as they were restored (the
/// group at position p has id p); returns the bytes its values take.
fn restore_extreme<M: Multiset>(
    batch: RecordBatch,
    converter: &RowConverter,
    values: &mut [M],
) -> Result<isize> {
    let corrupt = || Error::Corrupt("MIN/MAX state is malformed".into());
    if batch.num_columns() != 3 {
        return Err(corrupt());
    }
    let position = batch
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
    let rows = converter.convert_columns(&[Arc::clone(batch.column(1))])?;
    let counts = batch.column(2).as_primitive::<Int64Type>();
    let mut bytes = 0isize;
    for i in 0..batch.num_rows() {
        let set = values
            .get_mut(position.value(i) as usize)
            .ok_or_else(corrupt)?;
        let value = rows.row(i).data();
        bytes += (value.len() + VALUE_OVERHEAD) as isize;
        set.put(value, counts.value(i));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::Field;
    use datafusion::functions_aggregate::average::avg_udaf;
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::{Column, cast as cast_expr};
    use proptest::prelude::*;

    use super::*;

    fn input() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, true),
            Field::new("weir_inserted", DataType::Boolean, false),
        ]))
    }

    /// `udaf(arg)` over rows of `schema`, named `name`.
    fn spec(
        schema: &SchemaRef,
        udaf: Arc<datafusion::logical_expr::AggregateUDF>,
        arg: Arc<dyn PhysicalExpr>,
        name: &str,
    ) -> AggregateSpec {
        AggregateSpec {
            expr: Arc::new(
                AggregateExprBuilder::new(udaf, vec![arg])
                    .schema(Arc::clone(schema))
                    .alias(name)
                    .build()
                    .expect("aggregate"),
            ),
            filter: None,
        }
    }

    /// COUNT(v), SUM(v), AVG(v) (over v cast to a float, as DataFusion plans it), MIN(v) and
    /// MAX(v) per k.
    fn operator() -> GroupAggregateOperator {
        let schema = input();
        let v = || Arc::new(Column::new("v", 1)) as Arc<dyn PhysicalExpr>;
        let spec = |udaf, arg, name: &str| spec(&schema, udaf, arg, name);
        let as_float = cast_expr(v(), &schema, DataType::Float64).expect("cast");
        let specs = vec![
            spec(count_udaf(), v(), "n"),
            spec(sum_udaf(), v(), "total"),
            spec(avg_udaf(), as_float, "mean"),
            spec(min_udaf(), v(), "low"),
            spec(max_udaf(), v(), "high"),
        ];
        let output = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
            Field::new("total", DataType::Int64, true),
            Field::new("mean", DataType::Float64, true),
            Field::new("low", DataType::Int64, true),
            Field::new("high", DataType::Int64, true),
            Field::new("visible", DataType::Boolean, false),
        ]));
        GroupAggregateOperator::try_new(
            &schema,
            vec![Arc::new(Column::new("k", 0))],
            &specs,
            output,
            true,
        )
        .expect("operator")
    }

    fn changes(rows: &[(&str, Option<i64>, bool)]) -> RecordBatch {
        RecordBatch::try_new(
            input(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.2)))),
            ],
        )
        .expect("batch")
    }

    /// One group's output: n, total, mean, low, high, visible.
    type Out = (
        i64,
        Option<i64>,
        Option<f64>,
        Option<i64>,
        Option<i64>,
        bool,
    );

    /// The latest output row per group.
    fn apply(view: &mut BTreeMap<String, Out>, out: &[RecordBatch]) {
        for b in out {
            let k = b.column(0).as_string::<i32>();
            let int = |c: usize, i: usize| {
                let a = b.column(c).as_primitive::<Int64Type>();
                a.is_valid(i).then(|| a.value(i))
            };
            let mean = b
                .column(3)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            for i in 0..b.num_rows() {
                let row = (
                    int(1, i).unwrap(),
                    int(2, i),
                    mean.is_valid(i).then(|| mean.value(i)),
                    int(4, i),
                    int(5, i),
                    b.column(6).as_boolean().value(i),
                );
                view.insert(k.value(i).to_string(), row);
            }
        }
    }

    #[test]
    fn taking_back_the_maximum_reveals_the_next_one_and_an_empty_group_leaves() {
        let mut op = operator();
        let mut view = BTreeMap::new();
        let out = op
            .process_batch(changes(&[
                ("a", Some(5), true),
                ("a", Some(9), true),
                ("a", None, true),
                ("b", Some(1), true),
            ]))
            .unwrap();
        apply(&mut view, &out);
        assert_eq!(view["a"], (2, Some(14), Some(7.0), Some(5), Some(9), true));
        let out = op
            .process_batch(changes(&[("a", Some(9), false), ("b", Some(1), false)]))
            .unwrap();
        apply(&mut view, &out);
        assert_eq!(view["a"], (1, Some(5), Some(5.0), Some(5), Some(5), true));
        assert_eq!(view["b"], (0, None, None, None, None, false));
        // b's state is freed; a new b starts afresh.
        let out = op.process_batch(changes(&[("b", Some(3), true)])).unwrap();
        apply(&mut view, &out);
        assert_eq!(view["b"], (1, Some(3), Some(3.0), Some(3), Some(3), true));
        // A group holding only a NULL is there, with NULL aggregates and a count of 0.
        let out = op.process_batch(changes(&[("a", Some(5), false)])).unwrap();
        apply(&mut view, &out);
        assert_eq!(view["a"], (0, None, None, None, None, true));
    }

    #[test]
    fn over_rows_that_only_append_floats_sum_and_only_the_best_value_is_kept() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("x", DataType::Float64, true),
        ]));
        let spec = |udaf, arg, name: &str| spec(&schema, udaf, arg, name);
        let x = || Arc::new(Column::new("x", 1)) as Arc<dyn PhysicalExpr>;
        let k = || Arc::new(Column::new("k", 0)) as Arc<dyn PhysicalExpr>;
        let specs = vec![spec(avg_udaf(), x(), "mean"), spec(max_udaf(), k(), "top")];
        assert!(
            group_aggregate_refusal(&specs[0], &schema, false)
                .unwrap()
                .is_none()
        );
        let output = Arc::new(Schema::new(vec![
            Field::new("all", DataType::Int64, false),
            Field::new("mean", DataType::Float64, true),
            Field::new("top", DataType::Utf8, true),
        ]));
        let make = || {
            GroupAggregateOperator::try_new(
                &schema,
                vec![datafusion::physical_expr::expressions::lit(0i64)],
                &specs,
                Arc::clone(&output),
                false,
            )
            .unwrap()
            .with_one_row()
        };
        let mut op = make();
        let first = op.start().unwrap();
        assert_eq!(first[0].num_rows(), 1);
        assert!(first[0].column(1).is_null(0));
        let batch = |rows: &[(&str, f64)]| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                    Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
                ],
            )
            .unwrap()
        };
        op.process_batch(batch(&[("b", 1.5), ("c", 2.0)])).unwrap();
        let before = op.state_bytes();
        op.process_batch(batch(&[("a", 0.5)])).unwrap();
        // A worse value does not grow the state.
        assert_eq!(op.state_bytes(), before);
        let mut again = make();
        again.restore(op.snapshot().unwrap()).unwrap();
        let out = again.process_batch(batch(&[("d", 4.0)])).unwrap();
        let mean = out[0]
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert_eq!(mean.value(0), 2.0);
        assert_eq!(out[0].column(2).as_string::<i32>().value(0), "d");
    }

    #[test]
    fn a_float_sum_is_refused() {
        let schema = input();
        let as_float =
            cast_expr(Arc::new(Column::new("k", 0)), &schema, DataType::Float64).expect("cast");
        let spec = spec(&schema, sum_udaf(), as_float, "s");
        let why = group_aggregate_refusal(&spec, &schema, true)
            .unwrap()
            .expect("refused");
        assert!(why.contains("floating-point"), "{why}");
    }

    /// Inserts (true) and retractions (false, of a row inserted earlier) in batches.
    fn changelog() -> impl Strategy<Value = Vec<Vec<(u8, Option<i64>, bool)>>> {
        prop::collection::vec(
            prop::collection::vec((0u8..6, prop::option::of(-50i64..50), any::<bool>()), 1..12),
            1..10,
        )
    }

    proptest! {
        #[test]
        fn the_result_equals_aggregating_the_rows_that_remain(batches in changelog()) {
            let mut op = operator();
            let mut view = BTreeMap::new();
            let mut present: Vec<(String, Option<i64>)> = Vec::new();
            for (b, batch) in batches.iter().enumerate() {
                let mut rows = Vec::new();
                for &(k, v, insert) in batch {
                    let key = format!("k{k}");
                    // A retraction takes back a row that is there (else it becomes an insert).
                    match present.iter().position(|r| r.0 == key && r.1 == v) {
                        Some(p) if !insert => {
                            present.swap_remove(p);
                            rows.push((key, v, false));
                        }
                        _ => {
                            present.push((key.clone(), v));
                            rows.push((key, v, true));
                        }
                    }
                }
                let rows: Vec<_> = rows.iter().map(|(k, v, i)| (k.as_str(), *v, *i)).collect();
                let out = op.process_batch(changes(&rows)).unwrap();
                apply(&mut view, &out);
                if b % 3 == 1 {
                    // A restored copy goes on exactly as the original would.
                    let state = op.snapshot().unwrap();
                    let mut again = operator();
                    again.restore(state).unwrap();
                    op = again;
                }
            }
            let mut expected = BTreeMap::new();
            for (k, _) in &present {
                let values: Vec<i64> = present.iter().filter(|r| &r.0 == k).filter_map(|r| r.1).collect();
                let n = values.len() as i64;
                let total = (n > 0).then(|| values.iter().sum::<i64>());
                expected.insert(k.clone(), (
                    n,
                    total,
                    total.map(|t| t as f64 / n as f64),
                    values.iter().min().copied(),
                    values.iter().max().copied(),
                    true,
                ));
            }
            let visible: BTreeMap<_, _> = view.into_iter().filter(|(_, r)| r.5).collect();
            prop_assert_eq!(visible, expected);
        }
    }

    fn spilling(store: &crate::state_store::StateStore) -> GroupAggregateOperator {
        let mut op = operator();
        assert!(op.attach_store(&mut store.clone(), "aggregate").unwrap());
        op
    }

    /// A checkpoint written before the state store (every group in its batches) restores into
    /// an aggregate that spills: the next checkpoint writes every group to the store, and
    /// after they leave memory the aggregate goes on as one that never spilled.
    #[test]
    fn a_checkpoint_from_before_the_store_is_moved_into_it() {
        let mut old = operator();
        old.process_batch(changes(&[
            ("a", Some(5), true),
            ("a", Some(9), true),
            ("b", Some(1), true),
        ]))
        .unwrap();
        let file_state = old.snapshot().unwrap();
        assert!(
            !file_state.batches.is_empty(),
            "the old format: groups in batches"
        );
        let dir = tempfile::tempdir().unwrap();
        let store = crate::state_store::StateStore::open(dir.path()).unwrap();
        let mut spilled = spilling(&store);
        spilled.restore(file_state.clone()).unwrap();
        let state = spilled.snapshot().unwrap();
        assert_eq!(state.values, vec![Some(IN_STORE)]);
        store.commit(b"checkpoint").unwrap();
        spilled.evict();
        assert_eq!(spilled.state_rows(), 0);
        let mut memory = operator();
        memory.restore(file_state).unwrap();
        let batch = changes(&[
            ("a", Some(9), false),
            ("b", Some(4), true),
            ("c", None, true),
        ]);
        let (mut expected, mut got) = (BTreeMap::new(), BTreeMap::new());
        apply(&mut expected, &memory.process_batch(batch.clone()).unwrap());
        apply(&mut got, &spilled.process_batch(batch).unwrap());
        assert_eq!(got, expected);
        assert_eq!(got["a"], (1, Some(5), Some(5.0), Some(5), Some(5), true));
    }

    /// Rows (k, v, inserted) of `batch`, with retractions only of rows in `present`.
    fn take_back_only_present(
        present: &mut Vec<(String, Option<i64>)>,
        batch: &[(u8, Option<i64>, bool)],
    ) -> RecordBatch {
        let mut rows = Vec::new();
        for &(k, v, insert) in batch {
            let key = format!("k{k}");
            match present.iter().position(|r| r.0 == key && r.1 == v) {
                Some(p) if !insert => {
                    present.swap_remove(p);
                    rows.push((key, v, false));
                }
                _ => {
                    present.push((key.clone(), v));
                    rows.push((key, v, true));
                }
            }
        }
        let rows: Vec<_> = rows.iter().map(|(k, v, i)| (k.as_str(), *v, *i)).collect();
        changes(&rows)
    }

    proptest! {
        /// An aggregate whose groups go to the state store at every other batch (written
        /// there, dropped from memory, read back when their rows come), and restarts once
        /// from its store, emits what the same aggregate in memory does, batch by batch.
        #[test]
        fn groups_spilled_to_the_store_and_read_back_change_nothing(
            batches in changelog(),
            restart_at in 0usize..8,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = crate::state_store::StateStore::open(dir.path()).unwrap();
            let mut memory = operator();
            let mut spilled = spilling(&store);
            let (mut expected, mut got) = (BTreeMap::new(), BTreeMap::new());
            let mut present = Vec::new();
            for (b, batch) in batches.iter().enumerate() {
                let batch = take_back_only_present(&mut present, batch);
                apply(&mut expected, &memory.process_batch(batch.clone()).unwrap());
                apply(&mut got, &spilled.process_batch(batch).unwrap());
                prop_assert_eq!(&got, &expected);
                if b % 2 == 0 {
                    let state = spilled.snapshot().unwrap();
                    store.commit(b"checkpoint").unwrap();
                    spilled.evict();
                    prop_assert_eq!(spilled.state_rows(), 0);
                    if b == restart_at {
                        drop(spilled);
                        drop(store);
                        store = crate::state_store::StateStore::open(dir.path()).unwrap();
                        spilled = spilling(&store);
                        spilled.restore(state).unwrap();
                    }
                }
            }
        }
    }

    /// COUNT(v) and MAX(v) per k over rows (k, v, t) that only append, with a TTL of 100 ns.
    fn with_ttl() -> (GroupAggregateOperator, SchemaRef) {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, true),
            Field::new(
                "t",
                DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, None),
                false,
            ),
        ]));
        let v = || Arc::new(Column::new("v", 1)) as Arc<dyn PhysicalExpr>;
        let specs = vec![
            spec(&schema, count_udaf(), v(), "n"),
            spec(&schema, max_udaf(), v(), "high"),
        ];
        let output = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
            Field::new("high", DataType::Int64, true),
        ]));
        let op = GroupAggregateOperator::try_new(
            &schema,
            vec![Arc::new(Column::new("k", 0))],
            &specs,
            output,
            false,
        )
        .expect("operator")
        .with_state_ttl(2, 100)
        .expect("ttl");
        (op, schema)
    }

    fn timed(schema: &SchemaRef, rows: &[(&str, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::clone(schema),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(
                    datafusion::arrow::array::TimestampNanosecondArray::from_iter_values(
                        rows.iter().map(|r| r.2),
                    ),
                ),
            ],
        )
        .expect("batch")
    }

    /// (k, n, high) of an output batch.
    fn counted(out: &[RecordBatch]) -> Vec<(String, i64, i64)> {
        out.iter()
            .flat_map(|b| {
                let k = b.column(0).as_string::<i32>().clone();
                let n = b.column(1).as_primitive::<Int64Type>().clone();
                let h = b.column(2).as_primitive::<Int64Type>().clone();
                (0..b.num_rows()).map(move |i| (k.value(i).to_string(), n.value(i), h.value(i)))
            })
            .collect()
    }

    #[test]
    fn a_state_ttl_forgets_groups_the_watermark_has_left_behind() {
        let (mut op, schema) = with_ttl();
        op.process_batch(timed(&schema, &[("a", 5, 10), ("b", 7, 150), ("a", 9, 20)]))
            .expect("rows");
        let bytes = op.state_bytes();
        // a's newest row is at 20: past 20 + 100 it is forgotten; b (150) is kept.
        op.on_watermark(121).expect("watermark");
        assert!(op.state_bytes() < bytes);
        // Across a restore too, b keeps its count and its newest time.
        let state = op.snapshot().expect("snapshot");
        let (mut op, _) = with_ttl();
        op.restore(state).expect("restore");
        let out = op
            .process_batch(timed(&schema, &[("a", 1, 130), ("b", 2, 160)]))
            .expect("rows");
        let mut got = counted(&out);
        got.sort();
        assert_eq!(got, vec![("a".into(), 1, 1), ("b".into(), 2, 7)]);
        op.on_watermark(1_000).expect("watermark");
        assert_eq!(op.snapshot().expect("snapshot").batches.len(), 0);
    }
}
