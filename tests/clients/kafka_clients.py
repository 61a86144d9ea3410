"""Weir's Kafka listener through Python's Kafka clients: confluent-kafka (librdkafka) and
kafka-python.

Run by tests/e2e.rs with the Postgres port and the Kafka port as arguments; exits non-zero on
the first failure. Both clients produce JSON records with acks=all into a 4-partition stream;
kafka-python reads every partition back from the beginning; a windowed view over the produced
stream equals the same view over the same rows INSERTed through psycopg.
"""

import json
import sys

import psycopg
from confluent_kafka import Producer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

PG_PORT, KAFKA_PORT = int(sys.argv[1]), int(sys.argv[2])
DSN = f"host=127.0.0.1 port={PG_PORT} user=weir dbname=weir"
BROKER = f"127.0.0.1:{KAFKA_PORT}"
# Producers fill the four partitions independently, and a partition that has no rows yet does
# not hold the watermark back; the delay covers the skew between partitions at the start.
COLUMNS = (
    "(id BIGINT, amount DOUBLE PRECISION, ts TIMESTAMP, "
    "WATERMARK FOR ts AS ts - INTERVAL '3' HOUR)"
)


def check(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def order(i):
    # Two hours of event time over the records, a minute every 50 records.
    return {
        "id": i,
        "amount": round(i * 0.25, 2),
        "ts": f"2026-01-01 {i // 3000:02}:{i // 50 % 60:02}:{i % 50:02}",
    }


def main():
    conn = psycopg.connect(DSN, autocommit=True)
    for name in ("orders", "orders_sql"):
        conn.execute(
            f"CREATE STREAM {name} {COLUMNS} "
            "WITH (partitions = 4, key = 'id', format = 'json')"
        )
        conn.execute(
            f"CREATE MATERIALIZED VIEW {name}_per_minute AS "
            "SELECT window_start, count(*) AS n, sum(amount) AS total "
            f"FROM TUMBLE({name}, ts, INTERVAL '1' MINUTE) GROUP BY window_start"
        )

    rows = [order(i) for i in range(6000)]

    # confluent-kafka: the first half, acks=all, every delivery reported with its offset.
    delivered = []

    def report(err, msg):
        if err is not None:
            raise AssertionError(f"delivery failed: {err}")
        delivered.append((msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": BROKER, "acks": "all", "linger.ms": 5})
    for r in rows[:3000]:
        producer.produce("orders", key=str(r["id"]), value=json.dumps(r), callback=report)
        producer.poll(0)
    check(producer.flush(30), 0, "confluent-kafka messages left after flush")
    check(len(delivered), 3000, "confluent-kafka delivery reports")
    check(len(set(delivered)), 3000, "distinct (partition, offset) of deliveries")
    print("ok confluent-kafka produced 3000 records with acks=all")

    # kafka-python: the second half.
    kp = KafkaProducer(
        bootstrap_servers=BROKER,
        acks="all",
        key_serializer=lambda k: str(k).encode(),
        value_serializer=lambda v: json.dumps(v).encode(),
    )
    futures = [kp.send("orders", key=r["id"], value=r) for r in rows[3000:]]
    kp.flush(30)
    offsets = {(f.get(30).partition, f.get(30).offset) for f in futures}
    check(len(offsets), 3000, "kafka-python acknowledged records")
    kp.close()
    print("ok kafka-python produced 3000 records with acks=all")

    # kafka-python reads every partition from the beginning.
    consumer = KafkaConsumer(
        bootstrap_servers=BROKER,
        group_id=None,
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    partitions = [TopicPartition("orders", p) for p in range(4)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    seen = {}
    for msg in consumer:
        value = json.loads(msg.value)
        check(msg.key, str(value["id"]).encode(), "record key is the key column")
        seen[value["id"]] = value
        if len(seen) == len(rows):
            break
    consumer.close()
    check(sorted(seen), list(range(6000)), "ids consumed")
    check(seen[4321]["amount"], rows[4321]["amount"], "a consumed amount")
    print("ok kafka-python consumed 6000 records from 4 partitions")

    # The same rows through INSERT; a later row closes every window in both streams.
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO orders_sql VALUES (%s, %s, %s::timestamp)",
            [(r["id"], r["amount"], r["ts"]) for r in rows],
        )
    closer = {"id": 99999, "amount": 0.0, "ts": "2026-01-01 05:00:00"}
    producer.produce("orders", key="99999", value=json.dumps(closer), callback=report)
    check(producer.flush(30), 0, "closing record delivered")
    conn.execute(
        "INSERT INTO orders_sql VALUES (99999, 0.0, TIMESTAMP '2026-01-01 05:00:00')"
    )
    query = "SELECT window_start, n, total FROM {} ORDER BY window_start"
    import time

    deadline = time.time() + 30
    while True:
        via_kafka = conn.execute(query.format("orders_per_minute")).fetchall()
        via_sql = conn.execute(query.format("orders_sql_per_minute")).fetchall()
        if (via_kafka == via_sql and len(via_kafka) == 120) or time.time() > deadline:
            break
        time.sleep(0.2)
    check(len(via_kafka), 120, "closed one-minute windows")
    check(via_kafka, via_sql, "view over Kafka-produced rows vs over INSERTed rows")
    print("ok a view over a Kafka-produced stream equals the view over INSERTed rows")

    # Topics made by Kafka clients are raw streams, queryable with JSON functions.
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": BROKER})
    for f in admin.create_topics([NewTopic("raw_events", num_partitions=2)]).values():
        f.result(30)
    raw = Producer({"bootstrap.servers": BROKER, "acks": "all"})
    raw.produce("raw_events", key="k1", value='{"user":"ada","n":3}', partition=1,
                headers=[("source", b"test")])
    check(raw.flush(30), 0, "raw record delivered")
    got = conn.execute(
        "SELECT key, json_get_str(value, 'user'), json_get_int(value, 'n'), partition, headers "
        "FROM raw_events"
    ).fetchall()
    check(got, [("k1", "ada", 3, 1, '{"source":"test"}')], "a raw topic's record in SQL")
    # Producing to a topic that does not exist fails (auto-creation is off by default).
    errors = []
    lost = Producer({"bootstrap.servers": BROKER, "message.timeout.ms": 2000})
    lost.produce("no_such_topic", value="x", callback=lambda err, msg: errors.append(err))
    lost.flush(10)
    check(len(errors) == 1 and errors[0] is not None, True, "produce to an unknown topic fails")
    names = [r[0] for r in conn.execute("SHOW STREAMS").fetchall()]
    check("no_such_topic" in names, False, "no topic created on produce")
    for f in admin.delete_topics(["raw_events"]).values():
        f.result(30)
    names = [r[0] for r in conn.execute("SHOW STREAMS").fetchall()]
    check("raw_events" in names, False, "a deleted topic's stream is gone")
    print("ok topics created and deleted by a Kafka admin client are raw streams")


main()
