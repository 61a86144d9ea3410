//! The rows of a view that only grows (closed windows, a stream's rows), in memory or in the
//! state store.

use datafusion::arrow::record_batch::RecordBatch;

use super::{IN_STORE, in_store, stored_count};
use crate::Result;
use crate::checkpoint::OperatorState;
use crate::checkpoint::{ipc_batch, ipc_bytes};
use crate::state_store::StateTable;

/// Appended batches. With a state store, each batch is written there once, by the checkpoint
/// after it came, under its sequence number; those a durable checkpoint holds may then leave
/// memory.
#[derive(Debug, Default)]
pub(super) struct AppendRows {
    /// The batches in memory, the newest last.
    batches: Vec<RecordBatch>,
    /// What they hold ([`crate::compact::batch_bytes`]).
    bytes: usize,
    store: Option<AppendStore>,
}

#[derive(Debug)]
struct AppendStore {
    table: StateTable,
    /// The sequence number of `batches[0]`: batches before it are only in the store.
    first: u64,
    /// How many of `batches`, from the first, are staged for (or in) the store.
    staged: usize,
    /// Rows of the batches only in the store.
    outside: usize,
}

impl AppendRows {
    /// Keeps the batches in `table` from now on (see [`AppendRows`]).
    pub(super) fn attach(&mut self, table: StateTable) {
        self.store = Some(AppendStore {
            table,
            first: 0,
            staged: 0,
            outside: 0,
        });
    }

    pub(super) fn push(&mut self, batch: RecordBatch) {
        self.bytes += crate::compact::batch_bytes(&batch);
        self.batches.push(batch);
    }

    /// Whether the batches go to a state store.
    pub(super) fn is_stored(&self) -> bool {
        self.store.is_some()
    }

    /// Rows in the table, in memory or not.
    pub(super) fn len(&self) -> usize {
        let here: usize = self.batches.iter().map(RecordBatch::num_rows).sum();
        here + self.store.as_ref().map_or(0, |s| s.outside)
    }

    /// Bytes of the batches in memory.
    pub(super) fn memory_bytes(&self) -> usize {
        self.bytes
    }

    /// Every batch, oldest first: those only in the store, then those in memory.
    pub(super) fn current(&self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        if let Some(store) = self.store.as_ref().filter(|s| s.first > 0) {
            let end = store.first.to_be_bytes();
            store.table.scan(..end.as_slice(), |_, value| {
                out.push(ipc_batch(value)?);
                Ok(())
            })?;
        }
        out.extend(self.batches.iter().cloned());
        Ok(out)
    }

    /// A checkpoint's part: with a store, stages the batches that came since the last
    /// checkpoint (the part then says where the sequence is and how many rows there are);
    /// without, every batch.
    pub(super) fn checkpoint(&mut self) -> Result<OperatorState> {
        let total = self.len();
        let Some(store) = &mut self.store else {
            return Ok(OperatorState {
                values: Vec::new(),
                batches: self.batches.clone(),
            });
        };
        let new = &self.batches[store.staged..];
        let staged = new
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let seq = store.first + (store.staged + i) as u64;
                Ok((seq.to_be_bytes().to_vec(), Some(ipc_bytes(b)?)))
            })
            .collect::<Result<Vec<_>>>()?;
        store.table.stage_all(staged);
        store.staged = self.batches.len();
        let next = store.first + self.batches.len() as u64;
        Ok(OperatorState {
            values: vec![Some(IN_STORE), Some(next as i64), Some(total as i64)],
            batches: Vec::new(),
        })
    }

    /// Puts back a checkpoint's part made by [`AppendRows::checkpoint`] into an empty table.
    pub(super) fn restore(&mut self, state: OperatorState) -> Result<()> {
        if let Some(store) = in_store(&state, self.store.as_mut())? {
            store.first = stored_count(&state, 1)?;
            store.outside = stored_count(&state, 2)? as usize;
            store.staged = 0;
            return Ok(());
        }
        // From a checkpoint without the store (or before it): with one, the next checkpoint
        // writes them there, as batches not yet staged.
        for b in state.batches.into_iter().filter(|b| b.num_rows() > 0) {
            self.push(b);
        }
        Ok(())
    }

    /// Drops from memory the batches a durable checkpoint holds.
    pub(super) fn evict(&mut self) {
        let Some(store) = &mut self.store else {
            return;
        };
        for b in self.batches.drain(..store.staged) {
            self.bytes -= crate::compact::batch_bytes(&b);
            store.outside += b.num_rows();
        }
        store.first += store.staged as u64;
        store.staged = 0;
    }
}
