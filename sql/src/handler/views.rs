//! CREATE MATERIALIZED VIEW and DROP MATERIALIZED VIEW.

use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{
    CreateTableOptions, Expr as SqlExpr, Query, SqlOption, Statement, Value, ViewColumnDef,
};

use super::Handler;
use crate::catalog::{PlainViewDef, ViewDef};
use crate::output::Output;
use crate::plan::{ViewOptions, compile_query_statement, name_columns, refuse_duplicate_names};
use crate::syntax::{EmitMode, WeirStatement, normalize, object_name};
use crate::time::interval_ns;
use crate::{Error, Result};

/// `CREATE MATERIALIZED VIEW v (a, b) AS query`: the query with its columns renamed in order,
/// as `SELECT * FROM (query) AS v (a, b)`, which is also what the catalog keeps.
fn rename_columns(query: Box<Query>, name: &str, columns: &[ViewColumnDef]) -> Result<Box<Query>> {
    if columns.is_empty() {
        return Ok(query);
    }
    if let Some(c) = columns
        .iter()
        .find(|c| c.data_type.is_some() || c.options.is_some())
    {
        return Err(Error::NotSupported(format!(
            "a type or option on view column {}: a view's column list names its columns only",
            c.name
        )));
    }
    let names: Vec<String> = columns.iter().map(|c| c.name.to_string()).collect();
    let sql = format!(
        "SELECT * FROM ({query}) AS \"{}\" ({})",
        name.replace('"', "\"\""),
        names.join(", ")
    );
    let mut stmts = crate::syntax::parse(&sql)?;
    match stmts.pop() {
        Some(WeirStatement::Sql(stmt)) => match *stmt {
            Statement::Query(q) => Ok(q),
            _ => Err(Error::Internal(
                "a renamed view query is not a query".into(),
            )),
        },
        _ => Err(Error::Internal("a renamed view query did not parse".into())),
    }
}

/// A memory size as PostgreSQL writes them in settings: a number and a unit, `kB`, `MB`, `GB`
/// or `TB` (powers of 1024), case-insensitive, with or without a space; at least 1 MB.
pub(crate) fn memory_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "kb" => 10,
        "mb" => 20,
        "gb" => 30,
        "tb" => 40,
        _ => return None,
    };
    number
        .checked_mul(1 << shift)
        .filter(|&bytes| bytes >= 1 << 20)
}

impl Handler {
    /// `CREATE MATERIALIZED VIEW [IF NOT EXISTS] name [WITH (...)] AS SELECT ... [EMIT ...]`.
    pub(crate) async fn create_view(
        &self,
        stmt: Statement,
        emit: Option<EmitMode>,
    ) -> Result<Output> {
        let Statement::CreateView(cv) = stmt else {
            return Err(Error::Internal("CREATE VIEW lost its statement".into()));
        };
        if !cv.materialized {
            return self.create_plain_view(cv, emit).await;
        }
        if cv.or_replace || cv.or_alter {
            return Err(Error::NotSupported(
                "CREATE OR REPLACE of a materialized view is not supported; drop it first".into(),
            ));
        }
        let name = object_name(&cv.name)?;
        if let Some(done) = self.existing(&name, cv.if_not_exists, "CREATE MATERIALIZED VIEW")? {
            return Ok(done);
        }
        let mut query = Statement::Query(rename_columns(cv.query, &name, &cv.columns)?);
        name_columns(&mut query)?;
        let options = self.view_options(&cv.options, emit).await?;
        let compiled = compile_query_statement(&self.ctx.state(), query.clone(), options).await?;
        let Statement::Query(query) = query else {
            return Err(Error::Internal(
                "a view's query became another statement".into(),
            ));
        };
        let query = query.to_string();
        let def = ViewDef {
            name,
            query,
            emit_on_update: emit == Some(EmitMode::OnUpdate),
            allowed_lateness_ns: options.allowed_lateness_ns,
            memory_limit: options.memory_limit,
            state_ttl_ns: options.state_ttl_ns,
        };
        self.blocking(move |db| db.create_view(def, compiled))
            .await?;
        Ok(Output::Command("CREATE MATERIALIZED VIEW".into()))
    }

    /// `CREATE VIEW [IF NOT EXISTS] name [(columns)] AS SELECT ...`: a named query, planned now
    /// so that a broken one is refused, and expanded wherever it is read.
    async fn create_plain_view(
        &self,
        cv: datafusion::sql::sqlparser::ast::CreateView,
        emit: Option<EmitMode>,
    ) -> Result<Output> {
        if emit.is_some() {
            return Err(Error::Syntax(
                "EMIT ON ... belongs to CREATE MATERIALIZED VIEW".into(),
            ));
        }
        if cv.or_replace || cv.or_alter || cv.temporary {
            return Err(Error::NotSupported(
                "CREATE OR REPLACE and TEMPORARY views are not supported; drop the view first"
                    .into(),
            ));
        }
        if !matches!(cv.options, CreateTableOptions::None) {
            return Err(Error::NotSupported(
                "options on a plain view (it holds no state); give them to the materialized views that read it".into(),
            ));
        }
        let name = object_name(&cv.name)?;
        if let Some(done) = self.existing(&name, cv.if_not_exists, "CREATE VIEW")? {
            return Ok(done);
        }
        let query = rename_columns(cv.query, &name, &cv.columns)?;
        let plan = self.plan(Statement::Query(query.clone())).await?;
        refuse_duplicate_names(&plan)?;
        let def = PlainViewDef {
            name,
            query: query.to_string(),
        };
        self.blocking(move |db| db.create_plain_view(def)).await?;
        Ok(Output::Command("CREATE VIEW".into()))
    }

    /// `DROP VIEW [IF EXISTS] name, ... [CASCADE]`.
    pub(crate) async fn drop_plain_views(
        &self,
        names: Vec<String>,
        if_exists: bool,
        cascade: bool,
    ) -> Result<Output> {
        for name in names {
            if self.db.registry().plain_view(&name).is_none() {
                if if_exists {
                    continue;
                }
                return Err(match self.db.registry().kind_of(&name) {
                    Some(_) => Error::WrongObject {
                        sqlstate: "42809",
                        message: format!(
                            "\"{name}\" is not a view; DROP MATERIALIZED VIEW, DROP STREAM or DROP TABLE drops it"
                        ),
                    },
                    None => Error::UndefinedRelation(name),
                });
            }
            self.blocking(move |db| db.drop_plain_view(&name, cascade))
                .await?;
        }
        Ok(Output::Command("DROP VIEW".into()))
    }

    /// `DROP MATERIALIZED VIEW [IF EXISTS] name, ... [CASCADE]`.
    pub(crate) async fn drop_views(
        &self,
        names: Vec<String>,
        if_exists: bool,
        cascade: bool,
    ) -> Result<Output> {
        for name in names {
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

    /// The `WITH (...)` options of CREATE MATERIALIZED VIEW.
    pub(crate) async fn view_options(
        &self,
        options: &CreateTableOptions,
        emit: Option<EmitMode>,
    ) -> Result<ViewOptions> {
        let mut out = ViewOptions {
            emit,
            allowed_lateness_ns: 0,
            memory_limit: None,
            state_ttl_ns: 0,
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
                    out.allowed_lateness_ns = self
                        .interval_option(value, 0)
                        .await
                        .ok_or_else(|| Error::WrongObject {
                            sqlstate: "22023",
                            message: format!(
                                "allowed_lateness must be a fixed, non-negative interval such as '10 seconds', not {value}"
                            ),
                        })?;
                }
                "state_ttl" => {
                    out.state_ttl_ns = self
                        .interval_option(value, 1)
                        .await
                        .ok_or_else(|| Error::WrongObject {
                            sqlstate: "22023",
                            message: format!(
                                "state_ttl must be a fixed, positive interval such as '1 day', not {value}"
                            ),
                        })?;
                }
                "memory_limit" => {
                    let text = match value {
                        SqlExpr::Value(v) => match &v.value {
                            Value::SingleQuotedString(s) => s.clone(),
                            other => other.to_string(),
                        },
                        other => other.to_string(),
                    };
                    out.memory_limit = Some(memory_size(&text).ok_or_else(|| Error::WrongObject {
                        sqlstate: "22023",
                        message: format!(
                            "memory_limit must be a size such as '256MB' or '2GB' (units kB, MB, GB, TB), not {value}"
                        ),
                    })?);
                }
                other => {
                    return Err(Error::WrongObject {
                        sqlstate: "22023",
                        message: format!(
                            "unknown materialized view option {other}; known: allowed_lateness, memory_limit, state_ttl"
                        ),
                    });
                }
            }
        }
        Ok(out)
    }

    /// An option's interval (`'10 seconds'` or `INTERVAL '10' SECOND`) in nanoseconds, if it
    /// has a fixed length of at least `least`.
    async fn interval_option(&self, value: &SqlExpr, least: i64) -> Option<i64> {
        let text = match value {
            SqlExpr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) => format!("INTERVAL '{}'", s.replace('\'', "''")),
                other => other.to_string(),
            },
            other => other.to_string(),
        };
        self.interval_of(&text).await.filter(|n| *n >= least)
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
}
