//! Lowering: a DataFusion logical plan, walked bottom-up, becomes engine operators. This file
//! holds the walk and the plain nodes (scans, filters, projections); windows, aggregates and
//! joins each lower in a file of their own.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use weir_engine::dataflow::Dataflow;
use weir_engine::operator::{
    BinaryOperator, FilterOperator, INSERTED, Operator, ProjectionOperator, UnionOperator,
    UpsertChangelogOperator,
};
use weir_engine::pipeline::Pipeline;

use super::ViewOptions;
use super::bounds::TimeColumn;
use crate::catalog::{StreamEntry, TableEntry, ViewEntry};
use crate::providers::{RefTable, StreamTable, ViewTable, WindowTable, provider_as};
use crate::{Error, Result};

mod aggregate;
mod hop;
mod join;
mod over;
mod shared;
mod top_n;
mod window;

/// Where the rows of a subtree come from.
pub(crate) enum Base {
    /// A source stream, by position in the query's sources.
    Source(usize),
    /// A join of two subtrees.
    Join(Dataflow, Dataflow, Box<dyn BinaryOperator>),
    /// A join of one subtree's rows with themselves, each side through its own operators.
    Fork(Dataflow, Pipeline, Pipeline, Box<dyn BinaryOperator>),
    /// The rows of the subplan both sides of the join being lowered share
    /// ([`shared::SharedSubplan`]); only that join takes them.
    Shared,
}

/// What a subtree compiles to.
pub(crate) struct Built {
    pub(crate) base: Base,
    /// The schema of the rows `base` delivers.
    pub(crate) input: SchemaRef,
    /// Operators over `base`'s rows, first to last.
    pub(crate) operators: Vec<Box<dyn Operator>>,
    /// Per output column, what it says about time.
    pub(crate) times: Vec<Option<TimeColumn>>,
    /// The gap when the rows come from SESSION(...).
    pub(crate) session_gap_ns: Option<i64>,
    /// Flink's `SESSION(TABLE t PARTITION BY k, ...)`: the columns sessions are formed per
    /// (none: over all rows); `None` for Weir's SESSION, whose sessions are per GROUP BY key.
    pub(crate) session_partition: Option<Vec<String>>,
    /// The HOP assigner among `operators`, while an aggregate over it may take it by panes.
    pub(crate) hop: Option<hop::HopSite>,
    pub(crate) aggregated: bool,
    /// A windowed aggregate (TUMBLE or HOP) is in this subtree.
    pub(crate) windowed_aggregate: bool,
    /// Set once results are upserts: the output columns of the group key.
    pub(crate) key: Option<Vec<usize>>,
    /// Upserts carry one more, last, column: whether the row passes HAVING (else it leaves).
    pub(crate) visibility: bool,
    /// The rows are a changelog (results that change, without their key): one more, last,
    /// column ([`INSERTED`]) says whether each row is inserted or taken back.
    pub(crate) changelog: bool,
}

/// The name of the column that says whether an upserted row passes HAVING.
pub(crate) const VISIBLE: &str = "weir_visible";

impl Built {
    /// Whether the rows change after they are emitted (upserts or a changelog), rather than
    /// only append.
    pub(crate) fn changes(&self) -> bool {
        self.key.is_some() || self.changelog
    }

    /// The column that follows the rows' own: [`VISIBLE`] or [`INSERTED`], if either.
    pub(crate) fn trailer(&self) -> Option<(&'static str, bool)> {
        if self.visibility {
            Some((VISIBLE, true))
        } else if self.changelog {
            Some((INSERTED, false))
        } else {
            None
        }
    }

    /// The schema of the rows the subtree gives: its last operator's, or its base's.
    pub(crate) fn output_schema(&self) -> SchemaRef {
        self.operators
            .last()
            .map_or_else(|| Arc::clone(&self.input), |o| o.schema())
    }

    pub(crate) fn into_dataflow(self) -> Result<Dataflow> {
        let pipeline = Pipeline::new(self.input, self.operators);
        Ok(match self.base {
            Base::Source(source) => Dataflow::Source { source, pipeline },
            Base::Join(left, right, join) => Dataflow::join(left, right, join, pipeline),
            Base::Fork(input, left, right, join) => {
                Dataflow::fork(input, left, right, join, pipeline)
            }
            Base::Shared => {
                return Err(Error::Internal(
                    "a shared subplan's rows outside its join; this is a bug".into(),
                ));
            }
        })
    }
}

pub(crate) fn arrow_schema(plan: &LogicalPlan) -> SchemaRef {
    Arc::new(plan.schema().as_arrow().clone())
}

/// Columns `indices` of `schema`, each under its own name: the expressions of a projection
/// that keeps them.
pub(crate) fn column_exprs(
    schema: &SchemaRef,
    indices: &[usize],
) -> Vec<(Arc<dyn PhysicalExpr>, String)> {
    indices
        .iter()
        .map(|&i| {
            let name = schema.field(i).name().clone();
            (
                Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
                name,
            )
        })
        .collect()
}

/// The column of `times` that holds the event time, which a `state_ttl` counts from; `what`
/// names the rows for the refusal.
pub(crate) fn event_time_column(times: &[Option<TimeColumn>], what: &str) -> Result<usize> {
    times
        .iter()
        .position(|t| matches!(t, Some(TimeColumn::EventTime)))
        .ok_or_else(|| {
            Error::NotSupported(format!(
                "state_ttl needs {what} to have an event time (a column the watermark follows)"
            ))
        })
}

pub(crate) fn unsupported(what: &str) -> Error {
    Error::NotSupported(format!("{what} is not supported in a continuous query yet"))
}

/// Checks that a derived stream (a view's or a subquery's rows, which only append: rows that
/// change are windowed by `window_over_changes`) can be windowed over column `time`: the column
/// follows the watermark.
pub(crate) fn derived_window_input(
    built: Built,
    time_index: usize,
    time: &str,
    what: &str,
) -> Result<Built> {
    match built.times.get(time_index).copied().flatten() {
        Some(TimeColumn::EventTime | TimeColumn::WindowEnd { .. }) => Ok(built),
        _ => Err(Error::NotSupported(format!(
            "a window over column {time} of {what}, which does not follow the watermark; \
             window over the event time it passes through from its stream, or over window_end \
             of its windows"
        ))),
    }
}

/// Compiles a logical plan bottom-up, collecting the sources and tables it reads.
pub(crate) struct Planner<'a> {
    pub(crate) state: &'a SessionState,
    pub(crate) options: ViewOptions,
    pub(crate) sources: Vec<Arc<StreamEntry>>,
    pub(crate) tables: Vec<Arc<TableEntry>>,
    /// The plans (and options) of the views this query reads, by name.
    pub(crate) view_plans: HashMap<String, (LogicalPlan, ViewOptions)>,
    /// The views compiled into this query.
    pub(crate) views: Vec<String>,
    /// A filter's bound on a rank, on its way down to the ROW_NUMBER it bounds.
    pub(crate) rank_limit: Option<top_n::RankLimit>,
    /// Whether the view's `state_ttl` bounds some operator's state.
    pub(crate) ttl_applied: bool,
    /// The subplan both sides of the join being lowered share, if they do.
    pub(crate) shared: Option<shared::SharedSubplan>,
    /// The query stamps rows with `PROCTIME()`: its time is processing time, the sources'
    /// watermarks follow the clock, and their event-time columns do not follow the watermark.
    pub(crate) processing_time: bool,
}

impl<'a> Planner<'a> {
    /// A planner for one query, with the plans of the views it reads.
    pub(crate) fn new(
        state: &'a SessionState,
        options: ViewOptions,
        view_plans: HashMap<String, (LogicalPlan, ViewOptions)>,
    ) -> Self {
        Self {
            state,
            options,
            sources: Vec::new(),
            tables: Vec::new(),
            view_plans,
            views: Vec::new(),
            rank_limit: None,
            ttl_applied: false,
            shared: None,
            processing_time: false,
        }
    }
}

impl Planner<'_> {
    pub(crate) fn source_index(&mut self, stream: &Arc<StreamEntry>) -> usize {
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

    pub(crate) fn build(&mut self, plan: &LogicalPlan) -> Result<Built> {
        if let Some(shared) = self.shared.as_ref().filter(|s| s.is(plan)) {
            return Ok(shared.placeholder());
        }
        match plan {
            LogicalPlan::TableScan(scan) => self.build_scan(scan),
            LogicalPlan::SubqueryAlias(a) => self.build(&a.input),
            LogicalPlan::Filter(f) => {
                // A bound on a ROW_NUMBER's rank goes down to it, and is then taken out here.
                let (rank, rest) = match top_n::rank_limit(&f.predicate) {
                    Some((limit, rest)) => (Some(limit), rest),
                    None => (None, Vec::new()),
                };
                let bounded = rank.is_some();
                // A bound is only for a ROW_NUMBER right below this filter: one from a filter
                // above waits until this subtree is built.
                let outer = std::mem::replace(&mut self.rank_limit, rank);
                let built = self.build(&f.input);
                let consumed = bounded && self.rank_limit.is_none();
                self.rank_limit = outer;
                let mut built = built?;
                let predicate = if consumed {
                    rest.into_iter().reduce(Expr::and)
                } else {
                    Some(f.predicate.clone())
                };
                let Some(predicate) = predicate else {
                    return Ok(built);
                };
                let predicate = self
                    .state
                    .create_physical_expr(predicate, f.input.schema())?;
                if built.key.is_some() {
                    // Over results that change, a group that stops matching must leave the
                    // view: compute the condition as a column that the view's table obeys.
                    return self.push_visibility(built, &f.input, predicate);
                }
                let schema = Self::physical_schema(&f.input, &built);
                built
                    .operators
                    .push(Box::new(FilterOperator::try_new(predicate, schema)?));
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
            LogicalPlan::Window(w) if over::is_over_aggregate(w) => self.build_over(w),
            LogicalPlan::Window(w) => self.build_top_n(w),
            LogicalPlan::Union(u) => self.build_union(u),
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
    pub(crate) fn physical_schema(plan: &LogicalPlan, built: &Built) -> SchemaRef {
        let schema = arrow_schema(plan);
        let Some((name, nullable)) = built.trailer() else {
            return schema;
        };
        let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
        fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
            name,
            datafusion::arrow::datatypes::DataType::Boolean,
            nullable,
        )));
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
    }

    /// HAVING over upserts: every column passes through, plus whether the row passes (and
    /// passed any earlier HAVING).
    pub(crate) fn push_visibility(
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

    /// A stream's rows, with its event-time column marked (in a processing-time query, which
    /// follows the clock instead, none).
    pub(crate) fn stream_base(&mut self, entry: &Arc<StreamEntry>) -> Built {
        let mut times = vec![None; entry.schema.fields().len()];
        if let Some(i) = entry
            .def
            .watermark
            .as_ref()
            .and_then(|w| entry.def.column_index(&w.column))
            .filter(|_| !self.processing_time)
        {
            times[i] = Some(TimeColumn::EventTime);
        }
        Built {
            base: Base::Source(self.source_index(entry)),
            input: Arc::clone(&entry.schema),
            operators: Vec::new(),
            times,
            session_gap_ns: None,
            session_partition: None,
            hop: None,
            aggregated: false,
            windowed_aggregate: false,
            key: None,
            visibility: false,
            changelog: false,
        }
    }

    /// Upserts that lose a column of their key (a projection, or an aggregate over them) go on
    /// as a changelog: each change of a key's row becomes the old row taken back and the new one
    /// inserted. `schema` is the schema of the rows so far, with their visibility column.
    pub(crate) fn into_changelog(mut built: Built, schema: &SchemaRef) -> Result<Built> {
        let Some(key) = built.key.take() else {
            return Ok(built);
        };
        built
            .operators
            .push(Box::new(UpsertChangelogOperator::try_new(
                schema,
                key,
                built.visibility,
            )?));
        built.visibility = false;
        built.changelog = true;
        Ok(built)
    }

    /// Rows that only append as a changelog: each one inserted.
    pub(crate) fn append_only_changelog(mut built: Built) -> Result<Built> {
        let schema = built.output_schema();
        let all: Vec<usize> = (0..schema.fields().len()).collect();
        let mut exprs = column_exprs(&schema, &all);
        exprs.push((
            Arc::new(datafusion::physical_expr::expressions::Literal::new(
                datafusion::common::ScalarValue::Boolean(Some(true)),
            )),
            INSERTED.to_string(),
        ));
        built
            .operators
            .push(Box::new(ProjectionOperator::try_new(exprs, &schema)?));
        built.changelog = true;
        Ok(built)
    }

    /// UNION ALL: the rows of every input, as they come. Over inputs whose rows change, each
    /// goes in as a changelog and so does the union.
    pub(crate) fn build_union(&mut self, union: &datafusion::logical_expr::Union) -> Result<Built> {
        let schema = Arc::new(union.schema.as_arrow().clone());
        let mut inputs = union.inputs.iter();
        let first = inputs
            .next()
            .ok_or_else(|| Error::Internal("a UNION without inputs".into()))?;
        let mut built = self.build(first)?;
        for next in inputs {
            let right = self.build(next)?;
            built = self.union_of(built, right, &schema)?;
        }
        Ok(built)
    }

    fn union_of(&mut self, left: Built, right: Built, schema: &SchemaRef) -> Result<Built> {
        if left.session_gap_ns.is_some() || right.session_gap_ns.is_some() {
            return Err(unsupported("a UNION of SESSION windows"));
        }
        let changes = left.changes() || right.changes();
        let as_changelog = |b: Built| -> Result<Built> {
            match (b.changes(), changes) {
                (_, false) => Ok(b),
                (true, true) => {
                    let s = b.output_schema();
                    Self::into_changelog(b, &s)
                }
                (false, true) => Self::append_only_changelog(b),
            }
        };
        let (left, right) = (as_changelog(left)?, as_changelog(right)?);
        let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
        if changes {
            fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
                INSERTED,
                datafusion::arrow::datatypes::DataType::Boolean,
                false,
            )));
        }
        let output = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
        // A column follows the watermark in the union if it does so in both inputs alike.
        let times = left
            .times
            .iter()
            .zip(&right.times)
            .map(|(l, r)| if l == r { *l } else { None })
            .collect();
        let aggregated = left.aggregated || right.aggregated;
        let windowed_aggregate = left.windowed_aggregate || right.windowed_aggregate;
        let op = UnionOperator::new(Arc::clone(&output));
        Ok(Built {
            base: Self::join_base(None, left, right, Box::new(op))?,
            input: output,
            operators: Vec::new(),
            times,
            session_gap_ns: None,
            session_partition: None,
            hop: None,
            aggregated,
            windowed_aggregate,
            key: None,
            visibility: false,
            changelog: changes,
        })
    }

    /// Another materialized view's query, compiled into this one (a derived stream).
    pub(crate) fn inline_view(&mut self, view: &Arc<ViewEntry>) -> Result<Built> {
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

    pub(crate) fn build_scan(
        &mut self,
        scan: &datafusion::logical_expr::TableScan,
    ) -> Result<Built> {
        let provider = source_as_provider(&scan.source)?;
        if !scan.filters.is_empty() {
            return Err(Error::Internal(
                "a filter was pushed into a stream scan; this is a bug".into(),
            ));
        }
        let mut projection = scan.projection.clone();
        let mut built = if let Some(t) = provider_as::<WindowTable>(&provider) {
            // HOP copies each row into several windows: the input columns the query does not
            // read are dropped before it (the scan's projection then counts in what is left).
            // TUMBLE and SESSION add columns without copying, so they take the rows whole.
            let width_in = t.input_schema.fields().len();
            let hop = matches!(t.spec, crate::providers::WindowSpec::Hop { .. });
            let keep = projection.as_ref().filter(|_| hop).map(|p| {
                let mut keep: Vec<usize> = p.iter().copied().filter(|&i| i < width_in).collect();
                keep.push(t.time_index);
                keep.sort_unstable();
                keep.dedup();
                keep
            });
            let (built, kept) = self.build_window(t, keep.as_deref())?;
            if let (Some(p), Some(kept)) = (projection.as_mut(), kept) {
                for i in p.iter_mut() {
                    *i = match kept.iter().position(|k| k == i) {
                        Some(at) => at,
                        None => kept.len() + (*i - width_in),
                    };
                }
            }
            built
        } else if let Some(s) = provider_as::<StreamTable>(&provider) {
            self.stream_base(&s.entry())
        } else if let Some(v) = provider_as::<crate::providers::VersionedTable>(&provider) {
            // The versions side of a temporal join: the stream's rows, with its event time at
            // the end when the query does not read it (the join needs it, and drops it).
            let built = self.stream_base(&v.stream);
            let time = built
                .times
                .iter()
                .position(|t| matches!(t, Some(TimeColumn::EventTime)));
            if let (Some(p), Some(t)) = (projection.as_mut(), time) {
                if !p.contains(&t) {
                    p.push(t);
                }
            }
            built
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
        if let Some(projection) = &projection {
            let schema = built.output_schema();
            let mut exprs = column_exprs(&schema, projection);
            if let Some(key) = &built.key {
                let mapped: Option<Vec<usize>> = key
                    .iter()
                    .map(|k| projection.iter().position(|p| p == k))
                    .collect();
                match mapped {
                    Some(mapped) => built.key = Some(mapped),
                    None => built = Self::into_changelog(built, &schema)?,
                }
            }
            if let Some((name, _)) = built.trailer() {
                let last = schema.fields().len() - 1;
                exprs.push((Arc::new(Column::new(name, last)), name.to_string()));
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

    pub(crate) fn build_projection(
        &mut self,
        p: &datafusion::logical_expr::Projection,
    ) -> Result<Built> {
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
            match mapped {
                Some(mapped) => built.key = Some(mapped),
                None => {
                    let schema = Self::physical_schema(&p.input, &built);
                    built = Self::into_changelog(built, &schema)?;
                }
            }
        }
        // In a processing-time query, PROCTIME()'s column is the time the watermark follows.
        built.times = p
            .expr
            .iter()
            .map(|e| match source_index(e) {
                Some(i) => built.times.get(i).copied().flatten(),
                None if self.processing_time && crate::plan::is_proctime(e) => {
                    Some(TimeColumn::EventTime)
                }
                None => None,
            })
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
        if let Some((name, _)) = built.trailer() {
            let width = input.fields().len();
            exprs.push((Arc::new(Column::new(name, width)), name.to_string()));
        }
        let schema = Self::physical_schema(&p.input, &built);
        built
            .operators
            .push(Box::new(ProjectionOperator::try_new(exprs, &schema)?));
        Ok(built)
    }
}
