//! Joins two append-only inputs (window joins, interval joins), keeping each input's rows only
//! while a row still to come from the other input could match them; without a time bound, an
//! outer join's output is a changelog (an unmatched row is taken back when its match comes).

use std::collections::VecDeque;
use std::collections::hash_map::Entry;

use foldhash::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{cast, filter, filter_record_batch, interleave, take};
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampNanosecondType,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::hash_utils::{RandomState, create_hashes};
use datafusion::physical_expr::PhysicalExpr;

use super::tumble::format_duration_ns;
use super::{BinaryOperator, INSERTED, Side, TableSource};
use crate::checkpoint::OperatorState;
use crate::{Error, Result};
use spill::{FETCHED, Fetched, JoinSpill};

mod spill;

/// The fourth value of a checkpoint whose stored rows are in the state store.
const IN_STORE: i64 = 1;

/// How one input of a [`StreamJoinOperator`] is matched and when its rows can be forgotten.
#[derive(Debug, Clone)]
pub struct JoinInput {
    /// The equi-join keys over this input, in the same order as the other input's.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// This input's time column (a timestamp): rows still to come have
    /// `time >= watermark - time_lag_ns`, and a row below that arrived late. `None` for a join
    /// without a time bound, which keeps every row and takes every row whenever it comes.
    pub time: Option<usize>,
    /// See `time`.
    pub time_lag_ns: i64,
    /// A stored row cannot match any row still to come from the other input once
    /// `row[expiry_column] + expiry_offset_ns < watermark`; it is then dropped. `None`: kept
    /// for good.
    pub expiry_column: Option<usize>,
    /// See `expiry_column`.
    pub expiry_offset_ns: i64,
    /// Whether this input's rows that match nothing are emitted too, with NULLs for the other
    /// input's columns (the preserved side of a LEFT, RIGHT or FULL join): once they can no
    /// longer match (when the watermark passes their expiry) or, without an `expiry_column`,
    /// at once, taken back when their first match comes (the output is then a changelog).
    pub keep_unmatched: bool,
}

/// What [`StreamJoinOperator::probe`] found.
struct Probed {
    /// The joined rows (after the join's filter).
    joined: Option<RecordBatch>,
    /// Per row of the probing batch, whether it joined.
    matched: Vec<bool>,
    /// The stored rows of the other input that joined, as `(chunk id, row)`; rows read from
    /// the state store have chunk id [`FETCHED`] and their row of `fetched`.
    partners: Vec<(usize, u32)>,
    /// The other input's rows read from the state store.
    fetched: Option<Fetched>,
}

/// One batch of stored rows with their keys (in row format) and when it can go.
#[derive(Debug)]
struct Chunk {
    batch: RecordBatch,
    keys: Option<Rows>,
    /// The largest expiry time of its rows: the chunk goes once the watermark passes it.
    expiry: i64,
    /// For an input whose unmatched rows are emitted: per row, whether it has joined yet.
    matched: Option<Vec<bool>>,
    /// Under a TTL, each row's expiry: a row past it no longer matches, though its chunk waits
    /// for the rest of its rows before it goes.
    expiries: Option<Vec<i64>>,
}

/// The stored rows of one input, indexed by the hash of their key.
#[derive(Debug, Default)]
struct Stored {
    /// Chunks by id; ids below `first` are gone, `None` marks one dropped out of order.
    chunks: VecDeque<Option<Chunk>>,
    first: usize,
    /// Key hash to `(chunk id, row)`; entries of dropped chunks are skipped and compacted away.
    index: HashMap<u64, Hits>,
    entries: usize,
    rows: usize,
    /// Memory of the stored chunks' batches and key rows.
    bytes: usize,
}

/// The stored rows under one key hash. Most keys of a window join hold one row, kept inline:
/// a vector per key was an allocation per stored row.
#[derive(Debug, Clone)]
enum Hits {
    One((usize, u32)),
    Many(Vec<(usize, u32)>),
}

impl Hits {
    fn push(&mut self, hit: (usize, u32)) {
        match self {
            Self::One(first) => *self = Self::Many(vec![*first, hit]),
            Self::Many(all) => all.push(hit),
        }
    }

    fn as_slice(&self) -> &[(usize, u32)] {
        match self {
            Self::One(hit) => std::slice::from_ref(hit),
            Self::Many(all) => all,
        }
    }

    /// Keeps the hits `keep` accepts; whether any is left.
    fn retain(&mut self, keep: impl Fn(&(usize, u32)) -> bool) -> bool {
        match self {
            Self::One(hit) => keep(hit),
            Self::Many(all) => {
                all.retain(|h| keep(h));
                !all.is_empty()
            }
        }
    }
}

impl Stored {
    fn chunk(&self, id: usize) -> Option<&Chunk> {
        id.checked_sub(self.first)
            .and_then(|i| self.chunks.get(i))
            .and_then(Option::as_ref)
    }

    /// Drops the index entries of dropped chunks once they outnumber the live ones.
    fn compact_index(&mut self) {
        if self.entries <= 2 * self.rows + 4096 {
            return;
        }
        let first = self.first;
        let chunks = &self.chunks;
        let live = |id: usize| {
            id.checked_sub(first)
                .and_then(|i| chunks.get(i))
                .is_some_and(Option::is_some)
        };
        self.index.retain(|_, hits| hits.retain(|&(c, _)| live(c)));
        self.entries = self.index.values().map(|h| h.as_slice().len()).sum();
    }
}

/// A symmetric hash join of two append-only inputs whose matches are bounded in time.
///
/// Each arriving row is matched against the rows stored from the other input and then stored
/// itself. The keys and the filter decide every match; the time bound (an equality of window
/// columns, or an interval condition between time columns, decided by the planner) only says
/// when stored rows can go: a batch of them is dropped once the watermark shows that nothing
/// still to come from the other input can match any of its rows. The output is append-only and
/// final: every match is emitted once, when its second row arrives. Rows that arrive behind the
/// watermark are late: counted and handed over, not joined, because their partners may already
/// be gone.
#[derive(Debug)]
pub struct StreamJoinOperator {
    inputs: [JoinInput; 2],
    stored: [Stored; 2],
    converter: Option<RowConverter>,
    key_types: Vec<DataType>,
    hasher: RandomState,
    filter: Option<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    /// Columns of the right input (the output's last ones).
    right_width: usize,
    watermark: Option<i64>,
    late: Vec<RecordBatch>,
    late_rows: u64,
    /// The most memory one batch of output may take (see [`BinaryOperator::limit_memory`]).
    memory_limit: usize,
    /// An outer join without a time bound: the output is `schema` plus [`INSERTED`].
    changelog: Option<SchemaRef>,
    /// A join without a time bound whose inputs' expiries are a TTL (see
    /// [`StreamJoinOperator::with_state_ttl`]).
    ttl_ns: Option<i64>,
    /// Stored rows beyond memory, in the query's state store (see
    /// [`BinaryOperator::attach_store`]).
    spill: Option<JoinSpill>,
    /// Past this much state, checkpoints put the stored rows in the state store (an eighth
    /// of the memory limit); below it they hold the rows themselves, written whole, which
    /// costs less than a write per row to the store.
    spill_from: usize,
}

/// Memory of a stored chunk: its batch's rows and key rows.
fn chunk_bytes(batch: &RecordBatch, keys: Option<&Rows>) -> usize {
    crate::compact::batch_bytes(batch) + keys.map_or(0, Rows::size)
}

/// Expiry times of `batch`'s rows as `input` defines them; `i64::MAX` (never) without a column.
fn expiry_of(input: &JoinInput, batch: &RecordBatch) -> Result<Vec<i64>> {
    Ok(match input.expiry_column {
        Some(c) => times_ns(batch.column(c))?
            .into_iter()
            .map(|t| t.saturating_add(input.expiry_offset_ns))
            .collect(),
        None => vec![i64::MAX; batch.num_rows()],
    })
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
    /// A join of `left` and `right` on their keys and `filter` (over the output, whose schema
    /// is the left columns followed by the right ones). An outer join without a time bound on
    /// either input emits a changelog: the output has one more, last, column, [`INSERTED`].
    pub fn try_new(
        left: JoinInput,
        right: JoinInput,
        left_schema: &SchemaRef,
        filter: Option<Arc<dyn PhysicalExpr>>,
        output: SchemaRef,
    ) -> Result<Self> {
        // Without a time bound (no input's rows can be late; a TTL may still expire them), an
        // outer join's output is a changelog.
        let updating = [&left, &right].iter().any(|i| i.keep_unmatched)
            && [&left, &right].iter().all(|i| i.time.is_none());
        if !updating
            && [&left, &right]
                .iter()
                .any(|i| i.keep_unmatched && i.expiry_column.is_none())
        {
            return Err(Error::InvalidArgument(
                "an outer join bounded in time on one input only; this is a bug".into(),
            ));
        }
        let changelog = updating.then(|| {
            let mut fields: Vec<_> = output.fields().iter().cloned().collect();
            fields.push(Arc::new(Field::new(INSERTED, DataType::Boolean, false)));
            Arc::new(Schema::new(fields))
        });
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
            hasher: RandomState::default(),
            filter,
            schema: output,
            right_width,
            watermark: None,
            late: Vec::new(),
            late_rows: 0,
            memory_limit: usize::MAX,
            changelog,
            ttl_ns: None,
            spill: None,
            spill_from: usize::MAX,
        })
    }

    /// Whether stored rows can go to a state store: those of a join on keys without a time
    /// bound or TTL, which are kept for good.
    fn spills(&self) -> bool {
        self.converter.is_some()
            && self.ttl_ns.is_none()
            && self
                .inputs
                .iter()
                .all(|i| i.time.is_none() && i.expiry_column.is_none())
    }

    /// Says that the inputs' expiries (their time column plus `ttl_ns`) are a state TTL on a
    /// join without a time bound (Flink's `table.exec.state.ttl`, in event time): a stored row
    /// matches until the watermark passes its expiry, so rows further apart may not match.
    pub fn with_state_ttl(mut self, ttl_ns: Option<i64>) -> Self {
        self.ttl_ns = ttl_ns.filter(|_| self.inputs.iter().all(|i| i.time.is_none()));
        self
    }

    /// `batch` (of the join's columns) with [`INSERTED`] set to `inserted`, for a changelog.
    fn tagged(&self, batch: RecordBatch, inserted: bool) -> Result<RecordBatch> {
        let Some(schema) = &self.changelog else {
            return Ok(batch);
        };
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(BooleanArray::from(vec![
            inserted;
            batch.num_rows()
        ])));
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }

    /// The stored rows of preserved input `s` among `partners` that had not joined before, padded
    /// with NULLs: in a changelog they were emitted alone and are now taken back.
    fn first_matches(
        &self,
        s: usize,
        partners: &[(usize, u32)],
        fetched: Option<&Fetched>,
    ) -> Result<Vec<RecordBatch>> {
        if self.changelog.is_none() || !self.inputs[s].keep_unmatched {
            return Ok(Vec::new());
        }
        let first = self.first_joined(s, partners, fetched);
        let mut out = Vec::new();
        for run in first.chunk_by(|a, b| a.0 == b.0) {
            let batch = match (run[0].0, fetched) {
                (FETCHED, Some(f)) => &f.batch,
                (c, _) => match self.stored[s].chunk(c) {
                    Some(chunk) => &chunk.batch,
                    None => continue,
                },
            };
            let rows: Vec<u32> = run.iter().map(|p| p.1).collect();
            out.push(self.tagged(self.padded(s, batch, &rows)?, false)?);
        }
        Ok(out)
    }

    /// Of `partners` (rows of preserved input `s`, in memory or `fetched`), those that had not
    /// joined before, sorted, each once.
    fn first_joined(
        &self,
        s: usize,
        partners: &[(usize, u32)],
        fetched: Option<&Fetched>,
    ) -> Vec<(usize, u32)> {
        let mut first: Vec<(usize, u32)> = partners
            .iter()
            .copied()
            .filter(|&(c, r)| match (c, fetched) {
                (FETCHED, Some(f)) => !f.matched[r as usize],
                _ => self.stored[s]
                    .chunk(c)
                    .and_then(|ch| ch.matched.as_ref())
                    .is_some_and(|m| !m[r as usize]),
            })
            .collect();
        first.sort_unstable();
        first.dedup();
        first
    }

    /// Rows currently kept, per input (for tests and metrics).
    pub fn stored_rows(&self) -> [usize; 2] {
        [self.stored[0].rows, self.stored[1].rows]
    }

    fn keys_of(&self, side: usize, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        super::join_keys(&self.inputs[side].keys, &self.key_types, batch)
    }

    /// Per row, the hash of its key (all zero without keys).
    fn hashes(&self, keys: &[ArrayRef], n: usize) -> Result<Vec<u64>> {
        let mut hashes = vec![0; n];
        if !keys.is_empty() {
            create_hashes(keys, &self.hasher, &mut hashes)?;
        }
        Ok(hashes)
    }

    /// Matches rows `usable` of `batch` (of input `side`) against the other input's rows.
    fn probe(
        &self,
        side: usize,
        batch: &RecordBatch,
        keys: Option<&Rows>,
        hashes: &[u64],
        usable: &[bool],
    ) -> Result<Probed> {
        let other = &self.stored[1 - side];
        let mut matched = vec![false; batch.num_rows()];
        let mut this_rows = Vec::new();
        let mut picks: Vec<(usize, u32)> = Vec::new();
        // Joined rows are about as wide as a row of each side: past the memory limit, the
        // output of this one batch alone would outgrow the query's budget.
        let width = batch.get_array_memory_size() / batch.num_rows().max(1)
            + other.bytes / other.rows.max(1);
        let max_rows = self.memory_limit / width.max(1);
        // Rows of the other input that left memory are read back by key.
        let fetched = match (&self.spill, keys) {
            (Some(spill), Some(k)) if spill.partial(1 - side) => {
                Some(spill.fetch(1 - side, k, usable, max_rows, self.memory_limit)?)
            }
            _ => None,
        };
        for (i, h) in hashes.iter().enumerate() {
            if i % 1024 == 1023 {
                crate::runtime::check_stop()?;
            }
            if picks.len() > max_rows {
                return Err(Error::MemoryExceeded(format!(
                    "one batch of {} rows would join with more than {max_rows} stored rows, \
                     about {} MiB, past the query's memory limit of {} MiB",
                    batch.num_rows(),
                    (picks.len() * width) >> 20,
                    self.memory_limit >> 20
                )));
            }
            if !usable[i] {
                continue;
            }
            if let Some(f) = &fetched {
                for &r in &f.hits[i] {
                    this_rows.push(i as u32);
                    picks.push((FETCHED, r));
                }
            }
            let Some(hits) = other.index.get(h) else {
                continue;
            };
            for &(c, r) in hits.as_slice() {
                let Some(chunk) = other.chunk(c) else {
                    continue;
                };
                // Under a TTL, a row past its expiry no longer matches.
                if let (Some(e), Some(w)) = (&chunk.expiries, self.watermark) {
                    if e[r as usize] < w {
                        continue;
                    }
                }
                let same = match (keys, &chunk.keys) {
                    (Some(k), Some(ck)) => k.row(i) == ck.row(r as usize),
                    _ => true,
                };
                if same {
                    this_rows.push(i as u32);
                    picks.push((c, r));
                }
            }
        }
        if this_rows.is_empty() {
            return Ok(Probed {
                joined: None,
                matched,
                partners: Vec::new(),
                fetched: None,
            });
        }
        // The picked chunks, numbered densely for `interleave`.
        let mut used: Vec<usize> = picks.iter().map(|p| p.0).collect();
        used.sort_unstable();
        used.dedup();
        let positions: Vec<(usize, usize)> = picks
            .iter()
            .map(|&(c, r)| (used.binary_search(&c).unwrap_or_default(), r as usize))
            .collect();
        let chunks: Vec<&RecordBatch> = used
            .iter()
            .filter_map(|&c| match (c, &fetched) {
                (FETCHED, Some(f)) => Some(&f.batch),
                _ => other.chunk(c).map(|ch| &ch.batch),
            })
            .collect();
        let this_indices = UInt32Array::from(this_rows.clone());
        let this_columns = batch
            .columns()
            .iter()
            .map(|c| Ok(take(c, &this_indices, None)?))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let width = chunks.first().map_or(0, |b| b.num_columns());
        let other_columns = (0..width)
            .map(|col| {
                let sources: Vec<&dyn Array> =
                    chunks.iter().map(|b| b.column(col).as_ref()).collect();
                Ok(interleave(&sources, &positions)?)
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let columns = if side == 0 {
            this_columns.into_iter().chain(other_columns).collect()
        } else {
            other_columns.into_iter().chain(this_columns).collect()
        };
        let joined = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        // Only pairs that pass the join's filter have joined.
        let (joined, passed) = match &self.filter {
            None => (joined, None),
            Some(f) => {
                let mask = f.evaluate(&joined)?.into_array(joined.num_rows())?;
                let mask = mask.as_boolean().clone();
                (filter_record_batch(&joined, &mask)?, Some(mask))
            }
        };
        let mut partners = Vec::with_capacity(picks.len());
        for (p, (&row, &pick)) in this_rows.iter().zip(&picks).enumerate() {
            if passed.as_ref().is_none_or(|m| m.is_valid(p) && m.value(p)) {
                matched[row as usize] = true;
                partners.push(pick);
            }
        }
        Ok(Probed {
            joined: (joined.num_rows() > 0).then_some(joined),
            matched,
            partners,
            fetched,
        })
    }

    /// Rows `rows` of `batch` (of input `side`) with NULLs for the other input's columns.
    fn padded(&self, side: usize, batch: &RecordBatch, rows: &[u32]) -> Result<RecordBatch> {
        let indices = UInt32Array::from(rows.to_vec());
        let this = batch
            .columns()
            .iter()
            .map(|c| Ok(take(c, &indices, None)?))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let left_width = self.schema.fields().len() - self.right_width;
        let (from, to) = if side == 0 {
            (left_width, self.schema.fields().len())
        } else {
            (0, left_width)
        };
        let nulls = self.schema.fields()[from..to]
            .iter()
            .map(|f| new_null_array(f.data_type(), rows.len()));
        let columns: Vec<ArrayRef> = if side == 0 {
            this.into_iter().chain(nulls).collect()
        } else {
            nulls.chain(this).collect()
        };
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

impl StreamJoinOperator {
    /// Keeps `batch` (rows of input `s`, with their key rows, hashes and expiry times) for rows
    /// of the other input still to come.
    fn store(
        &mut self,
        s: usize,
        batch: RecordBatch,
        keys: Option<Rows>,
        hashes: &[u64],
        expiry: &[i64],
        matched: Option<Vec<bool>>,
    ) {
        let expiries = self.ttl_ns.map(|_| expiry.to_vec());
        let stored = &mut self.stored[s];
        stored.bytes += chunk_bytes(&batch, keys.as_ref());
        let id = stored.first + stored.chunks.len();
        for (r, h) in hashes.iter().enumerate() {
            match stored.index.entry(*h) {
                Entry::Occupied(mut hits) => hits.get_mut().push((id, r as u32)),
                Entry::Vacant(slot) => {
                    slot.insert(Hits::One((id, r as u32)));
                }
            }
        }
        stored.entries += hashes.len();
        stored.rows += batch.num_rows();
        stored.chunks.push_back(Some(Chunk {
            batch,
            keys,
            expiry: expiry.iter().copied().max().unwrap_or(i64::MIN),
            matched,
            expiries,
        }));
    }

    /// Stores rows of input `s` from a checkpoint: keys, hashes and expiry as on arrival. An
    /// input whose unmatched rows are emitted has one more, last, column: whether each joined.
    fn store_restored(&mut self, s: usize, batch: RecordBatch) -> Result<()> {
        let (batch, matched) = if self.inputs[s].keep_unmatched {
            let last = batch.num_columns().saturating_sub(1);
            let flags = batch.column(last).as_boolean();
            let matched: Vec<bool> = (0..flags.len()).map(|i| flags.value(i)).collect();
            (
                batch.project(&(0..last).collect::<Vec<_>>())?,
                Some(matched),
            )
        } else {
            (batch, None)
        };
        let expiry = expiry_of(&self.inputs[s], &batch)?;
        let keys = self.keys_of(s, &batch)?;
        let key_rows = match &self.converter {
            Some(c) => Some(c.convert_columns(&keys)?),
            None => None,
        };
        let hashes = self.hashes(&keys, batch.num_rows())?;
        self.store(s, batch, key_rows, &hashes, &expiry, matched);
        Ok(())
    }

    /// Marks the stored rows of input `s` that `partners` names (in memory or `fetched`) as
    /// joined.
    fn mark_matched(&mut self, s: usize, partners: &[(usize, u32)], fetched: Option<&Fetched>) {
        if !self.inputs[s].keep_unmatched {
            return;
        }
        if let (Some(spill), Some(f)) = (&mut self.spill, fetched) {
            let rows: Vec<u32> = partners
                .iter()
                .filter(|p| p.0 == FETCHED && !f.matched[p.1 as usize])
                .map(|p| p.1)
                .collect();
            spill.mark_fetched(s, f, &rows);
        }
        let stored = &mut self.stored[s];
        for &(c, r) in partners {
            let chunk = c
                .checked_sub(stored.first)
                .and_then(|i| stored.chunks.get_mut(i))
                .and_then(Option::as_mut);
            let flag = chunk
                .and_then(|ch| ch.matched.as_mut())
                .and_then(|flags| flags.get_mut(r as usize));
            if let Some(f) = flag {
                if let (false, Some(spill)) = (*f, &mut self.spill) {
                    spill.mark_in_memory(s, c, r);
                }
                *f = true;
            }
        }
    }
}

impl BinaryOperator for StreamJoinOperator {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.changelog.as_ref().unwrap_or(&self.schema))
    }

    fn process_batch(&mut self, side: Side, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let s = side.index();
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let input = &self.inputs[s];
        let lag = input.time_lag_ns;
        let late: Vec<bool> = match input.time {
            Some(t) => times_ns(batch.column(t))?
                .iter()
                .map(|&t| self.watermark.is_some_and(|w| t < w.saturating_sub(lag)))
                .collect(),
            None => vec![false; n],
        };
        let expiry = expiry_of(input, &batch)?;
        let keys = self.keys_of(s, &batch)?;
        // SQL equality never matches NULL keys, so such rows can neither match nor be matched.
        let usable: Vec<bool> = (0..n)
            .map(|i| !late[i] && keys.iter().all(|k| !k.is_null(i)))
            .collect();
        if late.iter().any(|&l| l) {
            let rows = filter_record_batch(&batch, &BooleanArray::from(late.clone()))?;
            self.late_rows += rows.num_rows() as u64;
            self.late.push(rows);
        }
        let key_rows = match &self.converter {
            Some(c) => Some(c.convert_columns(&keys)?),
            None => None,
        };
        let hashes = self.hashes(&keys, n)?;
        let probed = self.probe(s, &batch, key_rows.as_ref(), &hashes, &usable)?;
        let fetched = probed.fetched.as_ref();
        let mut out = self.first_matches(1 - s, &probed.partners, fetched)?;
        self.mark_matched(1 - s, &probed.partners, fetched);
        if let Some(joined) = probed.joined {
            out.push(self.tagged(joined, true)?);
        }
        // Keep what a later row of the other input could still match.
        let keep: Vec<bool> = (0..n)
            .map(|i| usable[i] && self.watermark.is_none_or(|w| expiry[i] >= w))
            .collect();
        // A preserved row that matched nothing and cannot match later (a NULL key, or already
        // past its expiry) goes out padded now; late rows are late, not unmatched.
        // In a changelog, one that matched nothing goes out now, to be taken back if a match
        // comes.
        if self.inputs[s].keep_unmatched {
            let updating = self.changelog.is_some();
            let alone: Vec<u32> = (0..n)
                .filter(|&i| !late[i] && !probed.matched[i] && (updating || !keep[i]))
                .map(|i| i as u32)
                .collect();
            if !alone.is_empty() {
                let padded = self.padded(s, &batch, &alone)?;
                out.push(self.tagged(padded, true)?);
            }
        }
        let matched = self.inputs[s].keep_unmatched.then_some(probed.matched);
        let kept = keep.iter().filter(|&&k| k).count();
        if kept > 0 {
            let matched = matched.map(|m| {
                m.into_iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(m, _)| m)
                    .collect::<Vec<bool>>()
            });
            let (batch, keys, hashes, expiry) = if kept == n {
                (batch, key_rows, hashes, expiry)
            } else {
                let mask = BooleanArray::from(keep.clone());
                let pick = |v: &[i64]| -> Vec<i64> {
                    v.iter()
                        .zip(&keep)
                        .filter(|(_, k)| **k)
                        .map(|(e, _)| *e)
                        .collect()
                };
                let hashes: Vec<u64> = hashes
                    .iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(h, _)| *h)
                    .collect();
                let key_rows = match &self.converter {
                    Some(c) => {
                        let kept_keys = keys
                            .iter()
                            .map(|k| Ok(filter(k, &mask)?))
                            .collect::<Result<Vec<_>>>()?;
                        Some(c.convert_columns(&kept_keys)?)
                    }
                    None => None,
                };
                (
                    filter_record_batch(&batch, &mask)?,
                    key_rows,
                    hashes,
                    pick(&expiry),
                )
            };
            // Kept for long, a slice of a larger batch would hold the whole of it.
            let batch = crate::compact::compact(&batch)?;
            self.store(s, batch, keys, &hashes, &expiry, matched);
        }
        Ok(out)
    }

    fn on_watermark(&mut self, watermark_ns: i64) -> Result<Vec<RecordBatch>> {
        if self.watermark.is_some_and(|w| w >= watermark_ns) {
            return Ok(Vec::new());
        }
        self.watermark = Some(watermark_ns);
        let mut alone: Vec<(usize, RecordBatch, Vec<u32>)> = Vec::new();
        let changelog = self.changelog.is_some();
        for (s, stored) in self.stored.iter_mut().enumerate() {
            let mut dropped = 0;
            for slot in stored.chunks.iter_mut() {
                if slot.as_ref().is_some_and(|c| c.expiry < watermark_ns) {
                    if let Some(c) = slot.take() {
                        dropped += c.batch.num_rows();
                        stored.bytes -= chunk_bytes(&c.batch, c.keys.as_ref());
                        // Preserved rows that never joined go out now, padded: none can come.
                        // (A changelog emitted them on arrival.)
                        if let Some(flags) = c.matched.as_ref().filter(|_| !changelog) {
                            let rows: Vec<u32> = (0..flags.len())
                                .filter(|&i| !flags[i])
                                .map(|i| i as u32)
                                .collect();
                            if !rows.is_empty() {
                                alone.push((s, c.batch, rows));
                            }
                        }
                    }
                }
            }
            while matches!(stored.chunks.front(), Some(None)) {
                stored.chunks.pop_front();
                stored.first += 1;
            }
            stored.rows -= dropped;
            stored.compact_index();
        }
        alone
            .iter()
            .map(|(s, batch, rows)| self.padded(*s, batch, rows))
            .collect()
    }

    fn late_rows(&self) -> u64 {
        self.late_rows
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late)
    }

    fn limit_memory(&mut self, bytes: usize) {
        self.memory_limit = bytes;
        self.spill_from = bytes / 8;
    }

    fn state_rows(&self) -> usize {
        self.stored.iter().map(|s| s.rows).sum()
    }

    fn state_bytes(&self) -> usize {
        // Stored chunks, plus the index: a hash key and a (chunk, row) pair per entry.
        self.stored
            .iter()
            .map(|s| s.bytes + s.entries * 24 + s.index.len() * 32)
            .sum::<usize>()
            + self.spill.as_ref().map_or(0, JoinSpill::bytes)
    }

    /// Values: watermark, late rows, and how many of the batches are the left input's; the
    /// batches are the stored rows of the left input, then of the right. With a state store,
    /// the rows are staged there instead, once the state has passed `spill_from` (and from
    /// then on); the values go on with [`IN_STORE`], then each input's next chunk id.
    fn snapshot(&mut self) -> Result<OperatorState> {
        let past = self.state_bytes() > self.spill_from;
        if let Some(spill) = self.spill.as_mut().filter(|s| past || s.in_store()) {
            spill.use_store();
            let mut values = vec![
                self.watermark,
                Some(self.late_rows as i64),
                Some(0),
                Some(IN_STORE),
            ];
            for (s, stored) in self.stored.iter().enumerate() {
                spill.stage(s, stored)?;
                values.push(Some((stored.first + stored.chunks.len()) as i64));
            }
            return Ok(OperatorState {
                values,
                batches: Vec::new(),
            });
        }
        // A preserved input's rows carry whether each has joined, as a last column.
        let batches = |s: &Stored| -> Result<Vec<RecordBatch>> {
            s.chunks
                .iter()
                .flatten()
                .map(|c| match &c.matched {
                    None => Ok(c.batch.clone()),
                    Some(flags) => {
                        let mut fields: Vec<_> =
                            c.batch.schema().fields().iter().cloned().collect();
                        fields.push(Arc::new(Field::new(
                            "weir_matched",
                            DataType::Boolean,
                            false,
                        )));
                        let mut columns = c.batch.columns().to_vec();
                        columns.push(Arc::new(BooleanArray::from(flags.clone())));
                        Ok(RecordBatch::try_new(
                            Arc::new(Schema::new(fields)),
                            columns,
                        )?)
                    }
                })
                .collect()
        };
        let left = batches(&self.stored[0])?;
        let right = batches(&self.stored[1])?;
        Ok(OperatorState {
            values: vec![
                self.watermark,
                Some(self.late_rows as i64),
                Some(left.len() as i64),
            ],
            batches: left.into_iter().chain(right).collect(),
        })
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        self.watermark = state.value(0)?;
        self.late_rows = state.value(1)?.unwrap_or(0) as u64;
        let left = state.value(2)?.unwrap_or(0).max(0) as usize;
        self.stored = Default::default();
        if state.values.get(3) == Some(&Some(IN_STORE)) {
            let Some(spill) = &mut self.spill else {
                return Err(Error::Corrupt(
                    "a join's checkpoint is in a state store it does not have".into(),
                ));
            };
            for (s, stored) in self.stored.iter_mut().enumerate() {
                let next = state.value(4 + s)?.unwrap_or(0).max(0) as usize;
                spill.restored(s, stored, next);
            }
            return Ok(());
        }
        // From a checkpoint file written before the store: the next checkpoint stores all.
        for (i, batch) in state.batches.into_iter().enumerate() {
            self.store_restored(usize::from(i >= left), batch)?;
        }
        Ok(())
    }

    /// Stored rows go to the state store when they may be kept for good: in a join without a
    /// time bound or TTL, on keys (their rows are read back by key).
    fn attach_store(&mut self, tables: &mut dyn TableSource, name: &str) -> Result<bool> {
        if !self.spills() {
            return Ok(false);
        }
        let fields = self.schema.fields();
        let left_width = fields.len() - self.right_width;
        self.spill = Some(JoinSpill::attach(
            tables,
            name,
            [&fields[..left_width], &fields[left_width..]],
            [self.inputs[0].keep_unmatched, self.inputs[1].keep_unmatched],
        )?);
        Ok(true)
    }

    fn evict(&mut self) {
        if let Some(spill) = &mut self.spill {
            for (s, stored) in self.stored.iter_mut().enumerate() {
                spill.evict(s, stored);
            }
        }
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
            let Some(expiry) = i.expiry_column else {
                return "never".to_string();
            };
            let column = self
                .schema
                .fields()
                .get(expiry + if s == 0 { 0 } else { left_width })
                .map_or("?", |f| f.name().as_str());
            match i.expiry_offset_ns {
                0 => column.to_string(),
                n if n < 0 => format!("{column} - {}", format_duration_ns(-n)),
                n => format!("{column} + {}", format_duration_ns(n)),
            }
        };
        let filter = self
            .filter
            .as_ref()
            .map(|f| format!(" filter {f}"))
            .unwrap_or_default();
        let kind = match (self.inputs[0].keep_unmatched, self.inputs[1].keep_unmatched) {
            (false, false) => "inner",
            (true, false) => "left outer",
            (false, true) => "right outer",
            (true, true) => "full outer",
        };
        let output = if self.changelog.is_some() {
            "; output: a changelog (an unmatched row goes out with NULLs and is taken back when its first match comes)"
        } else {
            ""
        };
        if self.inputs.iter().all(|i| i.expiry_column.is_none()) {
            let beyond = if self.spills() {
                "spills to disk past a quarter of the memory limit"
            } else {
                "within the view's memory limit"
            };
            return format!(
                "StreamJoin: {kind} on [{}]{filter}; state: every row of both inputs (no time bound), {beyond}{output}",
                on.join(", ")
            );
        }
        let ttl = if self.ttl_ns.is_some() {
            " (state_ttl: no time bound, so rows further apart may not match)"
        } else {
            ""
        };
        format!(
            "StreamJoin: {kind} on [{}]{filter}; state: left rows until the watermark passes {}, right rows until it passes {}{ttl}{output}",
            on.join(", "),
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

    pub(super) fn schema(prefix: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(format!("{prefix}k"), DataType::Int64, true),
            Field::new(
                format!("{prefix}t"),
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
        ]))
    }

    pub(super) fn batch(s: &SchemaRef, rows: &[(Option<i64>, i64)]) -> RecordBatch {
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
            time: Some(1),
            time_lag_ns: 0,
            expiry_column: Some(1),
            expiry_offset_ns: 0,
            keep_unmatched: false,
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
        // State goes a batch at a time, once every row of the batch has expired.
        op.process_batch(Side::Left, batch(&l, &[(Some(1), 10)]))
            .expect("left");
        op.process_batch(Side::Left, batch(&l, &[(Some(1), 20)]))
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

    /// A FULL join of windows: unmatched rows go out padded when their window closes, NULL keys
    /// at once, and a checkpoint keeps which stored rows have joined.
    #[test]
    fn outer_joins_emit_unmatched_rows_when_they_can_no_longer_match() {
        let nullable = |prefix: &str| {
            Arc::new(Schema::new(vec![
                Field::new(format!("{prefix}k"), DataType::Int64, true),
                Field::new(
                    format!("{prefix}t"),
                    DataType::Timestamp(TimeUnit::Nanosecond, None),
                    true,
                ),
            ]))
        };
        let (l, r) = (nullable("l"), nullable("r"));
        let output = Arc::new(Schema::new(
            l.fields()
                .iter()
                .chain(r.fields())
                .cloned()
                .collect::<Vec<_>>(),
        ));
        let make = || {
            let input = |name: &str| JoinInput {
                keys: vec![
                    Arc::new(Column::new(&format!("{name}k"), 0)) as _,
                    Arc::new(Column::new(&format!("{name}t"), 1)) as _,
                ],
                time: Some(1),
                time_lag_ns: 0,
                expiry_column: Some(1),
                expiry_offset_ns: 0,
                keep_unmatched: true,
            };
            StreamJoinOperator::try_new(input("l"), input("r"), &l, None, Arc::clone(&output))
                .expect("join")
        };
        let cells = |out: &[RecordBatch]| {
            let mut v = Vec::new();
            for b in out {
                for i in 0..b.num_rows() {
                    let cell = |c: usize| {
                        let a = b.column(c);
                        if a.is_null(i) {
                            None
                        } else {
                            Some(
                                cast(a, &DataType::Int64)
                                    .expect("cast")
                                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                                    .value(i),
                            )
                        }
                    };
                    v.push((cell(0), cell(1), cell(2), cell(3)));
                }
            }
            v.sort_unstable();
            v
        };
        let mut op = make();
        let mut out = op
            .process_batch(
                Side::Left,
                batch(&l, &[(Some(1), 10), (Some(2), 10), (None, 10)]),
            )
            .expect("left");
        out.extend(
            op.process_batch(Side::Right, batch(&r, &[(Some(1), 10), (Some(3), 10)]))
                .expect("right"),
        );
        assert_eq!(
            cells(&out),
            vec![
                (None, Some(10), None, None),
                (Some(1), Some(10), Some(1), Some(10))
            ]
        );
        // Restored from a checkpoint, the operator still knows rows 1 joined and 2 and 3 did not.
        let state = op.snapshot().expect("snapshot");
        let mut op = make();
        op.restore(state).expect("restore");
        let closed = op.on_watermark(11).expect("watermark");
        assert_eq!(
            cells(&closed),
            vec![
                (None, None, Some(3), Some(10)),
                (Some(2), Some(10), None, None)
            ]
        );
        assert_eq!(op.stored_rows(), [0, 0]);
        assert!(op.explain().starts_with("StreamJoin: full outer"));
    }

    /// A LEFT JOIN on key without a time bound, with a TTL of `ttl` on column t if given.
    fn unbounded_left_join(ttl: Option<i64>) -> (StreamJoinOperator, SchemaRef, SchemaRef) {
        let (l, r) = (schema("l"), schema("r"));
        // The right input's columns are NULL where a left row matched nothing.
        let output = Arc::new(Schema::new(
            l.fields()
                .iter()
                .cloned()
                .chain(
                    r.fields()
                        .iter()
                        .map(|f| Arc::new(f.as_ref().clone().with_nullable(true))),
                )
                .collect::<Vec<_>>(),
        ));
        let input = |name: &str, keep_unmatched| JoinInput {
            keys: vec![Arc::new(Column::new(&format!("{name}k"), 0)) as _],
            time: None,
            time_lag_ns: 0,
            expiry_column: ttl.map(|_| 1),
            expiry_offset_ns: ttl.unwrap_or(0),
            keep_unmatched,
        };
        let op = StreamJoinOperator::try_new(input("l", true), input("r", false), &l, None, output)
            .expect("join")
            .with_state_ttl(ttl);
        (op, l, r)
    }

    /// (left key, right key or -1, inserted) of a changelog.
    fn changes(out: &[RecordBatch]) -> Vec<(i64, i64, bool)> {
        out.iter()
            .flat_map(|b| {
                let int = |c: usize| {
                    b.column(c)
                        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                        .clone()
                };
                let (lk, rk, ins) = (int(0), int(2), b.column(4).as_boolean().clone());
                (0..b.num_rows()).map(move |i| {
                    (
                        if lk.is_null(i) { -1 } else { lk.value(i) },
                        if rk.is_null(i) { -1 } else { rk.value(i) },
                        ins.value(i),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn an_unbounded_outer_join_takes_an_unmatched_row_back_on_its_first_match() {
        let (mut op, l, r) = unbounded_left_join(None);
        assert_eq!(
            op.schema().fields().last().map(|f| f.name().as_str()),
            Some(INSERTED)
        );
        let out = op
            .process_batch(Side::Left, batch(&l, &[(Some(1), 10), (None, 10)]))
            .expect("left");
        // A NULL key matches nothing, ever: its row goes out for good.
        assert_eq!(changes(&out), vec![(1, -1, true), (-1, -1, true)]);
        let out = op
            .process_batch(Side::Right, batch(&r, &[(Some(1), 20), (Some(1), 30)]))
            .expect("right");
        assert_eq!(
            changes(&out),
            vec![(1, -1, false), (1, 1, true), (1, 1, true)]
        );
        // A watermark does not emit the unmatched rows again.
        assert!(op.on_watermark(1_000).expect("watermark").is_empty());
        let out = op
            .process_batch(Side::Right, batch(&r, &[(Some(1), 40)]))
            .expect("right");
        assert_eq!(changes(&out), vec![(1, 1, true)]);
    }

    #[test]
    fn a_state_ttl_stops_old_rows_matching_and_frees_them() {
        let (mut op, l, r) = unbounded_left_join(Some(100));
        op.process_batch(Side::Left, batch(&l, &[(Some(1), 10), (Some(2), 500)]))
            .expect("left");
        op.on_watermark(200).expect("watermark");
        // Key 1's row (10 + 100 < 200) no longer matches, even while its chunk is kept.
        let out = op
            .process_batch(Side::Right, batch(&r, &[(Some(1), 210), (Some(2), 220)]))
            .expect("right");
        assert_eq!(changes(&out), vec![(2, -1, false), (2, 2, true)]);
        op.on_watermark(700).expect("watermark");
        assert_eq!(op.stored_rows(), [0, 0]);
    }
}
