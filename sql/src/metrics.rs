//! Prometheus' text exposition format (version 0.0.4) of what runs: each view's progress and
//! each operator's counters, read when scraped, so that a dropped view is gone from the next
//! scrape.

use std::fmt::Write as _;

use crate::catalog::Registry;

/// One metric family being written: its samples follow its HELP and TYPE lines.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Self { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// A label value with `\`, `"` and line breaks escaped, as the format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every metric, now.
pub fn prometheus_text(registry: &Registry) -> String {
    let mut out = String::new();
    let views = registry.queries();
    type ViewMetric = (&'static str, &'static str, &'static str);
    const VIEW_METRICS: [ViewMetric; 6] = [
        (
            "weir_view_events_processed_total",
            "counter",
            "Events the view's query has processed.",
        ),
        (
            "weir_view_backlog_events",
            "gauge",
            "Events committed to the view's sources and not processed yet.",
        ),
        ("weir_view_rows", "gauge", "Rows in the view."),
        (
            "weir_view_late_events_total",
            "counter",
            "Events that came after their window had closed.",
        ),
        (
            "weir_view_watermark_seconds",
            "gauge",
            "The view's watermark, in seconds since the epoch.",
        ),
        (
            "weir_view_failed",
            "gauge",
            "1 if the view's query stopped on an error.",
        ),
    ];
    // Each view's values, read once: processed, backlog, rows, late, watermark, failed.
    let values: Vec<[Option<f64>; 6]> = views
        .iter()
        .map(|v| {
            let p = v.table.progress();
            let processed = v.table.read();
            let committed: u64 = v.source_offsets().iter().sum();
            [
                Some(processed as f64),
                Some(committed.saturating_sub(processed) as f64),
                Some(v.table.num_rows() as f64),
                Some(p.late_rows as f64),
                p.watermark_ns.map(|w| w as f64 / 1e9),
                Some(f64::from(u8::from(p.error.is_some()))),
            ]
        })
        .collect();
    for (m, (name, kind, help)) in VIEW_METRICS.iter().enumerate() {
        let mut family = Family::new(&mut out, name, kind, help);
        for (v, values) in views.iter().zip(&values) {
            if let Some(value) = values[m] {
                family.sample(name, &[("view", &v.def.name)], value);
            }
        }
    }
    operator_metrics(&mut out, &views);
    connector_metrics(&mut out, registry);
    out
}

/// Each Kafka connector's records and lag (as `weir_connectors` has them).
fn connector_metrics(out: &mut String, registry: &Registry) {
    let connectors: Vec<_> = registry
        .connectors()
        .into_iter()
        .map(|c| (c.stream().to_string(), c.kind(), c.status()))
        .collect();
    let mut family = Family::new(
        out,
        "weir_connector_records_total",
        "counter",
        "Records a source appended or a sink delivered since it started.",
    );
    for (stream, kind, s) in &connectors {
        family.sample(
            "weir_connector_records_total",
            &[("stream", stream), ("kind", kind)],
            s.records as f64,
        );
    }
    let mut family = Family::new(
        out,
        "weir_connector_lag",
        "gauge",
        "Records of the external topic not yet read (source), or rows of the stream not yet \
         delivered (sink).",
    );
    for (stream, kind, s) in &connectors {
        if let Some(lag) = s.lag() {
            family.sample(
                "weir_connector_lag",
                &[("stream", stream), ("kind", kind)],
                lag as f64,
            );
        }
    }
}

/// Every running view and stream query as JSON (`/api/views`, read by the console): its
/// progress, its failure if any, and each operator's numbers as `weir_operators` has them.
pub fn views_json(registry: &Registry) -> serde_json::Value {
    let time = |ns: Option<i64>| {
        ns.map(|ns| {
            chrono::DateTime::from_timestamp_nanos(ns)
                .naive_utc()
                .to_string()
        })
    };
    let views: Vec<serde_json::Value> = registry
        .queries()
        .iter()
        .map(|v| {
            let p = v.table.progress();
            let processed = v.table.read();
            let committed: u64 = v.source_offsets().iter().sum();
            let history = v
                .query
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|q| rate_history(q.operator_stats()))
                .unwrap_or_default();
            let operators: Vec<serde_json::Value> = v
                .query
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|q| {
                    q.operator_stats()
                        .iter()
                        .enumerate()
                        .map(|(i, place)| {
                            let s = place.stats.snapshot();
                            let elapsed = s.elapsed_s.max(1e-9);
                            serde_json::json!({
                                "operator": i + 1,
                                "parent": place.parent.map(|p| p + 1),
                                "input": place.input,
                                "kind": s.name,
                                "detail": s.detail,
                                "rows_in": s.rows_in,
                                "rows_out": s.rows_out,
                                "rows_in_per_s": s.rows_in as f64 / elapsed,
                                "busy_percent": s.busy_ns as f64 / 1e9 / elapsed * 100.0,
                                "recent_rows_in_per_s": s.recent_rows_in_per_s,
                                "recent_busy_percent": s.recent_busy_percent,
                                "state_bytes": s.state_bytes,
                                "state_rows": s.state_rows,
                                "watermark": time(s.watermark_ns),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            serde_json::json!({
                "name": v.def.name,
                "events_processed": processed,
                "backlog": committed.saturating_sub(processed),
                "rows": v.table.num_rows(),
                "late_events": p.late_rows,
                "watermark": time(p.watermark_ns),
                "failed": p.error.as_ref().map(|e| e.message.clone()),
                "definition": v.def.query,
                "events_per_s": crate::providers::system::events_per_s(v),
                "lag_seconds": p.watermark_ns.map(crate::providers::system::lag_seconds),
                "rate_history": history,
                "operators": operators,
            })
        })
        .collect();
    serde_json::Value::Array(views)
}

/// Events per second the view read over about the last minute, oldest first, as (seconds
/// ago, rate) pairs: the rates of the first operator over each source, added up interval by
/// interval from the newest.
fn rate_history(places: &[weir_engine::dataflow::OperatorPlace]) -> Vec<(f64, f64)> {
    let mut seen: Vec<&str> = Vec::new();
    let mut total: Vec<(f64, f64)> = Vec::new();
    for place in places {
        let input = place.input.as_str();
        if !input.starts_with("source") || seen.contains(&input) {
            continue;
        }
        seen.push(input);
        let history = place.stats.rate_history();
        if total.is_empty() {
            total = history;
            continue;
        }
        for (t, h) in total.iter_mut().rev().zip(history.iter().rev()) {
            t.1 += h.1;
        }
    }
    total
}

/// Whether every view has caught up with its sources and none has failed (`/readyz`): `Ok`, or
/// a line per view that is behind or stopped.
pub fn readiness(registry: &Registry) -> Result<(), String> {
    let mut reasons = String::new();
    for v in registry.queries() {
        let p = v.table.progress();
        let committed: u64 = v.source_offsets().iter().sum();
        let backlog = committed.saturating_sub(v.table.read());
        if let Some(e) = &p.error {
            let _ = writeln!(reasons, "{}: failed: {}", v.def.name, e.message);
        } else if backlog > 0 {
            let _ = writeln!(reasons, "{}: {backlog} events behind", v.def.name);
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// Each running operator's counters (see `weir_operators`).
fn operator_metrics(out: &mut String, views: &[std::sync::Arc<crate::catalog::ViewEntry>]) {
    let mut rows = Vec::new();
    for v in views {
        let query = v.query.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = query.as_ref() {
            for (i, place) in q.operator_stats().iter().enumerate() {
                rows.push((
                    v.def.name.clone(),
                    (i + 1).to_string(),
                    place.stats.snapshot(),
                ));
            }
        }
    }
    type OperatorMetric = (&'static str, &'static str, &'static str);
    const OPERATOR_METRICS: [OperatorMetric; 6] = [
        (
            "weir_operator_rows_in_total",
            "counter",
            "Rows the operator was given.",
        ),
        (
            "weir_operator_rows_out_total",
            "counter",
            "Rows the operator emitted.",
        ),
        (
            "weir_operator_busy_seconds_total",
            "counter",
            "Time spent in the operator.",
        ),
        (
            "weir_operator_state_bytes",
            "gauge",
            "Bytes of state the operator holds.",
        ),
        (
            "weir_operator_state_rows",
            "gauge",
            "Rows of state (groups, stored rows, open sessions) the operator holds.",
        ),
        (
            "weir_operator_watermark_seconds",
            "gauge",
            "The last watermark the operator was given, in seconds since the epoch.",
        ),
    ];
    for (m, (name, kind, help)) in OPERATOR_METRICS.iter().enumerate() {
        let mut family = Family::new(out, name, kind, help);
        for (view, position, s) in &rows {
            let value = match m {
                0 => s.rows_in as f64,
                1 => s.rows_out as f64,
                2 => s.busy_ns as f64 / 1e9,
                3 => s.state_bytes as f64,
                4 => s.state_rows as f64,
                _ => match s.watermark_ns {
                    Some(w) => w as f64 / 1e9,
                    None => continue,
                },
            };
            family.sample(
                name,
                &[("view", view), ("operator", position), ("kind", s.name)],
                value,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
