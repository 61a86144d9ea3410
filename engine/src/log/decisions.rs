//! The decisions of transactions over several streams: a transaction whose decision record is
//! durable commits, in every stream, even if a crash came before all of its commit markers.
//!
//! A transaction within one stream needs no such record: a commit marker in any of its
//! partitions decides (see [`super::transaction`]). One over several streams (a Kafka
//! transaction over several topics) writes its decision here first, with what else it commits
//! (opaque bytes: a Kafka consumer group's offsets), then its markers; opening a stream
//! commits the transactions decided here that it still has open.
//!
//! File format: records of `length:u32le crc32c:u32le txn:u64le payload[length - 8]`; a
//! torn tail (never acknowledged) is cut off on open.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::IoContext;
use crate::{Error, Result};

/// The decision records of one data directory.
#[derive(Debug)]
pub struct Decisions {
    path: PathBuf,
    file: Mutex<File>,
    /// The records found on open: transaction id and payload.
    recovered: Vec<(u64, Vec<u8>)>,
}

impl Decisions {
    /// Opens (or creates) the records at `path`, cutting off a torn tail.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .ctx(|| format!("opening {}", path.display()))?;
        let bytes = std::fs::read(path).ctx(|| format!("reading {}", path.display()))?;
        let (recovered, valid) = parse(&bytes);
        if valid < bytes.len() {
            tracing::warn!(file = %path.display(), "cutting off a torn transaction decision (never acknowledged)");
            file.set_len(valid as u64)
                .and_then(|()| file.sync_all())
                .ctx(|| format!("truncating {}", path.display()))?;
        }
        file.flush().ctx(|| format!("opening {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            recovered,
        })
    }

    /// The transactions decided before this start: for streams to commit where still open.
    pub fn committed(&self) -> HashSet<u64> {
        self.recovered.iter().map(|r| r.0).collect()
    }

    /// The records found on open, with their payloads.
    pub fn recovered(&self) -> &[(u64, Vec<u8>)] {
        &self.recovered
    }

    /// Takes the file for one decision at a time: [`Decision::record`] it, commit the
    /// transaction's markers and what the payload says, then [`Decision::done`].
    pub fn begin(&self) -> Decision<'_> {
        Decision {
            path: &self.path,
            file: self.file.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// One decision being made, with the file held (see [`Decisions::begin`]).
#[derive(Debug)]
pub struct Decision<'a> {
    path: &'a Path,
    file: MutexGuard<'a, File>,
}

impl Decision<'_> {
    /// Writes the decision that transaction `txn` commits, with `payload`, durably.
    pub fn record(&mut self, txn: u64, payload: &[u8]) -> Result<()> {
        let len = u32::try_from(payload.len() + 8)
            .map_err(|_| Error::InvalidArgument("a transaction decision is too large".into()))?;
        let mut body = txn.to_le_bytes().to_vec();
        body.extend_from_slice(payload);
        let mut out = len.to_le_bytes().to_vec();
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
        self.file
            .write_all(&out)
            .and_then(|()| self.file.sync_data())
            .ctx(|| format!("writing {}", self.path.display()))
    }

    /// Forgets every decision, once all they decided is durable (markers, offsets), and the
    /// ones recovered have been applied.
    pub fn done(self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_data())
            .ctx(|| format!("truncating {}", self.path.display()))
    }
}

/// The valid records at the start of `bytes`, and where they end.
fn parse(bytes: &[u8]) -> (Vec<(u64, Vec<u8>)>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(header) = bytes.get(pos..pos + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(body) = bytes.get(pos + 8..pos + 8 + len).filter(|b| b.len() >= 8) else {
            break;
        };
        if crc32c::crc32c(body) != crc {
            break;
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&body[..8]);
        out.push((u64::from_le_bytes(id), body[8..].to_vec()));
        pos += 8 + len;
    }
    (out, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_survive_reopening_and_a_torn_tail_is_cut() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("transactions.log");
        {
            let d = Decisions::open(&path).expect("open");
            let mut one = d.begin();
            one.record(5, b"offsets").expect("record");
            one.record(6, b"").expect("record");
        }
        // A torn third record.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[20, 0, 0, 0, 1, 2]).expect("write");
        drop(f);
        let d = Decisions::open(&path).expect("reopen");
        assert_eq!(d.recovered(), &[(5, b"offsets".to_vec()), (6, Vec::new())]);
        assert_eq!(d.committed(), HashSet::from([5, 6]));
        d.begin().done().expect("done");
        assert!(
            Decisions::open(&path)
                .expect("reopen")
                .recovered()
                .is_empty()
        );
    }
}
