"""Consumer groups on Weir's Kafka listener, with confluent-kafka (librdkafka) and kafka-python.

Run by tests/e2e.rs as `kafka_groups.py PG_PORT KAFKA_PORT PHASE`, exits non-zero on the first
failure:
- `before`: creates a 4-partition stream of 4000 records; two confluent-kafka consumers in one
  group split the partitions, consume and commit part of them; one leaves and the other takes
  over every partition; kafka-python consumes everything in a group of its own and commits.
  Prints the committed offsets.
- `after` (Weir was killed with SIGKILL and restarted in between): a new consumer of the first
  group resumes from the committed offsets and reads exactly the records after them; the
  kafka-python group has nothing left to read.
"""

import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

PG_PORT, KAFKA_PORT, PHASE = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
BROKER = f"127.0.0.1:{KAFKA_PORT}"
RECORDS = 4000
# Each of the first group's consumers commits this many records of each partition it has.
FIRST_READ = 300


def check(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def consumer(group):
    return Consumer(
        {
            "bootstrap.servers": BROKER,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 300,
            "partition.assignment.strategy": "range",
        }
    )


def wait_for(consumers, done, what, timeout=60):
    deadline = time.time() + timeout
    got = {id(c): [] for c in consumers}
    while not done():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        for c in consumers:
            msg = c.poll(0.1)
            if msg is not None and msg.error() is None:
                got[id(c)].append(msg)
    return got


def before():
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={PG_PORT} user=weir dbname=weir", autocommit=True) as conn:
        conn.execute(
            "CREATE STREAM events (id BIGINT, ts TIMESTAMP, "
            "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) "
            "WITH (partitions = 4, key = 'id', format = 'json')"
        )
    p = Producer({"bootstrap.servers": BROKER, "acks": "all"})
    for i in range(RECORDS):
        p.produce(
            "events",
            key=str(i),
            value=json.dumps({"id": i, "ts": "2026-01-01 00:00:00"}),
            partition=i % 4,
        )
    check(p.flush(30), 0, "records left after flush")

    a, b = consumer("g1"), consumer("g1")
    a.subscribe(["events"])
    b.subscribe(["events"])
    wait_for(
        [a, b],
        lambda: len(a.assignment()) + len(b.assignment()) == 4
        and a.assignment()
        and b.assignment(),
        "two consumers to split four partitions",
    )
    pa = {tp.partition for tp in a.assignment()}
    pb = {tp.partition for tp in b.assignment()}
    check(pa | pb, {0, 1, 2, 3}, "partitions covered")
    check(pa & pb, set(), "partitions shared")
    print(f"ok two consumers split the partitions: {sorted(pa)} and {sorted(pb)}")

    # Each reads and commits FIRST_READ records of each of its partitions.
    for c in (a, b):
        for tp in c.assignment():
            c.commit(offsets=[TopicPartition("events", tp.partition, FIRST_READ)], asynchronous=False)
    committed = a.committed([TopicPartition("events", p) for p in range(4)], timeout=10)
    check([tp.offset for tp in committed], [FIRST_READ] * 4, "committed offsets")
    print("ok both committed their offsets")

    # B leaves; A takes over all four partitions after the rebalance.
    b.close()
    wait_for([a], lambda: len(a.assignment()) == 4, "the group to rebalance onto one consumer")
    print("ok after one consumer left the other has every partition")
    # A moves every partition's committed offset on by 100.
    a.commit(
        offsets=[TopicPartition("events", p, FIRST_READ + 100) for p in range(4)],
        asynchronous=False,
    )
    a.close()

    # kafka-python in a group of its own reads everything and commits.
    from kafka import KafkaConsumer

    kc = KafkaConsumer(
        "events",
        bootstrap_servers=BROKER,
        group_id="g2",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10000,
    )
    ids = set()
    for msg in kc:
        ids.add(json.loads(msg.value)["id"])
        if len(ids) == RECORDS:
            break
    check(len(ids), RECORDS, "kafka-python group read every record")
    kc.commit()
    kc.close()
    print("ok kafka-python consumed and committed in its own group")


def after():
    c = consumer("g1")
    c.subscribe(["events"])
    per_partition = RECORDS // 4
    want = (per_partition - FIRST_READ - 100) * 4
    seen = []
    deadline = time.time() + 60
    while len(seen) < want and time.time() < deadline:
        msg = c.poll(0.2)
        if msg is not None and msg.error() is None:
            seen.append((msg.partition(), msg.offset()))
    check(len(seen), want, "records after the committed offsets")
    check(min(o for _, o in seen), FIRST_READ + 100, "first offset read after the restart")
    check(len(set(seen)), want, "distinct records")
    print("ok after a restart the group resumed from its committed offsets")
    c.close()

    from kafka import KafkaConsumer

    kc = KafkaConsumer(
        "events",
        bootstrap_servers=BROKER,
        group_id="g2",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    leftover = [m for m in kc]
    check(leftover, [], "the kafka-python group has nothing left after its commit")
    kc.close()
    print("ok the kafka-python group resumed at the end")


if PHASE == "before":
    before()
else:
    after()
