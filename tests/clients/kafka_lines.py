"""Produces or consumes the lines of a topic with confluent-kafka, for brokers that kcat's older
librdkafka cannot talk to (tansu).

Run by tests/e2e.rs as `kafka_lines.py produce BROKER TOPIC` (stdin lines `key:value`, sent
with acks=all; exits non-zero unless every one is delivered) or `kafka_lines.py consume BROKER
TOPIC` (prints the value of every record from the beginning of every partition, one per line,
until the end of each).
"""

import sys

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

MODE, BROKER, TOPIC = sys.argv[1], sys.argv[2], sys.argv[3]

if MODE == "produce":
    failed = []

    def report(err, _msg):
        if err is not None:
            failed.append(str(err))

    p = Producer({"bootstrap.servers": BROKER, "acks": "all"})
    for line in sys.stdin:
        key, _, value = line.rstrip("\n").partition(":")
        p.produce(TOPIC, key=key, value=value, on_delivery=report)
        p.poll(0)
    left = p.flush(60)
    if failed or left:
        sys.exit(f"not delivered: {left} pending, failures {failed[:3]}")
elif MODE == "consume":
    c = Consumer(
        {
            "bootstrap.servers": BROKER,
            "group.id": "weir-tests",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    partitions = c.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
    c.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in partitions])
    ended = set()
    while len(ended) < len(partitions):
        m = c.poll(10)
        if m is None:
            sys.exit("no record or end of partition within 10 s")
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                ended.add(m.partition())
                continue
            raise KafkaException(m.error())
        print(m.value().decode())
    c.close()
else:
    sys.exit(f"unknown mode {MODE}")
