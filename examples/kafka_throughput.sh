#!/usr/bin/env bash
# Produce and fetch throughput of Weir's Kafka listener, measured with kcat (librdkafka 2.x):
# one producer with acks=all and librdkafka's default batching, then one consumer reading
# everything back. Usage: examples/kafka_throughput.sh [RECORDS]   (default 2000000)
# Needs kcat and psql, and a release build (cargo build --release -p weir-server).
set -euo pipefail
records="${1:-2000000}"
weir="${CARGO_TARGET_DIR:-target}/release/weir"
data="$(mktemp -d)"
lines="$data/records.txt"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT

"$weir" serve --listen 127.0.0.1:55433 --kafka-listen 127.0.0.1:59092 --http off --data-dir "$data/weir" \
    > "$data/serve.log" 2>&1 &
pid=$!
until grep -q "listening" "$data/serve.log" 2>/dev/null; do sleep 0.1; done
psql -X -q -h 127.0.0.1 -p 55433 -U weir weir -c "CREATE STREAM clicks (user_id BIGINT,
    url TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
    WITH (partitions = 4, key = 'user_id', format = 'json')"

# Small JSON records (about 60 bytes), keyed by user.
awk -v n="$records" 'BEGIN { for (i = 0; i < n; i++) printf "%d:{\"user_id\":%d,\"url\":\"/page/%d\",\"ts\":\"2026-01-01 00:%02d:%02d\"}\n", i % 10000, i % 10000, i % 100, int(i / 60000) % 60, int(i / 1000) % 60 }' > "$lines"

start=$(date +%s.%N)
kcat -b 127.0.0.1:59092 -t clicks -P -K: -X acks=all < "$lines"
end=$(date +%s.%N)
stored=$(psql -X -At -h 127.0.0.1 -p 55433 -U weir weir -c "SELECT count(*) FROM clicks")
echo "produce: $stored records in $(echo "$end - $start" | bc) s: $(echo "$stored / ($end - $start)" | bc) records/s (acks=all)"

start=$(date +%s.%N)
fetched=$(kcat -b 127.0.0.1:59092 -t clicks -C -o beginning -e -q -f '%o\n' | wc -l)
end=$(date +%s.%N)
echo "fetch: $fetched records in $(echo "$end - $start" | bc) s: $(echo "$fetched / ($end - $start)" | bc) records/s"
echo "weir peak RSS: $(grep VmHWM "/proc/$pid/status" | awk '{print int($2 / 1024)}') MiB"
