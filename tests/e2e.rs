//! End-to-end tests: the real `weir` binary on a free port, driven by tokio-postgres and psql,
//! restarted cleanly and after SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

#[path = "support/server.rs"]
mod server;
use server::{Server, count, generate, rows};

const CREATE_CLICKS: &str = "CREATE STREAM clicks (user_id BIGINT, url TEXT, ts TIMESTAMP, \
    WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH (partitions = 4, key = 'user_id')";
const CREATE_VIEW: &str = "CREATE MATERIALIZED VIEW clicks_per_min AS \
    SELECT window_start, window_end, user_id, COUNT(*) AS clicks \
    FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE) GROUP BY window_start, window_end, user_id";

#[tokio::test]
async fn tour_over_the_wire_with_tokio_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c = server.client().await;
    c.batch_execute(CREATE_CLICKS).await.expect("create stream");
    let n = c
        .execute(
            "INSERT INTO clicks VALUES (1, '/a', '2026-01-01 00:00:01'), (2, '/b', '2026-01-01 00:00:30')",
            &[],
        )
        .await
        .expect("insert");
    assert_eq!(n, 2);
    c.batch_execute(CREATE_VIEW).await.expect("create view");
    // Extended protocol with typed parameters.
    let n = c
        .execute(
            "INSERT INTO clicks VALUES ($1, $2, '2026-01-01 00:01:10')",
            &[&1i64, &"/c"],
        )
        .await
        .expect("prepared insert");
    assert_eq!(n, 1);
    assert_eq!(
        rows(
            &c,
            "SELECT * FROM clicks_per_min ORDER BY window_start, user_id"
        )
        .await,
        vec![
            vec!["2026-01-01 00:00:00", "2026-01-01 00:01:00", "1", "1"],
            vec!["2026-01-01 00:00:00", "2026-01-01 00:01:00", "2", "1"],
        ]
    );
    assert_eq!(count(&c, "SELECT count(*) FROM clicks").await, 3);
    let by_user: i64 = c
        .query_one("SELECT count(*) FROM clicks WHERE user_id = $1", &[&1i64])
        .await
        .expect("parameterised select")
        .get(0);
    assert_eq!(by_user, 2);
    let streams = rows(&c, "SHOW STREAMS").await;
    assert_eq!(
        streams,
        vec![vec!["clicks", "4", "user_id", "ts", "2s", "3"]]
    );
    let views = rows(&c, "SHOW MATERIALIZED VIEWS").await;
    assert_eq!(views.len(), 1);
    assert_eq!(views[0][0], "clicks_per_min");

    // Errors carry their SQLSTATE and leave the connection usable.
    let e = c
        .simple_query("SELECT * FROM nope")
        .await
        .expect_err("unknown table");
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE));
    let e = c.simple_query("SELEC 1").await.expect_err("syntax");
    assert_eq!(e.code(), Some(&SqlState::SYNTAX_ERROR));
    let e = c
        .execute(
            "INSERT INTO clicks VALUES (9, '/ok', '2026-01-01 00:00:09'), ('x', '/bad', '2026-01-01 00:00:09')",
            &[],
        )
        .await
        .expect_err("bad value");
    assert_eq!(e.code(), Some(&SqlState::INVALID_TEXT_REPRESENTATION));
    let e = c
        .simple_query("CREATE MATERIALIZED VIEW s AS SELECT * FROM clicks ORDER BY ts")
        .await
        .expect_err("not incremental");
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED));
    assert_eq!(
        count(&c, "SELECT count(*) FROM clicks").await,
        3,
        "nothing half-applied"
    );

    // Several statements in one simple query stop at the first error.
    let e = c
        .batch_execute("INSERT INTO clicks VALUES (4, '/d', '2026-01-01 00:00:02'); SELECT * FROM nope; INSERT INTO clicks VALUES (5, '/e', '2026-01-01 00:00:02')")
        .await
        .expect_err("second statement fails");
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE));
    assert_eq!(count(&c, "SELECT count(*) FROM clicks").await, 4);

    // A wrong database name is refused at startup.
    let wrong = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=weir dbname=other", server.port),
        NoTls,
    )
    .await;
    assert!(wrong.is_err());
}

#[tokio::test]
async fn psql_runs_the_readme_tour() {
    let version = Command::new("psql").arg("--version").output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "psql is required (apt-get install postgresql-client); .ci/run installs it"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let tour = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tour.sql");
    let (ok, stdout, stderr) = psql(&server, &["-f", tour.to_str().expect("utf-8 path")]);
    assert!(ok, "psql failed:\n{stdout}\n{stderr}");
    assert!(!stderr.contains("WARNING"), "psql warned: {stderr}");
    for expected in [
        "CREATE STREAM",
        "INSERT 0 2",
        "CREATE MATERIALIZED VIEW",
        "INSERT 0 1",
        " 2026-01-01 00:00:00 | 2026-01-01 00:01:00 |       1 |      1",
        " 2026-01-01 00:00:00 | 2026-01-01 00:01:00 |       2 |      1",
        "(2 rows)",
        "     3",
        " clicks |          4 | user_id | ts         | 2s              |    3",
        " clicks_per_min | clicks ",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // An error in psql shows its SQLSTATE-backed message and psql carries on.
    let out = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "weir",
            "weir",
        ])
        .args([
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "SELECT * FROM nope",
            "-c",
            "SELECT 41 + 1 AS answer",
        ])
        .output()
        .expect("psql runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("42P01"), "{stderr}");
    assert!(stdout.contains("42"), "{stdout}");
}

#[tokio::test]
async fn restart_keeps_streams_rows_and_views() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c = server.client().await;
    c.batch_execute(CREATE_CLICKS).await.expect("stream");
    c.batch_execute(CREATE_VIEW).await.expect("view");
    c.batch_execute(
        "INSERT INTO clicks VALUES (1, '/a', '2026-01-01 00:00:01'), (2, '/b', '2026-01-01 00:00:30'); \
         INSERT INTO clicks VALUES (1, '/c', '2026-01-01 00:01:10')",
    )
    .await
    .expect("inserts");
    let before = rows(
        &c,
        "SELECT * FROM clicks_per_min ORDER BY window_start, user_id",
    )
    .await;
    assert_eq!(before.len(), 2);
    drop(c);
    server.terminate();

    let server = Server::start(dir.path());
    let c = server.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM clicks").await, 3);
    assert_eq!(
        rows(
            &c,
            "SELECT * FROM clicks_per_min ORDER BY window_start, user_id"
        )
        .await,
        before
    );
    // A second server on the same data directory is refused.
    let second = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use"));
}

#[tokio::test]
async fn acknowledged_inserts_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let setup = server.client().await;
    // No partition may go idle during the test, so the watermark is exactly the smallest
    // partition maximum minus the delay, and the batch query below can use the same.
    setup
        .batch_execute(
            &CREATE_CLICKS.replace("'user_id')", "'user_id', idle_timeout_ms = 3600000)"),
        )
        .await
        .expect("stream");
    setup.batch_execute(CREATE_VIEW).await.expect("view");
    let acked = Arc::new(AtomicU64::new(0));
    let writers = 4u64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = server.client().await;
        let acked = Arc::clone(&acked);
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let second = i % 3600;
                let sql = format!(
                    "INSERT INTO clicks VALUES ({w}, '/w{w}/{i}', TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{second}' SECOND)"
                );
                if client.execute(sql.as_str(), &[]).await.is_err() {
                    break;
                }
                acked.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    while acked.load(Ordering::SeqCst) < 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    for t in tasks {
        t.await.expect("writer ends when the server dies");
    }
    let acknowledged = acked.load(Ordering::SeqCst) as i64;

    let server = Server::start(dir.path());
    let c = server.client().await;
    let stored = count(&c, "SELECT count(*) FROM clicks").await;
    assert!(
        stored >= acknowledged && stored <= acknowledged + writers as i64,
        "acknowledged {acknowledged}, stored {stored}"
    );
    // Every row is whole and distinct.
    assert_eq!(
        count(&c, "SELECT count(DISTINCT url) FROM clicks").await,
        stored
    );
    // The recomputed view equals the batch query over the log for closed windows.
    let view = rows(
        &c,
        "SELECT * FROM clicks_per_min ORDER BY window_start, user_id",
    )
    .await;
    let batch = rows(
        &c,
        "WITH wm AS (SELECT max(ts) - INTERVAL '2' SECOND AS w FROM clicks) \
         SELECT window_start, window_end, user_id, COUNT(*) AS clicks \
         FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE) \
         WHERE window_end <= (SELECT w FROM wm) \
         GROUP BY window_start, window_end, user_id ORDER BY window_start, user_id",
    )
    .await;
    assert_eq!(view, batch);
}

#[test]
fn non_loopback_addresses_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("WEIR_PASSWORD")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

/// Runs psql against `server` with `args`; returns (success, stdout, stderr).
fn psql(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args(["-U", "weir", "weir", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .output()
        .expect("psql runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn copy_loads_files_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT NOT NULL, url TEXT, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (partitions = 2, key = 'user_id')",
        )
        .await
        .expect("create stream");
    // psql's \copy of a CSV file with a header.
    let good = dir.path().join("good.csv");
    let mut csv = String::from("user_id,url,ts\n");
    for i in 0..1000 {
        csv.push_str(&format!(
            "{},\"/p,{}\",2026-01-01 00:00:{:02}\n",
            i % 7,
            i,
            i % 60
        ));
    }
    std::fs::write(&good, csv).expect("write csv");
    let copy = format!(
        "\\copy clicks FROM '{}' WITH (FORMAT csv, HEADER)",
        good.display()
    );
    let (ok, stdout, stderr) = psql(&server, &["-c", &copy]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("COPY 1000"), "{stdout}");
    // A bad line fails the whole file, naming the line; psql's session carries on.
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "user_id,url,ts\n1,/a,2026-01-01 00:00:01\n2,/b,not a time\n",
    )
    .expect("write csv");
    let copy = format!(
        "\\copy clicks FROM '{}' WITH (FORMAT csv, HEADER)",
        bad.display()
    );
    let (ok, _, stderr) = psql(&server, &["-c", &copy]);
    assert!(!ok);
    assert!(stderr.contains("line 3"), "{stderr}");
    // A row with a field too many, and a column named twice (42701, as PostgreSQL says).
    std::fs::write(
        &bad,
        "1,/a,2026-01-01 00:00:01\n2,/b,2026-01-01 00:00:02,x\n",
    )
    .expect("write csv");
    let copy = format!("\\copy clicks FROM '{}' WITH (FORMAT csv)", bad.display());
    let (ok, _, stderr) = psql(&server, &["-c", &copy]);
    assert!(!ok);
    assert!(
        stderr.contains("line 2") && stderr.contains("expected 3 fields"),
        "{stderr}"
    );
    let (ok, _, stderr) = psql(
        &server,
        &["-c", "COPY clicks (user_id, user_id) FROM STDIN"],
    );
    assert!(!ok);
    assert!(
        stderr.contains("column \"user_id\" specified more than once"),
        "{stderr}"
    );
    assert_eq!(count(&client, "SELECT count(*) FROM clicks").await, 1000);
    // tokio-postgres' COPY IN, in text format.
    let sink = client
        .copy_in("COPY clicks FROM STDIN")
        .await
        .expect("copy in starts");
    futures::pin_mut!(sink);
    use futures::SinkExt;
    sink.send(bytes::Bytes::from_static(
        b"7\t/x\t2026-01-01 00:01:00\n8\t\\N\t2026-01-01 00:01:01\n",
    ))
    .await
    .expect("data");
    let n = sink.finish().await.expect("copy done");
    assert_eq!(n, 2);
    assert_eq!(count(&client, "SELECT count(*) FROM clicks").await, 1002);
    assert_eq!(
        count(&client, "SELECT count(*) FROM clicks WHERE url IS NULL").await,
        1
    );
}

/// Lines of `COPY clicks FROM STDIN` text: user `i % 50`, a distinct url, a time in the day.
fn copy_lines(range: std::ops::Range<u64>) -> bytes::Bytes {
    let mut out = String::new();
    for i in range {
        out.push_str(&format!(
            "{}\t/copy/{i}\t2026-01-01 {:02}:{:02}:{:02}\n",
            i % 50,
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60
        ));
    }
    bytes::Bytes::from(out)
}

/// A `COPY clicks FROM STDIN` begun on `client`, with `rows` rows of [`copy_lines`] sent.
async fn copy_started(
    client: &Client,
    rows: u64,
) -> std::pin::Pin<Box<tokio_postgres::CopyInSink<bytes::Bytes>>> {
    use futures::SinkExt;
    let sink = client
        .copy_in("COPY clicks FROM STDIN")
        .await
        .expect("copy in starts");
    let mut sink = Box::pin(sink);
    for start in (0..rows).step_by(10_000) {
        let end = (start + 10_000).min(rows);
        sink.send(copy_lines(start..end)).await.expect("data");
    }
    sink
}

/// A COPY into a stream goes to the log as its data comes (in a log transaction) and shows
/// all of its rows or none: nothing while it runs, nothing after a bad row near its end,
/// nothing after `kill -9` in the middle of it; rows others insert meanwhile are kept; and
/// views pass over the rows that never committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_is_all_or_nothing_across_a_bad_row_and_kill_9() {
    use futures::SinkExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c = server.client().await;
    c.batch_execute(CREATE_CLICKS).await.expect("stream");
    c.batch_execute(CREATE_VIEW).await.expect("view");
    // About 12 MiB of data: pieces of it are written to the log before the COPY ends.
    let copying = server.client().await;
    let mut sink = copy_started(&copying, 300_000).await;
    c.execute(
        "INSERT INTO clicks VALUES (7, '/meanwhile', TIMESTAMP '2026-01-01 00:00:00')",
        &[],
    )
    .await
    .expect("an insert while the COPY runs");
    assert_eq!(
        count(&c, "SELECT count(*) FROM clicks WHERE url LIKE '/copy/%'").await,
        0,
        "nothing of a COPY still running is visible"
    );
    sink.send(bytes::Bytes::from_static(b"1\t/bad\tnot a time\n"))
        .await
        .expect("data");
    let err = sink
        .as_mut()
        .finish()
        .await
        .expect_err("the bad row fails the COPY");
    let db = err.as_db_error().expect("a database error");
    assert!(db.message().contains("line 300001"), "{}", db.message());
    assert_eq!(count(&c, "SELECT count(*) FROM clicks").await, 1);

    // The same COPY, cut by kill -9 once the server has written part of it.
    let copying = server.client().await;
    let _sink = copy_started(&copying, 300_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored_before_kill = stored_bytes(&dir.path().join("streams/clicks"));
    server.kill9();
    let server = Server::start(dir.path());
    let c = server.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM clicks").await, 1);
    // A COPY after it loads, and the view, which read past both failed COPYs, counts its rows.
    let copying = server.client().await;
    let mut sink = copy_started(&copying, 1000).await;
    assert_eq!(sink.as_mut().finish().await.expect("copy done"), 1000);
    assert_eq!(count(&c, "SELECT count(*) FROM clicks").await, 1001);
    // The view reads past the rows that never committed: it catches up with the log.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let behind =
        "SELECT committed - processed FROM weir_view_progress WHERE view = 'clicks_per_min'";
    while count(&c, behind).await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the view stays behind"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM weir_view_progress WHERE processed >= 300000"
        )
        .await,
        1,
        "the failed COPYs' offsets count as read"
    );
    assert!(
        stored_before_kill > 1 << 20,
        "the killed COPY had written to the log ({stored_before_kill} bytes): the test cut it midway"
    );
}

/// Bytes in the log files of a stream's partitions under `dir`.
fn stored_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|parts| {
            parts
                .flatten()
                .flat_map(|p| std::fs::read_dir(p.path()).into_iter().flatten().flatten())
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A COPY into a stream whose client goes quiet holds back the stream's readers only until
/// `copy_idle_timeout`: then it is aborted, views read past its rows while its connection is
/// still open, and the client is told (25P03) when it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_copy_is_aborted_so_that_readers_go_on() {
    use futures::SinkExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c = server.client().await;
    c.batch_execute(CREATE_CLICKS).await.expect("stream");
    c.batch_execute(CREATE_VIEW).await.expect("view");
    let copying = server.client().await;
    copying
        .batch_execute("SET copy_idle_timeout = '1500ms'")
        .await
        .expect("set");
    let mut sink = copy_started(&copying, 300_000).await;
    // Once part of it is in the log (in its transaction), an insert waits behind it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stored_bytes(&dir.path().join("streams/clicks")) < 1 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the COPY writes nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.execute(
        "INSERT INTO clicks VALUES (7, '/meanwhile', TIMESTAMP '2026-01-01 00:00:00')",
        &[],
    )
    .await
    .expect("an insert while the COPY runs");
    assert_eq!(
        count(&c, "SELECT count(*) FROM clicks").await,
        0,
        "held back"
    );
    // The client sends nothing more: the COPY is aborted, and the insert shows, in the view
    // too, which reads past the COPY's rows.
    let caught_up = "SELECT count(*) FROM weir_view_progress \
                     WHERE view = 'clicks_per_min' AND processed = committed AND processed > 1";
    while count(&c, caught_up).await != 1 {
        if std::time::Instant::now() > deadline {
            let rows = c
                .simple_query("SELECT processed, committed FROM weir_view_progress")
                .await
                .expect("progress");
            panic!("the view stays held back: {rows:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(&c, "SELECT count(*) FROM clicks").await,
        1,
        "the insert alone"
    );
    sink.send(copy_lines(300_000..300_010)).await.expect("data");
    let err = sink
        .as_mut()
        .finish()
        .await
        .expect_err("the COPY was aborted");
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "25P03", "{}", db.message());
    assert!(
        db.message().contains("sent no data for 1.5 s"),
        "{}",
        db.message()
    );
    assert_eq!(count(&c, "SELECT count(*) FROM clicks").await, 1);
    // A bad value of the setting fails the COPY (told when its data ends, as ever).
    copying
        .batch_execute("SET copy_idle_timeout = 'soon'")
        .await
        .expect("set");
    let mut sink = copy_started(&copying, 10).await;
    let bad = sink.as_mut().finish().await.expect_err("refused");
    let db = bad.as_db_error().expect("a database error");
    assert!(
        db.message().contains("copy_idle_timeout is a duration"),
        "{}",
        db.message()
    );
}

/// psql's `\\copy (query) TO 'file' CSV HEADER` exports a view's rows, and `\\copy name TO`
/// a stream's, as PostgreSQL writes them.
#[test]
fn psql_copies_a_view_and_a_stream_to_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let (ok, stdout, stderr) = psql(
        &server,
        &[
            "-c",
            "CREATE STREAM clicks (user_id BIGINT, url TEXT, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)",
            "-c",
            "CREATE MATERIALIZED VIEW per_user AS SELECT user_id, COUNT(*) AS clicks, \
             max(url) AS last_url FROM clicks GROUP BY user_id",
            "-c",
            "INSERT INTO clicks VALUES (1, '/a,b', '2026-01-01 00:00:01'), \
             (2, '/c', '2026-01-01 00:00:02.5'), (1, '/d', '2026-01-01 00:00:03')",
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    let view_csv = dir.path().join("per_user.csv");
    let stream_txt = dir.path().join("clicks.txt");
    let (ok, stdout, stderr) = psql(
        &server,
        &[
            "-c",
            &format!(
                "\\copy (SELECT * FROM per_user ORDER BY user_id) TO '{}' CSV HEADER",
                view_csv.display()
            ),
            "-c",
            &format!("\\copy clicks TO '{}'", stream_txt.display()),
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("COPY 2"), "{stdout}");
    assert!(stdout.contains("COPY 3"), "{stdout}");
    let csv = std::fs::read_to_string(&view_csv).expect("the view's file");
    assert_eq!(csv, "user_id,clicks,last_url\n1,2,/d\n2,1,/c\n");
    let mut lines: Vec<String> = std::fs::read_to_string(&stream_txt)
        .expect("the stream's file")
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "1\t/a,b\t2026-01-01 00:00:01",
            "1\t/d\t2026-01-01 00:00:03",
            "2\t/c\t2026-01-01 00:00:02.5"
        ]
    );
}

/// psql shows PostgreSQL's notice for `CREATE ... IF NOT EXISTS` over an object of another
/// kind, and nothing changes.
#[test]
fn psql_notices_if_not_exists_over_another_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let (ok, stdout, stderr) = psql(
        &server,
        &[
            "-c",
            "CREATE STREAM clicks (user_id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts)",
            "-c",
            "CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT)",
            "-c",
            "CREATE STREAM IF NOT EXISTS users (x BIGINT)",
            "-c",
            "CREATE TABLE IF NOT EXISTS clicks (id BIGINT PRIMARY KEY)",
            "-c",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS users AS SELECT user_id FROM clicks",
            "-c",
            "SELECT name FROM users",
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    for (tag, name) in [
        ("CREATE STREAM", "users"),
        ("CREATE TABLE", "clicks"),
        ("CREATE MATERIALIZED VIEW", "users"),
    ] {
        assert!(stdout.contains(tag), "missing {tag} in\n{stdout}");
        let notice = format!("NOTICE:  relation \"{name}\" already exists, skipping");
        assert!(stderr.contains(&notice), "missing {notice:?} in\n{stderr}");
    }
    assert!(stdout.contains("(0 rows)"), "{stdout}");
}

#[tokio::test]
async fn psql_describes_streams_tables_and_views() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let (ok, stdout, stderr) = psql(
        &server,
        &[
            "-c",
            "CREATE STREAM clicks (user_id BIGINT, url TEXT, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)",
            "-c",
            "CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT)",
            "-c",
            "CREATE MATERIALIZED VIEW per_user AS SELECT user_id, COUNT(*) AS n FROM clicks GROUP BY user_id",
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    let expect = |command: &str, wanted: &[&str]| {
        let (ok, stdout, stderr) = psql(&server, &["-c", command]);
        assert!(ok, "{command}: {stdout}\n{stderr}");
        for w in wanted {
            assert!(stdout.contains(w), "{command}: missing {w:?} in\n{stdout}");
        }
    };
    expect(
        "\\d",
        &[
            " public | clicks   | table",
            " public | per_user | materialized view",
            " public | users    | table",
        ],
    );
    expect("\\dt", &["clicks", "users", "(2 rows)"]);
    expect("\\dm", &["per_user", "(1 row)"]);
    expect(
        "\\d clicks",
        &[
            "Table \"public.clicks\"",
            " user_id | bigint",
            " ts      | timestamp without time zone |           | not null",
        ],
    );
    expect(
        "\\d+ users",
        &["Table \"public.users\"", " id     | bigint"],
    );
    expect(
        "\\d per_user",
        &["Materialized view \"public.per_user\"", " n       | bigint"],
    );
    expect("\\dn", &["public"]);
    expect("\\l", &["weir"]);
    expect("\\df", &["List of functions"]);
    expect("SELECT version()", &["PostgreSQL 15"]);
    expect(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
        &["clicks", "per_user", "users"],
    );
    // Settings drivers read and write, and transaction blocks of statements that each commit.
    let client = server.client().await;
    client
        .batch_execute("SET application_name = 'e2e'; SET DateStyle = 'ISO, MDY'")
        .await
        .expect("set");
    let rows = client
        .query("SELECT current_setting('application_name')", &[])
        .await
        .expect("current_setting");
    assert_eq!(rows[0].get::<_, String>(0), "e2e");
    let rows = client
        .simple_query("SHOW standard_conforming_strings")
        .await
        .expect("show");
    let value = rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("on"));
    client
        .batch_execute("BEGIN; INSERT INTO users VALUES (1, 'ada'); COMMIT")
        .await
        .expect("transaction block");
    let err = client
        .batch_execute("BEGIN; INSERT INTO users VALUES (2, 'bob'); ROLLBACK")
        .await
        .expect_err("rollback of a committed insert is refused");
    assert_eq!(err.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED));
    assert_eq!(count(&client, "SELECT count(*) FROM users").await, 2);
}

#[tokio::test]
async fn psql_prints_subscriptions_live_and_ctrl_c_cancels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT, url TEXT, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '1' SECOND); \
             CREATE MATERIALIZED VIEW per_user AS SELECT user_id, COUNT(*) AS n FROM clicks GROUP BY user_id; \
             INSERT INTO clicks VALUES (1, '/a', '2026-01-01 00:00:01')",
        )
        .await
        .expect("setup");
    // psql on a terminal (util-linux `script` gives it one), as a user runs it: it prints each
    // row as it arrives, and Ctrl-C on the terminal cancels.
    let psql_command = format!(
        "psql -X -h 127.0.0.1 -p {} -U weir weir -c 'COPY (SUBSCRIBE per_user) TO STDOUT'",
        server.port
    );
    let mut child = Command::new("script")
        .args(["-qfec", &psql_command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("script runs psql");
    let mut terminal = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim_end_matches('\r').to_string()).is_err() {
                break;
            }
        }
    });
    let wait_line = |what: &str| {
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("psql printed no {what}"))
    };
    // The current rows first, as they are (watermark, diff, columns)...
    let first = wait_line("snapshot row");
    assert!(first.ends_with("\t1\t1\t1"), "{first:?}");
    // ...then each change as it happens, while the COPY is still running.
    client
        .batch_execute("INSERT INTO clicks VALUES (1, '/b', '2026-01-01 00:00:02')")
        .await
        .expect("insert");
    let delete = wait_line("delete");
    let insert = wait_line("insert");
    assert!(delete.ends_with("\t-1\t1\t1"), "{delete:?}");
    assert!(insert.ends_with("\t1\t1\t2"), "{insert:?}");
    // Ctrl-C: psql sends a CancelRequest; the server ends the COPY with 57014.
    std::io::Write::write_all(&mut terminal, b"\x03").expect("ctrl-c");
    let rest: Vec<String> = (0..3)
        .filter_map(|_| rx.recv_timeout(Duration::from_secs(20)).ok())
        .collect();
    assert!(
        rest.iter().any(|l| l.contains("canceling statement")),
        "{rest:?}"
    );
    drop(terminal);
    let _ = child.wait();
    // Drivers read subscriptions through cursors, inside a transaction block.
    client
        .batch_execute("BEGIN; DECLARE c CURSOR FOR SUBSCRIBE per_user")
        .await
        .expect("declare");
    let rows = client.query("FETCH ALL c", &[]).await.expect("fetch");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>("n"), 2);
    client
        .batch_execute("INSERT INTO clicks VALUES (2, '/c', '2026-01-01 00:00:03')")
        .await
        .expect("insert");
    let rows = client
        .query("FETCH 10 c WITH (timeout = '5s')", &[])
        .await
        .expect("fetch waits for the change");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>("weir_diff"), 1);
    assert_eq!(rows[0].get::<_, i64>("user_id"), 2);
    client
        .batch_execute("CLOSE c; COMMIT")
        .await
        .expect("close");
}

#[tokio::test]
async fn passwords_and_tls_guard_other_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is required (apt-get install openssl); .ci/run installs it");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let users = dir.path().join("users");
    std::fs::write(&users, "# who may connect\nada:lovelace\n").expect("users file");
    let data = dir.path().join("data");
    let server = Server::start_with(
        &data,
        &[
            "--listen",
            "0.0.0.0:0",
            "--users",
            users.to_str().expect("utf-8 path"),
            "--tls-cert",
            cert.to_str().expect("utf-8 path"),
            "--tls-key",
            key.to_str().expect("utf-8 path"),
            "--http",
            "0.0.0.0:0",
        ],
        &[("WEIR_PASSWORD", "hunter2")],
    );
    let connect = |user: &str, password: &str| {
        let conninfo = format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname=weir",
            server.port
        );
        async move {
            match tokio_postgres::connect(&conninfo, NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    Ok(client)
                }
                Err(e) => Err(e),
            }
        }
    };
    // SCRAM-SHA-256 with the users file and with --password / WEIR_PASSWORD (user weir).
    let ada = connect("ada", "lovelace").await.expect("ada logs in");
    assert_eq!(count(&ada, "SELECT 41 + 1").await, 42);
    connect("weir", "hunter2").await.expect("weir logs in");
    for (user, password) in [("ada", "wrong"), ("nobody", "lovelace")] {
        let err = connect(user, password)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} with {password} must be refused"));
        assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err}");
    }
    // psql over TLS.
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=ada dbname=weir sslmode=require",
            server.port
        ))
        .args(["-X", "-c", "\\conninfo"])
        .env("PGPASSWORD", "lovelace")
        .output()
        .expect("psql runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SSL connection"), "{stdout}");
    // HTTP off loopback: HTTPS with the same users (HTTP Basic), plain HTTP refused.
    let http = server.http_port.expect("the HTTP listener");
    let curl = |url: &str, user: Option<&str>| {
        let mut c = Command::new("curl");
        c.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", url]);
        if let Some(u) = user {
            c.args(["-u", u]);
        }
        let out = c.output().expect("curl runs (.ci/run installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let https = format!("https://127.0.0.1:{http}");
    assert_eq!(
        curl(&format!("{https}/api/streams"), Some("ada:lovelace")),
        "200"
    );
    assert_eq!(
        curl(&format!("{https}/metrics"), Some("weir:hunter2")),
        "200"
    );
    assert_eq!(
        curl(&format!("{https}/api/streams"), Some("ada:wrong")),
        "401"
    );
    assert_eq!(curl(&format!("{https}/"), None), "401");
    // Probes of liveness need no password.
    assert_eq!(curl(&format!("{https}/healthz"), None), "200");
    assert_eq!(
        curl(
            &format!("http://127.0.0.1:{http}/api/streams"),
            Some("ada:lovelace")
        ),
        "400"
    );
    // Without passwords and TLS, HTTP stays on loopback.
    for extra in [&[][..], &["--password", "x"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["serve", "--listen", "127.0.0.1:0", "--kafka-listen", "off"])
            .args(["--http", "0.0.0.0:0", "--data-dir"])
            .arg(dir.path().join("refused"))
            .args(extra)
            .output()
            .expect("weir runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains("refusing to serve HTTP on 0.0.0.0:0 without passwords and TLS"),
            "{stderr}"
        );
    }
}

/// Runs a client program against a fresh server; it prints `ok ...` lines and exits 0.
fn run_client(program: &str, args: &[&str], install_hint: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let out = Command::new(program)
        .args(args)
        .arg(server.port.to_string())
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients"))
        .output()
        .unwrap_or_else(|e| panic!("{program} is required ({install_hint}): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{program} failed ({install_hint}):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok "), "{stdout}");
}

#[test]
fn python_drivers_psycopg_psycopg2_asyncpg_sqlalchemy() {
    run_client(
        "python3",
        &["python_drivers.py"],
        "pip install -r tests/clients/requirements.txt; .ci/run does",
    );
}

#[test]
fn node_postgres() {
    run_client(
        "node",
        &["node/node_pg.js"],
        "cd tests/clients/node && npm ci; .ci/run does",
    );
}

#[test]
fn pgjdbc_with_database_metadata() {
    let jar = "/usr/share/java/postgresql.jar";
    assert!(
        Path::new(jar).exists(),
        "{jar} is required (apt-get install libpostgresql-jdbc-java); .ci/run installs it"
    );
    let classes = tempfile::tempdir().expect("tempdir");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/jdbc/WeirJdbc.java");
    let out = Command::new("javac")
        .arg("-d")
        .arg(classes.path())
        .arg(&source)
        .output()
        .expect("javac is required (apt-get install default-jdk-headless); .ci/run installs it");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let classpath = format!("{}:{jar}", classes.path().display());
    run_client(
        "java",
        &["-cp", &classpath, "WeirJdbc"],
        "a JDK and libpostgresql-jdbc-java; .ci/run installs them",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_connections_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let setup = server.client().await;
    setup
        .batch_execute(
            "CREATE STREAM hits (conn BIGINT, i BIGINT, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (partitions = 4, key = 'conn'); \
             CREATE MATERIALIZED VIEW per_conn AS SELECT conn, COUNT(*) AS n FROM hits GROUP BY conn",
        )
        .await
        .expect("setup");
    let mut tasks = Vec::new();
    for c in 0..100i64 {
        let client = server.client().await;
        tasks.push(tokio::spawn(async move {
            match c % 3 {
                // Writers: prepared inserts.
                0 => {
                    let insert = client
                        .prepare("INSERT INTO hits VALUES ($1, $2, '2026-01-01 00:00:01')")
                        .await
                        .expect("prepare");
                    for i in 0..20i64 {
                        client.execute(&insert, &[&c, &i]).await.expect("insert");
                    }
                }
                // Readers: batch queries and view reads.
                1 => {
                    for _ in 0..5 {
                        let n = count(&client, "SELECT count(*) FROM hits").await;
                        assert!(n >= 0);
                        let rows = client
                            .query("SELECT conn, n FROM per_conn", &[])
                            .await
                            .expect("view");
                        assert!(rows.iter().all(|r| r.get::<_, i64>("n") <= 20));
                    }
                }
                // Subscribers: a cursor on the view, fetched with a timeout.
                _ => {
                    client
                        .batch_execute("BEGIN; DECLARE s CURSOR FOR SUBSCRIBE per_conn")
                        .await
                        .expect("declare");
                    for _ in 0..3 {
                        client
                            .query("FETCH 100 s WITH (timeout = '200ms')", &[])
                            .await
                            .expect("fetch");
                    }
                    client
                        .batch_execute("CLOSE s; COMMIT")
                        .await
                        .expect("close");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("a connection's work");
    }
    // Every write of the 34 writers is there, in the stream and in the view.
    assert_eq!(count(&setup, "SELECT count(*) FROM hits").await, 34 * 20);
    let rows = setup
        .query("SELECT conn, n FROM per_conn", &[])
        .await
        .expect("view");
    assert_eq!(rows.len(), 34);
    assert!(rows.iter().all(|r| r.get::<_, i64>("n") == 20));
}

/// `weir shell` on a pseudo-terminal (util-linux `script`), typed into like a user would.
struct ShellPty {
    child: Child,
    input: std::process::ChildStdin,
    screen: Arc<std::sync::Mutex<String>>,
}

impl ShellPty {
    fn start(args: &[&str]) -> Self {
        let command = std::iter::once(env!("CARGO_BIN_EXE_weir").to_string())
            .chain(std::iter::once("shell".to_string()))
            .chain(args.iter().map(|a| format!("'{a}'")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .env("WEIR_LOG", "warn")
            .env("HOME", std::env::temp_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("script (util-linux) runs the shell");
        let input = child.stdin.take().expect("stdin");
        let mut output = child.stdout.take().expect("stdout");
        let screen = Arc::new(std::sync::Mutex::new(String::new()));
        let shared = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut output, &mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                shared.lock().expect("screen").push_str(&text);
            }
        });
        Self {
            child,
            input,
            screen,
        }
    }

    /// Types `text` (a line: add `\r` to press Enter).
    fn send(&mut self, text: &str) {
        std::io::Write::write_all(&mut self.input, text.as_bytes()).expect("type");
        std::io::Write::flush(&mut self.input).expect("flush");
    }

    /// Waits until the screen shows `text` after everything seen so far; returns what came.
    fn expect(&mut self, text: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            {
                let mut screen = self.screen.lock().expect("screen");
                if let Some(i) = screen.find(text) {
                    let seen = screen[..i + text.len()].to_string();
                    screen.drain(..i + text.len());
                    return seen;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the shell never showed {text:?}; it showed:\n{screen}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ShellPty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a user does in the shell, embedded or connected: the same steps, the same results.
fn shell_session(shell: &mut ShellPty) {
    shell.expect("weir> ");
    // A statement over two lines: the shell waits for the `;`.
    shell.send("CREATE STREAM clicks (user_id BIGINT, url TEXT, ts TIMESTAMP,\r");
    shell.send("  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);\r");
    shell.expect("CREATE STREAM");
    // The next line is typed at the prompt: typed earlier, the terminal may drop it.
    shell.expect("weir> ");
    shell.send("CREATE MATERIALIZED VIEW per_user AS SELECT user_id, COUNT(*) AS n FROM clicks GROUP BY user_id;\r");
    shell.expect("CREATE MATERIALIZED VIEW");
    shell.expect("weir> ");
    // CREATE ... IF NOT EXISTS over an object of another kind: PostgreSQL's notice.
    shell.send("CREATE TABLE IF NOT EXISTS per_user (id BIGINT PRIMARY KEY);\r");
    shell.expect("NOTICE:  relation \"per_user\" already exists, skipping");
    shell.expect("CREATE TABLE");
    shell.expect("weir> ");
    shell.send("INSERT INTO clicks VALUES (1, '/a', '2026-01-01 00:00:01'), (2, '/b', '2026-01-01 00:00:02');\r");
    shell.expect("INSERT 0 2");
    shell.expect("weir> ");
    // Tab completes keywords (and names).
    shell.send("SEL");
    shell.send("\t");
    shell.expect("SELECT");
    shell.send(" user_id, n FROM per_");
    shell.send("\t");
    shell.expect("per_user");
    shell.send(" ORDER BY user_id;\r");
    let table = shell.expect("(2 rows)");
    assert!(table.contains("│ 1       ┆ 1 │"), "{table}");
    shell.expect("weir> ");
    shell.send("\\x\r");
    shell.expect("Expanded display is on.");
    shell.expect("weir> ");
    shell.send("SELECT COUNT(*) AS total FROM clicks;\r");
    shell.expect("total | 2");
    shell.expect("weir> ");
    shell.send("\\x\r");
    shell.expect("Expanded display is off.");
    shell.expect("weir> ");
    shell.send("\\timing\r");
    shell.expect("Timing is on.");
    shell.expect("weir> ");
    shell.send("SELECT 1 AS one;\r");
    shell.expect("Time: ");
    shell.expect("weir> ");
    shell.send("\\d per_user\r");
    shell.expect("user_id");
    shell.expect("weir> ");
    // Errors in one line, and the shell goes on.
    shell.send("SELECT * FROM nope;\r");
    shell.expect("ERROR 42P01");
    shell.expect("weir> ");
    // A syntax error points at its place in the statement.
    shell.send("SELECT 1 +;\r");
    shell.expect("ERROR 42601");
    shell.expect("LINE 1: SELECT 1 +;");
    shell.expect("weir> ");
    // SUBSCRIBE shows the view, updated in place, until Ctrl-C.
    shell.send("SUBSCRIBE per_user;\r");
    shell.expect("2 rows | input ");
    // Once measured, the input rate: nothing is being inserted now.
    shell.expect("input 0/s");
    shell.send("\x03");
    shell.expect("(stopped)");
    shell.expect("weir> ");
    // A stream's rows, with their partition and offset, from the start of its log.
    shell.send("SUBSCRIBE clicks WITH (start = 'earliest');\r");
    shell.expect("2 rows so far | input ");
    shell.expect("weir_offset");
    shell.send("\x03");
    shell.expect("(stopped)");
    shell.expect("weir> ");
    // Ctrl-C cancels a long statement, and the shell goes on.
    shell.send("SELECT count(*) FROM generate_series(1, 100000000000);\r");
    std::thread::sleep(Duration::from_millis(500));
    shell.send("\x03");
    shell.expect("57014");
    shell.expect("weir> ");
    shell.send("SELECT 41 + 1 AS answer;\r");
    shell.expect("42");
    shell.send("\\q\r");
}

#[test]
fn the_shell_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path").to_string();
    let mut shell = ShellPty::start(&["--data-dir", &data]);
    shell_session(&mut shell);
}

/// The embedded shell reads a stream over an external Kafka topic: the `weir` binary hands
/// its connectors to the engine inside the shell as it does to the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_embedded_reads_an_external_kafka_topic() {
    let broker_dir = tempfile::tempdir().expect("tempdir");
    let broker = Server::start(broker_dir.path());
    let b = broker.client().await;
    b.batch_execute(
        "CREATE STREAM orders (id BIGINT, amount BIGINT) WITH (format = 'json'); \
         INSERT INTO orders VALUES (1, 10), (2, 20), (3, 30)",
    )
    .await
    .expect("orders on the broker");
    let brokers = format!("127.0.0.1:{}", broker.kafka_port.expect("kafka listener"));
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path").to_string();
    let mut shell = ShellPty::start(&["--data-dir", &data]);
    shell.expect("weir> ");
    shell.send(&format!(
        "CREATE STREAM ext (id BIGINT, amount BIGINT) WITH (connector = 'kafka', \
         brokers = '{brokers}', topic = 'orders', start = 'earliest');\r"
    ));
    shell.expect("CREATE STREAM");
    // The source appends in the background; the stream's rows appear as they come.
    shell.send("SUBSCRIBE ext WITH (start = 'earliest');\r");
    shell.expect("3 rows so far");
    shell.send("\x03");
    shell.expect("(stopped)");
    shell.send("SELECT sum(amount) AS total FROM ext;\r");
    shell.expect("60");
    shell.send("SELECT stream, kind, state FROM weir_connectors;\r");
    shell.expect("running");
    shell.send("\\q\r");
}

/// A view created over a long backlog shows a progress bar while it catches up, which Ctrl-C
/// leaves (the view goes on in the background).
#[test]
fn the_shell_shows_catch_up_progress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path").to_string();
    let mut shell = ShellPty::start(&["--data-dir", &data]);
    shell.expect("weir> ");
    shell.send(
        "CREATE STREAM big (k BIGINT, v BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts) \
         WITH (partitions = 4, key = 'k');\r",
    );
    shell.expect("CREATE STREAM");
    // A million events in ten appends, so the view reads them in many batches.
    let inserts: String = (0..10)
        .map(|i| {
            format!(
                "INSERT INTO big SELECT value % 1000, value, to_timestamp_millis(1767225600000 + value) \
                 FROM generate_series({}, {});",
                i * 100_000 + 1,
                (i + 1) * 100_000
            )
        })
        .collect();
    shell.send(&format!("{inserts}\r"));
    for _ in 0..10 {
        shell.expect("INSERT 0 100000");
    }
    // Twenty windows per event: a backlog that takes a while.
    shell.send(
        "CREATE MATERIALIZED VIEW slow AS SELECT window_start, k, COUNT(DISTINCT v) AS n \
         FROM HOP(big, ts, INTERVAL '1' SECOND, INTERVAL '20' SECOND) GROUP BY window_start, k;\r",
    );
    shell.expect("CREATE MATERIALIZED VIEW");
    let bar = shell.expect("s left");
    assert!(bar.contains("/ 1.0M events, "), "{bar}");
    shell.send("\x03");
    shell.expect("goes on catching up in the background");
    shell.expect("weir> ");
    shell.send("SELECT count(*) > 0 AS started FROM weir_view_progress WHERE processed > 0;\r");
    shell.expect("true");
    shell.send("\\q\r");
}

#[tokio::test]
async fn the_shell_connected_to_a_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let url = format!("postgres://weir@127.0.0.1:{}/weir", server.port);
    let mut shell = ShellPty::start(&["--connect", &url]);
    tokio::task::spawn_blocking(move || shell_session(&mut shell))
        .await
        .expect("shell session");
}

#[tokio::test]
async fn every_type_round_trips_in_text_and_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM t (b BOOLEAN, s SMALLINT, i INT, l BIGINT, r REAL, d DOUBLE PRECISION, \
             n DECIMAL(10, 2), v VARCHAR, x TEXT, day DATE, ts TIMESTAMP, tz TIMESTAMPTZ, by BYTEA)",
        )
        .await
        .expect("create");
    let ts = chrono::NaiveDate::from_ymd_opt(2026, 1, 2)
        .and_then(|d| d.and_hms_micro_opt(3, 4, 5, 678_901))
        .expect("a time");
    let tz = chrono::DateTime::<chrono::Utc>::from_naive_utc_and_offset(ts, chrono::Utc);
    let day = chrono::NaiveDate::from_ymd_opt(2026, 1, 2).expect("a day");
    // Binary parameters in, binary results out (tokio-postgres' extended protocol).
    client
        .execute(
            "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, 12.34, $7, $8, $9, $10, $11, $12)",
            &[
                &true,
                &7i16,
                &-8i32,
                &9_000_000_000i64,
                &1.5f32,
                &-2.25f64,
                &"vär",
                &"tab\there",
                &day,
                &ts,
                &tz,
                &vec![0u8, 1, 255],
            ],
        )
        .await
        .expect("insert");
    client
        .execute(
            "INSERT INTO t VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
            &[],
        )
        .await
        .expect("insert nulls");
    let row = client
        .query_one("SELECT * FROM t WHERE b", &[])
        .await
        .expect("binary row");
    assert!(row.get::<_, bool>("b"));
    assert_eq!(row.get::<_, i16>("s"), 7);
    assert_eq!(row.get::<_, i32>("i"), -8);
    assert_eq!(row.get::<_, i64>("l"), 9_000_000_000);
    assert_eq!(row.get::<_, f32>("r"), 1.5);
    assert_eq!(row.get::<_, f64>("d"), -2.25);
    assert_eq!(row.get::<_, String>("v"), "vär");
    assert_eq!(row.get::<_, String>("x"), "tab\there");
    assert_eq!(row.get::<_, chrono::NaiveDate>("day"), day);
    assert_eq!(row.get::<_, chrono::NaiveDateTime>("ts"), ts);
    assert_eq!(row.get::<_, chrono::DateTime<chrono::Utc>>("tz"), tz);
    assert_eq!(row.get::<_, Vec<u8>>("by"), vec![0u8, 1, 255]);
    let nulls = client
        .query_one("SELECT * FROM t WHERE b IS NULL", &[])
        .await
        .expect("null row");
    for i in 0..nulls.len() {
        assert!(
            nulls.try_get::<_, Option<String>>(i).is_err()
                || nulls.get::<_, Option<String>>(i).is_none()
        );
    }
    // Text results (the simple protocol), as psql sees them.
    let text = rows(&client, "SELECT * FROM t WHERE b").await;
    assert_eq!(
        text[0],
        [
            "t",
            "7",
            "-8",
            "9000000000",
            "1.5",
            "-2.25",
            "12.34",
            "vär",
            "tab\there",
            "2026-01-02",
            "2026-01-02 03:04:05.678901",
            "2026-01-02 03:04:05.678901+00",
            "\\x0001ff",
        ]
    );
}

#[tokio::test]
async fn the_examples_run_on_generated_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    for kind in ["tweets", "transactions", "sensors"] {
        generate(&server, kind, 100_000);
    }
    let client = server.client().await;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let run = |file: &str| {
        let path = examples.join(file);
        let (ok, stdout, stderr) = psql(&server, &["-f", path.to_str().expect("utf-8 path")]);
        assert!(ok, "{file}: {stdout}\n{stderr}");
        stdout
    };
    // Trending hashtags: the Zipf head leads, and every trend row compares consecutive windows.
    let out = run("hashtags.sql");
    assert!(out.contains(" #tag0   |"), "{out}");
    assert_eq!(out.matches("(5 rows)").count(), 2, "{out}");
    let trends = count(
        &client,
        "SELECT count(*) FROM hashtag_trends t JOIN hashtag_counts c \
         ON t.hashtag = c.hashtag AND t.window_end = c.window_end AND t.n = c.n",
    )
    .await;
    assert_eq!(
        trends,
        count(&client, "SELECT count(*) FROM hashtag_trends").await
    );
    // The windowed counts equal the batch query over the closed windows.
    let closed = count(
        &client,
        "SELECT count(*) FROM (SELECT hashtag, window_start, window_end, COUNT(*) AS n \
         FROM HOP(tweets, ts, INTERVAL '5' SECOND, INTERVAL '1' MINUTE) \
         GROUP BY hashtag, window_start, window_end \
         HAVING window_end <= (SELECT max(window_end) FROM hashtag_counts) \
         EXCEPT SELECT * FROM hashtag_counts)",
    )
    .await;
    assert_eq!(closed, 0);
    // Fraud: bursts of payments and cards abroad are found.
    let out = run("fraud.sql");
    assert_eq!(out.matches("(5 rows)").count(), 2, "{out}");
    assert!(count(&client, "SELECT count(*) FROM busy_cards").await > 0);
    // Sensors: spikes stand out with z-scores above 3.
    let out = run("sensors.sql");
    assert_eq!(out.matches("(5 rows)").count(), 2, "{out}");
}

#[tokio::test]
async fn grafana_pickers_and_time_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT, url TEXT, ts TIMESTAMP); \
             INSERT INTO clicks VALUES (1, '/a', '2026-01-01 00:00:10'), (2, '/b', '2026-01-01 00:00:50'), \
             (1, '/c', '2026-01-01 00:01:30')",
        )
        .await
        .expect("setup");
    let grafana = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/grafana");
    let query = |file: &str| std::fs::read_to_string(grafana.join(file)).expect("query file");
    let tables = rows(&client, &query("table_picker.sql")).await;
    assert_eq!(tables, vec![vec!["clicks".to_string()]]);
    let columns = rows(&client, &query("column_picker.sql")).await;
    let names: Vec<&str> = columns.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["user_id", "url", "ts"]);
    // Postgres type names, by which Grafana tells time columns from the others.
    let types: Vec<&str> = columns.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(types, ["bigint", "text", "timestamp without time zone"]);
    let series = rows(&client, &query("time_series.sql")).await;
    assert_eq!(
        series,
        vec![
            vec!["1767225600".to_string(), "2".to_string()],
            vec!["1767225660".to_string(), "1".to_string()],
        ]
    );
}

/// Metabase's and DBeaver's connection and sync queries, replayed verbatim through psql: every
/// one runs, and Metabase sees the stream as a table and the view as a materialized view.
#[tokio::test]
async fn metabase_and_dbeaver_sync_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE STREAM clicks (id BIGINT, ts TIMESTAMP); \
             CREATE MATERIALIZED VIEW per_id AS SELECT id, count(*) AS n FROM clicks GROUP BY id",
        )
        .await
        .expect("setup");
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients");
    for file in ["metabase/sync.sql", "dbeaver/startup.sql"] {
        let path = clients.join(file);
        let path = path.to_str().expect("utf-8 path");
        let (ok, out, err) = psql(&server, &["-A", "-t", "-f", path]);
        assert!(ok, "{file}: {err}\n{out}");
        assert!(!err.contains("ERROR"), "{file}: {err}");
        if file.starts_with("metabase") {
            assert!(out.contains("public|per_id|MATERIALIZED VIEW"), "{out}");
            assert!(out.contains("public|clicks|TABLE"), "{out}");
        }
    }
}

#[tokio::test]
async fn a_slow_subscriber_never_holds_ingestion_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let writer = server.client().await;
    writer
        .batch_execute(
            "CREATE STREAM events (id BIGINT, ts TIMESTAMP); \
             CREATE MATERIALIZED VIEW everything AS SELECT id FROM events",
        )
        .await
        .expect("setup");
    // A subscriber that reads nothing, with a small buffer.
    let reader = server.client().await;
    reader
        .batch_execute(
            "SET subscribe_buffer_rows = 1000; BEGIN; DECLARE c CURSOR FOR SUBSCRIBE everything",
        )
        .await
        .expect("subscribe");
    // Ingestion and the view go on at full speed past the subscriber's bound...
    let values: Vec<String> = (0..5000)
        .map(|i| format!("({i}, '2026-01-01 00:00:00')"))
        .collect();
    writer
        .batch_execute(&format!("INSERT INTO events VALUES {}", values.join(", ")))
        .await
        .expect("insert");
    assert_eq!(
        count(&writer, "SELECT count(*) FROM everything").await,
        5000
    );
    // ...and the subscriber is told it fell behind, with SQLSTATE 54000.
    let err = reader
        .query("FETCH ALL c", &[])
        .await
        .expect_err("the subscriber was cut off");
    assert_eq!(err.code(), Some(&SqlState::PROGRAM_LIMIT_EXCEEDED), "{err}");
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().contains("fell more than 1000 rows behind")),
        "{err}"
    );
}

/// What the writers of the kill loop know about each row they sent.
#[derive(Default)]
struct Sent {
    /// Rows whose INSERT was acknowledged.
    acked: std::collections::HashSet<String>,
    /// Rows whose INSERT was in flight when the server died: stored or not, but never twice.
    uncertain: std::collections::HashSet<String>,
    /// The rows of each INSERT or COPY in flight when the server died: all stored or none.
    uncertain_writes: Vec<Vec<String>>,
}

/// Writes rows into `clicks` through whichever server `port` names, reconnecting after
/// every kill, until `stop`: INSERTs of 20 rows (over several partitions), or with `copy`
/// COPYs of 3,000. Event time is the wall clock, so rows are never behind the watermark
/// delay (10 s) however the writers interleave.
async fn kill_loop_writer(
    w: u64,
    copy: bool,
    port: Arc<std::sync::atomic::AtomicU16>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    sent: Arc<std::sync::Mutex<Sent>>,
) {
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let conn = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=weir dbname=weir connect_timeout=2",
                port.load(Ordering::SeqCst)
            ),
            NoTls,
        )
        .await;
        let Ok((client, connection)) = conn else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        tokio::spawn(connection);
        while !stop.load(Ordering::SeqCst) {
            let n = if copy { 3000 } else { 20 };
            let ids: Vec<String> = (i..i + n).map(|j| format!("w{w}-{j}")).collect();
            i += n;
            let ok = if copy {
                copy_rows(&client, w, &ids).await
            } else {
                let values: Vec<String> = ids
                    .iter()
                    .enumerate()
                    .map(|(k, id)| format!("({}, '{id}', now())", w * 100 + k as u64 % 7))
                    .collect();
                let sql = format!("INSERT INTO clicks VALUES {}", values.join(", "));
                client.batch_execute(&sql).await.is_ok()
            };
            let mut s = sent.lock().expect("sent");
            if ok {
                s.acked.extend(ids);
            } else {
                s.uncertain.extend(ids.iter().cloned());
                s.uncertain_writes.push(ids);
                break;
            }
        }
    }
}

/// COPYs rows `ids` into `clicks` (users `w * 100 + 0..7`, the time now); whether it ended well.
async fn copy_rows(client: &Client, w: u64, ids: &[String]) -> bool {
    use futures::SinkExt;
    let now = chrono::Utc::now()
        .naive_utc()
        .format("%Y-%m-%d %H:%M:%S%.6f");
    let mut data = String::new();
    for (k, id) in ids.iter().enumerate() {
        data.push_str(&format!("{}\t{id}\t{now}\n", w * 100 + k as u64 % 7));
    }
    let Ok(sink) = client.copy_in("COPY clicks FROM STDIN").await else {
        return false;
    };
    futures::pin_mut!(sink);
    if sink.send(bytes::Bytes::from(data)).await.is_err() {
        return false;
    }
    sink.finish().await.is_ok()
}

/// Asserts that `relation` (a windowed view, or a stream made `AS SELECT`) holds exactly the
/// windows its query's watermark has closed, as the query computes them in batch.
async fn closed_windows_equal_batch(c: &Client, relation: &str) {
    let got = rows(
        c,
        &format!("SELECT * FROM {relation} ORDER BY window_start, user_id"),
    )
    .await;
    let progress = rows(
        c,
        &format!("SELECT watermark FROM weir_view_progress WHERE view = '{relation}'"),
    )
    .await;
    let closed = match progress[0][0].as_str() {
        "NULL" => "false".to_string(),
        w => format!("window_end <= TIMESTAMP '{w}'"),
    };
    let batch = rows(
        c,
        &format!(
            "SELECT * FROM (SELECT window_start, window_end, user_id, COUNT(*) AS n \
             FROM TUMBLE(clicks, ts, INTERVAL '2' SECOND) GROUP BY window_start, window_end, user_id) \
             WHERE {closed} ORDER BY window_start, user_id"
        ),
    )
    .await;
    assert_eq!(
        got, batch,
        "{relation}: closed windows equal batch, none missing or doubled"
    );
}

/// Compares every view with its query over the log in batch: the per-user totals whole, the
/// windows those the view's watermark has closed; and the stream of the same windows.
async fn views_equal_batch(c: &Client) {
    let totals = "SELECT user_id, COUNT(*) AS n, MIN(url) AS first FROM clicks GROUP BY user_id";
    assert_eq!(
        rows(c, "SELECT * FROM per_user ORDER BY user_id").await,
        rows(c, &format!("{totals} ORDER BY user_id")).await,
        "the updating aggregate equals batch"
    );
    closed_windows_equal_batch(c, "per_window").await;
    // The same windows appended to a stream (CREATE STREAM ... AS SELECT): each exactly once.
    closed_windows_equal_batch(c, "per_window_s").await;
    assert_eq!(count(c, "SELECT count(*) FROM weir_late_events").await, 0);
}

/// Kills the server with SIGKILL again and again while clients insert and views run; after
/// each restart every acknowledged row is in the log exactly once and every view, resumed
/// from its checkpoint, equals its query over the log in batch, as does a stream made
/// `AS SELECT` (no window lost or appended twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loop_loses_and_doubles_nothing() {
    use rand::Rng;
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--listen", "127.0.0.1:0", "--checkpoint-interval-ms", "50"];
    let mut server = Server::start_with(dir.path(), &args, &[]);
    let setup = server.client().await;
    setup
        .batch_execute(
            "CREATE STREAM clicks (user_id BIGINT, url TEXT, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '10' SECOND) \
             WITH (partitions = 4, key = 'user_id', idle_timeout_ms = 3600000); \
             CREATE MATERIALIZED VIEW per_user AS \
             SELECT user_id, COUNT(*) AS n, MIN(url) AS first FROM clicks GROUP BY user_id; \
             CREATE MATERIALIZED VIEW per_window AS \
             SELECT window_start, window_end, user_id, COUNT(*) AS n \
             FROM TUMBLE(clicks, ts, INTERVAL '2' SECOND) GROUP BY window_start, window_end, user_id; \
             CREATE STREAM per_window_s WITH (partitions = 2, key = 'user_id') AS \
             SELECT window_start, window_end, user_id, COUNT(*) AS n \
             FROM TUMBLE(clicks, ts, INTERVAL '2' SECOND) GROUP BY window_start, window_end, user_id",
        )
        .await
        .expect("setup");
    drop(setup);
    let port = Arc::new(std::sync::atomic::AtomicU16::new(server.port));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(std::sync::Mutex::new(Sent::default()));
    let writers: Vec<_> = (0..5)
        .map(|w| {
            tokio::spawn(kill_loop_writer(
                w,
                w == 4,
                Arc::clone(&port),
                Arc::clone(&stop),
                Arc::clone(&sent),
            ))
        })
        .collect();
    let mut rng = rand::rng();
    let kills = 12;
    for round in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        server.kill9();
        server = Server::start_with(dir.path(), &args, &[]);
        port.store(server.port, Ordering::SeqCst);
        if round % 4 == 3 {
            // Check while the writers go on: the views catch up on read.
            let c = server.client().await;
            assert_eq!(
                count(&c, "SELECT count(*) - count(DISTINCT url) FROM clicks").await,
                0,
                "no row stored twice"
            );
        }
    }
    // Let the last server take some rows, then stop writing and check everything.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }
    let c = server.client().await;
    let stored: Vec<String> = rows(&c, "SELECT url FROM clicks")
        .await
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect();
    let unique: std::collections::HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "no row stored twice");
    let sent = sent.lock().expect("sent");
    let lost: Vec<&String> = sent
        .acked
        .iter()
        .filter(|id| !unique.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged rows lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let foreign: Vec<&&String> = unique
        .iter()
        .filter(|id| !sent.acked.contains(**id) && !sent.uncertain.contains(**id))
        .collect();
    assert!(foreign.is_empty(), "rows nobody sent: {foreign:?}");
    for write in &sent.uncertain_writes {
        let kept = write.iter().filter(|id| unique.contains(id)).count();
        assert!(
            kept == 0 || kept == write.len(),
            "{kept} of the {} rows of one INSERT or COPY survived a kill: all or none",
            write.len()
        );
    }
    assert!(
        sent.acked.iter().any(|id| id.starts_with("w4-")),
        "the COPY writer got rows in"
    );
    assert!(
        sent.acked.len() > 1000,
        "the writers got rows in: {}",
        sent.acked.len()
    );
    views_equal_batch(&c).await;
    // The views resumed from checkpoints rather than replaying everything.
    let epochs = rows(&c, "SELECT checkpoint_epoch FROM weir_view_progress").await;
    assert!(
        epochs
            .iter()
            .all(|e| e[0] != "NULL" && e[0].parse::<i64>().expect("epoch") > kills),
        "checkpoints were taken across restarts: {epochs:?}"
    );
    // And once more after a final kill, with no writers: the same results.
    drop(c);
    server.kill9();
    let server = Server::start_with(dir.path(), &args, &[]);
    let c = server.client().await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM clicks").await as usize,
        stored.len()
    );
    views_equal_batch(&c).await;
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "the disk-full test mounts a small tmpfs, which needs root (CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// On a full disk an INSERT fails with SQLSTATE 53100 and nothing of it is stored; reads and
/// views go on; once space is freed INSERTs work again; acknowledged rows survive kill -9.
#[tokio::test]
async fn a_full_disk_refuses_appends_and_loses_nothing() {
    let disk = SmallDisk::mount("6m");
    let data = disk.path().join("data");
    // Space to give back later.
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 1 << 20]).expect("ballast");
    let server = Server::start(&data);
    let c = server.client().await;
    c.batch_execute(
        "CREATE STREAM notes (id BIGINT, body TEXT) WITH (partitions = 4, key = 'id'); \
         CREATE MATERIALIZED VIEW per_bucket AS SELECT id % 10 AS bucket, COUNT(*) AS n FROM notes GROUP BY id % 10",
    )
    .await
    .expect("setup");
    let insert = |from: u64| {
        // Bodies that do not compress, so the disk fills in a few hundred statements.
        let values: Vec<String> = (from..from + 200)
            .map(|id| {
                let body: String = (0..8)
                    .map(|k| format!("{:016x}", (id * 8 + k).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                    .collect();
                format!("({id}, '{body}')")
            })
            .collect();
        format!("INSERT INTO notes VALUES {}", values.join(", "))
    };
    let mut acked = 0u64;
    let error = loop {
        match c.batch_execute(&insert(acked)).await {
            Ok(()) => acked += 200,
            Err(e) => break e,
        }
        assert!(acked < 1_000_000, "the disk never filled up");
    };
    assert_eq!(
        error.code(),
        Some(&SqlState::DISK_FULL),
        "a full disk is 53100: {error}"
    );
    assert!(acked > 0, "some rows fit");
    // Nothing of the failed INSERT is there; reads and views go on.
    assert_eq!(count(&c, "SELECT count(*) FROM notes").await as u64, acked);
    assert_eq!(
        count(&c, "SELECT sum(n)::BIGINT FROM per_bucket").await as u64,
        acked
    );
    // Still full: still refused, still nothing half-stored.
    assert!(c.batch_execute(&insert(acked)).await.is_err());
    assert_eq!(count(&c, "SELECT count(*) FROM notes").await as u64, acked);
    // Space freed: appends work again.
    std::fs::remove_file(&ballast).expect("free space");
    c.batch_execute(&insert(acked))
        .await
        .expect("insert after space was freed");
    acked += 200;
    assert_eq!(
        count(&c, "SELECT count(DISTINCT id) FROM notes").await as u64,
        acked
    );
    drop(c);
    server.kill9();
    let server = Server::start(&data);
    let c = server.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM notes").await as u64, acked);
    assert_eq!(
        count(&c, "SELECT count(DISTINCT id) FROM notes").await as u64,
        acked
    );
    assert_eq!(
        count(&c, "SELECT sum(n)::BIGINT FROM per_bucket").await as u64,
        acked
    );
    drop(c);
    drop(server);
}

/// Runs kcat against `server`'s Kafka listener with `args` and `stdin`; returns its stdout.
fn kcat(server: &Server, args: &[&str], stdin: &str) -> (bool, String, String) {
    let broker = format!(
        "127.0.0.1:{}",
        server.kafka_port.expect("kafka listener on")
    );
    kcat_at(&broker, args, stdin)
}

/// Runs kcat against the Kafka broker at `broker` with `args` and `stdin`.
fn kcat_at(broker: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new("kcat")
        .args(["-b", broker])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat runs (apt-get install kcat)");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut input, stdin.as_bytes());
    });
    let out = child.wait_with_output().expect("kcat ends");
    writer.join().expect("stdin written");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The README's Kafka walk-through with kcat: metadata, 10,000 keyed JSON records produced,
/// consumed from the beginning and from an offset, each at the partition and offset the log
/// gave it; a record that does not decode refuses its batch; hostile frames close only their
/// own connection.
#[tokio::test]
async fn kcat_produces_and_consumes_streams_as_topics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c = server.client().await;
    c.batch_execute(
        "CREATE STREAM clicks (user_id BIGINT, url TEXT, ts TIMESTAMP, \
         WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
         WITH (partitions = 4, key = 'user_id', format = 'json')",
    )
    .await
    .expect("create");

    let (ok, out, err) = kcat(&server, &["-L"], "");
    assert!(ok, "{err}");
    assert!(out.contains("topic \"clicks\" with 4 partitions"), "{out}");

    let lines: String = (1..=10_000)
        .map(|i| {
            format!(
                "{i}:{{\"user_id\":{i},\"url\":\"/p{}\",\"ts\":\"2026-01-01 00:{:02}:{:02}\"}}\n",
                i % 7,
                i / 3600 % 60,
                i / 60 % 60
            )
        })
        .collect();
    let (ok, _, err) = kcat(&server, &["-t", "clicks", "-P", "-K:"], &lines);
    assert!(ok, "{err}");
    assert_eq!(
        rows(
            &c,
            "SELECT count(*), sum(user_id), count(DISTINCT url) FROM clicks"
        )
        .await,
        vec![vec!["10000".to_string(), "50005000".into(), "7".into()]]
    );

    // Consumed from the beginning: every row once, with its key and event time, at dense
    // offsets per partition.
    let (ok, out, err) = kcat(
        &server,
        &[
            "-C",
            "-t",
            "clicks",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%p %o %k %T %s\n",
        ],
        "",
    );
    assert!(ok, "{err}");
    let mut per_partition = [0u64; 4];
    let mut keys = std::collections::BTreeSet::new();
    let mut partition0_times = Vec::new();
    for line in out.lines() {
        let parts: Vec<&str> = line.splitn(5, ' ').collect();
        let (p, o, k, t, v) = (parts[0], parts[1], parts[2], parts[3], parts[4]);
        let p: usize = p.parse().expect("partition");
        assert_eq!(
            o.parse::<u64>().expect("offset"),
            per_partition[p],
            "{line}"
        );
        per_partition[p] += 1;
        let id: i64 = k.parse().expect("key is the user id");
        assert!(v.starts_with(&format!("{{\"user_id\":{id},")), "{line}");
        let expected_ts = 1_767_225_600_000 + (id / 3600 % 60) * 60_000 + (id / 60 % 60) * 1000;
        assert_eq!(t, expected_ts.to_string(), "{line}");
        assert!(keys.insert(id));
        if p == 0 {
            partition0_times.push(expected_ts);
        }
    }
    assert_eq!(keys.len(), 10_000);
    assert!(per_partition.iter().all(|&n| n > 0), "{per_partition:?}");

    // From an offset: the same rows from there on.
    let (ok, out, err) = kcat(
        &server,
        &[
            "-C", "-t", "clicks", "-p", "2", "-o", "5", "-e", "-q", "-f", "%o\n",
        ],
        "",
    );
    assert!(ok, "{err}");
    let offsets: Vec<u64> = out.lines().map(|l| l.parse().expect("offset")).collect();
    assert_eq!(offsets, (5..per_partition[2]).collect::<Vec<_>>());

    // From a time: the first record at or after it (ListOffsets by timestamp).
    let time = partition0_times[100] + 1;
    let expected = partition0_times
        .iter()
        .position(|&t| t >= time)
        .expect("a later record");
    let (ok, out, err) = kcat(
        &server,
        &[
            "-C",
            "-t",
            "clicks",
            "-p",
            "0",
            "-o",
            &format!("s@{time}"),
            "-c",
            "1",
            "-e",
            "-q",
            "-f",
            "%o\n",
        ],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), expected.to_string(), "{err}");

    // A batch with a record that does not decode is refused whole.
    let (ok, _, err) = kcat(
        &server,
        &["-t", "clicks", "-P", "-K:", "-p", "1"],
        "1:{\"user_id\":1}\n2:{\"user_id\":\"two\"}\n",
    );
    assert!(!ok || err.contains("failed"), "{err}");
    assert!(err.contains("validate record"), "{err}");
    assert_eq!(count(&c, "SELECT count(*) FROM clicks").await, 10_000);

    // Hostile frames: garbage, a size over the limit, a truncated request, an unknown API.
    use std::io::{Read, Write};
    let kafka = format!("127.0.0.1:{}", server.kafka_port.expect("kafka"));
    let frames: [&[u8]; 4] = [
        b"\x00\x00\x00\x10garbage-garbage!",
        b"\x7f\xff\xff\xff",
        b"\x00\x00\x00\x20\x00\x00\x00\x09\x00\x00\x00\x01",
        b"\x00\x00\x00\x08\x03\xe7\x00\x00\x00\x00\x00\x01",
    ];
    for frame in frames {
        let mut s = std::net::TcpStream::connect(&kafka).expect("connects");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(frame).expect("writes");
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(answer.is_empty(), "closed without an answer: {answer:?}");
    }
    let (ok, out, err) = kcat(&server, &["-L"], "");
    assert!(ok && out.contains("clicks"), "still serving: {err}");
    assert_eq!(count(&c, "SELECT count(*) FROM clicks").await, 10_000);

    // With --kafka-auto-create, producing to an unknown topic creates a raw one.
    let auto_dir = tempfile::tempdir().expect("tempdir");
    let auto = Server::start_with(
        auto_dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--kafka-listen",
            "127.0.0.1:0",
            "--kafka-auto-create",
        ],
        &[],
    );
    let (ok, _, err) = kcat(&auto, &["-t", "fresh", "-P", "-K:"], "a:{\"x\":1}\n");
    assert!(ok, "{err}");
    let (ok, out, err) = kcat(&auto, &["-L"], "");
    assert!(
        ok && out.contains("topic \"fresh\" with 1 partitions"),
        "{out}{err}"
    );
    let ac = auto.client().await;
    assert_eq!(
        rows(
            &ac,
            "SELECT key, json_get_int(value, 'x'), value->>'x' FROM fresh"
        )
        .await,
        vec![vec!["a".to_string(), "1".into(), "1".into()]]
    );
}

/// confluent-kafka and kafka-python produce with acks=all and consume through the Kafka
/// listener; a view over the produced stream equals the view over the same rows INSERTed.
#[test]
fn python_kafka_clients_confluent_kafka_and_kafka_python() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let kafka = server.kafka_port.expect("kafka listener").to_string();
    let stdout = python_client("kafka_clients.py", &[&server.port.to_string(), &kafka]);
    assert_eq!(stdout.matches("ok ").count(), 5, "{stdout}");
}

/// Runs a Python client from tests/clients with `args`; it must exit 0. Returns its stdout.
fn python_client(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients"))
        .output()
        .expect("python3 runs (pip install -r tests/clients/requirements.txt; .ci/run does)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Consumer groups through confluent-kafka and kafka-python: two consumers split four
/// partitions, one leaves and the other takes over, and after a SIGKILL of Weir and a restart
/// the group resumes from its committed offsets.
#[test]
fn kafka_consumer_groups_split_rebalance_and_resume_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The restarted server must listen where the clients' group was: a fixed free port.
    let kafka_port = free_port();
    let kafka_addr = format!("127.0.0.1:{kafka_port}");
    let args = ["--listen", "127.0.0.1:0", "--kafka-listen", &kafka_addr];
    let phase = |server: &Server, phase: &str| {
        python_client(
            "kafka_groups.py",
            &[&server.port.to_string(), &kafka_port.to_string(), phase],
        )
    };
    let server = Server::start_with(dir.path(), &args, &[]);
    let before = phase(&server, "before");
    assert_eq!(before.matches("ok ").count(), 4, "{before}");
    server.kill9();
    let server = Server::start_with(dir.path(), &args, &[]);
    let after = phase(&server, "after");
    assert_eq!(after.matches("ok ").count(), 2, "{after}");
}

/// A port nothing listens on now, for a listener of the server under test.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Kafka transactions with confluent-kafka (`tests/clients/kafka_txn.py`): an aborted
/// transaction is never read, a committed one is read once with the consumer offsets sent with
/// it, and a producer with the same transactional.id fences the one before. Then `kill -9`
/// while a transaction is open: after the restart none of it is visible, and SQL sees what
/// the read_committed consumers saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_transactions_commit_abort_fence_and_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka_port = free_port();
    let kafka_addr = format!("127.0.0.1:{kafka_port}");
    let args = ["--listen", "127.0.0.1:0", "--kafka-listen", &kafka_addr];
    let server = Server::start_with(dir.path(), &args, &[]);
    let c = server.client().await;
    c.batch_execute(
        "CREATE STREAM orders (id BIGINT NOT NULL, amount BIGINT) \
         WITH (partitions = 4, key = 'id', format = 'json'); \
         CREATE STREAM totals (id BIGINT NOT NULL, amount BIGINT) \
         WITH (partitions = 4, key = 'id', format = 'json'); \
         INSERT INTO orders SELECT value, value % 7 FROM generate_series(0, 99)",
    )
    .await
    .expect("setup");
    let script = Command::new("python3")
        .arg("kafka_txn.py")
        .arg(kafka_port.to_string())
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients"))
        .output()
        .expect("python3 runs (pip install -r tests/clients/requirements.txt)");
    let out = String::from_utf8_lossy(&script.stdout);
    assert!(
        script.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&script.stderr)
    );
    assert_eq!(out.matches("ok ").count(), 6, "{out}");
    assert_eq!(
        rows(
            &c,
            "SELECT count(*), sum(amount) FROM totals WHERE id < 100"
        )
        .await,
        vec![vec![
            "100".to_string(),
            (2 * (0..100).map(|i| i % 7).sum::<i64>()).to_string()
        ]]
    );
    assert_eq!(count(&c, "SELECT count(*) FROM totals").await, 101);
    // A transaction left open by a kill -9 is aborted by the restart.
    let mut open = Command::new("python3")
        .args(["kafka_txn.py", &kafka_port.to_string(), "open"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut lines = BufReader::new(open.stdout.take().expect("stdout")).lines();
    let line = tokio::task::spawn_blocking(move || lines.next())
        .await
        .expect("join");
    assert_eq!(
        line.map(|l| l.expect("a line")),
        Some("ok open".to_string())
    );
    assert_eq!(count(&c, "SELECT count(*) FROM totals").await, 101);
    drop(c);
    server.kill9();
    let _ = open.kill();
    let _ = open.wait();
    let server = Server::start_with(dir.path(), &args, &[]);
    let c = server.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM totals").await, 101);
    c.execute("INSERT INTO totals VALUES (8000, 1)", &[])
        .await
        .expect("insert after the restart");
    assert_eq!(count(&c, "SELECT count(*) FROM totals").await, 102);
    // Producers go on across a kill -9: one between transactions commits its next without
    // init_transactions; one mid-transaction is fenced, its commit failing.
    let mut going = Command::new("python3")
        .args(["kafka_txn.py", &kafka_port.to_string(), "restart"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut lines = BufReader::new(going.stdout.take().expect("stdout")).lines();
    let (line, mut lines) = tokio::task::spawn_blocking(move || (lines.next(), lines))
        .await
        .expect("join");
    assert_eq!(
        line.map(|l| l.expect("a line")),
        Some("ok before".to_string())
    );
    drop(c);
    server.kill9();
    let server = Server::start_with(dir.path(), &args, &[]);
    let c = server.client().await;
    use std::io::Write as _;
    writeln!(going.stdin.as_mut().expect("stdin")).expect("go on");
    let rest = tokio::task::spawn_blocking(move || {
        let rest: Vec<String> = lines.by_ref().map_while(|l| l.ok()).collect();
        (rest, going.wait_with_output())
    })
    .await
    .expect("join");
    let (rest, status) = rest;
    let status = status.expect("the script ends");
    assert!(
        status.status.success() && rest.len() == 3,
        "{rest:?}\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM totals WHERE id >= 9000").await,
        21
    );
}

/// SIGKILL of Weir while an idempotent confluent-kafka producer writes: after a restart every
/// record whose delivery report said delivered is in the stream exactly once, and retries of
/// batches that were stored but never acknowledged were not appended again.
#[tokio::test]
async fn kill_9_during_an_idempotent_kafka_produce_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka_port = free_port();
    let kafka_addr = format!("127.0.0.1:{kafka_port}");
    let args = ["--listen", "127.0.0.1:0", "--kafka-listen", &kafka_addr];
    let server = Server::start_with(dir.path(), &args, &[]);
    server
        .client()
        .await
        .batch_execute(
            "CREATE STREAM orders (id BIGINT NOT NULL, amount BIGINT) \
             WITH (partitions = 4, key = 'id', format = 'json')",
        )
        .await
        .expect("create");
    let delivered_file = dir.path().join("delivered.txt");
    let records = 300_000;
    let producer = Command::new("python3")
        .arg("kafka_kill.py")
        .arg(kafka_port.to_string())
        .arg(records.to_string())
        .arg(&delivered_file)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (pip install -r tests/clients/requirements.txt)");
    // Kill once some records are in, while the producer is still going.
    let c = server.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count(&c, "SELECT count(*) FROM orders").await < 20_000 {
        assert!(std::time::Instant::now() < deadline, "records arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(c);
    server.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = Server::start_with(dir.path(), &args, &[]);
    let out = tokio::task::spawn_blocking(move || producer.wait_with_output())
        .await
        .expect("join")
        .expect("producer ends");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let delivered: std::collections::BTreeSet<i64> = std::fs::read_to_string(&delivered_file)
        .expect("delivered ids")
        .lines()
        .map(|l| l.parse().expect("an id"))
        .collect();
    assert_eq!(delivered.len(), records, "every record reported delivered");
    let c = server.client().await;
    assert_eq!(
        rows(
            &c,
            "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM orders"
        )
        .await,
        vec![vec![
            records.to_string(),
            records.to_string(),
            "0".to_string(),
            (records - 1).to_string()
        ]],
        "every delivered record exactly once"
    );
}

/// Polls `sql` (one number) until it reaches `want`, for up to two minutes.
async fn wait_for_count(c: &Client, sql: &str, want: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let got = count(c, sql).await;
        if got >= want {
            assert_eq!(got, want, "{sql}: no more than expected");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql}: {got} of {want} after two minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Inserts orders `ids` into the broker's `orders`: a group of eight and an amount from the id,
/// event times 10 ms apart.
async fn insert_orders(c: &Client, ids: std::ops::Range<i64>) {
    let values: Vec<String> = ids
        .map(|i| {
            format!(
                "({i}, {}, {}, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{}' MILLISECOND)",
                i % 8,
                i % 100,
                i * 10
            )
        })
        .collect();
    c.batch_execute(&format!("INSERT INTO orders VALUES {}", values.join(", ")))
        .await
        .expect("insert orders");
}

/// Weir reading from and writing to an external Kafka cluster (here a second Weir process
/// and its Kafka listener): refusals that create nothing; a source stream mirroring a topic's
/// partitions, its views, and a sink; SIGKILL while records flow in, after which the stream
/// holds every record exactly once and the views equal their queries in batch; the sink
/// delivers every result (at least once); records that do not decode are skipped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn external_kafka_sources_and_sinks_survive_kill_9() {
    let broker_dir = tempfile::tempdir().expect("tempdir");
    let broker = Server::start_with(
        broker_dir.path(),
        &["--listen", "127.0.0.1:0", "--kafka-auto-create"],
        &[],
    );
    let b = broker.client().await;
    b.batch_execute(
        "CREATE STREAM orders (id BIGINT NOT NULL, grp BIGINT, amount BIGINT, ts TIMESTAMP, \
         WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH (partitions = 3, key = 'id', format = 'json'); \
         CREATE STREAM big_orders (id BIGINT, amount BIGINT, ts TIMESTAMP) \
         WITH (partitions = 2, key = 'id', format = 'json')",
    )
    .await
    .expect("broker streams");
    let brokers = format!("127.0.0.1:{}", broker.kafka_port.expect("kafka listener"));
    insert_orders(&b, 0..200).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let weir = Server::start(dir.path());
    let c = weir.client().await;
    let columns = "(id BIGINT NOT NULL, grp BIGINT, amount BIGINT, ts TIMESTAMP, \
                   WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)";
    let refused = [
        (
            "brokers = '127.0.0.1:1', topic = 'orders'".to_string(),
            SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        ),
        (
            format!("brokers = '{brokers}', topic = 'no_such_topic'"),
            SqlState::UNDEFINED_OBJECT,
        ),
        (
            format!("brokers = '{brokers}', topic = 'orders', start = 'yesterday'"),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            format!("brokers = '{brokers}', topic = 'orders', partitions = 5"),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
    ];
    for (options, code) in &refused {
        let e = c
            .batch_execute(&format!(
                "CREATE STREAM ext {columns} WITH (connector = 'kafka', {options})"
            ))
            .await
            .expect_err(options);
        assert_eq!(e.code(), Some(code), "{options}: {e}");
    }
    let e = c
        .batch_execute(&format!(
            "CREATE SINK big INTO KAFKA WITH (brokers = '{brokers}', topic = 'no_such_topic') \
             AS SELECT 1 AS one"
        ))
        .await
        .expect_err("missing sink topic");
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_OBJECT), "{e}");
    assert!(rows(&c, "SHOW STREAMS").await.is_empty(), "nothing created");

    c.batch_execute(&format!(
        "CREATE STREAM ext {columns} WITH (connector = 'kafka', brokers = '{brokers}', \
         topic = 'orders', start = 'earliest', format = 'json'); \
         CREATE MATERIALIZED VIEW per_group AS \
         SELECT grp, COUNT(*) AS n, SUM(amount) AS total FROM ext GROUP BY grp; \
         CREATE MATERIALIZED VIEW per_second AS \
         SELECT window_start, window_end, COUNT(*) AS n, SUM(amount) AS total \
         FROM TUMBLE(ext, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end; \
         CREATE SINK big INTO KAFKA WITH (brokers = '{brokers}', topic = 'big_orders') \
         AS SELECT id, amount, ts FROM ext WHERE amount >= 50"
    ))
    .await
    .expect("source, views and sink");
    let e = c
        .batch_execute("INSERT INTO ext VALUES (1, 1, 1, TIMESTAMP '2026-01-01 00:00:00')")
        .await
        .expect_err("a source stream is written by its topic only");
    assert_eq!(e.code(), Some(&SqlState::WRONG_OBJECT_TYPE), "{e}");
    let partitions = rows(&c, "SHOW STREAMS").await;
    assert!(
        partitions.iter().any(|r| r[0] == "ext" && r[1] == "3"),
        "the stream mirrors the topic's 3 partitions: {partitions:?}"
    );
    wait_for_count(&c, "SELECT count(*) FROM ext", 200).await;
    let status = rows(
        &c,
        "SELECT stream, kind, topic, state, bad_records FROM weir_connectors ORDER BY stream",
    )
    .await;
    assert_eq!(
        status,
        vec![
            vec!["big", "sink", "big_orders", "running", "0"],
            vec!["ext", "source", "orders", "running", "0"],
        ],
        "both connectors run"
    );
    // Both catch up with their ends: the topic's (source) and the stream's (sink).
    wait_for_count(&c, "SELECT count(*) FROM weir_connectors WHERE lag = 0", 2).await;
    let metrics = {
        use std::io::{Read, Write};
        let port = weir.http_port.expect("the HTTP listener");
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
        write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("response");
        out
    };
    for line in [
        "weir_connector_lag{stream=\"ext\",kind=\"source\"} 0",
        "weir_connector_lag{stream=\"big\",kind=\"sink\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // SIGKILL while a writer keeps producing into the external topic.
    let writer = {
        let b = broker.client().await;
        tokio::spawn(async move {
            for chunk in 0..20 {
                let from = 200 + chunk * 20;
                insert_orders(&b, from..from + 20).await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(c);
    weir.kill9();
    let weir = Server::start(dir.path());
    writer.await.expect("writer");
    let c = weir.client().await;
    ext_once_and_per_group_equals_batch(&c, 600).await;
    // The windows the view's watermark has closed equal the same windows in batch.
    let closed = rows(
        &c,
        "SELECT watermark FROM weir_view_progress WHERE view = 'per_second'",
    )
    .await;
    let closed = format!("window_end <= TIMESTAMP '{}'", closed[0][0]);
    assert_eq!(
        rows(
            &c,
            &format!("SELECT * FROM per_second WHERE {closed} ORDER BY window_start")
        )
        .await,
        rows(
            &c,
            &format!(
                "SELECT * FROM (SELECT window_start, window_end, COUNT(*) AS n, \
                 SUM(amount) AS total FROM TUMBLE(ext, ts, INTERVAL '1' SECOND) \
                 GROUP BY window_start, window_end) WHERE {closed} ORDER BY window_start"
            )
        )
        .await,
        "closed windows equal batch"
    );
    // The sink's stream holds the results once; the external topic gets every one of them.
    let results = count(&c, "SELECT count(*) FROM big").await;
    assert_eq!(
        results,
        count(&c, "SELECT count(DISTINCT id) FROM big").await
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let want = count(&c, "SELECT count(*) FROM ext WHERE amount >= 50").await;
    while count(&b, "SELECT count(DISTINCT id) FROM big_orders").await < want {
        assert!(
            std::time::Instant::now() < deadline,
            "the sink delivers all {want} results"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(&b, "SELECT count(*) FROM big_orders WHERE amount < 50").await,
        0
    );

    // A record that does not decode is skipped and counted; the others go in.
    let (ok, _, err) = kcat(
        &broker,
        &["-P", "-t", "raw_in"],
        "{\"a\": 1}\nnot json\n{\"a\": 3}\n",
    );
    assert!(ok, "kcat produces into an auto-created topic: {err}");
    c.batch_execute(&format!(
        "CREATE STREAM rin (a BIGINT) WITH (connector = 'kafka', brokers = '{brokers}', \
         topic = 'raw_in')"
    ))
    .await
    .expect("a source over a raw topic");
    wait_for_count(&c, "SELECT count(*) FROM rin", 2).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = rows(
            &c,
            "SELECT bad_records, last_bad_record FROM weir_connectors WHERE stream = 'rin'",
        )
        .await;
        if status[0][0] == "1" {
            assert!(
                status[0][1].contains("offset 1"),
                "the bad record is named: {status:?}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        rows(&c, "SELECT a FROM rin ORDER BY a").await,
        vec![vec!["1"], vec!["3"]]
    );
    c.batch_execute("DROP SINK big; DROP STREAM rin")
        .await
        .expect("drops");
    assert_eq!(
        rows(&c, "SELECT stream FROM weir_connectors").await,
        vec![vec!["ext"]]
    );
}

/// A tansu broker (a Kafka-compatible broker written apart from Weir, from crates.io) with
/// in-memory storage on a free port; killed when dropped.
struct Tansu {
    child: Child,
    addr: String,
}

impl Tansu {
    /// The binary: `$WEIR_TANSU`, else where `.ci/run` installs it, else `tansu` on the PATH.
    fn binary() -> std::path::PathBuf {
        if let Some(p) = std::env::var_os("WEIR_TANSU") {
            return p.into();
        }
        let installed = std::env::var_os("HOME")
            .map(|h| Path::new(&h).join(".cache/weir-tools/bin/tansu"))
            .filter(|p| p.exists());
        installed.unwrap_or_else(|| "tansu".into())
    }

    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(Self::binary())
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "tansu runs (cargo install --locked tansu --version 0.6.0, as .ci/run does; \
                 or set WEIR_TANSU)",
            );
        let addr = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "tansu listens");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr }
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(Self::binary())
            .args(["topic", "create", name])
            .args(["--broker", &format!("tcp://{}", self.addr)])
            .args(["--partitions", &partitions.to_string()])
            .output()
            .expect("tansu topic create runs");
        assert!(
            out.status.success(),
            "tansu topic create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Tansu {
    /// Produces `key:value` lines with confluent-kafka (Debian's kcat is built on a librdkafka
    /// too old for tansu's ApiVersions answer).
    fn produce(&self, topic: &str, lines: &str) {
        let mut child = Command::new("python3")
            .args(["kafka_lines.py", "produce", &self.addr, topic])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients"))
            .stdin(Stdio::piped())
            .spawn()
            .expect("python3 runs (pip install -r tests/clients/requirements.txt)");
        let mut input = child.stdin.take().expect("piped stdin");
        std::io::Write::write_all(&mut input, lines.as_bytes()).expect("lines written");
        drop(input);
        assert!(child.wait().expect("ends").success(), "produce into tansu");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the source stream `ext` holds records 0..n, checks each is there once, and
/// waits until the view `per_group` equals the same query run in batch over `ext`.
async fn ext_once_and_per_group_equals_batch(c: &Client, n: i64) {
    wait_for_count(c, "SELECT count(*) FROM ext", n).await;
    assert_eq!(
        rows(c, "SELECT count(DISTINCT id), min(id), max(id) FROM ext").await,
        vec![vec![n.to_string(), "0".to_string(), (n - 1).to_string()]],
        "every record of the topic once, none lost or read twice"
    );
    let batch =
        "SELECT grp, COUNT(*) AS n, SUM(amount) AS total FROM ext GROUP BY grp ORDER BY grp";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rows(c, "SELECT * FROM per_group ORDER BY grp").await != rows(c, batch).await {
        assert!(
            std::time::Instant::now() < deadline,
            "per_group equals batch: {:?} vs {:?}",
            rows(c, "SELECT * FROM per_group ORDER BY grp").await,
            rows(c, batch).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keyed JSON order records `ids` as `key:value` lines, as [`insert_orders`] makes them.
fn order_lines(ids: std::ops::Range<i64>) -> String {
    ids.map(|i| {
        let ms = i * 10;
        format!(
            "{i}:{{\"id\":{i},\"grp\":{},\"amount\":{},\"ts\":\"2026-01-01T00:{:02}:{:02}.{:03}\"}}\n",
            i % 8,
            i % 100,
            ms / 60_000,
            ms / 1000 % 60,
            ms % 1000
        )
    })
    .collect()
}

/// The same against tansu, a broker Weir did not write: a stream over a 3-partition topic that
/// confluent-kafka fills, its view, and a sink back into tansu; Weir killed with SIGKILL between
/// two rounds of records. Afterwards the stream holds each record once, the view equals batch,
/// and a consumer reads every result of the sink from tansu.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_view_over_tansu_survives_kill_9_exactly_once() {
    let tansu = Tansu::start();
    tansu.create_topic("orders", 3);
    tansu.create_topic("big_orders", 2);
    let (ok, _, err) = kcat_at(
        &tansu.addr,
        &["-P", "-t", "orders", "-K:"],
        &order_lines(0..300),
    );
    assert!(ok, "kcat produces into tansu: {err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let weir = Server::start(dir.path());
    let c = weir.client().await;
    c.batch_execute(&format!(
        "CREATE STREAM ext (id BIGINT NOT NULL, grp BIGINT, amount BIGINT, ts TIMESTAMP, \
         WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH (connector = 'kafka', brokers = '{0}', topic = 'orders', key = 'id'); \
         CREATE MATERIALIZED VIEW per_group AS \
         SELECT grp, COUNT(*) AS n, SUM(amount) AS total FROM ext GROUP BY grp; \
         CREATE SINK big INTO KAFKA WITH (brokers = '{0}', topic = 'big_orders') \
         AS SELECT id, amount FROM ext WHERE amount >= 50",
        tansu.addr
    ))
    .await
    .expect("a source, a view and a sink over tansu");
    wait_for_count(&c, "SELECT count(*) FROM ext", 300).await;
    drop(c);
    weir.kill9();
    tansu.produce("orders", &order_lines(300..600));
    let weir = Server::start(dir.path());
    let c = weir.client().await;
    ext_once_and_per_group_equals_batch(&c, 600).await;
    // Every result reaches tansu (at least once), and only results.
    let want = count(&c, "SELECT count(*) FROM ext WHERE amount >= 50").await;
    assert_eq!(want, 300);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out, err) = kcat_at(
            &tansu.addr,
            &[
                "-C",
                "-t",
                "big_orders",
                "-o",
                "beginning",
                "-e",
                "-f",
                "%s\n",
            ],
            "",
        );
        assert!(ok, "kcat consumes from tansu: {err}");
        let ids: std::collections::BTreeSet<i64> = out
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON result");
                assert!(v["amount"].as_i64().expect("amount") >= 50, "{l}");
                v["id"].as_i64().expect("id")
            })
            .collect();
        if ids.len() as i64 == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sink delivers all {want} results to tansu, got {}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `/metrics` over HTTP while views run: Prometheus' own parser (the `prometheus_client`
/// package's) reads it, and it has each view's progress and each operator's counters; a
/// dropped view is gone from the next scrape.
#[tokio::test]
async fn metrics_are_served_in_prometheus_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, c) = clicks_counted(dir.path()).await;
    let port = server.http_port.expect("the HTTP listener");
    let scrape = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("response");
        out
    };
    assert!(scrape("/healthz").starts_with("HTTP/1.1 200 OK"));
    // Every view has caught up (the count above waited for it).
    assert!(scrape("/readyz").starts_with("HTTP/1.1 200 OK"));
    // A view that stops on an error (an integer overflow) makes the server not ready, and says
    // which view.
    c.batch_execute(
        "CREATE MATERIALIZED VIEW boom AS SELECT user_id * 9223372036854775807 AS x FROM clicks",
    )
    .await
    .expect("view");
    c.simple_query("SELECT * FROM boom")
        .await
        .expect_err("the view stopped on the overflow");
    let not_ready = scrape("/readyz");
    assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
    assert!(not_ready.contains("boom: failed"), "{not_ready}");
    c.batch_execute("DROP MATERIALIZED VIEW boom")
        .await
        .expect("drop");
    assert!(scrape("/nope").starts_with("HTTP/1.1 404"));
    let response = scrape("/metrics");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let parse = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in f.samples:\n\
        \x20       print(s.name, s.labels.get('view', ''), s.labels.get('kind', ''), s.value)\n";
    let mut child = Command::new("python3")
        .args(["-c", parse])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(body.as_bytes()).expect("writes");
    }
    let out = child.wait_with_output().expect("parser ends");
    assert!(
        out.status.success(),
        "prometheus_client could not parse:\n{body}"
    );
    let samples = String::from_utf8_lossy(&out.stdout).into_owned();
    for expected in [
        "weir_view_events_processed_total clicks_per_min  3.0",
        "weir_view_rows clicks_per_min  2.0",
        "weir_view_backlog_events clicks_per_min  0.0",
        "weir_operator_rows_in_total clicks_per_min WindowAggregate 3.0",
        "weir_operator_rows_out_total clicks_per_min WindowAggregate 2.0",
    ] {
        assert!(samples.contains(expected), "no {expected:?} in:\n{samples}");
    }
    // Every metric the example Grafana dashboard queries is served.
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grafana-dashboard.json"),
    )
    .expect("the example dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("JSON");
    let queried: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .flat_map(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("weir_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(queried.len() >= 8, "{queried:?}");
    for metric in queried {
        assert!(
            body.contains(&format!("# TYPE {metric} ")),
            "the dashboard queries {metric}, which /metrics does not serve"
        );
    }
    c.batch_execute("DROP MATERIALIZED VIEW clicks_per_min")
        .await
        .expect("drop");
    assert!(!scrape("/metrics").contains("clicks_per_min"));
}

/// `EXPLAIN MATERIALIZED VIEW` shows the plan a view runs, and `EXPLAIN ANALYZE` the same tree
/// with what every operator has done: rows in at a rate above zero on each, and one marked as
/// the bottleneck.
#[tokio::test]
async fn explain_analyze_shows_every_operator_at_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, c) = clicks_counted(dir.path()).await;
    let lines = |sql: &str| {
        let c = &c;
        let sql = sql.to_string();
        async move {
            c.query(&sql, &[])
                .await
                .expect("explain")
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<String>>()
        }
    };
    let plan = lines("EXPLAIN MATERIALIZED VIEW clicks_per_min").await;
    assert!(
        plan[0].starts_with("Sink: materialized view clicks_per_min"),
        "{plan:?}"
    );
    let analyzed = lines("EXPLAIN ANALYZE MATERIALIZED VIEW clicks_per_min").await;
    assert!(
        analyzed[0].starts_with("Progress: 3 events read"),
        "{analyzed:?}"
    );
    let operators: Vec<&String> = analyzed
        .iter()
        .filter(|l| l.contains("[rows in "))
        .collect();
    assert!(operators.len() >= 2, "{analyzed:?}");
    for line in &operators {
        let rate = line
            .split("rows in ")
            .nth(1)
            .and_then(|r| r.split(['(', '/']).nth(1))
            .and_then(|r| r.parse::<f64>().ok())
            .unwrap_or_default();
        assert!(rate > 0.0, "no rate in {line}");
    }
    assert_eq!(
        analyzed
            .iter()
            .filter(|l| l.contains("the bottleneck"))
            .count(),
        1,
        "{analyzed:?}"
    );
    // Every plan line is there, in order, numbers appended.
    assert_eq!(analyzed.len(), plan.len() + 1);
    for (p, a) in plan.iter().zip(&analyzed[1..]) {
        assert!(a.starts_with(p.as_str()), "{a} for {p}");
    }
    let e = c
        .simple_query("EXPLAIN ANALYZE MATERIALIZED VIEW nope")
        .await
        .expect_err("no such view");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
    );
}

/// The console at `/` of the HTTP listener, opened in headless Chromium: its views page lists
/// every view, a view's page shows its operators (as a tree and with a rate that changes between
/// two loads: rates are averages since the view started), its source partitions and its SQL,
/// and the streams page the streams. `/api/views` and `/api/NAME` are the JSON it reads.
#[tokio::test]
async fn the_console_shows_views_in_headless_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _c) = clicks_counted(dir.path()).await;
    let port = server.http_port.expect("the HTTP listener");
    let get = |path: &str| -> serde_json::Value {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("response");
        let body = out.split("\r\n\r\n").nth(1).expect("a body");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {out}"))
    };
    let views = get("/api/views");
    assert_eq!(views[0]["name"], "clicks_per_min", "{views}");
    assert_eq!(views[0]["events_processed"], 3, "{views}");
    assert!(
        views[0]["operators"]
            .as_array()
            .is_some_and(|o| o.len() >= 2),
        "{views}"
    );
    // The system relations, as JSON: the operators with their parents (the top one has none)
    // and state rows (the aggregate's open groups).
    let operators = get("/api/operators");
    let ops = operators.as_array().expect("an array");
    assert!(ops.len() >= 2, "{operators}");
    assert_eq!(
        ops.iter().filter(|o| o["parent"].is_null()).count(),
        1,
        "{operators}"
    );
    let open_groups = |operators: &serde_json::Value| {
        operators.as_array().is_some_and(|ops| {
            ops.iter()
                .any(|o| o["kind"] == "WindowAggregate" && o["state_rows"] == 1)
        })
    };
    // The window of 00:01 is open with one group; state is measured as the view goes idle.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !open_groups(&get("/api/operators")) {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            get("/api/operators")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let streams = get("/api/streams");
    assert_eq!(streams[0]["name"], "clicks", "{streams}");
    assert_eq!(get("/api/watermarks")[0]["view"], "clicks_per_min");
    let load = |page: &str| {
        let out = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--virtual-time-budget=5000",
                "--dump-dom",
                &format!("http://127.0.0.1:{port}/#/{page}"),
            ])
            .output()
            .expect("chromium runs (.ci/run installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let rates = |dom: &str| -> Vec<String> {
        dom.split("<td class=\"num rate\">")
            .skip(1)
            .filter_map(|s| s.split('<').next().map(str::to_string))
            .collect()
    };
    let overview = load("");
    assert!(
        overview.contains("href=\"#/view/clicks_per_min\""),
        "{overview}"
    );
    let first = load("view/clicks_per_min");
    for shown in [
        "TumbleWindow",
        "Source partitions",
        "tumble(clicks, ts",
        "class=\"op\"",
    ] {
        assert!(first.contains(shown), "{shown}: {first}");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let second = load("view/clicks_per_min");
    let (a, b) = (rates(&first), rates(&second));
    assert!(!a.is_empty(), "{first}");
    assert_ne!(a, b, "the rates did not change between two loads");
    let streams = load("streams");
    assert!(streams.contains("data-name=\"clicks\""), "{streams}");
}

/// Every system relation reads through psql, tokio-postgres (binary results, each column in
/// its own type) and psycopg 3 (text and binary).
#[tokio::test]
async fn every_system_relation_reads_through_psql_and_drivers() {
    use tokio_postgres::types::Type;
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, c) = clicks_counted(dir.path()).await;
    // A late click, so that weir_late_events has a row; a checkpoint, for weir_checkpoints.
    c.batch_execute("INSERT INTO clicks VALUES (9, '/z', '2025-01-01 00:00:00')")
        .await
        .expect("insert");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let relations = [
        ("weir_view_progress", "view"),
        ("weir_operators", "view"),
        ("weir_watermarks", "view"),
        ("weir_checkpoints", "view"),
        ("weir_sessions", "session"),
        ("weir_connectors", "stream"),
        ("weir_late_events", "view"),
        ("weir_why('clicks_per_min')", "view"),
    ];
    for (relation, first) in relations {
        let sql = format!("SELECT * FROM {relation}");
        let (ok, out, err) = psql(&server, &["-A", "-c", &sql]);
        assert!(ok, "{relation}: {err}");
        assert!(out.starts_with(&format!("{first}|")), "{relation}: {out}");
        let rows = c.query(sql.as_str(), &[]).await.expect("tokio-postgres");
        // weir_connectors is empty here: no Kafka connector.
        assert_eq!(rows.is_empty(), relation == "weir_connectors", "{relation}");
        for row in &rows {
            for (i, column) in row.columns().iter().enumerate() {
                let read = match *column.type_() {
                    Type::TEXT | Type::VARCHAR => row.try_get::<_, Option<String>>(i).map(drop),
                    Type::INT8 => row.try_get::<_, Option<i64>>(i).map(drop),
                    Type::INT4 => row.try_get::<_, Option<i32>>(i).map(drop),
                    Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map(drop),
                    Type::BOOL => row.try_get::<_, Option<bool>>(i).map(drop),
                    Type::TIMESTAMP => row.try_get::<_, Option<std::time::SystemTime>>(i).map(drop),
                    ref other => panic!("{relation}.{}: {other}", column.name()),
                };
                read.unwrap_or_else(|e| panic!("{relation}.{}: {e}", column.name()));
            }
        }
    }
    let port = server.port.to_string();
    let stdout = python_client("system_relations.py", &[&port, "clicks_per_min"]);
    assert_eq!(stdout.matches("ok ").count(), relations.len(), "{stdout}");
    assert!(
        stdout.contains("ok weir_why('clicks_per_min') 1 view,window_end,watermark,waiting"),
        "{stdout}"
    );
}

/// `weir_sessions` shows how many changes wait in a subscriber's buffer, and how full it is.
#[tokio::test]
async fn weir_sessions_shows_how_full_a_subscribers_buffer_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, c) = clicks_counted(dir.path()).await;
    let subscriber = server.client().await;
    subscriber
        .batch_execute("SET subscribe_buffer_rows = 10; BEGIN; DECLARE cur CURSOR FOR SUBSCRIBE clicks_per_min")
        .await
        .expect("declare");
    let buffered = || async {
        let row = c
            .query_one(
                "SELECT max(subscribe_buffered_rows), max(subscribe_buffer_percent) \
                 FROM weir_sessions",
                &[],
            )
            .await
            .expect("weir_sessions");
        (row.get::<_, Option<i64>>(0), row.get::<_, Option<f64>>(1))
    };
    assert_eq!(buffered().await, (Some(0), Some(0.0)));
    // A click at 00:05 closes the window of 00:01: its row waits for the subscriber.
    c.batch_execute("INSERT INTO clicks VALUES (3, '/d', '2026-01-01 00:05:00')")
        .await
        .expect("insert");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while buffered().await != (Some(1), Some(10.0)) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            buffered().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = subscriber.query("FETCH ALL cur", &[]).await.expect("fetch");
    assert_eq!(rows.len(), 3, "two rows as of the start, then the change");
    assert_eq!(buffered().await, (Some(0), Some(0.0)));
    subscriber
        .batch_execute("CLOSE cur; COMMIT")
        .await
        .expect("close");
    assert_eq!(buffered().await, (None, None), "no subscription left");
}

/// `weir_sessions` lists the connected clients: who, from where, and what each runs now (the
/// query reading it is active) or ran last.
#[tokio::test]
async fn weir_sessions_lists_the_clients_and_what_they_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let (a, b) = (server.client().await, server.client().await);
    a.batch_execute("SELECT 41 + 1").await.expect("a query");
    let rows = b
        .query(
            "SELECT session, \"user\", address, state, statement FROM weir_sessions ORDER BY session",
            &[],
        )
        .await
        .expect("weir_sessions");
    let sessions: Vec<(i64, String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert!(sessions.len() >= 2, "{sessions:?}");
    let idle = sessions
        .iter()
        .find(|s| s.4 == "SELECT 41 + 1")
        .expect("a's last statement");
    assert_eq!(idle.3, "idle", "{sessions:?}");
    let active = sessions
        .iter()
        .find(|s| s.4.contains("FROM weir_sessions"))
        .expect("b's running statement");
    assert_eq!(active.3, "active", "{sessions:?}");
    for s in [idle, active] {
        assert!(!s.1.is_empty(), "a user: {sessions:?}");
        assert!(s.2.starts_with("127.0.0.1:"), "an address: {sessions:?}");
    }
}

/// A server with the clicks stream and its per-minute view, three clicks in, counted: two
/// closed windows in the view.
async fn clicks_counted(dir: &std::path::Path) -> (Server, tokio_postgres::Client) {
    let server = Server::start(dir);
    let c = server.client().await;
    c.batch_execute(CREATE_CLICKS).await.expect("stream");
    c.batch_execute(CREATE_VIEW).await.expect("view");
    c.batch_execute(
        "INSERT INTO clicks VALUES (1, '/a', '2026-01-01 00:00:01'), \
         (2, '/b', '2026-01-01 00:00:30'), (1, '/c', '2026-01-01 00:01:10')",
    )
    .await
    .expect("insert");
    assert_eq!(count(&c, "SELECT count(*) FROM clicks_per_min").await, 2);
    (server, c)
}

/// `--log-format json` writes each log event as one JSON object per line on stderr.
#[test]
fn logs_come_as_json_lines_when_asked() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--log-format", "json", "serve", "--data-dir"])
        .arg(dir.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--kafka-listen",
            "off",
            "--http",
            "off",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("weir serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let line = std::io::BufReader::new(stderr)
        .lines()
        .next()
        .expect("a log line")
        .expect("readable");
    let _ = child.kill();
    let _ = child.wait();
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON object");
    assert_eq!(event["level"], "INFO", "{line}");
    assert!(event["fields"]["message"].is_string(), "{line}");
    assert!(event["timestamp"].is_string(), "{line}");
}

/// A runaway view (a join of every bid with every bid) stops at once on DROP, in the middle of
/// a batch, and frees what it held; and a server with one running shuts down at once.
#[tokio::test]
async fn a_runaway_view_is_dropped_and_shut_down_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    server::generate(&server, "nexmark", 40_000);
    let c = server.client().await;
    let runaway = "CREATE MATERIALIZED VIEW everything AS \
                   SELECT a.auction, count(*) FROM bid a JOIN bid b ON true GROUP BY a.auction";
    // Once the join has taken this many rows, each batch it takes joins with thousands of
    // stored rows: millions of rows, seconds of work for the operators after it.
    let busy = "SELECT coalesce(max(rows_in), 0)::bigint FROM weir_operators \
                WHERE view = 'everything' AND kind = 'Join'";
    for round in 0..2 {
        c.batch_execute(runaway).await.expect("created");
        // Busy in its first batches, which take far longer than a second (and longer still
        // in a debug build beside other tests).
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while server::count(&c, busy).await < 15_000 {
            assert!(std::time::Instant::now() < deadline, "the view started");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if round == 1 {
            break;
        }
        let start = std::time::Instant::now();
        c.batch_execute("DROP MATERIALIZED VIEW everything")
            .await
            .expect("dropped");
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "DROP took {:?}",
            start.elapsed()
        );
    }
    let start = std::time::Instant::now();
    server.terminate();
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "shutdown took {:?}",
        start.elapsed()
    );
}

/// Waits until `sql` (a count) reaches `want`, never passing it.
async fn counted(c: &Client, sql: &str, want: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = count(c, sql).await;
        if got == want {
            return;
        }
        assert!(got < want, "{got} rows counted, only {want} inserted");
        assert!(
            std::time::Instant::now() < deadline,
            "{got} of {want} counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A processing-time view counts each row once across a `kill -9` and a restart: rows after
/// its last checkpoint are stamped again when it reads them again, and land in the windows of
/// that moment, but no row is lost or counted twice.
#[tokio::test]
async fn a_processing_time_view_counts_each_row_once_across_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c = server.client().await;
    c.batch_execute(
        "CREATE STREAM taps (k BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (partitions = 2); \
         CREATE VIEW stamped AS SELECT *, PROCTIME() AS p FROM taps; \
         CREATE MATERIALIZED VIEW per_second AS SELECT k, window_start, count(*) AS n \
           FROM TABLE(TUMBLE(TABLE stamped, DESCRIPTOR(p), INTERVAL '1' SECOND)) \
           GROUP BY k, window_start, window_end",
    )
    .await
    .expect("definitions");
    let insert = |from: i64| {
        format!(
            "INSERT INTO taps SELECT value % 7, TIMESTAMP '2026-01-01 00:00:00' \
             FROM generate_series({from}, {}) AS t(value)",
            from + 999
        )
    };
    let total = "SELECT coalesce(sum(n), 0)::bigint FROM per_second";
    c.batch_execute(&insert(0)).await.expect("insert");
    counted(&c, total, 1000).await;
    // Rows the view has read but maybe not checkpointed when the server dies.
    c.batch_execute(&insert(1000)).await.expect("insert");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    server.kill9();

    let server = Server::start(dir.path());
    let c = server.client().await;
    c.batch_execute(&insert(2000)).await.expect("insert");
    counted(&c, total, 3000).await;
    // Still 3000 a while later: nothing counted twice after all windows closed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&c, total).await, 3000);
    assert_eq!(
        count(&c, "SELECT count(DISTINCT k)::bigint FROM per_second").await,
        7
    );
}

/// The view `hist` over `t`, in batch: how many groups of `k % 200000` have each count.
const HIST_BATCH: &str = "SELECT c, count(*) AS keys, sum(total) AS total FROM \
    (SELECT k % 200000 AS g, count(*) AS c, sum(v) AS total FROM t GROUP BY k % 200000) \
    GROUP BY c ORDER BY c";

/// The view `best` over `t`, in batch: per group of `k % 200000` its highest `v` (the latest
/// `k` among equals), counted and summed.
const BEST_BATCH: &str = "SELECT count(*) AS n, sum(v) AS s, sum(k) AS ks FROM \
    (SELECT k, v, ROW_NUMBER() OVER (PARTITION BY g ORDER BY v DESC, k DESC) AS rn \
     FROM (SELECT k % 200000 AS g, k, v FROM t)) WHERE rn = 1";

/// Waits until view `name` has processed every row of its stream.
async fn caught_up(c: &Client, name: &str) {
    let sql = format!(
        "SELECT count(*) FROM weir_view_progress WHERE view = '{name}' AND processed = committed"
    );
    wait_for_count(c, &sql, 1).await;
}

/// The spill test's aggregate with a row per group.
const GROUPS_BATCH: &str = "SELECT k, count(*) AS c, sum(v) AS total FROM t GROUP BY k";

/// The spill test's LEFT JOIN without a time bound, aggregated: its rows of `t` without a
/// match in `u` count under a NULL `w` until their match comes.
const JOINED_BATCH: &str = "SELECT t.v, u.w, count(*) AS n FROM t LEFT JOIN u ON t.k = u.k \
    GROUP BY t.v, u.w";

/// The spill test's join of two updating aggregates (a join of rows that change), counted.
const CHANGING_BATCH: &str = "SELECT count(*) AS n, sum(a.c * 10 + b.c) AS s FROM \
    (SELECT k, count(*) AS c FROM t GROUP BY k) a JOIN \
    (SELECT k % 300000 AS k, count(*) AS c FROM u GROUP BY k % 300000) b ON a.k = b.k";

/// The spill test's TUMBLE aggregate: one window of many groups, open until the end.
const WINDOWED_BATCH: &str = "SELECT window_start, k, count(*) AS c, sum(v) AS total \
    FROM TUMBLE(w, ts, INTERVAL '1' HOUR) GROUP BY window_start, window_end, k";

/// The spill test's Top-N per window: the two largest keys of each of 100,000 partitions.
const TOP_BATCH: &str = "SELECT window_start, k, rn FROM (SELECT window_start, window_end, k, \
    ROW_NUMBER() OVER (PARTITION BY window_start, window_end, p ORDER BY k DESC) AS rn \
    FROM TUMBLE((SELECT k, k % 100000 AS p, ts FROM w), ts, INTERVAL '1' HOUR)) WHERE rn <= 2";

/// Rows of the view `groups` missing from the same query in batch, and the other way round.
async fn groups_differ(c: &Client) -> [i64; 2] {
    view_differs(c, "groups", GROUPS_BATCH).await
}

/// Rows of `view` missing from `batch` (its query run in batch), and the other way round.
async fn view_differs(c: &Client, view: &str, batch: &str) -> [i64; 2] {
    [
        count(
            c,
            &format!("SELECT count(*) FROM (SELECT * FROM {view} EXCEPT ALL {batch})"),
        )
        .await,
        count(
            c,
            &format!("SELECT count(*) FROM ({batch} EXCEPT ALL SELECT * FROM {view})"),
        )
        .await,
    ]
}

/// An updating aggregate of 200,000 groups under a 16 MB memory limit, where all of them in
/// memory would take about 24 MB, and a deduplication of as many keys beside it: their state
/// spills to each view's state store at a quarter of the limit and is read back as rows come.
/// A LEFT JOIN without a time bound keeps every row of both streams, about 40 MB: its rows
/// spill too, and are read back by key, with whether each has joined yet. Every view equals
/// its query in batch, and again after a `kill -9` and more rows (restored from the store,
/// not replayed from the start), among them the first matches of rows that were on disk.
#[tokio::test]
async fn an_aggregate_past_its_memory_limit_spills_to_disk_and_stays_right() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let c = server.client().await;
    c.batch_execute(
        "CREATE STREAM t (k BIGINT NOT NULL, v BIGINT) WITH (partitions = 4, key = 'k'); \
         INSERT INTO t SELECT value, value % 7 FROM generate_series(1, 400000); \
         CREATE MATERIALIZED VIEW hist WITH (memory_limit = '16MB') AS \
         SELECT c, count(*) AS keys, sum(total) AS total FROM \
         (SELECT k % 200000 AS g, count(*) AS c, sum(v) AS total FROM t GROUP BY k % 200000) \
         GROUP BY c",
    )
    .await
    .expect("setup");
    c.batch_execute(&format!(
        "CREATE MATERIALIZED VIEW best WITH (memory_limit = '16MB') AS {BEST_BATCH}"
    ))
    .await
    .expect("a deduplication");
    // One row per group: 400,000 rows, about twice the limit in memory, so the view's own
    // rows spill too.
    c.batch_execute(&format!(
        "CREATE MATERIALIZED VIEW groups WITH (memory_limit = '16MB') AS {GROUPS_BATCH}"
    ))
    .await
    .expect("an aggregate of many groups");
    // Odd keys of t have a match in u; even ones get theirs after the restart.
    c.batch_execute(&format!(
        "CREATE STREAM u (k BIGINT NOT NULL, w BIGINT) WITH (partitions = 4, key = 'k'); \
         INSERT INTO u SELECT value, value % 3 FROM generate_series(1, 400000, 2); \
         CREATE MATERIALIZED VIEW joined WITH (memory_limit = '16MB') AS {JOINED_BATCH}; \
         CREATE MATERIALIZED VIEW changing WITH (memory_limit = '16MB') AS {CHANGING_BATCH}"
    ))
    .await
    .expect("joins without a time bound");
    // 400,000 groups in one window that stays open until after the restart.
    c.batch_execute(&format!(
        "CREATE STREAM w (k BIGINT NOT NULL, v BIGINT, ts TIMESTAMP NOT NULL, \
           WATERMARK FOR ts AS ts) WITH (partitions = 1); \
         INSERT INTO w SELECT value, value % 7, \
           CAST(to_timestamp(1767225600 + value % 3000) AS TIMESTAMP) \
           FROM generate_series(1, 400000); \
         CREATE MATERIALIZED VIEW windowed WITH (memory_limit = '16MB') AS {WINDOWED_BATCH}; \
         CREATE MATERIALIZED VIEW top WITH (memory_limit = '16MB') AS {TOP_BATCH}"
    ))
    .await
    .expect("a window of many groups");
    caught_up(&c, "windowed").await;
    caught_up(&c, "top").await;
    assert_eq!(view_differs(&c, "top", TOP_BATCH).await, [0, 0]);
    let top_in_memory = "SELECT max(state_rows) FROM weir_operators \
        WHERE view = 'top' AND kind = 'TopN'";
    assert!(count(&c, top_in_memory).await < 100_000);
    let window_in_memory = "SELECT max(state_rows) FROM weir_operators \
        WHERE view = 'windowed' AND kind = 'WindowAggregate'";
    assert!(count(&c, window_in_memory).await < 200_000);
    caught_up(&c, "hist").await;
    caught_up(&c, "best").await;
    caught_up(&c, "groups").await;
    caught_up(&c, "joined").await;
    caught_up(&c, "changing").await;
    assert_eq!(groups_differ(&c).await, [0, 0]);
    let changing = "SELECT n, s FROM changing";
    assert_eq!(rows(&c, changing).await, rows(&c, CHANGING_BATCH).await);
    let changing_in_memory = "SELECT max(state_rows) FROM weir_operators \
        WHERE view = 'changing' AND kind = 'Join'";
    assert!(count(&c, changing_in_memory).await < 200_000);
    let joined = "SELECT v, w, n FROM joined ORDER BY v, w";
    let joined_batch = format!("{JOINED_BATCH} ORDER BY v, w");
    assert_eq!(rows(&c, joined).await, rows(&c, &joined_batch).await);
    let joined_in_memory = "SELECT max(state_rows) FROM weir_operators \
        WHERE view = 'joined' AND kind = 'Join'";
    assert!(count(&c, joined_in_memory).await < 300_000);
    assert_eq!(count(&c, "SELECT count(*) FROM groups").await, 400_000);
    assert_eq!(
        rows(&c, "SELECT * FROM best").await,
        rows(&c, BEST_BATCH).await
    );
    let view = "SELECT c, keys, total FROM hist ORDER BY c";
    assert_eq!(rows(&c, view).await, rows(&c, HIST_BATCH).await);
    assert_eq!(rows(&c, view).await[0][..2], ["2", "200000"]);
    // The groups left in memory are fewer than half of them: the rest are on disk.
    let in_memory = "SELECT max(state_rows) FROM weir_operators \
        WHERE view = 'hist' AND kind = 'GroupAggregate'";
    assert!(count(&c, in_memory).await < 100_000);
    let partitions_in_memory = "SELECT max(state_rows) FROM weir_operators \
        WHERE view = 'best' AND kind = 'TopN'";
    assert!(count(&c, partitions_in_memory).await < 100_000);
    drop(c);
    server.kill9();
    let server = Server::start(dir.path());
    let c = server.client().await;
    c.batch_execute(
        "INSERT INTO t SELECT value, value % 5 FROM generate_series(400001, 500000); \
         INSERT INTO u SELECT value, value % 3 FROM generate_series(2, 400000, 2); \
         INSERT INTO u SELECT value, value % 3 FROM generate_series(400001, 500000); \
         INSERT INTO w SELECT value % 500000, value % 5, \
           CAST(to_timestamp(1767225600 + value % 3000) AS TIMESTAMP) \
           FROM generate_series(300001, 600000); \
         INSERT INTO w VALUES (0, 0, TIMESTAMP '2026-01-02 00:00:00')",
    )
    .await
    .expect("more rows");
    caught_up(&c, "windowed").await;
    // The window closed: its groups on disk, merged with those in memory, equal batch.
    assert_eq!(count(&c, "SELECT count(*) FROM windowed").await, 500_000);
    // (The last row's window is still open.)
    let closed = format!(
        "SELECT * FROM ({WINDOWED_BATCH}) WHERE window_start < TIMESTAMP '2026-01-02 00:00:00'"
    );
    assert_eq!(view_differs(&c, "windowed", &closed).await, [0, 0]);
    caught_up(&c, "top").await;
    assert_eq!(view_differs(&c, "top", TOP_BATCH).await, [0, 0]);
    assert_eq!(count(&c, "SELECT count(*) FROM top").await, 200_001);
    // The closed window's partitions left memory and the store: the last row's is left.
    assert_eq!(count(&c, top_in_memory).await, 1);
    caught_up(&c, "hist").await;
    caught_up(&c, "best").await;
    caught_up(&c, "groups").await;
    caught_up(&c, "joined").await;
    caught_up(&c, "changing").await;
    assert_eq!(rows(&c, changing).await, rows(&c, CHANGING_BATCH).await);
    let got = rows(&c, joined).await;
    assert_eq!(got, rows(&c, &joined_batch).await);
    // Every row of t has its match now: no NULL w is left.
    assert!(got.iter().all(|r| r[1] != "NULL"), "{got:?}");
    assert_eq!(
        rows(&c, "SELECT * FROM best").await,
        rows(&c, BEST_BATCH).await
    );
    assert_eq!(groups_differ(&c).await, [0, 0]);
    assert_eq!(count(&c, "SELECT count(*) FROM groups").await, 500_000);
    let got = rows(&c, view).await;
    assert_eq!(got, rows(&c, HIST_BATCH).await);
    assert_eq!(got.len(), 2, "{got:?}");
}
