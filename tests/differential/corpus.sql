-- Statements run through psql against Weir and a real PostgreSQL by tests/postgres.rs; their output must
-- be equal byte for byte, except for those in accepted.txt. One statement per line.
-- Integers: literals, casts, arithmetic, overflow
SELECT 1
SELECT -1
SELECT 2147483647
SELECT 2147483648
SELECT 9223372036854775807
SELECT CAST(1 AS smallint)
SELECT CAST(1 AS integer)
SELECT CAST(1 AS bigint)
SELECT 1::int2, 2::int4, 3::int8
SELECT '42'::int
SELECT ' 42 '::int
SELECT 'x'::int
SELECT 99999::smallint
SELECT 1 + 1
SELECT 7 - 10
SELECT 6 * 7
SELECT 10 / 3
SELECT -7 / 2
SELECT 5 % 3
SELECT -5 % 3
SELECT 1 / 0
SELECT 1 % 0
SELECT 2147483647 + 1
SELECT 9223372036854775807 + 1
SELECT abs(-5)
SELECT 2 ^ 10
SELECT 7 & 3, 7 | 8, 5 # 1
SELECT 1 << 4, 256 >> 2
-- Numeric
SELECT 1.5
SELECT 1.5::numeric
SELECT 1.50::numeric
SELECT 0.1 + 0.2
SELECT 10.0 / 3
SELECT 1.5 * 2
SELECT CAST(2.345 AS numeric(5,2))
SELECT CAST(123.456 AS numeric(10,3))
SELECT '3.14159'::numeric
SELECT 'abc'::numeric
SELECT round(2.5)
SELECT round(-2.5)
SELECT round(3.14159, 2)
SELECT trunc(3.789)
SELECT trunc(3.789, 1)
SELECT ceil(1.2), floor(1.8)
SELECT ceil(-1.2), floor(-1.8)
SELECT 1e3
SELECT 12345678901234567890
-- Floating point
SELECT 1.5::float8
SELECT 0.1::float8 + 0.2
SELECT 1e10::float8
SELECT 1e16::float8
SELECT 1e-5::float8
SELECT 1.0::float8 / 3
SELECT 2.5::real
SELECT 'Infinity'::float8
SELECT '-Infinity'::float8
SELECT 'NaN'::float8
SELECT 1::float8 / 0
SELECT sqrt(2::float8)
SELECT sqrt(16::float8)
SELECT power(2::float8, 10)
SELECT exp(1::float8)
SELECT ln(10::float8)
SELECT pi()
SELECT 100::float8
SELECT 123456789012::float8
SELECT -0.0::float8
-- Booleans
SELECT true, false
SELECT true AND false, true OR false, NOT true
SELECT 1 < 2, 2 <= 1, 3 = 3, 3 <> 4
SELECT 'yes'::boolean
SELECT 't'::boolean, 'off'::boolean
SELECT 'maybe'::boolean
SELECT NULL::boolean IS NULL
SELECT true IS TRUE, NULL IS NOT TRUE
-- Text
SELECT 'hello'
SELECT 'it''s'
SELECT 'a' || 'b'
SELECT 'a' || NULL
SELECT 'x'::text AS name
SELECT 'abc'::varchar
SELECT CAST('abc' AS varchar(2))
SELECT ''
SELECT 'multi word text'
SELECT upper('abc'), lower('ABC')
SELECT length('abc')
SELECT char_length('héllo')
SELECT octet_length('héllo')
SELECT substr('hello', 2, 3)
SELECT substring('hello' FROM 2 FOR 3)
SELECT substring('hello', 2)
SELECT replace('hello', 'l', 'L')
SELECT trim('  x  ')
SELECT ltrim('  x  '), rtrim('  x  ')
SELECT btrim('xxhixx', 'x')
SELECT lpad('7', 3, '0'), rpad('7', 3, '*')
SELECT position('l' IN 'hello')
SELECT strpos('hello', 'lo')
SELECT split_part('a,b,c', ',', 2)
SELECT concat('a', 1, NULL, 'b')
SELECT concat_ws('-', 'a', 'b', NULL, 'c')
SELECT left('hello', 2), right('hello', 2)
SELECT repeat('ab', 3)
SELECT reverse('abc')
SELECT initcap('hello world')
SELECT starts_with('hello', 'he')
SELECT md5('abc')
SELECT ascii('A'), chr(66)
SELECT translate('hello', 'el', 'ip')
SELECT 'abc' LIKE 'a%', 'abc' LIKE '_b_', 'abc' NOT LIKE 'b%'
SELECT 'ABC' ILIKE 'a%'
SELECT 'abc' ~ 'b+'
SELECT regexp_replace('a1b2', '[0-9]', 'X', 'g')
SELECT 'abc' < 'abd'
SELECT to_hex(255)
-- Dates, times, timestamps, intervals
SELECT DATE '2026-01-01'
SELECT '2026-03-07'::date
SELECT DATE '2026-01-31' + 1
SELECT DATE '2026-03-01' - DATE '2026-01-01'
SELECT '2026-02-30'::date
SELECT TIMESTAMP '2026-01-01 00:00:00'
SELECT TIMESTAMP '2026-01-01 12:34:56.789'
SELECT TIMESTAMP '2026-01-01 00:00:00.5'
SELECT TIMESTAMP '2026-01-01 00:00:00.123456'
SELECT '2026-01-01 10:00'::timestamp
SELECT CAST('2026-01-01' AS TIMESTAMP) + INTERVAL '1 hour'
SELECT TIMESTAMP '2026-01-02 00:00:00' - TIMESTAMP '2026-01-01 00:00:00'
SELECT TIMESTAMP '2026-01-01 00:00:00' - INTERVAL '1 day'
SELECT TIMESTAMPTZ '2026-01-01 00:00:00+00'
SELECT TIMESTAMPTZ '2026-01-01 12:00:00+02'
SET TimeZone = 'Europe/Paris'; SELECT TIMESTAMPTZ '2026-01-01 00:00:00+00', TIMESTAMPTZ '2026-07-01 00:00:00+00'
SET TIME ZONE 'Asia/Kolkata'; SELECT TIMESTAMPTZ '2026-01-01 00:00:00+00'
SET TimeZone = 'America/St_Johns'; SELECT ARRAY[TIMESTAMPTZ '2026-01-01 00:00:00+00', NULL]
SET TimeZone = 'Mars/Olympus'
SELECT TIME '12:34:56'
SELECT TIME '12:34:56.5'
SELECT INTERVAL '1 day'
SELECT INTERVAL '1 day 02:03:04'
SELECT INTERVAL '90 minutes'
SELECT INTERVAL '2 hours'
SELECT INTERVAL '1 month'
SELECT INTERVAL '1 year 2 months'
SELECT INTERVAL '0.5 seconds'
SELECT INTERVAL '-1 day'
SELECT INTERVAL '10' SECOND
SELECT INTERVAL '1 day' * 2
SELECT extract(year FROM TIMESTAMP '2026-03-07 00:00:00')
SELECT extract(hour FROM TIMESTAMP '2026-03-07 13:45:00')
SELECT extract(epoch FROM TIMESTAMP '2026-01-01 00:00:00')
SELECT extract(dow FROM DATE '2026-03-07')
SELECT date_part('month', TIMESTAMP '2026-03-07 00:00:00')
SELECT date_trunc('hour', TIMESTAMP '2026-03-07 13:45:12')
SELECT date_trunc('day', TIMESTAMP '2026-03-07 13:45:12')
SELECT date_trunc('month', TIMESTAMP '2026-03-07 13:45:12')
SELECT to_char(TIMESTAMP '2026-03-07 13:45:12', 'YYYY-MM-DD HH24:MI:SS')
SELECT to_char(TIMESTAMP '2026-03-07 13:45:12', 'Mon DD, YYYY')
SELECT to_char(TIMESTAMP '2026-03-07 13:45:12', 'FMDay')
SELECT make_date(2026, 3, 7)
SELECT to_timestamp(0)
SELECT '2026-01-01'::timestamp < '2026-01-02'::timestamp
SELECT 'not a date'::date
SELECT '2026-01-01T09:05'::timestamp, TIMESTAMPTZ '2026-01-01 10:00+02'
SELECT INTERVAL '-01:30', '2 days 00:00:01.5'::interval, INTERVAL '1 year 2 mons 3 days 04:05:06'
SELECT TIMESTAMP '2026-01-01 00:00:00' - TIMESTAMP '2026-01-02 12:00:00'
SELECT CAST(DATE '2026-01-01' AS TIMESTAMP)
SELECT CAST(TIMESTAMP '2026-01-01 10:00:00' AS DATE)
-- Bytea, arrays, JSON
SELECT '\x0102ff'::bytea
SELECT 'abc'::bytea
SELECT ARRAY[1, 2, 3]
SELECT ARRAY['a', 'b']
SELECT ARRAY[1, NULL, 3]
SELECT ARRAY[1.5, 2.5]
SELECT ARRAY[true, false]
SELECT (ARRAY[10, 20, 30])[2]
SELECT array_length(ARRAY[1, 2, 3], 1)
SELECT cardinality(ARRAY[1, 2, 3])
SELECT '{"a": 1}'::json
SELECT '{"a": 1, "b": [1, 2]}'::jsonb
-- NULLs
SELECT NULL
SELECT NULL::int
SELECT NULL::text
SELECT NULL = NULL
SELECT NULL IS NULL, 1 IS NULL
SELECT 1 + NULL
SELECT coalesce(NULL, 3)
SELECT coalesce(NULL, NULL, 'z')
SELECT nullif(1, 1), nullif(1, 2)
SELECT NULL IS DISTINCT FROM 1, NULL IS NOT DISTINCT FROM NULL
-- Conditional expressions
SELECT CASE WHEN 1 > 0 THEN 'pos' ELSE 'neg' END
SELECT CASE 2 WHEN 1 THEN 'one' WHEN 2 THEN 'two' END
SELECT CASE WHEN false THEN 1 END
SELECT greatest(1, 5, 3), least(1, 5, 3)
SELECT 3 BETWEEN 1 AND 5, 3 NOT BETWEEN 1 AND 2
SELECT 2 IN (1, 2, 3), 4 NOT IN (1, 2)
SELECT sign(-3), sign(0)
SELECT mod(10, 3)
SELECT gcd(12, 18), lcm(4, 6)
-- Column naming
SELECT 1 AS a, 2 AS b
SELECT 1 + 2
SELECT 'a' AS "Mixed Case"
SELECT upper('x') AS up
SELECT count(*) FROM (VALUES (1), (2)) t(x)
SELECT x, x * 2 FROM (VALUES (1), (2)) t(x)
SELECT x AS y FROM (VALUES (1)) t(x)
SELECT CAST(x AS bigint) FROM (VALUES (1)) t(x)
SELECT x::text FROM (VALUES (1)) t(x)
SELECT t.x FROM (VALUES (1)) t(x)
SELECT CASE WHEN x > 0 THEN 1 END FROM (VALUES (1)) t(x)
SELECT coalesce(x, 0) FROM (VALUES (1)) t(x)
SELECT -x FROM (VALUES (1)) t(x)
SELECT x IS NULL FROM (VALUES (1)) t(x)
SELECT (SELECT 1)
SELECT EXISTS (SELECT 1)
SELECT ARRAY[x] FROM (VALUES (1)) t(x)
-- Queries over VALUES, aggregates
SELECT x FROM (VALUES (1), (2)) t(x) ORDER BY x
SELECT x FROM (VALUES (3), (1), (2)) t(x) ORDER BY x DESC
SELECT x FROM (VALUES (1), (2), (3)) t(x) ORDER BY x LIMIT 2
SELECT x FROM (VALUES (1), (2), (3)) t(x) ORDER BY x LIMIT 1 OFFSET 1
SELECT x FROM (VALUES (1), (NULL), (2)) t(x) ORDER BY x
SELECT x FROM (VALUES (1), (NULL), (2)) t(x) ORDER BY x DESC
SELECT DISTINCT x FROM (VALUES (1), (1), (2)) t(x) ORDER BY x
SELECT sum(x) FROM (VALUES (1), (2)) t(x)
SELECT avg(x) FROM (VALUES (1), (2)) t(x)
SELECT avg(x) FROM (VALUES (1.5), (2.5)) t(x)
SELECT min(x), max(x) FROM (VALUES (3), (1), (2)) t(x)
SELECT count(x) FROM (VALUES (1), (NULL)) t(x)
SELECT count(DISTINCT x) FROM (VALUES (1), (1), (2)) t(x)
SELECT sum(x) FROM (VALUES (1.25), (2.5)) t(x)
SELECT sum(x) FROM (VALUES (1::float8), (2.5::float8)) t(x)
SELECT sum(x) FROM (VALUES (NULL::int)) t(x)
SELECT count(*) FROM (VALUES (1)) t(x) WHERE false
SELECT max(s) FROM (VALUES ('a'), ('c'), ('b')) t(s)
SELECT string_agg(s, ',' ORDER BY s) FROM (VALUES ('b'), ('a')) t(s)
SELECT array_agg(x ORDER BY x) FROM (VALUES (2), (1)) t(x)
SELECT bool_and(b), bool_or(b) FROM (VALUES (true), (false)) t(b)
SELECT k, count(*) FROM (VALUES ('a'), ('b'), ('a')) t(k) GROUP BY k ORDER BY k
SELECT k, sum(v) FROM (VALUES ('a', 1), ('b', 2), ('a', 3)) t(k, v) GROUP BY k ORDER BY k
SELECT k, count(*) FROM (VALUES ('a'), ('b'), ('a')) t(k) GROUP BY k HAVING count(*) > 1
SELECT stddev(x), variance(x) FROM (VALUES (1.0), (2.0), (3.0)) t(x)
SELECT x, row_number() OVER (ORDER BY x) FROM (VALUES (10), (20)) t(x)
SELECT a.x, b.y FROM (VALUES (1)) a(x) JOIN (VALUES (1, 'one')) b(x2, y) ON a.x = b.x2
SELECT * FROM (VALUES (1, 'a'), (2, 'b')) t(n, s)
SELECT 1 UNION SELECT 2 ORDER BY 1
SELECT 1 UNION ALL SELECT 1
-- Errors and their SQLSTATEs
SELECT nosuchcolumn FROM (VALUES (1)) t(x)
SELECT * FROM nosuchtable
SELECT nosuchfunction(1)
SELEC 1
SELECT 'a' + 1
SELECT CAST('2026-13-01' AS date)
SELECT x FROM (VALUES (1)) t(x) GROUP BY y
SELECT sum('a')
-- A plain table: DDL, \d, DML, reads
CREATE TABLE diff_t (id int PRIMARY KEY, name text NOT NULL, score bigint, ratio float8, at timestamp)
CREATE TABLE diff_t (id int PRIMARY KEY)
\d diff_t
INSERT INTO diff_t VALUES (1, 'one', 10, 0.5, '2026-01-01 00:00:00'), (2, 'two', NULL, NULL, NULL)
INSERT INTO diff_t VALUES (3, NULL, 1, 1, NULL)
SELECT * FROM diff_t ORDER BY id
SELECT id, name FROM diff_t WHERE score IS NULL
SELECT count(*), sum(score), avg(ratio) FROM diff_t
SELECT name, at FROM diff_t WHERE id = 1
SELECT upper(name) FROM diff_t ORDER BY 1
SELECT * FROM diff_t WHERE id = 99
UPDATE diff_t SET score = 20 WHERE id = 1
DELETE FROM diff_t WHERE id = 2
SELECT id, score FROM diff_t ORDER BY id
COPY diff_t TO STDOUT
COPY diff_t (id, name) TO STDOUT WITH (FORMAT csv, HEADER)
COPY diff_t TO STDOUT (FORMAT binary)
COPY (SELECT id, at FROM diff_t WHERE id = 1) TO STDOUT (FORMAT binary)
\dt
DROP TABLE diff_t
DROP TABLE diff_t
SELECT 1; SELECT 2
-- COPY (query) TO STDOUT in each format (binary: the bytes PostgreSQL writes)
COPY (SELECT 1 AS a, 'x,y' AS b, NULL::text AS c, 'tab	here' AS d) TO STDOUT
COPY (SELECT 1 AS a, 'x,y' AS b, NULL::text AS c, 'q"uote' AS d) TO STDOUT WITH (FORMAT csv, HEADER)
COPY (SELECT 1 AS a, 'x' AS b) TO STDOUT WITH (FORMAT csv, DELIMITER ';', NULL 'null', FORCE_QUOTE (b))
COPY (SELECT CAST(1 AS BIGINT), CAST(2 AS INT), CAST(3 AS SMALLINT), 1.5::float8, 'héllo'::text, true, NULL::bigint) TO STDOUT (FORMAT binary)
COPY (SELECT TIMESTAMP '2026-01-01 12:34:56.5', DATE '2026-03-07', CAST('\x00ff' AS BYTEA), CAST(12.34 AS NUMERIC(10,2)), TIMESTAMPTZ '2026-01-01 00:00:00+02', CAST(2.5 AS REAL)) TO STDOUT (FORMAT binary)
COPY (SELECT 1 AS a, 'x' AS b, NULL::text AS c) TO STDOUT WITH (FORMAT csv, FORCE_QUOTE *)
COPY (SELECT 1 AS a, 'x' AS b) TO STDOUT CSV FORCE QUOTE *
COPY (SELECT 1 AS a) TO STDOUT WITH (FORCE_QUOTE *)
COPY (SELECT 1) TO STDOUT (FORMAT binary, HEADER)
COPY (SELECT 1) TO STDOUT (FORMAT binary, DELIMITER ',')
