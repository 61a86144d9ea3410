-- Nexmark q6 as the nexmark/nexmark repository publishes it for Flink SQL
-- (nexmark-flink/src/main/resources/queries/q6.sql at 6b3646c, Apache-2.0), with the
-- INSERT INTO its blackhole sink replaced by a materialized view with the sink's columns, and
-- corrected: as published, its WHERE reads `rownum`, a column of its own SELECT, which is
-- invalid in Flink too; here the SELECT that numbers the rows is a subquery of the one that
-- keeps the first, and nothing else changed.

CREATE MATERIALIZED VIEW nexmark_q6 (seller, avg_price) AS
SELECT
    Q.seller,
    AVG(Q.price) OVER
        (PARTITION BY Q.seller ORDER BY Q.`dateTime` ROWS BETWEEN 10 PRECEDING AND CURRENT ROW)
FROM (
    SELECT * FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY A.id, A.seller ORDER BY B.price DESC) AS rownum
    FROM (SELECT A.id, A.seller, B.price, B.`dateTime`
        FROM auction AS A,
            bid AS B
        WHERE A.id = B.auction
            and B.`dateTime` between A.`dateTime` and A.expires)
    ) WHERE rownum <= 1
) AS Q;
