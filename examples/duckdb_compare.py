#!/usr/bin/env python3
"""Weir catching up from its log against DuckDB in batch, over the same rows.

Generates Nexmark-style bids (and hashtag events) as CSV files, loads them into a release
`weir serve` with psql's \\copy (one sentinel event per key a day later, so that every window
closes), then for each query creates the view with its SQL and times it until it has processed
every event and holds every row. DuckDB runs the same query in batch over the same CSV files
(and over the rows already loaded into its own table). Every view must equal DuckDB's result
row for row, or the script fails.

Usage: examples/duckdb_compare.py [BIDS] [RUNS]   (defaults 1840000 bids, 2 runs)
Needs: psql, python3 with psycopg and duckdb (pip install psycopg[binary] duckdb), and a
release build (cargo build --release -p weir-server).
"""

import os
import random
import subprocess
import sys
import tempfile
import time

import datetime

import duckdb
import psycopg

BIDS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_840_000
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
TAG_EVENTS = 2_000_000
PORT = 55437
# The sentinels' watermark: every window before them is closed.
CLOSED = datetime.datetime(2026, 1, 1, 23, 59, 59)
WEIR = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "weir")

# (name, Weir's view SQL, DuckDB's SQL over tables `bid` and `tweets`); both give the same
# columns, in the same order.
QUERIES = [
    (
        "TUMBLE 10 s, count/sum/max per auction",
        "SELECT auction, window_start, window_end, COUNT(*) AS n, SUM(price) AS total, "
        "MAX(price) AS hi FROM TUMBLE(bid, dateTime, INTERVAL '10' SECOND) "
        "GROUP BY auction, window_start, window_end",
        "SELECT auction, time_bucket(INTERVAL 10 SECOND, dateTime) AS ws, "
        "time_bucket(INTERVAL 10 SECOND, dateTime) + INTERVAL 10 SECOND AS we, COUNT(*), "
        "SUM(price), MAX(price) FROM bid GROUP BY ALL",
    ),
    (
        "Nexmark q7 (TUMBLE max joined back to bids)",
        "SELECT B.auction, B.price, B.bidder, B.dateTime, B.extra FROM bid B JOIN ("
        "SELECT MAX(price) AS maxprice, window_end AS dateTime "
        "FROM TUMBLE(bid, dateTime, INTERVAL '10' SECOND) GROUP BY window_start, window_end) B1 "
        "ON B.price = B1.maxprice "
        "WHERE B.dateTime BETWEEN B1.dateTime - INTERVAL '10' SECOND AND B1.dateTime",
        "SELECT B.auction, B.price, B.bidder, B.dateTime, B.extra FROM bid B JOIN ("
        "SELECT MAX(price) AS maxprice, time_bucket(INTERVAL 10 SECOND, dateTime) "
        "+ INTERVAL 10 SECOND AS dateTime FROM bid GROUP BY ALL) B1 "
        "ON B.price = B1.maxprice "
        "WHERE B.dateTime BETWEEN B1.dateTime - INTERVAL 10 SECOND AND B1.dateTime",
    ),
    (
        "Nexmark q5 (HOP 10 s / 2 s hot items)",
        "SELECT AuctionBids.auction, AuctionBids.num FROM ("
        "SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime "
        "FROM HOP(bid, dateTime, INTERVAL '2' SECOND, INTERVAL '10' SECOND) "
        "GROUP BY auction, window_start, window_end) AS AuctionBids JOIN ("
        "SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime FROM ("
        "SELECT count(*) AS num, window_start AS starttime, window_end AS endtime "
        "FROM HOP(bid, dateTime, INTERVAL '2' SECOND, INTERVAL '10' SECOND) "
        "GROUP BY auction, window_start, window_end) AS CountBids "
        "GROUP BY CountBids.starttime, CountBids.endtime) AS MaxBids "
        "ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime "
        "AND AuctionBids.num >= MaxBids.maxn",
        # HOP by hand: each bid in the five 10-second windows that start every 2 seconds.
        "WITH hop AS (SELECT auction, time_bucket(INTERVAL 2 SECOND, dateTime) "
        "- INTERVAL 2 SECOND * k AS ws FROM bid, range(5) AS r(k)), "
        "counts AS (SELECT auction, ws, count(*) AS num FROM hop GROUP BY ALL) "
        "SELECT c.auction, c.num FROM counts c JOIN (SELECT ws, max(num) AS maxn FROM counts "
        "GROUP BY ws) m ON c.ws = m.ws AND c.num >= m.maxn",
    ),
    (
        "hashtags, HOP 60 s / 5 s count per tag",
        "SELECT hashtag, window_start, window_end, COUNT(*) AS n "
        "FROM HOP(tweets, ts, INTERVAL '5' SECOND, INTERVAL '1' MINUTE) "
        "GROUP BY hashtag, window_start, window_end",
        "SELECT hashtag, ws, ws + INTERVAL 1 MINUTE, count(*) FROM (SELECT hashtag, "
        "time_bucket(INTERVAL 5 SECOND, ts) - INTERVAL 5 SECOND * k AS ws "
        "FROM tweets, range(12) AS r(k)) GROUP BY ALL",
    ),
]


def generate(bids_path, tweets_path):
    """Bids in time order, a millisecond apart, over 5,000 auctions of which a few are hot;
    hashtags Zipf-like over 3,000 tags; and, in
    files of their own (`...-sentinels.csv`, loaded into Weir only), one event per key a day
    later: the watermark passes every window before it, and no window holding a sentinel
    closes, so the views' rows are those of the main files."""
    random.seed(7)
    with open(bids_path, "w") as f:
        for i in range(BIDS):
            ms = i
            f.write(
                f"{1000 + int(5000 * random.random() ** 3)},{random.randint(1, 100000)},"
                f"{random.randint(1, 100000000)},"
                f"channel-{i % 5},https://www.nexmark.com/item.htm?channel_id={i % 10000},"
                f"2026-01-01 {ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}"
                f".{ms % 1000:03d},{'x' * random.randint(0, 40)}\n"
            )
    with open(bids_path.replace(".csv", "-sentinels.csv"), "w") as f:
        for a in range(1000, 6000):
            f.write(f"{a},1,1,channel-0,s,2026-01-02 00:00:00.000,\n")
    weights = [1 / (r + 1) for r in range(3000)]
    tags = random.choices(range(3000), weights=weights, k=TAG_EVENTS)
    with open(tweets_path, "w") as f:
        for i, t in enumerate(tags):
            ms = i // 2
            f.write(
                f"{i // 3},tag{t},2026-01-01 {ms // 3600000:02d}:{ms // 60000 % 60:02d}:"
                f"{ms // 1000 % 60:02d}.{ms % 1000:03d}\n"
            )
    with open(tweets_path.replace(".csv", "-sentinels.csv"), "w") as f:
        for t in range(3000):
            f.write(f"0,tag{t},2026-01-02 00:00:00.000\n")


def normalized(rows):
    """Rows as sorted tuples of text, so that both engines' types compare."""
    def cell(v):
        if hasattr(v, "isoformat"):
            return v.isoformat(sep=" ")
        if isinstance(v, float) and v == int(v):
            return str(int(v))
        return str(v)

    return sorted(tuple(cell(v) for v in r) for r in rows)


def weir_catch_up(conn, sql):
    """Creates the view and waits until it has read every event and closed every window."""
    conn.execute("DROP MATERIALIZED VIEW IF EXISTS v")
    started = time.perf_counter()
    conn.execute(f"CREATE MATERIALIZED VIEW v AS {sql}")
    while True:
        row = conn.execute(
            "SELECT processed, committed, watermark FROM weir_view_progress WHERE view = 'v'"
        ).fetchone()
        processed, committed, watermark = row
        if processed == committed and watermark is not None and watermark >= CLOSED:
            break
        time.sleep(0.002)
    seconds = time.perf_counter() - started
    rows = conn.execute("SELECT * FROM v").fetchall()
    return seconds, rows


def main():
    data = tempfile.mkdtemp(prefix="weir-duckdb-")
    bids, tweets = os.path.join(data, "bids.csv"), os.path.join(data, "tweets.csv")
    generate(bids, tweets)
    server = subprocess.Popen(
        [WEIR, "serve", "--listen", f"127.0.0.1:{PORT}", "--kafka-listen", "off", "--http",
         "off", "--data-dir", os.path.join(data, "weir")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conninfo = f"host=127.0.0.1 port={PORT} user=weir dbname=weir"
        for _ in range(100):
            try:
                conn = psycopg.connect(conninfo, autocommit=True)
                break
            except psycopg.OperationalError:
                time.sleep(0.1)
        conn.execute(
            "CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel TEXT, "
            "url TEXT, dateTime TIMESTAMP, extra TEXT, "
            "WATERMARK FOR dateTime AS dateTime - INTERVAL '1' SECOND) "
            "WITH (partitions = 4, key = 'auction')")
        conn.execute(
            "CREATE STREAM tweets (user_id BIGINT, hashtag TEXT, ts TIMESTAMP, "
            "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (partitions = 4, key = 'hashtag')")
        for stream, path in (("bid", bids), ("tweets", tweets)):
            for f in (path, path.replace(".csv", "-sentinels.csv")):
                subprocess.run(["psql", "-X", "-q", conninfo, "-c", f"\\copy {stream} FROM '{f}' CSV"],
                               check=True)
        bid_csv = (f"read_csv('{bids}', header=false, columns={{'auction': 'BIGINT', "
                   "'bidder': 'BIGINT', 'price': 'BIGINT', 'channel': 'VARCHAR', 'url': 'VARCHAR', "
                   "'dateTime': 'TIMESTAMP', 'extra': 'VARCHAR'})")
        tweet_csv = (f"read_csv('{tweets}', header=false, columns={{'user_id': 'BIGINT', "
                     "'hashtag': 'VARCHAR', 'ts': 'TIMESTAMP'})")
        # The same names over the files (read again by every query) and as tables of DuckDB's.
        files, tables = duckdb.connect(), duckdb.connect()
        files.execute(f"CREATE VIEW bid AS SELECT * FROM {bid_csv}")
        files.execute(f"CREATE VIEW tweets AS SELECT * FROM {tweet_csv}")
        tables.execute(f"CREATE TABLE bid AS SELECT * FROM {bid_csv}")
        tables.execute(f"CREATE TABLE tweets AS SELECT * FROM {tweet_csv}")
        print(f"{BIDS} bids and {TAG_EVENTS} hashtag events; {RUNS} runs; DuckDB {duckdb.__version__}")
        print(f"{'query':<46} {'Weir catch-up s':>16} {'DuckDB CSV s':>13} {'DuckDB table s':>15}"
              f" {'speed vs DuckDB CSV':>20}")
        for name, weir_sql, duck_sql in QUERIES:
            weir_times, csv_times, table_times = [], [], []
            for _ in range(RUNS):
                seconds, weir_rows = weir_catch_up(conn, weir_sql)
                weir_times.append(seconds)
                started = time.perf_counter()
                duck_rows = files.execute(duck_sql).fetchall()
                csv_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                tables.execute(duck_sql).fetchall()
                table_times.append(time.perf_counter() - started)
                if normalized(weir_rows) != normalized(duck_rows):
                    sys.exit(f"{name}: Weir's view ({len(weir_rows)} rows) differs from "
                             f"DuckDB's result ({len(duck_rows)} rows)")
            span = lambda xs: f"{min(xs):.2f}-{max(xs):.2f}"
            ratio = [c / w for w, c in zip(weir_times, csv_times)]
            print(f"{name:<46} {span(weir_times):>16} {span(csv_times):>13} "
                  f"{span(table_times):>15} {span(ratio):>20}   ({len(weir_rows)} rows, equal)")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
