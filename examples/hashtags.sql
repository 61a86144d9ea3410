-- Trending hashtags. Load tweets first:  weir gen tweets --events 200000
-- then:  psql -h 127.0.0.1 -p 5433 -U weir weir -f examples/hashtags.sql

-- Counts per hashtag over 1-minute windows sliding every 5 seconds.
CREATE MATERIALIZED VIEW hashtag_counts AS
  SELECT hashtag, window_start, window_end, COUNT(*) AS n
  FROM HOP(tweets, ts, INTERVAL '5' SECOND, INTERVAL '1' MINUTE)
  GROUP BY hashtag, window_start, window_end;

-- Each hashtag against its count in the window 5 seconds before.
CREATE MATERIALIZED VIEW hashtag_trends AS
  SELECT cur.hashtag, cur.window_end, cur.n, prev.n AS previous, cur.n - prev.n AS change
  FROM hashtag_counts cur JOIN hashtag_counts prev
    ON cur.hashtag = prev.hashtag AND cur.window_start = prev.window_start + INTERVAL '5' SECOND;

-- The top hashtags of the newest closed window (order and limit when reading a view).
SELECT hashtag, n
FROM hashtag_counts
WHERE window_end = (SELECT max(window_end) FROM hashtag_counts)
ORDER BY n DESC, hashtag
LIMIT 5;

-- The fastest risers in that window.
SELECT hashtag, previous, n, change
FROM hashtag_trends
WHERE window_end = (SELECT max(window_end) FROM hashtag_trends)
ORDER BY change DESC, hashtag
LIMIT 5;
