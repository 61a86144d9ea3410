//! The analyzer rule that gives expressions PostgreSQL's meaning where DataFusion's differs and
//! would otherwise give a plausible wrong value (integer overflow, text read as `bytea`) or
//! refuse what PostgreSQL reads (timestamps without seconds, intervals with `hh:mm:ss`).

use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::optimizer::AnalyzerRule;

use super::bytea::bytea_input;
use super::checked::checked_arithmetic;
use super::time_input::time_input;

/// Applies [`checked_arithmetic`], [`bytea_input`] and [`time_input`] to every expression of a
/// plan, after
/// type coercion (so that the types it decides on are final); names stay as written (`a + b`,
/// not `checked_add(a, b)`). Running it twice changes nothing more.
#[derive(Debug, Default)]
pub struct PostgresMeaning;

/// The rewrites, for an expression over `schema` (a SQL function's body, say).
pub(crate) fn postgres_meaning(
    expr: datafusion::logical_expr::Expr,
    schema: &DFSchema,
) -> Result<Transformed<datafusion::logical_expr::Expr>> {
    checked_arithmetic(expr, schema)?
        .transform_data(|e| bytea_input(e, schema))?
        .transform_data(|e| time_input(e, schema))
}

impl AnalyzerRule for PostgresMeaning {
    fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            let mut schema = DFSchema::empty();
            for input in plan.inputs() {
                schema.merge(input.schema());
            }
            if let LogicalPlan::TableScan(_) = &plan {
                schema.merge(plan.schema());
            }
            let names = NamePreserver::new(&plan);
            plan.map_expressions(|expr| {
                let name = names.save(&expr);
                Ok(postgres_meaning(expr, &schema)?.update_data(|e| name.restore(e)))
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "postgres_meaning"
    }
}
