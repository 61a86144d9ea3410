//! A COPY's data handed from the connection to a thread of its own, which parses and stores it.

use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::copy::CopyLoader;
use crate::{Error, Result};

/// How much data the connection gathers before handing it over, and how many such pieces may
/// wait: what a COPY holds in memory beyond the rows being parsed and written.
const PIECE_BYTES: usize = 4 << 20;
const PIECES_WAITING: usize = 2;

/// The data of one `COPY ... FROM STDIN` on its way to its [`CopyLoader`], which runs on a
/// thread of its own: receiving from the client overlaps parsing and writing, the connection's
/// task never blocks, and every large allocation of the COPY is made on one thread (with
/// glibc's malloc, memory freed by many threads stays with each thread's arena).
///
/// The loader's thread takes the pieces in order; when they come faster than it keeps up,
/// [`CopyPipe::feed`] waits, so the client is slowed rather than buffered.
#[derive(Debug)]
pub struct CopyPipe {
    gathered: Vec<u8>,
    to_loader: Option<mpsc::Sender<Vec<u8>>>,
    loader: Option<JoinHandle<CopyLoader>>,
}

impl CopyPipe {
    /// Starts the loader's thread.
    pub fn start(mut loader: CopyLoader) -> Result<Self> {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(PIECES_WAITING);
        let handle = std::thread::Builder::new()
            .name("weir-copy".into())
            .spawn(move || {
                while let Some(piece) = rx.blocking_recv() {
                    loader.feed(&piece);
                }
                loader
            })
            .map_err(|e| Error::Internal(format!("cannot start a COPY thread: {e}")))?;
        Ok(Self {
            gathered: Vec::with_capacity(PIECE_BYTES),
            to_loader: Some(tx),
            loader: Some(handle),
        })
    }

    /// Takes the next CopyData message's bytes.
    pub async fn feed(&mut self, data: &[u8]) {
        self.gathered.extend_from_slice(data);
        if self.gathered.len() >= PIECE_BYTES {
            self.hand_over().await;
        }
    }

    async fn hand_over(&mut self) {
        let piece = std::mem::replace(&mut self.gathered, Vec::with_capacity(PIECE_BYTES));
        if let Some(tx) = &self.to_loader {
            // The thread ends only when the sender is dropped, or by a panic, which `finish`
            // reports.
            let _ = tx.send(piece).await;
        }
    }

    /// Hands over the rest of the data and waits until the loader has taken all of it;
    /// returns the loader, to end the COPY with ([`CopyLoader::end`]).
    pub async fn finish(mut self) -> Result<CopyLoader> {
        if !self.gathered.is_empty() {
            self.hand_over().await;
        }
        self.to_loader = None;
        let handle = self
            .loader
            .take()
            .ok_or_else(|| Error::Internal("a COPY was finished twice".into()))?;
        tokio::task::spawn_blocking(move || handle.join())
            .await
            .map_err(|e| Error::Internal(format!("the COPY thread failed: {e}")))?
            .map_err(|_| Error::Internal("the COPY thread panicked".into()))
    }
}
