//! Tests of the log: appends, reads, recovery from torn and corrupt tails, rolling and retention.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Utf8, true),
    ]))
}

fn rows(keys: std::ops::Range<i64>) -> RecordBatch {
    let k: Vec<i64> = keys.collect();
    let v: Vec<String> = k.iter().map(|k| format!("value-{k}")).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(k)),
            Arc::new(StringArray::from(v)),
        ],
    )
    .expect("valid batch")
}

fn keys_in(p: &Partition) -> Vec<i64> {
    p.read(0, usize::MAX)
        .expect("read")
        .iter()
        .flat_map(|(_, b)| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64 keys")
                .values()
                .to_vec()
        })
        .collect()
}

fn open_one(dir: &Path, config: LogConfig) -> StreamLog {
    StreamLog::open(dir, schema(), 1, None, config).expect("open")
}

#[test]
fn appends_are_read_back_with_offsets() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open_one(tmp.path(), LogConfig::default());
    let p = &log.partitions()[0];
    assert_eq!(p.append(&rows(0..3)).expect("append"), 0);
    assert_eq!(p.append(&rows(3..5)).expect("append"), 3);
    assert_eq!(p.committed(), 5);
    let read = p.read(4, 10).expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].0, 4);
    assert_eq!(read[0].1.num_rows(), 1);
    assert!(p.read(5, 10).expect("read at end").is_empty());
    drop(log);
    let log = open_one(tmp.path(), LogConfig::default());
    assert_eq!(keys_in(&log.partitions()[0]), vec![0, 1, 2, 3, 4]);
}

#[test]
fn keyed_rows_land_in_their_partition() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log =
        StreamLog::open(tmp.path(), schema(), 4, Some(0), LogConfig::default()).expect("open");
    let receipt = log.append(&[rows(0..100), rows(0..100)]).expect("append");
    assert_eq!(receipt.rows(), 200);
    let mut total = 0;
    for p in log.partitions() {
        let keys = keys_in(p);
        total += keys.len();
        let parts = partition_indices(&Int64Array::from(keys.clone()), 4).expect("partition");
        assert!(
            parts
                .values()
                .iter()
                .all(|x| Some(x) == parts.values().first())
        );
    }
    assert_eq!(total, 200);
}

#[test]
fn unkeyed_appends_go_round_robin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = StreamLog::open(tmp.path(), schema(), 3, None, LogConfig::default()).expect("open");
    for i in 0..6 {
        log.append(&[rows(i..i + 1)]).expect("append");
    }
    assert_eq!(log.committed_offsets(), vec![2, 2, 2]);
}

#[test]
fn not_null_is_enforced_and_nothing_is_appended() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
    let log = StreamLog::open(
        tmp.path(),
        Arc::clone(&schema),
        1,
        None,
        LogConfig::default(),
    )
    .expect("open");
    let nullable = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
    let bad = RecordBatch::try_new(
        nullable,
        vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
    )
    .expect("batch");
    assert!(log.append(&[bad]).is_err());
    assert_eq!(log.committed_offsets(), vec![0]);
}

/// Rows arrive with schemas of their own (other names, nullable fields, as INSERT makes them);
/// small appends (group commit), several batches at once and large appends are all stored
/// with the stream's schema. Rows of other types are refused.
#[test]
fn appends_with_other_schemas_are_stored_with_the_streams() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log =
        StreamLog::open(tmp.path(), schema(), 2, Some(0), LogConfig::default()).expect("open");
    let other = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, true),
        Field::new("value", DataType::Utf8, true),
    ]));
    let foreign = |keys: std::ops::Range<i64>| {
        RecordBatch::try_new(Arc::clone(&other), rows(keys).columns().to_vec()).expect("batch")
    };
    log.append(&[foreign(0..1)]).expect("small append");
    log.append(&[foreign(1..3), rows(3..4)])
        .expect("two batches");
    let big = group_commit::COALESCE_BELOW_ROWS as i64;
    log.append(&[foreign(4..4 + big)]).expect("large append");
    let stored = log.read_all().expect("read");
    let mut keys = Vec::new();
    for b in stored.iter().flatten() {
        assert_eq!(b.schema().fields(), schema().fields());
        let k = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("int64");
        keys.extend_from_slice(k.values());
    }
    keys.sort_unstable();
    assert_eq!(keys, (0..4 + big).collect::<Vec<_>>());
    let wrong = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, false),
            Field::new("v", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(datafusion::arrow::array::Int32Array::from(vec![1])),
            Arc::new(StringArray::from(vec!["x"])),
        ],
    )
    .expect("batch");
    let err = log.append(&[wrong]).expect_err("other types");
    assert!(err.to_string().contains("do not fit"), "{err}");
}

/// Writes two frames, returns the segment bytes and where the second frame starts.
fn two_frames(dir: &Path) -> (Vec<u8>, usize) {
    let log = open_one(dir, LogConfig::default());
    let p = &log.partitions()[0];
    p.append(&rows(0..10)).expect("append");
    let first_len = p.size_bytes() as usize;
    p.append(&rows(10..15)).expect("append");
    drop(log);
    let bytes = fs::read(dir.join("0").join(format!("{:020}.log", 0))).expect("segment");
    (bytes, first_len)
}

#[test]
fn recovery_truncates_a_torn_tail_at_every_byte() {
    let src = tempfile::tempdir().expect("tempdir");
    let (bytes, first_len) = two_frames(src.path());
    for cut in first_len..bytes.len() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(tmp.path().join("0")).expect("mkdir");
        let seg = tmp.path().join("0").join(format!("{:020}.log", 0));
        fs::write(&seg, &bytes[..cut]).expect("write");
        let log = open_one(tmp.path(), LogConfig::default());
        let p = &log.partitions()[0];
        assert_eq!(keys_in(p), (0..10).collect::<Vec<_>>(), "cut at {cut}");
        assert_eq!(fs::metadata(&seg).expect("stat").len() as usize, first_len);
        // The log goes on from the last good frame.
        assert_eq!(p.append(&rows(10..11)).expect("append"), 10, "cut at {cut}");
    }
}

#[test]
fn recovery_drops_a_corrupt_last_frame() {
    let src = tempfile::tempdir().expect("tempdir");
    let (bytes, first_len) = two_frames(src.path());
    for byte in (first_len..bytes.len()).step_by(7) {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(tmp.path().join("0")).expect("mkdir");
        let mut bad = bytes.clone();
        bad[byte] ^= 0x01;
        fs::write(tmp.path().join("0").join(format!("{:020}.log", 0)), &bad).expect("write");
        let log = open_one(tmp.path(), LogConfig::default());
        assert_eq!(
            keys_in(&log.partitions()[0]),
            (0..10).collect::<Vec<_>>(),
            "flip at {byte}"
        );
    }
    // Junk appended after valid frames is a torn tail too.
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(tmp.path().join("0")).expect("mkdir");
    let mut junk = bytes.clone();
    junk.extend_from_slice(&[0xAB; 100]);
    fs::write(tmp.path().join("0").join(format!("{:020}.log", 0)), &junk).expect("write");
    let log = open_one(tmp.path(), LogConfig::default());
    assert_eq!(keys_in(&log.partitions()[0]), (0..15).collect::<Vec<_>>());
}

/// A page of the last writes that never reached the disk reads back as zeros: recovery keeps
/// every frame that ends before the page and appends go on after them.
#[test]
fn recovery_keeps_the_frames_before_a_zeroed_page() {
    let src = tempfile::tempdir().expect("tempdir");
    let mut ends = Vec::new();
    {
        let log = open_one(src.path(), LogConfig::default());
        let p = &log.partitions()[0];
        for i in 0..400 {
            p.append(&rows(i * 10..i * 10 + 10)).expect("append");
            ends.push(p.size_bytes() as usize);
        }
    }
    let seg = format!("{:020}.log", 0);
    let bytes = fs::read(src.path().join("0").join(&seg)).expect("segment");
    assert!(bytes.len() > 3 * 4096, "several pages: {}", bytes.len());
    for page_start in [bytes.len() / 4096 * 4096, (bytes.len() / 4096 - 1) * 4096] {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(tmp.path().join("0")).expect("mkdir");
        let mut damaged = bytes.clone();
        let page_end = (page_start + 4096).min(damaged.len());
        damaged[page_start..page_end].fill(0);
        fs::write(tmp.path().join("0").join(&seg), &damaged).expect("write");
        let log = open_one(tmp.path(), LogConfig::default());
        let p = &log.partitions()[0];
        let whole = ends.iter().filter(|&&e| e <= page_start).count() as i64;
        assert_eq!(
            keys_in(p),
            (0..whole * 10).collect::<Vec<_>>(),
            "page at {page_start}"
        );
        assert_eq!(p.append(&rows(0..1)).expect("append"), whole as u64 * 10);
    }
}

#[test]
fn damage_in_a_closed_segment_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 1,
        ..LogConfig::default()
    };
    {
        let log = open_one(tmp.path(), config);
        for i in 0..3 {
            log.partitions()[0]
                .append(&rows(i * 5..i * 5 + 5))
                .expect("append");
        }
        assert_eq!(log.partitions()[0].segment_count(), 3);
    }
    let seg = tmp.path().join("0").join(format!("{:020}.log", 0));
    let mut bytes = fs::read(&seg).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0xFF;
    fs::write(&seg, bytes).expect("write");
    let err = StreamLog::open(tmp.path(), schema(), 1, None, config).expect_err("corrupt");
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
}

/// Retention keeps every segment that holds rows a checkpoint still replays from.
#[test]
fn retention_keeps_what_checkpoints_need() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let probe = open_one(&tmp.path().join("probe"), LogConfig::default());
    probe.partitions()[0].append(&rows(0..10)).expect("append");
    let frame = probe.partitions()[0].size_bytes();
    let config = LogConfig {
        segment_bytes: frame * 2 + frame / 2,
        retention_ms: None,
        retention_bytes: Some(1),
    };
    let log = open_one(&tmp.path().join("s"), config);
    let p = &log.partitions()[0];
    for i in 0..10 {
        p.append(&rows(i * 10..i * 10 + 10)).expect("append");
    }
    // Segments hold offsets [0, 20), [20, 40), ... A checkpoint replays from offset 45.
    assert_eq!(log.enforce_retention_keeping(&[0]).expect("retention"), 0);
    assert_eq!(
        p.start_offset(),
        0,
        "nothing goes while a query replays from the start"
    );
    log.enforce_retention_keeping(&[45]).expect("retention");
    assert_eq!(p.start_offset(), 40, "the segment holding offset 45 stays");
    assert_eq!(keys_in(p), (40..100).collect::<Vec<_>>());
    // Without a constraint the size limit takes all but the active segment.
    log.enforce_retention().expect("retention");
    assert_eq!(p.segment_count(), 1);
}

#[test]
fn segments_roll_and_retention_deletes_whole_closed_segments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let probe = open_one(&tmp.path().join("probe"), LogConfig::default());
    probe.partitions()[0].append(&rows(0..10)).expect("append");
    // Frames of ten rows differ by a few bytes (each is compressed whole): a segment has room
    // for two of them, not three.
    let frame = probe.partitions()[0].size_bytes();
    let config = LogConfig {
        segment_bytes: frame * 2 + frame / 2,
        retention_ms: None,
        retention_bytes: Some(frame * 4),
    };
    let log = open_one(&tmp.path().join("s"), config);
    let p = &log.partitions()[0];
    for i in 0..10 {
        p.append(&rows(i * 10..i * 10 + 10)).expect("append");
    }
    assert_eq!(p.segment_count(), 5);
    let deleted = log.enforce_retention().expect("retention");
    assert!(deleted > 0);
    assert!(p.size_bytes() <= frame * 4 + frame * 3);
    let start = p.start_offset();
    assert!(start > 0 && start % 20 == 0, "start {start}");
    // Reading below the start begins at the start; nothing after it was lost.
    assert_eq!(keys_in(p), (start as i64..100).collect::<Vec<_>>());
    drop(log);
    let log = open_one(&tmp.path().join("s"), config);
    assert_eq!(log.partitions()[0].start_offset(), start);
    assert_eq!(log.partitions()[0].committed(), 100);

    let timed = LogConfig {
        segment_bytes: frame * 2 + frame / 2,
        retention_ms: Some(60_000),
        retention_bytes: None,
    };
    let log = open_one(&tmp.path().join("t"), timed);
    for i in 0..4 {
        log.partitions()[0]
            .append(&rows(i * 10..i * 10 + 10))
            .expect("append");
    }
    assert_eq!(
        log.partitions()[0]
            .enforce_retention(now_ms())
            .expect("now"),
        0
    );
    let deleted = log.partitions()[0]
        .enforce_retention(now_ms() + 120_000)
        .expect("later");
    assert!(deleted > 0);
    assert_eq!(
        log.partitions()[0].segment_count(),
        1,
        "only the active segment stays"
    );
}

#[test]
fn concurrent_appends_share_fsyncs_and_lose_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(open_one(tmp.path(), LogConfig::default()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let k = t * 1000 + i;
                    log.append(&[rows(k..k + 1)]).expect("append");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let mut keys = keys_in(&log.partitions()[0]);
    assert_eq!(keys.len(), 400);
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 400);
}

/// An idempotent producer's retry of a batch already stored appends nothing and gets the
/// original offsets, also after a restart; a gap in its sequence numbers is refused.
#[test]
fn idempotent_retries_are_dropped_across_restarts() {
    use crate::log::ProducerSeq;
    let dir = tempfile::tempdir().expect("tempdir");
    let producer = |seq| ProducerSeq {
        id: 77,
        epoch: 0,
        base_sequence: seq,
    };
    {
        let log =
            StreamLog::open(dir.path(), schema(), 2, None, LogConfig::default()).expect("open");
        let first = log
            .append_idempotent(1, &[rows(0..3)], producer(0))
            .expect("append");
        assert_eq!(first.ranges, vec![(1, 0, 3)]);
        let second = log
            .append_idempotent(1, &[rows(3..5)], producer(3))
            .expect("append");
        assert_eq!(second.ranges, vec![(1, 3, 2)]);
        let retry = log
            .append_idempotent(1, &[rows(0..3)], producer(0))
            .expect("a retry is answered");
        assert_eq!(retry, first);
        assert!(matches!(
            log.append_idempotent(1, &[rows(9..10)], producer(9)),
            Err(crate::Error::OutOfOrderSequence(_))
        ));
        assert_eq!(log.partitions()[1].committed(), 5);
    }
    let log = StreamLog::open(dir.path(), schema(), 2, None, LogConfig::default()).expect("reopen");
    let retry = log
        .append_idempotent(1, &[rows(3..5)], producer(3))
        .expect("a retry after a restart is answered");
    assert_eq!(retry.ranges, vec![(1, 3, 2)]);
    assert_eq!(log.partitions()[1].committed(), 5, "nothing appended twice");
    let next = log
        .append_idempotent(1, &[rows(5..6)], producer(5))
        .expect("the next batch");
    assert_eq!(next.ranges, vec![(1, 5, 1)]);
}

#[test]
fn the_source_position_is_kept_with_its_rows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // One frame per segment, so that the position is found across segments.
    let config = LogConfig {
        segment_bytes: 1,
        ..LogConfig::default()
    };
    {
        let log = open_one(tmp.path(), config);
        assert_eq!(log.partitions()[0].source_next(), None);
        log.append_from_source(0, &[rows(0..3)], 17)
            .expect("append");
        log.append_from_source(0, &[rows(3..5)], 40)
            .expect("append");
        assert_eq!(log.partitions()[0].source_next(), Some(40));
        // A frame written but taken back (a failed append) takes its position with it.
        let p = &log.partitions()[0];
        let (base, _) = p
            .write_frame(Frame::encode_from_source(&rows(5..6), 41).expect("encode"))
            .expect("write");
        assert_eq!(p.source_next(), Some(41));
        p.unwrite(base).expect("unwrite");
        assert_eq!(p.source_next(), Some(40));
        assert!(Frame::encode_from_source(&rows(0..1), -1).is_err());
    }
    let log = open_one(tmp.path(), config);
    let p = &log.partitions()[0];
    assert_eq!(p.source_next(), Some(40));
    assert_eq!(keys_in(p), (0..5).collect::<Vec<_>>());
}

fn all_keys(log: &StreamLog) -> Vec<i64> {
    let mut keys: Vec<i64> = log.partitions().iter().flat_map(|p| keys_in(p)).collect();
    keys.sort_unstable();
    keys
}

fn open_keyed(dir: &Path, partitions: u32) -> StreamLog {
    StreamLog::open(dir, schema(), partitions, Some(0), LogConfig::default()).expect("open")
}

#[test]
fn a_transaction_is_visible_only_once_committed_and_holds_back_later_rows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open_keyed(tmp.path(), 3);
    log.append(&[rows(0..10)]).expect("append");
    let before = log.committed_offsets();
    let mut txn = log.begin();
    txn.append(&[rows(100..200)]).expect("txn append");
    txn.append(&[rows(200..300)]).expect("txn append");
    assert_eq!(txn.rows(), 200);
    // An append after the transaction began is durable, but readers see it only past the
    // transaction's end (the last stable offset).
    log.append(&[rows(1000..1010)]).expect("append");
    assert_eq!(log.committed_offsets(), before);
    assert_eq!(all_keys(&log), (0..10).collect::<Vec<_>>());
    let receipt = txn.commit().expect("commit");
    assert_eq!(receipt.rows(), 200);
    let mut expected: Vec<i64> = (0..10).chain(100..300).chain(1000..1010).collect();
    expected.sort_unstable();
    assert_eq!(all_keys(&log), expected);
    let total: u64 = log.committed_offsets().iter().sum();
    assert_eq!(total, 220);
}

#[test]
fn an_aborted_transaction_is_passed_over_by_readers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open_keyed(tmp.path(), 2);
    let mut txn = log.begin();
    txn.append(&[rows(0..50)]).expect("txn append");
    let ends = log.committed_offsets();
    assert_eq!(ends, vec![0, 0]);
    txn.abort();
    // Nothing of it, and a reader that gets nothing else still learns where it ends. (Its
    // rows were never fsynced: readers reach them with the next durable append.)
    for p in log.partitions() {
        p.sync_written().expect("sync");
        let end = p.committed();
        assert!(end > 0, "the aborted rows took offsets");
        let read = p.read(0, 100).expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!((read[0].0, read[0].1.num_rows()), (end, 0));
    }
    log.append(&[rows(60..70)]).expect("append");
    assert_eq!(all_keys(&log), (60..70).collect::<Vec<_>>());
    // A transaction dropped without a commit aborts too.
    {
        let mut dropped = log.begin();
        dropped.append(&[rows(80..90)]).expect("txn append");
    }
    log.append(&[rows(90..95)]).expect("append");
    assert_eq!(all_keys(&log), (60..70).chain(90..95).collect::<Vec<_>>());
    drop(log);
    let log = open_keyed(tmp.path(), 2);
    assert_eq!(all_keys(&log), (60..70).chain(90..95).collect::<Vec<_>>());
}

#[test]
fn a_crash_aborts_open_transactions_and_completes_a_commit_begun() {
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let log = open_keyed(tmp.path(), 2);
        log.append(&[rows(0..5)]).expect("append");
        let mut open = log.begin();
        open.append(&[rows(100..120)]).expect("txn append");
        let mut half = log.begin();
        half.append(&[rows(200..220)]).expect("txn append");
        for p in log.partitions() {
            p.sync_written().expect("sync");
        }
        // The commit marker reached one partition before the crash.
        log.partitions()[0]
            .write_marker(half.id(), FrameKind::Commit)
            .expect("marker");
        log.partitions()[0].sync_written().expect("sync");
        log.append(&[rows(300..305)]).expect("append");
        // A crash: neither transaction ends in this process.
        std::mem::forget(open);
        std::mem::forget(half);
    }
    let log = open_keyed(tmp.path(), 2);
    let expected: Vec<i64> = (0..5).chain(200..220).chain(300..305).collect();
    assert_eq!(all_keys(&log), expected);
    // And the markers recovery wrote hold across the next restart.
    drop(log);
    let log = open_keyed(tmp.path(), 2);
    assert_eq!(all_keys(&log), expected);
    let mut next = log.begin();
    next.append(&[rows(400..410)]).expect("txn append");
    next.commit().expect("commit");
    assert_eq!(all_keys(&log).len(), expected.len() + 10);
}

#[test]
fn a_large_append_of_several_partitions_is_one_transaction() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open_keyed(tmp.path(), 4);
    let big = group_commit::COALESCE_BELOW_ROWS as i64 * 2;
    let receipt = log.append(&[rows(0..big)]).expect("append");
    assert_eq!(receipt.rows(), big as u64);
    assert_eq!(receipt.ranges.len(), 4);
    for &(p, first, n) in &receipt.ranges {
        assert_eq!(first, 0);
        assert_eq!(log.partitions()[p as usize].committed(), n);
    }
    assert_eq!(all_keys(&log), (0..big).collect::<Vec<_>>());
}

/// One partition whose every append rolls a segment, kept to one byte: retention deletes all
/// it may.
fn open_tiny_segments(dir: &Path) -> StreamLog {
    let config = LogConfig {
        segment_bytes: 1,
        retention_ms: None,
        retention_bytes: Some(1),
    };
    StreamLog::open(dir, schema(), 1, None, config).expect("open")
}

#[test]
fn retention_keeps_the_segments_of_an_open_transaction() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open_tiny_segments(tmp.path());
    let mut txn = log.begin();
    txn.append(&[rows(0..10)]).expect("txn append");
    for i in 0..5 {
        log.append(&[rows(100 + i * 10..110 + i * 10)])
            .expect("append");
    }
    assert_eq!(log.enforce_retention().expect("retention"), 0);
    txn.commit().expect("commit");
    assert_eq!(
        keys_in(&log.partitions()[0])[..10],
        (0..10).collect::<Vec<_>>()[..]
    );
    assert!(log.enforce_retention().expect("retention") > 0);
}

#[test]
fn retention_reclaims_the_rows_of_an_aborted_transaction() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open_tiny_segments(tmp.path());
    let mut txn = log.begin();
    for i in 0..5 {
        txn.append(&[rows(i * 10..i * 10 + 10)])
            .expect("txn append");
    }
    log.append(&[rows(100..110)]).expect("append");
    let size = log.partitions()[0].size_bytes();
    txn.abort();
    log.append(&[rows(110..120)]).expect("append");
    assert_eq!(
        keys_in(&log.partitions()[0]),
        (100..120).collect::<Vec<_>>()
    );
    assert!(log.enforce_retention().expect("retention") >= 5);
    assert!(log.partitions()[0].size_bytes() < size);
    assert_eq!(log.partitions()[0].visible_rows(), 10);
}

#[test]
fn a_decided_transaction_over_two_streams_commits_in_both_after_a_crash() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let decisions_path = tmp.path().join("transactions.log");
    let undecided = new_transaction_id();
    {
        let (a, b) = (open_keyed(&a_dir, 2), open_keyed(&b_dir, 2));
        let id = new_transaction_id();
        let (mut ta, mut tb) = (a.begin_as(id), b.begin_as(id));
        ta.append(&[rows(0..10)]).expect("append");
        tb.append(&[rows(10..20)]).expect("append");
        ta.prepare().expect("prepare");
        tb.prepare().expect("prepare");
        let decisions = Decisions::open(&decisions_path).expect("decisions");
        decisions.begin().record(id, b"payload").expect("decide");
        // The crash comes after the first stream's markers, before the second's.
        ta.commit().expect("commit");
        std::mem::forget(tb);
        // Another transaction over b, prepared but never decided.
        let mut other = b.begin_as(undecided);
        other.append(&[rows(30..40)]).expect("append");
        other.prepare().expect("prepare");
        std::mem::forget(other);
    }
    let decisions = Decisions::open(&decisions_path).expect("decisions");
    assert_eq!(
        decisions.recovered(),
        &[(decisions.recovered()[0].0, b"payload".to_vec())]
    );
    let decided = decisions.committed();
    let b = StreamLog::open_deciding(&b_dir, schema(), 2, Some(0), LogConfig::default(), &decided)
        .expect("open");
    assert_eq!(all_keys(&b), (10..20).collect::<Vec<_>>());
    let a = StreamLog::open_deciding(&a_dir, schema(), 2, Some(0), LogConfig::default(), &decided)
        .expect("open");
    assert_eq!(all_keys(&a), (0..10).collect::<Vec<_>>());
}
