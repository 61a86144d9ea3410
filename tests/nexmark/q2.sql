-- Nexmark q2 as the nexmark/nexmark repository publishes it for Flink SQL
-- (nexmark-flink/src/main/resources/queries/q2.sql at 6b3646c, Apache-2.0), with the
-- INSERT INTO its blackhole sink replaced by a materialized view with the sink's columns.

CREATE MATERIALIZED VIEW nexmark_q2 (auction, price) AS
SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0;
