//! The correctness oracle, as a property test: for random events with bounded disorder, random
//! INSERT batch splits, partition counts and TUMBLE / HOP / SESSION windows (and joins of two
//! streams), a continuous view holds exactly what the same query returns in batch (DataFusion
//! over the log) for the windows the watermark has closed, and no closed window is emitted twice.
//! Most cases also restart the database part-way, so views resume from their checkpoints.

use proptest::prelude::*;
use weir_sql::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use weir_sql::{Database, Session};

/// One event: key, value, event time in milliseconds.
type Event = (i64, i64, i64);

/// Events whose event time never falls behind the largest one seen by more than `disorder_ms`.
fn events() -> impl Strategy<Value = (Vec<Event>, i64)> {
    (0i64..3000).prop_flat_map(|disorder_ms| {
        (
            prop::collection::vec((0i64..6, -50i64..50, 0i64..400, 0..=disorder_ms), 1..120),
            Just(disorder_ms),
        )
            .prop_map(|(raw, disorder)| {
                let mut t = 1_767_225_600_000i64; // 2026-01-01
                let events = raw
                    .into_iter()
                    .map(|(k, v, step, jitter)| {
                        t += step;
                        (k, v, t + jitter)
                    })
                    .collect();
                (events, disorder)
            })
    })
}

async fn text_rows(session: &Session, sql: &str) -> Vec<String> {
    let mut outs = session.execute(sql).await;
    let out = outs.pop().expect("one result").expect(sql);
    let batches = out.collect().await.expect("rows");
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in &batches {
        let f: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for r in 0..b.num_rows() {
            rows.push(
                f.iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    rows.sort();
    rows
}

fn insert_sql(events: &[Event]) -> String {
    let values: Vec<String> = events
        .iter()
        .map(|(k, v, ms)| format!("({k}, {v}, to_timestamp_millis({ms}))"))
        .collect();
    format!("INSERT INTO events VALUES {}", values.join(", "))
}

/// View `v`'s rows, and a predicate selecting the windows it has closed: those ending at or
/// before its watermark. No partition goes idle in these tests, so once the view has caught up
/// its watermark is the smallest partition maximum minus the delay. The rows and the watermark
/// are read until the watermark is the same before and after the rows (the view may still be
/// closing windows as it is read), so that both are of one moment.
async fn view_and_closed_windows(s: &Session) -> (Vec<String>, String) {
    view_and_passed(s, "window_end <=").await
}

/// View `v`'s rows and the predicate `{column_op} TIMESTAMP 'watermark'`, read as
/// [`view_and_closed_windows`] reads them.
async fn view_and_passed(s: &Session, column_op: &str) -> (Vec<String>, String) {
    async fn watermark(s: &Session) -> String {
        let views = text_rows(s, "SHOW MATERIALIZED VIEWS").await;
        views[0]
            .split('|')
            .nth(3)
            .expect("watermark column")
            .to_string()
    }
    loop {
        // A SELECT waits for the view to process every committed event; SHOW does not.
        text_rows(s, "SELECT count(*) FROM v").await;
        let before = watermark(s).await;
        let view = text_rows(s, "SELECT * FROM v").await;
        if watermark(s).await != before {
            continue;
        }
        let closed = if before == "NULL" {
            "false".to_string()
        } else {
            format!("{column_op} TIMESTAMP '{before}'")
        };
        return (view, closed);
    }
}

/// Asserts equal row sets, reporting a few differences rather than both sets whole.
fn assert_same(view: &[String], batch: &[String]) {
    assert!(
        view == batch,
        "view ({} rows) differs from batch ({} rows)\nonly in view: {:?}\nonly in batch: {:?}",
        view.len(),
        batch.len(),
        view.iter()
            .filter(|r| !batch.contains(r))
            .take(5)
            .collect::<Vec<_>>(),
        batch
            .iter()
            .filter(|r| !view.contains(r))
            .take(5)
            .collect::<Vec<_>>()
    );
}

/// INSERTs `events` in one statement per stretch between the `cuts`.
async fn insert_in_batches(s: &Session, events: &[Event], mut cuts: Vec<usize>) {
    let mut start = 0;
    cuts.push(events.len());
    cuts.sort_unstable();
    for cut in cuts {
        let cut = cut.min(events.len());
        if cut > start {
            for r in s.execute(&insert_sql(&events[start..cut])).await {
                r.expect("insert");
            }
            start = cut;
        }
    }
}

/// Closes the database (each view writes a final checkpoint as its query stops) and opens it
/// again, as a restart of Weir does.
async fn reopen(dir: &std::path::Path, db: Database, s: Session) -> (Database, Session) {
    db.shutdown();
    drop(s);
    drop(db);
    let db = Database::open(dir).await.expect("reopen");
    let s = Session::new(db.clone());
    (db, s)
}

/// INSERTs `events` as [`insert_in_batches`] does, restarting the database after the first
/// `restart` events (when given): views resume from their checkpoints.
async fn insert_with_restart(
    dir: &std::path::Path,
    db: Database,
    s: Session,
    events: &[Event],
    cuts: Vec<usize>,
    restart: Option<usize>,
) -> (Database, Session) {
    let Some(r) = restart.map(|r| r.min(events.len())) else {
        insert_in_batches(&s, events, cuts).await;
        return (db, s);
    };
    let (before, after): (Vec<usize>, Vec<usize>) = cuts.into_iter().partition(|&c| c <= r);
    insert_in_batches(&s, &events[..r], before).await;
    let (db, s) = reopen(dir, db, s).await;
    insert_in_batches(&s, &events[r..], after.into_iter().map(|c| c - r).collect()).await;
    (db, s)
}

/// A partition that has never had data does not hold the watermark back, so its first events
/// could already be late when they arrive after another partition's. Give every key one event at
/// the earliest time first, as a live stream would have had.
async fn seed(s: &Session, events: &[Event]) {
    let first = events
        .iter()
        .map(|e| e.2)
        .min()
        .expect("at least one event");
    let mut keys: Vec<i64> = events.iter().map(|e| e.0).collect();
    keys.sort_unstable();
    keys.dedup();
    let seeds: Vec<Event> = keys.into_iter().map(|k| (k, 0, first)).collect();
    for r in s.execute(&insert_sql(&seeds)).await {
        r.expect("seed insert");
    }
}

/// A fresh database with streams `names` of events (k, v, ts) over `partitions` partitions,
/// keyed by k, whose watermark trails ts by `delay_ms` and whose partitions never go idle.
async fn open_with_streams(
    names: &[&str],
    delay_ms: i64,
    partitions: u32,
) -> (tempfile::TempDir, Database, Session) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open(dir.path()).await.expect("open");
    let s = Session::new(db.clone());
    for name in names {
        let create = format!(
            "CREATE STREAM {name} (k BIGINT, v BIGINT, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '{delay_ms} milliseconds') \
             WITH (partitions = {partitions}, key = 'k', idle_timeout_ms = 3600000)"
        );
        for r in s.execute(&create).await {
            r.expect("create stream");
        }
    }
    (dir, db, s)
}

async fn check(
    events: Vec<Event>,
    disorder_ms: i64,
    cuts: Vec<usize>,
    partitions: u32,
    window: String,
    view_first: bool,
    lateness: bool,
    restart: Option<usize>,
) {
    // With allowed lateness, the watermark delay covers half the disorder and the lateness the
    // rest: nothing is late, and windows closed early are corrected in place.
    let (delay_ms, lateness_ms) = if lateness {
        (disorder_ms / 2, disorder_ms - disorder_ms / 2)
    } else {
        (disorder_ms, 0)
    };
    let (dir, db, s) = open_with_streams(&["events"], delay_ms, partitions).await;
    let query = format!(
        "SELECT window_start, window_end, k, COUNT(*) AS n, SUM(v) AS total, MIN(v) AS lo, \
         MAX(v) AS hi, AVG(v) AS mean, COUNT(*) FILTER (WHERE v > 0) AS positive, \
         COUNT(DISTINCT v % 5) AS residues \
         FROM {window} GROUP BY window_start, window_end, k"
    );
    let create_view = if lateness {
        format!(
            "CREATE MATERIALIZED VIEW v WITH (allowed_lateness = '{lateness_ms} milliseconds') AS {query}"
        )
    } else {
        format!("CREATE MATERIALIZED VIEW v AS {query}")
    };
    if view_first {
        for r in s.execute(&create_view).await {
            r.expect("create view");
        }
    }
    if view_first && partitions > 1 {
        seed(&s, &events).await;
    }
    let (db, s) = insert_with_restart(dir.path(), db, s, &events, cuts, restart).await;
    if !view_first {
        for r in s.execute(&create_view).await {
            r.expect("create view");
        }
    }
    let (view, closed) = view_and_closed_windows(&s).await;
    let batch = text_rows(&s, &format!("SELECT * FROM ({query}) WHERE {closed}")).await;
    assert_same(&view, &batch);
    let mut distinct = view.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), view.len(), "a window was emitted twice");
    db.shutdown();
}

/// The window clause: TUMBLE, or HOP with a slide of a whole fraction of the size.
fn window() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![100i64, 250, 1000, 5000, 60_000]),
        0i64..4,
    )
        .prop_map(|(size, hop)| match hop {
            0 => format!("TUMBLE(events, ts, INTERVAL '{size} milliseconds')"),
            d => format!(
                "HOP(events, ts, INTERVAL '{} milliseconds', INTERVAL '{size} milliseconds')",
                size / (d + 1)
            ),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The incremental path: the view exists first and sees the events in INSERT batches. Within
    /// a partition, arrival order is event order up to the declared disorder, so nothing is late.
    #[test]
    fn incremental_windows_equal_batch(
        (events, disorder) in events(),
        cuts in prop::collection::vec(0usize..120, 0..8),
        partitions in 1u32..5,
        window in window(),
        lateness in any::<bool>(),
        restart in prop::option::of(0usize..120),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(check(events, disorder, cuts, partitions, window, true, lateness, restart));
    }

    /// The replay path: events are in the log (over several partitions) before the view starts.
    #[test]
    fn replayed_windows_equal_batch(
        (events, disorder) in events(),
        cuts in prop::collection::vec(0usize..120, 0..8),
        partitions in 1u32..5,
        window in window(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(check(events, disorder, cuts, partitions, window, false, false, None));
    }
}

/// Results that change: EMIT ON UPDATE over windows, GROUP BY without a window (with or without
/// HAVING), or no GROUP BY at all. After all events, the view equals the batch query over every
/// window (open or closed) and every group.
async fn check_updating(
    events: Vec<Event>,
    cuts: Vec<usize>,
    partitions: u32,
    query: String,
    restart: Option<usize>,
) {
    let (dir, db, s) = open_with_streams(&["events"], 0, partitions).await;
    let emit = if query.contains("window_start") {
        " EMIT ON UPDATE"
    } else {
        ""
    };
    for r in s
        .execute(&format!("CREATE MATERIALIZED VIEW v AS {query}{emit}"))
        .await
    {
        r.expect("create view");
    }
    if partitions > 1 {
        seed(&s, &events).await;
    }
    let (db, s) = insert_with_restart(dir.path(), db, s, &events, cuts, restart).await;
    let view = text_rows(&s, "SELECT * FROM v").await;
    let batch = text_rows(&s, &query).await;
    assert_same(&view, &batch);
    db.shutdown();
}

fn updating_query() -> impl Strategy<Value = String> {
    (window(), 0u8..22).prop_map(|(window, shape)| {
        let aggregates = "COUNT(*) AS n, SUM(v) AS total, MIN(v) AS lo, MAX(v) AS hi, \
                          COUNT(DISTINCT v % 5) AS residues";
        match shape {
            0 => format!(
                "SELECT window_start, window_end, k, {aggregates} FROM {window} \
                 GROUP BY window_start, window_end, k"
            ),
            // State per group (no DISTINCT): each batch costs what it holds.
            1 => "SELECT k, COUNT(*) AS n, SUM(v) AS total, MIN(v) AS lo, MAX(v) AS hi, \
                  AVG(v) AS mean, COUNT(v) FILTER (WHERE v > 0) AS positive, MAX(ts) AS last, \
                  MIN(CAST(v + 0 AS TEXT)) AS least_text FROM events GROUP BY k"
                .into(),
            // Groups enter and leave the view as they pass and stop passing HAVING.
            2 => format!(
                "SELECT k, {aggregates} FROM events GROUP BY k HAVING COUNT(*) > 3 AND SUM(v) < 40"
            ),
            3 => format!("SELECT {aggregates} FROM events"),
            // Top-N per key (ties broken by time, so that batch has one answer).
            4 => "SELECT k, v, ts, rn FROM (SELECT *, ROW_NUMBER() OVER \
                  (PARTITION BY k ORDER BY v DESC, ts) AS rn FROM events) WHERE rn <= 3"
                .into(),
            // Deduplication: the last event per key.
            5 => "SELECT k, v, ts FROM (SELECT *, ROW_NUMBER() OVER \
                  (PARTITION BY k ORDER BY ts DESC, v) AS rn FROM events) WHERE rn = 1"
                .into(),
            // A join without a time bound.
            6 => "SELECT a.k, a.v, b.v AS w FROM events a JOIN events b ON a.k = b.k AND a.v < b.v"
                .into(),
            // Aggregates over results that change: rows move between groups as the inner
            // results change, and groups leave when they lose their last row.
            7 => "SELECT lo, COUNT(*) AS n, SUM(total) AS s, MAX(hi) AS m, AVG(total) AS a, \
                  COUNT(DISTINCT hi) AS his FROM (SELECT k, SUM(v) AS total, MIN(v) AS lo, MAX(v) AS hi FROM events \
                  GROUP BY k) GROUP BY lo"
                .into(),
            8 => "SELECT v % 3 AS r, COUNT(*) AS n, MIN(ts) AS first, SUM(k) AS keys \
                  FROM (SELECT * FROM (SELECT *, ROW_NUMBER() OVER \
                  (PARTITION BY k ORDER BY v DESC, ts) AS rn FROM events) WHERE rn <= 2) \
                  GROUP BY v % 3"
                .into(),
            9 => "SELECT COUNT(*) AS n, SUM(c) AS s, MIN(k) AS lo FROM \
                  (SELECT k, COUNT(*) AS c FROM events GROUP BY k HAVING SUM(v) > 0)"
                .into(),
            // RANK and DENSE_RANK: ties share a rank, so a key keeps every row up to N.
            10 => "SELECT k, v, r FROM (SELECT *, RANK() OVER \
                  (PARTITION BY k ORDER BY v DESC) AS r FROM events) WHERE r <= 2"
                .into(),
            11 => "SELECT k, v, ts, r FROM (SELECT *, DENSE_RANK() OVER \
                  (PARTITION BY k ORDER BY v % 4) AS r FROM events) WHERE r <= 2"
                .into(),
            // Outer joins without a time bound: an unmatched row is taken back when it matches.
            13 => "SELECT a.k, a.v, b.v AS w FROM events a LEFT JOIN events b \
                  ON a.k = b.k AND a.v < b.v"
                .into(),
            14 => "SELECT a.k, a.v, b.k AS k2, b.v AS w FROM events a FULL JOIN events b \
                  ON a.k = b.k + 1 AND a.v > b.v + 2"
                .into(),
            15 => "SELECT a.k, COUNT(*) AS n, COUNT(b.v) AS matched, SUM(b.v) AS s \
                  FROM events a RIGHT JOIN events b ON a.k = b.k AND a.v < b.v GROUP BY a.k"
                .into(),
            // Top-N over results that change: a total that falls brings another into the top.
            16 => "SELECT k, total, r FROM (SELECT k, total, ROW_NUMBER() OVER \
                  (ORDER BY total DESC, k) AS r FROM (SELECT k, SUM(v) AS total FROM events \
                  GROUP BY k)) WHERE r <= 3"
                .into(),
            17 => "SELECT lo, k, r FROM (SELECT lo, k, DENSE_RANK() OVER (PARTITION BY lo \
                  ORDER BY hi DESC) AS r FROM (SELECT k, MIN(v) % 3 AS lo, MAX(v) AS hi \
                  FROM events GROUP BY k)) WHERE r <= 2"
                .into(),
            18 => "SELECT k, w, r FROM (SELECT a.k, b.v AS w, RANK() OVER (PARTITION BY a.k \
                  ORDER BY b.v) AS r FROM events a LEFT JOIN events b ON a.k = b.k AND a.v < b.v) \
                  WHERE r <= 2"
                .into(),
            // Joins of results that change: a changed row takes back what it joined.
            19 => "SELECT a.k, a.total, b.n FROM (SELECT k, SUM(v) AS total FROM events GROUP BY k) a \
                  JOIN (SELECT k % 3 AS k, COUNT(*) AS n FROM events GROUP BY k % 3) b ON a.k = b.k"
                .into(),
            20 => "SELECT e.k, e.v, a.total FROM events e LEFT JOIN (SELECT k, SUM(v) AS total \
                  FROM events WHERE v > 0 GROUP BY k) a ON e.k = a.k AND e.v < a.total"
                .into(),
            21 => "SELECT a.k, a.n, b.hi FROM (SELECT k, COUNT(*) AS n FROM events GROUP BY k \
                  HAVING COUNT(*) > 2) a FULL JOIN (SELECT k, MAX(v) AS hi FROM events \
                  WHERE v > 10 GROUP BY k) b ON a.k = b.k"
                .into(),
            // Results that change without their key: a multiset of rows.
            _ => "SELECT total, hi FROM (SELECT k, SUM(v) AS total, MAX(v) AS hi FROM events \
                  GROUP BY k)"
                .into(),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Events in event-time order (no watermark delay is needed then): the view equals the
    /// batch query for updating aggregates (every window and group), Top-N (ROW_NUMBER, RANK,
    /// DENSE_RANK) and deduplication, joins without a time bound (inner and outer), Top-N and
    /// joins over results that change, results kept without their key, and aggregates over
    /// all of these.
    #[test]
    fn updating_results_equal_batch(
        (events, _) in events(),
        cuts in prop::collection::vec(0usize..120, 0..8),
        partitions in 1u32..5,
        query in updating_query(),
        restart in prop::option::of(0usize..120),
    ) {
        let mut events = events;
        events.sort_by_key(|e| e.2);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(check_updating(events, cuts, partitions, query, restart));
    }
}

/// SESSION windows against a batch query that numbers sessions with window functions.
async fn check_sessions(
    events: Vec<Event>,
    disorder_ms: i64,
    cuts: Vec<usize>,
    partitions: u32,
    gap_ms: i64,
    restart: Option<usize>,
) {
    let (dir, db, s) = open_with_streams(&["events"], disorder_ms, partitions).await;
    let view = format!(
        "CREATE MATERIALIZED VIEW v AS SELECT k, window_start, window_end, COUNT(*) AS n, \
         SUM(v) AS total, MAX(v) AS hi FROM SESSION(events, ts, INTERVAL '{gap_ms} milliseconds') \
         GROUP BY k, window_start, window_end"
    );
    for r in s.execute(&view).await {
        r.expect("create view");
    }
    if partitions > 1 {
        seed(&s, &events).await;
    }
    let (db, s) = insert_with_restart(dir.path(), db, s, &events, cuts, restart).await;
    let (view, closed) = view_and_closed_windows(&s).await;
    let gap = format!("INTERVAL '{gap_ms} milliseconds'");
    let batch = text_rows(
        &s,
        &format!(
            "WITH marked AS (
               SELECT k, v, ts, CASE WHEN LAG(ts) OVER (PARTITION BY k ORDER BY ts) IS NULL
                   OR ts >= LAG(ts) OVER (PARTITION BY k ORDER BY ts) + {gap} THEN 1 ELSE 0 END AS fresh
               FROM events),
             numbered AS (
               SELECT k, v, ts, SUM(fresh) OVER (PARTITION BY k ORDER BY ts, fresh DESC
                   ROWS UNBOUNDED PRECEDING) AS sid FROM marked),
             sessions AS (
               SELECT k, MIN(ts) AS window_start, MAX(ts) + {gap} AS window_end, COUNT(*) AS n,
                      SUM(v) AS total, MAX(v) AS hi
               FROM numbered GROUP BY k, sid)
             SELECT * FROM sessions WHERE {closed}"
        ),
    )
    .await;
    assert_same(&view, &batch);
    db.shutdown();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Sessions per key, with disorder, batch splits and partitions, equal the batch sessions.
    #[test]
    fn sessions_equal_batch(
        (events, disorder) in events(),
        cuts in prop::collection::vec(0usize..120, 0..8),
        partitions in 1u32..5,
        gap_ms in prop::sample::select(vec![50i64, 200, 1000, 5000]),
        restart in prop::option::of(0usize..120),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(check_sessions(events, disorder, cuts, partitions, gap_ms, restart));
    }
}

/// INSERTs two streams' events, alternating between their batches, so that the join sees both
/// inputs advance in turns.
async fn insert_interleaved(s: &Session, a: &[Event], b: &[Event], cuts: &[usize]) {
    let bounds = |n: usize| {
        let mut c: Vec<usize> = cuts.iter().map(|&c| c.min(n)).collect();
        c.push(0);
        c.push(n);
        c.sort_unstable();
        c.dedup();
        c.windows(2).map(|w| (w[0], w[1])).collect::<Vec<_>>()
    };
    let (ra, rb) = (bounds(a.len()), bounds(b.len()));
    for i in 0..ra.len().max(rb.len()) {
        for (stream, events, ranges) in [("a", a, &ra), ("b", b, &rb)] {
            if let Some(&(from, to)) = ranges.get(i) {
                let sql =
                    insert_sql(&events[from..to]).replace("INTO events", &format!("INTO {stream}"));
                for r in s.execute(&sql).await {
                    r.expect("insert");
                }
            }
        }
    }
}

/// Joins of two streams against the same query in batch: raw rows joined per window, an
/// interval join, and windowed aggregates joined on their windows (closed windows only).
async fn check_join(
    (a, b): (Vec<Event>, Vec<Event>),
    disorder_ms: i64,
    cuts: Vec<usize>,
    partitions: u32,
    kind: u8,
    size_ms: i64,
    restart: Option<usize>,
) {
    let (dir, db, s) = open_with_streams(&["a", "b"], disorder_ms, partitions).await;
    let size = format!("INTERVAL '{size_ms} milliseconds'");
    let query = match kind {
        0 => format!(
            "SELECT x.k, x.v AS xv, y.v AS yv, x.ts AS xts, y.ts AS yts, x.window_start \
             FROM TUMBLE(a, ts, {size}) x JOIN TUMBLE(b, ts, {size}) y \
             ON x.k = y.k AND x.window_start = y.window_start AND x.window_end = y.window_end"
        ),
        1 => format!(
            "SELECT x.k, x.v AS xv, y.v AS yv, x.ts AS xts, y.ts AS yts FROM a x JOIN b y \
             ON x.k = y.k AND x.ts BETWEEN y.ts - {size} AND y.ts + INTERVAL '10 milliseconds'"
        ),
        // A subplan both sides compute (computed once): Nexmark q5's hot keys per HOP window,
        // and each key's count against its previous window's.
        3 => {
            let counts = format!(
                "SELECT k, COUNT(*) AS n, window_start, window_end FROM HOP(a, ts, {size}, \
                 INTERVAL '{}' MILLISECOND) GROUP BY k, window_start, window_end",
                size_ms * 2
            );
            format!(
                "SELECT x.k, x.n, x.window_start, x.window_end FROM ({counts}) x JOIN \
                 (SELECT MAX(n) AS top, window_start, window_end FROM ({counts}) c \
                  GROUP BY window_start, window_end) m \
                 ON x.window_start = m.window_start AND x.window_end = m.window_end \
                 AND x.n >= m.top"
            )
        }
        4 => {
            let counts = format!(
                "SELECT k, COUNT(*) AS n, SUM(v) AS total, window_start, window_end \
                 FROM TUMBLE(a, ts, {size}) GROUP BY k, window_start, window_end"
            );
            format!(
                "SELECT cur.k, cur.n, prev.n AS previous, cur.total - prev.total AS change, \
                 cur.window_start, cur.window_end FROM ({counts}) cur JOIN ({counts}) prev \
                 ON cur.k = prev.k AND cur.window_start = prev.window_start + {size}"
            )
        }
        _ => format!(
            "SELECT x.k, x.n, y.total, x.window_start, x.window_end FROM \
             (SELECT k, COUNT(*) AS n, window_start, window_end FROM HOP(a, ts, {size}, INTERVAL '{}' MILLISECOND) \
              GROUP BY k, window_start, window_end) x \
             JOIN (SELECT k, SUM(v) AS total, window_start, window_end FROM HOP(b, ts, {size}, INTERVAL '{}' MILLISECOND) \
              GROUP BY k, window_start, window_end) y \
             ON x.k = y.k AND x.window_start = y.window_start AND x.window_end = y.window_end \
             WHERE x.n > 1",
            size_ms * 2,
            size_ms * 2
        ),
    };
    for r in s
        .execute(&format!("CREATE MATERIALIZED VIEW v AS {query}"))
        .await
    {
        r.expect("create view");
    }
    if partitions > 1 {
        let seed_sql = |stream: &str, events: &[Event]| {
            let first = events.iter().map(|e| e.2).min().expect("events");
            let mut keys: Vec<i64> = a.iter().chain(b.iter()).map(|e| e.0).collect();
            keys.sort_unstable();
            keys.dedup();
            let seeds: Vec<Event> = keys.into_iter().map(|k| (k, 1000, first)).collect();
            insert_sql(&seeds).replace("INTO events", &format!("INTO {stream}"))
        };
        for sql in [seed_sql("a", &a), seed_sql("b", &b)] {
            for r in s.execute(&sql).await {
                r.expect("seed");
            }
        }
    }
    let (db, s) = match restart {
        None => {
            insert_interleaved(&s, &a, &b, &cuts).await;
            (db, s)
        }
        Some(r) => {
            // Both streams up to the same point in the sequence they were split from.
            let (ra, rb) = ((r / 2).min(a.len()), (r / 2).min(b.len()));
            insert_interleaved(&s, &a[..ra], &b[..rb], &cuts).await;
            let (db, s) = reopen(dir.path(), db, s).await;
            insert_interleaved(&s, &a[ra..], &b[rb..], &cuts).await;
            (db, s)
        }
    };
    let (view, batch) = if kind >= 2 {
        let (view, closed) = view_and_closed_windows(&s).await;
        let batch = text_rows(&s, &format!("SELECT * FROM ({query}) WHERE {closed}")).await;
        (view, batch)
    } else {
        let view = text_rows(&s, "SELECT * FROM v").await;
        (view, text_rows(&s, &query).await)
    };
    assert_same(&view, &batch);
    let late = text_rows(&s, "SELECT watermark, event FROM weir_late_events").await;
    assert!(
        late.is_empty(),
        "no event is late within the watermark delay: {late:?}"
    );
    db.shutdown();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Window joins, interval joins and joins of windowed aggregates (of two streams, and of one
    /// aggregate with itself, computed once), with disorder within the watermark delay, random
    /// batch splits and partitions, equal the same joins in batch.
    #[test]
    fn joins_equal_batch(
        (events, disorder) in events(),
        cuts in prop::collection::vec(0usize..120, 0..8),
        partitions in 1u32..4,
        kind in 0u8..5,
        size_ms in prop::sample::select(vec![100i64, 500, 2000]),
        restart in prop::option::of(0usize..120),
    ) {
        // Two streams from one sequence (alternate events), so both keep within the disorder.
        let a: Vec<Event> = events.iter().step_by(2).copied().collect();
        let b: Vec<Event> = match events.iter().skip(1).step_by(2).copied().collect::<Vec<_>>() {
            b if b.is_empty() => a.clone(),
            b => b,
        };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(check_join((a, b), disorder, cuts, partitions, kind, size_ms, restart));
    }
}

/// OVER aggregates against the same query in batch, over the rows the watermark has passed.
async fn check_over(
    events: Vec<Event>,
    disorder_ms: i64,
    cuts: Vec<usize>,
    partitions: u32,
    frame: String,
    restart: Option<usize>,
) {
    let (dir, db, s) = open_with_streams(&["events"], disorder_ms, partitions).await;
    let query = format!(
        "SELECT k, v, ts, SUM(v) OVER w AS total, COUNT(*) OVER w AS n, MIN(v) OVER w AS lo, \
         AVG(v) OVER w AS mean FROM events WINDOW w AS (PARTITION BY k ORDER BY ts {frame})"
    );
    for r in s
        .execute(&format!("CREATE MATERIALIZED VIEW v AS {query}"))
        .await
    {
        r.expect("create view");
    }
    if partitions > 1 {
        // A row per key a millisecond before the first event, so that no seed row shares a
        // key and time with an event (rows of one time have no order for a ROWS frame).
        let first = events.iter().map(|e| e.2).min().expect("an event");
        let seeds: Vec<Event> = events.iter().map(|e| (e.0, 0, first - 1)).collect();
        seed(&s, &seeds).await;
    }
    let (db, s) = insert_with_restart(dir.path(), db, s, &events, cuts, restart).await;
    // The rows whose time the watermark has passed (the predicate is on windows' ends for
    // windowed views; here on each row's time).
    let (view, passed) = view_and_passed(&s, "ts <").await;
    let batch = text_rows(&s, &format!("SELECT * FROM ({query}) WHERE {passed}")).await;
    assert_same(&view, &batch);
    db.shutdown();
}

fn over_frame() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        (0u32..4).prop_map(|n| (format!("ROWS BETWEEN {n} PRECEDING AND CURRENT ROW"), true)),
        Just((
            "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW".to_string(),
            true
        )),
        (0u32..800).prop_map(|ms| (
            format!("RANGE BETWEEN INTERVAL '{ms} milliseconds' PRECEDING AND CURRENT ROW"),
            false
        )),
        Just((String::new(), false)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// OVER aggregates over events with disorder (nothing late), in INSERT batches over several
    /// partitions, with restarts: each row the watermark has passed is in the view once, with
    /// the aggregates batch gives it. ROWS frames get one event per key and time, since rows of
    /// one time have no order of their own.
    #[test]
    fn over_aggregates_equal_batch(
        (events, disorder) in events(),
        cuts in prop::collection::vec(0usize..120, 0..8),
        partitions in 1u32..5,
        (frame, rows) in over_frame(),
        restart in prop::option::of(0usize..120),
    ) {
        let mut events = events;
        if rows {
            let mut seen = std::collections::HashSet::new();
            events.retain(|e| seen.insert((e.0, e.2)));
        }
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(check_over(events, disorder, cuts, partitions, frame, restart));
    }
}
