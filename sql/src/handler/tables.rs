//! CREATE TABLE and DROP TABLE: reference tables keyed by their primary key.

use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::sqlparser::ast::Statement;

use super::Handler;
use crate::catalog::{ColumnDef, TableDef};
use crate::output::Output;
use crate::syntax::object_name;
use crate::{Error, Result};

impl Handler {
    /// `CREATE TABLE [IF NOT EXISTS] name (columns..., PRIMARY KEY (...))`.
    pub(crate) async fn create_table(&self, stmt: Statement) -> Result<Output> {
        let Statement::CreateTable(ct) = &stmt else {
            return Err(Error::Internal("CREATE TABLE lost its statement".into()));
        };
        let name = object_name(&ct.name)?;
        if !matches!(
            ct.table_options,
            datafusion::sql::sqlparser::ast::CreateTableOptions::None
        ) {
            return Err(Error::NotSupported(format!(
                "CREATE TABLE {name} ... WITH (...): a table with connector options is Flink's \
                 connector DDL, which Weir does not read. Weir's tables are reference tables \
                 (CREATE TABLE with a PRIMARY KEY, filled by INSERT or COPY); an event source is \
                 a stream (CREATE STREAM, or CREATE STREAM ... WITH (connector = 'kafka', ...))"
            )));
        }
        if let Some(done) = self.existing(&name, ct.if_not_exists, "CREATE TABLE")? {
            return Ok(done);
        }
        let def = self.table_def(name, stmt).await?;
        self.blocking(move |db| db.create_table(def)).await?;
        Ok(Output::Command("CREATE TABLE".into()))
    }

    /// `DROP TABLE [IF EXISTS] name, ... [CASCADE]`.
    pub(crate) async fn drop_tables(
        &self,
        names: Vec<String>,
        if_exists: bool,
        cascade: bool,
    ) -> Result<Output> {
        for name in names {
            if self.db.stream(&name).is_some() {
                return Err(Error::WrongObject {
                    sqlstate: "42809",
                    message: format!("{name} is a stream: drop it with DROP STREAM {name}"),
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
}
