//! COPY ... FROM STDIN: all rows of the data in one append, or none.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::sql::sqlparser::ast::Statement;

use super::Handler;
use crate::copy::{self, CopyIn};
use crate::output::Output;
use crate::{Error, Result};

impl Handler {
    /// `COPY name [(columns)] FROM STDIN [WITH (...)]`: checks the target and the options;
    /// the data follows through [`Handler::copy_data`].
    pub(crate) fn copy_from(&self, stmt: &Statement) -> Result<Output> {
        let db = self.db.clone();
        let copy = copy::copy_in(stmt, |name| {
            let schema = if let Some(s) = db.stream(name) {
                Arc::clone(&s.schema)
            } else if let Some(t) = db.table(name) {
                Arc::clone(&t.schema)
            } else {
                return None;
            };
            Some(schema.fields().iter().map(|f| f.name().clone()).collect())
        })?;
        if self.db.view(&copy.target).is_some() {
            return Err(Error::WrongObject {
                sqlstate: "42809",
                message: format!(
                    "cannot copy into materialized view {}: its rows come from its query",
                    copy.target
                ),
            });
        }
        self.check_not_produced(&copy.target, "copy into")?;
        Ok(Output::CopyIn(copy))
    }

    /// Loads the data of a `COPY ... FROM STDIN` (everything the client sent): all rows in one
    /// append, or none and an error naming the first bad line. Returns the rows loaded.
    pub(crate) async fn copy_data(&self, copy: &CopyIn, data: Vec<u8>) -> Result<u64> {
        self.note_change();
        let name = copy.target.clone();
        if let Some(stream) = self.db.stream(&name) {
            let batch = copy::parse(copy, &stream.schema, &data)?;
            let entry = Arc::clone(&stream);
            let receipt = tokio::task::spawn_blocking(move || entry.log.append(&[batch]))
                .await
                .map_err(|e| Error::Internal(format!("COPY append failed: {e}")))??;
            return Ok(receipt.rows());
        }
        if let Some(table) = self.db.table(&name) {
            let batch = copy::parse(copy, &table.schema, &data)?;
            let batch = RecordBatch::try_new(Arc::clone(&table.schema), batch.columns().to_vec())
                .map_err(|e| Error::WrongObject {
                sqlstate: "23502",
                message: format!("COPY into {name}: {e}"),
            })?;
            return tokio::task::spawn_blocking(move || table.insert(batch))
                .await
                .map_err(|e| Error::Internal(format!("COPY insert failed: {e}")))?;
        }
        Err(Error::UndefinedRelation(name))
    }
}
