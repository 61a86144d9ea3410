-- The five-minute tour (README): a stream, a continuous TUMBLE query, and batch queries.
CREATE STREAM clicks (user_id BIGINT, url TEXT, ts TIMESTAMP,
                      WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
  WITH (partitions = 4, key = 'user_id');
INSERT INTO clicks VALUES (1, '/a', '2026-01-01 00:00:01'), (2, '/b', '2026-01-01 00:00:30');
CREATE MATERIALIZED VIEW clicks_per_min AS
  SELECT window_start, window_end, user_id, COUNT(*) AS clicks
  FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE)
  GROUP BY window_start, window_end, user_id;
INSERT INTO clicks VALUES (1, '/c', '2026-01-01 00:01:10');
SELECT * FROM clicks_per_min ORDER BY window_start, user_id;   -- closed windows only
SELECT count(*) FROM clicks;                                   -- ad-hoc batch query over the log
SHOW STREAMS;
SHOW MATERIALIZED VIEWS;
