//! Lowering of GROUP BY: windowed aggregates (TUMBLE, HOP), sessions, and updating aggregates
//! over a whole stream, with DataFusion's accumulators.

use std::sync::Arc;

use datafusion::execution::SessionState;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::physical_expr::expressions::Column;
use weir_engine::operator::{
    AggregateSpec, Emit, GroupAggregateOperator, ProjectionOperator, SessionAggregateOperator,
    SessionColumn, WindowAggregateOperator, WindowColumn, WindowEdge, group_aggregate_refusal,
};

use super::{Built, Planner, arrow_schema, event_time_column, unsupported};
use crate::plan::bounds::TimeColumn;
use crate::syntax::EmitMode;
use crate::{Error, Result};

/// The physical aggregate expressions of an Aggregate node.
pub(crate) fn aggregate_specs(
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
            // An aggregate's own ORDER BY (first_value(x ORDER BY ts), array_agg(x ORDER BY y))
            // is in its accumulator, which orders rows whatever order they arrive in.
            Ok(AggregateSpec {
                expr: lowered.aggregate,
                filter: lowered.filter,
            })
        })
        .collect()
}

/// The aggregation of a GROUP BY over a whole stream that keeps state per group, so that each
/// batch costs in proportion to itself, not to the number of groups; `None` if one of the
/// aggregates needs DataFusion's accumulators (which emit all groups at once).
fn per_group_operator(
    input: &datafusion::arrow::datatypes::Schema,
    groups: &[(Arc<dyn PhysicalExpr>, String)],
    aggregates: &[AggregateSpec],
    output: datafusion::arrow::datatypes::SchemaRef,
) -> Result<Option<GroupAggregateOperator>> {
    for a in aggregates {
        if group_aggregate_refusal(a, input, false)?.is_some() {
            return Ok(None);
        }
    }
    let groups = groups.iter().map(|(e, _)| Arc::clone(e)).collect();
    Ok(Some(GroupAggregateOperator::try_new(
        input, groups, aggregates, output, false,
    )?))
}

/// The projection after an aggregate without GROUP BY: every column of `output` but the
/// constant group column the aggregation ran on (the first of `input`).
fn drop_constant_group(
    output: &datafusion::arrow::datatypes::Schema,
    input: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<ProjectionOperator> {
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
    Ok(ProjectionOperator::try_new(exprs, input)?)
}

/// Flink's SESSION TVF forms sessions per its PARTITION BY columns, Weir's session aggregate per
/// its GROUP BY key: the two agree only when the GROUP BY's columns besides the window's are
/// the PARTITION BY columns. Otherwise the query is refused, never run over other sessions.
fn check_session_partition(partition: &[String], group: &[Expr]) -> Result<()> {
    let mut keys: Vec<String> = Vec::new();
    for e in group {
        match e {
            Expr::Column(c) if c.name == "window_start" || c.name == "window_end" => {}
            Expr::Column(c) => keys.push(c.name.clone()),
            e => keys.push(e.schema_name().to_string()),
        }
    }
    let mut wanted = partition.to_vec();
    keys.sort();
    wanted.sort();
    if keys != wanted {
        let session = if partition.is_empty() {
            "SESSION(TABLE ...) without PARTITION BY (sessions over all rows)".to_string()
        } else {
            format!("SESSION(TABLE ... PARTITION BY {})", partition.join(", "))
        };
        return Err(Error::NotSupported(format!(
            "{session} grouped by [{}]: Weir forms sessions per GROUP BY key, so GROUP BY \
             exactly the PARTITION BY columns (and window_start, window_end)",
            keys.join(", ")
        )));
    }
    Ok(())
}

/// GROUP BY window_start, window_end of the window being aggregated (of `size_ns`): the same
/// for every row of a window, so not hashed (the operator checks each row holds them).
fn window_edges(
    agg: &datafusion::logical_expr::Aggregate,
    times: &[Option<TimeColumn>],
    size_ns: i64,
) -> Vec<(usize, WindowEdge)> {
    let input_schema = agg.input.schema();
    agg.group_expr
        .iter()
        .enumerate()
        .filter_map(|(g, e)| {
            let Expr::Column(c) = e else { return None };
            let i = input_schema.index_of_column(c).ok()?;
            match times.get(i).copied().flatten()? {
                TimeColumn::WindowStart { size_ns: s } if s == size_ns => {
                    Some((g, WindowEdge::Start))
                }
                TimeColumn::WindowEnd { size_ns: s } if s == size_ns => Some((g, WindowEdge::End)),
                _ => None,
            }
        })
        .collect()
}

impl Planner<'_> {
    /// GROUP BY over SESSION(...): the group columns other than the window's are the session key.
    pub(crate) fn build_session_aggregate(
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
        if let Some(partition) = &built.session_partition {
            check_session_partition(partition, &agg.group_expr)?;
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

    pub(crate) fn build_aggregate(
        &mut self,
        agg: &datafusion::logical_expr::Aggregate,
        plan: &LogicalPlan,
    ) -> Result<Built> {
        let mut built = self.build(&agg.input)?;
        if built.changes() {
            let schema = Self::physical_schema(&agg.input, &built);
            let built = Self::into_changelog(built, &schema)?;
            return self.build_retract_aggregate(built, agg, plan);
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
        let ttl = if window.is_none() {
            self.options.state_ttl_ns
        } else {
            0
        };
        if window.is_none() && self.options.allowed_lateness_ns == 0 {
            if let Some(mut operator) =
                per_group_operator(&input_arrow, &groups, &aggregates, arrow_schema(plan))?
            {
                if ttl > 0 {
                    let time = event_time_column(&built.times, "the aggregate's input")?;
                    operator = operator.with_state_ttl(time, ttl)?;
                    self.ttl_applied = true;
                }
                built.operators.push(Box::new(operator));
                built.key = Some((0..agg.group_expr.len()).collect());
                built.aggregated = true;
                built.times = out_times;
                return Ok(built);
            }
        }
        if ttl > 0 {
            return Err(Error::NotSupported(
                "state_ttl on this aggregate: its state can expire per group only for COUNT, \
                 SUM, AVG, MIN, MAX and COUNT(DISTINCT)"
                    .into(),
            ));
        }
        if let Some(w) =
            window.filter(|_| mode == Emit::OnWindowClose && self.options.allowed_lateness_ns == 0)
        {
            if self.try_hop_by_panes(&mut built, agg, plan, w, &aggregates)? {
                built.windowed_aggregate = true;
                built.aggregated = true;
                built.times = out_times;
                return Ok(built);
            }
        }
        built.hop = None;
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
            let edges = window_edges(agg, &built.times, size_ns);
            operator = operator
                .with_window_edges(&edges)?
                .with_allowed_lateness(self.options.allowed_lateness_ns);
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

    /// An aggregate over results that change, fed their changelog: each group's result follows
    /// as rows arrive and are taken back. Without GROUP BY there is always one row (a COUNT of
    /// 0 once every row is gone); with it, a group leaves when it has no rows.
    pub(crate) fn build_retract_aggregate(
        &self,
        mut built: Built,
        agg: &datafusion::logical_expr::Aggregate,
        plan: &LogicalPlan,
    ) -> Result<Built> {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        if self.options.emit == Some(EmitMode::OnWindowClose)
            || self.options.allowed_lateness_ns > 0
        {
            return Err(Error::NotSupported(
                "EMIT ON WINDOW CLOSE and allowed_lateness apply to windowed aggregates over rows \
                 that only append, not to an aggregate over results that change"
                    .into(),
            ));
        }
        if agg
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
        {
            return Err(unsupported("GROUPING SETS / ROLLUP / CUBE"));
        }
        let input = Self::physical_schema(&agg.input, &built);
        let aggregates = aggregate_specs(agg, self.state)?;
        for a in &aggregates {
            if let Some(why) = group_aggregate_refusal(a, &input, true)? {
                return Err(Error::NotSupported(format!(
                    "{why} is not supported: over results that change (a GROUP BY without a \
                     window, a Top-N, EMIT ON UPDATE), Weir keeps COUNT, SUM, AVG, MIN and MAX \
                     exactly"
                )));
            }
        }
        let global = agg.group_expr.is_empty();
        let mut groups = agg
            .group_expr
            .iter()
            .map(|e| {
                self.state
                    .create_physical_expr(e.clone(), agg.input.schema())
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let output = arrow_schema(plan);
        let mut fields: Vec<_> = output.fields().iter().cloned().collect();
        if global {
            // One constant group, dropped below.
            groups.push(datafusion::physical_expr::expressions::lit(
                datafusion::common::ScalarValue::Int64(Some(0)),
            ));
            fields.insert(0, Arc::new(Field::new("weir_all", DataType::Int64, false)));
        }
        fields.push(Arc::new(Field::new(
            super::VISIBLE,
            DataType::Boolean,
            true,
        )));
        let with_visibility = Arc::new(Schema::new(fields));
        let mut operator = GroupAggregateOperator::try_new(
            &input,
            groups,
            &aggregates,
            Arc::clone(&with_visibility),
            true,
        )?;
        if global {
            operator = operator.with_one_row();
        }
        built.operators.push(Box::new(operator));
        built.changelog = false;
        built.aggregated = true;
        built.times = vec![None; output.fields().len()];
        if global {
            built
                .operators
                .push(Box::new(drop_constant_group(&output, &with_visibility)?));
            built.key = Some(Vec::new());
        } else {
            built.key = Some((0..agg.group_expr.len()).collect());
            built.visibility = true;
        }
        Ok(built)
    }

    /// An aggregate without GROUP BY: one row, updated as events arrive. It runs as a grouped
    /// aggregate over one constant group whose column is then dropped.
    pub(crate) fn build_global_aggregate(
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
        let input = arrow_schema(&agg.input);
        let groups = vec![(group, ALL.to_string())];
        let aggregates = aggregate_specs(agg, self.state)?;
        match per_group_operator(&input, &groups, &aggregates, Arc::clone(&with_group))? {
            Some(operator) => built.operators.push(Box::new(operator.with_one_row())),
            None => built
                .operators
                .push(Box::new(WindowAggregateOperator::try_new(
                    &input,
                    groups,
                    None,
                    0,
                    aggregates,
                    Arc::clone(&with_group),
                    Emit::OnUpdate,
                )?)),
        }
        built
            .operators
            .push(Box::new(drop_constant_group(&output, &with_group)?));
        built.key = Some(Vec::new());
        built.aggregated = true;
        built.times = vec![None; output.fields().len()];
        Ok(built)
    }
}
