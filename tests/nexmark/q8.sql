-- Nexmark q8 as the nexmark/nexmark repository publishes it for Flink SQL
-- (nexmark-flink/src/main/resources/queries/q8.sql at 6b3646c, Apache-2.0), with the
-- INSERT INTO its blackhole sink replaced by a materialized view with the sink's columns.

CREATE MATERIALIZED VIEW nexmark_q8 (id, name, stime) AS
SELECT P.id, P.name, P.starttime
FROM (
  SELECT id, name,
        window_start AS starttime,
        window_end AS endtime
  FROM TABLE(
            TUMBLE(TABLE person, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
  GROUP BY id, name, window_start, window_end
) P
JOIN (
  SELECT seller,
        window_start AS starttime,
        window_end AS endtime
  FROM TABLE(
        TUMBLE(TABLE auction, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
  GROUP BY seller, window_start, window_end
) A
ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime;
