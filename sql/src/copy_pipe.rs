//! A COPY's data handed from the connection to a thread of its own, which parses and stores it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::copy::CopyLoader;
use crate::{Error, Result};

/// How much data the connection gathers before handing it over, and how many such pieces may
/// wait: what a COPY holds in memory beyond the rows being parsed and written.
const PIECE_BYTES: usize = 4 << 20;
const PIECES_WAITING: usize = 2;

/// What [`CopyPipe::fed`] holds while the connection waits for a busy loader: not idle.
const WAITING_FOR_LOADER: u64 = u64::MAX;

/// The data of one `COPY ... FROM STDIN` on its way to its [`CopyLoader`], which runs on a
/// thread of its own: receiving from the client overlaps parsing and writing, the connection's
/// task never blocks, and every large allocation of the COPY is made on one thread (with
/// glibc's malloc, memory freed by many threads stays with each thread's arena).
///
/// The loader's thread takes the pieces in order; when they come faster than it keeps up,
/// [`CopyPipe::feed`] waits, so the client is slowed rather than buffered.
///
/// A COPY into a stream writes a log transaction, whose rows hold back every reader of the
/// partitions it wrote until it ends: one whose client sends nothing for the idle timeout is
/// aborted then, so that readers go on (the client learns it when it sends more or ends).
#[derive(Debug)]
pub struct CopyPipe {
    gathered: Vec<u8>,
    to_loader: Option<mpsc::Sender<Piece>>,
    loader: Option<JoinHandle<CopyLoader>>,
    /// When data last came, in milliseconds since `since` ([`WAITING_FOR_LOADER`] while the
    /// connection waits to hand a piece over).
    fed: Arc<AtomicU64>,
    since: Instant,
    /// The task that aborts the COPY once its client is idle too long.
    watchdog: Option<tokio::task::JoinHandle<()>>,
}

/// What the loader's thread is handed.
#[derive(Debug)]
enum Piece {
    Data(Vec<u8>),
    /// The client sent nothing for this long: the COPY is abandoned.
    Idle(Duration),
}

impl CopyPipe {
    /// Starts the loader's thread; a COPY that holds back readers (into a stream) is aborted
    /// once its client sends nothing for `idle` (`None`: never).
    pub fn start(mut loader: CopyLoader, idle: Option<Duration>) -> Result<Self> {
        let idle = idle.filter(|_| loader.holds_back_readers());
        let (tx, mut rx) = mpsc::channel::<Piece>(PIECES_WAITING);
        let handle = std::thread::Builder::new()
            .name("weir-copy".into())
            .spawn(move || {
                while let Some(piece) = rx.blocking_recv() {
                    match piece {
                        Piece::Data(data) => loader.feed(&data),
                        Piece::Idle(idle) => loader.abandon_idle(idle),
                    }
                }
                loader
            })
            .map_err(|e| Error::Internal(format!("cannot start a COPY thread: {e}")))?;
        let fed = Arc::new(AtomicU64::new(0));
        let since = Instant::now();
        // Outside a runtime (no connection to be idle) there is no watchdog.
        let runtime = tokio::runtime::Handle::try_current().ok();
        let watchdog = idle.zip(runtime).map(|(idle, runtime)| {
            let (tx, fed) = (tx.clone(), Arc::clone(&fed));
            runtime.spawn(async move {
                loop {
                    let last = fed.load(Ordering::Relaxed);
                    if last == WAITING_FOR_LOADER {
                        tokio::time::sleep(idle).await;
                        continue;
                    }
                    let quiet = since.elapsed().saturating_sub(Duration::from_millis(last));
                    if quiet >= idle {
                        let _ = tx.send(Piece::Idle(idle)).await;
                        return;
                    }
                    tokio::time::sleep(idle - quiet).await;
                }
            })
        });
        Ok(Self {
            gathered: Vec::with_capacity(PIECE_BYTES),
            to_loader: Some(tx),
            loader: Some(handle),
            fed,
            since,
            watchdog,
        })
    }

    /// Notes that the client is not idle.
    fn note_fed(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.fed.store(now, Ordering::Relaxed);
    }

    /// Takes the next CopyData message's bytes.
    pub async fn feed(&mut self, data: &[u8]) {
        self.note_fed();
        self.gathered.extend_from_slice(data);
        if self.gathered.len() >= PIECE_BYTES {
            // Waiting for a busy loader is not the client's idleness.
            self.fed.store(WAITING_FOR_LOADER, Ordering::Relaxed);
            self.hand_over().await;
            self.note_fed();
        }
    }

    async fn hand_over(&mut self) {
        let piece = std::mem::replace(&mut self.gathered, Vec::with_capacity(PIECE_BYTES));
        if let Some(tx) = &self.to_loader {
            // The thread ends only when the sender is dropped, or by a panic, which `finish`
            // reports.
            let _ = tx.send(Piece::Data(piece)).await;
        }
    }

    /// Hands over the rest of the data and waits until the loader has taken all of it;
    /// returns the loader, to end the COPY with ([`CopyLoader::end`]).
    pub async fn finish(mut self) -> Result<CopyLoader> {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
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

impl Drop for CopyPipe {
    fn drop(&mut self) {
        // A connection gone mid-COPY: the thread ends once every sender is gone.
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
    }
}
