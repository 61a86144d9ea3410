//! HOP aggregates by panes: when nothing between a HOP and its aggregate reads the window's
//! columns but to pass them on, the HOP's copies are replaced by panes (each event once, into
//! its pane) and the aggregate merges each window's panes when it closes.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};
use weir_engine::operator::{
    AggregateSpec, HopAggregateOperator, HopGroup, Operator, TumbleOperator, WindowColumn, pane_ns,
};

use super::{Built, Planner, arrow_schema};
use crate::Result;
use crate::plan::bounds::TimeColumn;
use crate::providers::{WindowSpec, WindowTable, provider_as};

/// Where a HOP assigner is in a subtree's operators, and its windows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HopSite {
    /// Its index in [`Built::operators`].
    pub(crate) operator: usize,
    /// The time column of its input.
    pub(crate) time_index: usize,
    pub(crate) slide_ns: i64,
    pub(crate) size_ns: i64,
}

/// The names of the window's columns in `plan`'s output, if `plan` is a HOP's rows under
/// projections and filters that pass `window_start` and `window_end` on untouched (or drop
/// them) and read nothing else of them: the rows of each pane then stand for the rows of each
/// window. `None` otherwise.
fn window_columns(plan: &LogicalPlan) -> Option<HashSet<String>> {
    let reads = |e: &Expr, set: &HashSet<String>| {
        e.column_refs()
            .iter()
            .any(|c| set.contains(c.name.as_str()))
    };
    match plan {
        LogicalPlan::TableScan(scan) => {
            let provider = source_as_provider(&scan.source).ok()?;
            let table = provider_as::<WindowTable>(&provider)?;
            matches!(table.spec, WindowSpec::Hop { .. })
                .then(|| ["window_start", "window_end"].map(String::from).into())
        }
        LogicalPlan::SubqueryAlias(a) => window_columns(&a.input),
        LogicalPlan::Filter(f) => {
            let set = window_columns(&f.input)?;
            (!reads(&f.predicate, &set)).then_some(set)
        }
        LogicalPlan::Projection(p) => {
            let below = window_columns(&p.input)?;
            let mut set = HashSet::new();
            for (e, field) in p.expr.iter().zip(p.schema.fields()) {
                let bare = match e {
                    Expr::Alias(a) => a.expr.as_ref(),
                    e => e,
                };
                match bare {
                    Expr::Column(c) if below.contains(c.name.as_str()) => {
                        set.insert(field.name().clone());
                    }
                    e if reads(e, &below) => return None,
                    _ => {}
                }
            }
            Some(set)
        }
        _ => None,
    }
}

impl Planner<'_> {
    /// Replaces the HOP under `agg` by panes and aggregates by them, if it can (see
    /// [`window_columns`]); returns whether it did. `window` is the group column holding the
    /// window, `aggregates` the aggregates, `out_times` what the output says about time.
    pub(crate) fn try_hop_by_panes(
        &self,
        built: &mut Built,
        agg: &Aggregate,
        plan: &LogicalPlan,
        window: WindowColumn,
        aggregates: &[AggregateSpec],
    ) -> Result<bool> {
        let Some(site) = built.hop else {
            return Ok(false);
        };
        let Some(columns) = window_columns(&agg.input) else {
            return Ok(false);
        };
        let input = agg.input.schema();
        let reads = |e: &Expr| e.column_refs().iter().any(|c| columns.contains(&c.name));
        let mut keys = Vec::new();
        let mut layout = Vec::new();
        for e in &agg.group_expr {
            let edge = match e {
                Expr::Column(c) if columns.contains(&c.name) => {
                    let i = input.index_of_column(c)?;
                    match built.times.get(i).copied().flatten() {
                        Some(TimeColumn::WindowStart { size_ns }) if size_ns == site.size_ns => {
                            Some(HopGroup::Start)
                        }
                        Some(TimeColumn::WindowEnd { size_ns }) if size_ns == site.size_ns => {
                            Some(HopGroup::End)
                        }
                        _ => return Ok(false),
                    }
                }
                e if reads(e) => return Ok(false),
                _ => None,
            };
            layout.push(edge.unwrap_or(HopGroup::Key(keys.len())));
            if edge.is_none() {
                keys.push(self.state.create_physical_expr(e.clone(), input)?);
            }
        }
        if agg.aggr_expr.iter().any(reads) {
            return Ok(false);
        }
        // The input's pane columns, for late events.
        let position =
            |edge: fn(TimeColumn) -> bool| built.times.iter().position(|t| t.is_some_and(edge));
        let start = position(|t| matches!(t, TimeColumn::WindowStart { .. }));
        let end = position(|t| matches!(t, TimeColumn::WindowEnd { .. }));
        let pane = pane_ns(site.slide_ns, site.size_ns);
        let below = match site.operator {
            0 => Arc::clone(&built.input),
            i => built.operators[i - 1].schema(),
        };
        let panes = TumbleOperator::try_new(&below, site.time_index, pane)?
            .as_panes_of(site.slide_ns, site.size_ns);
        if panes.schema() != built.operators[site.operator].schema() {
            return Ok(false);
        }
        let operator = HopAggregateOperator::try_new(
            &arrow_schema(&agg.input),
            keys,
            layout,
            window,
            (start, end),
            (site.slide_ns, site.size_ns),
            aggregates.to_vec(),
            arrow_schema(plan),
        )?;
        built.operators[site.operator] = Box::new(panes);
        built.operators.push(Box::new(operator));
        built.hop = None;
        Ok(true)
    }
}
