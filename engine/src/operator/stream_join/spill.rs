//! The stored rows of a join without a time bound, beyond memory: each input's rows in the
//! query's state store under their join key, read back by key when the other input probes.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use foldhash::{HashMap, HashMapExt};

use super::Stored;
use crate::operator::TableSource;
use crate::state_store::StateTable;
use crate::{Error, Result};

/// The chunk id by which a probe names the rows it read from the store (see [`Fetched`]).
pub(super) const FETCHED: usize = usize::MAX;

/// Bytes of a stored row's key after its join key: its chunk id and its row in the chunk.
const ID_BYTES: usize = 12;

/// A row of the store: its key and its value.
type StoreRow = (Box<[u8]>, Box<[u8]>);

/// A row of the store with a new value: its key, and the value and whether it is staged.
type Rewritten = HashMap<Box<[u8]>, (Box<[u8]>, bool)>;

/// Bytes an entry of `Input::matched` costs beyond its key and value.
const MATCHED_OVERHEAD: usize = 64;

/// One input's rows in the store.
///
/// A row's key is its join key (row format, self-delimiting) followed by its chunk id (u64, big
/// endian) and its row in the chunk (u32, big endian), so the rows of one join key are a range
/// and keep their arrival order. Its value is the row (row format of the input's columns),
/// followed, for the preserved input of an outer join, by one byte: whether it has joined.
#[derive(Debug)]
struct Input {
    table: StateTable,
    rows: RowConverter,
    /// The input's columns, all nullable, for rows read back.
    schema: SchemaRef,
    /// Whether values end with the matched byte.
    flagged: bool,
    /// Chunks below this id are staged for the store (and, once committed, in it).
    staged: usize,
    /// Chunks below this id left memory: their rows are read from the store.
    evicted: usize,
    /// Rows of staged chunks still in memory that joined for the first time since the last
    /// checkpoint, as (chunk id, row): staged again with the next.
    rematched: Vec<(usize, u32)>,
    /// Rows read from the store that joined for the first time: key, value as it is now, and
    /// whether that value is staged. Reads of the store find the old value until the commit
    /// that writes the new one, so the entries stay until the next eviction (which follows a
    /// commit of everything staged).
    matched: Rewritten,
    matched_bytes: usize,
}

/// Both inputs' rows in the store.
#[derive(Debug)]
pub(super) struct JoinSpill {
    inputs: [Input; 2],
    /// Whether checkpoints keep the rows in the store (else in the checkpoint itself).
    in_store: bool,
}

/// Rows of one input read from the store for one probing batch, as one batch.
pub(super) struct Fetched {
    pub(super) batch: RecordBatch,
    /// Per row of `batch`: its key in the store and its value.
    keys: Vec<StoreRow>,
    /// Per row of `batch`: whether it has joined (for an outer join's preserved input).
    pub(super) matched: Vec<bool>,
    /// Per row of the probing batch: the rows of `batch` under its join key.
    pub(super) hits: Vec<Vec<u32>>,
}

impl JoinSpill {
    /// Tables `{name}-left` and `{name}-right` of `tables` for inputs whose columns are
    /// `schemas`; `flagged` says which inputs are an outer join's preserved ones.
    pub(super) fn attach(
        tables: &mut dyn TableSource,
        name: &str,
        schemas: [&[Arc<Field>]; 2],
        flagged: [bool; 2],
    ) -> Result<Self> {
        let input = |table, fields: &[Arc<Field>], flagged| -> Result<Input> {
            let fields: Vec<Field> = fields
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect();
            Ok(Input {
                table,
                rows: RowConverter::new(
                    fields
                        .iter()
                        .map(|f| SortField::new(f.data_type().clone()))
                        .collect(),
                )?,
                schema: Arc::new(Schema::new(fields)),
                flagged,
                staged: 0,
                evicted: 0,
                rematched: Vec::new(),
                matched: HashMap::new(),
                matched_bytes: 0,
            })
        };
        let left = tables.table(&format!("{name}-left"))?;
        let right = tables.table(&format!("{name}-right"))?;
        Ok(Self {
            inputs: [
                input(left, schemas[0], flagged[0])?,
                input(right, schemas[1], flagged[1])?,
            ],
            in_store: false,
        })
    }

    /// Whether checkpoints keep the rows in the store.
    pub(super) fn in_store(&self) -> bool {
        self.in_store
    }

    /// Checkpoints keep the rows in the store from now on: the next stages every row.
    pub(super) fn use_store(&mut self) {
        self.in_store = true;
    }

    /// Memory held beyond the stored chunks.
    pub(super) fn bytes(&self) -> usize {
        self.inputs.iter().map(|i| i.matched_bytes).sum()
    }

    /// Whether rows of input `s` may be in the store and not in memory.
    pub(super) fn partial(&self, s: usize) -> bool {
        self.inputs[s].evicted > 0
    }

    /// The rows of input `s` under the join keys of the probing rows `usable` (`keys` per row,
    /// in row format) that are in the store and not in memory; more than `max_rows` of them
    /// (each a joined row to be, were it to pass the filter) is an error, as past the query's
    /// memory limit of `limit` bytes.
    pub(super) fn fetch(
        &self,
        s: usize,
        keys: &datafusion::arrow::row::Rows,
        usable: &[bool],
        max_rows: usize,
        limit: usize,
    ) -> Result<Fetched> {
        let input = &self.inputs[s];
        // Each distinct key is read once, however many probing rows share it.
        let mut first_of: HashMap<&[u8], usize> = HashMap::new();
        let mut prefixes: Vec<&[u8]> = Vec::new();
        let mut prefix_of = vec![usize::MAX; usable.len()];
        for (i, &u) in usable.iter().enumerate() {
            if !u {
                continue;
            }
            let key = keys.row(i).data();
            let next = prefixes.len();
            let p = *first_of.entry(key).or_insert(next);
            if p == next {
                prefixes.push(key);
            }
            prefix_of[i] = p;
        }
        let mut found: Vec<Vec<u32>> = vec![Vec::new(); prefixes.len()];
        let mut rows: Vec<StoreRow> = Vec::new();
        input.table.scan_prefixes(&prefixes, |p, key, value| {
            // The key must be this prefix and an id, not a longer join key that starts alike
            // (row format is self-delimiting, so that cannot be, but an id says so for sure).
            if key.len() != prefixes[p].len() + ID_BYTES {
                return Ok(());
            }
            let chunk = u64::from_be_bytes(
                key[prefixes[p].len()..prefixes[p].len() + 8]
                    .try_into()
                    .map_err(|_| Error::Corrupt("a join row's key is cut short".into()))?,
            );
            // Chunks from the eviction on are in memory, even once committed to the store.
            if chunk >= input.evicted as u64 {
                return Ok(());
            }
            if rows.len() >= max_rows {
                return Err(Error::MemoryExceeded(format!(
                    "one batch of {} rows would join with more than {max_rows} stored rows \
                     read back from disk, past the query's memory limit of {} MiB",
                    usable.len(),
                    limit >> 20
                )));
            }
            found[p].push(rows.len() as u32);
            rows.push((key.into(), value.into()));
            Ok(())
        })?;
        let flag = usize::from(input.flagged);
        let mut matched = Vec::with_capacity(rows.len());
        let parser = input.rows.parser();
        let mut parsed = Vec::with_capacity(rows.len());
        for (key, value) in &rows {
            let cut = value
                .len()
                .checked_sub(flag)
                .ok_or_else(|| Error::Corrupt("a join row's value is empty".into()))?;
            matched.push(input.flagged && (value[cut] == 1 || input.matched.contains_key(key)));
            parsed.push(parser.parse(&value[..cut]));
        }
        let columns = input.rows.convert_rows(parsed)?;
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&input.schema),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?;
        let hits = prefix_of
            .iter()
            .map(|&p| found.get(p).cloned().unwrap_or_default())
            .collect();
        Ok(Fetched {
            batch,
            keys: rows,
            matched,
            hits,
        })
    }

    /// Rows `rows` of `fetched` (of input `s`) joined for the first time: their new value is
    /// staged with the next checkpoint.
    pub(super) fn mark_fetched(&mut self, s: usize, fetched: &Fetched, rows: &[u32]) {
        let input = &mut self.inputs[s];
        for &r in rows {
            let (key, value) = &fetched.keys[r as usize];
            if input.matched.contains_key(key) {
                continue;
            }
            let mut value = value.clone();
            if let Some(last) = value.last_mut() {
                *last = 1;
            }
            input.matched_bytes += key.len() + value.len() + MATCHED_OVERHEAD;
            input.matched.insert(key.clone(), (value, false));
        }
    }

    /// Row `row` of chunk `chunk` of input `s`, in memory, joined for the first time.
    pub(super) fn mark_in_memory(&mut self, s: usize, chunk: usize, row: u32) {
        if chunk < self.inputs[s].staged {
            self.inputs[s].rematched.push((chunk, row));
        }
    }

    /// Stages for the next checkpoint what input `s` stored since the last one (its chunks of
    /// `stored` not yet staged) and the rows that joined for the first time since.
    pub(super) fn stage(&mut self, s: usize, stored: &Stored) -> Result<()> {
        let input = &mut self.inputs[s];
        let next = stored.first + stored.chunks.len();
        let mut rematched = std::mem::take(&mut input.rematched);
        rematched.sort_unstable();
        rematched.dedup();
        let mut changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut stage_rows = |id: usize, picks: &mut dyn Iterator<Item = usize>| -> Result<()> {
            let Some(chunk) = stored.chunk(id) else {
                return Ok(());
            };
            let keys = chunk.keys.as_ref().ok_or_else(|| {
                Error::Internal("a join without keys keeps its rows in memory".into())
            })?;
            let rows = input.rows.convert_columns(chunk.batch.columns())?;
            for r in picks {
                let mut key = keys.row(r).data().to_vec();
                key.extend_from_slice(&(id as u64).to_be_bytes());
                key.extend_from_slice(&(r as u32).to_be_bytes());
                let mut value = rows.row(r).data().to_vec();
                if input.flagged {
                    let joined = chunk.matched.as_ref().is_some_and(|m| m[r]);
                    value.push(u8::from(joined));
                }
                changes.push((key, Some(value)));
            }
            Ok(())
        };
        for run in rematched.chunk_by(|a, b| a.0 == b.0) {
            stage_rows(run[0].0, &mut run.iter().map(|p| p.1 as usize))?;
        }
        for id in input.staged.max(stored.first)..next {
            let n = stored.chunk(id).map_or(0, |c| c.batch.num_rows());
            stage_rows(id, &mut (0..n))?;
        }
        for (key, (value, staged)) in input.matched.iter_mut().filter(|m| !m.1.1) {
            changes.push((key.to_vec(), Some(value.to_vec())));
            *staged = true;
        }
        input.table.stage_all(changes);
        input.staged = next;
        Ok(())
    }

    /// Input `s`'s chunks all staged and committed: they leave memory (`stored` is emptied),
    /// and its rows are read from the store from now on. Does nothing if checkpoints do not
    /// keep the rows in the store yet, or something of `s` is not staged yet.
    pub(super) fn evict(&mut self, s: usize, stored: &mut Stored) {
        if !self.in_store {
            return;
        }
        let input = &mut self.inputs[s];
        let next = stored.first + stored.chunks.len();
        if input.staged != next
            || !input.rematched.is_empty()
            || input.matched.values().any(|m| !m.1)
        {
            return;
        }
        *stored = Stored {
            first: next,
            ..Stored::default()
        };
        input.evicted = next;
        input.matched.clear();
        input.matched_bytes = 0;
    }

    /// Restores input `s` from a checkpoint in the store: its rows are all there, none in
    /// memory; new chunks are numbered from `next`.
    pub(super) fn restored(&mut self, s: usize, stored: &mut Stored, next: usize) {
        self.in_store = true;
        *stored = Stored {
            first: next,
            ..Stored::default()
        };
        let input = &mut self.inputs[s];
        input.staged = next;
        input.evicted = next;
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column};
    use proptest::prelude::*;

    use super::*;
    use crate::operator::stream_join::tests::{batch, schema};
    use crate::operator::stream_join::{JoinInput, StreamJoinOperator};
    use crate::operator::{BinaryOperator, Side};
    use crate::state_store::StateStore;

    /// A join on k without a time bound; `keep` says which inputs an outer join preserves;
    /// with `filter`, only pairs with `lt <= rt` join.
    fn join(keep: [bool; 2], filter: bool) -> StreamJoinOperator {
        let (l, r) = (schema("l"), schema("r"));
        let nullable = |s: &SchemaRef, yes: bool| -> Vec<Arc<Field>> {
            s.fields()
                .iter()
                .map(|f| Arc::new(f.as_ref().clone().with_nullable(yes || f.is_nullable())))
                .collect()
        };
        let output = Arc::new(Schema::new(
            nullable(&l, keep[1])
                .into_iter()
                .chain(nullable(&r, keep[0]))
                .collect::<Vec<_>>(),
        ));
        let input = |name: &str, keep_unmatched| JoinInput {
            keys: vec![Arc::new(Column::new(&format!("{name}k"), 0)) as _],
            time: None,
            time_lag_ns: 0,
            expiry_column: None,
            expiry_offset_ns: 0,
            keep_unmatched,
        };
        let filter = filter.then(|| {
            Arc::new(BinaryExpr::new(
                Arc::new(Column::new("lt", 1)),
                Op::LtEq,
                Arc::new(Column::new("rt", 3)),
            )) as Arc<dyn PhysicalExpr>
        });
        StreamJoinOperator::try_new(input("l", keep[0]), input("r", keep[1]), &l, filter, output)
            .expect("join")
    }

    #[test]
    fn rows_read_back_past_the_memory_limit_are_refused() {
        let (l, r) = (schema("l"), schema("r"));
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut op = join([false, false], false);
        assert!(op.attach_store(&mut store.clone(), "join-1").unwrap());
        op.limit_memory(64 << 10);
        op.spill_from = 0;
        let many: Vec<(Option<i64>, i64)> = (0..5000).map(|t| (Some(1), t)).collect();
        assert!(
            op.process_batch(Side::Left, batch(&l, &many))
                .unwrap()
                .is_empty()
        );
        op.snapshot().unwrap();
        store.commit(b"checkpoint").unwrap();
        op.evict();
        assert_eq!(op.state_rows(), 0);
        // One row of the other input would join all 5,000, read back from disk at once.
        let e = op
            .process_batch(Side::Right, batch(&r, &[(Some(1), 0)]))
            .expect_err("5,000 joined rows past a 64 KiB limit");
        assert!(matches!(e, Error::MemoryExceeded(_)), "{e}");
        // A key with few rows on disk still joins.
        let few: Vec<(Option<i64>, i64)> = (0..3).map(|t| (Some(2), t)).collect();
        op.process_batch(Side::Left, batch(&l, &few)).unwrap();
        op.snapshot().unwrap();
        store.commit(b"checkpoint").unwrap();
        op.evict();
        let out = op
            .process_batch(Side::Right, batch(&r, &[(Some(2), 0)]))
            .unwrap();
        assert_eq!(out.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
    }

    proptest! {
        /// A join whose stored rows go to the state store (staged at checkpoints committed at
        /// once or a batch later, dropped from memory after some, read back by key when the
        /// other input probes), restarted from the store once, emits the same changes, batch
        /// by batch, as the same join in memory: inner, left, right and full outer, with and
        /// without a filter.
        #[test]
        fn rows_spilled_to_the_store_and_read_back_change_nothing(
            batches in prop::collection::vec(
                (any::<bool>(), prop::collection::vec((prop::option::weighted(0.9, 0i64..6), 0i64..20), 1..6)),
                1..24,
            ),
            keep in any::<[bool; 2]>(),
            filter: bool,
            steps in prop::collection::vec(0u8..4, 24),
            restart_at in 0usize..24,
        ) {
            let (l, r) = (schema("l"), schema("r"));
            let dir = tempfile::tempdir().unwrap();
            let mut store = StateStore::open(dir.path()).unwrap();
            let spilling = |store: &StateStore| {
                let mut op = join(keep, filter);
                assert!(op.attach_store(&mut store.clone(), "join-1").unwrap());
                op
            };
            let mut memory = join(keep, filter);
            let mut spilled = spilling(&store);
            // Checkpoints put the rows in the store once there are any.
            spilled.spill_from = 0;
            // A checkpoint staged but not yet committed (the writer thread's lag).
            let mut pending = false;
            for (i, (left, rows)) in batches.iter().enumerate() {
                let (side, schema) = if *left { (Side::Left, &l) } else { (Side::Right, &r) };
                let expected = memory.process_batch(side, batch(schema, rows)).unwrap();
                let got = spilled.process_batch(side, batch(schema, rows)).unwrap();
                prop_assert_eq!(crate::operator::sorted_lines(&got), crate::operator::sorted_lines(&expected), "batch {}", i);
                if pending {
                    store.commit(b"checkpoint").unwrap();
                    pending = false;
                }
                match steps[i] {
                    // A checkpoint, written a batch later.
                    1 => {
                        spilled.snapshot().unwrap();
                        pending = true;
                    }
                    // A spill: a checkpoint written at once, then the rows leave memory.
                    2 | 3 => {
                        let state = spilled.snapshot().unwrap();
                        store.commit(b"checkpoint").unwrap();
                        spilled.evict();
                        prop_assert_eq!(spilled.state_bytes(), 0);
                        if i >= restart_at && steps[i] == 3 {
                            drop(spilled);
                            drop(store);
                            store = StateStore::open(dir.path()).unwrap();
                            spilled = spilling(&store);
                            spilled.restore(state).unwrap();
                            spilled.spill_from = 0;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
