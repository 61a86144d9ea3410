//! The handler layer: one file per statement family, each a part of [`Handler`], in the way
//! RisingWave's `frontend/src/handler/` splits its statements. The session classifies a
//! statement once ([`crate::syntax::classify`]) and hands it to the handler of its family.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;

use crate::catalog::FunctionDef;
use crate::database::Database;
use crate::output::{Notice, Output};
use crate::providers::{WeirContext, new_context};
use crate::settings::Settings;
use crate::subscribe::Cursor;
use crate::{Error, Result};

mod copy;
mod cursors;
mod dml;
mod explain;
mod file_table;
mod functions;
mod query;
mod settings;
mod show;
mod streams;
mod tables;
mod transactions;
mod views;

pub(crate) use query::with_pg_names;
pub(crate) use settings::{setting_name, setting_schema};
pub(crate) use show::{show_streams_schema, show_views_schema};

/// What a connection's statements run against: the database, the DataFusion context that
/// plans over it, the session's settings, its transaction block and cursors.
pub(crate) struct Handler {
    pub(crate) db: Database,
    pub(crate) ctx: WeirContext,
    pub(crate) settings: Settings,
    /// The open transaction block, if any.
    transaction: Mutex<Option<transactions::Block>>,
    /// Open cursors, by name.
    pub(crate) cursors: tokio::sync::Mutex<HashMap<String, Cursor>>,
    /// Notices for the client (`relation "x" already exists, skipping`), oldest first.
    notices: Mutex<Vec<Notice>>,
    /// The SQL functions registered in `ctx`, to catch up with other sessions' changes.
    functions: Mutex<Vec<FunctionDef>>,
    /// The session as `weir_sessions` shows it.
    pub(crate) info: Arc<crate::catalog::sessions::SessionInfo>,
}

impl Handler {
    /// A handler for a new session on `db`.
    pub(crate) fn new(db: Database, info: Arc<crate::catalog::sessions::SessionInfo>) -> Self {
        let settings = Settings::default();
        let ctx = new_context(db.registry(), &settings);
        let functions = Mutex::new(db.registry().functions());
        Self {
            db,
            ctx,
            settings,
            transaction: Mutex::new(None),
            cursors: tokio::sync::Mutex::new(HashMap::new()),
            notices: Mutex::new(Vec::new()),
            functions,
            info,
        }
    }

    /// Brings the context's SQL functions up to date with the catalog (created or dropped by
    /// any session), before a statement is planned.
    pub(crate) fn sync_functions(&self) {
        let current = self.db.registry().functions();
        let mut known = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        if *known == current {
            return;
        }
        for gone in known
            .iter()
            .filter(|k| !current.iter().any(|c| c.name == k.name))
        {
            self.ctx.deregister_udf(&gone.name);
        }
        crate::providers::context::register_sql_functions(&self.ctx, &current);
        *known = current;
    }

    /// Queues a notice for the client.
    fn notice(&self, sqlstate: &'static str, message: String) {
        self.notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Notice { sqlstate, message });
    }

    /// The notices queued since the last call.
    pub(crate) fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The one name check of every CREATE: `None` when `name` is free. When an object of any
    /// kind has it, CREATE ... IF NOT EXISTS (`if_not_exists`) changes nothing and tells the
    /// client, as PostgreSQL does for any kind of relation (the command's `tag`); without it
    /// the CREATE is refused (42P07).
    fn existing(&self, name: &str, if_not_exists: bool, tag: &str) -> Result<Option<Output>> {
        if !self.db.exists(name) {
            return Ok(None);
        }
        if !if_not_exists {
            return Err(Error::DuplicateRelation(name.to_string()));
        }
        self.notice(
            "42P07",
            format!("relation \"{name}\" already exists, skipping"),
        );
        Ok(Some(Output::Command(tag.into())))
    }

    pub(crate) async fn plan(&self, stmt: Statement) -> Result<LogicalPlan> {
        Ok(self
            .ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
            .await?)
    }

    async fn run_plan(&self, plan: LogicalPlan, params: Option<ParamValues>) -> Result<Output> {
        let plan = match params {
            Some(p) => plan.with_param_values(p)?,
            None => plan,
        };
        let df = self.ctx.execute_logical_plan(plan).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let stream = df.execute_stream().await?;
        Ok(Output::Rows {
            schema,
            stream,
            zone: None,
        })
    }

    /// Runs `f` on a blocking thread: catalog changes fsync.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(db))
            .await
            .map_err(|e| Error::Internal(format!("a catalog task failed: {e}")))?
    }

    /// Counts a statement that changed data, for ROLLBACK's refusal inside a transaction block.
    pub(crate) fn note_change(&self) {
        if let Some(block) = self
            .transaction
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            block.changes += 1;
        }
    }

    /// A statement Weir does not run (0A000), named by its first words.
    pub(crate) fn unsupported(&self, stmt: &Statement) -> Result<Output> {
        if let Statement::Drop { object_type, .. } = stmt {
            return Err(Error::NotSupported(format!(
                "DROP {object_type} is not supported"
            )));
        }
        let text = stmt.to_string();
        let words: Vec<&str> = text.split_whitespace().take(2).collect();
        Err(Error::NotSupported(format!(
            "{} is not supported",
            words.join(" ")
        )))
    }
}
