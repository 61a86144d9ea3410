//! Runs the sqllogictest files in `tests/slt/` against an in-process Weir database, one fresh
//! data directory per file. Errors render as `[SQLSTATE] message` so files can check codes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use weir_sql::datafusion::arrow::array::Array;
use weir_sql::datafusion::arrow::datatypes::DataType;
use weir_sql::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use weir_sql::{Database, Output, Session};

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

impl From<weir_sql::Error> for SltError {
    fn from(e: weir_sql::Error) -> Self {
        Self(format!("[{}] {e}", e.sqlstate()))
    }
}

struct Weir {
    session: Session,
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
            DefaultColumnType::FloatingPoint
        }
        _ => DefaultColumnType::Text,
    }
}

#[async_trait]
impl AsyncDB for Weir {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        // As in a psql script, the data of a COPY ... FROM STDIN follows its statement.
        let (sql, copy_data) = match sql.find(";\n") {
            Some(end) if sql.to_uppercase().starts_with("COPY ") => {
                (&sql[..=end], Some(sql[end + 2..].as_bytes().to_vec()))
            }
            _ => (sql, None),
        };
        let mut last = None;
        for r in self.session.execute(sql).await {
            last = Some(r?);
        }
        let copy = match &last {
            Some(Output::CopyIn(copy)) => Some(copy.clone()),
            _ => None,
        };
        if let (Some(copy), Some(data)) = (copy, copy_data) {
            let n = self.session.copy_data(&copy, data).await?;
            return Ok(DBOutput::StatementComplete(n));
        }
        match last {
            None
            | Some(
                Output::Command(_)
                | Output::CopyIn(_)
                | Output::CopyOut { .. }
                | Output::Transaction(..),
            ) => Ok(DBOutput::StatementComplete(0)),
            Some(Output::Inserted(n) | Output::Modified(_, n)) => {
                Ok(DBOutput::StatementComplete(n))
            }
            Some(rows @ Output::Rows { .. }) => {
                let Output::Rows { schema, .. } = &rows else {
                    unreachable!("matched Rows above")
                };
                let types = schema
                    .fields()
                    .iter()
                    .map(|f| column_type(f.data_type()))
                    .collect();
                let batches = rows.collect().await?;
                let options = FormatOptions::default().with_null("NULL");
                let mut out = Vec::new();
                for b in &batches {
                    let formatters = b
                        .columns()
                        .iter()
                        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| SltError(e.to_string()))?;
                    for row in 0..b.num_rows() {
                        out.push(
                            formatters
                                .iter()
                                .zip(b.columns())
                                .map(|(f, c)| {
                                    let s = f.value(row).to_string();
                                    if s.is_empty() && !c.is_null(row) {
                                        "(empty)".into()
                                    } else {
                                        s
                                    }
                                })
                                .collect(),
                        );
                    }
                }
                Ok(DBOutput::Rows { types, rows: out })
            }
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "weir"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/slt exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictests() {
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files found");
    let mut failures = Vec::new();
    for file in &files {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(dir.path()).await.expect("open database");
        let conn_db = db.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let db = conn_db.clone();
            async move {
                Ok(Weir {
                    session: Session::new(db),
                })
            }
        });
        if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}:\n{e}", file.display()));
        }
        db.shutdown();
    }
    assert!(
        failures.is_empty(),
        "{} file(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
