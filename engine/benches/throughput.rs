//! Throughput of the log and of a windowed aggregation, in events per second, and peak memory.
//!
//! Run with `cargo bench -p weir-engine --bench throughput`. Sizes can be changed with
//! `WEIR_BENCH_EVENTS` (default 10 000 000) and `WEIR_BENCH_PRODUCERS` (concurrent small
//! appenders, default 4096); names after `--` (`tumble`, `join`, `log-batches`,
//! `log-small-threads`, `log-small-async`, or any part of one) run only those.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::{Column, lit};
use weir_engine::log::{LogConfig, StreamLog};
use weir_engine::operator::{
    AggregateSpec, Emit, Operator, TumbleOperator, WindowAggregateOperator, WindowColumn,
};
use weir_engine::pipeline::Pipeline;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("url", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
    ]))
}

/// `rows` events from event number `start`: 10 000 users, one event per 0.1 ms.
fn events(start: i64, rows: i64) -> RecordBatch {
    let ids: Vec<i64> = (start..start + rows).map(|i| (i * 7919) % 10_000).collect();
    let urls: Vec<String> = (start..start + rows)
        .map(|i| format!("/page/{}", i % 100))
        .collect();
    let ts: Vec<i64> = (start..start + rows)
        .map(|i| 1_767_225_600_000_000_000 + i * 100_000)
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(urls)),
            Arc::new(TimestampNanosecondArray::from(ts)),
        ],
    )
    .expect("valid batch")
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn report(what: &str, events: u64, seconds: f64) {
    let rate = events as f64 / seconds;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = std::io::Write::write_fmt(
        &mut out,
        format_args!(
            "{what:<48} {events:>11} events {seconds:>7.2} s {rate:>13.0} events/s  peak RSS {:.0} MiB\n",
            peak_rss_mib()
        ),
    );
}

fn bench_log_batches(total: i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log =
        StreamLog::open(dir.path(), schema(), 4, Some(0), LogConfig::default()).expect("open");
    let batch_rows = 8192;
    let started = Instant::now();
    let mut done = 0;
    while done < total {
        let n = batch_rows.min(total - done);
        log.append(&[events(done, n)]).expect("append");
        done += n;
    }
    report(
        "log append, 8192-row batches, 4 partitions",
        total as u64,
        started.elapsed().as_secs_f64(),
    );
    let started = Instant::now();
    let read: usize = log
        .read_all()
        .expect("read")
        .iter()
        .flatten()
        .map(|b| b.num_rows())
        .sum();
    report(
        "log read back (decode all partitions)",
        read as u64,
        started.elapsed().as_secs_f64(),
    );
}

fn bench_log_small_appends(threads: usize, per_thread: i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(
        StreamLog::open(dir.path(), schema(), 1, None, LogConfig::default()).expect("open"),
    );
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    log.append(&[events(t as i64 * per_thread + i, 1)])
                        .expect("append");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    report(
        &format!("log append, 1-row appends, {threads} writers (group commit)"),
        (threads as i64 * per_thread) as u64,
        started.elapsed().as_secs_f64(),
    );
}

/// Small appends of `rows` rows each from `tasks` concurrent async producers (as from many
/// connections or Kafka producers), each waiting for its rows to be durable: the group commit
/// gathers them into one frame per partition per fsync. With `own_schemas` every producer's
/// rows carry a schema object of their own (as INSERT's do), which the log compares type by
/// type; otherwise they carry the stream's.
fn bench_log_small_appends_async(tasks: i64, rows: i64, own_schemas: bool, total: i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(
        StreamLog::open(dir.path(), schema(), 4, Some(0), LogConfig::default()).expect("open"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    // Larger appends are fewer; at least 16 each keeps the run long enough to measure.
    let per_task = (total / tasks / rows).max(16);
    let started = Instant::now();
    runtime.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let log = Arc::clone(&log);
                // Each producer's rows are built once, with the stream's schema as a writer
                // of the stream would: this measures the log, not building small Arrow
                // batches (which costs about as much as appending them).
                let mut batch = events(t * rows, rows);
                if !own_schemas {
                    batch =
                        RecordBatch::try_new(Arc::clone(log.schema()), batch.columns().to_vec())
                            .expect("valid batch");
                }
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        log.append_async(vec![batch.clone()]).await.expect("append");
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("task");
        }
    });
    report(
        &format!(
            "log append, {rows}-row appends{}, {tasks} async producers",
            if own_schemas { " (own schemas)" } else { "" }
        ),
        (tasks * per_task * rows) as u64,
        started.elapsed().as_secs_f64(),
    );
}

fn bench_tumble_count(total: i64, batch_rows: i64, what: &str) {
    let input = schema();
    let tumble = TumbleOperator::try_new(&input, 2, 60_000_000_000).expect("tumble");
    let windowed = tumble.schema();
    let count = AggregateExprBuilder::new(count_udaf(), vec![lit(1i64)])
        .schema(Arc::clone(&windowed))
        .alias("clicks")
        .build()
        .expect("count");
    let sum = AggregateExprBuilder::new(sum_udaf(), vec![Arc::new(Column::new("user_id", 0))])
        .schema(Arc::clone(&windowed))
        .alias("total")
        .build()
        .expect("sum");
    let output = Arc::new(Schema::new(vec![
        Field::new(
            "window_start",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        ),
        Field::new("user_id", DataType::Int64, false),
        Field::new("clicks", DataType::Int64, false),
        Field::new("total", DataType::Int64, true),
    ]));
    let agg = WindowAggregateOperator::try_new(
        &windowed,
        vec![
            (
                Arc::new(Column::new("window_start", 3)),
                "window_start".into(),
            ),
            (Arc::new(Column::new("user_id", 0)), "user_id".into()),
        ],
        Some(WindowColumn::Start(3)),
        60_000_000_000,
        vec![
            AggregateSpec {
                expr: Arc::new(count),
                filter: None,
            },
            AggregateSpec {
                expr: Arc::new(sum),
                filter: None,
            },
        ],
        output,
        Emit::OnWindowClose,
    )
    .expect("aggregate");
    let mut pipeline = Pipeline::new(input, vec![Box::new(tumble), Box::new(agg)]);
    let batches: Vec<RecordBatch> = (0..total / batch_rows)
        .map(|i| events(i * batch_rows, batch_rows))
        .collect();
    let started = Instant::now();
    let mut emitted = 0;
    for b in batches {
        let wm = datafusion::arrow::compute::max(
            b.column(2)
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .expect("ts"),
        )
        .expect("non-empty");
        emitted += pipeline.process_batch(b).expect("process").len();
        emitted += pipeline
            .on_watermark(wm - 2_000_000_000)
            .expect("watermark")
            .len();
    }
    report(
        &format!("TUMBLE 1m, COUNT+SUM by 10k users (operators{what})"),
        (total / batch_rows * batch_rows) as u64,
        started.elapsed().as_secs_f64(),
    );
    assert!(emitted > 0);
}

/// An interval join of two streams of `total` events each: the same users, the right side
/// 3.7 ms later, matched within one second (state: about one second of each side).
fn bench_interval_join(total: i64) {
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::expressions::BinaryExpr;
    use weir_engine::operator::{BinaryOperator, JoinInput, Side, StreamJoinOperator};
    let input = schema();
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(input.fields().iter().map(|f| f.as_ref().clone()));
    let output = Arc::new(Schema::new(fields));
    let side = |offset_ns: i64| JoinInput {
        keys: vec![Arc::new(Column::new("user_id", 0))],
        time: Some(2),
        time_lag_ns: 0,
        expiry_column: Some(2),
        expiry_offset_ns: offset_ns,
        keep_unmatched: false,
    };
    // right.ts >= left.ts; the one-second bound is what frees state.
    let filter = Arc::new(BinaryExpr::new(
        Arc::new(Column::new("ts", 5)),
        Op::GtEq,
        Arc::new(Column::new("ts", 2)),
    ));
    let mut join =
        StreamJoinOperator::try_new(side(1_000_000_000), side(0), &input, Some(filter), output)
            .expect("join");
    let batch_rows = 8192;
    let lefts: Vec<RecordBatch> = (0..total / batch_rows)
        .map(|i| events(i * batch_rows, batch_rows))
        .collect();
    let rights: Vec<RecordBatch> = (0..total / batch_rows)
        .map(|i| events(i * batch_rows + 37, batch_rows))
        .collect();
    let started = Instant::now();
    let mut matches = 0;
    for (l, r) in lefts.into_iter().zip(rights) {
        let wm = datafusion::arrow::compute::max(
            l.column(2)
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .expect("ts"),
        )
        .expect("non-empty");
        for b in join.process_batch(Side::Left, l).expect("left") {
            matches += b.num_rows();
        }
        for b in join.process_batch(Side::Right, r).expect("right") {
            matches += b.num_rows();
        }
        join.on_watermark(wm - 2_000_000_000).expect("watermark");
    }
    report(
        "interval join on user_id within 1s (operator)",
        2 * (total / batch_rows * batch_rows) as u64,
        started.elapsed().as_secs_f64(),
    );
    assert!(matches > 0);
}

fn main() {
    let total: i64 = std::env::var("WEIR_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    // `cargo bench --bench throughput -- NAME...` runs only the benchmarks named (cargo's own
    // `--bench` flag is passed through and ignored).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    if run("tumble") {
        bench_tumble_count(total, 8192, "");
    }
    // What the operators' counters (weir_operators) cost: the same pipeline with them on and
    // off, in turns, over batches of 8192 rows and of 512 (live traffic's small batches, where
    // a per-batch cost weighs most).
    if run("counters") {
        for round in 0..3 {
            for batch_rows in [8192, 512] {
                for on in [true, false] {
                    weir_engine::stats::set_enabled(on);
                    let what = format!(
                        ", {batch_rows}-row batches, counters {}, round {}",
                        if on { "on" } else { "off" },
                        round + 1
                    );
                    bench_tumble_count(total, batch_rows, &what);
                }
            }
        }
        weir_engine::stats::set_enabled(true);
    }
    if run("join") {
        bench_interval_join(total / 5);
    }
    if run("log-batches") {
        bench_log_batches(total / 5);
    }
    if run("log-small-threads") {
        bench_log_small_appends(8, 2_000);
    }
    if run("log-small-async") {
        let producers = std::env::var("WEIR_BENCH_PRODUCERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4096);
        for (rows, own_schemas) in [(1, false), (1, true), (16, false), (128, false)] {
            bench_log_small_appends_async(producers, rows, own_schemas, total / 5);
        }
    }
}
