//! SUBSCRIBE (as rows, as COPY data or as a cursor), DECLARE, FETCH and CLOSE.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::sqlparser::ast::Statement;

use super::Handler;
use crate::copy::CopyChunk;
use crate::output::Output;
use crate::plan::{ViewOptions, compile_query_statement};
use crate::providers::VIEW_READ_WAIT;
use crate::subscribe::{Cursor, SUBSCRIBER_BUFFER_ROWS, Subscription, copy_text, start_offsets};
use crate::syntax::{SubscribeOutput, SubscribeTarget, normalize};
use crate::{Error, Result};

fn no_cursor(cursor: &str) -> Error {
    Error::WrongObject {
        sqlstate: "34000",
        message: format!("cursor \"{cursor}\" does not exist"),
    }
}

impl Handler {
    /// Follows a view (or a query, run for as long as the subscription lasts) from its current
    /// rows on: first the rows as of everything committed now, then every change.
    pub(crate) async fn subscribe(&self, target: SubscribeTarget) -> Result<Subscription> {
        let (table, query, offsets, sources) = match target {
            SubscribeTarget::View(name, options) if self.db.view(&name).is_none() => {
                let Some(stream) = self.db.stream(&name) else {
                    return Err(Error::UndefinedRelation(name));
                };
                let offsets = start_offsets(&stream.log, &options)?;
                return Ok(Subscription::tail(Arc::clone(&stream.log), offsets));
            }
            SubscribeTarget::View(name, options) => {
                if let Some((key, _)) = options.first() {
                    return Err(Error::InvalidValue(format!(
                        "SUBSCRIBE to a materialized view takes no options ({key}); streams do"
                    )));
                }
                let view = self
                    .db
                    .view(&name)
                    .ok_or_else(|| Error::UndefinedRelation(name.clone()))?;
                (
                    Arc::clone(&view.table),
                    None,
                    view.source_offsets(),
                    Vec::new(),
                )
            }
            SubscribeTarget::Query(stmt) => {
                let compiled =
                    compile_query_statement(&self.ctx.state(), *stmt, ViewOptions::default())
                        .await?;
                let sources = compiled.sources.clone();
                let offsets: Vec<u64> = sources
                    .iter()
                    .flat_map(|s| s.log.committed_offsets())
                    .collect();
                let (table, query) = self.db.start_temporary("subscribe", compiled)?;
                (table, Some(query), offsets, sources)
            }
        };
        let waiting = Arc::clone(&table);
        let progress =
            tokio::task::spawn_blocking(move || waiting.wait_for(&offsets, VIEW_READ_WAIT))
                .await
                .map_err(|e| Error::Internal(format!("subscription wait failed: {e}")))?;
        drop(sources);
        if let Some(error) = progress.error {
            return Err(Error::query_stopped("the query", &error));
        }
        let buffer_rows = self
            .settings
            .get("subscribe_buffer_rows")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(SUBSCRIBER_BUFFER_ROWS);
        let subscription = Subscription::start(table, query, buffer_rows)?;
        if let Some(feed) = subscription.feed() {
            self.info.follow(feed);
        }
        Ok(subscription)
    }

    /// `SUBSCRIBE ...`, `COPY (SUBSCRIBE ...) TO STDOUT` or `DECLARE c CURSOR FOR SUBSCRIBE ...`.
    pub(crate) async fn subscribe_statement(
        &self,
        target: SubscribeTarget,
        output: SubscribeOutput,
    ) -> Result<Output> {
        let sub = self.subscribe(target).await?;
        match output {
            SubscribeOutput::Rows => {
                let schema = sub.schema();
                let stream = futures::stream::unfold(Some(sub), |state| async move {
                    let mut sub = state?;
                    match sub.next().await {
                        Ok(b) => Some((Ok(b), Some(sub))),
                        Err(e) => Some((Err(e.into()), None)),
                    }
                });
                Ok(Output::Rows {
                    schema: Arc::clone(&schema),
                    stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
                    zone: None,
                })
            }
            SubscribeOutput::Copy => {
                let columns = sub.schema().fields().len();
                let stream = futures::stream::unfold(Some(sub), |state| async move {
                    let mut sub = state?;
                    match sub.next().await.and_then(|b| {
                        Ok(CopyChunk {
                            rows: b.num_rows(),
                            data: copy_text(&b)?,
                        })
                    }) {
                        Ok(chunk) => Some((Ok(chunk), Some(sub))),
                        Err(e) => Some((Err(e), None)),
                    }
                });
                Ok(Output::CopyOut {
                    columns,
                    binary: false,
                    stream: Box::pin(stream),
                })
            }
            SubscribeOutput::Cursor(name) => {
                self.cursors.lock().await.insert(
                    name,
                    Cursor::Subscription {
                        subscription: Box::new(sub),
                        held: Default::default(),
                    },
                );
                Ok(Output::Command("DECLARE CURSOR".into()))
            }
        }
    }

    /// `FETCH [n | ALL] cursor [WITH (timeout = ...)]`.
    pub(crate) async fn fetch(
        &self,
        cursor: String,
        count: Option<u64>,
        timeout: Option<std::time::Duration>,
    ) -> Result<Output> {
        let mut cursors = self.cursors.lock().await;
        let c = cursors.get_mut(&cursor).ok_or_else(|| no_cursor(&cursor))?;
        let batch = c.fetch(count, timeout).await?;
        Ok(Output::batch(batch.schema(), batch))
    }

    /// The columns a FETCH from `cursor` returns.
    pub(crate) async fn cursor_schema(
        &self,
        cursor: &str,
    ) -> Result<datafusion::arrow::datatypes::SchemaRef> {
        let cursors = self.cursors.lock().await;
        Ok(cursors
            .get(cursor)
            .ok_or_else(|| no_cursor(cursor))?
            .schema())
    }

    /// `DECLARE name CURSOR FOR SELECT ...`.
    pub(crate) async fn declare(
        &self,
        stmt: Statement,
        params: Option<datafusion::common::ParamValues>,
    ) -> Result<Output> {
        let Statement::Declare { stmts } = stmt else {
            return Err(Error::Internal("DECLARE lost its statement".into()));
        };
        let [declare] = stmts.as_slice() else {
            return Err(Error::NotSupported(
                "DECLARE of several cursors at once".into(),
            ));
        };
        let (Some(query), Some(name)) = (&declare.for_query, declare.names.first()) else {
            return Err(Error::NotSupported(
                "DECLARE declares cursors here: DECLARE name CURSOR FOR SELECT ... (or SUBSCRIBE ...)"
                    .into(),
            ));
        };
        let name = normalize(name);
        let query = Statement::Query(query.clone());
        let plan = self.plan(query.clone()).await?;
        let out = self.run_plan(plan, params).await?;
        let Output::Rows { schema, stream, .. } = out else {
            return Err(Error::Internal(
                "a query returned no rows; this is a bug".into(),
            ));
        };
        self.cursors.lock().await.insert(
            name,
            Cursor::Rows {
                // FETCH (psql's FETCH_COUNT) shows the names a plain SELECT shows.
                schema: Arc::new(super::with_pg_names(&schema, &query)),
                stream,
                batches: VecDeque::new(),
            },
        );
        Ok(Output::Command("DECLARE CURSOR".into()))
    }

    /// `CLOSE name` / `CLOSE ALL`.
    pub(crate) async fn close(&self, stmt: Statement) -> Result<Output> {
        use datafusion::sql::sqlparser::ast::CloseCursor;
        let Statement::Close { cursor } = stmt else {
            return Err(Error::Internal("CLOSE lost its statement".into()));
        };
        let mut cursors = self.cursors.lock().await;
        match cursor {
            CloseCursor::All => cursors.clear(),
            CloseCursor::Specific { name } => {
                let name = normalize(&name);
                if cursors.remove(&name).is_none() {
                    return Err(no_cursor(&name));
                }
            }
        }
        Ok(Output::Command("CLOSE CURSOR".into()))
    }
}
