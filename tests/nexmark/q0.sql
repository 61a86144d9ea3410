-- Nexmark q0 as the nexmark/nexmark repository publishes it for Flink SQL
-- (nexmark-flink/src/main/resources/queries/q0.sql at 6b3646c, Apache-2.0), with the
-- INSERT INTO its blackhole sink replaced by a materialized view with the sink's columns.

CREATE MATERIALIZED VIEW nexmark_q0 (auction, bidder, price, `dateTime`, extra) AS
SELECT auction, bidder, price, `dateTime`, extra FROM bid;
