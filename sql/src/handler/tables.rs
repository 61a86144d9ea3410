//! CREATE TABLE and DROP TABLE: reference tables keyed by their primary key.

use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::sqlparser::ast::Statement;

use super::Handler;
use super::file_table::{file_source, read_csv};
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
        let source = file_source(&name, &ct.table_options)?;
        if let Some(done) = self.existing(&name, ct.if_not_exists, "CREATE TABLE")? {
            return Ok(done);
        }
        // DataFusion plans the columns; the connector options are Weir's to read (above).
        let mut stmt = stmt;
        if let Statement::CreateTable(ct) = &mut stmt {
            ct.table_options = datafusion::sql::sqlparser::ast::CreateTableOptions::None;
        }
        let mut def = self.table_def(name, stmt, source.is_some()).await?;
        // A file's rows are read before anything is created: a bad file changes nothing.
        let rows = match &source {
            Some(source) => {
                let (name, source, schema) = (def.name.clone(), source.clone(), def.schema()?);
                tokio::task::spawn_blocking(move || read_csv(&name, &source, &schema))
                    .await
                    .map_err(|e| Error::Internal(format!("reading a table's file: {e}")))??
            }
            None => Vec::new(),
        };
        def.source = source.map(|s| s.path);
        self.blocking(move |db| db.create_table(def, rows)).await?;
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

    /// Resolves the columns and primary key of a CREATE TABLE; a table read from a file
    /// (`from_file`) without a PRIMARY KEY is keyed by all its columns.
    async fn table_def(&self, name: String, stmt: Statement, from_file: bool) -> Result<TableDef> {
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
        let key = match key {
            Some(key) => key,
            None if from_file => (0..schema.fields().len()).collect(),
            None => {
                return Err(Error::Syntax(format!(
                    "table {name} needs a PRIMARY KEY: rows are updated, deleted and joined by it"
                )));
            }
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
            source: None,
        })
    }
}
