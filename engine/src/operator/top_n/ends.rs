//! When each of a per-window Top-N's partitions in the state store ends, so that the watermark
//! frees partitions that left memory as it frees those in memory.

use std::ops::Bound;

use crate::state_store::StateTable;
use crate::{Error, Result};

/// An index of (end, partition key) beside the Top-N's table of partitions: a partition's entry
/// is staged with the checkpoint after it is made, and deleted with the one after it expires.
#[derive(Debug)]
pub(super) struct EndIndex {
    table: StateTable,
    /// Entries of partitions made since the last snapshot.
    made: Vec<Vec<u8>>,
    /// Entries of partitions expired since the last snapshot.
    gone: Vec<Vec<u8>>,
    /// The watermark up to which stored partitions have been expired.
    expired_up_to: Option<i64>,
}

/// An end's bytes, ordered as the signed end is.
fn end_bytes(end: i64) -> [u8; 8] {
    ((end as u64) ^ (1 << 63)).to_be_bytes()
}

impl EndIndex {
    pub(super) fn new(table: StateTable) -> Self {
        Self {
            table,
            made: Vec::new(),
            gone: Vec::new(),
            expired_up_to: None,
        }
    }

    /// Partition `key`, ending at `end`, was made.
    pub(super) fn made(&mut self, end: i64, key: &[u8]) {
        self.made.push([&end_bytes(end)[..], key].concat());
    }

    /// Partition `key`, ending at `end`, expired.
    pub(super) fn expired(&mut self, end: i64, key: &[u8]) {
        self.gone.push([&end_bytes(end)[..], key].concat());
    }

    /// Calls `f(end, key)` on every stored partition ending after the last watermark this was
    /// called with and at or before `watermark`, marking each expired.
    pub(super) fn expire(
        &mut self,
        watermark: i64,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let from = match self.expired_up_to {
            Some(w) if w >= watermark => return Ok(()),
            Some(w) => end_bytes(w.saturating_add(1)),
            None => end_bytes(i64::MIN),
        };
        let to = end_bytes(watermark.saturating_add(1));
        let to = match watermark {
            i64::MAX => Bound::Unbounded,
            _ => Bound::Excluded(&to[..]),
        };
        let mut gone = Vec::new();
        self.table.scan((Bound::Included(&from[..]), to), |k, _| {
            gone.push(k.to_vec());
            Ok(())
        })?;
        for entry in gone {
            let key = entry
                .get(8..)
                .ok_or_else(|| Error::Corrupt("a Top-N end entry".into()))?;
            f(key)?;
            self.gone.push(entry);
        }
        self.expired_up_to = Some(watermark);
        Ok(())
    }

    /// Restored at `watermark`: partitions ending by then were deleted with that checkpoint.
    pub(super) fn restored(&mut self, watermark: Option<i64>) {
        self.expired_up_to = watermark;
    }

    /// Stages for the next checkpoint the entries made, then those gone.
    pub(super) fn stage(&mut self) {
        let made = self.made.drain(..).map(|k| (k, Some(Vec::new())));
        let gone = self.gone.drain(..).map(|k| (k, None));
        self.table.stage_all(made.chain(gone));
    }
}
