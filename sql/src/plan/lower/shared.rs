//! One computation for a subplan both inputs of a join read (Nexmark q5's HOP aggregate, a
//! view joined with itself): found in the logical plan, lowered once, and fed to both sides.

use std::sync::Arc;

use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::{Expr, LogicalPlan, TableScan};
use weir_engine::dataflow::Dataflow;
use weir_engine::operator::BinaryOperator;
use weir_engine::pipeline::Pipeline;

use super::{Base, Built, Planner};
use crate::providers::{StreamTable, ViewTable, WindowInput, WindowTable, provider_as};
use crate::{Error, Result};

/// The subplan being shared while the two sides of a join are lowered: where either side
/// reaches it, [`Planner::build`] gives a placeholder with the subplan's description.
pub(crate) struct SharedSubplan {
    plan: LogicalPlan,
    /// What the subplan was lowered to, but for its base and operators.
    template: Built,
}

impl SharedSubplan {
    /// Whether `plan` is the shared subplan.
    pub(crate) fn is(&self, plan: &LogicalPlan) -> bool {
        same_plan(plan, &self.plan)
    }

    /// A side's start: the shared subplan's rows, with nothing over them yet.
    pub(crate) fn placeholder(&self) -> Built {
        let t = &self.template;
        Built {
            base: Base::Shared,
            input: Arc::clone(&t.input),
            operators: Vec::new(),
            times: t.times.clone(),
            session_gap_ns: t.session_gap_ns,
            session_partition: t.session_partition.clone(),
            hop: None,
            aggregated: t.aggregated,
            windowed_aggregate: t.windowed_aggregate,
            key: t.key.clone(),
            visibility: t.visibility,
            changelog: t.changelog,
        }
    }
}

/// Whether two scans read the same rows: the same stream or view, or the same window function
/// over the same input. A scan of anything else is never taken for another.
fn same_scan(a: &TableScan, b: &TableScan) -> bool {
    let (Ok(a), Ok(b)) = (source_as_provider(&a.source), source_as_provider(&b.source)) else {
        return false;
    };
    if let (Some(a), Some(b)) = (
        provider_as::<StreamTable>(&a),
        provider_as::<StreamTable>(&b),
    ) {
        return a.entry().def.name == b.entry().def.name;
    }
    if let (Some(a), Some(b)) = (provider_as::<ViewTable>(&a), provider_as::<ViewTable>(&b)) {
        return a.entry().def.name == b.entry().def.name;
    }
    if let (Some(a), Some(b)) = (
        provider_as::<WindowTable>(&a),
        provider_as::<WindowTable>(&b),
    ) {
        let same_input = match (&a.input, &b.input) {
            (WindowInput::Stream(x), WindowInput::Stream(y)) => x.def.name == y.def.name,
            (WindowInput::View(x), WindowInput::View(y)) => x.def.name == y.def.name,
            (WindowInput::Query(x), WindowInput::Query(y)) => same_plan(x, y),
            _ => false,
        };
        return same_input && a.time_index == b.time_index && a.spec == b.spec;
    }
    false
}

/// Whether two plans compute the same rows: equal as plans (which does not compare what a
/// scan reads) and reading the same sources, scan by scan.
pub(crate) fn same_plan(a: &LogicalPlan, b: &LogicalPlan) -> bool {
    if a != b {
        return false;
    }
    if let (LogicalPlan::TableScan(x), LogicalPlan::TableScan(y)) = (a, b) {
        return same_scan(x, y);
    }
    let (xs, ys) = (a.inputs(), b.inputs());
    xs.len() == ys.len() && xs.iter().zip(&ys).all(|(x, y)| same_plan(x, y))
}

/// Whether lowering `plan` keeps state (and so is worth computing once): an aggregate, a join
/// or an OVER.
fn keeps_state(plan: &LogicalPlan) -> bool {
    matches!(
        plan,
        LogicalPlan::Aggregate(_) | LogicalPlan::Join(_) | LogicalPlan::Window(_)
    ) || plan.inputs().into_iter().any(keeps_state)
}

/// Whether any expression of `plan` (or below) holds a subquery, whose scans [`same_plan`]
/// would not compare.
fn has_subquery(plan: &LogicalPlan) -> bool {
    let subquery = |e: &Expr| {
        e.exists(|e| {
            Ok(matches!(
                e,
                Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
            ))
        })
        .unwrap_or(true)
    };
    plan.expressions().iter().any(subquery) || plan.inputs().into_iter().any(has_subquery)
}

/// Whether `target` is reached from `side` through nodes that lower to a pipeline (no join on
/// the way), so that the side is the shared rows and then operators.
fn reached_without_join(side: &LogicalPlan, target: &LogicalPlan) -> bool {
    if same_plan(side, target) {
        return true;
    }
    if matches!(side, LogicalPlan::Join(_)) {
        return false;
    }
    side.inputs()
        .into_iter()
        .any(|i| reached_without_join(i, target))
}

/// The largest subplan of `left` that `right` also computes, if it keeps state and both sides
/// reach it without another join on the way.
fn common_subplan(left: &LogicalPlan, right: &LogicalPlan) -> Option<LogicalPlan> {
    let mut stack = vec![left];
    while let Some(candidate) = stack.pop() {
        let eligible = keeps_state(candidate)
            // A rank bound comes down to a ROW_NUMBER from the filter above it, on each side.
            && !matches!(candidate, LogicalPlan::Window(_))
            && !has_subquery(candidate);
        if eligible
            && reached_without_join(left, candidate)
            && reached_without_join(right, candidate)
        {
            return Some(candidate.clone());
        }
        if !matches!(candidate, LogicalPlan::Join(_)) {
            stack.extend(candidate.inputs().into_iter().rev());
        }
    }
    None
}

/// The two inputs of a join, lowered; with the rows they both compute from, lowered once, if
/// they share a subplan.
pub(crate) struct Sides {
    pub(crate) left: Built,
    pub(crate) right: Built,
    pub(crate) shared: Option<Dataflow>,
}

impl Planner<'_> {
    /// Lowers a join's two inputs, computing a subplan they share once.
    pub(crate) fn build_sides(&mut self, join: &datafusion::logical_expr::Join) -> Result<Sides> {
        let Some(common) = common_subplan(&join.left, &join.right) else {
            return Ok(Sides {
                left: self.build(&join.left)?,
                right: self.build(&join.right)?,
                shared: None,
            });
        };
        let built = self.build(&common)?;
        let output = built.output_schema();
        let template = Built {
            base: Base::Shared,
            input: output,
            operators: Vec::new(),
            times: built.times.clone(),
            session_gap_ns: built.session_gap_ns,
            session_partition: built.session_partition.clone(),
            hop: None,
            aggregated: built.aggregated,
            windowed_aggregate: built.windowed_aggregate,
            key: built.key.clone(),
            visibility: built.visibility,
            changelog: built.changelog,
        };
        let outer = self.shared.replace(SharedSubplan {
            plan: common,
            template,
        });
        let sides = self
            .build(&join.left)
            .and_then(|left| Ok((left, self.build(&join.right)?)));
        self.shared = outer;
        let (left, right) = sides?;
        Ok(Sides {
            left,
            right,
            shared: Some(built.into_dataflow()?),
        })
    }

    /// Where a join's rows come from: its two inputs, or the rows they share through each
    /// side's operators.
    pub(crate) fn join_base(
        shared: Option<Dataflow>,
        left: Built,
        right: Built,
        op: Box<dyn BinaryOperator>,
    ) -> Result<Base> {
        let Some(shared) = shared else {
            return Ok(Base::Join(
                left.into_dataflow()?,
                right.into_dataflow()?,
                op,
            ));
        };
        for side in [&left, &right] {
            if !matches!(side.base, Base::Shared) {
                return Err(Error::Internal(
                    "a join side does not start at the subplan it shares; this is a bug".into(),
                ));
            }
        }
        let left = Pipeline::new(left.input, left.operators);
        let right = Pipeline::new(right.input, right.operators);
        Ok(Base::Fork(shared, left, right, op))
    }
}
