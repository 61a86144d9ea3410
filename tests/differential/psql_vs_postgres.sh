#!/bin/bash
# psql_vs_postgres.sh WEIR_PORT PG_PORT [PG_USER]: psql's aligned output of simple statements, Weir against a real
# PostgreSQL server; prints each statement whose output differs, then a count.
stmts=(
"SELECT 1"
"SELECT 1 + 1"
"SELECT 'a' || 'b'"
"SELECT TIMESTAMP '2026-01-01 00:00:00'"
"SELECT TIMESTAMP '2026-01-01 12:34:56.789'"
"SELECT 1.5::numeric"
"SELECT true, false"
"SELECT NULL"
"SELECT CAST(1 AS smallint)"
"SELECT 10 / 3"
"SELECT 10.0 / 3"
"SELECT INTERVAL '1 day'"
"SELECT DATE '2026-01-01'"
"SELECT 'x'::text AS name"
"SELECT count(*) FROM (VALUES (1), (2)) t(x)"
"SELECT x FROM (VALUES (1), (2)) t(x) ORDER BY x"
"SELECT 1 AS a, 2 AS b"
"SELECT upper('abc')"
"SELECT length('abc')"
"SELECT round(2.5)"
"SELECT 0.1::float8 + 0.2"
"SELECT 1e10::float8"
"SELECT sum(x) FROM (VALUES (1), (2)) t(x)"
"SELECT avg(x) FROM (VALUES (1), (2)) t(x)"
"SELECT x, x * 2 FROM (VALUES (1), (2)) t(x)"
"SELECT CAST('2026-01-01' AS TIMESTAMP) + INTERVAL '1 hour'"
"SELECT extract(year FROM TIMESTAMP '2026-03-07 00:00:00')"
"SELECT 'it''s'"
"SELECT coalesce(NULL, 3)"
"SELECT 5 % 3, -7 / 2"
)
differ=0
for s in "${stmts[@]}"; do
  w=$(psql -X -h 127.0.0.1 -p $1 -U weir weir -c "$s" 2>&1)
  p=$(psql -X -h 127.0.0.1 -p $2 -U ${3:-postgres} postgres -c "$s" 2>&1)
  if [ "$w" != "$p" ]; then
    differ=$((differ+1)); echo "=== $s"; diff <(echo "$p") <(echo "$w") | sed 's/^</  pg  /; s/^>/  weir/' | grep -v "^---\|^[0-9]"
  fi
done
echo "$differ of ${#stmts[@]} differ"
