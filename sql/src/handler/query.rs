//! Statements DataFusion runs as they are: queries, EXPLAIN of a query, and SET / SHOW of
//! DataFusion's own (dotted) settings.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::ParamValues;
use datafusion::sql::sqlparser::ast::Statement;

use super::Handler;
use crate::Result;
use crate::output::Output;
use crate::syntax::column_names::query_column_names;

/// `schema` with the names PostgreSQL gives the result columns of `stmt` (`count`, `?column?`,
/// `timestamp`), where the planner names them its own way (`count(*)`, `Int64(1)`). Arrow
/// allows two columns of one name, as PostgreSQL's results do.
pub(crate) fn with_pg_names(schema: &Schema, stmt: &Statement) -> Schema {
    let Some(names) = query_column_names(stmt, schema.fields().len()) else {
        return schema.clone();
    };
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .zip(names)
        .map(|(f, name)| match name {
            Some(name) => Arc::new(f.as_ref().clone().with_name(name)),
            None => Arc::clone(f),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

impl Handler {
    /// A SELECT or EXPLAIN: its rows, streamed.
    pub(crate) async fn query(
        &self,
        stmt: Statement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        let named = matches!(stmt, Statement::Query(_)).then(|| stmt.clone());
        let plan = self.plan(stmt).await?;
        match (self.run_plan(plan, params).await?, named) {
            (
                Output::Rows {
                    schema,
                    stream,
                    zone,
                },
                Some(stmt),
            ) => Ok(Output::Rows {
                schema: Arc::new(with_pg_names(&schema, &stmt)),
                stream,
                zone,
            }),
            (out, _) => Ok(out),
        }
    }

    /// SET or SHOW of one of DataFusion's settings: run, answered as SET.
    pub(crate) async fn datafusion_command(
        &self,
        stmt: Statement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        let plan = self.plan(stmt).await?;
        let _ = self.run_plan(plan, params).await?.collect().await?;
        Ok(Output::Command("SET".into()))
    }
}
