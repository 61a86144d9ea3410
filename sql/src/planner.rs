//! Compiles the SELECT of a materialized view into an engine pipeline of incremental operators.
//!
//! DataFusion plans and optimises the query; this module walks the logical plan bottom-up and
//! turns each node into an operator: the source stream's scan (with its `TUMBLE` window
//! assigner), filters and projections as DataFusion physical expressions, and a grouped
//! aggregate per window with DataFusion's accumulators. Whatever cannot be maintained
//! incrementally is refused here, at CREATE time, with a reason.

use std::collections::HashMap;
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
use weir_engine::dataflow::Dataflow;
use weir_engine::operator::{
    AggregateSpec, BinaryOperator, Emit, FilterOperator, JoinInput, LookupJoinOperator, Operator,
    ProjectionOperator, SessionAggregateOperator, SessionColumn, StreamJoinOperator,
    WindowAggregateOperator, WindowColumn,
};
use weir_engine::pipeline::Pipeline;

use crate::catalog::ViewDef;
use crate::database::{Database, StreamEntry, ViewEntry};
use crate::parser::{EmitMode, WeirStatement, parse};
use crate::ref_table::{RefTable, TableEntry};
use crate::tables::{StreamTable, ViewTable, WindowInput, WindowSpec, WindowTable, provider_as};
use crate::{Error, Result};

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
    /// An output column that follows the watermark, and how far behind the largest value seen
    /// rows still to come can be: a watermark for a stream of these rows. Window ends come
    /// first (nothing is behind), then event times passed through (behind by the sources'
    /// largest watermark delay).
    pub watermark: Option<(usize, i64)>,
}

impl CompiledView {
    /// The view's schema (without the visibility column).
    pub fn schema(&self) -> SchemaRef {
        let schema = self.dataflow.schema();
        if !self.visibility {
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
    let ctx = crate::session::new_context(db, &crate::settings::Settings::default());
    let state = ctx.state();
    let options = ViewOptions {
        emit: def.emit_on_update.then_some(EmitMode::OnUpdate),
        allowed_lateness_ns: def.allowed_lateness_ns,
    };
    compile_query_statement(&state, stmt.as_ref().clone(), options).await
}

/// The optimised logical plan of a view's query, and its options.
async fn plan_view_query(
    state: &SessionState,
    def: &ViewDef,
) -> Result<(LogicalPlan, ViewOptions)> {
    let stmts = parse(&def.query)?;
    let [WeirStatement::Sql(stmt)] = stmts.as_slice() else {
        return Err(Error::Syntax(format!(
            "a view is defined by one SELECT, not {}",
            def.query
        )));
    };
    let plan = state
        .statement_to_plan(DfStatement::Statement(stmt.clone()))
        .await?;
    let options = ViewOptions {
        emit: def.emit_on_update.then_some(EmitMode::OnUpdate),
        allowed_lateness_ns: def.allowed_lateness_ns,
    };
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
    let view_plans = plan_views(state, &plan).await?;
    let mut planner = Planner {
        state,
        options,
        sources: Vec::new(),
        tables: Vec::new(),
        view_plans,
        views: Vec::new(),
    };
    let built = planner.build(&plan)?;
    if built.session_gap_ns.is_some() && !built.aggregated {
        return Err(Error::NotSupported(
            "SESSION windows need an aggregate: GROUP BY window_start, window_end and the session key"
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
    let delay_ns = planner
        .sources
        .iter()
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
    let dataflow = built.into_dataflow();
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
    if visibility {
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
        watermark,
    })
}

/// Checks that a derived stream (a view's or a subquery's rows) can be windowed over column
/// `time`: its rows only append and the column follows the watermark.
fn derived_window_input(built: Built, time_index: usize, time: &str, what: &str) -> Result<Built> {
    if built.key.is_some() {
        return Err(Error::NotSupported(format!(
            "a window over {what}, whose rows change (EMIT ON UPDATE, allowed_lateness, \
             or GROUP BY without a window); window over rows that only append"
        )));
    }
    match built.times.get(time_index).copied().flatten() {
        Some(TimeColumn::EventTime | TimeColumn::WindowEnd { .. }) => Ok(built),
        _ => Err(Error::NotSupported(format!(
            "a window over column {time} of {what}, which does not follow the watermark; \
             window over the event time it passes through from its stream, or over window_end \
             of its windows"
        ))),
    }
}

/// What a column's values say about time, relative to the watermark: the property that lets
/// windows close and join state be freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeColumn {
    /// The stream's event time: rows still to come are at or after the watermark.
    EventTime,
    /// The start of windows of this size: rows still to come start after `watermark - size`.
    WindowStart { size_ns: i64 },
    /// The end of windows of this size: rows still to come end after the watermark.
    WindowEnd { size_ns: i64 },
}

impl TimeColumn {
    /// How far behind the watermark rows still to come can be in this column.
    fn lag_ns(self) -> i64 {
        match self {
            Self::EventTime | Self::WindowEnd { .. } => 0,
            Self::WindowStart { size_ns } => size_ns,
        }
    }
}

/// Where the rows of a subtree come from.
enum Base {
    /// A source stream, by position in the query's sources.
    Source(usize),
    /// A join of two subtrees.
    Join(Dataflow, Dataflow, Box<dyn BinaryOperator>),
}

/// What a subtree compiles to.
struct Built {
    base: Base,
    /// The schema of the rows `base` delivers.
    input: SchemaRef,
    /// Operators over `base`'s rows, first to last.
    operators: Vec<Box<dyn Operator>>,
    /// Per output column, what it says about time.
    times: Vec<Option<TimeColumn>>,
    /// The gap when the rows come from SESSION(...).
    session_gap_ns: Option<i64>,
    aggregated: bool,
    /// A windowed aggregate (TUMBLE or HOP) is in this subtree.
    windowed_aggregate: bool,
    /// Set once results are upserts: the output columns of the group key.
    key: Option<Vec<usize>>,
    /// Upserts carry one more, last, column: whether the row passes HAVING (else it leaves).
    visibility: bool,
}

/// The name of the column that says whether an upserted row passes HAVING.
const VISIBLE: &str = "weir_visible";

impl Built {
    fn into_dataflow(self) -> Dataflow {
        let pipeline = Pipeline::new(self.input, self.operators);
        match self.base {
            Base::Source(source) => Dataflow::Source { source, pipeline },
            Base::Join(left, right, join) => Dataflow::join(left, right, join, pipeline),
        }
    }
}

fn arrow_schema(plan: &LogicalPlan) -> SchemaRef {
    Arc::new(plan.schema().as_arrow().clone())
}

fn unsupported(what: &str) -> Error {
    Error::NotSupported(format!("{what} is not supported in a continuous query yet"))
}

/// The column an expression reads, looking through aliases and casts.
fn column_of(e: &Expr) -> Option<&datafusion::common::Column> {
    match e {
        Expr::Column(c) => Some(c),
        Expr::Alias(a) => column_of(&a.expr),
        Expr::Cast(c) => column_of(&c.expr),
        Expr::TryCast(c) => column_of(&c.expr),
        _ => None,
    }
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

/// A time condition between the join's inputs: `left.a - right.b` lies within `[low, high]`
/// (either bound may be missing).
#[derive(Debug, Clone, Copy)]
struct TimeBound {
    left: usize,
    right: usize,
    low: Option<i64>,
    high: Option<i64>,
}

/// `column + offset` where `column` is a time column of one of the join's inputs.
fn time_term(e: &Expr, schema: &datafusion::common::DFSchema) -> Option<(usize, i64)> {
    use datafusion::logical_expr::Operator as Op;
    match e {
        Expr::BinaryExpr(b) if matches!(b.op, Op::Plus | Op::Minus) => {
            let (col, offset) = time_term(&b.left, schema)?;
            let n = interval_ns(&b.right)?;
            Some((
                col,
                if b.op == Op::Plus {
                    offset + n
                } else {
                    offset - n
                },
            ))
        }
        e => {
            let c = column_of(e)?;
            Some((schema.index_of_column(c).ok()?, 0))
        }
    }
}

/// A constant interval in nanoseconds (days count as 24 hours; months are refused).
fn interval_ns(e: &Expr) -> Option<i64> {
    use datafusion::common::ScalarValue;
    match e {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            Some(v.days as i64 * 86_400_000_000_000 + v.nanoseconds)
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            Some(v.days as i64 * 86_400_000_000_000 + v.milliseconds as i64 * 1_000_000)
        }
        Expr::Cast(c) => interval_ns(&c.expr),
        _ => None,
    }
}

/// Splits a conjunction.
fn conjuncts(e: &Expr, out: &mut Vec<Expr>) {
    use datafusion::logical_expr::Operator as Op;
    match e {
        Expr::BinaryExpr(b) if b.op == Op::And => {
            conjuncts(&b.left, out);
            conjuncts(&b.right, out);
        }
        Expr::Between(b) if !b.negated => {
            out.push(b.expr.as_ref().clone().gt_eq(b.low.as_ref().clone()));
            out.push(b.expr.as_ref().clone().lt_eq(b.high.as_ref().clone()));
        }
        e => out.push(e.clone()),
    }
}

/// The time conditions among `conditions` (over the join's schema, left columns first).
fn time_bounds(
    conditions: &[Expr],
    schema: &datafusion::common::DFSchema,
    left_width: usize,
    times: &[Option<TimeColumn>],
) -> Vec<TimeBound> {
    use datafusion::logical_expr::Operator as Op;
    let mut bounds = Vec::new();
    for c in conditions {
        let Expr::BinaryExpr(b) = c else { continue };
        let op = match b.op {
            Op::Eq | Op::Lt | Op::LtEq | Op::Gt | Op::GtEq => b.op,
            _ => continue,
        };
        let (Some((a, oa)), Some((z, oz))) =
            (time_term(&b.left, schema), time_term(&b.right, schema))
        else {
            continue;
        };
        if times.get(a).copied().flatten().is_none() || times.get(z).copied().flatten().is_none() {
            continue;
        }
        // a + oa  op  z + oz, with a and z on different sides.
        let (l, r, lo, diff_op) = if a < left_width && z >= left_width {
            (a, z - left_width, oz - oa, op)
        } else if z < left_width && a >= left_width {
            (z, a - left_width, oa - oz, op.swap().unwrap_or(op))
        } else {
            continue;
        };
        // Now: left.l  diff_op  right.r + lo.
        let (low, high) = match diff_op {
            Op::Eq => (Some(lo), Some(lo)),
            Op::Lt | Op::LtEq => (None, Some(lo)),
            _ => (Some(lo), None),
        };
        bounds.push(TimeBound {
            left: l,
            right: r,
            low,
            high,
        });
    }
    bounds
}

/// Compiles a logical plan bottom-up, collecting the sources and tables it reads.
struct Planner<'a> {
    state: &'a SessionState,
    options: ViewOptions,
    sources: Vec<Arc<StreamEntry>>,
    tables: Vec<Arc<TableEntry>>,
    /// The plans (and options) of the views this query reads, by name.
    view_plans: HashMap<String, (LogicalPlan, ViewOptions)>,
    /// The views compiled into this query.
    views: Vec<String>,
}

/// A reference table as one side of a join: the table, the scan's columns, and filters on it.
struct TableSide {
    table: Arc<TableEntry>,
    /// The table's columns the join sees, in order.
    projection: Vec<usize>,
    /// Conditions on the table's rows (over its full schema, qualified by `name`).
    filters: Vec<Expr>,
    name: datafusion::common::TableReference,
}

impl Planner<'_> {
    fn source_index(&mut self, stream: &Arc<StreamEntry>) -> usize {
        match self
            .sources
            .iter()
            .position(|s| s.def.name == stream.def.name)
        {
            Some(i) => i,
            None => {
                self.sources.push(Arc::clone(stream));
                self.sources.len() - 1
            }
        }
    }

    /// The reference table `plan` scans, if it is (an alias of) a scan of one, maybe filtered.
    fn table_side(plan: &LogicalPlan) -> Result<Option<TableSide>> {
        match plan {
            LogicalPlan::SubqueryAlias(a) => Self::table_side(&a.input),
            LogicalPlan::Filter(f) => Ok(Self::table_side(&f.input)?.map(|mut t| {
                t.filters.push(f.predicate.clone());
                t
            })),
            LogicalPlan::Projection(p) => {
                let Some(mut t) = Self::table_side(&p.input)? else {
                    return Ok(None);
                };
                let input = p.input.schema();
                let mut projection = Vec::with_capacity(p.expr.len());
                for e in &p.expr {
                    let Expr::Column(c) = e else { return Ok(None) };
                    let i = input.index_of_column(c)?;
                    projection.push(t.projection[i]);
                }
                t.projection = projection;
                Ok(Some(t))
            }
            LogicalPlan::TableScan(scan) => {
                let provider = source_as_provider(&scan.source)?;
                let Some(t) = provider_as::<RefTable>(&provider) else {
                    return Ok(None);
                };
                let table = t.entry();
                let projection = scan
                    .projection
                    .clone()
                    .unwrap_or_else(|| (0..table.schema.fields().len()).collect());
                Ok(Some(TableSide {
                    table,
                    projection,
                    filters: scan.filters.clone(),
                    name: scan.table_name.clone(),
                }))
            }
            _ => Ok(None),
        }
    }

    fn build(&mut self, plan: &LogicalPlan) -> Result<Built> {
        match plan {
            LogicalPlan::TableScan(scan) => self.build_scan(scan),
            LogicalPlan::SubqueryAlias(a) => self.build(&a.input),
            LogicalPlan::Filter(f) => {
                let mut built = self.build(&f.input)?;
                let predicate = self
                    .state
                    .create_physical_expr(f.predicate.clone(), f.input.schema())?;
                if built.key.is_some() {
                    // Over results that change, a group that stops matching must leave the
                    // view: compute the condition as a column that the view's table obeys.
                    return self.push_visibility(built, &f.input, predicate);
                }
                built.operators.push(Box::new(FilterOperator::try_new(
                    predicate,
                    arrow_schema(&f.input),
                )?));
                Ok(built)
            }
            LogicalPlan::Projection(p) => self.build_projection(p),
            LogicalPlan::Aggregate(agg) => self.build_aggregate(agg, plan),
            LogicalPlan::Join(join) => self.build_join(join),
            LogicalPlan::Sort(_) => Err(Error::NotSupported(
                "ORDER BY in a materialized view cannot be maintained over an unbounded stream; \
                 order when you query the view (SELECT ... FROM view ORDER BY ...)"
                    .into(),
            )),
            LogicalPlan::Limit(_) => Err(Error::NotSupported(
                "LIMIT in a materialized view cannot be maintained over an unbounded stream; \
                 apply it when you query the view (SELECT ... FROM view LIMIT n)"
                    .into(),
            )),
            LogicalPlan::Distinct(_) => Err(unsupported(
                "DISTINCT (write GROUP BY over the columns instead)",
            )),
            LogicalPlan::Window(_) => Err(unsupported("a window function (OVER)")),
            LogicalPlan::Union(_) => Err(unsupported("UNION")),
            other => Err(unsupported(
                other
                    .display()
                    .to_string()
                    .split(':')
                    .next()
                    .unwrap_or("this plan node"),
            )),
        }
    }

    /// The schema the operators see for `plan`'s rows: with the visibility column if any.
    fn physical_schema(plan: &LogicalPlan, built: &Built) -> SchemaRef {
        let schema = arrow_schema(plan);
        if !built.visibility {
            return schema;
        }
        let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
        fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
            VISIBLE,
            datafusion::arrow::datatypes::DataType::Boolean,
            true,
        )));
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
    }

    /// HAVING over upserts: every column passes through, plus whether the row passes (and
    /// passed any earlier HAVING).
    fn push_visibility(
        &self,
        mut built: Built,
        input: &LogicalPlan,
        predicate: Arc<dyn PhysicalExpr>,
    ) -> Result<Built> {
        use datafusion::physical_expr::expressions::BinaryExpr;
        let schema = Self::physical_schema(input, &built);
        let width = input.schema().fields().len();
        let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = (0..width)
            .map(|i| {
                let name = schema.field(i).name().clone();
                (
                    Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
                    name,
                )
            })
            .collect();
        let visible = if built.visibility {
            Arc::new(BinaryExpr::new(
                Arc::new(Column::new(VISIBLE, width)),
                datafusion::logical_expr::Operator::And,
                predicate,
            )) as Arc<dyn PhysicalExpr>
        } else {
            predicate
        };
        exprs.push((visible, VISIBLE.to_string()));
        built
            .operators
            .push(Box::new(ProjectionOperator::try_new(exprs, &schema)?));
        built.visibility = true;
        Ok(built)
    }

    /// A stream's rows, with its event-time column marked.
    fn stream_base(&mut self, entry: &Arc<StreamEntry>) -> Built {
        let mut times = vec![None; entry.schema.fields().len()];
        if let Some(i) = entry
            .def
            .watermark
            .as_ref()
            .and_then(|w| entry.def.column_index(&w.column))
        {
            times[i] = Some(TimeColumn::EventTime);
        }
        Built {
            base: Base::Source(self.source_index(entry)),
            input: Arc::clone(&entry.schema),
            operators: Vec::new(),
            times,
            session_gap_ns: None,
            aggregated: false,
            windowed_aggregate: false,
            key: None,
            visibility: false,
        }
    }

    /// Another materialized view's query, compiled into this one (a derived stream).
    fn inline_view(&mut self, view: &Arc<ViewEntry>) -> Result<Built> {
        let name = &view.def.name;
        let (plan, options) = self.view_plans.get(name).cloned().ok_or_else(|| {
            Error::Internal(format!(
                "view {name} was not planned before compiling; this is a bug"
            ))
        })?;
        let saved = std::mem::replace(&mut self.options, options);
        let built = self.build(&plan);
        self.options = saved;
        if !self.views.contains(name) {
            self.views.push(name.clone());
        }
        built
    }

    /// The rows a window function windows, then the window assigner.
    fn build_window(&mut self, t: &WindowTable) -> Result<Built> {
        let time = t.input_schema.field(t.time_index).name().clone();
        let mut built = match &t.input {
            WindowInput::Stream(stream) => {
                let def = &stream.def;
                match &def.watermark {
                    Some(w) if w.column == time => {}
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
                self.stream_base(stream)
            }
            WindowInput::View(view) => {
                let built = self.inline_view(view)?;
                derived_window_input(
                    built,
                    t.time_index,
                    &time,
                    &format!("view {}", view.def.name),
                )?
            }
            WindowInput::Query(plan) => {
                let plan = self.state.optimize(plan)?;
                // The windowed rows only append: the subquery's own aggregates emit each window
                // once, whatever the outer query's emit mode.
                let saved = std::mem::take(&mut self.options);
                let built = self.build(&plan);
                self.options = saved;
                let built = built?;
                derived_window_input(built, t.time_index, &time, "the subquery")?
            }
        };
        if built.session_gap_ns.is_some() {
            return Err(unsupported("a window over SESSION windows"));
        }
        let operator = t.operator()?;
        let width = operator.schema().fields().len();
        built.times.resize(width, None);
        built.times[t.time_index] = Some(TimeColumn::EventTime);
        if let Some(size_ns) = t.spec.size_ns() {
            built.times[width - 2] = Some(TimeColumn::WindowStart { size_ns });
            built.times[width - 1] = Some(TimeColumn::WindowEnd { size_ns });
        } else {
            built.times[width - 2] = None;
            built.times[width - 1] = None;
        }
        if let WindowSpec::Session { gap_ns } = t.spec {
            built.session_gap_ns = Some(gap_ns);
        }
        built.operators.push(operator);
        Ok(built)
    }

    fn build_scan(&mut self, scan: &datafusion::logical_expr::TableScan) -> Result<Built> {
        let provider = source_as_provider(&scan.source)?;
        if !scan.filters.is_empty() {
            return Err(Error::Internal(
                "a filter was pushed into a stream scan; this is a bug".into(),
            ));
        }
        let mut built = if let Some(t) = provider_as::<WindowTable>(&provider) {
            self.build_window(t)?
        } else if let Some(s) = provider_as::<StreamTable>(&provider) {
            self.stream_base(&s.entry())
        } else if let Some(v) = provider_as::<ViewTable>(&provider) {
            self.inline_view(&v.entry())?
        } else if provider_as::<RefTable>(&provider).is_some() {
            return Err(Error::NotSupported(format!(
                "{} is a table: a continuous query reads a stream, and joins tables to it \
                 (FROM stream JOIN {} ON stream.column = {}.primary_key)",
                scan.table_name, scan.table_name, scan.table_name
            )));
        } else {
            return Err(unsupported(&format!("reading {}", scan.table_name)));
        };
        if let Some(projection) = &scan.projection {
            let schema = built
                .operators
                .last()
                .map_or_else(|| Arc::clone(&built.input), |o| o.schema());
            let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = projection
                .iter()
                .map(|&i| {
                    let name = schema.field(i).name().clone();
                    (
                        Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
                        name,
                    )
                })
                .collect();
            if let Some(key) = &built.key {
                let mapped: Option<Vec<usize>> = key
                    .iter()
                    .map(|k| projection.iter().position(|p| p == k))
                    .collect();
                built.key = Some(mapped.ok_or_else(|| {
                    Error::NotSupported(
                        "reading a view whose rows change needs every column of its key".into(),
                    )
                })?);
            }
            if built.visibility {
                let last = schema.fields().len() - 1;
                exprs.push((Arc::new(Column::new(VISIBLE, last)), VISIBLE.to_string()));
            }
            built.times = projection
                .iter()
                .map(|&i| built.times.get(i).copied().flatten())
                .collect();
            built
                .operators
                .push(Box::new(ProjectionOperator::try_new(exprs, &schema)?));
        }
        Ok(built)
    }

    fn build_projection(&mut self, p: &datafusion::logical_expr::Projection) -> Result<Built> {
        let mut built = self.build(&p.input)?;
        let input = p.input.schema();
        let source_index = |e: &Expr| -> Option<usize> {
            let e = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                e => e,
            };
            match e {
                Expr::Column(c) => input.index_of_column(c).ok(),
                _ => None,
            }
        };
        if let Some(key) = &built.key {
            let position = |k: usize| p.expr.iter().position(|e| source_index(e) == Some(k));
            let mapped: Option<Vec<usize>> = key.iter().map(|&k| position(k)).collect();
            built.key = Some(mapped.ok_or_else(|| {
                Error::NotSupported(
                    "results that change (EMIT ON UPDATE, or GROUP BY without a window) must \
                     select every GROUP BY column, so that each row can be updated in place"
                        .into(),
                )
            })?);
        }
        built.times = p
            .expr
            .iter()
            .map(|e| source_index(e).and_then(|i| built.times.get(i).copied().flatten()))
            .collect();
        let mut exprs = p
            .expr
            .iter()
            .zip(p.schema.fields())
            .map(|(e, f)| {
                Ok((
                    self.state.create_physical_expr(e.clone(), input)?,
                    f.name().clone(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        if built.visibility {
            let width = input.fields().len();
            exprs.push((Arc::new(Column::new(VISIBLE, width)), VISIBLE.to_string()));
        }
        let schema = Self::physical_schema(&p.input, &built);
        built
            .operators
            .push(Box::new(ProjectionOperator::try_new(exprs, &schema)?));
        Ok(built)
    }

    /// GROUP BY over SESSION(...): the group columns other than the window's are the session key.
    fn build_session_aggregate(
        &self,
        mut built: Built,
        agg: &datafusion::logical_expr::Aggregate,
        plan: &LogicalPlan,
        gap_ns: i64,
    ) -> Result<Built> {
        if self.options.emit == Some(EmitMode::OnUpdate) || self.options.allowed_lateness_ns > 0 {
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
                    keys.push(self.state.create_physical_expr(e.clone(), input_schema)?);
                }
            }
        }
        let Some(start_index) = start_index else {
            return Err(Error::NotSupported(
                "a SESSION window aggregate must GROUP BY window_start (and the session key)"
                    .into(),
            ));
        };
        let aggregates = aggregate_specs(agg, self.state)?;
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
        built.session_gap_ns = None;
        built.times = vec![None; plan.schema().fields().len()];
        Ok(built)
    }

    fn build_aggregate(
        &mut self,
        agg: &datafusion::logical_expr::Aggregate,
        plan: &LogicalPlan,
    ) -> Result<Built> {
        let mut built = self.build(&agg.input)?;
        if built.key.is_some() {
            return Err(unsupported(
                "an aggregate over results that change (EMIT ON UPDATE, allowed_lateness, or GROUP BY without a window)",
            ));
        }
        if agg.group_expr.is_empty() {
            return self.build_global_aggregate(built, agg, plan);
        }
        if let Some(gap_ns) = built.session_gap_ns {
            return self.build_session_aggregate(built, agg, plan, gap_ns);
        }
        let input_schema = agg.input.schema();
        // The window: a group column holding window starts (preferred) or ends.
        let mut window = None;
        let mut size_ns = 0;
        let mut out_times = vec![None; plan.schema().fields().len()];
        for (g, e) in agg.group_expr.iter().enumerate() {
            if let Expr::GroupingSet(_) = e {
                return Err(unsupported("GROUPING SETS / ROLLUP / CUBE"));
            }
            let Expr::Column(c) = e else { continue };
            let i = input_schema.index_of_column(c)?;
            match built.times.get(i).copied().flatten() {
                Some(t @ TimeColumn::WindowStart { size_ns: s }) => {
                    window = Some(WindowColumn::Start(i));
                    size_ns = s;
                    out_times[g] = Some(t);
                }
                Some(t @ TimeColumn::WindowEnd { size_ns: s }) => {
                    if !matches!(window, Some(WindowColumn::Start(_))) {
                        window = Some(WindowColumn::End(i));
                        size_ns = s;
                    }
                    out_times[g] = Some(t);
                }
                _ => {}
            }
        }
        let emit = self.options.emit;
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
                    self.state.create_physical_expr(e.clone(), input_schema)?,
                    f.name().clone(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let aggregates = aggregate_specs(agg, self.state)?;
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
            operator = operator.with_allowed_lateness(self.options.allowed_lateness_ns);
            built.windowed_aggregate = true;
        } else if self.options.allowed_lateness_ns > 0 {
            return Err(Error::NotSupported(
                "allowed_lateness applies to windowed aggregates (GROUP BY window_start)".into(),
            ));
        }
        if operator.upserts() {
            built.key = Some((0..agg.group_expr.len()).collect());
        }
        built.operators.push(Box::new(operator));
        built.aggregated = true;
        built.times = out_times;
        Ok(built)
    }

    /// An aggregate without GROUP BY: one row, updated as events arrive. It runs as a grouped
    /// aggregate over one constant group whose column is then dropped.
    fn build_global_aggregate(
        &self,
        mut built: Built,
        agg: &datafusion::logical_expr::Aggregate,
        plan: &LogicalPlan,
    ) -> Result<Built> {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        if built.session_gap_ns.is_some() {
            return Err(Error::NotSupported(
                "a SESSION window aggregate must GROUP BY window_start (and the session key)"
                    .into(),
            ));
        }
        if self.options.emit == Some(EmitMode::OnWindowClose) {
            return Err(Error::NotSupported(
                "EMIT ON WINDOW CLOSE needs a window: read FROM TUMBLE(...) or HOP(...) \
                 and GROUP BY window_start, window_end"
                    .into(),
            ));
        }
        if self.options.allowed_lateness_ns > 0 {
            return Err(Error::NotSupported(
                "allowed_lateness applies to windowed aggregates (GROUP BY window_start)".into(),
            ));
        }
        const ALL: &str = "weir_all";
        let output = arrow_schema(plan);
        let mut fields = vec![Arc::new(Field::new(ALL, DataType::Int64, false))];
        fields.extend(output.fields().iter().cloned());
        let with_group = Arc::new(Schema::new(fields));
        let group: Arc<dyn PhysicalExpr> = datafusion::physical_expr::expressions::lit(
            datafusion::common::ScalarValue::Int64(Some(0)),
        );
        let operator = WindowAggregateOperator::try_new(
            &arrow_schema(&agg.input),
            vec![(group, ALL.to_string())],
            None,
            0,
            aggregate_specs(agg, self.state)?,
            Arc::clone(&with_group),
            Emit::OnUpdate,
        )?;
        built.operators.push(Box::new(operator));
        let exprs = output
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                (
                    Arc::new(Column::new(f.name(), i + 1)) as Arc<dyn PhysicalExpr>,
                    f.name().clone(),
                )
            })
            .collect();
        built
            .operators
            .push(Box::new(ProjectionOperator::try_new(exprs, &with_group)?));
        built.key = Some(Vec::new());
        built.aggregated = true;
        built.times = vec![None; output.fields().len()];
        Ok(built)
    }

    fn build_join(&mut self, join: &datafusion::logical_expr::Join) -> Result<Built> {
        use datafusion::logical_expr::JoinType;
        if join.null_equality == datafusion::common::NullEquality::NullEqualsNull {
            return Err(unsupported("a join where NULL keys match"));
        }
        let left_side = Self::table_side(&join.left)?;
        let right_side = Self::table_side(&join.right)?;
        match (left_side, right_side) {
            (Some(_), Some(_)) => Err(Error::NotSupported(
                "a continuous query joining two tables has no stream to follow; join a stream to the tables"
                    .into(),
            )),
            (None, Some(table)) => self.build_lookup_join(join, table, false),
            (Some(table), None) => self.build_lookup_join(join, table, true),
            (None, None) => {
                if join.join_type != JoinType::Inner {
                    return Err(unsupported(&format!(
                        "a {} join of two streams (only inner joins)",
                        join.join_type
                    )));
                }
                self.build_stream_join(join)
            }
        }
    }

    /// `stream JOIN table ON stream.x = table.primary_key`: each event with the table's row.
    fn build_lookup_join(
        &mut self,
        join: &datafusion::logical_expr::Join,
        table: TableSide,
        table_first: bool,
    ) -> Result<Built> {
        use datafusion::logical_expr::JoinType;
        let keep_unmatched = match (join.join_type, table_first) {
            (JoinType::Inner, _) => false,
            (JoinType::Left, false) | (JoinType::Right, true) => true,
            (t, _) => {
                return Err(unsupported(&format!(
                    "a {t} join of a stream and a table (inner, or stream LEFT JOIN table)"
                )));
            }
        };
        let stream_plan = if table_first { &join.right } else { &join.left };
        let mut built = self.build(stream_plan)?;
        if built.key.is_some() {
            return Err(unsupported(
                "a lookup join of results that change (EMIT ON UPDATE or GROUP BY without a window)",
            ));
        }
        let entry = Arc::clone(&table.table);
        let table_schema = if table_first {
            join.left.schema()
        } else {
            join.right.schema()
        };
        let mut keys: Vec<Option<Arc<dyn PhysicalExpr>>> = vec![None; entry.key.len()];
        for (l, r) in &join.on {
            let (stream_expr, table_expr) = if table_first { (r, l) } else { (l, r) };
            let column = column_of(table_expr)
                .and_then(|c| table_schema.index_of_column(c).ok())
                .map(|i| table.projection[i]);
            let Some(position) = column.and_then(|c| entry.key.iter().position(|&k| k == c)) else {
                return Err(Error::NotSupported(format!(
                    "a stream joins table {} on its primary key ({}); {table_expr} is not part of it",
                    entry.def.name,
                    entry.def.primary_key.join(", ")
                )));
            };
            keys[position] = Some(
                self.state
                    .create_physical_expr(stream_expr.clone(), stream_plan.schema())?,
            );
        }
        let keys: Vec<Arc<dyn PhysicalExpr>> =
            keys.into_iter().collect::<Option<_>>().ok_or_else(|| {
                Error::NotSupported(format!(
                    "a stream joins table {} on its whole primary key ({}) with equalities",
                    entry.def.name,
                    entry.def.primary_key.join(", ")
                ))
            })?;
        // Conditions on the table alone decide which table rows can match.
        let table_filter = match table.filters.iter().cloned().reduce(Expr::and) {
            None => None,
            Some(f) => {
                let schema = datafusion::common::DFSchema::try_from_qualified_schema(
                    table.name.clone(),
                    &entry.schema,
                )?;
                Some(self.state.create_physical_expr(f, &schema)?)
            }
        };
        if keep_unmatched && join.filter.is_some() {
            return Err(unsupported(
                "a condition across the stream and the table in a LEFT JOIN (use an inner join)",
            ));
        }
        let after: Vec<Expr> = join.filter.iter().cloned().collect();
        let output = Arc::new(join.schema.as_arrow().clone());
        let op = LookupJoinOperator::try_new(
            entry.def.name.clone(),
            keys,
            Arc::clone(&entry.rows),
            table_filter,
            table.projection.clone(),
            keep_unmatched,
            table_first,
            Arc::clone(&output),
        )?;
        built.operators.push(Box::new(op));
        let table_times = vec![None; table.projection.len()];
        built.times = if table_first {
            table_times.into_iter().chain(built.times).collect()
        } else {
            built.times.into_iter().chain(table_times).collect()
        };
        if let Some(predicate) = after.into_iter().reduce(Expr::and) {
            let predicate = self.state.create_physical_expr(predicate, &join.schema)?;
            built
                .operators
                .push(Box::new(FilterOperator::try_new(predicate, output)?));
        }
        if !self.tables.iter().any(|t| t.def.name == entry.def.name) {
            self.tables.push(entry);
        }
        Ok(built)
    }

    /// A join of two streams, bounded in time by window columns or an interval condition.
    fn build_stream_join(&mut self, join: &datafusion::logical_expr::Join) -> Result<Built> {
        let left = self.build(&join.left)?;
        let right = self.build(&join.right)?;
        if left.key.is_some() || right.key.is_some() {
            return Err(unsupported(
                "a join of results that change (EMIT ON UPDATE, allowed_lateness, or GROUP BY without a window)",
            ));
        }
        if left.session_gap_ns.is_some() || right.session_gap_ns.is_some() {
            return Err(unsupported("a join of SESSION windows"));
        }
        let left_width = join.left.schema().fields().len();
        let schema = join.schema.as_ref();
        let times: Vec<Option<TimeColumn>> =
            left.times.iter().chain(&right.times).copied().collect();
        let mut conditions: Vec<Expr> = join
            .on
            .iter()
            .map(|(l, r)| l.clone().eq(r.clone()))
            .collect();
        if let Some(f) = &join.filter {
            conjuncts(f, &mut conditions);
        }
        let bounds = time_bounds(&conditions, schema, left_width, &times);
        let lag = |i: usize| times[i].map_or(0, TimeColumn::lag_ns);
        // A left row at a can meet right rows with b <= a - low; those still to come have
        // b >= watermark - lag(b). So it is kept while a - low + lag(b) >= watermark.
        let left_keep = bounds
            .iter()
            .filter_map(|b| b.low.map(|low| (b.left, lag(left_width + b.right) - low)))
            .min_by_key(|&(_, offset)| offset);
        // A right row at b meets left rows with a <= b + high; those to come have
        // a >= watermark - lag(a).
        let right_keep = bounds
            .iter()
            .filter_map(|b| b.high.map(|high| (b.right, high + lag(b.left))))
            .min_by_key(|&(_, offset)| offset);
        let (Some((left_column, left_offset)), Some((right_column, right_offset))) =
            (left_keep, right_keep)
        else {
            return Err(Error::NotSupported(
                "this join of two streams would keep every row forever: bound it in time. \
                 Join windowed inputs on their window (a.window_start = b.window_start AND \
                 a.window_end = b.window_end), or bound the event times \
                 (a.ts BETWEEN b.ts - INTERVAL '1' MINUTE AND b.ts)"
                    .into(),
            ));
        };
        let left_schema = join.left.schema();
        let right_schema = join.right.schema();
        let mut left_keys = Vec::new();
        let mut right_keys = Vec::new();
        for (l, r) in &join.on {
            left_keys.push(self.state.create_physical_expr(l.clone(), left_schema)?);
            right_keys.push(self.state.create_physical_expr(r.clone(), right_schema)?);
        }
        let filter = match &join.filter {
            Some(f) => Some(self.state.create_physical_expr(f.clone(), &join.schema)?),
            None => None,
        };
        let left_time = TimeColumn::lag_ns(times[left_column].unwrap_or(TimeColumn::EventTime));
        let right_time =
            TimeColumn::lag_ns(times[left_width + right_column].unwrap_or(TimeColumn::EventTime));
        let op = StreamJoinOperator::try_new(
            JoinInput {
                keys: left_keys,
                time: left_column,
                time_lag_ns: left_time,
                expiry_column: left_column,
                expiry_offset_ns: left_offset,
            },
            JoinInput {
                keys: right_keys,
                time: right_column,
                time_lag_ns: right_time,
                expiry_column: right_column,
                expiry_offset_ns: right_offset,
            },
            &Arc::new(left_schema.as_arrow().clone()),
            filter,
            Arc::new(join.schema.as_arrow().clone()),
        )?;
        // Window columns equated across the join keep their meaning in the output: a match is
        // emitted when its later row arrives, which is never behind the watermark.
        let mut out_times = vec![None; times.len()];
        for b in &bounds {
            if b.low == Some(0) && b.high == Some(0) {
                let r = left_width + b.right;
                if matches!(
                    times[b.left],
                    Some(TimeColumn::WindowEnd { .. } | TimeColumn::WindowStart { .. })
                ) {
                    out_times[b.left] = times[b.left];
                    out_times[r] = times[r];
                }
            }
        }
        let windowed_aggregate = left.windowed_aggregate || right.windowed_aggregate;
        let aggregated = left.aggregated || right.aggregated;
        let input = Arc::new(join.schema.as_arrow().clone());
        Ok(Built {
            base: Base::Join(left.into_dataflow(), right.into_dataflow(), Box::new(op)),
            input,
            operators: Vec::new(),
            times: out_times,
            session_gap_ns: None,
            aggregated,
            windowed_aggregate,
            key: None,
            visibility: false,
        })
    }
}
