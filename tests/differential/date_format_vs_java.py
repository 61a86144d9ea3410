#!/usr/bin/env python3
"""Compares Weir's DATE_FORMAT (Flink's Java patterns) with java.time's DateTimeFormatter.

Usage: start Weir (weir serve; it listens on 127.0.0.1:5432 unless told otherwise), then
    javac -d /tmp tests/differential/DateFormat.java
    python3 tests/differential/date_format_vs_java.py [weir-port]
Prints each pattern and timestamp whose results differ, then a count. Pattern letters that
depend on a locale's calendar rules (G, w, e, c, ...) are refused by Weir and so differ.
"""
import itertools
import subprocess
import sys

PORT = sys.argv[1] if len(sys.argv) > 1 else "5432"
PATTERNS = ["yyyy-MM-dd", "HH:mm", "yyyy-MM-dd HH:mm:ss", "yy/M/d H:m:s S", "EEE, d MMM yyyy h:mm a",
            "EEEE MMMM QQQ D", "'at' HH 'o''clock' ''", "[yyyy]", "k K h", "SSSSSSSSS n", "SSS", "SS",
            "MMMMM", "LLL", "dd.MM.uuuu", "DDD", "w", "e", "c", "a", "hh 'h'", "Q QQ QQQQ", "yyyyy", "G",
            "u", "E EE EEEEE", "MM-dd'T'HH", "n N", "A", "HHmmss", "yyyy-MM-dd HH:mm:ss.SSS"]
STAMPS = ["2026-03-07 08:05:09.012345678", "2026-01-02 00:00:00", "2024-12-30 23:59:59.999999",
          "2021-01-03 12:00:00.5", "1999-11-11 13:01:02.000001"]

rows = list(itertools.product(STAMPS, PATTERNS))
java = subprocess.run(["java", "-cp", "/tmp", "DateFormat"],
                      input="\n".join(f"{s}\t{p}" for s, p in rows) + "\n",
                      capture_output=True, text=True, check=True).stdout.splitlines()
differ = 0
for (stamp, pattern), expected in zip(rows, java):
    sql = "SELECT DATE_FORMAT(TIMESTAMP '%s', '%s')" % (stamp, pattern.replace("'", "''"))
    r = subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-p", PORT, "-U", "weir", "weir", "-c", sql],
                       capture_output=True, text=True)
    got = r.stdout.rstrip("\n") if r.returncode == 0 else "ERROR: " + r.stderr.strip()
    if got != expected:
        differ += 1
        print(repr(pattern), stamp, "\n   java:", repr(expected), "\n   weir:", repr(got)[:160])
print(f"{differ} of {len(rows)} differ")
