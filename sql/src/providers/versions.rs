//! A stream read as a versioned table: the right side of Flink's event-time temporal join,
//! `JOIN r FOR SYSTEM_TIME AS OF l.ts`, which the parser turns into
//! `JOIN weir_versions(r, 'l.ts')`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{
    Session as DfSession, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::{ScalarValue, not_impl_err, plan_err};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::stream::external;
use crate::catalog::{Registry, StreamEntry};

pub use crate::syntax::VERSIONS;

/// `weir_versions(stream, 'l.ts')`: `stream`'s rows as versions of its rows by key, joined as
/// of the other input's column `l.ts`.
#[derive(Debug)]
pub struct VersionsFunction {
    db: Registry,
}

impl VersionsFunction {
    /// The function, resolving streams in `db`.
    pub fn new(db: Registry) -> Self {
        Self { db }
    }
}

/// A stream as a versioned table, and the column of the other input it is joined as of.
#[derive(Debug)]
pub struct VersionedTable {
    /// The stream.
    pub stream: Arc<StreamEntry>,
    /// The other input's time column, as written (`l.ts`).
    pub as_of: String,
}

impl TableFunctionImpl for VersionsFunction {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let (name, as_of) = match args.exprs() {
            [
                Expr::Column(c),
                Expr::Literal(ScalarValue::Utf8(Some(a)), _),
            ] => (c.name.clone(), a.clone()),
            _ => return plan_err!("{VERSIONS} takes a stream and the column to join as of"),
        };
        let Some(stream) = self.db.stream(&name) else {
            return Err(external(crate::Error::NotSupported(format!(
                "FOR SYSTEM_TIME AS OF {as_of}: {name} is not a stream. As of an event-time \
                 column, Weir joins a stream's rows as versions of a table (each key's latest \
                 row at or before that time); a table's rows have no time"
            ))));
        };
        if stream.def.watermark.is_none() {
            return Err(external(crate::Error::NotSupported(format!(
                "FOR SYSTEM_TIME AS OF {as_of}: stream {name} has no WATERMARK, so no version \
                 would ever be known to be current; declare one in CREATE STREAM"
            ))));
        }
        Ok(Arc::new(VersionedTable { stream, as_of }))
    }
}

#[async_trait]
impl TableProvider for VersionedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.stream.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        not_impl_err!(
            "FOR SYSTEM_TIME AS OF {} (an event-time temporal join) runs in materialized views, \
             where each row waits for the watermark to pass its time and then joins the version \
             current at it; batch SQL has no such join",
            self.as_of
        )
    }
}
