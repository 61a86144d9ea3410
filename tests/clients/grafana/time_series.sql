SELECT
  floor(extract(epoch from ts)/60)*60 AS "time",
  count(*) AS "clicks"
FROM clicks
WHERE
  ts BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-01T01:00:00Z'
GROUP BY 1
ORDER BY 1
