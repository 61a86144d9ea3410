#!/usr/bin/env bash
# State beyond memory: an updating aggregate of many groups under a small memory limit, whose
# groups spill to the view's state store on disk. Prints the time to catch up, the server's peak
# RSS, the state store's size, and whether the view equals the same query in batch.
# Usage: examples/spill.sh [GROUPS] [ROWS] [LIMIT] [VIEW]   (default 10000000 15000000 256MB hist)
# VIEW `hist` counts the groups by their count (a view of a few rows over the spilled
# aggregate); `groups` is the aggregate itself, one row per group, whose rows spill too, and
# is checked against batch by sums over all of its rows; `joined` is a LEFT JOIN without a
# time bound of t with a stream u of one row per even group (both spill: the join keeps every
# row of both), aggregated by t's v and u's w; `changing` joins t's aggregate by k with u's
# (a join of rows that change, keeping both sides' rows by key), counted; `windowed` is a
# TUMBLE aggregate per k over one-hour windows of a stream e (t's rows spread over two hours,
# and one row a day later that closes both), one row per window and group, checked like
# `groups`; `hopped` is the same over HOP windows of an hour every half hour (by panes);
# `top` keeps the two largest k per window of each k % 1,000,000 (a Top-N per window).
# Needs psql and python3, and a release build (cargo build --release -p weir-server).
set -euo pipefail
groups="${1:-10000000}"
rows="${2:-15000000}"
limit="${3:-256MB}"
view="${4:-hist}"
closed=""
weir="${CARGO_TARGET_DIR:-target}/release/weir"
data="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT

python3 - "$groups" "$rows" "$data/t.csv" <<'PY'
import sys
groups, rows, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with open(path, "w") as f:
    for i in range(rows):
        f.write(f"{i % groups},{i % 7}\n")
PY

"$weir" serve --listen 127.0.0.1:55435 --kafka-listen off --http off --data-dir "$data/weir" \
    > "$data/serve.log" 2>&1 &
pid=$!
psql_() { psql -X -q -h 127.0.0.1 -p 55435 -U weir weir "$@"; }
for _ in $(seq 100); do psql_ -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
windowed=false
case "$view" in windowed | hopped | top) windowed=true ;; esac
if [ "$windowed" = false ]; then
    psql_ -c "CREATE STREAM t (k BIGINT NOT NULL, v BIGINT) WITH (partitions = 4, key = 'k')"
    psql_ -c "\\copy t FROM '$data/t.csv' CSV"
fi
if [ "$windowed" = true ]; then
    python3 - "$rows" "$data/t.csv" "$data/e.csv" <<'PY'
import sys, datetime
rows, src, dst = int(sys.argv[1]), sys.argv[2], sys.argv[3]
base = datetime.datetime(2026, 1, 1)
with open(src) as f, open(dst, "w") as out:
    for i, line in enumerate(f):
        ts = base + datetime.timedelta(seconds=i * 7200 // rows)
        out.write(f"{line.strip()},{ts:%Y-%m-%d %H:%M:%S}\n")
    out.write(f"0,0,{base + datetime.timedelta(days=1):%Y-%m-%d %H:%M:%S}\n")
PY
    psql_ -c "CREATE STREAM e (k BIGINT NOT NULL, v BIGINT, ts TIMESTAMP NOT NULL,
        WATERMARK FOR ts AS ts) WITH (partitions = 1)"
    psql_ -c "\\copy e FROM '$data/e.csv' CSV"
fi
if [ "$view" = joined ] || [ "$view" = changing ]; then
    python3 -c "
import sys
with open(sys.argv[2], 'w') as f:
    for k in range(0, int(sys.argv[1]), 2):
        f.write(f'{k},{k % 3}\\n')
" "$groups" "$data/u.csv"
    psql_ -c "CREATE STREAM u (k BIGINT NOT NULL, w BIGINT) WITH (partitions = 4, key = 'k')"
    psql_ -c "\\copy u FROM '$data/u.csv' CSV"
fi

# The server's peak resident memory, sampled every 50 ms while the view catches up.
peak_file="$data/peak"
echo 0 > "$peak_file"
( peak=0; while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    if [ "${rss:-0}" -gt "$peak" ]; then peak=$rss; echo "$peak" > "$peak_file"; fi
    sleep 0.05
  done ) &
sampler=$!

if [ "$view" = joined ]; then
    query="SELECT t.v, u.w, count(*) AS n, sum(t.k) AS ks FROM t LEFT JOIN u ON t.k = u.k
       GROUP BY t.v, u.w"
    check="SELECT * FROM"
elif [ "$view" = changing ]; then
    query="SELECT count(*) AS n, sum(a.c * 10 + b.w) AS s FROM
       (SELECT k, count(*) AS c FROM t GROUP BY k) a JOIN
       (SELECT k, max(w) AS w FROM u GROUP BY k) b ON a.k = b.k"
    check="SELECT * FROM"
elif [ "$view" = windowed ]; then
    query="SELECT window_start, k, count(*) AS c, sum(v) AS total
       FROM TUMBLE(e, ts, INTERVAL '1' HOUR) GROUP BY window_start, window_end, k"
    check="SELECT count(*), sum(c), sum(total), sum(k * c) FROM"
    # The last row's windows are still open.
    closed="WHERE window_start < TIMESTAMP '2026-01-01 23:00:00'"
elif [ "$view" = top ]; then
    query="SELECT window_start, k, rn FROM (SELECT window_start, window_end, k,
       ROW_NUMBER() OVER (PARTITION BY window_start, window_end, p ORDER BY k DESC) AS rn
       FROM TUMBLE((SELECT k, k % 1000000 AS p, ts FROM e), ts, INTERVAL '1' HOUR)) WHERE rn <= 2"
    check="SELECT count(*), sum(k), sum(rn) FROM"
elif [ "$view" = hopped ]; then
    query="SELECT window_start, k, count(*) AS c, sum(v) AS total
       FROM HOP(e, ts, INTERVAL '30' MINUTE, INTERVAL '1' HOUR) GROUP BY window_start, window_end, k"
    check="SELECT count(*), sum(c), sum(total), sum(k * c) FROM"
    closed="WHERE window_start < TIMESTAMP '2026-01-01 23:00:00'"
elif [ "$view" = groups ]; then
    query="SELECT k, count(*) AS c, sum(v) AS total FROM t GROUP BY k"
    check="SELECT count(*), sum(c), sum(total), sum(k * c) FROM"
else
    query="SELECT c, count(*) AS keys, sum(total) AS total FROM
       (SELECT k, count(*) AS c, sum(v) AS total FROM t GROUP BY k) GROUP BY c"
    check="SELECT * FROM"
fi
start=$(date +%s.%N)
psql_ -c "CREATE MATERIALIZED VIEW $view WITH (memory_limit = '$limit') AS $query"
until [ "$(psql_ -tA -c "SELECT processed = committed FROM weir_view_progress WHERE view = '$view'")" = t ]; do
    sleep 0.2
done
end=$(date +%s.%N)
kill "$sampler" 2>/dev/null || true
python3 -c "print(f'caught up: {$rows} rows, $groups groups in {$end - $start:.1f} s ({$rows / ($end - $start) / 1e3:.0f} K rows/s)')"
echo "server peak RSS while catching up: $(( $(cat "$peak_file") / 1024 )) MiB (memory_limit $limit)"
echo "state store: $(du -sm "$data/weir/views/$view/state" | cut -f1) MB on disk"
echo "view:  $(psql_ -tA -F' ' -c "$check $view ORDER BY 1, 2" | tr '\n' ';')"
echo "batch: $(psql_ -tA -F' ' -c "$check ($query) AS b $closed ORDER BY 1, 2" | tr '\n' ';')"
