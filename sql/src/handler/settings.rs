//! SET and SHOW of Postgres settings (DataFusion's dotted ones go to DataFusion).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Ident, Set, Statement, Value};

use super::Handler;
use crate::output::Output;
use crate::{Error, Result};

impl Handler {
    /// `SET name = value`, `SET name TO DEFAULT`, `SET TIME ZONE ...`.
    pub(crate) fn set(&self, stmt: Statement) -> Result<Output> {
        let Statement::Set(set) = stmt else {
            return Err(Error::Internal("SET lost its statement".into()));
        };
        match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let value: Vec<String> = values.iter().map(setting_value).collect();
                let name = variable.to_string();
                if name.trim_matches('"').eq_ignore_ascii_case("timezone") {
                    check_time_zone(&value.join(", "))?;
                }
                if value.len() == 1 && value[0].eq_ignore_ascii_case("default") {
                    self.settings.reset(&name);
                } else {
                    self.settings.set(&name, &value.join(", "));
                }
            }
            Set::SetTimeZone { value, .. } => {
                let value = setting_value(&value);
                check_time_zone(&value)?;
                self.settings.set("timezone", &value);
            }
            other => {
                tracing::debug!(statement = %other, "SET accepted without effect");
            }
        }
        Ok(Output::Command("SET".into()))
    }

    /// `SHOW name` / `SHOW ALL`.
    pub(crate) fn show_setting(&self, stmt: &Statement) -> Result<Output> {
        let Statement::ShowVariable { variable } = stmt else {
            return Err(Error::Internal("SHOW lost its statement".into()));
        };
        let name = setting_name(variable);
        let schema = setting_schema(&name);
        let columns: Vec<ArrayRef> = if name == "all" {
            let all = self.settings.all();
            vec![
                Arc::new(StringArray::from_iter_values(all.iter().map(|(k, _)| k))),
                Arc::new(StringArray::from_iter_values(all.iter().map(|(_, v)| v))),
            ]
        } else {
            let value = self.settings.get(&name).ok_or_else(|| Error::WrongObject {
                sqlstate: "42704",
                message: format!("unrecognized configuration parameter \"{name}\""),
            })?;
            vec![Arc::new(StringArray::from(vec![value]))]
        };
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        Ok(Output::batch(schema, batch))
    }
}

/// The columns of `SHOW name` (one, named after the setting) or `SHOW ALL`.
pub(crate) fn setting_schema(name: &str) -> SchemaRef {
    let fields = if name == "all" {
        vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("setting", DataType::Utf8, false),
        ]
    } else {
        vec![Field::new(name, DataType::Utf8, false)]
    };
    Arc::new(Schema::new(fields))
}

/// The setting a SHOW names: `SHOW TRANSACTION ISOLATION LEVEL` and `SHOW TIME ZONE` are the
/// SQL-standard spellings of `transaction_isolation` and `timezone`.
pub(crate) fn setting_name(variable: &[Ident]) -> String {
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

/// Refuses a `TimeZone` that is not an IANA zone name (or `DEFAULT`), as PostgreSQL refuses
/// names it does not know; numeric offsets (`'+02'`) are not read yet.
fn check_time_zone(value: &str) -> Result<()> {
    if value.eq_ignore_ascii_case("default") || crate::pg_text::Zone::named(value).is_some() {
        return Ok(());
    }
    Err(Error::WrongObject {
        sqlstate: "22023",
        message: format!(
            "invalid value for parameter \"TimeZone\": \"{value}\" (Weir takes IANA zone names, \
             such as 'UTC' or 'Europe/Paris')"
        ),
    })
}
