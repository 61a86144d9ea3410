//! A window aggregate's open windows beyond memory: their partial states go to the query's
//! state store in runs split by a hash of the group key, merged one part at a time at close.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};

use super::{AggregateSpec, Partials, WindowState};
use crate::checkpoint::{OperatorState, ipc_batch, ipc_bytes};
use crate::state_store::StateTable;
use crate::{Error, Result};

/// Parts a window's groups are split into by the hash of their key. A closing window is merged
/// one part at a time, so it holds about a sixteenth of its groups in memory at once.
const PARTS: u16 = 16;

/// The value of a window aggregate's checkpoint whose windows are in the state store.
const IN_STORE: i64 = 1;

/// A window's run of one part: the window's end (ordered as signed), the part, the run.
fn key(end: i64, part: u16, run: u64) -> Vec<u8> {
    let mut key = prefix(end, part);
    key.extend_from_slice(&run.to_be_bytes());
    key
}

/// The keys of every run of one part of a window.
fn prefix(end: i64, part: u16) -> Vec<u8> {
    let mut key = Vec::with_capacity(18);
    key.extend_from_slice(&((end as u64) ^ (1 << 63)).to_be_bytes());
    key.extend_from_slice(&part.to_be_bytes());
    key
}

/// The part of a group key's row-format bytes: FNV-1a, fixed here so that runs written before
/// a restart split groups as the ones after do.
fn part_of(row: &[u8]) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in row {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((h ^ (h >> 32)) % u64::from(PARTS)) as u16
}

/// The row format's fields for group keys of `keys`' types.
fn sort_fields(keys: &SchemaRef) -> Vec<SortField> {
    keys.fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect()
}

/// Open windows of a [`super::WindowAggregateOperator`] in the query's state store.
///
/// While the operator's state is small its checkpoints hold every window whole, as without a
/// store. Once it passes `spill_from` each checkpoint stages, per window with state in memory,
/// that state as the window's run of the current *generation* (replacing the run an earlier
/// checkpoint of the generation staged). An eviction drops every window's state from memory
/// and starts the next generation, so runs of earlier generations are in the store only, and
/// a window's result is all its runs merged.
pub(in crate::operator) struct WindowSpill {
    table: StateTable,
    /// Row format of the hashed group columns, for splitting groups into parts.
    rows: RowConverter,
    /// Whether checkpoints stage windows in the store (from the first past `spill_from`).
    tracking: bool,
    spill_from: usize,
    /// Per window (by end), the runs it has in the store, committed or staged.
    runs: BTreeMap<i64, Vec<u64>>,
    /// The generation of the state in memory: a run of an older one is in the store only.
    generation: u64,
    /// Whether the last snapshot staged all the state in memory (so it may leave).
    staged: bool,
    /// Runs of windows closed since the last snapshot, deleted from the store by the next:
    /// staging anything between snapshots would put it in a checkpoint taken before it.
    gone: Vec<Vec<u8>>,
}

impl std::fmt::Debug for WindowSpill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowSpill")
            .field("tracking", &self.tracking)
            .field("windows", &self.runs.len())
            .field("generation", &self.generation)
            .finish()
    }
}

impl WindowSpill {
    /// A spill into `table` for groups keyed by `keys`, if their types have a row format.
    pub(in crate::operator) fn new(table: StateTable, keys: &SchemaRef) -> Option<Self> {
        if !Self::supports(keys) {
            return None;
        }
        Some(Self {
            table,
            rows: RowConverter::new(sort_fields(keys)).ok()?,
            tracking: false,
            spill_from: usize::MAX,
            runs: BTreeMap::new(),
            generation: 0,
            staged: false,
            gone: Vec::new(),
        })
    }

    /// Whether groups of these types can be split into parts.
    pub(in crate::operator) fn supports(keys: &SchemaRef) -> bool {
        !keys.fields().is_empty() && RowConverter::supports_fields(&sort_fields(keys))
    }

    /// Checkpoints move to the store once the state passes an eighth of `bytes`.
    pub(in crate::operator) fn limit_memory(&mut self, bytes: usize) {
        self.spill_from = bytes / 8;
    }

    /// Whether a snapshot of state of `bytes` in memory goes to the store (and from then on).
    pub(in crate::operator) fn track(&mut self, bytes: usize) -> bool {
        self.tracking |= bytes > self.spill_from;
        self.tracking
    }

    /// State in memory changed since the last snapshot.
    pub(in crate::operator) fn touched(&mut self) {
        self.staged = false;
    }

    /// Whether the window ending at `end` has runs in the store.
    pub(in crate::operator) fn has_runs(&self, end: i64) -> bool {
        self.runs.contains_key(&end)
    }

    /// The ends in `range` of windows (or panes) with runs in the store.
    pub(in crate::operator) fn ends_in(&self, range: std::ops::RangeInclusive<i64>) -> Vec<i64> {
        self.runs.range(range).map(|(e, _)| *e).collect()
    }

    /// Splits groups and their partial states by the part of their key.
    fn split(&self, (keys, partials): &Partials) -> Result<Vec<(u16, Partials)>> {
        let rows = self.rows.convert_columns(keys)?;
        let mut parts: Vec<Vec<u32>> = vec![Vec::new(); usize::from(PARTS)];
        for (i, row) in rows.iter().enumerate() {
            parts[usize::from(part_of(row.data()))].push(i as u32);
        }
        let mut out = Vec::new();
        for (part, rows) in parts.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let rows = UInt32Array::from(rows);
            let pick = |columns: &[_]| -> Result<Vec<_>> {
                columns.iter().map(|c| Ok(take(c, &rows, None)?)).collect()
            };
            let partials = partials.iter().map(|p| pick(p)).collect::<Result<_>>()?;
            out.push((part as u16, (pick(keys)?, partials)));
        }
        Ok(out)
    }

    /// Stages the state in memory of the window ending at `end` as its run of the current
    /// generation. Within a generation a window's groups only grow, so this replaces every
    /// part an earlier snapshot staged.
    pub(in crate::operator) fn stage(&mut self, end: i64, partials: &Partials) -> Result<()> {
        let mut changes = Vec::new();
        for (part, groups) in self.split(partials)? {
            let value = ipc_bytes(&WindowState::to_batch(&groups)?)?;
            changes.push((key(end, part, self.generation), Some(value)));
        }
        if changes.is_empty() {
            return Ok(());
        }
        self.table.stage_all(changes);
        let runs = self.runs.entry(end).or_default();
        if runs.last() != Some(&self.generation) {
            runs.push(self.generation);
        }
        Ok(())
    }

    /// The checkpoint of an operator whose windows are all staged: its watermark and late rows,
    /// [`IN_STORE`] and the generation, and the runs of each window. Stages the deletion of
    /// the runs of windows closed since the last.
    pub(in crate::operator) fn checkpoint(
        &mut self,
        watermark: Option<i64>,
        late: u64,
    ) -> Result<OperatorState> {
        if !self.gone.is_empty() {
            self.table.stage_all(
                std::mem::take(&mut self.gone)
                    .into_iter()
                    .map(|k| (k, None)),
            );
        }
        self.staged = true;
        let (ends, runs): (Vec<i64>, Vec<i64>) = self
            .runs
            .iter()
            .flat_map(|(end, runs)| runs.iter().map(|r| (*end, *r as i64)))
            .unzip();
        let runs = super::super::state_batch(vec![
            Arc::new(Int64Array::from(ends)),
            Arc::new(Int64Array::from(runs)),
        ])?;
        Ok(OperatorState {
            values: vec![
                watermark,
                Some(late as i64),
                Some(IN_STORE),
                Some(self.generation as i64),
            ],
            batches: vec![runs],
        })
    }

    /// Whether `state` is a checkpoint of [`WindowSpill::checkpoint`].
    pub(in crate::operator) fn is_stored(state: &OperatorState) -> bool {
        state.values.len() == 4 && state.values[2] == Some(IN_STORE) && state.batches.len() == 1
    }

    /// Takes the runs and generation of a checkpoint of [`WindowSpill::checkpoint`]; memory
    /// holds no window then, so the next generation starts.
    pub(in crate::operator) fn restore(&mut self, state: &OperatorState) -> Result<()> {
        let generation = state.value(3)?.unwrap_or(0);
        let corrupt = || Error::Corrupt("a window aggregate's runs are not two numbers".into());
        let batch = state.batches.first().ok_or_else(corrupt)?;
        if batch.num_columns() != 2 || batch.columns().iter().any(|c| c.null_count() > 0) {
            return Err(corrupt());
        }
        let ends = batch
            .column(0)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(corrupt)?;
        let runs = batch
            .column(1)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(corrupt)?;
        self.runs.clear();
        for (end, run) in ends.values().iter().zip(runs.values()) {
            self.runs.entry(*end).or_default().push(*run as u64);
        }
        self.generation = generation as u64 + 1;
        self.tracking = true;
        self.staged = true;
        Ok(())
    }

    /// Drops the state in memory, if the last snapshot staged all of it: a new generation
    /// starts. Returns whether it did.
    pub(in crate::operator) fn evict(&mut self) -> bool {
        if !self.tracking || !self.staged {
            return false;
        }
        self.generation += 1;
        true
    }

    /// Merges the runs in the store of the windows (or panes) ending at `ends` with `memory`
    /// (what memory holds of them), one part of their groups at a time, handing each part's
    /// merged state to `emit`.
    pub(in crate::operator) fn merge(
        &self,
        ends: &[i64],
        memory: &[&Partials],
        keys: &SchemaRef,
        aggregates: &[AggregateSpec],
        mut emit: impl FnMut(WindowState) -> Result<()>,
    ) -> Result<()> {
        let mut in_memory: Vec<Vec<Partials>> = vec![Vec::new(); usize::from(PARTS)];
        for partials in memory {
            for (part, groups) in self.split(partials)? {
                in_memory[usize::from(part)].push(groups);
            }
        }
        let stored: Vec<i64> = ends
            .iter()
            .copied()
            .filter(|end| {
                self.runs
                    .get(end)
                    .is_some_and(|runs| runs.iter().any(|&r| r < self.generation))
            })
            .collect();
        for (part, memory) in (0..PARTS).zip(in_memory) {
            let mut state = WindowState::new(keys, aggregates)?;
            let prefixes: Vec<Vec<u8>> = stored.iter().map(|&end| prefix(end, part)).collect();
            let prefixes: Vec<&[u8]> = prefixes.iter().map(Vec::as_slice).collect();
            self.table.scan_prefixes(&prefixes, |_, key, value| {
                let run = key
                    .get(10..18)
                    .and_then(|r| r.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| Error::Corrupt("a window run's key".into()))?;
                // A run of this generation is what memory holds.
                if run < self.generation {
                    state.merge(&ipc_batch(value)?, keys, aggregates)?;
                }
                Ok(())
            })?;
            for groups in memory {
                state.merge(&WindowState::to_batch(&groups)?, keys, aggregates)?;
            }
            if !state.groups.is_empty() {
                emit(state)?;
            }
        }
        Ok(())
    }

    /// The window (or pane) ending at `end` is done: the next snapshot deletes its runs.
    pub(in crate::operator) fn forget(&mut self, end: i64) {
        let runs = self.runs.remove(&end).unwrap_or_default();
        let gone = runs
            .iter()
            .flat_map(|&run| (0..PARTS).map(move |part| key(end, part, run)));
        self.gone.extend(gone);
    }
}

#[cfg(test)]
pub(in crate::operator) mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    use super::super::tests::{S, batch, operator, rows};
    use super::super::{Emit, WindowAggregateOperator};
    use crate::checkpoint::OperatorState;
    use crate::operator::Operator;
    use crate::state_store::StateStore;

    /// Drives `memory` and an operator `spilling` makes over a state store through `steps`:
    /// each step's inputs, given by `apply` (which returns what the operator emits), then an
    /// action: 1–2 a checkpoint committed at the next step; 3–4 a spill (a checkpoint committed
    /// at once, then an eviction); 5 `kill -9` (the store reopened, losing what was staged and
    /// not committed, the operator restored from the last committed checkpoint and the inputs
    /// since replayed). Every input, replays included, must emit what it did in memory. The
    /// last steps must leave no state: after a last checkpoint, tables `emptied` are empty.
    pub(in crate::operator) fn spilled_equals_memory<O, I, T>(
        mut memory: O,
        spilling: impl Fn(&StateStore) -> O,
        steps: &[(Vec<I>, u8)],
        apply: impl Fn(&mut O, &I) -> T,
        emptied: &[&str],
    ) -> Result<(), TestCaseError>
    where
        O: Operator,
        T: PartialEq + std::fmt::Debug,
    {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path()).unwrap();
        let mut spilled = spilling(&store);
        let mut committed: Option<OperatorState> = None;
        // The inputs since the committed checkpoint, with what the memory operator emitted.
        let mut since: Vec<(&I, T)> = Vec::new();
        // A checkpoint staged and not yet committed, and how many inputs it covers.
        let mut pending: Option<(OperatorState, usize)> = None;
        for (i, (inputs, action)) in steps.iter().enumerate() {
            for input in inputs {
                let expected = apply(&mut memory, input);
                prop_assert_eq!(&apply(&mut spilled, input), &expected, "step {}", i);
                since.push((input, expected));
            }
            prop_assert_eq!(spilled.late_rows(), memory.late_rows());
            if *action == 5 {
                drop(spilled);
                drop(store);
                store = StateStore::open(dir.path()).unwrap();
                spilled = spilling(&store);
                if let Some(state) = &committed {
                    spilled.restore(state.clone()).unwrap();
                }
                for (input, expected) in &since {
                    prop_assert_eq!(&apply(&mut spilled, input), expected, "replay at {}", i);
                }
                pending = None;
                continue;
            }
            if let Some((state, covered)) = pending.take() {
                store.commit(b"checkpoint").unwrap();
                committed = Some(state);
                since.drain(..covered);
            }
            match action {
                1 | 2 => pending = Some((spilled.snapshot().unwrap(), since.len())),
                3 | 4 => {
                    let state = spilled.snapshot().unwrap();
                    store.commit(b"checkpoint").unwrap();
                    let stored = super::WindowSpill::is_stored(&state);
                    committed = Some(state);
                    since.clear();
                    spilled.evict();
                    if stored {
                        prop_assert_eq!(spilled.state_bytes(), 0);
                    }
                }
                _ => {}
            }
        }
        spilled.snapshot().unwrap();
        store.commit(b"checkpoint").unwrap();
        for name in emptied {
            let rows = store.table(name).unwrap().len().unwrap();
            prop_assert_eq!(rows, 0, "rows left in {}", name);
        }
        Ok(())
    }

    /// What the window aggregates are given.
    #[derive(Debug, Clone)]
    enum Step {
        Rows(Vec<(i64, i64, i64)>),
        Watermark(i64),
    }

    fn spilling(store: &StateStore, limit: usize) -> WindowAggregateOperator {
        let mut op = operator(Emit::OnWindowClose);
        assert!(op.attach_store(&mut store.clone(), "operator-1").unwrap());
        op.limit_memory(limit);
        op
    }

    #[test]
    fn explain_says_which_windows_spill() {
        let spills = "state=spills to disk past a quarter of the memory limit";
        assert!(operator(Emit::OnWindowClose).explain().contains(spills));
        assert!(!operator(Emit::OnUpdate).explain().contains(spills));
        let late = operator(Emit::OnWindowClose).with_allowed_lateness(S);
        assert!(!late.explain().contains(spills));
    }

    proptest! {
        /// A window aggregate whose open windows go to the state store (staged at checkpoints
        /// committed at once or a step later, dropped from memory at spills, merged with what
        /// memory holds when they close), killed and restarted from its last committed
        /// checkpoint with the steps since replayed, emits what the same aggregate in memory
        /// emits, step by step, and counts the same late rows.
        #[test]
        fn windows_spilled_to_the_store_and_merged_at_close_change_nothing(
            steps in prop::collection::vec(
                (prop::collection::vec((0i64..4, 0i64..40, -5i64..100), 0..30), 0i64..3, 0u8..6),
                1..30,
            ),
            // Checkpoints go to the store from the first (0) or once the state has grown.
            limit in prop_oneof![Just(0usize), Just(16_000usize)],
        ) {
            let mut closed = 0i64;
            let mut given = Vec::new();
            for (input, advance, action) in steps {
                // Rows of the window before the watermark (late), and of the next three.
                let input: Vec<_> =
                    input.iter().map(|&(w, k, v)| ((closed + w - 1) * 10, k, v)).collect();
                let mut inputs = vec![Step::Rows(input)];
                if advance > 0 {
                    closed += advance;
                    inputs.push(Step::Watermark(closed * 10 * S));
                }
                given.push((inputs, action));
            }
            given.push((vec![Step::Watermark((closed + 10) * 10 * S)], 0));
            spilled_equals_memory(
                operator(Emit::OnWindowClose),
                |store| spilling(store, limit),
                &given,
                |op, step| match step {
                    Step::Rows(r) => rows(&op.process_batch(batch(r)).unwrap()),
                    Step::Watermark(w) => rows(&op.on_watermark(*w).unwrap()),
                },
                &["operator-1"],
            )?;
        }
    }
}
