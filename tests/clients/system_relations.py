"""Reads every system relation through psycopg 3, in text and in binary, and prints a line
per relation: `ok NAME ROWS COLUMNS`. Usage: system_relations.py PORT VIEW"""

import sys

import psycopg

port, view = sys.argv[1], sys.argv[2]
RELATIONS = [
    "weir_view_progress",
    "weir_operators",
    "weir_watermarks",
    "weir_checkpoints",
    "weir_sessions",
    "weir_connectors",
    "weir_late_events",
    f"weir_why('{view}')",
]

with psycopg.connect(f"host=127.0.0.1 port={port} user=weir dbname=weir") as conn:
    for relation in RELATIONS:
        seen = []
        for binary in (False, True):
            with conn.cursor(binary=binary) as cur:
                cur.execute(f"SELECT * FROM {relation}")
                rows = cur.fetchall()
                names = [d.name for d in cur.description]
                seen.append((len(rows) > 0, names))
        assert seen[0][1] == seen[1][1], seen
        print("ok", relation, int(seen[0][0] and seen[1][0]), ",".join(seen[0][1]))
