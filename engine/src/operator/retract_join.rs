//! Joins two inputs whose rows change (changelogs: an updating aggregate's, a Top-N's), without a
//! time bound: each row inserted or taken back on one side adds or takes back its joined rows,
//! and an outer join's NULL-padded rows follow as a row gains or loses its last match.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use foldhash::{HashMap, HashMapExt};

use super::{BinaryOperator, INSERTED, Side, TableSource};
use crate::checkpoint::OperatorState;
use crate::state_store::{KeyedSpill, put_bytes, take_array, take_bytes};
use crate::{Error, Result};

/// The first value of a checkpoint whose rows are in the state store.
const IN_STORE: i64 = 1;

/// Bytes a kept row costs beyond its key and values.
const ENTRY_OVERHEAD: usize = 96;

/// One distinct row of an input: how many times it holds, and how many rows of the other input
/// (counted with their multiplicity) it joins now.
#[derive(Debug)]
struct Entry {
    row: OwnedRow,
    count: u64,
    matches: u64,
}

/// One input: its keys and its rows by key (row-format bytes of the key columns).
#[derive(Debug)]
struct Input {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The input's columns, without its changelog column.
    values: SchemaRef,
    /// Whether batches end with [`INSERTED`] (else every row is inserted).
    changelog: bool,
    /// Whether rows without a match are emitted with NULLs (the preserved side of an outer join).
    keep_unmatched: bool,
    rows: RowConverter,
    by_key: HashMap<Box<[u8]>, Vec<Entry>>,
    /// Keys beyond memory, in the query's state store (see [`BinaryOperator::attach_store`]).
    spill: Option<KeyedSpill>,
    /// Whether checkpoints keep the keys in the store, so changes are tracked for it.
    tracking: bool,
}

impl Input {
    /// `key`'s entries changed (their rows, counts or matches).
    fn changed(&mut self, key: &[u8]) {
        if let Some(spill) = self.spill.as_mut().filter(|_| self.tracking) {
            spill.changed(key);
        }
    }

    /// `key` has no entries left.
    fn removed(&mut self, key: &[u8]) {
        self.by_key.remove(key);
        if let Some(spill) = self.spill.as_mut().filter(|_| self.tracking) {
            spill.removed(key.into());
        }
    }

    /// Checkpoints keep the keys in the store from now on: every key is staged at the next.
    fn track(&mut self) {
        if let Some(spill) = self.spill.as_mut().filter(|_| !self.tracking) {
            self.by_key.keys().for_each(|k| spill.changed(k));
            self.tracking = true;
        }
    }

    /// Memory a key's entries take.
    fn cost(key: &[u8], entries: &[Entry]) -> usize {
        entries
            .iter()
            .map(|e| key.len() + e.row.as_ref().len() + ENTRY_OVERHEAD)
            .sum()
    }

    /// A key's entries as the state store keeps them: how many, then each row, its count and
    /// its matches.
    fn encode(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend((entries.len() as u32).to_le_bytes());
        for e in entries {
            put_bytes(&mut out, e.row.row().data());
            out.extend(e.count.to_le_bytes());
            out.extend(e.matches.to_le_bytes());
        }
        out
    }

    /// Reads `key`'s entries back from the state store into memory, if they left it; returns
    /// the memory they take and how many they are.
    fn fetch(&mut self, key: &[u8]) -> Result<(usize, usize)> {
        let Some(spill) = &self.spill else {
            return Ok((0, 0));
        };
        if self.by_key.contains_key(key) {
            return Ok((0, 0));
        }
        let Some(value) = spill.fetch(key)? else {
            return Ok((0, 0));
        };
        let mut input = value.as_slice();
        let n = u32::from_le_bytes(take_array(&mut input)?);
        let mut entries = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let row = self.rows.parser().parse(take_bytes(&mut input)?).owned();
            let count = u64::from_le_bytes(take_array(&mut input)?);
            let matches = u64::from_le_bytes(take_array(&mut input)?);
            entries.push(Entry {
                row,
                count,
                matches,
            });
        }
        let bytes = Self::cost(key, &entries);
        self.by_key.insert(key.into(), entries);
        Ok((bytes, n as usize))
    }

    /// Drops from memory the keys the store holds as they are; returns the memory and entries
    /// that frees.
    fn evict(&mut self) -> (usize, usize) {
        let Some(spill) = self.spill.as_mut().filter(|_| self.tracking) else {
            return (0, 0);
        };
        let (mut bytes, mut rows) = (0, 0);
        for key in spill.evictable(self.by_key.keys()) {
            if let Some(entries) = self.by_key.remove(&key) {
                bytes += Self::cost(&key, &entries);
                rows += entries.len();
            }
        }
        (bytes, rows)
    }
}

/// One row of output: the left and right rows (`None`: NULLs) and whether it is inserted.
type Change = (Option<OwnedRow>, Option<OwnedRow>, bool);

/// A join of two inputs without a time bound whose rows may be taken back. Every distinct row of
/// both inputs is kept with its multiplicity and its number of matches, so that a row taken back
/// takes back exactly the joined rows it made. The output is a changelog: the join's columns and
/// [`INSERTED`].
#[derive(Debug)]
pub struct RetractJoinOperator {
    inputs: [Input; 2],
    key_converter: RowConverter,
    key_types: Vec<DataType>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// The join's columns (left then right), without [`INSERTED`].
    joined: SchemaRef,
    schema: SchemaRef,
    bytes: usize,
    /// Distinct rows kept over both inputs.
    kept_rows: usize,
    /// The most memory one batch of output may take (see [`BinaryOperator::limit_memory`]).
    memory_limit: usize,
    /// Past this much state, checkpoints put the kept rows in the state store (an eighth of
    /// the memory limit); below it they hold the rows themselves.
    spill_from: usize,
}

impl RetractJoinOperator {
    /// A join on `keys` (per input, in the same order) and `filter` (over `joined`, the left
    /// columns then the right ones) of inputs with schemas `left` and `right`, each a changelog
    /// if its flag says so (its last column is then [`INSERTED`]); `keep` says which inputs an
    /// outer join preserves.
    pub fn try_new(
        inputs: [(SchemaRef, Vec<Arc<dyn PhysicalExpr>>, bool, bool); 2],
        filter: Option<Arc<dyn PhysicalExpr>>,
        joined: SchemaRef,
    ) -> Result<Self> {
        let [
            (l_schema, l_keys, l_log, l_keep),
            (r_schema, r_keys, r_log, r_keep),
        ] = inputs;
        if l_keys.len() != r_keys.len() {
            return Err(Error::Internal(
                "join inputs have different numbers of keys".into(),
            ));
        }
        let key_types = l_keys
            .iter()
            .map(|k| Ok(k.data_type(&l_schema)?))
            .collect::<Result<Vec<_>>>()?;
        let input = |schema: SchemaRef, keys, changelog: bool, keep_unmatched| -> Result<Input> {
            let width = schema.fields().len() - usize::from(changelog);
            let values = Arc::new(Schema::new(schema.fields()[..width].to_vec()));
            let rows = RowConverter::new(
                values
                    .fields()
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect(),
            )?;
            Ok(Input {
                keys,
                values,
                changelog,
                keep_unmatched,
                rows,
                by_key: HashMap::new(),
                spill: None,
                tracking: false,
            })
        };
        let mut fields: Vec<_> = joined.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(INSERTED, DataType::Boolean, false)));
        Ok(Self {
            inputs: [
                input(l_schema, l_keys, l_log, l_keep)?,
                input(r_schema, r_keys, r_log, r_keep)?,
            ],
            key_converter: RowConverter::new(
                key_types.iter().cloned().map(SortField::new).collect(),
            )?,
            key_types,
            filter,
            schema: Arc::new(Schema::new(fields)),
            joined,
            bytes: 0,
            kept_rows: 0,
            memory_limit: usize::MAX,
            spill_from: usize::MAX,
        })
    }

    /// Per row of `batch` (input `s`), its key's bytes, or `None` for a NULL key (SQL equality
    /// never matches it).
    fn keys(&self, s: usize, batch: &RecordBatch) -> Result<Vec<Option<Box<[u8]>>>> {
        let n = batch.num_rows();
        let columns = super::join_keys(&self.inputs[s].keys, &self.key_types, batch)?;
        let rows = self.key_converter.convert_columns(&columns)?;
        Ok((0..n)
            .map(|i| (!columns.iter().any(|c| c.is_null(i))).then(|| rows.row(i).data().into()))
            .collect())
    }

    /// `left` and `right` rows side by side (`None`: NULLs), as the join's columns.
    fn pairs(&self, rows: &[(Option<&OwnedRow>, Option<&OwnedRow>)]) -> Result<RecordBatch> {
        let mut columns = self.side_columns(0, rows.iter().map(|r| r.0).collect())?;
        columns.extend(self.side_columns(1, rows.iter().map(|r| r.1).collect())?);
        Ok(RecordBatch::try_new(Arc::clone(&self.joined), columns)?)
    }

    /// The columns of input `s` for `picks` (`None`: a row of NULLs).
    fn side_columns(&self, s: usize, picks: Vec<Option<&OwnedRow>>) -> Result<Vec<ArrayRef>> {
        let input = &self.inputs[s];
        let arrays = input
            .rows
            .convert_rows(picks.iter().flatten().map(|r| r.row()))?;
        let mut next = 0u32;
        let indices = UInt32Array::from_iter(picks.iter().map(|p| {
            p.map(|_| {
                next += 1;
                next - 1
            })
        }));
        arrays
            .iter()
            .map(|a| Ok(take(a.as_ref(), &indices, None)?))
            .collect()
    }

    /// Which of the candidate pairs `(row of the batch, entry of the other input)` pass the
    /// join's filter.
    fn passing(
        &self,
        s: usize,
        rows: &[OwnedRow],
        candidates: &[(usize, &Entry)],
    ) -> Result<Vec<bool>> {
        let Some(filter) = &self.filter else {
            return Ok(vec![true; candidates.len()]);
        };
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<(Option<&OwnedRow>, Option<&OwnedRow>)> = candidates
            .iter()
            .map(|&(i, e)| {
                if s == 0 {
                    (Some(&rows[i]), Some(&e.row))
                } else {
                    (Some(&e.row), Some(&rows[i]))
                }
            })
            .collect();
        let batch = self.pairs(&pairs)?;
        let mask = filter.evaluate(&batch)?.into_array(batch.num_rows())?;
        let mask = mask.as_boolean();
        Ok((0..mask.len())
            .map(|i| mask.is_valid(i) && mask.value(i))
            .collect())
    }
}

impl RetractJoinOperator {
    /// Applies one row of input `s` (inserted or taken back) with its passing partners (indexes
    /// into the other input's entries for its key); appends the output changes.
    fn apply(
        &mut self,
        s: usize,
        key: Option<&[u8]>,
        row: OwnedRow,
        inserted: bool,
        partners: &[usize],
        out: &mut Vec<Change>,
    ) -> Result<()> {
        let o = 1 - s;
        let pair = |this: &OwnedRow, other: &OwnedRow| -> (Option<OwnedRow>, Option<OwnedRow>) {
            if s == 0 {
                (Some(this.clone()), Some(other.clone()))
            } else {
                (Some(other.clone()), Some(this.clone()))
            }
        };
        let padded = |side: usize, r: &OwnedRow| -> (Option<OwnedRow>, Option<OwnedRow>) {
            if side == 0 {
                (Some(r.clone()), None)
            } else {
                (None, Some(r.clone()))
            }
        };
        let keep_other = self.inputs[o].keep_unmatched;
        let mut matches = 0;
        if let Some(key) = key {
            let others = self.inputs[o].by_key.get_mut(key);
            if let Some(others) = others {
                for &p in partners {
                    let e = &mut others[p];
                    matches += e.count;
                    for _ in 0..e.count {
                        let (l, r) = pair(&row, &e.row);
                        out.push((l, r, inserted));
                    }
                    // The partner gains its first match, or loses its last.
                    let before = e.matches;
                    if inserted {
                        e.matches += 1;
                    } else {
                        e.matches = e.matches.checked_sub(1).ok_or_else(|| {
                            Error::Internal("a joined row lost a match it did not have".into())
                        })?;
                    }
                    if keep_other && (before == 0) != (e.matches == 0) {
                        for _ in 0..e.count {
                            let (l, r) = padded(o, &e.row);
                            out.push((l, r, e.matches == 0));
                        }
                    }
                }
                if !partners.is_empty() {
                    self.inputs[o].changed(key);
                }
            }
        }
        // This row: alone (padded) when it has no match, in or out with it.
        if self.inputs[s].keep_unmatched && matches == 0 {
            let (l, r) = padded(s, &row);
            out.push((l, r, inserted));
        }
        let Some(key) = key else {
            return Ok(());
        };
        let cost = key.len() + row.as_ref().len() + ENTRY_OVERHEAD;
        let entries = self.inputs[s].by_key.entry(key.into()).or_default();
        match entries.iter().position(|e| e.row == row) {
            Some(i) if inserted => entries[i].count += 1,
            None if inserted => {
                self.bytes += cost;
                self.kept_rows += 1;
                entries.push(Entry {
                    row,
                    count: 1,
                    matches,
                });
            }
            Some(i) => {
                entries[i].count -= 1;
                if entries[i].count == 0 {
                    entries.swap_remove(i);
                    self.bytes -= cost;
                    self.kept_rows -= 1;
                }
            }
            None => {
                return Err(Error::Internal(
                    "a join's input took back a row it never had; this is a bug".into(),
                ));
            }
        }
        if entries.is_empty() {
            self.inputs[s].removed(key);
        } else {
            self.inputs[s].changed(key);
        }
        Ok(())
    }

    /// Reads the entries of `keys`, of both inputs, back from the state store into memory
    /// where they left it.
    fn fetch(&mut self, keys: &[Option<Box<[u8]>>]) -> Result<()> {
        let partial = |i: &Input| i.spill.as_ref().is_some_and(KeyedSpill::is_partial);
        if !self.inputs.iter().any(partial) {
            return Ok(());
        }
        for key in keys.iter().flatten() {
            for input in &mut self.inputs {
                let (bytes, rows) = input.fetch(key)?;
                self.bytes += bytes;
                self.kept_rows += rows;
            }
        }
        Ok(())
    }

    fn output(&self, changes: Vec<Change>) -> Result<Vec<RecordBatch>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(Option<&OwnedRow>, Option<&OwnedRow>)> = changes
            .iter()
            .map(|(l, r, _)| (l.as_ref(), r.as_ref()))
            .collect();
        let joined = self.pairs(&rows)?;
        let mut columns = joined.columns().to_vec();
        columns.push(Arc::new(BooleanArray::from_iter(
            changes.iter().map(|(_, _, inserted)| Some(*inserted)),
        )));
        Ok(vec![RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?])
    }
}

impl BinaryOperator for RetractJoinOperator {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, side: Side, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let s = side.index();
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let input = &self.inputs[s];
        let width = input.values.fields().len();
        let inserted: Vec<bool> = if input.changelog {
            let flags = batch.column(width).as_boolean();
            (0..n)
                .map(|i| flags.is_valid(i) && flags.value(i))
                .collect()
        } else {
            vec![true; n]
        };
        let converted = input.rows.convert_columns(&batch.columns()[..width])?;
        let rows: Vec<OwnedRow> = converted.iter().map(|r| r.owned()).collect();
        let keys = self.keys(s, &batch)?;
        self.fetch(&keys)?;
        // Partners come from the other input, which this batch does not change: find them and
        // run the filter over all of them at once.
        let others = &self.inputs[1 - s].by_key;
        let mut candidates: Vec<(usize, &Entry)> = Vec::new();
        let mut positions: Vec<(usize, usize)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if let Some(entries) = key.as_ref().and_then(|k| others.get(k)) {
                for (p, e) in entries.iter().enumerate() {
                    candidates.push((i, e));
                    positions.push((i, p));
                }
            }
        }
        let passes = self.passing(s, &rows, &candidates)?;
        let mut partners: Vec<Vec<usize>> = vec![Vec::new(); n];
        for ((i, p), pass) in positions.into_iter().zip(passes) {
            if pass {
                partners[i].push(p);
            }
        }
        // Joined rows are about as wide as a row of each input: past the memory limit, this one
        // batch's output alone would outgrow the query's budget.
        let width = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0)
            + self.inputs[1 - s]
                .by_key
                .values()
                .next()
                .and_then(|e| e.first())
                .map_or(0, |e| e.row.as_ref().len())
            + 64;
        let max_rows = self.memory_limit / width;
        let mut out = Vec::new();
        for (i, row) in rows.into_iter().enumerate() {
            self.apply(
                s,
                keys[i].as_deref(),
                row,
                inserted[i],
                &partners[i],
                &mut out,
            )?;
            if out.len() > max_rows {
                return Err(Error::MemoryExceeded(format!(
                    "one batch of {n} rows would change more than {max_rows} joined rows, about \
                     {} MiB, past the query's memory limit of {} MiB",
                    (out.len() * width) >> 20,
                    self.memory_limit >> 20
                )));
            }
        }
        self.output(out)
    }

    fn on_watermark(&mut self, _watermark_ns: i64) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }

    fn late_rows(&self) -> u64 {
        0
    }

    fn take_late(&mut self) -> Vec<RecordBatch> {
        Vec::new()
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
        let kind = match (self.inputs[0].keep_unmatched, self.inputs[1].keep_unmatched) {
            (false, false) => "inner",
            (true, false) => "left outer",
            (false, true) => "right outer",
            (true, true) => "full outer",
        };
        let filter = self
            .filter
            .as_ref()
            .map(|f| format!(" filter {f}"))
            .unwrap_or_default();
        let beyond = if self.key_types.is_empty() {
            "within the view's memory limit"
        } else {
            "spills to disk past a quarter of the memory limit"
        };
        format!(
            "RetractJoin: {kind} on [{}]{filter} of rows that change; state: every row of both inputs with its count and matches (no time bound), {beyond}; output: a changelog",
            on.join(", ")
        )
    }

    /// Kept rows go to the state store by key (a join on keys; without keys they are one).
    fn attach_store(&mut self, tables: &mut dyn TableSource, name: &str) -> Result<bool> {
        if self.key_types.is_empty() {
            return Ok(false);
        }
        for (input, side) in self.inputs.iter_mut().zip(["left", "right"]) {
            input.spill = Some(KeyedSpill::new(tables.table(&format!("{name}-{side}"))?));
        }
        Ok(true)
    }

    fn evict(&mut self) {
        for input in &mut self.inputs {
            let (bytes, rows) = input.evict();
            self.bytes -= bytes;
            self.kept_rows -= rows;
        }
    }

    fn state_rows(&self) -> usize {
        self.kept_rows
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    fn limit_memory(&mut self, bytes: usize) {
        self.memory_limit = bytes;
        self.spill_from = bytes / 8;
    }

    /// Per input, every kept row as many times as it holds (left first; the first value says
    /// how many batches are the left input's). A restore inserts them again, which rebuilds
    /// the counts of matches. Once the state has passed `spill_from` (and from then on), the
    /// keys changed since the last checkpoint are staged in the state store instead, and the
    /// only value is [`IN_STORE`].
    fn snapshot(&mut self) -> Result<OperatorState> {
        if self.bytes > self.spill_from {
            self.inputs.iter_mut().for_each(Input::track);
        }
        if self.inputs.iter().any(|i| i.tracking) {
            for input in &mut self.inputs {
                if let Some(spill) = &mut input.spill {
                    let by_key = &input.by_key;
                    spill.stage(|key| by_key.get(key).map(|e| Input::encode(e)));
                }
            }
            return Ok(OperatorState {
                values: vec![Some(IN_STORE)],
                batches: Vec::new(),
            });
        }
        let mut batches = Vec::new();
        for input in &self.inputs {
            let rows: Vec<_> = input
                .by_key
                .values()
                .flatten()
                .flat_map(|e| std::iter::repeat_n(e.row.row(), e.count as usize))
                .collect();
            let columns = input.rows.convert_rows(rows)?;
            batches.push(RecordBatch::try_new(Arc::clone(&input.values), columns)?);
        }
        Ok(OperatorState {
            values: Vec::new(),
            batches,
        })
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        if state.values.first() == Some(&Some(IN_STORE)) {
            for input in &mut self.inputs {
                let Some(spill) = &mut input.spill else {
                    return Err(Error::Corrupt(
                        "a join's checkpoint is in a state store it does not have".into(),
                    ));
                };
                spill.restored();
                input.tracking = true;
            }
            return Ok(());
        }
        if state.batches.is_empty() {
            return Ok(());
        }
        let [left, right]: [RecordBatch; 2] = state
            .batches
            .try_into()
            .map_err(|_| Error::Corrupt("a join's state has two batches".into()))?;
        // Inserting the left rows, then the right ones, rebuilds every count; the output it
        // makes was in the view's checkpoint already.
        for (s, batch) in [(0, left), (1, right)] {
            let batch = if self.inputs[s].changelog {
                let mut columns = batch.columns().to_vec();
                columns.push(Arc::new(BooleanArray::from(vec![true; batch.num_rows()])));
                let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
                fields.push(Arc::new(Field::new(INSERTED, DataType::Boolean, false)));
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?
            } else {
                batch
            };
            let side = if s == 0 { Side::Left } else { Side::Right };
            self.process_batch(side, batch)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::physical_expr::expressions::Column;

    fn changelog(name: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(format!("{name}k"), DataType::Int64, true),
            Field::new(format!("{name}v"), DataType::Int64, true),
            Field::new(INSERTED, DataType::Boolean, false),
        ]))
    }

    fn batch(schema: &SchemaRef, rows: &[(i64, i64, bool)]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::clone(schema),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.2)))),
            ],
        )
        .expect("batch")
    }

    /// (left v or -1, right v or -1, inserted) per output row.
    fn changes(out: &[RecordBatch]) -> Vec<(i64, i64, bool)> {
        out.iter()
            .flat_map(|b| {
                let (l, r) = (
                    b.column(1).as_primitive::<Int64Type>().clone(),
                    b.column(3).as_primitive::<Int64Type>().clone(),
                );
                let ins = b.column(4).as_boolean().clone();
                (0..b.num_rows()).map(move |i| {
                    let v = |a: &datafusion::arrow::array::Int64Array| {
                        if a.is_null(i) { -1 } else { a.value(i) }
                    };
                    (v(&l), v(&r), ins.value(i))
                })
            })
            .collect()
    }

    /// A join on k of two changelogs (k, v), a LEFT one if `left_outer`.
    fn join(left_outer: bool) -> (RetractJoinOperator, SchemaRef, SchemaRef) {
        join_keeping([left_outer, false])
    }

    /// A join on k of two changelogs (k, v), preserving the inputs `keep` says.
    fn join_keeping(keep: [bool; 2]) -> (RetractJoinOperator, SchemaRef, SchemaRef) {
        let (l, r) = (changelog("l"), changelog("r"));
        let joined = Arc::new(Schema::new(vec![
            Field::new("lk", DataType::Int64, true),
            Field::new("lv", DataType::Int64, true),
            Field::new("rk", DataType::Int64, true),
            Field::new("rv", DataType::Int64, true),
        ]));
        let key = |name: &str| vec![Arc::new(Column::new(name, 0)) as Arc<dyn PhysicalExpr>];
        let op = RetractJoinOperator::try_new(
            [
                (Arc::clone(&l), key("lk"), true, keep[0]),
                (Arc::clone(&r), key("rk"), true, keep[1]),
            ],
            None,
            joined,
        )
        .expect("join");
        (op, l, r)
    }

    #[test]
    fn a_changed_row_takes_back_what_it_joined_and_padding_follows_matches() {
        let (mut op, l, r) = join(true);
        let out = op
            .process_batch(Side::Left, batch(&l, &[(1, 10, true)]))
            .expect("l");
        assert_eq!(changes(&out), vec![(10, -1, true)]);
        let out = op
            .process_batch(Side::Right, batch(&r, &[(1, 5, true), (1, 6, true)]))
            .expect("r");
        assert_eq!(
            changes(&out),
            vec![(10, 5, true), (10, -1, false), (10, 6, true)]
        );
        // The left row changes: its joined rows go and come back with its new value.
        let out = op
            .process_batch(Side::Left, batch(&l, &[(1, 10, false), (1, 11, true)]))
            .expect("l");
        assert_eq!(
            changes(&out),
            vec![(10, 5, false), (10, 6, false), (11, 5, true), (11, 6, true)]
        );
        // The right rows leave: the left row is alone again.
        let out = op
            .process_batch(Side::Right, batch(&r, &[(1, 5, false), (1, 6, false)]))
            .expect("r");
        assert_eq!(
            changes(&out),
            vec![(11, 5, false), (11, 6, false), (11, -1, true)]
        );
        // State survives a restore: the left row is kept, and still alone.
        let state = op.snapshot().expect("snapshot");
        assert_eq!(state.batches[0].num_rows(), 1);
        let (mut op, _, _) = join(true);
        op.restore(state).expect("restore");
        let out = op
            .process_batch(Side::Right, batch(&r, &[(1, 7, true)]))
            .expect("r");
        assert_eq!(changes(&out), vec![(11, 7, true), (11, -1, false)]);
        // Taking back a row that was never there is an error, not a silent no-op.
        assert!(
            op.process_batch(Side::Right, batch(&r, &[(9, 9, false)]))
                .is_err()
        );
    }

    #[test]
    fn a_batch_whose_output_outgrows_the_memory_limit_is_refused() {
        let (mut op, l, r) = join(false);
        op.limit_memory(64 << 10);
        let many: Vec<(i64, i64, bool)> = (0..2000).map(|v| (1, v, true)).collect();
        op.process_batch(Side::Left, batch(&l, &many))
            .expect("stored");
        let e = op
            .process_batch(Side::Right, batch(&r, &many))
            .expect_err("four million joined rows");
        assert!(matches!(e, Error::MemoryExceeded(_)), "{e}");
    }

    /// Per batch, a side and its changes: (k, v, inserted), each taking back only a row the side
    /// holds; `ops` picks a row to take back or a new one to insert.
    fn changelogs(
        ops: &[(bool, Vec<(Option<i64>, i64, bool)>)],
    ) -> Vec<(Side, Vec<(i64, i64, bool)>)> {
        let mut held: [Vec<(i64, i64)>; 2] = [Vec::new(), Vec::new()];
        ops.iter()
            .map(|(left, changes)| {
                let s = usize::from(!*left);
                let rows = changes
                    .iter()
                    .map(|&(k, v, take_back)| match (take_back, held[s].len()) {
                        (true, n) if n > 0 => {
                            let (k, v) = held[s].swap_remove(v as usize % n);
                            (k, v, false)
                        }
                        _ => {
                            let k = k.unwrap_or(0);
                            held[s].push((k, v));
                            (k, v, true)
                        }
                    })
                    .collect();
                (if *left { Side::Left } else { Side::Right }, rows)
            })
            .collect()
    }

    proptest::proptest! {
        /// A join whose kept rows go to the state store (checkpoints committed at once or a
        /// batch later, clean keys dropped from memory after some, read back when their rows
        /// come), restarted from the store once, emits the same changes, batch by batch, as
        /// the same join in memory: inner, left, right and full outer.
        #[test]
        fn rows_spilled_to_the_store_and_read_back_change_nothing(
            ops in proptest::collection::vec(
                (proptest::bool::ANY, proptest::collection::vec(
                    (proptest::option::of(0i64..5), 0i64..6, proptest::bool::weighted(0.4)),
                    1..6,
                )),
                1..24,
            ),
            keep in proptest::prelude::any::<[bool; 2]>(),
            steps in proptest::collection::vec(0u8..4, 24),
            restart_at in 0usize..24,
        ) {
            let batches = changelogs(&ops);
            let dir = tempfile::tempdir().unwrap();
            let mut store = crate::state_store::StateStore::open(dir.path()).unwrap();
            let spilling = |store: &crate::state_store::StateStore| {
                let (mut op, _, _) = join_keeping(keep);
                assert!(op.attach_store(&mut store.clone(), "join-1").unwrap());
                // Checkpoints put the rows in the store once there are any.
                op.spill_from = 0;
                op
            };
            let (mut memory, l, r) = join_keeping(keep);
            let mut spilled = spilling(&store);
            let mut pending = false;
            for (i, (side, rows)) in batches.iter().enumerate() {
                let schema = if *side == Side::Left { &l } else { &r };
                let expected = memory.process_batch(*side, batch(schema, rows)).unwrap();
                let got = spilled.process_batch(*side, batch(schema, rows)).unwrap();
                proptest::prop_assert_eq!(crate::operator::sorted_lines(&got), crate::operator::sorted_lines(&expected), "batch {}", i);
                if pending {
                    store.commit(b"checkpoint").unwrap();
                    pending = false;
                }
                match steps[i] {
                    1 => {
                        spilled.snapshot().unwrap();
                        pending = true;
                    }
                    2 | 3 => {
                        let state = spilled.snapshot().unwrap();
                        store.commit(b"checkpoint").unwrap();
                        spilled.evict();
                        if state.values.first() == Some(&Some(IN_STORE)) {
                            proptest::prop_assert_eq!(spilled.state_rows(), 0);
                        }
                        if i >= restart_at && steps[i] == 3 {
                            drop(spilled);
                            drop(store);
                            store = crate::state_store::StateStore::open(dir.path()).unwrap();
                            spilled = spilling(&store);
                            spilled.restore(state).unwrap();
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
