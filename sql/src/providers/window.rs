//! The window table functions `TUMBLE`, `HOP` and `SESSION` and the tables they make: a
//! stream's, a view's or a subquery's rows with `window_start` and `window_end`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{
    Session as DfSession, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::{DataFusionError, ScalarValue, not_impl_err, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use weir_engine::operator::{HopOperator, Operator, SessionOperator, TumbleOperator};

use super::stream::{external, read_log};
use super::view::read_view;
use crate::catalog::{Registry, StreamEntry, ViewEntry};
use crate::time::interval_ns;

/// Which windows a window table function assigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// `TUMBLE(stream, time, size)`.
    Tumble {
        /// Window size in nanoseconds.
        size_ns: i64,
    },
    /// `SESSION(stream, time, gap)`: per group key, sessions end after `gap` without events.
    Session {
        /// The gap in nanoseconds.
        gap_ns: i64,
    },
    /// `HOP(stream, time, slide, size)`.
    Hop {
        /// Distance between window starts in nanoseconds.
        slide_ns: i64,
        /// Window size in nanoseconds.
        size_ns: i64,
    },
}

impl WindowSpec {
    /// The window size in nanoseconds; `None` for sessions, whose length varies.
    pub fn size_ns(&self) -> Option<i64> {
        match self {
            Self::Tumble { size_ns } | Self::Hop { size_ns, .. } => Some(*size_ns),
            Self::Session { .. } => None,
        }
    }
}

/// What a window table function windows.
#[derive(Debug, Clone)]
pub enum WindowInput {
    /// A stream's rows.
    Stream(Arc<StreamEntry>),
    /// The rows of a materialized view (a derived stream).
    View(Arc<ViewEntry>),
    /// The rows of a subquery (`TUMBLE((SELECT ...), ts, ...)`), as planned.
    Query(Arc<LogicalPlan>),
}

/// A window table function applied to a stream or view: its rows with `window_start` and
/// `window_end`.
#[derive(Debug)]
pub struct WindowTable {
    /// What is windowed.
    pub input: WindowInput,
    /// The schema of the rows windowed.
    pub input_schema: SchemaRef,
    /// Index of the time column in the input.
    pub time_index: usize,
    /// The windows.
    pub spec: WindowSpec,
    /// Flink's `SESSION(TABLE t PARTITION BY k, ...)`: the columns sessions are formed per
    /// (empty: over all rows); `None` for Weir's `SESSION(t, ts, gap)`, whose sessions are per
    /// GROUP BY key.
    pub session_partition: Option<Vec<String>>,
    schema: SchemaRef,
}

impl WindowTable {
    /// Builds the window assigner for this table.
    pub fn operator(&self) -> weir_engine::Result<Box<dyn Operator>> {
        self.operator_over(&self.input_schema, self.time_index)
    }

    /// Builds the window assigner over rows of `schema` (the input's columns, or some of them)
    /// whose time is column `time_index`.
    pub fn operator_over(
        &self,
        schema: &datafusion::arrow::datatypes::Schema,
        time_index: usize,
    ) -> weir_engine::Result<Box<dyn Operator>> {
        Ok(match self.spec {
            WindowSpec::Tumble { size_ns } => {
                Box::new(TumbleOperator::try_new(schema, time_index, size_ns)?)
            }
            WindowSpec::Hop { slide_ns, size_ns } => {
                Box::new(HopOperator::try_new(schema, time_index, slide_ns, size_ns)?)
            }
            WindowSpec::Session { gap_ns } => {
                Box::new(SessionOperator::try_new(schema, time_index, gap_ns)?)
            }
        })
    }
}

#[async_trait]
impl TableProvider for WindowTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if let WindowSpec::Session { .. } = self.spec {
            return not_impl_err!(
                "SESSION windows are formed per GROUP BY key, so they exist only in continuous \
                 views; in a batch query, number sessions with LAG(ts) OVER (PARTITION BY key ORDER BY ts)"
            );
        }
        let partitions = match &self.input {
            WindowInput::Stream(stream) => read_log(Arc::clone(stream)).await?,
            WindowInput::View(view) => vec![read_view(Arc::clone(view)).await?],
            WindowInput::Query(plan) => {
                let exec = state.create_physical_plan(plan).await?;
                vec![datafusion::physical_plan::collect(exec, state.task_ctx()).await?]
            }
        };
        let mut op = self.operator().map_err(external)?;
        let windowed = partitions
            .into_iter()
            .map(|p| {
                p.into_iter()
                    .map(|b| op.process_batch(b))
                    .collect::<weir_engine::Result<Vec<_>>>()
                    .map(|v| v.into_iter().flatten().collect::<Vec<_>>())
            })
            .collect::<weir_engine::Result<Vec<_>>>()
            .map_err(external)?;
        Ok(MemorySourceConfig::try_new_exec(
            &windowed,
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// The window table functions: `tumble` and `hop`.
#[derive(Debug)]
pub struct WindowFunction {
    db: Registry,
    kind: WindowKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WindowKind {
    Tumble,
    Hop,
    Session,
}

impl WindowFunction {
    /// `TUMBLE(stream, time_column, size)`, resolving streams in `db`.
    pub fn tumble(db: Registry) -> Self {
        Self {
            db,
            kind: WindowKind::Tumble,
        }
    }

    /// `HOP(stream, time_column, slide, size)`, resolving streams in `db`.
    pub fn hop(db: Registry) -> Self {
        Self {
            db,
            kind: WindowKind::Hop,
        }
    }

    /// `SESSION(stream, time_column, gap)`, resolving streams in `db`.
    pub fn session(db: Registry) -> Self {
        Self {
            db,
            kind: WindowKind::Session,
        }
    }
}

/// The name an argument names: a bare identifier or a string literal.
fn name_arg(e: &Expr) -> Option<String> {
    match e {
        Expr::Column(c) if c.relation.is_none() => Some(c.name.clone()),
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _) => {
            Some(s.clone())
        }
        _ => None,
    }
}

impl WindowFunction {
    /// The stream or view a window function names.
    fn relation(&self, name: &str) -> datafusion::error::Result<(WindowInput, SchemaRef)> {
        if let Some(entry) = self.db.stream(name) {
            let schema = Arc::clone(&entry.schema);
            Ok((WindowInput::Stream(entry), schema))
        } else if let Some(view) = self.db.view(name) {
            let schema = Arc::clone(view.table.schema());
            Ok((WindowInput::View(view), schema))
        } else if self.db.plain_view(name).is_some() {
            Err(external(crate::Error::NotSupported(format!(
                "a window over view {name} by name; window its rows as a subquery: \
                 TUMBLE((SELECT * FROM {name}), ts, ...)"
            ))))
        } else {
            Err(external(crate::Error::UndefinedRelation(name.to_string())))
        }
    }
}

impl TableFunctionImpl for WindowFunction {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let (name, usage, expected) = match self.kind {
            WindowKind::Tumble => ("TUMBLE", "TUMBLE(stream, time_column, INTERVAL size)", 3),
            WindowKind::Hop => (
                "HOP",
                "HOP(stream, time_column, INTERVAL slide, INTERVAL size)",
                4,
            ),
            WindowKind::Session => ("SESSION", "SESSION(stream, time_column, INTERVAL gap)", 3),
        };
        // Flink's SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), gap) arrives from the parser
        // as SESSION(t, ts, 'k', gap): the partition columns as text, comma-separated.
        let (exprs, partition) = match (self.kind, exprs) {
            (WindowKind::Session, [t, ts, Expr::Literal(ScalarValue::Utf8(Some(p)), _), gap]) => {
                let columns: Vec<String> = p
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect();
                (vec![t.clone(), ts.clone(), gap.clone()], Some(columns))
            }
            (_, exprs) => (exprs.to_vec(), None),
        };
        if exprs.len() != expected {
            return plan_err!("{name} takes {usage}, got {} arguments", exprs.len());
        }
        let (stream, time) = (&exprs[0], &exprs[1]);
        // `TUMBLE((SELECT ...), ...)` arrives as EXISTS (SELECT ...): see the parser.
        let (input, input_schema, stream_name) = if let Expr::Exists(e) = stream {
            let sq = &e.subquery;
            let schema = Arc::new(sq.subquery.schema().as_arrow().clone());
            (
                WindowInput::Query(Arc::clone(&sq.subquery)),
                schema,
                "the subquery".to_string(),
            )
        } else {
            let Some(stream_name) = name_arg(stream) else {
                return plan_err!(
                    "{name}'s first argument must name a stream or view, or be a (SELECT ...), not {stream}"
                );
            };
            let (input, schema) = self.relation(&stream_name)?;
            (input, schema, stream_name)
        };
        let Some(time_name) = name_arg(time) else {
            return plan_err!("{name}'s second argument must name a timestamp column, not {time}");
        };
        for column in ["window_start", "window_end"] {
            if input_schema.index_of(column).is_ok() {
                return Err(external(crate::Error::WrongObject {
                    sqlstate: "42701",
                    message: format!(
                        "{stream_name} already has a column {column}, which {name} adds; \
                         rename it in {stream_name} ({column} AS ...)"
                    ),
                }));
            }
        }
        let Ok(time_index) = input_schema.index_of(&time_name) else {
            return Err(external(crate::Error::UndefinedColumn(format!(
                "column \"{time_name}\" does not exist in {stream_name}"
            ))));
        };
        let duration = |e: &Expr, what: &str| {
            interval_ns(e).filter(|n| *n > 0).ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "{name}'s {what} must be a positive INTERVAL of fixed length (no months), not {e}"
                ))
            })
        };
        let spec = match self.kind {
            WindowKind::Hop => {
                let slide_ns = duration(&exprs[2], "slide")?;
                let size_ns = duration(&exprs[3], "size")?;
                WindowSpec::Hop { slide_ns, size_ns }
            }
            WindowKind::Tumble => WindowSpec::Tumble {
                size_ns: duration(&exprs[2], "size")?,
            },
            WindowKind::Session => WindowSpec::Session {
                gap_ns: duration(&exprs[2], "gap")?,
            },
        };
        for column in partition.iter().flatten() {
            if input_schema.index_of(column).is_err() {
                return Err(external(crate::Error::UndefinedColumn(format!(
                    "column \"{column}\" (in PARTITION BY) does not exist in {stream_name}"
                ))));
            }
        }
        let mut table = WindowTable {
            schema: Arc::clone(&input_schema),
            input,
            input_schema,
            time_index,
            spec,
            session_partition: partition,
        };
        table.schema = table.operator().map_err(external)?.schema();
        Ok(Arc::new(table))
    }
}
