"""Kafka transactions against Weir with confluent-kafka (librdkafka).

Run by tests/e2e.rs as `kafka_txn.py KAFKA_PORT`, with streams `orders` and `totals`
(id BIGINT, amount BIGINT; JSON) created beforehand, `orders` holding ids 0..99. Checks, and
exits non-zero with a reason when one fails:
- an aborted transaction's records are never read by a read_committed consumer;
- a committed transaction's records are, once, and consume-transform-produce (records read
  from `orders`, written to `totals`, the consumer's offsets sent with
  send_offsets_to_transaction) commits the group's offsets with the records;
- a second producer with the same transactional.id fences the first, whose commit fails.
Prints `ok` lines as it goes. `kafka_txn.py KAFKA_PORT open` instead writes 50 records in a
transaction, prints `ok open` once they are sent, and waits to be killed with it open.
`kafka_txn.py KAFKA_PORT restart` checks that producers go on across a `kill -9` and restart
of Weir, which the test does when the script prints `ok before` and then writes a line to its
standard input: producer A committed a transaction before and commits the next one after,
without calling init_transactions again; producer B had a transaction open, which the restart
aborted, and its commit fails (never reported as committed); a new producer for B's id works.
"""

import json
import sys

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

PORT = int(sys.argv[1])
BOOT = f"127.0.0.1:{PORT}"
OPEN = len(sys.argv) > 2 and sys.argv[2] == "open"
RESTART = len(sys.argv) > 2 and sys.argv[2] == "restart"


def producer(tid):
    p = Producer({"bootstrap.servers": BOOT, "transactional.id": tid,
                  "transaction.timeout.ms": 60000})
    p.init_transactions(30)
    return p


def consumer(group, topic):
    c = Consumer({"bootstrap.servers": BOOT, "group.id": group,
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    return c


def poll_messages(c, want=None, quiet_polls=6):
    """Messages from `c` until `want` of them, or `quiet_polls` polls in a row bring none."""
    got, idle = [], 0
    while idle < quiet_polls and (want is None or len(got) < want):
        m = c.poll(0.5)
        if m is None:
            idle += 1
            continue
        if m.error():
            raise SystemExit(f"consumer error: {m.error()}")
        got.append(m)
        idle = 0
    return got


def read_all(topic, group):
    c = consumer(group, topic)
    got = [json.loads(m.value()) for m in poll_messages(c)]
    c.close()
    return got


if OPEN:
    p = producer("weir-txn-open")
    p.begin_transaction()
    for i in range(7000, 7050):
        p.produce("totals", key=str(i), value=json.dumps({"id": i, "amount": 1}))
    p.flush(30)
    print("ok open", flush=True)
    import time
    time.sleep(600)
    sys.exit(0)

if RESTART:
    a = producer("weir-txn-restart-a")
    a.begin_transaction()
    for i in range(9000, 9010):
        a.produce("totals", key=str(i), value=json.dumps({"id": i, "amount": 1}))
    a.commit_transaction(30)
    b = producer("weir-txn-restart-b")
    b.begin_transaction()
    for i in range(9100, 9110):
        b.produce("totals", key=str(i), value=json.dumps({"id": i, "amount": 1}))
    b.flush(30)
    print("ok before", flush=True)
    sys.stdin.readline()
    a.begin_transaction()
    for i in range(9010, 9020):
        a.produce("totals", key=str(i), value=json.dumps({"id": i, "amount": 1}))
    a.commit_transaction(60)
    print("ok committed after the restart", flush=True)
    try:
        b.commit_transaction(30)
        raise SystemExit("a transaction the restart aborted was reported committed")
    except KafkaException as e:
        print(f"ok the aborted transaction's commit failed: {e.args[0].name()}", flush=True)
    b2 = producer("weir-txn-restart-b")
    b2.begin_transaction()
    b2.produce("totals", key="9200", value=json.dumps({"id": 9200, "amount": 1}))
    b2.commit_transaction(30)
    ids = sorted(t["id"] for t in read_all("totals", "checker-restart") if t["id"] >= 9000)
    if ids != list(range(9000, 9020)) + [9200]:
        raise SystemExit(f"after the restart totals holds {ids}")
    print("ok read after the restart", flush=True)
    sys.exit(0)

p = producer("weir-txn-a")
p.begin_transaction()
for i in range(1000, 1050):
    p.produce("totals", key=str(i), value=json.dumps({"id": i, "amount": -1}))
p.flush(30)
p.abort_transaction(30)
print("ok aborted")

# Consume-transform-produce: read orders, write totals, commit the group's offsets with them.
c = consumer("transformer", "orders")
seen = poll_messages(c, want=100, quiet_polls=40)
if len(seen) != 100:
    raise SystemExit(f"read {len(seen)} of 100 orders")
p.begin_transaction()
for m in seen:
    o = json.loads(m.value())
    p.produce("totals", key=str(o["id"]), value=json.dumps({"id": o["id"], "amount": 2 * o["amount"]}))
p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
p.commit_transaction(30)
c.close()
print("ok committed")

totals = read_all("totals", "checker")
ids = sorted(t["id"] for t in totals)
if ids != list(range(100)):
    raise SystemExit(f"totals holds ids {ids[:5]}... ({len(ids)}), not 0..99 once each")
print("ok read_committed")

committed = Consumer({"bootstrap.servers": BOOT, "group.id": "transformer"}).committed(
    [TopicPartition("orders", p_) for p_ in range(4)], 10)
if sum(tp.offset for tp in committed if tp.offset >= 0) < 100:
    raise SystemExit(f"the transaction's offsets were not committed: {committed}")
print("ok offsets")

# A second producer with the same transactional.id fences the first.
p.begin_transaction()
p.produce("totals", key="5000", value=json.dumps({"id": 5000, "amount": 1}))
p.flush(30)
p2 = producer("weir-txn-a")
try:
    p.commit_transaction(30)
    raise SystemExit("the fenced producer committed")
except KafkaException as e:
    err = e.args[0]
    if not (err.fatal() or "fenced" in str(err).lower() or "epoch" in str(err).lower()):
        raise SystemExit(f"the fenced producer failed otherwise: {err}")
print("ok fenced")
p2.begin_transaction()
p2.produce("totals", key="6000", value=json.dumps({"id": 6000, "amount": 1}))
p2.commit_transaction(30)
ids = sorted(t["id"] for t in read_all("totals", "checker2"))
if ids != list(range(100)) + [6000]:
    raise SystemExit(f"after fencing totals holds {ids[-5:]} ({len(ids)})")
print("ok after fencing")
