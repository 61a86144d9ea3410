//! Retention: a thread that trims each stream's log by time and size, never past what a view's
//! checkpoint still replays from.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Inner;
use crate::catalog::{StreamEntry, ViewEntry};

/// How often retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(10);

pub(super) fn run(db: &Weak<Inner>) {
    loop {
        std::thread::sleep(RETENTION_INTERVAL);
        let Some(inner) = db.upgrade() else { return };
        let (streams, views): (Vec<_>, Vec<_>) = {
            let state = inner.registry.state();
            (
                state
                    .streams
                    .values()
                    .filter(|s| s.def.retention_ms.is_some() || s.def.retention_bytes.is_some())
                    .cloned()
                    .collect(),
                state
                    .views
                    .values()
                    .chain(state.producers.values())
                    .cloned()
                    .collect(),
            )
        };
        drop(inner);
        for s in streams {
            let keep = retention_floor(&s, &views);
            if let Err(e) = s.log.enforce_retention_keeping(&keep) {
                tracing::warn!(stream = %s.def.name, error = %e, "retention failed");
            }
        }
    }
}

/// Per partition of `stream`, the lowest offset a view's checkpoint replays from: retention
/// keeps everything from there. A view without a checkpoint yet replays from the start.
fn retention_floor(stream: &StreamEntry, views: &[Arc<ViewEntry>]) -> Vec<u64> {
    let partitions = stream.log.partitions().len();
    let mut keep = vec![u64::MAX; partitions];
    for v in views {
        let progress = v.table.progress();
        let mut at = 0;
        for source in &v.sources {
            let n = source.log.partitions().len();
            if source.def.name == stream.def.name {
                for (p, k) in keep.iter_mut().enumerate() {
                    let needed = progress
                        .checkpoint_offsets
                        .as_ref()
                        .and_then(|o| o.get(at + p).copied())
                        .unwrap_or(0);
                    *k = (*k).min(needed);
                }
            }
            at += n;
        }
    }
    keep
}
