-- Fraud detection on card payments. Load them first:  weir gen transactions --events 200000
-- then:  psql -h 127.0.0.1 -p 5433 -U weir weir -f examples/fraud.sql

-- Cards with many payments, or a large total, within a minute.
CREATE MATERIALIZED VIEW busy_cards AS
  SELECT card_id, window_start, COUNT(*) AS payments, SUM(amount) AS total
  FROM TUMBLE(transactions, ts, INTERVAL '1' MINUTE)
  GROUP BY card_id, window_start
  HAVING COUNT(*) > 12 OR SUM(amount) > 10000;

-- A card used in two countries within 10 minutes.
CREATE MATERIALIZED VIEW two_countries AS
  SELECT a.card_id, a.country AS first_country, b.country AS then_country, a.ts AS first_at, b.ts AS then_at
  FROM transactions a JOIN transactions b
    ON a.card_id = b.card_id AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '10' MINUTE
  WHERE a.country <> b.country;

-- Payments far above what the card usually spends (its average so far).
CREATE MATERIALIZED VIEW card_usual AS
  SELECT card_id, AVG(amount) AS usual, COUNT(*) AS payments FROM transactions GROUP BY card_id;

SELECT count(*) AS flagged_windows FROM busy_cards;
SELECT card_id, first_country, then_country FROM two_countries ORDER BY first_at, card_id LIMIT 5;
SELECT t.card_id, t.amount, round(u.usual, 2) AS usual
FROM transactions t JOIN card_usual u ON t.card_id = u.card_id
WHERE t.amount > 10 * u.usual AND u.payments > 3
ORDER BY t.amount DESC LIMIT 5;
