//! The `Session` API: what the Postgres server and the shell call to run statements.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::logical_expr::{DdlStatement, Expr, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CreateTableOptions, Expr as SqlExpr, ObjectType, SqlOption, Statement,
    TableObject, Value,
};
use futures::TryStreamExt;
use weir_engine::log::supports_key_type;

use crate::catalog::{ColumnDef, KafkaEndpoint, StreamDef, TableDef, ViewDef, WatermarkDef};
use crate::copy::{self, CopyIn};
use crate::database::Database;
use crate::functions::ModFunction;
use crate::parser::{
    CreateStream, EmitMode, SubscribeOutput, SubscribeTarget, WeirStatement, normalize,
    object_name, parse,
};
use crate::planner::{ViewOptions, compile_query_statement, humanize_ns};
use crate::ref_table::RefTable;
use crate::settings::Settings;
use crate::subscribe::{Cursor, Subscription, copy_text};
use crate::tables::{
    LATE_EVENTS, LateEventsTable, StreamTable, VIEW_PROGRESS, VIEW_READ_WAIT, ViewProgressTable,
    ViewTable, WindowFunction, interval_ns,
};
use crate::{Error, Result};

/// The catalog and schema every object lives in.
pub const CATALOG: &str = "weir";
/// The schema every object lives in.
pub const SCHEMA: &str = "public";

/// What a statement returns.
pub enum Output {
    /// Rows, streamed.
    Rows {
        /// Their schema.
        schema: SchemaRef,
        /// The rows.
        stream: SendableRecordBatchStream,
    },
    /// A command completed: its Postgres command tag (`CREATE STREAM`, `DROP STREAM`, ...).
    Command(String),
    /// An INSERT appended this many rows.
    Inserted(u64),
    /// An UPDATE or DELETE (the command) changed this many rows.
    Modified(&'static str, u64),
    /// A `COPY ... FROM STDIN` waits for its data: hand it to [`Session::copy_data`].
    CopyIn(CopyIn),
    /// `BEGIN` (true) or `COMMIT` / `ROLLBACK` (false), with the command tag.
    Transaction(bool, &'static str),
    /// `COPY (SUBSCRIBE ...) TO STDOUT`: lines of COPY text data, as changes happen.
    CopyOut {
        /// Columns per line.
        columns: usize,
        /// The data; it ends only with an error (the subscriber fell behind) or when dropped.
        stream: futures::stream::BoxStream<'static, Result<Vec<u8>>>,
    },
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rows { schema, .. } => write!(f, "Rows({schema})"),
            Self::Command(tag) => write!(f, "Command({tag})"),
            Self::Inserted(n) => write!(f, "Inserted({n})"),
            Self::Modified(c, n) => write!(f, "{c}({n})"),
            Self::CopyIn(c) => write!(f, "CopyIn({})", c.target),
            Self::Transaction(_, tag) => write!(f, "Transaction({tag})"),
            Self::CopyOut { columns, .. } => write!(f, "CopyOut({columns} columns)"),
        }
    }
}

impl Output {
    /// Collects the rows of a `Rows` output (none for a command).
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        match self {
            Self::Rows { stream, .. } => Ok(stream.try_collect().await?),
            Self::Command(_)
            | Self::Inserted(_)
            | Self::Modified(..)
            | Self::CopyIn(_)
            | Self::CopyOut { .. }
            | Self::Transaction(..) => Ok(Vec::new()),
        }
    }
}

/// What a statement will take and return, for the extended query protocol's Describe.
#[derive(Debug, Clone)]
pub struct Description {
    /// Types of `$1`, `$2`, ... where they can be inferred.
    pub params: Vec<Option<DataType>>,
    /// The columns of the rows it returns; `None` for commands.
    pub columns: Option<SchemaRef>,
}

/// A connection's session: runs statements against a [`Database`].
pub struct Session {
    db: Database,
    ctx: WeirContext,
    settings: Settings,
    /// Statements that changed data since `BEGIN`, while a transaction block is open.
    transaction: std::sync::Mutex<Option<u64>>,
    /// Open cursors, by name.
    cursors: tokio::sync::Mutex<HashMap<String, Cursor>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("db", &self.db.dir())
            .finish()
    }
}

/// Resolves table names to the database's streams and views, as they are right now.
#[derive(Debug)]
struct WeirSchema {
    db: Database,
}

#[async_trait]
impl SchemaProvider for WeirSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .db
            .streams()
            .iter()
            .map(|s| s.def.name.clone())
            .collect();
        names.extend(self.db.views().iter().map(|v| v.def.name.clone()));
        names.extend(self.db.tables().iter().map(|t| t.def.name.clone()));
        names
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        if let Some(s) = self.db.stream(name) {
            return Ok(Some(Arc::new(StreamTable::new(s, self.db.producer(name)))));
        }
        if name == LATE_EVENTS {
            return Ok(Some(Arc::new(LateEventsTable::new(self.db.clone()))));
        }
        if name == VIEW_PROGRESS {
            return Ok(Some(Arc::new(ViewProgressTable::new(self.db.clone()))));
        }
        if name == crate::connectors::CONNECTORS {
            let batch = crate::connectors::status_batch(&self.db.connectors())
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            let table =
                datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?;
            return Ok(Some(Arc::new(table)));
        }
        if let Some(t) = self.db.table(name) {
            return Ok(Some(Arc::new(RefTable::new(t))));
        }
        Ok(self
            .db
            .view(name)
            .map(|v| Arc::new(ViewTable::new(v)) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.db.exists(name)
            || name == LATE_EVENTS
            || name == VIEW_PROGRESS
            || name == crate::connectors::CONNECTORS
    }
}

/// A DataFusion context that sees the database's objects and Weir's table functions.
/// A session context that releases its `pg_catalog` when dropped.
///
/// datafusion-pg-catalog's `pg_catalog` schema holds the context's catalog list, which holds
/// the schema: a reference cycle that would keep the whole context (and the database with it)
/// alive after its last use. Unregistering the schema on drop breaks it.
pub(crate) struct WeirContext(SessionContext);

impl std::ops::Deref for WeirContext {
    type Target = SessionContext;

    fn deref(&self) -> &SessionContext {
        &self.0
    }
}

impl Drop for WeirContext {
    fn drop(&mut self) {
        if let Some(catalog) = self.0.catalog(CATALOG) {
            let _ = catalog.deregister_schema("pg_catalog", true);
        }
    }
}

pub(crate) fn new_context(db: &Database, settings: &Settings) -> WeirContext {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true)
        .with_target_partitions(2)
        // TIMESTAMPTZ columns are UTC instants, as Postgres stores them.
        .set_str("datafusion.execution.time_zone", "+00:00");
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    // Rewriting COUNT(DISTINCT x) into a two-level aggregation suits batch plans, but a window
    // aggregate keeps distinct values in its accumulators instead, so that rule stays off.
    let rules = state
        .optimizers()
        .iter()
        .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
        // Turning inner joins into semi joins (or dropping them) suits batch plans; a stream
        // join keeps its inner form, whose state rules the planner knows.
        .filter(|r| r.name() != "eliminate_join")
        .cloned()
        .collect();
    let mut state = SessionStateBuilder::new_from_existing(state)
        .with_optimizer_rules(rules)
        .build();
    // JSON functions and operators (`json_get_str(value, 'user')`, `value->>'user'`), for
    // JSON held in text columns such as a raw Kafka topic's values. Registering into a fresh
    // state cannot clash with anything.
    if let Err(e) = datafusion_functions_json::register_all(&mut state) {
        tracing::error!(error = %e, "registering the JSON functions failed; this is a bug");
    }
    let ctx = SessionContext::new_with_state(state);
    let catalog = MemoryCatalogProvider::new();
    // Registering into a fresh in-memory catalog cannot fail.
    let _ = catalog.register_schema(SCHEMA, Arc::new(WeirSchema { db: db.clone() }));
    ctx.register_catalog(CATALOG, Arc::new(catalog));
    ctx.register_udtf("tumble", Arc::new(WindowFunction::tumble(db.clone())));
    ctx.register_udtf("hop", Arc::new(WindowFunction::hop(db.clone())));
    ctx.register_udtf("session", Arc::new(WindowFunction::session(db.clone())));
    ctx.register_udf(ScalarUDF::from(ModFunction::new()));
    // pg_catalog and the Postgres functions that psql, drivers and BI tools introspect with.
    crate::pg_compat::install(&ctx, CATALOG, db);
    for f in crate::settings::functions(settings) {
        ctx.register_udf(f);
    }
    WeirContext(ctx)
}

/// An operator plan as the rows of EXPLAIN.
fn explain_rows(lines: Vec<String>) -> Result<Output> {
    let schema = explain_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(StringArray::from(lines)) as ArrayRef],
    )?;
    Ok(rows(schema, batch))
}

fn rows(schema: SchemaRef, batch: RecordBatch) -> Output {
    let stream = futures::stream::iter(vec![Ok(batch)]);
    Output::Rows {
        schema: Arc::clone(&schema),
        stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
    }
}

impl Session {
    /// A new session on `db`.
    pub fn new(db: Database) -> Self {
        let settings = Settings::default();
        let ctx = new_context(&db, &settings);
        Self {
            db,
            ctx,
            settings,
            transaction: std::sync::Mutex::new(None),
            cursors: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Follows a view (or a query, run for as long as the subscription lasts) from its current
    /// rows on: first the rows as of everything committed now, then every change.
    pub async fn subscribe(&self, target: SubscribeTarget) -> Result<Subscription> {
        let (table, query, offsets, sources) = match target {
            SubscribeTarget::View(name, options) if self.db.view(&name).is_none() => {
                let Some(stream) = self.db.stream(&name) else {
                    return Err(Error::UndefinedRelation(name));
                };
                let offsets = crate::subscribe::start_offsets(&stream.log, &options)?;
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
            return Err(Error::Internal(format!(
                "the query stopped on an error: {error}"
            )));
        }
        let buffer_rows = self
            .settings
            .get("subscribe_buffer_rows")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(crate::subscribe::SUBSCRIBER_BUFFER_ROWS);
        Subscription::start(table, query, buffer_rows)
    }

    /// The session's Postgres settings (`SET` / `SHOW`).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Runs every statement in `sql`, in order, stopping at the first error (which is the last
    /// element). Statements before the error keep their effect.
    pub async fn execute(&self, sql: &str) -> Vec<Result<Output>> {
        let stmts = match parse(sql) {
            Ok(s) => s,
            Err(e) => return vec![Err(e)],
        };
        let mut out = Vec::with_capacity(stmts.len());
        for stmt in stmts {
            let r = self.execute_statement(stmt, None).await;
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        out
    }

    /// Runs one statement with parameter values for `$1`, `$2`, ...
    pub async fn execute_one(&self, sql: &str, params: Option<ParamValues>) -> Result<Output> {
        let mut stmts = parse(sql)?;
        match stmts.len() {
            0 => Ok(Output::Command(String::new())),
            1 => self.execute_statement(stmts.remove(0), params).await,
            _ => Err(Error::Syntax(
                "cannot run several statements in one prepared statement".into(),
            )),
        }
    }

    /// Describes one statement: its parameters and result columns.
    pub async fn describe(&self, sql: &str) -> Result<Description> {
        let mut stmts = parse(sql)?;
        if stmts.len() > 1 {
            return Err(Error::Syntax(
                "cannot prepare several statements at once".into(),
            ));
        }
        let Some(stmt) = stmts.pop() else {
            return Ok(Description {
                params: vec![],
                columns: None,
            });
        };
        match stmt {
            WeirStatement::ShowStreams => Ok(Description {
                params: vec![],
                columns: Some(show_streams_schema()),
            }),
            WeirStatement::Fetch { cursor, .. } => {
                let cursors = self.cursors.lock().await;
                let c = cursors.get(&cursor).ok_or_else(|| Error::WrongObject {
                    sqlstate: "34000",
                    message: format!("cursor \"{cursor}\" does not exist"),
                })?;
                Ok(Description {
                    params: vec![],
                    columns: Some(c.schema()),
                })
            }
            WeirStatement::ShowMaterializedViews => Ok(Description {
                params: vec![],
                columns: Some(show_views_schema()),
            }),
            WeirStatement::Sql(s) if matches!(&*s, Statement::ShowVariable { variable } if is_pg_setting(variable)) =>
            {
                let Statement::ShowVariable { variable } = *s else {
                    return Err(Error::Internal(
                        "SHOW lost its variable; this is a bug".into(),
                    ));
                };
                let name = setting_name(&variable);
                let fields = if name == "all" {
                    vec![
                        Field::new("name", DataType::Utf8, false),
                        Field::new("setting", DataType::Utf8, false),
                    ]
                } else {
                    vec![Field::new(&name, DataType::Utf8, false)]
                };
                Ok(Description {
                    params: vec![],
                    columns: Some(Arc::new(Schema::new(fields))),
                })
            }
            WeirStatement::Sql(s) if is_datafusion_statement(&s) => {
                let returns_rows = matches!(*s, Statement::Query(_) | Statement::Explain { .. });
                if matches!(&*s, Statement::Explain { statement, .. } if is_create_mv(statement)) {
                    return Ok(Description {
                        params: vec![],
                        columns: Some(explain_schema()),
                    });
                }
                let plan = self.plan(*s).await?;
                let types = plan.get_parameter_types()?;
                let mut params: Vec<(usize, Option<DataType>)> = types
                    .into_iter()
                    .filter_map(|(k, v)| {
                        k.trim_start_matches('$')
                            .parse::<usize>()
                            .ok()
                            .map(|i| (i, v))
                    })
                    .collect();
                params.sort_by_key(|(i, _)| *i);
                let n = params.last().map_or(0, |(i, _)| *i);
                let mut ordered = vec![None; n];
                for (i, t) in params {
                    ordered[i - 1] = t;
                }
                Ok(Description {
                    params: ordered,
                    columns: returns_rows.then(|| Arc::new(plan.schema().as_arrow().clone())),
                })
            }
            _ => Ok(Description {
                params: vec![],
                columns: None,
            }),
        }
    }

    async fn plan(&self, stmt: Statement) -> Result<LogicalPlan> {
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
        Ok(Output::Rows { schema, stream })
    }

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
    fn note_change(&self) {
        if let Some(n) = self
            .transaction
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            *n += 1;
        }
    }

    async fn execute_statement(
        &self,
        stmt: WeirStatement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        let out = self.run_statement(stmt, params).await?;
        if matches!(out, Output::Inserted(_) | Output::Modified(..)) {
            self.note_change();
        }
        Ok(out)
    }

    async fn run_statement(
        &self,
        stmt: WeirStatement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        match stmt {
            WeirStatement::Subscribe { target, output } => {
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
                        })
                    }
                    SubscribeOutput::Copy => {
                        let columns = sub.schema().fields().len();
                        let stream = futures::stream::unfold(Some(sub), |state| async move {
                            let mut sub = state?;
                            match sub.next().await.and_then(|b| copy_text(&b)) {
                                Ok(lines) => Some((Ok(lines), Some(sub))),
                                Err(e) => Some((Err(e), None)),
                            }
                        });
                        Ok(Output::CopyOut {
                            columns,
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
            WeirStatement::Fetch {
                cursor,
                count,
                timeout,
            } => {
                let mut cursors = self.cursors.lock().await;
                let c = cursors.get_mut(&cursor).ok_or_else(|| Error::WrongObject {
                    sqlstate: "34000",
                    message: format!("cursor \"{cursor}\" does not exist"),
                })?;
                let batch = c.fetch(count, timeout).await?;
                Ok(rows(batch.schema(), batch))
            }
            WeirStatement::CreateStream(cs) => self.create_stream(cs).await,
            WeirStatement::CreateSink(cs) => self.create_sink(cs).await,
            WeirStatement::ExplainCreateStream(cs) => {
                let query = cs.query.ok_or_else(|| {
                    Error::Internal("EXPLAIN CREATE STREAM without a query".into())
                })?;
                let compiled =
                    compile_query_statement(&self.ctx.state(), *query, ViewOptions::default())
                        .await?;
                explain_rows(compiled.explain_into(&format!(
                    "stream {}, appended exactly once with each checkpoint",
                    cs.name
                )))
            }
            WeirStatement::DropStream {
                name,
                if_exists,
                cascade,
            } => {
                if self.db.stream(&name).is_none() && if_exists {
                    return Ok(Output::Command("DROP STREAM".into()));
                }
                self.blocking(move |db| db.drop_stream(&name, cascade))
                    .await?;
                Ok(Output::Command("DROP STREAM".into()))
            }
            WeirStatement::ShowStreams => Ok(self.show_streams()?),
            WeirStatement::ShowMaterializedViews => self.show_views().await,
            WeirStatement::Sql(s) => self.execute_sql(*s, params, None).await,
            WeirStatement::Emit(s, mode) => self.execute_sql(*s, params, Some(mode)).await,
        }
    }

    async fn execute_sql(
        &self,
        stmt: Statement,
        params: Option<ParamValues>,
        emit: Option<EmitMode>,
    ) -> Result<Output> {
        match stmt {
            Statement::Declare { stmts } => {
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
                let plan = self.plan(Statement::Query(query.clone())).await?;
                let out = self.run_plan(plan, params).await?;
                let Output::Rows { schema, stream } = out else {
                    return Err(Error::Internal(
                        "a query returned no rows; this is a bug".into(),
                    ));
                };
                self.cursors.lock().await.insert(
                    name,
                    Cursor::Rows {
                        schema,
                        stream,
                        batches: VecDeque::new(),
                    },
                );
                Ok(Output::Command("DECLARE CURSOR".into()))
            }
            Statement::Close { cursor } => {
                use datafusion::sql::sqlparser::ast::CloseCursor;
                let mut cursors = self.cursors.lock().await;
                match cursor {
                    CloseCursor::All => cursors.clear(),
                    CloseCursor::Specific { name } => {
                        let name = normalize(&name);
                        if cursors.remove(&name).is_none() {
                            return Err(Error::WrongObject {
                                sqlstate: "34000",
                                message: format!("cursor \"{name}\" does not exist"),
                            });
                        }
                    }
                }
                Ok(Output::Command("CLOSE CURSOR".into()))
            }
            // Drivers and pools reset sessions with these; prepared statements live in the
            // wire protocol's portal store, and there is nothing else to discard.
            Statement::Deallocate { .. } => Ok(Output::Command("DEALLOCATE".into())),
            Statement::Discard { .. } => Ok(Output::Command("DISCARD ALL".into())),
            Statement::StartTransaction { .. } => {
                *self.transaction.lock().unwrap_or_else(|e| e.into_inner()) = Some(0);
                Ok(Output::Transaction(true, "BEGIN"))
            }
            Statement::Commit { .. } => {
                self.transaction
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                Ok(Output::Transaction(false, "COMMIT"))
            }
            Statement::Rollback { .. } => {
                let changed = self
                    .transaction
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or(0);
                if changed > 0 {
                    return Err(Error::WrongObject {
                        sqlstate: "0A000",
                        message: format!(
                            "ROLLBACK cannot undo the {changed} statement(s) since BEGIN that changed data: \
                             Weir commits every statement when it completes"
                        ),
                    });
                }
                Ok(Output::Transaction(false, "ROLLBACK"))
            }
            Statement::Set(set) if !is_datafusion_setting(&set) => {
                use datafusion::sql::sqlparser::ast::Set;
                match set {
                    Set::SingleAssignment {
                        variable, values, ..
                    } => {
                        let value: Vec<String> = values.iter().map(setting_value).collect();
                        let name = variable.to_string();
                        if value.len() == 1 && value[0].eq_ignore_ascii_case("default") {
                            self.settings.reset(&name);
                        } else {
                            self.settings.set(&name, &value.join(", "));
                        }
                    }
                    Set::SetTimeZone { value, .. } => {
                        self.settings.set("timezone", &setting_value(&value));
                    }
                    other => {
                        tracing::debug!(statement = %other, "SET accepted without effect");
                    }
                }
                Ok(Output::Command("SET".into()))
            }
            Statement::ShowVariable { variable } if is_pg_setting(&variable) => {
                let name = setting_name(&variable);
                let (schema, columns): (SchemaRef, Vec<ArrayRef>) = if name == "all" {
                    let all = self.settings.all();
                    (
                        Arc::new(Schema::new(vec![
                            Field::new("name", DataType::Utf8, false),
                            Field::new("setting", DataType::Utf8, false),
                        ])),
                        vec![
                            Arc::new(StringArray::from_iter_values(all.iter().map(|(k, _)| k))),
                            Arc::new(StringArray::from_iter_values(all.iter().map(|(_, v)| v))),
                        ],
                    )
                } else {
                    let value = self.settings.get(&name).ok_or_else(|| Error::WrongObject {
                        sqlstate: "42704",
                        message: format!("unrecognized configuration parameter \"{name}\""),
                    })?;
                    (
                        Arc::new(Schema::new(vec![Field::new(&name, DataType::Utf8, false)])),
                        vec![Arc::new(StringArray::from(vec![value]))],
                    )
                };
                let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
                Ok(rows(schema, batch))
            }
            Statement::CreateView(cv) => {
                if !cv.materialized {
                    return Err(Error::NotSupported(
                        "plain views are not supported; use CREATE MATERIALIZED VIEW".into(),
                    ));
                }
                if cv.or_replace || cv.or_alter {
                    return Err(Error::NotSupported(
                        "CREATE OR REPLACE of a materialized view is not supported; drop it first"
                            .into(),
                    ));
                }
                if !cv.columns.is_empty() {
                    return Err(Error::NotSupported(
                        "a column list on CREATE MATERIALIZED VIEW is not supported; alias the columns in the SELECT".into(),
                    ));
                }
                let name = object_name(&cv.name)?;
                if cv.if_not_exists
                    && (self.db.view(&name).is_some() || self.db.stream(&name).is_some())
                {
                    return Ok(Output::Command("CREATE MATERIALIZED VIEW".into()));
                }
                if self.db.view(&name).is_some() || self.db.stream(&name).is_some() {
                    return Err(Error::DuplicateRelation(name));
                }
                let query = cv.query.to_string();
                let options = self.view_options(&cv.options, emit).await?;
                let compiled =
                    compile_query_statement(&self.ctx.state(), Statement::Query(cv.query), options)
                        .await?;
                let def = ViewDef {
                    name,
                    query,
                    emit_on_update: emit == Some(EmitMode::OnUpdate),
                    allowed_lateness_ns: options.allowed_lateness_ns,
                };
                self.blocking(move |db| db.create_view(def, compiled))
                    .await?;
                Ok(Output::Command("CREATE MATERIALIZED VIEW".into()))
            }
            Statement::Drop {
                object_type,
                if_exists,
                names,
                cascade,
                ..
            } => match object_type {
                ObjectType::MaterializedView => {
                    for n in &names {
                        let name = object_name(n)?;
                        if self.db.view(&name).is_none() {
                            if if_exists {
                                continue;
                            }
                            return Err(Error::UndefinedRelation(name));
                        }
                        self.blocking(move |db| db.drop_view(&name, cascade))
                            .await?;
                    }
                    Ok(Output::Command("DROP MATERIALIZED VIEW".into()))
                }
                ObjectType::Table => {
                    for n in &names {
                        let name = object_name(n)?;
                        if self.db.stream(&name).is_some() {
                            return Err(Error::WrongObject {
                                sqlstate: "42809",
                                message: format!(
                                    "{name} is a stream: drop it with DROP STREAM {name}"
                                ),
                            });
                        }
                        if self.db.table(&name).is_none() {
                            if if_exists {
                                continue;
                            }
                            return Err(Error::UndefinedRelation(name));
                        }
                        self.blocking(move |db| db.drop_table(&name, cascade))
                            .await?;
                    }
                    Ok(Output::Command("DROP TABLE".into()))
                }
                other => Err(Error::NotSupported(format!(
                    "DROP {other} is not supported"
                ))),
            },
            Statement::Explain { statement, .. } if is_create_mv(&statement) => {
                let Statement::CreateView(cv) = *statement else {
                    return Err(Error::Internal(
                        "EXPLAIN of a view lost its statement".into(),
                    ));
                };
                let name = object_name(&cv.name)?;
                let options = self.view_options(&cv.options, emit).await?;
                let compiled =
                    compile_query_statement(&self.ctx.state(), Statement::Query(cv.query), options)
                        .await?;
                explain_rows(compiled.explain(&name))
            }
            Statement::Insert(ins) => {
                if let TableObject::TableName(name) = &ins.table {
                    let name = object_name(name)?;
                    if self.db.view(&name).is_some() {
                        return Err(Error::WrongObject {
                            sqlstate: "42809",
                            message: format!(
                                "cannot insert into materialized view {name}: its rows come from its query"
                            ),
                        });
                    }
                    if self.db.stream(&name).is_none() && self.db.table(&name).is_none() {
                        return Err(Error::UndefinedRelation(name));
                    }
                    self.check_not_produced(&name, "insert into")?;
                }
                let mut ins = ins;
                self.decode_bytea_literals(&mut ins);
                let plan = self.plan(Statement::Insert(ins)).await?;
                let out = self.run_plan(plan, params).await?.collect().await?;
                let count = affected_rows(&out);
                Ok(Output::Inserted(count))
            }
            Statement::CreateTable(ct) => {
                let name = object_name(&ct.name)?;
                if self.db.exists(&name) {
                    if ct.if_not_exists {
                        return Ok(Output::Command("CREATE TABLE".into()));
                    }
                    return Err(Error::DuplicateRelation(name));
                }
                let def = self.table_def(name, Statement::CreateTable(ct)).await?;
                self.blocking(move |db| db.create_table(def)).await?;
                Ok(Output::Command("CREATE TABLE".into()))
            }
            Statement::Copy { .. } => {
                let db = self.db.clone();
                let copy = copy::copy_in(&stmt, |name| {
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
            Statement::Update(_) | Statement::Delete(_) => {
                let command = if matches!(stmt, Statement::Update(_)) {
                    "UPDATE"
                } else {
                    "DELETE"
                };
                if let Some(name) = dml_target(&stmt) {
                    if self.db.stream(&name).is_some() {
                        return Err(Error::WrongObject {
                            sqlstate: "0A000",
                            message: format!(
                                "{command} on stream {name} is not supported: streams are append-only logs of events; \
                                 keep reference data that changes in a table (CREATE TABLE ... PRIMARY KEY)"
                            ),
                        });
                    }
                    if self.db.view(&name).is_some() {
                        return Err(Error::WrongObject {
                            sqlstate: "42809",
                            message: format!(
                                "cannot {command} materialized view {name}: its rows come from its query"
                            ),
                        });
                    }
                }
                let plan = self.plan(stmt).await?;
                let out = self.run_plan(plan, params).await?.collect().await?;
                let count = affected_rows(&out);
                Ok(Output::Modified(command, count))
            }
            s if is_datafusion_statement(&s) => {
                let is_query = matches!(s, Statement::Query(_) | Statement::Explain { .. });
                let plan = self.plan(s).await?;
                if is_query {
                    self.run_plan(plan, params).await
                } else {
                    let _ = self.run_plan(plan, params).await?.collect().await?;
                    Ok(Output::Command("SET".into()))
                }
            }
            other => {
                let text = other.to_string();
                let words: Vec<&str> = text.split_whitespace().take(2).collect();
                Err(Error::NotSupported(format!(
                    "{} is not supported",
                    words.join(" ")
                )))
            }
        }
    }

    /// Refuses writes to a stream made `AS SELECT`: its rows come from its query, exactly once.
    fn check_not_produced(&self, name: &str, what: &str) -> Result<()> {
        if let Some(source) = self.db.stream(name).and_then(|s| s.def.source.clone()) {
            return Err(Error::WrongObject {
                sqlstate: "42809",
                message: format!(
                    "cannot {what} stream {name}: it is read from Kafka topic {} at {}",
                    source.topic, source.brokers
                ),
            });
        }
        if self.db.producer(name).is_some() {
            return Err(Error::WrongObject {
                sqlstate: "42809",
                message: format!(
                    "cannot {what} stream {name}: it holds the results of its query (CREATE STREAM ... AS SELECT)"
                ),
            });
        }
        Ok(())
    }

    /// Loads the data of a `COPY ... FROM STDIN` (everything the client sent): all rows in one
    /// append, or none and an error naming the first bad line. Returns the rows loaded.
    pub async fn copy_data(&self, copy: &CopyIn, data: Vec<u8>) -> Result<u64> {
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

    /// Postgres reads a text literal for a BYTEA column as hex (`'\x00ff'`); DataFusion would
    /// store the text's own bytes. Such literals in INSERT ... VALUES become `decode(..., 'hex')`.
    fn decode_bytea_literals(&self, ins: &mut datafusion::sql::sqlparser::ast::Insert) {
        use datafusion::sql::sqlparser::ast::{SetExpr, Value};
        let TableObject::TableName(name) = &ins.table else {
            return;
        };
        let Ok(name) = object_name(name) else { return };
        let schema = match (self.db.stream(&name), self.db.table(&name)) {
            (Some(s), _) => Arc::clone(&s.schema),
            (None, Some(t)) => Arc::clone(&t.schema),
            (None, None) => return,
        };
        let targets: Vec<Option<usize>> = if ins.columns.is_empty() {
            (0..schema.fields().len()).map(Some).collect()
        } else {
            ins.columns
                .iter()
                .map(|c| object_name(c).ok().and_then(|c| schema.index_of(&c).ok()))
                .collect()
        };
        let is_binary = |i: usize| {
            targets.get(i).copied().flatten().is_some_and(|c| {
                matches!(
                    schema.field(c).data_type(),
                    DataType::Binary | DataType::LargeBinary | DataType::BinaryView
                )
            })
        };
        let Some(source) = ins.source.as_mut() else {
            return;
        };
        let SetExpr::Values(values) = source.body.as_mut() else {
            return;
        };
        for row in &mut values.rows {
            for (i, e) in row.iter_mut().enumerate() {
                let SqlExpr::Value(v) = e else { continue };
                let Value::SingleQuotedString(text) = &v.value else {
                    continue;
                };
                let Some(hex) = text.strip_prefix("\\x") else {
                    continue;
                };
                if !is_binary(i) {
                    continue;
                }
                let call = format!("decode('{}', 'hex')", hex.replace('\'', ""));
                if let Ok(expr) = datafusion::sql::sqlparser::parser::Parser::new(
                    &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
                )
                .try_with_sql(&call)
                .and_then(|mut p| p.parse_expr())
                {
                    *e = expr;
                }
            }
        }
    }

    /// Resolves the columns and primary key of a CREATE TABLE.
    async fn table_def(&self, name: String, stmt: Statement) -> Result<TableDef> {
        let plan = self.plan(stmt).await?;
        let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(ct)) = plan else {
            return Err(Error::NotSupported(
                "this form of CREATE TABLE is not supported; write CREATE TABLE name (columns..., PRIMARY KEY (...))"
                    .into(),
            ));
        };
        if !matches!(ct.input.as_ref(), LogicalPlan::EmptyRelation(_)) {
            return Err(Error::NotSupported(
                "CREATE TABLE AS is not supported; create the table, then INSERT INTO it".into(),
            ));
        }
        if ct.or_replace || ct.temporary {
            return Err(Error::NotSupported(
                "CREATE OR REPLACE / TEMPORARY tables are not supported".into(),
            ));
        }
        let schema = ct.input.schema();
        let mut key = None;
        for c in ct.constraints.iter() {
            if let datafusion::common::Constraint::PrimaryKey(k) = c {
                key = Some(k.clone());
            }
        }
        let Some(key) = key else {
            return Err(Error::Syntax(format!(
                "table {name} needs a PRIMARY KEY: rows are updated, deleted and joined by it"
            )));
        };
        let mut columns: Vec<ColumnDef> = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if columns.iter().any(|c| &c.name == f.name()) {
                return Err(Error::DuplicateRelation(format!("column {}", f.name())));
            }
            columns.push(ColumnDef {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable() && !key.contains(&i),
            });
        }
        let primary_key = key.iter().map(|&i| columns[i].name.clone()).collect();
        Ok(TableDef {
            name,
            columns,
            primary_key,
        })
    }

    async fn create_stream(&self, mut cs: CreateStream) -> Result<Output> {
        if self.db.stream(&cs.name).is_some() || self.db.view(&cs.name).is_some() {
            if cs.if_not_exists {
                return Ok(Output::Command("CREATE STREAM".into()));
            }
            return Err(Error::DuplicateRelation(cs.name));
        }
        if let Some(query) = cs.query.take() {
            return self.create_stream_as(cs, *query, None).await;
        }
        if cs.columns.is_empty() {
            return Err(Error::Syntax("a stream needs at least one column".into()));
        }
        let explicit_partitions = cs.options.iter().any(|(k, _)| k == "partitions");
        let mut def = self.stream_def(cs).await?;
        if let Some(source) = def.source.clone() {
            // The stream mirrors the topic's partitions, so that each topic offset is kept with
            // the rows it became, in the partition of the same number.
            let n = self
                .blocking(move |_| crate::connectors::topic_partitions(&source))
                .await?;
            if explicit_partitions && def.partitions != n {
                return Err(Error::WrongObject {
                    sqlstate: "22023",
                    message: format!(
                        "topic {} has {n} partitions, and a stream read from it has as many; \
                         leave out partitions = {}",
                        def.source.as_ref().map_or("", |s| s.topic.as_str()),
                        def.partitions
                    ),
                });
            }
            def.partitions = n;
        }
        self.blocking(move |db| db.create_stream(def)).await?;
        Ok(Output::Command("CREATE STREAM".into()))
    }

    /// `CREATE SINK name INTO KAFKA WITH (brokers = ..., topic = ..., ...) AS SELECT ...`: a
    /// stream of the query's results (as `CREATE STREAM ... AS SELECT`, taking the other
    /// options), delivered to the topic as they are appended.
    async fn create_sink(&self, mut cs: CreateStream) -> Result<Output> {
        if self.db.exists(&cs.name) {
            if cs.if_not_exists {
                return Ok(Output::Command("CREATE SINK".into()));
            }
            return Err(Error::DuplicateRelation(cs.name));
        }
        let mut brokers = None;
        let mut topic = None;
        cs.options.retain(|(k, v)| match k.as_str() {
            "brokers" => {
                brokers = Some(v.clone());
                false
            }
            "topic" => {
                topic = Some(v.clone());
                false
            }
            _ => true,
        });
        let (Some(brokers), Some(topic)) = (brokers, topic) else {
            return Err(Error::WrongObject {
                sqlstate: "22023",
                message: "a Kafka sink needs WITH (brokers = 'host:port', topic = '...')".into(),
            });
        };
        let sink = KafkaEndpoint {
            brokers,
            topic,
            start: None,
        };
        let query = cs
            .query
            .take()
            .ok_or_else(|| Error::Internal("CREATE SINK without a query".into()))?;
        let probe = sink.clone();
        self.blocking(move |_| crate::connectors::topic_partitions(&probe))
            .await?;
        self.create_stream_as(cs, *query, Some(sink)).await?;
        Ok(Output::Command("CREATE SINK".into()))
    }

    /// Resolves SQL types, the watermark and the options of a CREATE STREAM.
    async fn stream_def(&self, cs: CreateStream) -> Result<StreamDef> {
        let casts: Vec<String> = cs
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("CAST(NULL AS {}) AS c{i}", c.data_type))
            .collect();
        let plan = self
            .ctx
            .state()
            .create_logical_plan(&format!("SELECT {}", casts.join(", ")))
            .await
            .map_err(|e| Error::Datatype(format!("unsupported column type: {e}")))?;
        let mut columns = Vec::with_capacity(cs.columns.len());
        for (c, f) in cs.columns.iter().zip(plan.schema().fields()) {
            if columns.iter().any(|x: &ColumnDef| x.name == c.name) {
                return Err(Error::DuplicateRelation(format!("column {}", c.name)));
            }
            columns.push(ColumnDef {
                name: c.name.clone(),
                data_type: f.data_type().to_string(),
                nullable: !c.not_null,
            });
        }
        let watermark = match &cs.watermark {
            None => None,
            Some((column, expr)) => {
                let Some(i) = columns.iter().position(|c| &c.name == column) else {
                    return Err(Error::UndefinedColumn(format!(
                        "watermark column \"{column}\" does not exist"
                    )));
                };
                let t = plan.schema().field(i).data_type();
                if !matches!(t, DataType::Timestamp(_, _)) {
                    return Err(Error::Datatype(format!(
                        "watermark column {column} must be a TIMESTAMP, not {t}"
                    )));
                }
                // Event time drives windows: a row without one could never be placed.
                columns[i].nullable = false;
                let delay_ns = self.watermark_delay(column, expr).await?;
                Some(WatermarkDef {
                    column: column.clone(),
                    delay_ns,
                })
            }
        };
        let types: Vec<DataType> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let mut def = StreamDef::new(cs.name.clone(), columns, watermark);
        apply_stream_options(&mut def, &cs.options, &types)?;
        Ok(def)
    }

    /// `CREATE STREAM name [WITH (...)] AS SELECT ...`: a stream with the query's columns,
    /// and the query appending its results to it. Only results that never change can be
    /// appended; the stream's watermark follows the query's window ends or event time.
    async fn create_stream_as(
        &self,
        cs: CreateStream,
        query: Statement,
        sink: Option<KafkaEndpoint>,
    ) -> Result<Output> {
        if let Some((k, _)) = cs
            .options
            .iter()
            .find(|(k, _)| ["connector", "brokers", "topic", "start"].contains(&k.as_str()))
        {
            return Err(Error::WrongObject {
                sqlstate: "22023",
                message: format!(
                    "option {k}: a stream made AS SELECT holds its query's results and reads no \
                     Kafka topic; to deliver results to Kafka use CREATE SINK name INTO KAFKA"
                ),
            });
        }
        let text = query.to_string();
        let compiled =
            compile_query_statement(&self.ctx.state(), query, ViewOptions::default()).await?;
        if compiled.key.is_some() {
            return Err(Error::NotSupported(
                "a stream holds rows that never change, but this query's results change \
                 (an aggregate without a window, or EMIT ON UPDATE); use CREATE MATERIALIZED VIEW"
                    .into(),
            ));
        }
        let schema = compiled.schema();
        let mut columns: Vec<ColumnDef> = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            if columns.iter().any(|c| &c.name == f.name()) {
                return Err(Error::DuplicateRelation(format!(
                    "column {} (give the query's columns distinct names with AS)",
                    f.name()
                )));
            }
            columns.push(ColumnDef {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
            });
        }
        let watermark = compiled.watermark.map(|(i, delay_ns)| {
            columns[i].nullable = false;
            WatermarkDef {
                column: columns[i].name.clone(),
                delay_ns,
            }
        });
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let mut def = StreamDef::new(cs.name.clone(), columns, watermark);
        def.query = Some(text);
        def.sink = sink;
        apply_stream_options(&mut def, &cs.options, &types)?;
        self.blocking(move |db| db.create_stream_as(def, compiled))
            .await?;
        Ok(Output::Command("CREATE STREAM".into()))
    }
}

/// Applies the `WITH` options of a CREATE STREAM; `types` are the column types.
fn apply_stream_options(
    def: &mut StreamDef,
    options: &[(String, String)],
    types: &[DataType],
) -> Result<()> {
    let bad = |message: String| Error::WrongObject {
        sqlstate: "22023",
        message,
    };
    let mut connector = None;
    let mut brokers = None;
    let mut topic = None;
    let mut start = None;
    {
        for (k, v) in options {
            let int = |max: u64| -> Result<u64> {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| Error::WrongObject {
                        sqlstate: "22023",
                        message: format!("option {k} must be an integer from 1 to {max}, not {v}"),
                    })
            };
            match k.as_str() {
                "partitions" => def.partitions = int(1024)? as u32,
                "key" => {
                    let key = v.to_lowercase();
                    let Some(i) = def.column_index(&key) else {
                        return Err(Error::UndefinedColumn(format!(
                            "key column \"{key}\" does not exist"
                        )));
                    };
                    let t = &types[i];
                    if !supports_key_type(t) {
                        return Err(Error::Datatype(format!(
                            "a stream cannot be partitioned by column {key} of type {t}"
                        )));
                    }
                    def.key = Some(key);
                }
                "segment_bytes" => def.segment_bytes = int(1 << 40)?,
                "retention_ms" => def.retention_ms = Some(int(i64::MAX as u64)? as i64),
                "retention_bytes" => def.retention_bytes = Some(int(u64::MAX)?),
                "idle_timeout_ms" => def.idle_timeout_ms = int(u64::MAX)?,
                "format" => {
                    if !v.eq_ignore_ascii_case("json") {
                        return Err(Error::WrongObject {
                            sqlstate: "22023",
                            message: format!(
                                "unknown stream format {v}; known: json (each Kafka record value \
                                 is one JSON object)"
                            ),
                        });
                    }
                    def.format = Some("json".into());
                }
                "connector" => {
                    if !v.eq_ignore_ascii_case("kafka") {
                        return Err(bad(format!(
                            "unknown connector {v}; known: kafka (a topic of an external Kafka cluster)"
                        )));
                    }
                    connector = Some(v.to_lowercase());
                }
                "brokers" => {
                    if v.trim().is_empty() {
                        return Err(bad("option brokers needs host:port[,host:port...]".into()));
                    }
                    brokers = Some(v.clone());
                }
                "topic" => {
                    if v.is_empty() {
                        return Err(bad("option topic needs a topic name".into()));
                    }
                    topic = Some(v.clone());
                }
                "start" => {
                    let s = v.to_lowercase();
                    if s != "earliest" && s != "latest" {
                        return Err(bad(format!(
                            "option start must be 'earliest' or 'latest', not {v}"
                        )));
                    }
                    start = Some(s);
                }
                other => {
                    return Err(Error::WrongObject {
                        sqlstate: "22023",
                        message: format!(
                            "unknown stream option {other}; known: partitions, key, format, segment_bytes, retention_ms, retention_bytes, idle_timeout_ms, connector, brokers, topic, start"
                        ),
                    });
                }
            }
        }
    }
    match (connector, brokers, topic) {
        (None, None, None) if start.is_none() => {}
        (Some(_), Some(brokers), Some(topic)) => {
            def.source = Some(KafkaEndpoint {
                brokers,
                topic,
                start,
            });
        }
        (Some(_), _, _) => {
            return Err(bad(
                "connector = 'kafka' needs brokers = 'host:port' and topic = '...'".into(),
            ));
        }
        (None, _, _) => {
            return Err(bad(
                "options brokers, topic and start belong to connector = 'kafka'".into(),
            ));
        }
    }
    Ok(())
}

impl Session {
    /// The `WITH (...)` options of CREATE MATERIALIZED VIEW.
    async fn view_options(
        &self,
        options: &CreateTableOptions,
        emit: Option<EmitMode>,
    ) -> Result<ViewOptions> {
        let mut out = ViewOptions {
            emit,
            allowed_lateness_ns: 0,
        };
        let list = match options {
            CreateTableOptions::None => return Ok(out),
            CreateTableOptions::With(l)
            | CreateTableOptions::Options(l)
            | CreateTableOptions::Plain(l)
            | CreateTableOptions::TableProperties(l) => l,
        };
        for option in list {
            let SqlOption::KeyValue { key, value } = option else {
                return Err(Error::Syntax(format!(
                    "expected name = value, not {option}"
                )));
            };
            match normalize(key).as_str() {
                "allowed_lateness" => {
                    let text = match value {
                        SqlExpr::Value(v) => match &v.value {
                            Value::SingleQuotedString(s) => {
                                format!("INTERVAL '{}'", s.replace('\'', "''"))
                            }
                            other => other.to_string(),
                        },
                        other => other.to_string(),
                    };
                    out.allowed_lateness_ns = self
                        .interval_of(&text)
                        .await
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| Error::WrongObject {
                            sqlstate: "22023",
                            message: format!(
                                "allowed_lateness must be a fixed, non-negative interval such as '10 seconds', not {value}"
                            ),
                        })?;
                }
                other => {
                    return Err(Error::WrongObject {
                        sqlstate: "22023",
                        message: format!(
                            "unknown materialized view option {other}; known: allowed_lateness"
                        ),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The length in nanoseconds of an interval expression, if it is one of fixed length.
    async fn interval_of(&self, sql: &str) -> Option<i64> {
        let plan = self
            .ctx
            .state()
            .create_logical_plan(&format!("SELECT {sql}"))
            .await
            .ok()?;
        let LogicalPlan::Projection(p) = &plan else {
            return None;
        };
        p.expr.first().and_then(interval_ns)
    }

    /// The delay of `WATERMARK FOR col AS col - INTERVAL '...'` (or `AS col`: no delay).
    async fn watermark_delay(&self, column: &str, expr: &SqlExpr) -> Result<i64> {
        let bad = || {
            Error::Syntax(format!(
                "WATERMARK FOR {column} AS must be {column} or {column} - INTERVAL '...', not {expr}"
            ))
        };
        let is_col = |e: &SqlExpr| matches!(e, SqlExpr::Identifier(i) if normalize(i) == column);
        match expr {
            e if is_col(e) => Ok(0),
            SqlExpr::BinaryOp {
                left,
                op: BinaryOperator::Minus,
                right,
            } if is_col(left) => {
                let plan = self
                    .ctx
                    .state()
                    .create_logical_plan(&format!("SELECT {right}"))
                    .await?;
                let LogicalPlan::Projection(p) = &plan else {
                    return Err(bad());
                };
                let delay = p.expr.first().and_then(|e| match e {
                    Expr::Alias(a) => interval_ns(&a.expr),
                    e => interval_ns(e),
                });
                delay.filter(|d| *d >= 0).ok_or_else(bad)
            }
            _ => Err(bad()),
        }
    }

    fn show_streams(&self) -> Result<Output> {
        let streams = self.db.streams();
        let schema = show_streams_schema();
        let mut name = Vec::new();
        let mut parts = Vec::new();
        let mut key = Vec::new();
        let mut event_time = Vec::new();
        let mut delay = Vec::new();
        let mut row_count = Vec::new();
        for s in &streams {
            name.push(s.def.name.clone());
            parts.push(s.def.partitions as i32);
            key.push(s.def.key.clone());
            event_time.push(s.def.watermark.as_ref().map(|w| w.column.clone()));
            delay.push(s.def.watermark.as_ref().map(|w| humanize_ns(w.delay_ns)));
            row_count.push(
                s.log
                    .partitions()
                    .iter()
                    .map(|p| (p.committed() - p.start_offset()) as i64)
                    .sum::<i64>(),
            );
        }
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(name)),
                Arc::new(Int32Array::from(parts)),
                Arc::new(StringArray::from(key)),
                Arc::new(StringArray::from(event_time)),
                Arc::new(StringArray::from(delay)),
                Arc::new(Int64Array::from(row_count)),
            ],
        )?;
        Ok(rows(schema, batch))
    }

    async fn show_views(&self) -> Result<Output> {
        let views = self.db.views();
        // Like a SELECT from a view, report each view as of everything committed to its source.
        let waiting = views.clone();
        let progress = tokio::task::spawn_blocking(move || {
            waiting
                .iter()
                .map(|v| {
                    let offsets = v.source_offsets();
                    v.table.wait_for(&offsets, VIEW_READ_WAIT)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::Internal(format!("waiting for views failed: {e}")))?;
        let schema = show_views_schema();
        let mut name = Vec::new();
        let mut source = Vec::new();
        let mut row_count = Vec::new();
        let mut watermark = Vec::new();
        let mut late = Vec::new();
        let mut status = Vec::new();
        let mut definition = Vec::new();
        for (v, p) in views.iter().zip(progress) {
            name.push(v.def.name.clone());
            source.push(
                v.sources
                    .iter()
                    .map(|s| s.def.name.as_str())
                    .chain(v.tables.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            row_count.push(v.table.num_rows() as i64);
            watermark.push(p.watermark_ns.map(|ns| ns / 1000));
            late.push(p.late_rows as i64);
            status.push(match p.error {
                Some(e) => format!("failed: {e}"),
                None => "running".into(),
            });
            definition.push(v.def.query.clone());
        }
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(name)),
                Arc::new(StringArray::from(source)),
                Arc::new(Int64Array::from(row_count)),
                Arc::new(datafusion::arrow::array::TimestampMicrosecondArray::from(
                    watermark,
                )),
                Arc::new(Int64Array::from(late)),
                Arc::new(StringArray::from(status)),
                Arc::new(StringArray::from(definition)),
            ],
        )?;
        Ok(rows(schema, batch))
    }
}

/// The table an UPDATE or DELETE changes.
fn dml_target(s: &Statement) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{FromTable, TableFactor};
    let relation = match s {
        Statement::Update(u) => &u.table.relation,
        Statement::Delete(d) => match &d.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => &t.first()?.relation,
        },
        _ => return None,
    };
    match relation {
        TableFactor::Table { name, .. } => object_name(name).ok(),
        _ => None,
    }
}

/// The row count a DML plan returns (one `count` column of UInt64).
fn affected_rows(out: &[RecordBatch]) -> u64 {
    out.iter()
        .filter_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                .map(|a| a.values().iter().sum::<u64>())
        })
        .sum()
}

/// Whether SHOW names a Postgres setting (not one of DataFusion's dotted ones).
fn is_pg_setting(variable: &[datafusion::sql::sqlparser::ast::Ident]) -> bool {
    !variable.is_empty() && !variable.iter().any(|v| v.value.contains('.'))
}

/// The setting a SHOW names: `SHOW TRANSACTION ISOLATION LEVEL` and `SHOW TIME ZONE` are the
/// SQL-standard spellings of `transaction_isolation` and `timezone`.
fn setting_name(variable: &[datafusion::sql::sqlparser::ast::Ident]) -> String {
    let words: Vec<String> = variable
        .iter()
        .map(|v| v.value.to_ascii_lowercase())
        .collect();
    match words.join(" ").as_str() {
        "transaction isolation level" => "transaction_isolation".into(),
        "time zone" => "timezone".into(),
        other => other.replace(' ', "_"),
    }
}

/// Whether a SET names one of DataFusion's own settings (`datafusion.execution...`).
fn is_datafusion_setting(set: &datafusion::sql::sqlparser::ast::Set) -> bool {
    use datafusion::sql::sqlparser::ast::Set;
    matches!(set, Set::SingleAssignment { variable, .. } if variable.to_string().contains('.'))
}

/// A SET value as text: `'ISO'`, `ISO`, `5`, `on` all read as they are written.
fn setting_value(e: &SqlExpr) -> String {
    match e {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        SqlExpr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

fn is_create_mv(s: &Statement) -> bool {
    matches!(s, Statement::CreateView(cv) if cv.materialized)
}

/// Statements handed to DataFusion as they are.
fn is_datafusion_statement(s: &Statement) -> bool {
    matches!(
        s,
        Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Explain { .. }
            | Statement::Set(_)
            | Statement::ShowVariable { .. }
    )
}

fn show_streams_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("partitions", DataType::Int32, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("event_time", DataType::Utf8, true),
        Field::new("watermark_delay", DataType::Utf8, true),
        Field::new("rows", DataType::Int64, false),
    ]))
}

fn show_views_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new(
            "watermark",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("late_events", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("definition", DataType::Utf8, false),
    ]))
}

fn explain_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("plan", DataType::Utf8, false)]))
}
