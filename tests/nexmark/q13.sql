-- Nexmark q13 as the nexmark/nexmark repository publishes it for Flink SQL
-- (nexmark-flink/src/main/resources/queries/q13.sql at 6b3646c, Apache-2.0), with the
-- INSERT INTO its blackhole sink replaced by a materialized view with the sink's columns.

CREATE TABLE side_input (
  key BIGINT,
  `value` VARCHAR
) WITH (
  'connector.type' = 'filesystem',
  'connector.path' = 'file://${FLINK_HOME}/data/side_input.txt',
  'format.type' = 'csv'
);

CREATE MATERIALIZED VIEW nexmark_q13 (auction, bidder, price, `dateTime`, `value`) AS
SELECT
    B.auction,
    B.bidder,
    B.price,
    B.`dateTime`,
    S.`value`
FROM (SELECT *, PROCTIME() as p_time FROM bid) B
JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S
ON mod(B.auction, 10000) = S.key;
