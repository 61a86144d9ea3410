//! Functions written in SQL, planned into a context: their argument and return types, and
//! their body as an expression over the arguments, with the context's functions.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::TableReference;
use datafusion::common::{DFSchema, plan_err};
use datafusion::config::ConfigOptions;
use datafusion::execution::SessionState;
use datafusion::logical_expr::planner::{ContextProvider, ExprPlanner};
use datafusion::logical_expr::{
    AggregateUDF, Expr, HigherOrderUDF, ScalarUDF, TableSource, WindowUDF,
};
use datafusion::sql::planner::{PlannerContext, SqlToRel};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::catalog::FunctionDef;
use crate::functions::SqlFunction;
use crate::{Error, Result};

/// What a function body may name: the context's functions, and no tables.
struct Functions<'a> {
    state: &'a SessionState,
}

impl ContextProvider for Functions<'_> {
    fn get_table_source(
        &self,
        name: TableReference,
    ) -> datafusion::error::Result<Arc<dyn TableSource>> {
        plan_err!("a function's body is one expression over its arguments; it cannot read {name}")
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state.scalar_functions().get(name).cloned()
    }

    fn get_higher_order_meta(&self, name: &str) -> Option<Arc<HigherOrderUDF>> {
        self.state.higher_order_functions().get(name).cloned()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_variable_type(&self, _: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state
            .higher_order_functions()
            .keys()
            .cloned()
            .collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }
}

fn parse_expr(sql: &str) -> Result<datafusion::sql::sqlparser::ast::Expr> {
    Ok(Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)?
        .parse_expr()?)
}

/// The Arrow type of a SQL type name, as the planner reads it in a CAST.
fn data_type(planner: &SqlToRel<'_, Functions<'_>>, sql: &str) -> Result<DataType> {
    let cast = parse_expr(&format!("CAST(NULL AS {sql})"))?;
    match planner.sql_to_expr(cast, &DFSchema::empty(), &mut PlannerContext::new())? {
        Expr::Cast(c) => Ok(c.field.data_type().clone()),
        _ => Err(Error::Syntax(format!("{sql} is not a type"))),
    }
}

/// Plans `def` in `state`: a function Weir can register there.
pub(crate) fn plan_function(state: &SessionState, def: &FunctionDef) -> Result<SqlFunction> {
    let provider = Functions { state };
    let planner = SqlToRel::new(&provider);
    let fields = def
        .args
        .iter()
        .map(|(name, ty)| Ok(Field::new(name, data_type(&planner, ty)?, true)))
        .collect::<Result<Vec<_>>>()?;
    let returns = data_type(&planner, &def.returns)?;
    let arguments = Arc::new(Schema::new(fields));
    let schema = DFSchema::try_from(arguments.as_ref().clone())?;
    let body = planner.sql_to_expr(parse_expr(&def.body)?, &schema, &mut PlannerContext::new())?;
    let body = crate::functions::postgres_meaning(body, &schema)?.data;
    // Types are coerced here, as for any expression the context plans.
    let physical = state.create_physical_expr(body, &schema)?;
    Ok(SqlFunction::new(
        def.name.clone(),
        arguments,
        returns,
        def.body.clone(),
        physical,
    ))
}
