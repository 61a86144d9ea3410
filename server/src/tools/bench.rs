//! `weir bench nexmark`: loads generated Nexmark events into an embedded engine's log, then
//! measures how fast each query catches up from the log into its view, and peak memory.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use weir_sql::{Database, Output, Session};

use super::generate::{BASE_MICROS, Generator, Kind, streams};

/// The Nexmark queries, in the form Weir's tests check against batch (RisingWave's).
pub const QUERIES: &[(&str, &str)] = &[
    (
        "q0",
        "SELECT auction, bidder, price, dateTime, extra FROM bid",
    ),
    (
        "q1",
        "SELECT auction, bidder, 0.908 * price AS price, dateTime, extra FROM bid",
    ),
    (
        "q2",
        "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0",
    ),
    (
        "q5",
        "SELECT AuctionBids.auction, AuctionBids.num FROM (
           SELECT bid.auction, count(*) AS num, window_start AS starttime
           FROM HOP(bid, dateTime, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
           GROUP BY window_start, bid.auction) AS AuctionBids
         JOIN (
           SELECT max(CountBids.num) AS maxn, CountBids.starttime_c FROM (
             SELECT count(*) AS num, window_start AS starttime_c
             FROM HOP(bid, dateTime, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
             GROUP BY bid.auction, window_start) AS CountBids
           GROUP BY CountBids.starttime_c) AS MaxBids
         ON AuctionBids.starttime = MaxBids.starttime_c AND AuctionBids.num >= MaxBids.maxn",
    ),
    // Not a Nexmark query: the first windowed query, a TUMBLE aggregate per auction.
    (
        "tumble",
        "SELECT auction, window_start, window_end, COUNT(*) AS n, SUM(price) AS total,
           MAX(price) AS top
         FROM TUMBLE(bid, dateTime, INTERVAL '10' SECOND)
         GROUP BY auction, window_start, window_end",
    ),
    (
        "q7",
        "SELECT B.auction, B.price, B.bidder, B.dateTime FROM bid B
         JOIN (SELECT MAX(price) AS maxprice, window_end AS date_time
               FROM TUMBLE(bid, dateTime, INTERVAL '10' SECOND) GROUP BY window_end) B1
           ON B.price = B1.maxprice
         WHERE B.dateTime BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time",
    ),
    (
        "q8",
        "SELECT P.id, P.name, P.starttime FROM (
           SELECT id, name, window_start AS starttime, window_end AS endtime
           FROM TUMBLE(person, dateTime, INTERVAL '10' SECOND)
           GROUP BY id, name, window_start, window_end) P
         JOIN (
           SELECT seller, window_start AS starttime, window_end AS endtime
           FROM TUMBLE(auction, dateTime, INTERVAL '10' SECOND)
           GROUP BY seller, window_start, window_end) A
         ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime",
    ),
    // Not a Nexmark query: q6's moving average of the last 11 prices, over every bid of an
    // auction (q6 itself averages winning bids, which needs a Top-1 that becomes final).
    (
        "over",
        "SELECT auction, price, dateTime, AVG(price) OVER (PARTITION BY auction ORDER BY dateTime
           ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_price
         FROM bid",
    ),
    (
        "hashtags",
        "SELECT hashtag, window_start, window_end, COUNT(*) AS n
         FROM HOP(tweets, ts, INTERVAL '5' SECOND, INTERVAL '1' MINUTE)
         GROUP BY hashtag, window_start, window_end",
    ),
];

/// The Nexmark queries in Flink's published text (`tests/nexmark/`) that are not above in
/// RisingWave's form: each file creates the view `nexmark_<name>`.
pub const FLINK_QUERIES: &[(&str, &str)] = &[
    ("q3", include_str!("../../../tests/nexmark/q3.sql")),
    ("q4", include_str!("../../../tests/nexmark/q4.sql")),
    // As published q6 is invalid (in Flink too); corrected, an OVER over a changing Top-1.
    (
        "q6",
        include_str!("../../../tests/nexmark/q6-corrected.sql"),
    ),
    ("q9", include_str!("../../../tests/nexmark/q9.sql")),
    ("q10", include_str!("../../../tests/nexmark/q10.sql")),
    ("q11", include_str!("../../../tests/nexmark/q11.sql")),
    ("q13", include_str!("../../../tests/nexmark/q13.sql")),
    ("q15", include_str!("../../../tests/nexmark/q15.sql")),
    ("q16", include_str!("../../../tests/nexmark/q16.sql")),
    ("q17", include_str!("../../../tests/nexmark/q17.sql")),
    ("q18", include_str!("../../../tests/nexmark/q18.sql")),
    ("q19", include_str!("../../../tests/nexmark/q19.sql")),
    ("q20", include_str!("../../../tests/nexmark/q20.sql")),
    ("q21", include_str!("../../../tests/nexmark/q21.sql")),
    ("q22", include_str!("../../../tests/nexmark/q22.sql")),
];

/// How `weir bench nexmark` runs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Events to load (all three streams together).
    pub events: u64,
    /// Queries to run (names from [`QUERIES`]); empty runs all.
    pub queries: Vec<String>,
    /// Where the CSV goes.
    pub csv: PathBuf,
    /// For the latency run: events per second, held for `latency_seconds`.
    pub latency_rate: u64,
    /// How long the latency run lasts (0 skips it).
    pub latency_seconds: u64,
}

/// The process's peak resident memory (VmHWM) in MiB.
pub(crate) fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn execute(session: &Session, sql: &str) -> Result<Output, String> {
    let mut outs = session.execute(sql).await;
    match outs.pop() {
        Some(Ok(o)) => Ok(o),
        Some(Err(e)) => Err(format!("{sql}: {e}")),
        None => Err(format!("{sql}: no result")),
    }
}

/// End-to-end latency under a steady input rate: from a COPY of one 10 ms batch of events being
/// sent (so the append and its fsync count) to the view (q2) having processed it, at
/// `latency_rate` events per second. The view usually has the rows before the COPY returns.
/// Returns p50, p99 and max in milliseconds.
async fn latency(
    session: &Session,
    db: &Database,
    generator: &mut Generator,
    options: &BenchOptions,
) -> Result<(f64, f64, f64), String> {
    let (name, sql) = QUERIES
        .iter()
        .find(|(n, _)| *n == "q2")
        .ok_or("q2 is missing")?;
    execute(
        session,
        &format!("CREATE MATERIALIZED VIEW lat_{name} AS {sql}"),
    )
    .await?;
    let view = db
        .view(&format!("lat_{name}"))
        .ok_or("the latency view is missing")?;
    // Let it catch up with what is in the log first.
    let offsets = view.source_offsets();
    let waiting = std::sync::Arc::clone(&view);
    tokio::task::spawn_blocking(move || {
        waiting.table.wait_for(&offsets, Duration::from_secs(3600))
    })
    .await
    .map_err(|e| e.to_string())?;
    // A watcher thread times each acknowledged batch until the view has it.
    let (tx, rx) = std::sync::mpsc::channel::<(Vec<u64>, Instant)>();
    let watched = std::sync::Arc::clone(&view);
    let watcher = std::thread::spawn(move || {
        let mut samples = Vec::new();
        for (offsets, sent) in rx {
            watched.table.wait_for(&offsets, Duration::from_secs(60));
            samples.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        samples
    });
    let per_tick = (options.latency_rate / 100).max(1);
    let ticks = options.latency_seconds * 100;
    let started = Instant::now();
    let streams = streams(Kind::Nexmark, None);
    let mut buffers = vec![String::new(); streams.len()];
    for tick in 0..ticks {
        generator.fill(per_tick, &mut buffers);
        // Only bids reach q2; persons and auctions are dropped to keep the rate on the bid stream.
        for b in buffers.iter_mut().take(2) {
            b.clear();
        }
        let rows = std::mem::take(&mut buffers[2]);
        let sent = Instant::now();
        let Output::CopyIn(copy) = execute(session, "COPY bid FROM STDIN").await? else {
            return Err("COPY did not start".into());
        };
        session
            .copy_data(&copy, rows.into_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let _ = tx.send((view.source_offsets(), sent));
        let due = Duration::from_millis((tick + 1) * 10);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    drop(tx);
    let mut samples = watcher.join().map_err(|_| "the latency watcher failed")?;
    samples.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    if samples.is_empty() {
        return Err("no latency samples".into());
    }
    Ok((pick(0.5), pick(0.99), pick(1.0)))
}

/// Creates the streams of `kind` and loads `events` generated events through COPY.
async fn load(session: &Session, kind: Kind, events: u64) -> Result<(), String> {
    let streams = streams(kind, None);
    for (_, create) in &streams {
        execute(session, create).await?;
    }
    let mut generator = Generator::new(kind, 42, BASE_MICROS, 100.0);
    let mut buffers = vec![String::new(); streams.len()];
    while generator.count < events {
        let n = 100_000.min(events - generator.count);
        generator.fill(n, &mut buffers);
        for ((name, _), rows) in streams.iter().zip(buffers.iter_mut()) {
            if rows.is_empty() {
                continue;
            }
            let Output::CopyIn(copy) = execute(session, &format!("COPY {name} FROM STDIN")).await?
            else {
                return Err("COPY did not start".into());
            };
            session
                .copy_data(&copy, std::mem::take(rows).into_bytes())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Each query: its name, the statements that create its view, the view's name, and the SELECT
/// alone (for the batch run). `${FLINK_HOME}` becomes `flink_home`, as Nexmark's runner does.
fn bench_queries(flink_home: &std::path::Path) -> Vec<(&'static str, String, String, String)> {
    let home = flink_home.display().to_string();
    let ours = QUERIES.iter().map(|(name, sql)| {
        (
            *name,
            format!("CREATE MATERIALIZED VIEW {name} AS {sql}"),
            name.to_string(),
            sql.to_string(),
        )
    });
    let flink = FLINK_QUERIES.iter().map(|(name, file)| {
        let file = file.replace("${FLINK_HOME}", &home);
        let view = file.rfind("CREATE MATERIALIZED VIEW").unwrap_or(0);
        let select = file[view..]
            .find(" AS\n")
            .map_or("", |at| &file[view + at + 4..])
            .trim()
            .trim_end_matches(';');
        (
            *name,
            file.to_string(),
            format!("nexmark_{name}"),
            select.to_string(),
        )
    });
    ours.chain(flink).collect()
}

/// Seconds the SELECT takes in batch, every row collected (as the view materializes them).
async fn batch_seconds(session: &Session, select: &str) -> Result<f64, String> {
    use futures::StreamExt;
    let started = Instant::now();
    for result in session.execute(select).await {
        if let Output::Rows { mut stream, .. } = result.map_err(|e| e.to_string())? {
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                batches.push(batch.map_err(|e| e.to_string())?);
            }
            drop(batches);
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Runs the benchmark; prints a table and writes it as CSV.
pub async fn nexmark(options: BenchOptions) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary data dir: {e}"))?;
    let db = Database::open(dir.path())
        .await
        .map_err(|e| e.to_string())?;
    let session = Session::new(db.clone());
    let streams = streams(Kind::Nexmark, None);
    for (_, create) in &streams {
        execute(&session, create).await?;
    }
    // Load: COPY, the path INSERT and clients take, in batches of 100 000 events.
    let mut generator = Generator::new(Kind::Nexmark, 42, BASE_MICROS, 100.0);
    let mut buffers = vec![String::new(); streams.len()];
    let started = Instant::now();
    while generator.count < options.events {
        let n = 100_000.min(options.events - generator.count);
        generator.fill(n, &mut buffers);
        for ((name, _), rows) in streams.iter().zip(buffers.iter_mut()) {
            if rows.is_empty() {
                continue;
            }
            let Output::CopyIn(copy) =
                execute(&session, &format!("COPY {name} FROM STDIN")).await?
            else {
                return Err("COPY did not start".into());
            };
            session
                .copy_data(&copy, std::mem::take(rows).into_bytes())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let load_secs = started.elapsed().as_secs_f64();
    // The trending-hashtags query reads generated tweets, as many as Nexmark events.
    let wants = |q: &str| options.queries.is_empty() || options.queries.iter().any(|n| n == q);
    let tweets_secs = if wants("hashtags") {
        let started = Instant::now();
        load(&session, Kind::Tweets, options.events).await?;
        Some(started.elapsed().as_secs_f64())
    } else {
        None
    };
    let mut out = std::io::stdout();
    let mut csv = String::from(
        "query,events,seconds,events_per_second,view_rows,peak_rss_mib,batch_seconds,ratio_to_batch\n",
    );
    let _ = writeln!(
        out,
        "{:<11} {:>11} {:>9} {:>14} {:>10} {:>14} {:>9} {:>8}",
        "query", "events", "seconds", "events/s", "view rows", "peak RSS MiB", "batch s", "ratio"
    );
    // `ratio`: the view's events/s over the same SELECT's run in batch (DataFusion over the
    // same log, every row collected), in the same process on the same rows: above 1, the
    // continuous query caught up faster than batch computed the answer once.
    let mut line = |name: &str, events: u64, secs: f64, rows: u64, batch: Option<f64>| {
        let rate = events as f64 / secs.max(1e-9);
        let rss = peak_rss_mib();
        let (batch_text, ratio_text, batch_csv, ratio_csv) = match batch {
            Some(b) => {
                let ratio = b / secs.max(1e-9);
                (
                    format!("{b:.2}"),
                    format!("{ratio:.2}"),
                    format!("{b:.3}"),
                    format!("{ratio:.3}"),
                )
            }
            None => Default::default(),
        };
        let _ = writeln!(
            out,
            "{name:<11} {events:>11} {secs:>9.2} {rate:>14.0} {rows:>10} {rss:>14.0} {batch_text:>9} {ratio_text:>8}"
        );
        csv.push_str(&format!(
            "{name},{events},{secs:.3},{rate:.0},{rows},{rss:.0},{batch_csv},{ratio_csv}\n"
        ));
    };
    line("load", options.events, load_secs, 0, None);
    if let Some(secs) = tweets_secs {
        line("load tweets", options.events, secs, 0, None);
    }
    // q13's side input, as Nexmark's SideInputGenerator writes it (`--num 10000`).
    let flink_home = dir.path().join("flink");
    std::fs::create_dir_all(flink_home.join("data")).map_err(|e| format!("side input: {e}"))?;
    let side: String = (0..10_000).map(|i| format!("{i},{i}\n")).collect();
    std::fs::write(flink_home.join("data/side_input.txt"), side)
        .map_err(|e| format!("side input: {e}"))?;
    for (name, sql, view_name, select) in bench_queries(&flink_home) {
        if !wants(name) {
            continue;
        }
        let started = Instant::now();
        for result in session.execute(&sql).await {
            result.map_err(|e| format!("{name}: {e}"))?;
        }
        let view = db
            .view(&view_name)
            .ok_or_else(|| format!("view {view_name} is missing"))?;
        let offsets = view.source_offsets();
        let waiting = std::sync::Arc::clone(&view);
        let progress = tokio::task::spawn_blocking(move || {
            waiting.table.wait_for(&offsets, Duration::from_secs(3600))
        })
        .await
        .map_err(|e| e.to_string())?;
        if let Some(e) = progress.error {
            return Err(format!("{name} stopped: {e}"));
        }
        let secs = started.elapsed().as_secs_f64();
        // Events the query read: every row of the streams it reads.
        let events: u64 = view
            .sources
            .iter()
            .map(|s| s.log.committed_offsets().iter().sum::<u64>())
            .sum();
        // A query batch cannot run (SESSION windows exist only in views) has no ratio.
        let batch = batch_seconds(&session, &select).await.ok();
        line(name, events, secs, view.table.num_rows() as u64, batch);
        execute(&session, &format!("DROP MATERIALIZED VIEW {view_name}")).await?;
    }
    if options.latency_seconds > 0 {
        let (p50, p99, max) = latency(&session, &db, &mut generator, &options).await?;
        let _ = writeln!(
            out,
            "latency of q2 at {} events/s for {}s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            options.latency_rate, options.latency_seconds, p50, p99, max
        );
        csv.push_str(&format!(
            "latency_q2_p50_ms,{},{},{p50:.2},,\nlatency_q2_p99_ms,{},{},{p99:.2},,\n",
            options.latency_rate,
            options.latency_seconds,
            options.latency_rate,
            options.latency_seconds
        ));
    }
    std::fs::write(&options.csv, csv).map_err(|e| format!("{}: {e}", options.csv.display()))?;
    let _ = writeln!(out, "written to {}", options.csv.display());
    db.shutdown();
    Ok(())
}

/// How `weir bench recovery` runs.
#[derive(Debug, Clone)]
pub struct RecoveryOptions {
    /// Events in the log.
    pub events: u64,
    /// Distinct keys, all in one open window: the view's state.
    pub keys: u64,
    /// The checkpoint interval of the run with checkpoints.
    pub checkpoint_interval: Duration,
}

/// Waits until `view` has processed everything committed to its sources.
async fn catch_up(db: &Database, view: &str) -> Result<(), String> {
    let view = db
        .view(view)
        .ok_or_else(|| format!("view {view} is missing"))?;
    let offsets = view.source_offsets();
    let progress = tokio::task::spawn_blocking(move || {
        view.table
            .wait_for(&offsets, Duration::from_secs(24 * 3600))
    })
    .await
    .map_err(|e| e.to_string())?;
    match progress.error {
        Some(e) => Err(format!("the view stopped: {e}")),
        None => Ok(()),
    }
}

/// Bytes in the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The recovery benchmark: `events` events over `keys` keys in the log, a view holding one open
/// window per key. Measures the view's catch-up with checkpoints every second and without
/// (their difference is the checkpoints' cost), then restart time: opening the data directory
/// (log recovery) and the view resuming from its checkpoint.
pub async fn recovery(options: RecoveryOptions) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary data dir: {e}"))?;
    let open = |interval: Duration| {
        Database::open_with(
            dir.path(),
            weir_sql::Options {
                checkpoint_interval: interval,
                ..weir_sql::Options::default()
            },
        )
    };
    let db = open(options.checkpoint_interval)
        .await
        .map_err(|e| e.to_string())?;
    let session = Session::new(db.clone());
    execute(
        &session,
        "CREATE STREAM ev (k BIGINT, v BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts) \
         WITH (partitions = 4, key = 'k')",
    )
    .await?;
    let started = Instant::now();
    load_recovery_events(&session, &options).await?;
    let load_secs = started.elapsed().as_secs_f64();
    let view = "SELECT window_start, k, COUNT(*) AS n, SUM(v) AS total \
                FROM TUMBLE(ev, ts, INTERVAL '1' DAY) GROUP BY window_start, k";
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "{} events over {} keys loaded in {load_secs:.1} s",
        options.events, options.keys
    );
    // Catch-up with checkpoints.
    let started = Instant::now();
    execute(
        &session,
        &format!("CREATE MATERIALIZED VIEW with_ckpt AS {view}"),
    )
    .await?;
    catch_up(&db, "with_ckpt").await?;
    let with_secs = started.elapsed().as_secs_f64();
    let epochs = db
        .view("with_ckpt")
        .and_then(|v| v.table.progress().checkpoint)
        .map_or(0, |c| c.0);
    execute(&session, "DROP MATERIALIZED VIEW with_ckpt").await?;
    drop(session);
    db.shutdown();
    drop(db);
    // The same without checkpoints while it runs (one is written as it stops).
    let db = open(Duration::from_secs(365 * 24 * 3600))
        .await
        .map_err(|e| e.to_string())?;
    let session = Session::new(db.clone());
    let started = Instant::now();
    execute(&session, &format!("CREATE MATERIALIZED VIEW v AS {view}")).await?;
    catch_up(&db, "v").await?;
    let without_secs = started.elapsed().as_secs_f64();
    let rows = options.keys.min(options.events);
    drop(session);
    let stopping = Instant::now();
    db.shutdown();
    let final_checkpoint_secs = stopping.elapsed().as_secs_f64();
    drop(db);
    let checkpoint_bytes = dir_bytes(&dir.path().join("views").join("v"));
    // Restart: log recovery, then the view resumes from its checkpoint.
    let started = Instant::now();
    let db = open(Duration::from_secs(1))
        .await
        .map_err(|e| e.to_string())?;
    let open_secs = started.elapsed().as_secs_f64();
    catch_up(&db, "v").await?;
    let restart_secs = started.elapsed().as_secs_f64();
    // Check the restored state: events two days later close the window, whose counts must
    // cover every event.
    let session = Session::new(db.clone());
    let Output::CopyIn(copy) = execute(&session, "COPY ev FROM STDIN").await? else {
        return Err("COPY did not start".into());
    };
    let later = chrono::DateTime::from_timestamp_micros(BASE_MICROS + 2 * 86_400_000_000)
        .ok_or("event time out of range")?
        .format("%Y-%m-%d %H:%M:%S");
    // One per key for a few keys, so that every partition's watermark moves.
    let later_rows: String = (0..64).map(|k| format!("{k}\t0\t{later}\n")).collect();
    session
        .copy_data(&copy, later_rows.into_bytes())
        .await
        .map_err(|e| e.to_string())?;
    check_restored(&session, &options).await?;
    drop(session);
    db.shutdown();
    let rate = |secs: f64| options.events as f64 / secs.max(1e-9);
    let _ = writeln!(
        out,
        "catch-up with checkpoints every {} ms: {with_secs:.2} s ({:.0} events/s, {epochs} checkpoints)\n\
         catch-up without checkpoints:        {without_secs:.2} s ({:.0} events/s)\n\
         checkpoint cost: {:.1}% of catch-up time; one checkpoint of {rows} keys: {:.1} MiB, written at stop in {final_checkpoint_secs:.2} s\n\
         restart: data directory open (log recovery) {open_secs:.2} s, view resumed and caught up {restart_secs:.2} s\n\
         peak RSS {:.0} MiB",
        options.checkpoint_interval.as_millis(),
        rate(with_secs),
        rate(without_secs),
        (with_secs - without_secs) / with_secs.max(1e-9) * 100.0,
        checkpoint_bytes as f64 / (1024.0 * 1024.0),
        peak_rss_mib()
    );
    Ok(())
}

/// Loads the recovery benchmark's events by COPY, 200,000 at a time: all within one hour, so
/// every key stays in the one open window.
async fn load_recovery_events(session: &Session, options: &RecoveryOptions) -> Result<(), String> {
    let mut loaded = 0u64;
    while loaded < options.events {
        let n = 200_000.min(options.events - loaded);
        let mut rows = String::with_capacity(n as usize * 40);
        for i in loaded..loaded + n {
            // All events within one hour, so every key stays in the one open window.
            let micros = BASE_MICROS + (i * 3_600_000_000 / options.events.max(1)) as i64;
            rows.push_str(&format!(
                "{}\t{}\t{}\n",
                i % options.keys.max(1),
                i % 1000,
                chrono::DateTime::from_timestamp_micros(micros)
                    .ok_or("event time out of range")?
                    .format("%Y-%m-%d %H:%M:%S%.6f")
            ));
        }
        let Output::CopyIn(copy) = execute(session, "COPY ev FROM STDIN").await? else {
            return Err("COPY did not start".into());
        };
        session
            .copy_data(&copy, rows.into_bytes())
            .await
            .map_err(|e| e.to_string())?;
        loaded += n;
    }
    Ok(())
}

/// Checks the restored view once its window closed: one row per key, counting every event.
async fn check_restored(session: &Session, options: &RecoveryOptions) -> Result<(), String> {
    let counted = match execute(session, "SELECT COUNT(*), SUM(n) FROM v").await? {
        Output::Rows { stream, .. } => {
            use futures::TryStreamExt;
            let batches: Vec<_> = stream.try_collect().await.map_err(|e| e.to_string())?;
            let b = batches.first().ok_or("no result")?;
            let text = |c: usize| {
                weir_sql::datafusion::arrow::util::display::array_value_to_string(b.column(c), 0)
                    .unwrap_or_default()
            };
            (text(0), text(1))
        }
        _ => return Err("the check query returned no rows".into()),
    };
    if counted
        != (
            options.keys.min(options.events).to_string(),
            options.events.to_string(),
        )
    {
        return Err(format!(
            "the restored window has (keys, events) = {counted:?}, not ({}, {})",
            options.keys, options.events
        ));
    }
    Ok(())
}
