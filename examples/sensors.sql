-- Sensor anomalies. Load readings first:  weir gen sensors --events 200000
-- then:  psql -h 127.0.0.1 -p 5433 -U weir weir -f examples/sensors.sql

-- Readings cleaned in flight: impossible values dropped.
CREATE MATERIALIZED VIEW clean_readings AS
  SELECT device_id, reading, ts FROM sensors WHERE reading BETWEEN -40 AND 150;

-- Rolling statistics per device over 1-minute windows sliding every 10 seconds.
CREATE MATERIALIZED VIEW device_stats AS
  SELECT device_id, window_start, window_end, COUNT(*) AS readings,
         AVG(reading) AS mean, stddev(reading) AS sd, MAX(reading) AS peak
  FROM HOP(clean_readings, ts, INTERVAL '10' SECOND, INTERVAL '1' MINUTE)
  GROUP BY device_id, window_start, window_end;

-- Windows whose peak stands far out from the device's mean: a spike (z-score above 3).
SELECT device_id, window_start, round(mean, 2) AS mean, round(peak, 2) AS peak,
       round((peak - mean) / sd, 1) AS z
FROM device_stats
WHERE sd > 0 AND (peak - mean) / sd > 3
ORDER BY z DESC, device_id LIMIT 5;

-- Event rates per device: readings per window, the quietest devices first (dropouts).
SELECT device_id, MIN(readings) AS fewest_per_window
FROM device_stats GROUP BY device_id ORDER BY fewest_per_window, device_id LIMIT 5;
