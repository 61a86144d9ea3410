-- Nexmark q18 as the nexmark/nexmark repository publishes it for Flink SQL
-- (nexmark-flink/src/main/resources/queries/q18.sql at 6b3646c, Apache-2.0), with the
-- INSERT INTO its blackhole sink replaced by a materialized view with the sink's columns.

CREATE MATERIALIZED VIEW nexmark_q18 (auction, bidder, price, channel, url, `dateTime`, extra) AS
SELECT auction, bidder, price, channel, url, `dateTime`, extra
 FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY `dateTime` DESC) AS rank_number
       FROM bid)
 WHERE rank_number <= 1;
