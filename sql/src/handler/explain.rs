//! EXPLAIN CREATE MATERIALIZED VIEW and EXPLAIN CREATE STREAM ... AS SELECT: the operator
//! plan, nothing created.

use datafusion::sql::sqlparser::ast::Statement;

use super::Handler;
use crate::output::Output;
use crate::plan::{ViewOptions, compile_query_statement, name_columns};
use crate::syntax::{CreateStream, EmitMode, object_name};
use crate::{Error, Result};

impl Handler {
    /// `EXPLAIN CREATE MATERIALIZED VIEW name AS SELECT ...`.
    pub(crate) async fn explain_create_view(
        &self,
        stmt: Statement,
        emit: Option<EmitMode>,
    ) -> Result<Output> {
        let Statement::Explain { statement, .. } = stmt else {
            return Err(Error::Internal("EXPLAIN lost its statement".into()));
        };
        let Statement::CreateView(cv) = *statement else {
            return Err(Error::Internal(
                "EXPLAIN of a view lost its statement".into(),
            ));
        };
        let name = object_name(&cv.name)?;
        let options = self.view_options(&cv.options, emit).await?;
        let mut query = Statement::Query(cv.query);
        name_columns(&mut query)?;
        let compiled = compile_query_statement(&self.ctx.state(), query, options).await?;
        Output::explain(compiled.explain(&name))
    }

    /// `EXPLAIN CREATE STREAM name AS SELECT ...`.
    pub(crate) async fn explain_create_stream(&self, cs: CreateStream) -> Result<Output> {
        let query = cs
            .query
            .ok_or_else(|| Error::Internal("EXPLAIN CREATE STREAM without a query".into()))?;
        let mut query = *query;
        name_columns(&mut query)?;
        let compiled =
            compile_query_statement(&self.ctx.state(), query, ViewOptions::default()).await?;
        Output::explain(compiled.explain_into(&format!(
            "stream {}, appended exactly once with each checkpoint",
            cs.name
        )))
    }
}
