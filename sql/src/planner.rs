//! Compiles the SELECT of a materialized view into an engine pipeline of incremental operators.
//!
//! DataFusion plans and optimises the query; this module walks the logical plan bottom-up and
//! turns each node into an operator: the source stream's scan (with its `TUMBLE` window
//! assigner), filters and projections as DataFusion physical expressions, and a grouped
//! aggregate per window with DataFusion's accumulators. Whatever cannot be maintained
//! incrementally is refused here, at CREATE time, with a reason.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::execution::SessionState;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::physical_expr::expressions::Column;
use datafusion::sql::parser::Statement as DfStatement;
use weir_engine::operator::{
    AggregateSpec, Emit, FilterOperator, Operator, ProjectionOperator, SessionAggregateOperator,
    SessionColumn, WindowAggregateOperator, WindowColumn,
};
use weir_engine::pipeline::Pipeline;

use crate::catalog::ViewDef;
use crate::database::{Database, StreamEntry};
use crate::parser::{EmitMode, WeirStatement, parse};
use crate::tables::{StreamTable, ViewTable, WindowSpec, WindowTable, provider_as};
use crate::{Error, Result};

/// A view's query, compiled and ready to run.
#[derive(Debug)]
pub struct CompiledView {
    /// The stream the query reads.
    pub source: Arc<StreamEntry>,
    /// The operators.
    pub pipeline: Pipeline,
    /// For results that change (EMIT ON UPDATE, aggregates over a whole stream), the output
    /// columns that identify a row; `None` for append-only results.
    pub key: Option<Vec<usize>>,
}

impl CompiledView {
    /// The operator plan for EXPLAIN, sink first.
    pub fn explain(&self, view: &str) -> Vec<String> {
        let mut lines = vec![match &self.key {
            None => format!("Sink: materialized view {view} (append-only)"),
            Some(key) => {
                let schema = self.pipeline.schema();
                let names: Vec<&str> = key
                    .iter()
                    .map(|&i| schema.field(i).name().as_str())
                    .collect();
                format!(
                    "Sink: materialized view {view} (upsert by {})",
                    names.join(", ")
                )
            }
        }];
        lines.extend(self.pipeline.explain());
        let def = &self.source.def;
        match &def.watermark {
            Some(w) => lines.push(format!(
                "Watermark: max({}) - {} per partition, min over active partitions (idle after {}ms)",
                w.column,
                humanize_ns(w.delay_ns),
                def.idle_timeout_ms
            )),
            None => lines.push("Watermark: none (the stream declares no WATERMARK)".into()),
        }
        lines.push(format!(
            "Source: stream {} ({} partitions, from the earliest offset)",
            def.name, def.partitions
        ));
        lines
    }
}

/// A duration for humans.
pub(crate) fn humanize_ns(ns: i64) -> String {
    match ns {
        0 => "0s".into(),
        n if n % 1_000_000_000 == 0 => format!("{}s", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
        n => format!("{n}ns"),
    }
}

/// How a view publishes results, from its EMIT clause and WITH options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewOptions {
    /// The explicit `EMIT ON ...` clause.
    pub emit: Option<EmitMode>,
    /// How long after its end a window still takes late events, in nanoseconds.
    pub allowed_lateness_ns: i64,
}

/// Plans and compiles the query of a view from its catalog definition.
pub async fn compile_view(db: &Database, def: &ViewDef) -> Result<CompiledView> {
    let stmts = parse(&def.query)?;
    let [WeirStatement::Sql(stmt)] = stmts.as_slice() else {
        return Err(Error::Syntax(format!(
            "a view is defined by one SELECT, not {}",
            def.query
        )));
    };
    let ctx = crate::session::new_context(db);
    let state = ctx.state();
    let options = ViewOptions {
        emit: def.emit_on_update.then_some(EmitMode::OnUpdate),
        allowed_lateness_ns: def.allowed_lateness_ns,
    };
    compile_query_statement(&state, stmt.as_ref().clone(), options).await
}

/// Plans and compiles a SELECT statement with the view's options.
pub(crate) async fn compile_query_statement(
    state: &SessionState,
    stmt: datafusion::sql::sqlparser::ast::Statement,
    options: ViewOptions,
) -> Result<CompiledView> {
    let plan = state
        .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
        .await?;
    let plan = state.optimize(&plan)?;
    let built = build(&plan, state, options)?;
    if built.session_gap_ns.is_some() && !built.aggregated {
        return Err(Error::NotSupported(
            "SESSION windows need an aggregate: GROUP BY window_start, window_end and the session key"
                .into(),
        ));
    }
    if options.allowed_lateness_ns > 0 && built.window_ns.is_none() {
        return Err(Error::NotSupported(
            "allowed_lateness applies to windowed aggregates (TUMBLE or HOP with GROUP BY window_start)"
                .into(),
        ));
    }
    let source = built
        .source
        .ok_or_else(|| Error::NotSupported("a materialized view must read a stream".into()))?;
    let pipeline = Pipeline::new(Arc::clone(&source.schema), built.operators);
    let names: Vec<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let got: Vec<String> = pipeline
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    if names != got {
        return Err(Error::Internal(format!(
            "compiled view has columns {got:?} but the query has {names:?}"
        )));
    }
    Ok(CompiledView {
        source,
        pipeline,
        key: built.key,
    })
}

/// What a subtree compiles to.
#[derive(Default)]
struct Built {
    source: Option<Arc<StreamEntry>>,
    operators: Vec<Box<dyn Operator>>,
    /// The window size when the rows carry `window_start` / `window_end`.
    window_ns: Option<i64>,
    /// The gap when the rows come from SESSION(...).
    session_gap_ns: Option<i64>,
    aggregated: bool,
    /// Set once results are upserts: the output columns of the group key.
    key: Option<Vec<usize>>,
}

fn arrow_schema(plan: &LogicalPlan) -> SchemaRef {
    Arc::new(plan.schema().as_arrow().clone())
}

fn unsupported(what: &str) -> Error {
    Error::NotSupported(format!("{what} is not supported in a continuous query yet"))
}

/// The physical aggregate expressions of an Aggregate node.
fn aggregate_specs(
    agg: &datafusion::logical_expr::Aggregate,
    state: &SessionState,
) -> Result<Vec<AggregateSpec>> {
    let input_schema = agg.input.schema();
    let input_arrow = arrow_schema(&agg.input);
    agg.aggr_expr
        .iter()
        .map(|e| {
            let planning = PhysicalPlanningContext::default();
            let name = match e {
                Expr::Alias(a) => a.name.clone(),
                e => e.schema_name().to_string(),
            };
            let lowered = LoweredAggregateBuilder::new(
                e,
                input_schema,
                &input_arrow,
                state.execution_props(),
                &planning,
            )
            .with_name(name)
            .build()?;
            if !lowered.order_bys.is_empty()
                && !lowered.aggregate.fun().supports_within_group_clause()
            {
                return Err(unsupported("ORDER BY inside an aggregate"));
            }
            Ok(AggregateSpec {
                expr: lowered.aggregate,
                filter: lowered.filter,
            })
        })
        .collect()
}

/// GROUP BY over SESSION(...): the group columns other than the window's are the session key.
fn build_session_aggregate(
    mut built: Built,
    agg: &datafusion::logical_expr::Aggregate,
    plan: &LogicalPlan,
    state: &SessionState,
    options: ViewOptions,
    gap_ns: i64,
) -> Result<Built> {
    if options.emit == Some(EmitMode::OnUpdate) || options.allowed_lateness_ns > 0 {
        return Err(unsupported(
            "EMIT ON UPDATE or allowed_lateness with SESSION windows",
        ));
    }
    let input_schema = agg.input.schema();
    let mut keys = Vec::new();
    let mut layout = Vec::new();
    let mut start_index = None;
    for e in &agg.group_expr {
        match e {
            Expr::Column(c) if c.name == "window_start" => {
                start_index = Some(input_schema.index_of_column(c)?);
                layout.push(SessionColumn::Start);
            }
            Expr::Column(c) if c.name == "window_end" => layout.push(SessionColumn::End),
            e => {
                layout.push(SessionColumn::Key(keys.len()));
                keys.push(state.create_physical_expr(e.clone(), input_schema)?);
            }
        }
    }
    let Some(start_index) = start_index else {
        return Err(Error::NotSupported(
            "a SESSION window aggregate must GROUP BY window_start (and the session key)".into(),
        ));
    };
    let aggregates = aggregate_specs(agg, state)?;
    built
        .operators
        .push(Box::new(SessionAggregateOperator::try_new(
            &arrow_schema(&agg.input),
            keys,
            layout,
            start_index,
            gap_ns,
            aggregates,
            arrow_schema(plan),
        )?));
    built.aggregated = true;
    Ok(built)
}

fn build(plan: &LogicalPlan, state: &SessionState, options: ViewOptions) -> Result<Built> {
    let emit = options.emit;
    match plan {
        LogicalPlan::TableScan(scan) => {
            let provider = source_as_provider(&scan.source)?;
            if !scan.filters.is_empty() {
                return Err(Error::Internal(
                    "a filter was pushed into a stream scan".into(),
                ));
            }
            let mut built = Built::default();
            if let Some(t) = provider_as::<WindowTable>(&provider) {
                let def = &t.stream.def;
                let time = &t.stream.schema.field(t.time_index).name().clone();
                match &def.watermark {
                    Some(w) if &w.column == time => {}
                    Some(w) => {
                        return Err(Error::NotSupported(format!(
                            "a window over {time}, but stream {} has its watermark on {}; \
                             window over the watermark column",
                            def.name, w.column
                        )));
                    }
                    None => {
                        return Err(Error::NotSupported(format!(
                            "stream {} has no watermark, so its windows would never close; \
                             declare WATERMARK FOR {time} AS {time} - INTERVAL '...' in CREATE STREAM",
                            def.name
                        )));
                    }
                }
                built.operators.push(t.operator()?);
                built.window_ns = t.spec.size_ns();
                if let WindowSpec::Session { gap_ns } = t.spec {
                    built.session_gap_ns = Some(gap_ns);
                }
                built.source = Some(Arc::clone(&t.stream));
            } else if let Some(s) = provider_as::<StreamTable>(&provider) {
                built.source = Some(s.entry());
            } else if provider_as::<ViewTable>(&provider).is_some() {
                return Err(unsupported("reading a materialized view from another view"));
            } else {
                return Err(unsupported(&format!("reading {}", scan.table_name)));
            }
            if let Some(projection) = &scan.projection {
                let input = provider.schema();
                let exprs = projection
                    .iter()
                    .map(|&i| {
                        let name = input.field(i).name().clone();
                        (
                            Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
                            name,
                        )
                    })
                    .collect();
                built
                    .operators
                    .push(Box::new(ProjectionOperator::try_new(exprs, &input)?));
            }
            Ok(built)
        }
        LogicalPlan::SubqueryAlias(a) => build(&a.input, state, options),
        LogicalPlan::Filter(f) => {
            let mut built = build(&f.input, state, options)?;
            if built.key.is_some() {
                return Err(Error::NotSupported(
                    "HAVING (or WHERE over an aggregate) is not supported yet for results that \
                     change (EMIT ON UPDATE, or GROUP BY without a window): a group that stops \
                     matching would have to leave the view"
                        .into(),
                ));
            }
            let predicate = state.create_physical_expr(f.predicate.clone(), f.input.schema())?;
            built.operators.push(Box::new(FilterOperator::try_new(
                predicate,
                arrow_schema(&f.input),
            )?));
            Ok(built)
        }
        LogicalPlan::Projection(p) => {
            let mut built = build(&p.input, state, options)?;
            if let Some(key) = &built.key {
                let input = p.input.schema();
                let position = |k: usize| {
                    p.expr.iter().position(|e| {
                        let e = match e {
                            Expr::Alias(a) => a.expr.as_ref(),
                            e => e,
                        };
                        matches!(e, Expr::Column(c) if input.index_of_column(c).ok() == Some(k))
                    })
                };
                let mapped: Option<Vec<usize>> = key.iter().map(|&k| position(k)).collect();
                built.key = Some(mapped.ok_or_else(|| {
                    Error::NotSupported(
                        "results that change (EMIT ON UPDATE, or GROUP BY without a window) must \
                         select every GROUP BY column, so that each row can be updated in place"
                            .into(),
                    )
                })?);
            }
            let exprs = p
                .expr
                .iter()
                .zip(p.schema.fields())
                .map(|(e, f)| {
                    Ok((
                        state.create_physical_expr(e.clone(), p.input.schema())?,
                        f.name().clone(),
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            built.operators.push(Box::new(ProjectionOperator::try_new(
                exprs,
                &arrow_schema(&p.input),
            )?));
            Ok(built)
        }
        LogicalPlan::Aggregate(agg) => {
            let mut built = build(&agg.input, state, options)?;
            if built.aggregated {
                return Err(unsupported("an aggregate over an aggregate"));
            }
            if agg.group_expr.is_empty() {
                return Err(unsupported(
                    "an aggregate over a whole stream without GROUP BY (group by a column, or by \
                     window_start, window_end of a TUMBLE or HOP)",
                ));
            }
            let input_schema = agg.input.schema();
            let mut window = None;
            for e in &agg.group_expr {
                match e {
                    Expr::GroupingSet(_) => {
                        return Err(unsupported("GROUPING SETS / ROLLUP / CUBE"));
                    }
                    Expr::Column(c) if c.name == "window_start" || c.name == "window_end" => {
                        let i = input_schema.index_of_column(c)?;
                        if window.is_none() || c.name == "window_start" {
                            window = Some(if c.name == "window_start" {
                                WindowColumn::Start(i)
                            } else {
                                WindowColumn::End(i)
                            });
                        }
                    }
                    _ => {}
                }
            }
            if let Some(gap_ns) = built.session_gap_ns {
                return build_session_aggregate(built, agg, plan, state, options, gap_ns);
            }
            let window = window.filter(|_| built.window_ns.is_some());
            let size_ns = built.window_ns.unwrap_or(0);
            let mode = match (window, emit) {
                (None, Some(EmitMode::OnWindowClose)) => {
                    return Err(Error::NotSupported(
                        "EMIT ON WINDOW CLOSE needs a window: read FROM TUMBLE(...) or HOP(...) \
                         and GROUP BY window_start, window_end"
                            .into(),
                    ));
                }
                (None, _) | (Some(_), Some(EmitMode::OnUpdate)) => Emit::OnUpdate,
                (Some(_), _) => Emit::OnWindowClose,
            };
            let input_arrow = arrow_schema(&agg.input);
            let groups = agg
                .group_expr
                .iter()
                .zip(agg.schema.fields())
                .map(|(e, f)| {
                    Ok((
                        state.create_physical_expr(e.clone(), input_schema)?,
                        f.name().clone(),
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let aggregates = aggregate_specs(agg, state)?;
            let mut operator = WindowAggregateOperator::try_new(
                &input_arrow,
                groups,
                window,
                size_ns,
                aggregates,
                arrow_schema(plan),
                mode,
            )?;
            if window.is_some() {
                operator = operator.with_allowed_lateness(options.allowed_lateness_ns);
            } else if options.allowed_lateness_ns > 0 {
                return Err(Error::NotSupported(
                    "allowed_lateness applies to windowed aggregates (GROUP BY window_start)"
                        .into(),
                ));
            }
            if operator.upserts() {
                built.key = Some((0..agg.group_expr.len()).collect());
            }
            built.operators.push(Box::new(operator));
            built.aggregated = true;
            Ok(built)
        }
        LogicalPlan::Sort(_) => Err(Error::NotSupported(
            "ORDER BY in a materialized view cannot be maintained over an unbounded stream; \
             order when you query the view (SELECT ... FROM view ORDER BY ...)"
                .into(),
        )),
        LogicalPlan::Join(_) => Err(unsupported("JOIN")),
        LogicalPlan::Limit(_) => Err(unsupported("LIMIT")),
        LogicalPlan::Distinct(_) => Err(unsupported("DISTINCT")),
        LogicalPlan::Window(_) => Err(unsupported("a window function (OVER)")),
        LogicalPlan::Union(_) => Err(unsupported("UNION")),
        other => Err(unsupported(&format!(
            "{}",
            other
                .display()
                .to_string()
                .split(':')
                .next()
                .unwrap_or("this plan node")
        ))),
    }
}
