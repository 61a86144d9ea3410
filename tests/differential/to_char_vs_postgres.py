#!/usr/bin/env python3
"""Compares Weir's to_char(timestamp, template) with a real PostgreSQL server's.

Usage: start Weir and PostgreSQL, then
    python3 tests/differential/to_char_vs_postgres.py WEIR_PORT PG_PORT [PG_USER]
Prints each template and timestamp whose results differ, then a count.
"""
import itertools
import subprocess
import sys

WEIR_PORT, PG_PORT = sys.argv[1], sys.argv[2]
PG_USER = sys.argv[3] if len(sys.argv) > 3 else "postgres"
TEMPLATES = ["YYYY-MM-DD HH24:MI:SS", "yyyy-mm-dd hh24:mi:ss.ms", "HH12:MI AM", "HH:MI pm", "Day, DD Month YYYY",
 "FMDay, FMDD FMMonth YYYY", "Dy Mon DY MON dy mon", "DDDth Q WW IW ID D", "US FF3 SSSS", '"Week" IW "of" IYYY',
 "Y,YYY CC J RM", "FMDDth FMMMth", "DAY MONTH day month", "a.m. P.M. am PM", "YYY YY Y", "IYY IY I", "FF1 FF2 FF4 FF5 FF6",
 "HH24MISS", "DDTH ddth", "FMHH12", "SSSSS", "W", "rm", "FMRM", "TMDay", "YYYY\\\\MM", "MI:SS FX", "\"quoted \\\" text\"",
 "Month-Mon", "FMMonth", "CCth", "Q-th", "IDDD", "BC AD b.c. a.d.", "HH12 A.M.", "FMSS", "MS", "US", "spth", "DDSP"]
STAMPS = ["2026-03-07 08:05:09.012345", "2026-01-02 00:00:00", "2024-12-30 23:59:59.999999", "2021-01-03 12:00:00.5", "1999-11-11 13:01:02.000001"]
def run(port, user, db, sql):
    r = subprocess.run(["psql","-X","-At","-h","127.0.0.1","-p",str(port),"-U",user,db,"-c",sql], capture_output=True, text=True)
    return (r.stdout.rstrip("\n") if r.returncode == 0 else "ERROR: " + r.stderr.strip().splitlines()[0] if r.stderr.strip() else "ERROR")
diffs = 0; total = 0
for t, s in itertools.product(TEMPLATES, STAMPS):
    q = "SELECT to_char(TIMESTAMP '%s', '%s')" % (s, t.replace("'", "''"))
    pg = run(PG_PORT, PG_USER, "postgres", q)
    weir = run(WEIR_PORT, "weir", "weir", q)
    total += 1
    if pg != weir:
        diffs += 1
        print(repr(t), s, "\n   pg:  ", repr(pg), "\n   weir:", repr(weir))
print(f"{diffs} of {total} differ")
