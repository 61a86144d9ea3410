//! Flink's filesystem tables (`CREATE TABLE t (...) WITH ('connector' = 'filesystem', 'path' =
//! ..., 'format' = 'csv')`): a table read once from a CSV file, which never changes after.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::{CreateTableOptions, Expr as SqlExpr, SqlOption, Value};

use crate::syntax::normalize;
use crate::{Error, Result};

/// Where a filesystem table's rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileSource {
    /// The file's path on this machine.
    pub(crate) path: String,
}

/// The refusal of a table with connector options Weir does not read.
fn not_a_file_table(name: &str, why: &str) -> Error {
    Error::NotSupported(format!(
        "CREATE TABLE {name} ... WITH (...): {why}. Weir reads Flink's filesystem tables in CSV \
         ('connector' = 'filesystem', 'path' = 'file:///...', 'format' = 'csv', or the older \
         'connector.type', 'connector.path' and 'format.type'); its own tables are reference \
         tables (CREATE TABLE with a PRIMARY KEY, filled by INSERT or COPY), and an event source \
         is a stream (CREATE STREAM, or CREATE STREAM ... WITH (connector = 'kafka', ...))"
    ))
}

/// The file a CREATE TABLE's options name, if they are a filesystem connector's; `None`
/// without options; an error for any other connector or option.
pub(crate) fn file_source(name: &str, options: &CreateTableOptions) -> Result<Option<FileSource>> {
    let list = match options {
        CreateTableOptions::None => return Ok(None),
        CreateTableOptions::With(l)
        | CreateTableOptions::Options(l)
        | CreateTableOptions::Plain(l)
        | CreateTableOptions::TableProperties(l) => l,
    };
    let (mut connector, mut path, mut format) = (None, None, None);
    let mut unknown = None;
    for option in list {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(Error::Syntax(format!(
                "expected 'name' = 'value', not {option}"
            )));
        };
        let text = match value {
            SqlExpr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            other => other.to_string(),
        };
        match normalize(key).to_lowercase().as_str() {
            "connector" | "connector.type" => connector = Some(text),
            "path" | "connector.path" => path = Some(text),
            "format" | "format.type" => format = Some(text),
            other => unknown = unknown.or(Some(other.to_string())),
        }
    }
    if !connector
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case("filesystem"))
    {
        return Err(not_a_file_table(
            name,
            &format!(
                "connector {} is not read",
                connector.as_deref().unwrap_or("(none)")
            ),
        ));
    }
    if let Some(other) = unknown {
        return Err(not_a_file_table(
            name,
            &format!("option '{other}' of the filesystem connector is not read"),
        ));
    }
    if !format
        .as_deref()
        .is_some_and(|f| f.eq_ignore_ascii_case("csv"))
    {
        return Err(not_a_file_table(
            name,
            &format!(
                "format {} is not read",
                format.as_deref().unwrap_or("(none)")
            ),
        ));
    }
    let Some(path) = path else {
        return Err(not_a_file_table(name, "it names no 'path'"));
    };
    if let Some(at) = path.find("${") {
        return Err(Error::WrongObject {
            sqlstate: "22023",
            message: format!(
                "table {name}: the path {path} has a variable ({}) that Weir does not expand; \
                 write the file's path itself",
                &path[at..path[at..].find('}').map_or(path.len(), |e| at + e + 1)]
            ),
        });
    }
    let path = path.strip_prefix("file://").unwrap_or(&path).to_string();
    Ok(Some(FileSource { path }))
}

/// The rows of a CSV file without a header (Flink's `csv` format), as `schema`. The table holds
/// them in memory, so a file larger than a COPY may load at once is refused (54000).
pub(crate) fn read_csv(
    name: &str,
    source: &FileSource,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    read_csv_within(name, source, schema, crate::copy::COPY_MEMORY_LIMIT_BYTES)
}

fn read_csv_within(
    name: &str,
    source: &FileSource,
    schema: &SchemaRef,
    limit: usize,
) -> Result<Vec<RecordBatch>> {
    let bad = |e: &dyn std::fmt::Display| Error::WrongObject {
        sqlstate: "22P02",
        message: format!("table {name}: reading {}: {e}", source.path),
    };
    let file = std::fs::File::open(&source.path).map_err(|e| Error::WrongObject {
        sqlstate: "58P01",
        message: format!("table {name}: could not open {}: {e}", source.path),
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size > limit as u64 {
        return Err(Error::WrongObject {
            sqlstate: "54000",
            message: format!(
                "table {name}: {} is {} MiB, more than the {} MiB a table read from a file may \
                 hold",
                source.path,
                size >> 20,
                limit >> 20
            ),
        });
    }
    let reader = datafusion::arrow::csv::ReaderBuilder::new(Arc::clone(schema))
        .with_header(false)
        .with_batch_size(64 * 1024)
        .build(file)
        .map_err(|e| bad(&e))?;
    reader.map(|b| b.map_err(|e| bad(&e))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::{WeirStatement, parse};

    fn options(sql: &str) -> CreateTableOptions {
        match parse(sql).expect("parses").pop() {
            Some(WeirStatement::Sql(stmt)) => match *stmt {
                datafusion::sql::sqlparser::ast::Statement::CreateTable(ct) => ct.table_options,
                other => panic!("not a CREATE TABLE: {other}"),
            },
            _ => panic!("not one statement"),
        }
    }

    #[test]
    fn a_file_larger_than_the_limit_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("big.csv");
        std::fs::write(&path, "1,a\n2,b\n3,c\n").expect("file");
        let source = FileSource {
            path: path.display().to_string(),
        };
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new(
                "k",
                datafusion::arrow::datatypes::DataType::Int64,
                true,
            ),
            datafusion::arrow::datatypes::Field::new(
                "v",
                datafusion::arrow::datatypes::DataType::Utf8,
                true,
            ),
        ]));
        let e = read_csv_within("t", &source, &schema, 8).expect_err("too large");
        assert_eq!(e.sqlstate(), "54000", "{e}");
        let rows = read_csv_within("t", &source, &schema, 1 << 20).expect("fits");
        assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
    }

    #[test]
    fn both_forms_of_the_options_name_a_file() {
        let new = options(
            "CREATE TABLE t (k BIGINT) WITH ('connector' = 'filesystem', 'path' = 'file:///tmp/x.csv', 'format' = 'csv')",
        );
        let old = options(
            "CREATE TABLE t (k BIGINT) WITH ('connector.type' = 'filesystem', 'connector.path' = '/tmp/x.csv', 'format.type' = 'csv')",
        );
        for o in [new, old] {
            assert_eq!(
                file_source("t", &o).expect("a file table"),
                Some(FileSource {
                    path: "/tmp/x.csv".into()
                })
            );
        }
        let kafka =
            options("CREATE TABLE t (k BIGINT) WITH ('connector' = 'kafka', 'topic' = 'x')");
        assert!(file_source("t", &kafka).is_err());
        let variable = options(
            "CREATE TABLE t (k BIGINT) WITH ('connector' = 'filesystem', 'path' = 'file://${FLINK_HOME}/x', 'format' = 'csv')",
        );
        let e = file_source("t", &variable).expect_err("unexpanded");
        assert!(e.to_string().contains("${FLINK_HOME}"), "{e}");
    }
}
