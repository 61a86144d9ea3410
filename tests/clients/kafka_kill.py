"""An idempotent confluent-kafka producer that keeps going while Weir is killed and restarted.

Run by tests/e2e.rs as `kafka_kill.py KAFKA_PORT RECORDS DELIVERED_FILE`: produces RECORDS
JSON records with ids 0.. into stream `orders` (acks=all, enable.idempotence, retrying until
delivered) and writes the id of every record whose delivery report said delivered to
DELIVERED_FILE, one per line. Exits non-zero if any record failed for good.
"""

import json
import sys

from confluent_kafka import Producer

KAFKA_PORT, RECORDS, OUT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

failed = []
with open(OUT, "w") as out:

    def report(err, msg):
        if err is not None:
            failed.append(str(err))
        else:
            out.write(msg.key().decode() + "\n")

    p = Producer(
        {
            "bootstrap.servers": f"127.0.0.1:{KAFKA_PORT}",
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": 120000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
        }
    )
    for i in range(RECORDS):
        while True:
            try:
                p.produce("orders", key=str(i), value=json.dumps({"id": i, "amount": i % 97}),
                          callback=report)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(120)
    out.flush()
if left or failed:
    print(f"not delivered: {left} left, failures {failed[:3]}", file=sys.stderr)
    sys.exit(1)
print(f"ok produced {RECORDS}")
