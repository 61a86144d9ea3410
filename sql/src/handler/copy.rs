//! COPY ... FROM STDIN (all rows of the data or none: into a stream through a log transaction
//! as the data comes, into a table in one insert at its end) and COPY ... TO STDOUT (a
//! query's, stream's, table's or view's rows, written as they are produced).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::common::TableReference;
use datafusion::sql::sqlparser::ast::Statement;
use futures::StreamExt;

use super::Handler;
use weir_engine::log::Transaction;

use crate::copy::{self, CopyEnd, CopyIn, CopyLoader, CopySink, CopyToSource};
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

    /// A loader for the data of `copy`, into its target's columns. Into a stream, the rows go
    /// to the log in a transaction as they are parsed, so a COPY of any size takes a few MiB.
    pub(crate) fn copy_loader(&self, copy: &CopyIn) -> Result<CopyLoader> {
        let schema = if let Some(stream) = self.db.stream(&copy.target) {
            let sink = LogSink(stream.log.begin());
            return Ok(
                CopyLoader::new(copy.clone(), Arc::clone(&stream.schema)).with_sink(Box::new(sink))
            );
        } else if let Some(table) = self.db.table(&copy.target) {
            Arc::clone(&table.schema)
        } else {
            return Err(Error::UndefinedRelation(copy.target.clone()));
        };
        Ok(CopyLoader::new(copy.clone(), schema))
    }

    /// Loads the rows of a `COPY ... FROM STDIN` once its data has ended: all of them, or
    /// none and an error naming the first bad line. Returns the rows loaded.
    pub(crate) async fn copy_load(&self, loader: CopyLoader) -> Result<u64> {
        self.note_change();
        let name = loader.copy().target.clone();
        // Committing fsyncs: off the async workers.
        let batches = match tokio::task::spawn_blocking(move || loader.end())
            .await
            .map_err(|e| Error::Internal(format!("COPY commit failed: {e}")))??
        {
            CopyEnd::Committed(rows) => return Ok(rows),
            CopyEnd::Rows(batches) => batches,
        };
        if let Some(table) = self.db.table(&name) {
            let batch = match batches.first() {
                Some(first) => concat_batches(&first.schema(), &batches)?,
                None => return Ok(0),
            };
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

    /// Loads the data of a `COPY ... FROM STDIN` given whole (see [`Handler::copy_load`]).
    pub(crate) async fn copy_data(&self, copy: &CopyIn, data: Vec<u8>) -> Result<u64> {
        let mut loader = self.copy_loader(copy)?;
        loader.feed(&data);
        drop(data);
        self.copy_load(loader).await
    }

    /// `COPY (query) TO STDOUT` / `COPY name [(columns)] TO STDOUT`: rows as DataFusion
    /// produces them, batch by batch, so that an export of any size streams.
    pub(crate) async fn copy_to(&self, stmt: &Statement) -> Result<Output> {
        let mut copy = copy::copy_to(stmt)?;
        copy.format.zone = self.settings.time_zone();
        let df = match copy.source {
            CopyToSource::Query(query) => {
                let plan = self.plan(Statement::Query(query)).await?;
                self.ctx.execute_logical_plan(plan).await?
            }
            CopyToSource::Relation { name, columns } => {
                if !self.db.exists(&name) {
                    return Err(Error::UndefinedRelation(name));
                }
                let df = self.ctx.table(TableReference::bare(name.as_str())).await?;
                if columns.is_empty() {
                    df
                } else {
                    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
                    df.select_columns(&names)?
                }
            }
        };
        let names: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut forced = vec![false; names.len()];
        for c in &copy.format.force_quote {
            if c == crate::syntax::compat::FORCE_QUOTE_ALL {
                forced = vec![true; names.len()];
                continue;
            }
            let i = names.iter().position(|n| n == c).ok_or_else(|| {
                Error::UndefinedColumn(format!(
                    "FORCE_QUOTE column \"{c}\" is not among the columns written"
                ))
            })?;
            forced[i] = true;
        }
        let columns = names.len();
        let header = copy.format.header(&names);
        let binary = copy.format.is_binary();
        let format = copy.format;
        let rows = df.execute_stream().await?.map(move |batch| {
            let batch = batch?;
            format.rows(&batch, &forced)
        });
        // The binary format's trailer is the wire layer's to send, as pgwire's CopyEncoder does.
        let stream = futures::stream::iter(header.map(Ok)).chain(rows);
        Ok(Output::CopyOut {
            columns,
            binary,
            stream: Box::pin(stream),
        })
    }
}

/// A COPY's rows on their way into a stream's log: written as they are parsed, visible
/// together when the COPY ends well, and never when it fails or its connection goes.
#[derive(Debug)]
struct LogSink(Transaction);

impl CopySink for LogSink {
    fn write(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        Ok(self.0.append(&batches)?)
    }

    fn commit(mut self: Box<Self>, batches: Vec<RecordBatch>) -> Result<u64> {
        self.0.append(&batches)?;
        Ok(self.0.commit()?.rows())
    }
}
