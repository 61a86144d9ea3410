//! Statements DataFusion runs as they are: queries, EXPLAIN of a query, and SET / SHOW of
//! DataFusion's own (dotted) settings.

use datafusion::common::ParamValues;
use datafusion::sql::sqlparser::ast::Statement;

use super::Handler;
use crate::Result;
use crate::output::Output;

impl Handler {
    /// A SELECT or EXPLAIN: its rows, streamed.
    pub(crate) async fn query(
        &self,
        stmt: Statement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        let plan = self.plan(stmt).await?;
        self.run_plan(plan, params).await
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
