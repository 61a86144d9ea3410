//! INSERT, UPDATE and DELETE.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Statement, TableObject};

use super::Handler;
use crate::output::Output;
use crate::syntax::object_name;
use crate::{Error, Result};

impl Handler {
    /// `INSERT INTO stream | table ...`: a view or a stream whose rows come from elsewhere
    /// refuses it.
    pub(crate) async fn insert(
        &self,
        stmt: Statement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        let Statement::Insert(mut ins) = stmt else {
            return Err(Error::Internal("INSERT lost its statement".into()));
        };
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
        self.decode_bytea_literals(&mut ins);
        let plan = self.plan(Statement::Insert(ins)).await?;
        let out = self.run_plan(plan, params).await?.collect().await?;
        let count = affected_rows(&out);
        Ok(Output::Inserted(count))
    }

    /// `UPDATE` / `DELETE` of a reference table, by its primary key.
    pub(crate) async fn update_delete(
        &self,
        stmt: Statement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
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

    /// Refuses writes to a stream made `AS SELECT`: its rows come from its query, exactly once.
    pub(crate) fn check_not_produced(&self, name: &str, what: &str) -> Result<()> {
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
