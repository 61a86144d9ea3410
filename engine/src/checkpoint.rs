//! Durable snapshots of continuous queries: written atomically, read back as the newest valid one.
//!
//! A checkpoint file holds a fingerprint of the query it belongs to and a list of
//! [`OperatorState`]s (the runtime's source offsets and watermarks, every operator's state, the
//! result rows). Layout, all integers little-endian:
//!
//! ```text
//! "WCK1" epoch:u64 fingerprint_len:u32 fingerprint parts:u32
//!   per part: values:u32 (present:u8 value:i64)* batches:u32 (len:u32 arrow-ipc-stream)*
//! crc32c-of-all-the-above:u32 "WCKE"
//! ```
//!
//! A file is written under a temporary name, fsynced, renamed into place and the directory
//! fsynced; older files are deleted only after that, and the newest [`KEEP`] are kept so that a
//! damaged newest file still leaves one to recover from.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::IoContext;
use crate::log::sync_dir;
use crate::state_store::StateStore;
use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"WCK1";
const TRAILER: &[u8; 4] = b"WCKE";
/// Checkpoint files kept: the newest and the one before it.
pub const KEEP: usize = 2;

/// The state of one operator (or of the runtime, or of a result table) in a checkpoint: a few
/// numbers and some Arrow batches, whose meaning the owner defines.
#[derive(Debug, Clone, Default)]
pub struct OperatorState {
    /// Small scalars (watermarks, counters, offsets); `None` for an absent value.
    pub values: Vec<Option<i64>>,
    /// Bulk state (group keys with accumulator states, stored join rows, result rows).
    pub batches: Vec<RecordBatch>,
}

impl OperatorState {
    /// Whether there is nothing in it (the state of a stateless operator).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.batches.is_empty()
    }

    /// Reads `values[i]`, failing if the state is too short (a checkpoint from another plan).
    pub fn value(&self, i: usize) -> Result<Option<i64>> {
        self.values.get(i).copied().ok_or_else(|| {
            Error::Corrupt(format!(
                "operator state has {} values, expected more than {i}",
                self.values.len()
            ))
        })
    }
}

/// A query's snapshot: which query it is for and the states of its parts, in the query's order.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// Increases by one per checkpoint of a query.
    pub epoch: u64,
    /// Identifies the query plan; a checkpoint is only restored into the same plan.
    pub fingerprint: String,
    /// The states, in an order the runtime defines.
    pub parts: Vec<OperatorState>,
}

impl Checkpoint {
    /// The checkpoint as bytes (see the module documentation).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.epoch.to_le_bytes());
        put_len(&mut out, self.fingerprint.len())?;
        out.extend_from_slice(self.fingerprint.as_bytes());
        put_len(&mut out, self.parts.len())?;
        for part in &self.parts {
            put_len(&mut out, part.values.len())?;
            for v in &part.values {
                out.push(u8::from(v.is_some()));
                out.extend_from_slice(&v.unwrap_or(0).to_le_bytes());
            }
            put_len(&mut out, part.batches.len())?;
            for b in &part.batches {
                let ipc = ipc_bytes(b)?;
                put_len(&mut out, ipc.len())?;
                out.extend_from_slice(&ipc);
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(TRAILER);
        Ok(out)
    }

    /// Decodes bytes made by [`Checkpoint::encode`]; anything else is [`Error::Corrupt`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let corrupt = |what: &str| Error::Corrupt(format!("checkpoint {what}"));
        if bytes.len() < MAGIC.len() + 8 + TRAILER.len() || &bytes[..4] != MAGIC {
            return Err(corrupt("has no header"));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 8);
        if &tail[4..] != TRAILER {
            return Err(corrupt("has no trailer (torn write)"));
        }
        let crc = u32::from_le_bytes(tail[..4].try_into().expect("a 4-byte slice"));
        if crc32c::crc32c(body) != crc {
            return Err(corrupt("fails its checksum"));
        }
        let mut r = Reader {
            bytes: body,
            pos: MAGIC.len(),
        };
        let epoch = r.u64()?;
        let len = r.len()?;
        let fingerprint = String::from_utf8(r.take(len)?.to_vec())
            .map_err(|_| corrupt("has a fingerprint that is not UTF-8"))?;
        let parts_len = r.len()?;
        let mut parts = Vec::new();
        for _ in 0..parts_len {
            let n = r.len()?;
            let mut values = Vec::new();
            for _ in 0..n {
                let present = r.take(1)?[0] != 0;
                let v = r.u64()? as i64;
                values.push(present.then_some(v));
            }
            let n = r.len()?;
            let mut batches = Vec::new();
            for _ in 0..n {
                let len = r.len()?;
                batches.push(ipc_batch(r.take(len)?)?);
            }
            parts.push(OperatorState { values, batches });
        }
        if r.pos != body.len() {
            return Err(corrupt("has bytes after its last part"));
        }
        Ok(Self {
            epoch,
            fingerprint,
            parts,
        })
    }
}

/// `batch` as an Arrow IPC stream of its own rows only (a slice does not write the whole
/// buffers it points into), as [`ipc_batch`] reads it back.
pub(crate) fn ipc_bytes(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut ipc = Vec::new();
    let mut w = StreamWriter::try_new(&mut ipc, batch.schema_ref())?;
    w.write(&crate::compact::compact(batch)?)?;
    w.finish()?;
    drop(w);
    Ok(ipc)
}

/// The batch of an IPC stream written by [`ipc_bytes`].
pub(crate) fn ipc_batch(ipc: &[u8]) -> Result<RecordBatch> {
    let mut reader = StreamReader::try_new(Cursor::new(ipc), None)?;
    reader
        .next()
        .ok_or_else(|| Error::Corrupt("checkpoint has an empty batch stream".into()))?
        .map_err(Into::into)
}

fn put_len(out: &mut Vec<u8>, n: usize) -> Result<()> {
    let n = u32::try_from(n)
        .map_err(|_| Error::LimitExceeded(format!("a checkpoint section of {n} is too large")))?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

/// Bounds-checked reading of a checkpoint body: running out is corruption, never a panic.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| Error::Corrupt("checkpoint ends inside a section".into()))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn len(&mut self) -> Result<usize> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("a 4-byte slice")) as usize)
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("an 8-byte slice")))
    }
}

/// The checkpoint files of one query, in one directory; or, for a query whose operators keep
/// state beyond memory, its [`StateStore`], where each checkpoint is written with only the
/// state that changed since the one before.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    state: Option<StateStore>,
}

/// Where a query's state store is, under its checkpoint directory.
const STATE_DIR: &str = "state";

fn file_name(epoch: u64) -> String {
    format!("checkpoint-{epoch:020}.weir")
}

impl CheckpointStore {
    /// The store in `dir`, created if missing.
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            state: None,
        })
    }

    /// The query's state store (in `state/` of the directory), opened on first use. From then
    /// on checkpoints are written there (see [`CheckpointStore::write`]).
    pub fn state(&mut self) -> Result<StateStore> {
        if let Some(s) = &self.state {
            return Ok(s.clone());
        }
        let store = StateStore::open(&self.dir.join(STATE_DIR))?;
        self.state = Some(store.clone());
        Ok(store)
    }

    /// Forgets the state store's checkpoint and rows (they belong to another plan).
    pub fn clear_state(&self) -> Result<()> {
        match &self.state {
            Some(s) => s.clear(),
            None => Ok(()),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Epochs of the checkpoint files present, oldest first.
    fn epochs(&self) -> Result<Vec<u64>> {
        let mut epochs = Vec::new();
        for entry in fs::read_dir(&self.dir).ctx(|| format!("listing {}", self.dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", self.dir.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(e) = name
                .strip_prefix("checkpoint-")
                .and_then(|n| n.strip_suffix(".weir"))
                .and_then(|n| n.parse().ok())
            {
                epochs.push(e);
            }
        }
        epochs.sort_unstable();
        Ok(epochs)
    }

    /// Writes `checkpoint` durably, then deletes all but the newest [`KEEP`] files.
    ///
    /// On error nothing changed that recovery depends on: the previous checkpoints are intact.
    /// Returns the bytes written.
    pub fn write(&self, checkpoint: &Checkpoint) -> Result<u64> {
        let bytes = checkpoint.encode()?;
        if let Some(state) = &self.state {
            let written = state.commit(&bytes)?;
            // Files from before the query kept state in the store are superseded.
            let epochs = self.epochs()?;
            for e in &epochs {
                let p = self.dir.join(file_name(*e));
                fs::remove_file(&p).ctx(|| format!("deleting {}", p.display()))?;
            }
            if !epochs.is_empty() {
                sync_dir(&self.dir)?;
            }
            return Ok(written);
        }
        let name = file_name(checkpoint.epoch);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let path = self.dir.join(&name);
        let written = (|| -> Result<()> {
            fs::write(&tmp, &bytes).ctx(|| format!("writing {}", tmp.display()))?;
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .ctx(|| format!("fsync of {}", tmp.display()))?;
            fs::rename(&tmp, &path).ctx(|| format!("renaming {}", tmp.display()))?;
            sync_dir(&self.dir)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let epochs = self.epochs()?;
        let old = epochs.len().saturating_sub(KEEP);
        for e in &epochs[..old] {
            let p = self.dir.join(file_name(*e));
            fs::remove_file(&p).ctx(|| format!("deleting {}", p.display()))?;
        }
        if old > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(bytes.len() as u64)
    }

    /// The newest checkpoint that reads back whole; damaged files are skipped with a warning.
    pub fn latest(&self) -> Result<Option<Checkpoint>> {
        if let Some(c) = self.from_state()? {
            return Ok(Some(c));
        }
        for epoch in self.epochs()?.into_iter().rev() {
            let path = self.dir.join(file_name(epoch));
            let bytes = fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
            match Checkpoint::decode(&bytes) {
                Ok(c) if c.epoch == epoch => return Ok(Some(c)),
                Ok(c) => tracing::warn!(
                    path = %path.display(),
                    epoch = c.epoch,
                    "checkpoint file name and contents disagree; skipped"
                ),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "damaged checkpoint skipped")
                }
            }
        }
        Ok(None)
    }

    /// The oldest checkpoint kept that reads back whole: what recovery may fall back to, so
    /// the log must keep everything it needs.
    pub fn oldest(&self) -> Result<Option<Checkpoint>> {
        // The state store keeps one checkpoint: its own rows are as of it.
        if let Some(c) = self.from_state()? {
            return Ok(Some(c));
        }
        for epoch in self.epochs()? {
            let path = self.dir.join(file_name(epoch));
            let bytes = fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
            if let Ok(c) = Checkpoint::decode(&bytes) {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

impl CheckpointStore {
    /// The checkpoint in the state store, if the query has one there.
    fn from_state(&self) -> Result<Option<Checkpoint>> {
        let Some(state) = &self.state else {
            return Ok(None);
        };
        state
            .checkpoint()?
            .map(|bytes| Checkpoint::decode(&bytes))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn checkpoint(epoch: u64) -> Checkpoint {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
                Arc::new(Int64Array::from(vec![1, 2, epoch as i64])),
            ],
        )
        .expect("a valid batch");
        Checkpoint {
            epoch,
            fingerprint: "plan".into(),
            parts: vec![
                OperatorState {
                    values: vec![Some(7), None, Some(-1)],
                    batches: vec![],
                },
                OperatorState::default(),
                OperatorState {
                    values: vec![],
                    batches: vec![batch.clone(), batch],
                },
            ],
        }
    }

    fn same(a: &Checkpoint, b: &Checkpoint) -> bool {
        a.epoch == b.epoch
            && a.fingerprint == b.fingerprint
            && a.parts.len() == b.parts.len()
            && a.parts
                .iter()
                .zip(&b.parts)
                .all(|(x, y)| x.values == y.values && x.batches == y.batches)
    }

    /// A slice of a large batch (one group of many, a few stored join rows) costs its own rows
    /// in a checkpoint, whatever its columns' types, not its whole parent batch.
    #[test]
    fn slices_are_written_with_their_rows_only() {
        use datafusion::arrow::array::{
            ArrayRef, DictionaryArray, ListArray, StringViewArray, StructArray,
        };
        use datafusion::arrow::datatypes::Int32Type;
        let n = 100_000;
        let text: Vec<String> = (0..n).map(|i| format!("value number {i:>20}")).collect();
        let strings = Arc::new(StringArray::from(text.clone())) as ArrayRef;
        let views = Arc::new(StringViewArray::from(text.clone())) as ArrayRef;
        let dict: DictionaryArray<Int32Type> = text.iter().map(String::as_str).collect();
        let numbers = Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef;
        let list = Arc::new(ListArray::from_iter_primitive::<
            datafusion::arrow::datatypes::Int64Type,
            _,
            _,
        >(
            (0..n as i64).map(|i| Some(vec![Some(i), Some(i + 1)]))
        )) as ArrayRef;
        let structs = Arc::new(StructArray::from(vec![
            (
                Arc::new(Field::new("s", DataType::Utf8, false)),
                Arc::clone(&strings),
            ),
            (
                Arc::new(Field::new("v", DataType::Utf8View, false)),
                Arc::clone(&views),
            ),
        ])) as ArrayRef;
        let columns = vec![
            strings,
            views,
            Arc::new(dict) as ArrayRef,
            numbers,
            list,
            structs,
        ];
        let batch = RecordBatch::try_from_iter(
            columns
                .into_iter()
                .enumerate()
                .map(|(i, c)| (format!("c{i}"), c)),
        )
        .expect("batch");
        let slices: Vec<RecordBatch> = (0..10).map(|i| batch.slice(i * 977, 1)).collect();
        let c = Checkpoint {
            epoch: 1,
            fingerprint: String::new(),
            parts: vec![OperatorState {
                values: vec![],
                batches: slices.clone(),
            }],
        };
        let bytes = c.encode().expect("encodes");
        assert!(
            bytes.len() < 64 * 1024,
            "10 one-row slices took {} bytes",
            bytes.len()
        );
        let back = Checkpoint::decode(&bytes).expect("decodes");
        assert_eq!(back.parts[0].batches, slices);
    }

    #[test]
    fn round_trips_and_keeps_the_newest_two() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = CheckpointStore::open(dir.path()).expect("a store");
        assert!(store.latest().expect("listing").is_none());
        for e in 1..=4 {
            store.write(&checkpoint(e)).expect("a write");
        }
        let latest = store.latest().expect("reading").expect("a checkpoint");
        assert!(same(&latest, &checkpoint(4)));
        assert_eq!(store.epochs().expect("listing"), vec![3, 4]);
        assert_eq!(store.oldest().expect("reading").map(|c| c.epoch), Some(3));
    }

    /// Every way the newest file can be damaged leaves the one before it to recover from, and
    /// no damage makes decoding panic.
    #[test]
    fn torn_and_damaged_files_fall_back_to_the_previous_checkpoint() {
        let good = checkpoint(2).encode().expect("encoding");
        let mut damaged: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        for bit in (0..good.len() * 8).step_by(7) {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            damaged.push(b);
        }
        let mut zeroed = good.clone();
        zeroed.resize(good.len().max(4096), 0);
        zeroed[..4096.min(good.len())].fill(0);
        damaged.push(zeroed);
        let mut junk = good.clone();
        junk.extend_from_slice(b"junk after the end");
        damaged.push(junk);
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = CheckpointStore::open(dir.path()).expect("a store");
        store.write(&checkpoint(1)).expect("a write");
        for bytes in damaged {
            assert!(Checkpoint::decode(&bytes).is_err());
            fs::write(dir.path().join(file_name(2)), &bytes).expect("writing damage");
            let latest = store.latest().expect("reading").expect("a checkpoint");
            assert!(same(&latest, &checkpoint(1)), "fell back to epoch 1");
        }
    }
}
