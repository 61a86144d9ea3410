//! The DataFusion context every statement is planned in: Weir's objects as tables, the window
//! table functions, `pg_catalog` and the session's settings functions.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, SchemaProvider, TableProvider};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::{SessionConfig, SessionContext};

use super::stream::{StreamTable, external};
use super::system::{
    CONNECTORS, LATE_EVENTS, LateEventsTable, VIEW_PROGRESS, ViewProgressTable, connectors_table,
};
use super::table::RefTable;
use super::view::ViewTable;
use super::window::WindowFunction;
use crate::catalog::{CATALOG, FunctionDef, PlainViewDef, Registry, SCHEMA};
use crate::settings::Settings;
use crate::syntax::WeirStatement;

/// Resolves table names to the database's streams and views, as they are right now.
#[derive(Debug)]
struct WeirSchema {
    registry: Registry,
}

#[async_trait]
impl SchemaProvider for WeirSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .registry
            .streams()
            .iter()
            .map(|s| s.def.name.clone())
            .collect();
        names.extend(self.registry.views().iter().map(|v| v.def.name.clone()));
        names.extend(self.registry.tables().iter().map(|t| t.def.name.clone()));
        names.extend(self.registry.plain_views().into_iter().map(|v| v.name));
        names
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        if let Some(s) = self.registry.stream(name) {
            return Ok(Some(Arc::new(StreamTable::new(
                s,
                self.registry.producer(name),
            ))));
        }
        if name == LATE_EVENTS {
            return Ok(Some(Arc::new(LateEventsTable::new(self.registry.clone()))));
        }
        if name == VIEW_PROGRESS {
            return Ok(Some(Arc::new(ViewProgressTable::new(
                self.registry.clone(),
            ))));
        }
        if name == CONNECTORS {
            return connectors_table(&self.registry).map(Some).map_err(external);
        }
        if name == super::SESSIONS {
            return super::sessions::sessions_table(&self.registry)
                .map(Some)
                .map_err(external);
        }
        if name == super::CHECKPOINTS {
            return super::checkpoints::checkpoints_table(&self.registry)
                .map(Some)
                .map_err(external);
        }
        if name == super::WATERMARKS {
            return super::watermarks::watermarks_table(&self.registry)
                .map(Some)
                .map_err(external);
        }
        if name == super::OPERATORS {
            return super::operators::operators_table(&self.registry)
                .map(Some)
                .map_err(external);
        }
        if let Some(t) = self.registry.table(name) {
            return Ok(Some(Arc::new(RefTable::new(t))));
        }
        if let Some(v) = self.registry.plain_view(name) {
            return plain_view(&self.registry, v).await.map(Some);
        }
        Ok(self
            .registry
            .view(name)
            .map(|v| Arc::new(ViewTable::new(v)) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.registry.exists(name)
            || name == LATE_EVENTS
            || name == VIEW_PROGRESS
            || name == CONNECTORS
            || name == super::OPERATORS
            || name == super::WATERMARKS
            || name == super::CHECKPOINTS
            || name == super::SESSIONS
    }
}

/// Registers functions written in SQL, in order (a body may call those before it). One that
/// no longer plans (a function it calls was dropped) is left out, and calls to it fail.
pub(crate) fn register_sql_functions(ctx: &SessionContext, defs: &[FunctionDef]) {
    for def in defs {
        match super::functions::plan_function(&ctx.state(), def) {
            Ok(f) => {
                ctx.register_udf(datafusion::logical_expr::ScalarUDF::from(f));
            }
            Err(e) => {
                tracing::warn!(function = %def.name, error = %e, "a SQL function does not plan");
            }
        }
    }
}

/// A plain view as DataFusion's view table: its query planned now, over the objects as they
/// are, and inlined by the planner where it is read (a materialized view's query included).
async fn plain_view(
    registry: &Registry,
    def: PlainViewDef,
) -> datafusion::error::Result<Arc<dyn TableProvider>> {
    let mut stmts = crate::syntax::parse(&def.query).map_err(external)?;
    let (Some(WeirStatement::Sql(stmt)), true) = (stmts.pop(), stmts.is_empty()) else {
        return datafusion::common::plan_err!("view {} is not defined by one query", def.name);
    };
    let ctx = new_context(registry, &Settings::default());
    let plan = ctx
        .state()
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(stmt))
        .await?;
    Ok(Arc::new(datafusion::catalog::view::ViewTable::new(
        plan,
        Some(def.query),
    )))
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

/// A DataFusion context over `registry`'s objects, with Weir's window table functions,
/// `pg_catalog` and the functions that read `settings`.
pub(crate) fn new_context(registry: &Registry, settings: &Settings) -> WeirContext {
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
        // Integer arithmetic that fails on overflow (22003) and text read as bytea as
        // PostgreSQL does; after type coercion, which the default rules end with.
        .with_analyzer_rule(Arc::new(crate::functions::PostgresMeaning))
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
    let _ = catalog.register_schema(
        SCHEMA,
        Arc::new(WeirSchema {
            registry: registry.clone(),
        }),
    );
    ctx.register_catalog(CATALOG, Arc::new(catalog));
    ctx.register_udtf("tumble", Arc::new(WindowFunction::tumble(registry.clone())));
    ctx.register_udtf("hop", Arc::new(WindowFunction::hop(registry.clone())));
    ctx.register_udtf(
        "session",
        Arc::new(WindowFunction::session(registry.clone())),
    );
    ctx.register_udtf(
        super::versions::VERSIONS,
        Arc::new(super::versions::VersionsFunction::new(registry.clone())),
    );
    ctx.register_udtf(
        super::why::WHY,
        Arc::new(super::why::WhyFunction::new(registry.clone())),
    );
    // pg_catalog and the Postgres functions that psql, drivers and BI tools introspect with.
    super::pg_catalog::install(&ctx, CATALOG, registry);
    // After install, which rebuilds the state and so re-registers DataFusion's functions in a
    // random order: an alias of theirs (`date_format` of `to_char`) must not win over Weir's.
    for f in crate::functions::all() {
        ctx.register_udf(f);
    }
    // PostgreSQL's `variance`, the sample variance as DataFusion's var_samp.
    ctx.register_udaf(
        datafusion::functions_aggregate::variance::var_samp_udaf()
            .as_ref()
            .clone()
            .with_aliases(["variance"]),
    );
    register_sql_functions(&ctx, &registry.functions());
    for f in crate::settings::functions(settings) {
        ctx.register_udf(f);
    }
    WeirContext(ctx)
}
