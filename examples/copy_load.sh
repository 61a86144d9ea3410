#!/usr/bin/env bash
# COPY FROM speed and the server's peak memory: psql's \copy of a generated CSV of Nexmark-style
# bids into a stream of 4 partitions. Usage: examples/copy_load.sh [ROWS]   (default 1840000)
# Needs psql and python3, and a release build (cargo build --release -p weir-server).
set -euo pipefail
rows="${1:-1840000}"
weir="${CARGO_TARGET_DIR:-target}/release/weir"
data="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT

python3 - "$rows" "$data/bids.csv" <<'PY'
import random, sys
random.seed(7)
rows, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    for i in range(rows):
        f.write(f"{1000 + i % 5000},{random.randint(1, 100000)},{random.randint(1, 100000000)},"
                f"channel-{i % 5},https://www.nexmark.com/item.htm?query=1&channel_id={i % 10000},"
                f"2026-01-01 00:{(i // 60000) % 60:02d}:{(i // 1000) % 60:02d}.{i % 1000:03d},"
                f"{'x' * random.randint(0, 40)}\n")
PY

"$weir" serve --listen 127.0.0.1:55434 --kafka-listen off --http off --data-dir "$data/weir" \
    > "$data/serve.log" 2>&1 &
pid=$!
psql_() { psql -X -q -h 127.0.0.1 -p 55434 -U weir weir "$@"; }
for _ in $(seq 100); do psql_ -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
psql_ -c "CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel TEXT, url TEXT,
          dateTime TIMESTAMP, extra TEXT) WITH (partitions = 4, key = 'auction')"

# The server's peak resident memory, sampled every 50 ms while the COPY runs.
peak_file="$data/peak"
echo 0 > "$peak_file"
( peak=0; while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    if [ "${rss:-0}" -gt "$peak" ]; then peak=$rss; echo "$peak" > "$peak_file"; fi
    sleep 0.05
  done ) &
sampler=$!

start=$(date +%s.%N)
psql_ -c "\\copy bid FROM '$data/bids.csv' CSV"
end=$(date +%s.%N)
sleep 0.2
kill "$sampler" 2>/dev/null || true
echo "rows: $(psql_ -tA -c 'SELECT count(*) FROM bid')  file: $(du -m "$data/bids.csv" | cut -f1) MB"
python3 -c "print(f'COPY: {$rows / ($end - $start) / 1e3:.0f} K rows/s')"
echo "server peak RSS: $(( $(cat "$peak_file") / 1024 )) MiB"
