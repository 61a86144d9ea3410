//! Top-N per partition over rows that only append (`ROW_NUMBER() OVER (PARTITION BY k ORDER BY
//! x) <= N`), and so deduplication (`... = 1`): keeps each partition's best N rows and emits
//! upserts of the ranks whose row changed. With `RANK()` or `DENSE_RANK()`, ties share a rank
//! and a partition keeps every row ranked up to N, emitted as a changelog.

mod ends;

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt32Array, UInt64Array};
use datafusion::arrow::compute::{SortOptions, cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use self::ends::EndIndex;
use super::{INSERTED, Operator, TableSource};
use crate::checkpoint::OperatorState;
use crate::state_store::{KeyedSpill, put_bytes, take_array, take_bytes};
use crate::{Error, Result};

/// One ORDER BY expression of a Top-N.
#[derive(Debug, Clone)]
pub struct TopNOrder {
    /// The expression, over the input.
    pub expr: Arc<dyn PhysicalExpr>,
    /// Descending and where NULLs go.
    pub options: SortOptions,
}

/// A partition key column that ends the partition: a window's end (or its start, with the
/// window's size as `offset_ns`). Once the watermark passes it, the partition's rows are
/// final: its state goes, and rows for it that still come are late.
#[derive(Debug, Clone, Copy)]
pub struct TopNExpiry {
    /// Which of the PARTITION BY expressions (a timestamp).
    pub partition_index: usize,
    /// Added to its value to get the time the partition is complete.
    pub offset_ns: i64,
}

/// The rows kept for one partition, best first, and when the partition is complete.
#[derive(Debug, Default)]
struct Kept {
    end: Option<i64>,
    rows: Vec<Ranked>,
}

/// A kept row: its sort key (byte-comparable), its values, and a number that tells it apart
/// from rows of equal values within the operator.
#[derive(Debug)]
struct Ranked {
    sort: OwnedRow,
    row: OwnedRow,
    id: u64,
}

impl Ranked {
    fn bytes(&self) -> usize {
        self.sort.as_ref().len() + self.row.as_ref().len() + 64
    }
}

/// Which ranking function numbers the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankKind {
    /// `ROW_NUMBER()`: 1, 2, 3, ...; ties in arrival order. Output: upserts by partition and
    /// rank.
    RowNumber,
    /// `RANK()`: ties share a rank, and the next rank skips (1, 1, 3). Output: a changelog.
    Rank,
    /// `DENSE_RANK()`: ties share a rank, and the next rank follows (1, 1, 2). Output: a
    /// changelog.
    DenseRank,
}

/// The rank of every kept row of a partition, in order, by `kind` (not for ROW_NUMBER).
fn ranks_of(kind: RankKind, rows: &[Ranked]) -> Vec<u64> {
    let mut ranks = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let rank = match ranks.last() {
            Some(&previous) if rows[i - 1].sort == r.sort => previous,
            Some(&previous) if kind == RankKind::DenseRank => previous + 1,
            _ => i as u64 + 1,
        };
        ranks.push(rank);
    }
    ranks
}

/// A partition's rows and ranks before a batch changed it: (id, rank, row).
type Before = Vec<(u64, u64, OwnedRow)>;

/// Keeps the best `limit` rows per partition, ranked by `order`, ties in arrival order (as
/// Flink's append-only Top-N does). Input rows never leave (the input only appends), so every
/// partition's ranks 1..=min(rows, limit) stay filled and the output is upserts keyed by
/// (partition, rank): the rows at the ranks an arrival moved, with their new rank.
#[derive(Debug)]
pub struct TopNOperator {
    partition: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<TopNOrder>,
    limit: usize,
    input: SchemaRef,
    schema: SchemaRef,
    rows: RowConverter,
    sort: RowConverter,
    keys: Option<RowConverter>,
    kind: RankKind,
    next_id: u64,
    /// Kept rows per partition key (its row-format bytes; empty without PARTITION BY).
    partitions: HashMap<Box<[u8]>, Kept>,
    bytes: usize,
    /// Rows kept over all partitions.
    kept_rows: usize,
    expiry: Option<TopNExpiry>,
    watermark: Option<i64>,
    late_rows: u64,
    late: Vec<RecordBatch>,
    /// A state TTL on a deduplication (see [`TopNOperator::with_state_ttl`]).
    ttl: Option<TopNTtl>,
    /// Partitions beyond memory, in the query's state store (see [`Operator::attach_store`]).
    spill: Option<KeyedSpill>,
    /// When the stored partitions of a per-window Top-N end.
    ends: Option<EndIndex>,
}

/// The third value of a checkpoint whose partitions are in the state store.
const IN_STORE: i64 = 1;

/// A partition's kept rows as the state store keeps them: how many, then each row's sort key,
/// values (both row-format bytes, after their lengths) and id.
fn encode_kept(kept: &Kept) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend((kept.rows.len() as u32).to_le_bytes());
    for r in &kept.rows {
        put_bytes(&mut out, r.sort.row().data());
        put_bytes(&mut out, r.row.row().data());
        out.extend(r.id.to_le_bytes());
    }
    out
}

/// A deduplication forgets a key once the watermark passes its kept row's time plus `ttl_ns`.
#[derive(Debug, Clone, Copy)]
struct TopNTtl {
    /// The input's event time column.
    time: usize,
    ttl_ns: i64,
    /// The watermark from which forgotten keys are next swept from memory.
    next_sweep: i64,
}

/// The times of a timestamp column in nanoseconds plus `offset_ns`; NULL as never (`i64::MAX`).
fn times_plus(column: &ArrayRef, offset_ns: i64) -> Result<Vec<i64>> {
    let ns = cast(
        column,
        &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, None),
    )?;
    let ns = ns.as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>();
    Ok((0..ns.len())
        .map(|i| {
            if ns.is_null(i) {
                i64::MAX
            } else {
                ns.value(i).saturating_add(offset_ns)
            }
        })
        .collect())
}

/// How a Top-N's ORDER BY reads in EXPLAIN.
pub(super) fn order_text(order: &[TopNOrder]) -> String {
    order
        .iter()
        .map(|o| {
            format!(
                "{}{}",
                o.expr,
                if o.options.descending { " DESC" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn evaluate(
    exprs: &[&Arc<dyn PhysicalExpr>],
    batch: &RecordBatch,
) -> Result<Vec<ArrayRef>> {
    exprs
        .iter()
        .map(|e| Ok(e.evaluate(batch)?.into_array(batch.num_rows())?))
        .collect()
}

impl TopNOperator {
    /// A Top-`limit` of batches of `input` per `partition`, by `order`; the output is the input
    /// columns and the rank, a column named `rank_name` of type UInt64 (ROW_NUMBER's).
    pub fn try_new(
        input: SchemaRef,
        partition: Vec<Arc<dyn PhysicalExpr>>,
        order: Vec<TopNOrder>,
        limit: usize,
        rank_name: &str,
    ) -> Result<Self> {
        if limit == 0 {
            return Err(Error::InvalidArgument(
                "a Top-N keeps at least one row".into(),
            ));
        }
        let fields: Vec<SortField> = input
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let sort_fields = order
            .iter()
            .map(|o| {
                Ok(SortField::new_with_options(
                    o.expr.data_type(&input)?,
                    o.options,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let key_fields = partition
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(&input)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut out: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        out.push(Field::new(rank_name, DataType::UInt64, false));
        Ok(Self {
            partition,
            order,
            limit,
            kind: RankKind::RowNumber,
            next_id: 0,
            schema: Arc::new(Schema::new(out)),
            input,
            rows: RowConverter::new(fields)?,
            sort: RowConverter::new(sort_fields)?,
            keys: if key_fields.is_empty() {
                None
            } else {
                Some(RowConverter::new(key_fields)?)
            },
            partitions: HashMap::new(),
            bytes: 0,
            kept_rows: 0,
            expiry: None,
            watermark: None,
            late_rows: 0,
            late: Vec::new(),
            ttl: None,
            spill: None,
            ends: None,
        })
    }

    /// For a deduplication (one row per key, ROW_NUMBER): forgets a key once the watermark
    /// passes the event time (input column `time`) of the row it keeps plus `ttl_ns` (Flink's
    /// `table.exec.state.ttl`, counted from the state's last write, in event time). The key's row
    /// stays in the view; a later row of the key is then kept as if it were the first.
    pub fn with_state_ttl(mut self, time: usize, ttl_ns: i64) -> Result<Self> {
        if self.limit != 1 || self.kind != RankKind::RowNumber || self.expiry.is_some() {
            return Err(Error::InvalidArgument(
                "a state TTL applies to a deduplication without a window".into(),
            ));
        }
        self.ttl = Some(TopNTtl {
            time,
            ttl_ns,
            next_sweep: i64::MIN,
        });
        Ok(self)
    }

    /// Per row of `batch`, when its key's state would expire if the row were kept.
    fn ttl_ends(&self, batch: &RecordBatch) -> Result<Option<Vec<i64>>> {
        let Some(ttl) = self.ttl else {
            return Ok(None);
        };
        Ok(Some(times_plus(batch.column(ttl.time), ttl.ttl_ns)?))
    }

    /// Numbers rows by `kind`. With RANK or DENSE_RANK the output is a changelog: one more,
    /// last, column ([`INSERTED`]) says whether a row (with its rank) is inserted or taken back.
    pub fn with_rank(mut self, kind: RankKind) -> Self {
        if kind != RankKind::RowNumber && self.kind == RankKind::RowNumber {
            let mut fields: Vec<Field> = self
                .schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new(INSERTED, DataType::Boolean, false));
            self.schema = Arc::new(Schema::new(fields));
        }
        self.kind = kind;
        self
    }

    /// Frees each partition once the watermark passes `expiry` (a window's end): its rows are
    /// final then, and rows for it that come later are late.
    pub fn with_expiry(mut self, expiry: TopNExpiry) -> Self {
        self.expiry = Some(expiry);
        self
    }

    /// When each row's partition is complete, if partitions end.
    fn ends(&self, batch: &RecordBatch) -> Result<Option<Vec<i64>>> {
        let Some(expiry) = self.expiry else {
            return Ok(None);
        };
        let column = self.partition[expiry.partition_index]
            .evaluate(batch)?
            .into_array(batch.num_rows())?;
        Ok(Some(times_plus(&column, expiry.offset_ns)?))
    }

    /// Ranks the rows of `batch`; returns, per partition touched, the first rank that moved,
    /// and (for RANK and DENSE_RANK) the partition's rows and ranks before the batch.
    fn rank(&mut self, batch: &RecordBatch) -> Result<HashMap<Box<[u8]>, (usize, Before)>> {
        let n = batch.num_rows();
        let order: Vec<&Arc<dyn PhysicalExpr>> = self.order.iter().map(|o| &o.expr).collect();
        let sort = self.sort.convert_columns(&evaluate(&order, batch)?)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        let keys = match &self.keys {
            Some(k) => {
                let partition: Vec<&Arc<dyn PhysicalExpr>> = self.partition.iter().collect();
                Some(k.convert_columns(&evaluate(&partition, batch)?)?)
            }
            None => None,
        };
        let ends = self.ends(batch)?;
        let ttl_ends = self.ttl_ends(batch)?;
        let mut late = Vec::new();
        let mut moved: HashMap<Box<[u8]>, (usize, Before)> = HashMap::new();
        for i in 0..n {
            let end = ends.as_ref().map(|e| e[i]);
            if let (Some(end), Some(w)) = (end, self.watermark) {
                if end <= w {
                    late.push(i as u32);
                    continue;
                }
            }
            // Keys are copied only for a partition's first row, not for every row.
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(i).data());
            self.fetch(key)?;
            if !self.partitions.contains_key(key) {
                self.partitions.insert(key.into(), Kept::default());
                if let (Some(ends), Some(end)) = (&mut self.ends, end) {
                    ends.made(end, key);
                }
            }
            let Some(partition) = self.partitions.get_mut(key) else {
                continue;
            };
            match &ttl_ends {
                // A key the watermark has passed is forgotten: this row starts it again.
                Some(_) => {
                    if partition
                        .end
                        .is_some_and(|e| self.watermark.is_some_and(|w| e <= w))
                    {
                        self.kept_rows -= partition.rows.len();
                        self.bytes -= partition.rows.drain(..).map(|r| r.bytes()).sum::<usize>();
                        partition.end = None;
                    }
                }
                None => partition.end = end,
            }
            let kept = &mut partition.rows;
            let s = sort.row(i);
            // After every row that sorts before or equal to it: ties keep arrival order.
            let at = kept.partition_point(|r| r.sort.row() <= s);
            let rank = match self.kind {
                RankKind::RowNumber => at + 1,
                RankKind::Rank => kept.partition_point(|r| r.sort.row() < s) + 1,
                RankKind::DenseRank => {
                    let better = kept.partition_point(|r| r.sort.row() < s);
                    ranks_of(self.kind, &kept[..better])
                        .last()
                        .map_or(1, |&r| r as usize + 1)
                }
            };
            if rank > self.limit {
                continue;
            }
            if self.kind != RankKind::RowNumber && !moved.contains_key(key) {
                let ranks = ranks_of(self.kind, kept);
                let before = kept
                    .iter()
                    .zip(ranks)
                    .map(|(r, rank)| (r.id, rank, r.row.clone()))
                    .collect();
                moved.insert(key.into(), (at, before));
            }
            let ranked = Ranked {
                sort: s.owned(),
                row: rows.row(i).owned(),
                id: self.next_id,
            };
            self.next_id += 1;
            self.bytes += ranked.bytes();
            self.kept_rows += 1;
            kept.insert(at, ranked);
            // Under a TTL, the key's state was written now: it lives from this row's time.
            if let Some(ttl_ends) = &ttl_ends {
                partition.end = Some(partition.end.unwrap_or(i64::MIN).max(ttl_ends[i]));
            }
            let keep = match self.kind {
                RankKind::RowNumber => self.limit,
                _ => ranks_of(self.kind, kept)
                    .iter()
                    .position(|&r| r as usize > self.limit)
                    .unwrap_or(kept.len()),
            };
            for out in kept.drain(keep.min(kept.len())..) {
                self.bytes -= out.bytes();
                self.kept_rows -= 1;
            }
            match moved.get_mut(key) {
                Some((first, _)) => *first = (*first).min(at),
                None => {
                    moved.insert(key.into(), (at, Vec::new()));
                }
            }
        }
        if !late.is_empty() {
            self.late_rows += late.len() as u64;
            let rows = UInt32Array::from(late);
            let columns = batch
                .columns()
                .iter()
                .map(|c| Ok(take(c, &rows, None)?))
                .collect::<Result<Vec<_>>>()?;
            self.late
                .push(RecordBatch::try_new(batch.schema(), columns)?);
        }
        Ok(moved)
    }
}

impl TopNOperator {
    /// Whether partitions can go to a state store: those of a Top-N with PARTITION BY, over a
    /// whole stream or per window (not under a state TTL, which forgets keys by memory).
    fn spills(&self) -> bool {
        self.keys.is_some() && self.ttl.is_none()
    }

    /// Reads partition `key` back from the state store into memory, if it left memory.
    fn fetch(&mut self, key: &[u8]) -> Result<()> {
        let Some(spill) = &self.spill else {
            return Ok(());
        };
        if self.partitions.contains_key(key) {
            return Ok(());
        }
        let Some(value) = spill.fetch(key)? else {
            return Ok(());
        };
        let mut input = value.as_slice();
        let n = u32::from_le_bytes(take_array(&mut input)?);
        let mut kept = Kept::default();
        for _ in 0..n {
            let sort = self.sort.parser().parse(take_bytes(&mut input)?).owned();
            let row = self.rows.parser().parse(take_bytes(&mut input)?).owned();
            let id = u64::from_le_bytes(take_array(&mut input)?);
            let ranked = Ranked { sort, row, id };
            self.bytes += ranked.bytes();
            self.kept_rows += 1;
            kept.rows.push(ranked);
        }
        self.partitions.insert(key.into(), kept);
        Ok(())
    }

    /// A checkpoint's part in the state store: stages the partitions changed since the last
    /// one, which are then clean.
    fn stage_changes(&mut self) -> OperatorState {
        if let Some(spill) = &mut self.spill {
            let partitions = &self.partitions;
            spill.stage(|key| partitions.get(key).map(encode_kept));
        }
        if let Some(ends) = &mut self.ends {
            ends.stage();
        }
        OperatorState {
            values: vec![
                self.watermark,
                Some(self.late_rows as i64),
                Some(IN_STORE),
                Some(self.next_id as i64),
            ],
            batches: Vec::new(),
        }
    }

    /// For RANK and DENSE_RANK: per partition touched, the rows whose rank changed or that left
    /// taken back with their old rank, then the rows whose rank changed or that came inserted
    /// with their new one.
    fn changes(&self, moved: HashMap<Box<[u8]>, (usize, Before)>) -> Result<Vec<RecordBatch>> {
        let mut taken_back: Vec<(OwnedRow, u64)> = Vec::new();
        let mut inserted: Vec<(&OwnedRow, u64)> = Vec::new();
        for (key, (_, before)) in &moved {
            let kept = self.partitions.get(key).map_or(&[][..], |k| &k.rows[..]);
            let now: HashMap<u64, (u64, &OwnedRow)> = kept
                .iter()
                .zip(ranks_of(self.kind, kept))
                .map(|(r, rank)| (r.id, (rank, &r.row)))
                .collect();
            let mut was: HashMap<u64, u64> = HashMap::with_capacity(before.len());
            for (id, rank, row) in before {
                was.insert(*id, *rank);
                if now.get(id).is_none_or(|&(r, _)| r != *rank) {
                    taken_back.push((row.clone(), *rank));
                }
            }
            for (id, (rank, row)) in now {
                if was.get(&id) != Some(&rank) {
                    inserted.push((row, rank));
                }
            }
        }
        let mut out = Vec::new();
        let taken_back: Vec<(&OwnedRow, u64)> = taken_back.iter().map(|(r, k)| (r, *k)).collect();
        for (rows, flag) in [(taken_back, false), (inserted, true)] {
            if rows.is_empty() {
                continue;
            }
            let mut columns = self.rows.convert_rows(rows.iter().map(|(r, _)| r.row()))?;
            columns.push(Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|&(_, rank)| rank),
            )));
            columns.push(Arc::new(datafusion::arrow::array::BooleanArray::from(
                vec![flag; rows.len()],
            )));
            out.push(RecordBatch::try_new(Arc::clone(&self.schema), columns)?);
        }
        Ok(out)
    }
}

impl Operator for TopNOperator {
    fn name(&self) -> &'static str {
        "TopN"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let moved = self.rank(&batch)?;
        if let Some(spill) = &mut self.spill {
            moved.keys().for_each(|k| spill.changed(k));
        }
        if self.kind != RankKind::RowNumber {
            return self.changes(moved);
        }
        let mut rows = Vec::new();
        let mut ranks = Vec::new();
        for (key, (first, _)) in &moved {
            let Some(kept) = self.partitions.get(key) else {
                continue;
            };
            for (r, ranked) in kept.rows.iter().enumerate().skip(*first) {
                rows.push(ranked.row.row());
                ranks.push(r as u64 + 1);
            }
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut columns = self.rows.convert_rows(rows)?;
        columns.push(Arc::new(UInt64Array::from(ranks)));
        Ok(vec![RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?])
    }

    fn explain(&self) -> String {
        let order = order_text(&self.order);
        let partition: Vec<String> = self.partition.iter().map(|e| e.to_string()).collect();
        let state = match self.expiry {
            Some(e) => format!(
                "those rows until the watermark passes {}{}{}",
                partition[e.partition_index],
                if e.offset_ns > 0 {
                    format!(" + {}", super::tumble::format_duration_ns(e.offset_ns))
                } else {
                    String::new()
                },
                if self.spills() {
                    " (spills to disk past a quarter of the memory limit)"
                } else {
                    ""
                }
            ),
            None => match self.ttl {
                Some(t) => format!(
                    "that row until the watermark passes its {} + {} (state_ttl: the key is then forgotten, its row stays, and a later row is kept as its first)",
                    self.input.field(t.time).name(),
                    super::tumble::format_duration_ns(t.ttl_ns)
                ),
                None if self.spills() => {
                    "those rows (no time bound; spills to disk past a quarter of the memory limit)"
                        .into()
                }
                None => "those rows (no time bound)".into(),
            },
        };
        format!(
            "TopN: {} {} per [{}] by [{}], {}; state: {state}, {}",
            self.limit,
            if self.kind == RankKind::RowNumber {
                "rows"
            } else {
                "ranks"
            },
            partition.join(", "),
            order,
            match self.kind {
                RankKind::RowNumber => "ties in arrival order",
                _ => "ties share a rank",
            },
            match self.kind {
                RankKind::RowNumber => "upserts by partition and rank",
                _ => "a changelog of rows and their ranks",
            }
        )
    }

    fn state_rows(&self) -> usize {
        self.kept_rows
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    /// The kept rows, partition by partition in rank order; restoring ranks them again in that
    /// order, which rebuilds the same ranks (ties keep the order they are restored in).
    fn snapshot(&mut self) -> Result<OperatorState> {
        if self.spill.is_some() {
            return Ok(self.stage_changes());
        }
        let rows: Vec<_> = self
            .partitions
            .values()
            .flat_map(|kept| kept.rows.iter().map(|r| r.row.row()))
            .collect();
        let values = vec![self.watermark, Some(self.late_rows as i64)];
        if rows.is_empty() {
            return Ok(OperatorState {
                values,
                batches: Vec::new(),
            });
        }
        let columns = self.rows.convert_rows(rows)?;
        Ok(OperatorState {
            values,
            batches: vec![RecordBatch::try_new(Arc::clone(&self.input), columns)?],
        })
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        // Rows are ranked again before the watermark is set: they were kept, so not late.
        let watermark = state.values.first().copied().flatten();
        self.late_rows = state.value(1)?.unwrap_or(0) as u64;
        if state.values.get(2) == Some(&Some(IN_STORE)) {
            let Some(spill) = &mut self.spill else {
                return Err(Error::Corrupt(
                    "a Top-N's checkpoint is in a state store it does not have".into(),
                ));
            };
            spill.restored();
            if let Some(ends) = &mut self.ends {
                ends.restored(watermark);
            }
            self.next_id = state.value(3)?.unwrap_or(0) as u64;
            self.watermark = watermark;
            return Ok(());
        }
        for batch in state.batches {
            let columns = batch
                .columns()
                .iter()
                .zip(self.input.fields())
                .map(|(c, f)| Ok(cast(c, f.data_type())?))
                .collect::<Result<Vec<_>>>()?;
            let batch = RecordBatch::try_new(Arc::clone(&self.input), columns)?;
            self.rank(&batch)?;
        }
        self.watermark = watermark;
        // From a checkpoint file written before the store: the next checkpoint stores all.
        if let Some(spill) = &mut self.spill {
            self.partitions.keys().for_each(|k| spill.changed(k));
        }
        Ok(())
    }

    fn attach_store(&mut self, tables: &mut dyn TableSource, name: &str) -> Result<bool> {
        if !self.spills() {
            return Ok(false);
        }
        self.spill = Some(KeyedSpill::new(tables.table(name)?));
        if self.expiry.is_some() {
            self.ends = Some(EndIndex::new(tables.table(&format!("{name}-ends"))?));
        }
        Ok(true)
    }

    fn evict(&mut self) {
        let Some(spill) = &mut self.spill else {
            return;
        };
        let clean = spill.evictable(self.partitions.keys());
        for key in clean {
            if let Some(kept) = self.partitions.remove(&key) {
                self.kept_rows -= kept.rows.len();
                self.bytes -= kept.rows.iter().map(Ranked::bytes).sum::<usize>();
            }
        }
    }

    fn on_watermark(&mut self, watermark_ns: i64) -> Result<Vec<RecordBatch>> {
        if self.watermark.is_some_and(|w| w >= watermark_ns) {
            return Ok(Vec::new());
        }
        self.watermark = Some(watermark_ns);
        // Forgotten keys (under a TTL) go from memory a sweep at a time, every quarter TTL.
        let sweep = match &mut self.ttl {
            Some(ttl) if watermark_ns >= ttl.next_sweep => {
                ttl.next_sweep = watermark_ns.saturating_add(ttl.ttl_ns / 4);
                true
            }
            _ => false,
        };
        if self.expiry.is_some() || sweep {
            let (mut freed, mut rows) = (0, 0);
            let (spill, ends) = (&mut self.spill, &mut self.ends);
            self.partitions.retain(|key, kept| {
                let done = kept.end.filter(|&end| end <= watermark_ns);
                if let Some(end) = done {
                    freed += kept.rows.iter().map(Ranked::bytes).sum::<usize>();
                    rows += kept.rows.len();
                    // A per-window partition's rows are final: it leaves the store too.
                    if let (Some(spill), Some(ends)) = (spill.as_mut(), ends.as_mut()) {
                        spill.removed(key.clone());
                        ends.expired(end, key);
                    }
                }
                done.is_none()
            });
            self.bytes -= freed;
            self.kept_rows -= rows;
            // Partitions that left memory end in the store.
            if let (Some(spill), Some(ends)) = (&mut self.spill, &mut self.ends)
                && spill.is_partial()
            {
                ends.expire(watermark_ns, |key| {
                    spill.removed(key.into());
                    Ok(())
                })?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::physical_expr::expressions::Column;
    use proptest::prelude::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
            Field::new("id", DataType::Int64, false),
        ]))
    }

    fn top(limit: usize, descending: bool) -> TopNOperator {
        TopNOperator::try_new(
            schema(),
            vec![Arc::new(Column::new("k", 0))],
            vec![TopNOrder {
                expr: Arc::new(Column::new("v", 1)),
                options: SortOptions {
                    descending,
                    nulls_first: false,
                },
            }],
            limit,
            "rn",
        )
        .expect("top-n")
    }

    fn batch(rows: &[(i64, i64, i64)]) -> RecordBatch {
        let col = |f: fn(&(i64, i64, i64)) -> i64| {
            Arc::new(Int64Array::from_iter_values(rows.iter().map(f))) as ArrayRef
        };
        RecordBatch::try_new(schema(), vec![col(|r| r.0), col(|r| r.1), col(|r| r.2)])
            .expect("batch")
    }

    /// Applies upserts keyed by (k, rank) to `table`.
    fn apply(table: &mut HashMap<(i64, u64), (i64, i64)>, out: &[RecordBatch]) {
        for b in out {
            let int = |c: usize| b.column(c).as_primitive::<Int64Type>().clone();
            let (k, v, id) = (int(0), int(1), int(2));
            let rank = b
                .column(3)
                .as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
            for i in 0..b.num_rows() {
                assert!(rank.is_valid(i));
                table.insert((k.value(i), rank.value(i)), (v.value(i), id.value(i)));
            }
        }
    }

    /// The same Top-N in batch: per key, rows by value (then arrival), the first `limit`.
    fn batch_top(
        rows: &[(i64, i64, i64)],
        limit: usize,
        descending: bool,
    ) -> HashMap<(i64, u64), (i64, i64)> {
        let mut by_key: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for r in rows {
            by_key.entry(r.0).or_default().push((r.1, r.2));
        }
        let mut out = HashMap::new();
        for (k, mut v) in by_key {
            // Stable: ties stay in arrival order.
            v.sort_by_key(|&(x, _)| if descending { -x } else { x });
            for (r, (x, id)) in v.into_iter().take(limit).enumerate() {
                out.insert((k, r as u64 + 1), (x, id));
            }
        }
        out
    }

    /// The rows (k, v, arrival number) and where batches start and end.
    fn numbered(values: &[(i64, i64)], cuts: Vec<usize>) -> (Vec<(i64, i64, i64)>, Vec<usize>) {
        let rows: Vec<(i64, i64, i64)> = values
            .iter()
            .enumerate()
            .map(|(i, &(k, v))| (k, v, i as i64))
            .collect();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % rows.len()).collect();
        cuts.push(0);
        cuts.push(rows.len());
        cuts.sort_unstable();
        cuts.dedup();
        (rows, cuts)
    }

    /// Feeds `rows` to an operator from `make` in the batches `cuts` gives, restoring a fresh
    /// one from a snapshot before batch `restore_at`; hands each output to `apply`.
    fn run(
        make: impl Fn() -> TopNOperator,
        rows: &[(i64, i64, i64)],
        cuts: &[usize],
        restore_at: usize,
        mut apply: impl FnMut(&[RecordBatch]),
    ) {
        let mut op = make();
        for (i, w) in cuts.windows(2).enumerate() {
            if i == restore_at {
                let state = op.snapshot().expect("snapshot");
                op = make();
                op.restore(state).expect("restore");
            }
            apply(&op.process_batch(batch(&rows[w[0]..w[1]])).expect("process"));
        }
    }

    proptest! {
        /// Upserts applied in order give the batch Top-N, however the rows are split into
        /// batches, and so does a restore from a snapshot taken part-way.
        #[test]
        fn upserts_equal_batch_top_n(
            values in prop::collection::vec((0i64..4, 0i64..20), 1..200),
            cuts in prop::collection::vec(0usize..200, 0..6),
            limit in 1usize..5,
            descending: bool,
            restore_at in 0usize..6,
        ) {
            let (rows, cuts) = numbered(&values, cuts);
            let mut table = HashMap::new();
            run(|| top(limit, descending), &rows, &cuts, restore_at, |out| apply(&mut table, out));
            prop_assert_eq!(table, batch_top(&rows, limit, descending));
        }
    }

    proptest! {
        /// A Top-N whose partitions go to the state store after every other batch (written
        /// there, dropped from memory, read back when their rows come), restarted once from
        /// the store, gives the same upserts as in memory, and the batch Top-N; with RANK too.
        #[test]
        fn partitions_spilled_to_the_store_and_read_back_change_nothing(
            values in prop::collection::vec((0i64..6, 0i64..20), 1..200),
            cuts in prop::collection::vec(0usize..200, 0..8),
            limit in 1usize..4,
            descending: bool,
            rank: bool,
            restart_at in 0usize..8,
        ) {
            let (rows, cuts) = numbered(&values, cuts);
            let make = || {
                let op = top(limit, descending);
                if rank { op.with_rank(RankKind::Rank) } else { op }
            };
            let dir = tempfile::tempdir().unwrap();
            let mut store = crate::state_store::StateStore::open(dir.path()).unwrap();
            let spilling = |store: &crate::state_store::StateStore| {
                let mut op = make();
                assert!(op.attach_store(&mut store.clone(), "top").unwrap());
                op
            };
            let mut memory = make();
            let mut spilled = spilling(&store);
            for (i, w) in cuts.windows(2).enumerate() {
                let expected = memory.process_batch(batch(&rows[w[0]..w[1]])).unwrap();
                let got = spilled.process_batch(batch(&rows[w[0]..w[1]])).unwrap();
                let sorted = |out: &[RecordBatch]| {
                    let mut lines: Vec<String> = datafusion::arrow::util::pretty::pretty_format_batches(out)
                        .unwrap()
                        .to_string()
                        .lines()
                        .map(str::to_string)
                        .collect();
                    lines.sort();
                    lines
                };
                prop_assert_eq!(sorted(&got), sorted(&expected));
                if i % 2 == 0 {
                    let state = spilled.snapshot().unwrap();
                    store.commit(b"checkpoint").unwrap();
                    spilled.evict();
                    prop_assert_eq!(spilled.state_rows(), 0);
                    if i == restart_at {
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

    /// What a per-window Top-N is given.
    #[derive(Debug, Clone)]
    enum Step {
        Rows(Vec<(i64, i64, i64)>),
        Watermark(i64),
    }

    proptest! {
        /// A Top-N per window (partitions by `k`, each ending at `k` ns) whose partitions go to
        /// the state store emits what it emits in memory through checkpoints, spills and
        /// `kill -9` (see `spilled_equals_memory`), and partitions the watermark ends leave
        /// the store too, also those that had left memory.
        #[test]
        fn window_partitions_spilled_to_the_store_end_there_too(
            steps in prop::collection::vec(
                (prop::collection::vec((0i64..6, 0i64..20), 0..20), 0i64..3, 0u8..6),
                1..30,
            ),
            limit in 1usize..3,
            rank: bool,
        ) {
            let make = || {
                let op = top(limit, false).with_expiry(TopNExpiry { partition_index: 0, offset_ns: 0 });
                if rank { op.with_rank(RankKind::Rank) } else { op }
            };
            let (mut watermark, mut id) = (0, 0);
            let mut given: Vec<_> = steps
                .into_iter()
                .map(|(rows, advance, action)| {
                    let rows = rows
                        .into_iter()
                        .map(|(k, v)| {
                            id += 1;
                            (watermark + k, v, id)
                        })
                        .collect();
                    watermark += advance;
                    (vec![Step::Rows(rows), Step::Watermark(watermark)], action)
                })
                .collect();
            given.push((vec![Step::Watermark(watermark + 100)], 0));
            crate::operator::window_aggregate::spill::tests::spilled_equals_memory(
                make(),
                |store| {
                    let mut op = make();
                    assert!(op.attach_store(&mut store.clone(), "top").unwrap());
                    op
                },
                &given,
                |op, step| {
                    let out = match step {
                        Step::Rows(r) => op.process_batch(batch(r)).unwrap(),
                        Step::Watermark(w) => op.on_watermark(*w).unwrap(),
                    };
                    crate::operator::sorted_lines(&out)
                },
                &["top", "top-ends"],
            )?;
        }
    }

    #[test]
    fn keeps_the_last_row_per_key() {
        // Deduplication, keep last: ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) = 1.
        let mut op = top(1, true);
        let mut table = HashMap::new();
        apply(
            &mut table,
            &op.process_batch(batch(&[(1, 5, 0), (2, 1, 1)]))
                .expect("ok"),
        );
        apply(
            &mut table,
            &op.process_batch(batch(&[(1, 3, 2), (1, 9, 3)]))
                .expect("ok"),
        );
        assert_eq!(table.len(), 2);
        assert_eq!(table[&(1, 1)], (9, 3));
        assert_eq!(table[&(2, 1)], (1, 1));
        assert!(op.state_bytes() > 0);
    }

    type Multiset = std::collections::BTreeMap<(i64, i64, i64, u64), i64>;

    /// Applies a changelog of (k, v, id, rank, inserted) to a multiset.
    fn apply_changes(table: &mut Multiset, out: &[RecordBatch]) {
        for b in out {
            let int = |c: usize| b.column(c).as_primitive::<Int64Type>().clone();
            let (k, v, id) = (int(0), int(1), int(2));
            let rank = b
                .column(3)
                .as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
            let inserted = b.column(4).as_boolean();
            for i in 0..b.num_rows() {
                let entry = table
                    .entry((k.value(i), v.value(i), id.value(i), rank.value(i)))
                    .or_default();
                *entry += if inserted.value(i) { 1 } else { -1 };
                assert!(*entry >= 0, "took back a row that was not there");
            }
        }
        table.retain(|_, n| *n != 0);
    }

    /// RANK or DENSE_RANK in batch: per key, every row whose rank is at most `limit`.
    fn batch_rank(
        rows: &[(i64, i64, i64)],
        limit: u64,
        kind: RankKind,
        descending: bool,
    ) -> Multiset {
        let mut out = Multiset::new();
        for &(k, v, id) in rows {
            let mut better: Vec<i64> = rows
                .iter()
                .filter(|r| r.0 == k && if descending { r.1 > v } else { r.1 < v })
                .map(|r| r.1)
                .collect();
            if kind == RankKind::DenseRank {
                better.sort_unstable();
                better.dedup();
            }
            let rank = better.len() as u64 + 1;
            if rank <= limit {
                out.insert((k, v, id, rank), 1);
            }
        }
        out
    }

    proptest! {
        /// RANK and DENSE_RANK: the changelog applied in order gives the batch ranks, however
        /// the rows are split, and across a restore.
        #[test]
        fn rank_changelog_equals_batch(
            values in prop::collection::vec((0i64..3, 0i64..8), 1..150),
            cuts in prop::collection::vec(0usize..150, 0..6),
            limit in 1usize..5,
            dense: bool,
            descending: bool,
            restore_at in 0usize..6,
        ) {
            let kind = if dense { RankKind::DenseRank } else { RankKind::Rank };
            let (rows, cuts) = numbered(&values, cuts);
            let make = || top(limit, descending).with_rank(kind);
            let mut table = Multiset::new();
            run(make, &rows, &cuts, restore_at, |out| apply_changes(&mut table, out));
            prop_assert_eq!(table, batch_rank(&rows, limit as u64, kind, descending));
        }
    }

    #[test]
    fn a_state_ttl_lets_a_forgotten_key_start_again() {
        // Keep the smallest v per k, forgetting a key 10 ns of event time (column id) after
        // its kept row.
        let mut op = top(1, false).with_state_ttl(2, 10).expect("dedup");
        let mut table = HashMap::new();
        apply(
            &mut table,
            &op.process_batch(batch(&[(1, 5, 0), (2, 1, 15)]))
                .expect("ok"),
        );
        op.on_watermark(20).expect("watermark");
        // Key 1 (kept at 0) is forgotten: 9 is kept though 5 was smaller. Key 2 (15) is not.
        apply(
            &mut table,
            &op.process_batch(batch(&[(1, 9, 21), (2, 3, 22)]))
                .expect("ok"),
        );
        assert_eq!(table[&(1, 1)], (9, 21));
        assert_eq!(table[&(2, 1)], (1, 15));
        // Forgotten keys leave memory once a sweep passes them.
        op.on_watermark(1_000).expect("watermark");
        assert_eq!(op.state_bytes(), 0);
        assert!(top(2, false).with_state_ttl(2, 10).is_err());
    }
}
