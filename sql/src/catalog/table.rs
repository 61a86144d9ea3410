//! Reference tables (`CREATE TABLE ... PRIMARY KEY`): rows inserted, updated and deleted by key,
//! kept durably as a log of changes and in memory as the latest row per key, for lookup joins.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use weir_engine::log::{LogConfig, StreamLog};
use weir_engine::result_table::ResultTable;

use crate::catalog::TableDef;
use crate::{Error, Result};

/// The column that marks a change in a table's log as a deletion.
const DELETED: &str = "weir_deleted";

/// A reference table: its definition, change log and current rows.
#[derive(Debug)]
pub struct TableEntry {
    /// The catalog definition.
    pub def: TableDef,
    /// The schema of the table's rows.
    pub schema: SchemaRef,
    /// The primary key columns.
    pub key: Vec<usize>,
    log: StreamLog,
    /// The latest row per key.
    pub rows: Arc<ResultTable>,
    /// Serialises changes, so that a change's checks and its effect see the same rows.
    write: Mutex<()>,
}

fn unique_violation(message: String) -> Error {
    Error::WrongObject {
        sqlstate: "23505",
        message,
    }
}

impl TableEntry {
    /// Opens the table stored in `dir`, replaying its changes.
    pub fn open(dir: &Path, def: TableDef) -> Result<Self> {
        let schema = def.schema()?;
        let key = def.key_indexes()?;
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(DELETED, DataType::Boolean, false));
        let log = StreamLog::open(
            dir,
            Arc::new(Schema::new(fields)),
            1,
            None,
            LogConfig::default(),
        )?;
        let rows = Arc::new(ResultTable::keyed(Arc::clone(&schema), key.clone())?);
        let entry = Self {
            def,
            schema,
            key,
            log,
            rows,
            write: Mutex::new(()),
        };
        for partition in entry.log.read_all()? {
            for batch in partition {
                entry.replay(&batch)?;
            }
        }
        Ok(entry)
    }

    /// Applies one logged change batch to the in-memory rows, in row order.
    fn replay(&self, batch: &RecordBatch) -> Result<()> {
        let width = self.schema.fields().len();
        let deleted = batch.column(width).as_boolean().clone();
        let rows =
            RecordBatch::try_new(Arc::clone(&self.schema), batch.columns()[..width].to_vec())?;
        // Runs of inserts and deletes, so that the order of changes within the batch holds.
        let mut start = 0;
        while start < rows.num_rows() {
            let kind = deleted.value(start);
            let mut end = start + 1;
            while end < rows.num_rows() && deleted.value(end) == kind {
                end += 1;
            }
            let run = rows.slice(start, end - start);
            if kind {
                self.rows.delete(&run)?;
            } else {
                self.rows.append(vec![run])?;
            }
            start = end;
        }
        Ok(())
    }

    /// Logs `rows` (of the table's schema) as upserts or deletions, durably, then applies them.
    fn log_change(&self, rows: RecordBatch, deleted: bool) -> Result<u64> {
        let n = rows.num_rows();
        if n == 0 {
            return Ok(0);
        }
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(BooleanArray::from(vec![deleted; n])));
        let logged = RecordBatch::try_new(Arc::clone(self.log.schema()), columns)?;
        self.log.append(&[logged])?;
        if deleted {
            self.rows.delete(&rows)?;
        } else {
            self.rows.append(vec![rows])?;
        }
        Ok(n as u64)
    }

    fn key_columns(&self, rows: &RecordBatch) -> Vec<ArrayRef> {
        self.key
            .iter()
            .map(|&k| Arc::clone(rows.column(k)))
            .collect()
    }

    fn describe_key(&self, rows: &RecordBatch, row: usize) -> String {
        let names: Vec<&str> = self
            .key
            .iter()
            .map(|&k| self.schema.field(k).name().as_str())
            .collect();
        let values: Vec<String> = self
            .key
            .iter()
            .map(|&k| {
                datafusion::arrow::util::display::array_value_to_string(rows.column(k), row)
                    .unwrap_or_else(|_| "?".into())
            })
            .collect();
        format!("({})=({})", names.join(", "), values.join(", "))
    }

    /// Inserts new rows: every key must be new (and not repeated), or nothing is inserted.
    pub fn insert(&self, rows: RecordBatch) -> Result<u64> {
        self.refuse_if_read_from_a_file()?;
        self.load(rows)
    }

    /// A table read from a file never changes: joins index its rows once.
    fn refuse_if_read_from_a_file(&self) -> Result<()> {
        match &self.def.source {
            Some(path) => Err(Error::WrongObject {
                sqlstate: "42809",
                message: format!(
                    "table {} is read from the file {path} and does not change; to keep data \
                     that changes, create a table with a PRIMARY KEY",
                    self.def.name
                ),
            }),
            None => Ok(()),
        }
    }

    /// Inserts rows as [`TableEntry::insert`] does, also into a table read from a file (its
    /// rows, when it is created).
    pub fn load(&self, rows: RecordBatch) -> Result<u64> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let keys = self.key_columns(&rows);
        for (i, f) in self.key.iter().map(|&k| self.schema.field(k)).enumerate() {
            if keys[i].null_count() > 0 {
                return Err(Error::WrongObject {
                    sqlstate: "23502",
                    message: format!(
                        "null value in column \"{}\" of table {} violates not-null constraint (it is part of the primary key)",
                        f.name(),
                        self.def.name
                    ),
                });
            }
        }
        let converter = RowConverter::new(
            keys.iter()
                .map(|k| SortField::new(k.data_type().clone()))
                .collect(),
        )?;
        let converted = converter.convert_columns(&keys)?;
        let mut seen = HashSet::with_capacity(rows.num_rows());
        for (i, r) in converted.iter().enumerate() {
            if !seen.insert(r) {
                return Err(unique_violation(format!(
                    "duplicate key value violates the primary key of table {}: key {} appears twice in this statement",
                    self.def.name,
                    self.describe_key(&rows, i)
                )));
            }
        }
        if let Some(i) = self.rows.contains_keys(&keys)?.iter().position(|&b| b) {
            return Err(unique_violation(format!(
                "duplicate key value violates the primary key of table {}: key {} already exists (UPDATE it instead)",
                self.def.name,
                self.describe_key(&rows, i)
            )));
        }
        self.log_change(rows, false)
    }

    /// Runs `change` over the current rows while no other change can interleave; it returns the
    /// rows to upsert or to delete.
    pub fn modify(
        &self,
        change: impl FnOnce(&[RecordBatch]) -> Result<Option<(RecordBatch, bool)>>,
    ) -> Result<u64> {
        self.refuse_if_read_from_a_file()?;
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        match change(&self.rows.snapshot()?)? {
            Some((rows, deleted)) => self.log_change(rows, deleted),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};

    use super::*;
    use crate::catalog::ColumnDef;

    fn def() -> TableDef {
        TableDef {
            source: None,
            name: "users".into(),
            columns: vec![
                ColumnDef {
                    name: "id".into(),
                    data_type: DataType::Int64.to_string(),
                    nullable: false,
                },
                ColumnDef {
                    name: "name".into(),
                    data_type: DataType::Utf8.to_string(),
                    nullable: true,
                },
            ],
            primary_key: vec!["id".into()],
        }
    }

    fn rows(schema: &SchemaRef, ids: &[i64], names: &[&str]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::clone(schema),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .expect("rows")
    }

    fn contents(entry: &TableEntry) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        for b in entry.rows.snapshot().expect("snapshot") {
            let ids = b
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let names = b.column(1).as_string::<i32>();
            for i in 0..b.num_rows() {
                out.push((ids.value(i), names.value(i).to_string()));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn changes_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = TableEntry::open(dir.path(), def()).expect("open");
        let schema = Arc::clone(&entry.schema);
        entry
            .insert(rows(&schema, &[1, 2, 3], &["a", "b", "c"]))
            .expect("insert");
        assert!(entry.insert(rows(&schema, &[4, 2], &["d", "x"])).is_err());
        entry
            .modify(|_| Ok(Some((rows(&schema, &[2], &["B"]), false))))
            .expect("update");
        entry
            .modify(|_| Ok(Some((rows(&schema, &[1], &["a"]), true))))
            .expect("delete");
        entry
            .insert(rows(&schema, &[1], &["again"]))
            .expect("insert after delete");
        let before = contents(&entry);
        assert_eq!(
            before,
            vec![(1, "again".into()), (2, "B".into()), (3, "c".into())]
        );
        drop(entry);
        let reopened = TableEntry::open(dir.path(), def()).expect("reopen");
        assert_eq!(contents(&reopened), before);
    }
}
