//! The plan layer: compiles the SELECT of a materialized view (or of a stream made `AS SELECT`,
//! or of a SUBSCRIBE) into an engine dataflow of incremental operators.
//!
//! DataFusion plans and optimises the query; [`lower`] walks the logical plan bottom-up and
//! turns each node into an operator, and [`bounds`] works out what each column says about
//! time, which lets windows close and join state be freed. Whatever cannot be maintained
//! incrementally is refused here, at CREATE time, with a reason.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use weir_engine::dataflow::Dataflow;

use crate::catalog::{Registry, StreamEntry, TableEntry, ViewDef, ViewEntry};
use crate::providers::{ViewTable, WindowInput, WindowTable, new_context, provider_as};
use crate::settings::Settings;
use crate::syntax::{EmitMode, WeirStatement, parse};
use crate::time::humanize_ns;
use crate::{Error, Result};

mod bounds;
mod lower;

use bounds::TimeColumn;
use lower::Planner;

/// A view's query, compiled and ready to run.
#[derive(Debug)]
pub struct CompiledView {
    /// The streams the query reads; the dataflow's sources by position.
    pub sources: Vec<Arc<StreamEntry>>,
    /// The reference tables it looks rows up in.
    pub tables: Vec<Arc<TableEntry>>,
    /// The materialized views whose queries it includes (it reads their rows as a stream).
    pub views: Vec<String>,
    /// The operators.
    pub dataflow: Dataflow,
    /// For results that change (EMIT ON UPDATE, aggregates over a whole stream), the output
    /// columns that identify a row; `None` for append-only results.
    pub key: Option<Vec<usize>>,
    /// The dataflow's last column says whether an upserted row passes HAVING; it is not part
    /// of the view.
    pub visibility: bool,
    /// The results change but have no key of their own: the dataflow's last column says
    /// whether each row is inserted or taken back, and the view keeps rows with their counts.
    pub changelog: bool,
    /// An output column that follows the watermark, and how far behind the largest value seen
    /// rows still to come can be: a watermark for a stream of these rows. Window ends come
    /// first (nothing is behind), then event times passed through (behind by the sources'
    /// largest watermark delay).
    pub watermark: Option<(usize, i64)>,
    /// The query stamps its rows with `PROCTIME()`: its watermark is the processing-time clock.
    pub processing_time: bool,
}

impl CompiledView {
    /// The view's schema (without the visibility or changelog column).
    pub fn schema(&self) -> SchemaRef {
        let schema = self.dataflow.schema();
        if !self.visibility && !self.changelog {
            return schema;
        }
        let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
        fields.pop();
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
    }

    /// The operator plan for EXPLAIN, sink first.
    pub fn explain(&self, view: &str) -> Vec<String> {
        self.explain_into(&format!("materialized view {view}"))
    }

    /// The operator plan of a query whose results go to `sink` (`materialized view v`,
    /// `stream s`), sink first.
    pub fn explain_into(&self, sink: &str) -> Vec<String> {
        let view = sink;
        let mut lines = vec![match &self.key {
            None if self.changelog => format!(
                "Sink: {view} (a changelog: rows inserted and taken back, kept with their counts)"
            ),
            None => format!("Sink: {view} (append-only)"),
            Some(key) => {
                let schema = self.dataflow.schema();
                let names: Vec<&str> = key
                    .iter()
                    .map(|&i| schema.field(i).name().as_str())
                    .collect();
                format!("Sink: {view} (upsert by {})", names.join(", "))
            }
        }];
        let source_lines = |i: usize| -> Vec<String> {
            let Some(source) = self.sources.get(i) else {
                return vec![format!("Source: #{i} (missing; this is a bug)")];
            };
            let def = &source.def;
            let watermark = match &def.watermark {
                _ if self.processing_time => {
                    "Watermark: processing time (the wall clock that PROCTIME() stamps rows with)"
                        .into()
                }
                Some(w) => format!(
                    "Watermark: max({}) - {} per partition, min over active partitions (idle after {}ms)",
                    w.column,
                    humanize_ns(w.delay_ns),
                    def.idle_timeout_ms
                ),
                None => "Watermark: none (the stream declares no WATERMARK)".into(),
            };
            vec![
                watermark,
                format!(
                    "Source: stream {} ({} partitions, from the earliest offset)",
                    def.name, def.partitions
                ),
            ]
        };
        lines.extend(self.dataflow.explain(&source_lines));
        lines
    }
}

/// How a view publishes results, from its EMIT clause and WITH options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewOptions {
    /// The explicit `EMIT ON ...` clause.
    pub emit: Option<EmitMode>,
    /// How long after its end a window still takes late events, in nanoseconds.
    pub allowed_lateness_ns: i64,
    /// The most memory the view's state may hold, in bytes (the server's default if `None`).
    pub memory_limit: Option<u64>,
    /// How long, in event time, a join without a time bound keeps a row (0: for good).
    pub state_ttl_ns: i64,
}

/// The statement and options of a view's catalog definition: parsed in one place for both
/// compiling the view and inlining it into views that read it.
fn view_statement(def: &ViewDef) -> Result<(Box<Statement>, ViewOptions)> {
    let mut stmts = parse(&def.query)?;
    let (Some(WeirStatement::Sql(stmt)), true) = (stmts.pop(), stmts.is_empty()) else {
        return Err(Error::Syntax(format!(
            "a view is defined by one SELECT, not {}",
            def.query
        )));
    };
    let options = ViewOptions {
        emit: def.emit_on_update.then_some(EmitMode::OnUpdate),
        allowed_lateness_ns: def.allowed_lateness_ns,
        memory_limit: def.memory_limit,
        state_ttl_ns: def.state_ttl_ns,
    };
    Ok((stmt, options))
}

/// Plans and compiles the query of a view from its catalog definition, over `registry`.
pub async fn compile_view(registry: &Registry, def: &ViewDef) -> Result<CompiledView> {
    let (stmt, options) = view_statement(def)?;
    let ctx = new_context(registry, &Settings::default());
    let state = ctx.state();
    compile_query_statement(&state, *stmt, options).await
}

/// The optimised logical plan of a view's query, and its options.
async fn plan_view_query(
    state: &SessionState,
    def: &ViewDef,
) -> Result<(LogicalPlan, ViewOptions)> {
    let (stmt, options) = view_statement(def)?;
    let plan = state
        .statement_to_plan(DfStatement::Statement(stmt))
        .await?;
    Ok((state.optimize(&plan)?, options))
}

/// The materialized views `plan` reads (directly or windowed).
fn referenced_views(plan: &LogicalPlan) -> Result<Vec<Arc<ViewEntry>>> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut views = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let provider = source_as_provider(&scan.source)?;
            if let Some(v) = provider_as::<ViewTable>(&provider) {
                views.push(v.entry());
            } else if let Some(w) = provider_as::<WindowTable>(&provider) {
                match &w.input {
                    WindowInput::View(v) => views.push(Arc::clone(v)),
                    WindowInput::Query(sub) => {
                        views.extend(referenced_views(sub).map_err(|e| {
                            datafusion::error::DataFusionError::External(Box::new(e))
                        })?)
                    }
                    WindowInput::Stream(_) => {}
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(views)
}

/// Whether `plan` reads a stream as versions (an event-time temporal join).
fn reads_versions(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    plan.exists(|node| {
        Ok(match node {
            LogicalPlan::TableScan(scan) => source_as_provider(&scan.source)
                .ok()
                .is_some_and(|p| provider_as::<crate::providers::VersionedTable>(&p).is_some()),
            _ => false,
        })
    })
    .unwrap_or(false)
}

/// Whether `e` is a call of `PROCTIME()` (under an alias or not).
pub(crate) fn is_proctime(e: &Expr) -> bool {
    match e {
        Expr::Alias(a) => is_proctime(&a.expr),
        Expr::ScalarFunction(f) => f.name() == "proctime",
        _ => false,
    }
}

/// Whether `plan` (its subqueries and the subqueries it windows included) calls `PROCTIME()`:
/// a query that does runs in processing time.
fn calls_proctime(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut found = false;
    let walked = plan.apply_with_subqueries(|node| {
        let here = node.expressions().iter().any(|e| {
            e.exists(|e| Ok(matches!(e, Expr::ScalarFunction(f) if f.name() == "proctime")))
                .unwrap_or(false)
        });
        let windowed = match node {
            LogicalPlan::TableScan(scan) => source_as_provider(&scan.source)
                .ok()
                .and_then(|p| match &provider_as::<WindowTable>(&p)?.input {
                    WindowInput::Query(sub) => Some(calls_proctime(sub)),
                    _ => None,
                })
                .unwrap_or(false),
            _ => false,
        };
        found = here || windowed;
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    walked.is_ok() && found
}

/// Plans every view `plan` reads, and the views those read, and so on.
async fn plan_views(
    state: &SessionState,
    plan: &LogicalPlan,
) -> Result<HashMap<String, (LogicalPlan, ViewOptions)>> {
    let mut planned = HashMap::new();
    let mut todo = referenced_views(plan)?;
    while let Some(view) = todo.pop() {
        if planned.contains_key(&view.def.name) {
            continue;
        }
        let (plan, options) = plan_view_query(state, &view.def).await?;
        todo.extend(referenced_views(&plan)?);
        planned.insert(view.def.name.clone(), (plan, options));
    }
    Ok(planned)
}

/// A view's rows are read by column name, so two output columns of one name would make every
/// read fail: refused at CREATE with PostgreSQL's 42701, naming the column.
pub(crate) fn refuse_duplicate_names(plan: &LogicalPlan) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for field in plan.schema().fields() {
        if !seen.insert(field.name().as_str()) {
            return Err(duplicate_column(field.name()));
        }
    }
    Ok(())
}

/// Names a new view's unnamed result columns as PostgreSQL does (`count`, `?column?`), in the
/// statement itself, so that the text the catalog keeps (and replans on restart) carries the
/// names; refuses two columns of one name (42701), as PostgreSQL does.
pub(crate) fn name_columns(stmt: &mut Statement) -> Result<()> {
    match crate::syntax::column_names::name_view_columns(stmt) {
        Some(name) => Err(duplicate_column(&name)),
        None => Ok(()),
    }
}

fn duplicate_column(name: &str) -> Error {
    Error::WrongObject {
        sqlstate: "42701",
        message: format!(
            "column \"{name}\" specified more than once; give the columns distinct names with AS"
        ),
    }
}

/// Optimizes `plan` without pruning the columns that no node above reads: a join under
/// `state_ttl` needs its inputs' event times, which the view may not select.
fn optimize_keeping_columns(state: &SessionState, plan: &LogicalPlan) -> Result<LogicalPlan> {
    let rules = state
        .optimizers()
        .iter()
        .filter(|r| r.name() != "optimize_projections")
        .cloned()
        .collect();
    let state = datafusion::execution::SessionStateBuilder::new_from_existing(state.clone())
        .with_optimizer_rules(rules)
        .build();
    Ok(state.optimize(plan)?)
}

/// Plans and compiles a SELECT statement with the view's options.
pub(crate) async fn compile_query_statement(
    state: &SessionState,
    stmt: Statement,
    options: ViewOptions,
) -> Result<CompiledView> {
    let plan = state
        .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
        .await?;
    // A state TTL counts from event times, and a temporal join joins as of one: both keep
    // their inputs' columns whether the query selects them or not.
    let plan = if options.state_ttl_ns > 0 || reads_versions(&plan) {
        optimize_keeping_columns(state, &plan)?
    } else {
        state.optimize(&plan)?
    };
    refuse_duplicate_names(&plan)?;
    let view_plans = plan_views(state, &plan).await?;
    let processing_time =
        calls_proctime(&plan) || view_plans.values().any(|(p, _)| calls_proctime(p));
    let mut planner = Planner::new(state, options, view_plans);
    planner.processing_time = processing_time;
    let built = planner.build(&plan)?;
    if built.session_gap_ns.is_some() && !built.aggregated {
        return Err(Error::NotSupported(
            "SESSION windows need an aggregate: GROUP BY window_start, window_end and the session key"
                .into(),
        ));
    }
    if options.state_ttl_ns > 0 && !planner.ttl_applied {
        return Err(Error::NotSupported(
            "state_ttl applies to joins of streams without a time bound, aggregates without a \
             window over rows that only append, and deduplications without a window (their \
             state is kept until the watermark passes its event time plus the TTL); this query \
             has none of them"
                .into(),
        ));
    }
    if options.allowed_lateness_ns > 0 && !built.windowed_aggregate {
        return Err(Error::NotSupported(
            "allowed_lateness applies to windowed aggregates (TUMBLE or HOP with GROUP BY window_start)"
                .into(),
        ));
    }
    if planner.sources.is_empty() {
        return Err(Error::NotSupported(
            "a materialized view must read a stream".into(),
        ));
    }
    let key = built.key.clone();
    let visibility = built.visibility;
    let changelog = built.changelog;
    let delay_ns = planner
        .sources
        .iter()
        .filter(|_| !processing_time)
        .filter_map(|s| s.def.watermark.as_ref().map(|w| w.delay_ns))
        .max()
        .unwrap_or(0);
    let watermark = built
        .times
        .iter()
        .position(|t| matches!(t, Some(TimeColumn::WindowEnd { .. })))
        .map(|i| (i, 0))
        .or_else(|| {
            built
                .times
                .iter()
                .position(|t| matches!(t, Some(TimeColumn::EventTime)))
                .map(|i| (i, delay_ns))
        });
    let dataflow = built.into_dataflow()?;
    let names: Vec<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut got: Vec<String> = dataflow
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    if visibility || changelog {
        got.pop();
    }
    if names != got {
        return Err(Error::Internal(format!(
            "compiled view has columns {got:?} but the query has {names:?}; this is a bug"
        )));
    }
    Ok(CompiledView {
        sources: planner.sources,
        tables: planner.tables,
        views: planner.views,
        dataflow,
        key,
        visibility,
        changelog,
        watermark,
        processing_time,
    })
}
