//! EXPLAIN CREATE MATERIALIZED VIEW and EXPLAIN CREATE STREAM ... AS SELECT (the operator
//! plan, nothing created), and EXPLAIN [ANALYZE] MATERIALIZED VIEW (a running view's plan, with
//! what each operator has done).

use datafusion::sql::sqlparser::ast::Statement;

use super::Handler;
use crate::output::Output;
use crate::plan::{ViewOptions, compile_query_statement, name_columns};
use crate::syntax::{CreateStream, EmitMode, object_name};
use crate::{Error, Result};

impl Handler {
    /// `EXPLAIN CREATE MATERIALIZED VIEW name AS SELECT ...`.
    pub(crate) async fn explain_create_view(
        &self,
        stmt: Statement,
        emit: Option<EmitMode>,
    ) -> Result<Output> {
        let Statement::Explain { statement, .. } = stmt else {
            return Err(Error::Internal("EXPLAIN lost its statement".into()));
        };
        let Statement::CreateView(cv) = *statement else {
            return Err(Error::Internal(
                "EXPLAIN of a view lost its statement".into(),
            ));
        };
        let name = object_name(&cv.name)?;
        let options = self.view_options(&cv.options, emit).await?;
        let mut query = Statement::Query(cv.query);
        name_columns(&mut query)?;
        let compiled = compile_query_statement(&self.ctx.state(), query, options).await?;
        Output::explain(compiled.explain(&name))
    }

    /// `EXPLAIN [ANALYZE] MATERIALIZED VIEW name`: the plan the view runs; with ANALYZE, each
    /// operator's rows in and out (averages per second since the view started), busy share,
    /// the same over about the last ten seconds, state and watermark, the busiest marked as
    /// the bottleneck.
    pub(crate) fn explain_view(&self, name: &str, analyze: bool) -> Result<Output> {
        let view = self
            .db
            .view(name)
            .ok_or_else(|| Error::UndefinedRelation(name.to_string()))?;
        if !analyze {
            return Output::explain(view.plan.clone());
        }
        let stats: Vec<_> = {
            let query = view.query.lock().unwrap_or_else(|e| e.into_inner());
            let Some(query) = query.as_ref() else {
                return Err(Error::WrongObject {
                    sqlstate: "55000",
                    message: format!("materialized view {name} is not running"),
                });
            };
            query
                .operator_stats()
                .iter()
                .map(|p| p.stats.snapshot())
                .collect()
        };
        Output::explain(analyzed_plan(&view.plan, &stats, &view.table.progress()))
    }

    /// `EXPLAIN CREATE STREAM name AS SELECT ...`.
    pub(crate) async fn explain_create_stream(&self, cs: CreateStream) -> Result<Output> {
        let query = cs
            .query
            .ok_or_else(|| Error::Internal("EXPLAIN CREATE STREAM without a query".into()))?;
        let mut query = *query;
        name_columns(&mut query)?;
        let compiled =
            compile_query_statement(&self.ctx.state(), query, ViewOptions::default()).await?;
        Output::explain(compiled.explain_into(&format!(
            "stream {}, appended exactly once with each checkpoint",
            cs.name
        )))
    }
}

/// `plan` with each operator's numbers after its line (operators are matched to lines by their
/// EXPLAIN text, in order), and the view's progress first.
fn analyzed_plan(
    plan: &[String],
    stats: &[weir_engine::stats::OperatorSnapshot],
    progress: &weir_engine::result_table::Progress,
) -> Vec<String> {
    let busiest = stats
        .iter()
        .enumerate()
        .filter(|(_, s)| s.busy_ns > 0)
        .max_by_key(|(_, s)| s.busy_ns)
        .map(|(i, _)| i);
    let time = |ns: Option<i64>| {
        ns.and_then(|ns| {
            chrono::DateTime::from_timestamp_nanos(ns)
                .naive_utc()
                .into()
        })
        .map_or("none".to_string(), |t: chrono::NaiveDateTime| t.to_string())
    };
    let mut used = vec![false; stats.len()];
    let mut lines = vec![format!(
        "Progress: {} events read, watermark {}, {} late",
        progress.offsets.iter().sum::<u64>(),
        time(progress.watermark_ns),
        progress.late_rows
    )];
    for line in plan {
        let text = line
            .trim_start()
            .trim_start_matches("left: ")
            .trim_start_matches("right: ");
        let found = (0..stats.len()).find(|&i| !used[i] && stats[i].detail == text);
        let Some(i) = found else {
            lines.push(line.clone());
            continue;
        };
        used[i] = true;
        let s = &stats[i];
        let elapsed = s.elapsed_s.max(1e-9);
        lines.push(format!(
            "{line}  [rows in {} ({:.0}/s), out {} ({:.0}/s), busy {:.1}%, last 10 s {:.0} in/s busy {:.1}%, state {} bytes, watermark {}{}]",
            s.rows_in,
            s.rows_in as f64 / elapsed,
            s.rows_out,
            s.rows_out as f64 / elapsed,
            s.busy_ns as f64 / 1e9 / elapsed * 100.0,
            s.recent_rows_in_per_s,
            s.recent_busy_percent,
            s.state_bytes,
            time(s.watermark_ns),
            if busiest == Some(i) { "; the bottleneck" } else { "" }
        ));
    }
    lines
}
