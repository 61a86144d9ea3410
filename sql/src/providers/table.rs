//! A reference table as a DataFusion table: scans see the current rows; INSERT, UPDATE and
//! DELETE change them by primary key.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, UInt64Array};
use datafusion::arrow::compute::{and, cast, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::{DFSchema, DataFusionError, not_impl_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_plan::ExecutionPlan;

use super::stream::{InsertSink, external};
use crate::catalog::TableEntry;
use crate::{Error, Result};

/// A reference table as a DataFusion table: scans see the current rows; INSERT, UPDATE and
/// DELETE change them.
#[derive(Debug)]
pub struct RefTable {
    entry: Arc<TableEntry>,
}

impl RefTable {
    /// The provider of a table.
    pub fn new(entry: Arc<TableEntry>) -> Self {
        Self { entry }
    }

    /// The table.
    pub fn entry(&self) -> Arc<TableEntry> {
        Arc::clone(&self.entry)
    }
}

/// A one-row plan answering how many rows a statement changed.
fn count_plan(n: u64) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(UInt64Array::from(vec![n]))],
    )?;
    Ok(MemorySourceConfig::try_new_exec(
        &[vec![batch]],
        schema,
        None,
    )?)
}

/// Which of `rows` satisfy every filter (NULL counts as no).
fn matching(
    filters: &[Arc<dyn datafusion::physical_expr::PhysicalExpr>],
    rows: &RecordBatch,
) -> Result<BooleanArray> {
    let n = rows.num_rows();
    let mut mask = BooleanArray::from(vec![true; n]);
    for f in filters {
        let m = f.evaluate(rows)?.into_array(n)?;
        mask = and(&mask, m.as_boolean())?;
    }
    // NULL means the row does not match.
    Ok(mask.iter().map(|v| Some(v == Some(true))).collect())
}

impl RefTable {
    fn physical(
        &self,
        state: &dyn DfSession,
        exprs: &[Expr],
    ) -> datafusion::error::Result<Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>>> {
        let df_schema = DFSchema::try_from(Arc::clone(&self.entry.schema))?;
        exprs
            .iter()
            .map(|e| state.create_physical_expr(e.clone(), &df_schema))
            .collect()
    }

    async fn modify(
        &self,
        change: impl FnOnce(&[RecordBatch]) -> Result<Option<(RecordBatch, bool)>> + Send + 'static,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let entry = Arc::clone(&self.entry);
        let n = tokio::task::spawn_blocking(move || entry.modify(change))
            .await
            .map_err(|e| DataFusionError::Internal(format!("table change failed: {e}")))?
            .map_err(external)?;
        count_plan(n)
    }
}

#[async_trait]
impl TableProvider for RefTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.entry.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let rows = self.entry.rows.snapshot().map_err(external)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[rows],
            self.schema(),
            projection.cloned(),
        )?)
    }

    async fn insert_into(
        &self,
        _state: &dyn DfSession,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return not_impl_err!("{insert_op} into a table is not supported; use UPDATE");
        }
        let entry = Arc::clone(&self.entry);
        let sink = InsertSink::new(
            format!("table {}", entry.def.name),
            Arc::clone(&entry.schema),
            move |batches| {
                let Some(first) = batches.first() else {
                    return Ok(0);
                };
                let rows = concat_batches(&first.schema(), &batches)?;
                // The table's own schema (its NOT NULL flags) is checked here.
                let rows = RecordBatch::try_new(Arc::clone(&entry.schema), rows.columns().to_vec())
                    .map_err(|e| Error::WrongObject {
                        sqlstate: "23502",
                        message: format!("table {}: {e}", entry.def.name),
                    })?;
                entry.insert(rows)
            },
        );
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    async fn delete_from(
        &self,
        state: &dyn DfSession,
        filters: Vec<Expr>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let filters = self.physical(state, &filters)?;
        self.modify(move |current| {
            let mut gone = Vec::new();
            for b in current {
                let m = matching(&filters, b)?;
                gone.push(filter_record_batch(b, &m)?);
            }
            let Some(first) = gone.first() else {
                return Ok(None);
            };
            let gone = datafusion::arrow::compute::concat_batches(&first.schema(), &gone)?;
            Ok(Some((gone, true)))
        })
        .await
    }

    async fn update(
        &self,
        state: &dyn DfSession,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let schema = Arc::clone(&self.entry.schema);
        let mut new_values: Vec<Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>>> =
            vec![None; schema.fields().len()];
        for (name, e) in &assignments {
            let i = schema.index_of(name)?;
            if self.entry.key.contains(&i) {
                return Err(external(Error::NotSupported(format!(
                    "UPDATE of primary key column {name} is not supported; DELETE the row and INSERT it with the new key"
                ))));
            }
            new_values[i] = Some(self.physical(state, std::slice::from_ref(e))?.remove(0));
        }
        let filters = self.physical(state, &filters)?;
        self.modify(move |current| {
            let mut changed = Vec::new();
            for b in current {
                let m = matching(&filters, b)?;
                let rows = filter_record_batch(b, &m)?;
                if rows.num_rows() == 0 {
                    continue;
                }
                let n = rows.num_rows();
                let columns = new_values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        None => Ok(Arc::clone(rows.column(i))),
                        Some(e) => Ok(e.evaluate(&rows)?.into_array(n)?),
                    })
                    .collect::<Result<Vec<ArrayRef>>>()?;
                let columns = columns
                    .into_iter()
                    .zip(schema.fields())
                    .map(|(c, f)| cast(&c, f.data_type()))
                    .collect::<Result<Vec<_>, _>>()?;
                let updated = RecordBatch::try_new(Arc::clone(&schema), columns)?;
                changed.push(updated);
            }
            if changed.is_empty() {
                return Ok(None);
            }
            let changed = datafusion::arrow::compute::concat_batches(&schema, &changed)?;
            Ok(Some((changed, false)))
        })
        .await
    }
}
