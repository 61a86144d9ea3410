//! Turns upserts (the latest row per key) into a changelog: for each key a batch changes, the
//! retraction of its previous row and the insertion of its new one (Flink's ChangelogNormalize).

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};

use super::{Operator, TableSource};
use crate::checkpoint::OperatorState;
use crate::state_store::KeyedSpill;
use crate::{Error, Result};

/// The last column of a changelog batch: true for a row that is inserted, false for one that is
/// retracted (a row inserted earlier that no longer holds).
pub const INSERTED: &str = "weir_inserted";

/// Bytes a stored row costs beyond its key and values (the map entry and two allocations).
const ENTRY_OVERHEAD: usize = 64;

/// Keeps the latest row of every key of an upsert stream, so that a new row for a key can be
/// turned into the retraction of the old one and the insertion of the new one.
///
/// The input has the row's columns, optionally followed by a boolean visibility column (false
/// deletes the key's row, as a HAVING that no longer holds does). The output has the row's
/// columns and [`INSERTED`]. Within a batch only a key's last row counts (upserts replace), and
/// a key whose row did not change emits nothing.
#[derive(Debug)]
pub struct UpsertChangelogOperator {
    key: Vec<usize>,
    visibility: bool,
    values: SchemaRef,
    schema: SchemaRef,
    /// Converts key columns to bytes; `None` without key columns (a single row).
    keys: Option<RowConverter>,
    rows: RowConverter,
    /// The row each key has now, by the key's row-format bytes.
    last: HashMap<Box<[u8]>, OwnedRow>,
    bytes: usize,
    /// Rows beyond memory, in the query's state store (see [`Operator::attach_store`]).
    spill: Option<KeyedSpill>,
}

/// The value of a checkpoint whose rows are in the state store.
const IN_STORE: i64 = 1;

impl UpsertChangelogOperator {
    /// Over upserts of `input` keyed by the columns `key`; with `visibility`, the last input
    /// column says whether the row is there.
    pub fn try_new(input: &Schema, key: Vec<usize>, visibility: bool) -> Result<Self> {
        let width = input.fields().len() - usize::from(visibility);
        if let Some(&bad) = key.iter().find(|&&k| k >= width) {
            return Err(Error::InvalidArgument(format!(
                "no key column {bad} in a row of {width} columns"
            )));
        }
        let fields: Vec<_> = input.fields().iter().take(width).cloned().collect();
        let values = Arc::new(Schema::new(fields.clone()));
        let mut out = fields;
        out.push(Arc::new(Field::new(INSERTED, DataType::Boolean, false)));
        let sort = |i: usize| SortField::new(input.field(i).data_type().clone());
        let keys = if key.is_empty() {
            None
        } else {
            Some(RowConverter::new(key.iter().map(|&k| sort(k)).collect())?)
        };
        Ok(Self {
            rows: RowConverter::new((0..width).map(sort).collect())?,
            keys,
            key,
            visibility,
            values,
            schema: Arc::new(Schema::new(out)),
            last: HashMap::new(),
            bytes: 0,
            spill: None,
        })
    }

    fn width(&self) -> usize {
        self.values.fields().len()
    }

    /// `columns` (the row's columns) with an [`INSERTED`] column of `inserted`.
    fn changelog_batch(&self, mut columns: Vec<ArrayRef>, inserted: bool) -> Result<RecordBatch> {
        let n = columns.first().map_or(0, |c| c.len());
        columns.push(Arc::new(BooleanArray::from(vec![inserted; n])));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// The keys of rows with `columns` as row-format bytes; `None` without key columns.
    fn key_rows(&self, columns: &[ArrayRef]) -> Result<Option<Rows>> {
        let Some(converter) = &self.keys else {
            return Ok(None);
        };
        let keys: Vec<ArrayRef> = self.key.iter().map(|&k| Arc::clone(&columns[k])).collect();
        Ok(Some(converter.convert_columns(&keys)?))
    }

    fn forget(&mut self, key: &[u8]) -> Option<OwnedRow> {
        let (key, row) = self.last.remove_entry(key)?;
        self.bytes -= key.len() + row.row().data().len() + ENTRY_OVERHEAD;
        if let Some(spill) = &mut self.spill {
            spill.removed(key);
        }
        Some(row)
    }

    fn remember(&mut self, key: &[u8], row: OwnedRow) {
        self.keep(key, row);
        if let Some(spill) = &mut self.spill {
            spill.changed(key);
        }
    }

    fn keep(&mut self, key: &[u8], row: OwnedRow) {
        self.bytes += key.len() + row.row().data().len() + ENTRY_OVERHEAD;
        self.last.insert(key.into(), row);
    }

    /// Reads `key`'s row back from the state store into memory, if it left memory.
    fn fetch(&mut self, key: &[u8]) -> Result<()> {
        let Some(spill) = &self.spill else {
            return Ok(());
        };
        if self.last.contains_key(key) {
            return Ok(());
        }
        if let Some(bytes) = spill.fetch(key)? {
            let row = self.rows.parser().parse(&bytes).owned();
            self.keep(key, row);
        }
        Ok(())
    }

    /// A checkpoint's part in the state store: stages the rows changed and gone since the
    /// last one, which are then clean.
    fn stage_changes(&mut self) -> OperatorState {
        if let Some(spill) = &mut self.spill {
            let last = &self.last;
            spill.stage(|key| last.get(key).map(|row| row.row().data().to_vec()));
        }
        OperatorState {
            values: vec![Some(IN_STORE)],
            batches: Vec::new(),
        }
    }
}

impl Operator for UpsertChangelogOperator {
    fn name(&self) -> &'static str {
        "UpsertChangelog"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let width = self.width();
        let values = batch.columns()[..width].to_vec();
        let visible = self
            .visibility
            .then(|| batch.column(width).as_boolean().clone());
        let key_rows = self.key_rows(&values)?;
        let key_of = |i: usize| key_rows.as_ref().map_or(&[][..], |r| r.row(i).data());
        // The last row of each key in this batch, keys in order of first appearance.
        let mut latest: HashMap<&[u8], usize> = HashMap::new();
        let mut order = Vec::new();
        for i in 0..n {
            let k = key_of(i);
            if latest.insert(k, i).is_none() {
                order.push(k);
            }
        }
        let rows = self.rows.convert_columns(&values)?;
        let mut retracted = Vec::new();
        let mut inserted: Vec<u32> = Vec::new();
        for k in order {
            self.fetch(k)?;
            let i = latest[k];
            let shows = visible.as_ref().is_none_or(|v| v.is_valid(i) && v.value(i));
            let new = shows.then(|| rows.row(i));
            if let (Some(old), Some(new)) = (self.last.get(k), new)
                && old.row() == new
            {
                continue;
            }
            if let Some(old) = self.forget(k) {
                retracted.push(old);
            }
            if let Some(new) = new {
                self.remember(k, new.owned());
                inserted.push(u32::try_from(i).map_err(|_| {
                    Error::InvalidArgument(format!("a batch of {n} rows is too large"))
                })?);
            }
        }
        let mut out = Vec::with_capacity(2);
        if !retracted.is_empty() {
            let columns = self.rows.convert_rows(retracted.iter().map(|r| r.row()))?;
            out.push(self.changelog_batch(columns, false)?);
        }
        if !inserted.is_empty() {
            let indices = UInt32Array::from(inserted);
            let columns = values
                .iter()
                .map(|c| Ok(take(c.as_ref(), &indices, None)?))
                .collect::<Result<Vec<_>>>()?;
            out.push(self.changelog_batch(columns, true)?);
        }
        Ok(match out.len() {
            0 => Vec::new(),
            1 => out,
            _ => vec![concat_batches(&self.schema, &out)?],
        })
    }

    fn explain(&self) -> String {
        let key: Vec<&str> = self
            .key
            .iter()
            .map(|&k| self.values.field(k).name().as_str())
            .collect();
        format!(
            "UpsertChangelog: key=[{}] (a key's new row takes its previous row back)",
            key.join(", ")
        )
    }

    fn state_rows(&self) -> usize {
        self.last.len()
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    fn snapshot(&mut self) -> Result<OperatorState> {
        if self.spill.is_some() {
            return Ok(self.stage_changes());
        }
        if self.last.is_empty() {
            return Ok(OperatorState::default());
        }
        let columns = self
            .rows
            .convert_rows(self.last.values().map(|r| r.row()))?;
        Ok(OperatorState {
            values: Vec::new(),
            batches: vec![RecordBatch::try_new(Arc::clone(&self.values), columns)?],
        })
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        self.last.clear();
        self.bytes = 0;
        if state.values.first() == Some(&Some(IN_STORE)) {
            return match &mut self.spill {
                Some(spill) => {
                    spill.restored();
                    Ok(())
                }
                None => Err(Error::Corrupt(
                    "a changelog's checkpoint is in a state store it does not have".into(),
                )),
            };
        }
        for batch in state.batches {
            let columns = batch
                .columns()
                .iter()
                .zip(self.values.fields())
                .map(|(c, f)| Ok(cast(c, f.data_type())?))
                .collect::<Result<Vec<_>>>()?;
            let rows = self.rows.convert_columns(&columns)?;
            let key_rows = self.key_rows(&columns)?;
            for i in 0..batch.num_rows() {
                let k = key_rows.as_ref().map_or(&[][..], |r| r.row(i).data());
                // Dirty: from a checkpoint file written before the store, the next stores all.
                self.remember(k, rows.row(i).owned());
            }
        }
        Ok(())
    }

    fn attach_store(&mut self, tables: &mut dyn TableSource, name: &str) -> Result<bool> {
        if self.keys.is_none() {
            // A single row: nothing worth a store.
            return Ok(false);
        }
        self.spill = Some(KeyedSpill::new(tables.table(name)?));
        Ok(true)
    }

    fn evict(&mut self) {
        let Some(spill) = &mut self.spill else {
            return;
        };
        let clean = spill.evictable(self.last.keys());
        for key in clean {
            if let Some((key, row)) = self.last.remove_entry(&key) {
                self.bytes -= key.len() + row.row().data().len() + ENTRY_OVERHEAD;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};

    use super::*;

    fn input() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, true),
            Field::new("visible", DataType::Boolean, false),
        ]))
    }

    fn upserts(rows: &[(&str, i64, bool)]) -> RecordBatch {
        RecordBatch::try_new(
            input(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.2)))),
            ],
        )
        .unwrap()
    }

    fn changes(out: &[RecordBatch]) -> Vec<(String, i64, bool)> {
        out.iter()
            .flat_map(|b| {
                let k = b.column(0).as_string::<i32>().clone();
                let v = b
                    .column(1)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                let ins = b.column(2).as_boolean();
                (0..b.num_rows())
                    .map(|i| (k.value(i).to_string(), v.value(i), ins.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn new_rows_retract_old_ones_and_repeats_emit_nothing() {
        let mut op = UpsertChangelogOperator::try_new(&input(), vec![0], true).unwrap();
        let out = op
            .process_batch(upserts(&[("a", 1, true), ("b", 2, true), ("a", 3, true)]))
            .unwrap();
        assert_eq!(
            changes(&out),
            vec![("a".into(), 3, true), ("b".into(), 2, true)]
        );
        let out = op
            .process_batch(upserts(&[("b", 2, true), ("a", 4, true), ("b", 0, false)]))
            .unwrap();
        assert_eq!(
            changes(&out),
            vec![
                ("b".into(), 2, false),
                ("a".into(), 3, false),
                ("a".into(), 4, true)
            ]
        );
        // A key that is absent and stays absent, and one whose row did not change: nothing.
        assert!(
            op.process_batch(upserts(&[("b", 7, false), ("a", 4, true)]))
                .unwrap()
                .is_empty()
        );
        assert!(op.state_bytes() > 0);
    }

    #[test]
    fn a_restored_operator_retracts_the_rows_it_was_holding() {
        let mut op = UpsertChangelogOperator::try_new(&input(), vec![0], true).unwrap();
        op.process_batch(upserts(&[("a", 1, true), ("b", 2, true)]))
            .unwrap();
        let state = op.snapshot().unwrap();
        let mut again = UpsertChangelogOperator::try_new(&input(), vec![0], true).unwrap();
        again.restore(state).unwrap();
        assert_eq!(again.state_bytes(), op.state_bytes());
        let out = again.process_batch(upserts(&[("a", 5, true)])).unwrap();
        assert_eq!(
            changes(&out),
            vec![("a".into(), 1, false), ("a".into(), 5, true)]
        );
    }

    fn spilling(store: &crate::state_store::StateStore) -> UpsertChangelogOperator {
        let mut op = UpsertChangelogOperator::try_new(&input(), vec![0], true).unwrap();
        assert!(op.attach_store(&mut store.clone(), "changelog").unwrap());
        op
    }

    proptest::proptest! {
        /// Rows spilled to the state store at every other batch (written there, dropped from
        /// memory, read back when their key comes), with a restart from the store, give the
        /// same changelog as in memory, batch by batch.
        #[test]
        fn rows_spilled_to_the_store_and_read_back_change_nothing(
            batches in proptest::collection::vec(
                proptest::collection::vec((0u8..6, 0i64..3, proptest::bool::weighted(0.8)), 1..10),
                1..10,
            ),
            restart_at in 0usize..8,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = crate::state_store::StateStore::open(dir.path()).unwrap();
            let mut memory = UpsertChangelogOperator::try_new(&input(), vec![0], true).unwrap();
            let mut spilled = spilling(&store);
            for (b, batch) in batches.iter().enumerate() {
                let keys: Vec<String> = batch.iter().map(|r| format!("k{}", r.0)).collect();
                let rows: Vec<_> = batch
                    .iter()
                    .zip(&keys)
                    .map(|(r, k)| (k.as_str(), r.1, r.2))
                    .collect();
                let mut expected = changes(&memory.process_batch(upserts(&rows)).unwrap());
                let mut got = changes(&spilled.process_batch(upserts(&rows)).unwrap());
                expected.sort();
                got.sort();
                proptest::prop_assert_eq!(got, expected);
                if b % 2 == 0 {
                    let state = spilled.snapshot().unwrap();
                    store.commit(b"checkpoint").unwrap();
                    spilled.evict();
                    proptest::prop_assert_eq!(spilled.state_rows(), 0);
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
}
