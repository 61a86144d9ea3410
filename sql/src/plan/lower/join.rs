//! Lowering of joins: lookup joins of a stream with a reference table, and joins of two
//! streams whose state the time conditions bound (window and interval joins).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use weir_engine::operator::{
    BinaryOperator, FilterOperator, JoinInput, LookupJoinOperator, RetractJoinOperator,
    StaticJoinOperator, StreamJoinOperator, TemporalInput, TemporalJoinOperator,
};

use super::{Built, Planner, shared, unsupported};
use crate::catalog::TableEntry;
use crate::plan::bounds::{TimeColumn, column_of, conjuncts, time_bounds};
use crate::providers::{RefTable, VersionedTable, provider_as};
use crate::{Error, Result};

/// A reference table as one side of a join: the table, the scan's columns, and filters on it.
pub(crate) struct TableSide {
    pub(crate) table: Arc<TableEntry>,
    /// The table's columns the join sees, in order.
    pub(crate) projection: Vec<usize>,
    /// Conditions on the table's rows (over its full schema, qualified by `name`).
    pub(crate) filters: Vec<Expr>,
    pub(crate) name: datafusion::common::TableReference,
}

impl Planner<'_> {
    /// The reference table `plan` scans, if it is (an alias of) a scan of one, maybe filtered.
    pub(crate) fn table_side(plan: &LogicalPlan) -> Result<Option<TableSide>> {
        match plan {
            LogicalPlan::SubqueryAlias(a) => Self::table_side(&a.input),
            LogicalPlan::Filter(f) => Ok(Self::table_side(&f.input)?.map(|mut t| {
                t.filters.push(f.predicate.clone());
                t
            })),
            LogicalPlan::Projection(p) => {
                let Some(mut t) = Self::table_side(&p.input)? else {
                    return Ok(None);
                };
                let input = p.input.schema();
                let mut projection = Vec::with_capacity(p.expr.len());
                for e in &p.expr {
                    let Expr::Column(c) = e else { return Ok(None) };
                    let i = input.index_of_column(c)?;
                    projection.push(t.projection[i]);
                }
                t.projection = projection;
                Ok(Some(t))
            }
            LogicalPlan::TableScan(scan) => {
                let provider = source_as_provider(&scan.source)?;
                let Some(t) = provider_as::<RefTable>(&provider) else {
                    return Ok(None);
                };
                let table = t.entry();
                let projection = scan
                    .projection
                    .clone()
                    .unwrap_or_else(|| (0..table.schema.fields().len()).collect());
                Ok(Some(TableSide {
                    table,
                    projection,
                    filters: scan.filters.clone(),
                    name: scan.table_name.clone(),
                }))
            }
            _ => Ok(None),
        }
    }

    pub(crate) fn build_join(&mut self, join: &datafusion::logical_expr::Join) -> Result<Built> {
        use datafusion::logical_expr::JoinType;
        if join.null_equality == datafusion::common::NullEquality::NullEqualsNull {
            return Err(unsupported("a join where NULL keys match"));
        }
        let left_side = Self::table_side(&join.left)?;
        let right_side = Self::table_side(&join.right)?;
        match (left_side, right_side) {
            (Some(_), Some(_)) => Err(Error::NotSupported(
                "a continuous query joining two tables has no stream to follow; join a stream to the tables"
                    .into(),
            )),
            (None, Some(table)) => self.build_lookup_join(join, table, false),
            (Some(table), None) => self.build_lookup_join(join, table, true),
            (None, None) if versions_of(&join.right)?.is_some() => self.build_temporal_join(join),
            (None, None) if versions_of(&join.left)?.is_some() => Err(Error::NotSupported(
                "FOR SYSTEM_TIME AS OF versions the right input of a join: write the versioned \
                 stream second"
                    .into(),
            )),
            (None, None) => {
                if !matches!(
                    join.join_type,
                    JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
                ) {
                    return Err(unsupported(&format!(
                        "a {} join of two streams (inner and outer joins only)",
                        join.join_type
                    )));
                }
                self.build_stream_join(join)
            }
        }
    }

    /// `stream JOIN table ON stream.x = table.primary_key`: each event with the table's row.
    pub(crate) fn build_lookup_join(
        &mut self,
        join: &datafusion::logical_expr::Join,
        table: TableSide,
        table_first: bool,
    ) -> Result<Built> {
        use datafusion::logical_expr::JoinType;
        let keep_unmatched = match (join.join_type, table_first) {
            (JoinType::Inner, _) => false,
            (JoinType::Left, false) | (JoinType::Right, true) => true,
            (t, _) => {
                return Err(unsupported(&format!(
                    "a {t} join of a stream and a table (inner, or stream LEFT JOIN table)"
                )));
            }
        };
        let stream_plan = if table_first { &join.right } else { &join.left };
        let built = self.build(stream_plan)?;
        if built.changes() {
            return Err(unsupported(
                "a lookup join of results that change (EMIT ON UPDATE or GROUP BY without a window)",
            ));
        }
        let entry = Arc::clone(&table.table);
        let table_schema = if table_first {
            join.left.schema()
        } else {
            join.right.schema()
        };
        let mut keys: Vec<Option<Arc<dyn PhysicalExpr>>> = vec![None; entry.key.len()];
        // A table read from a file never changes: joined on any of its columns, through an
        // index made once.
        let mut file_keys: Vec<(usize, Arc<dyn PhysicalExpr>)> = Vec::new();
        for (l, r) in &join.on {
            let (stream_expr, table_expr) = if table_first { (r, l) } else { (l, r) };
            let column = column_of(table_expr)
                .and_then(|c| table_schema.index_of_column(c).ok())
                .map(|i| table.projection[i]);
            if let (Some(c), Some(_)) = (column, &entry.def.source) {
                let e = self
                    .state
                    .create_physical_expr(stream_expr.clone(), stream_plan.schema())?;
                file_keys.push((c, e));
                continue;
            }
            let Some(position) = column.and_then(|c| entry.key.iter().position(|&k| k == c)) else {
                return Err(Error::NotSupported(format!(
                    "a stream joins table {} on its primary key ({}); {table_expr} is not part of it",
                    entry.def.name,
                    entry.def.primary_key.join(", ")
                )));
            };
            keys[position] = Some(
                self.state
                    .create_physical_expr(stream_expr.clone(), stream_plan.schema())?,
            );
        }
        if entry.def.source.is_some() {
            return self.build_file_join(join, table, table_first, built, file_keys);
        }
        let keys: Vec<Arc<dyn PhysicalExpr>> =
            keys.into_iter().collect::<Option<_>>().ok_or_else(|| {
                Error::NotSupported(format!(
                    "a stream joins table {} on its whole primary key ({}) with equalities",
                    entry.def.name,
                    entry.def.primary_key.join(", ")
                ))
            })?;
        let table_filter = self.table_filter(&table, keep_unmatched, join)?;
        let output = Arc::new(join.schema.as_arrow().clone());
        let op = LookupJoinOperator::try_new(
            entry.def.name.clone(),
            keys,
            Arc::clone(&entry.rows),
            table_filter,
            table.projection.clone(),
            keep_unmatched,
            table_first,
            Arc::clone(&output),
        )?;
        self.finish_table_join(built, Box::new(op), join, &table, table_first)
    }

    /// Conditions on the table alone, which decide which table rows can match; a condition
    /// across the stream and the table is refused in a LEFT JOIN.
    fn table_filter(
        &self,
        table: &TableSide,
        keep_unmatched: bool,
        join: &datafusion::logical_expr::Join,
    ) -> Result<Option<Arc<dyn PhysicalExpr>>> {
        if keep_unmatched && join.filter.is_some() {
            return Err(unsupported(
                "a condition across the stream and the table in a LEFT JOIN (use an inner join)",
            ));
        }
        match table.filters.iter().cloned().reduce(Expr::and) {
            None => Ok(None),
            Some(f) => {
                let schema = datafusion::common::DFSchema::try_from_qualified_schema(
                    table.name.clone(),
                    &table.table.schema,
                )?;
                Ok(Some(self.state.create_physical_expr(f, &schema)?))
            }
        }
    }

    /// Adds a stream-table join `op` to `built`: the table's columns follow no time, the join's
    /// condition across both filters its rows, and the query reads the table.
    fn finish_table_join(
        &mut self,
        mut built: Built,
        op: Box<dyn weir_engine::operator::Operator>,
        join: &datafusion::logical_expr::Join,
        table: &TableSide,
        table_first: bool,
    ) -> Result<Built> {
        let output = op.schema();
        built.operators.push(op);
        let table_times = vec![None; table.projection.len()];
        built.times = if table_first {
            table_times.into_iter().chain(built.times).collect()
        } else {
            built.times.into_iter().chain(table_times).collect()
        };
        if let Some(predicate) = join.filter.clone() {
            let predicate = self.state.create_physical_expr(predicate, &join.schema)?;
            built
                .operators
                .push(Box::new(FilterOperator::try_new(predicate, output)?));
        }
        if !self
            .tables
            .iter()
            .any(|t| t.def.name == table.table.def.name)
        {
            self.tables.push(Arc::clone(&table.table));
        }
        Ok(built)
    }

    /// `stream JOIN table` where the table was read from a file and never changes: each event
    /// with every table row whose columns equal its keys (`keys`: table column, event key).
    fn build_file_join(
        &mut self,
        join: &datafusion::logical_expr::Join,
        table: TableSide,
        table_first: bool,
        built: Built,
        keys: Vec<(usize, Arc<dyn PhysicalExpr>)>,
    ) -> Result<Built> {
        let entry = Arc::clone(&table.table);
        if keys.len() != join.on.len() || keys.is_empty() {
            return Err(Error::NotSupported(format!(
                "a stream joins table {} with equalities between its columns and the stream's",
                entry.def.name
            )));
        }
        let keep_unmatched = join.join_type == datafusion::logical_expr::JoinType::Left
            || join.join_type == datafusion::logical_expr::JoinType::Right;
        let table_filter = self.table_filter(&table, keep_unmatched, join)?;
        let (table_keys, stream_keys) = keys.into_iter().unzip();
        let op = StaticJoinOperator::try_new(
            entry.def.name.clone(),
            stream_keys,
            Arc::clone(&entry.schema),
            entry.rows.snapshot()?,
            table_keys,
            table_filter,
            table.projection.clone(),
            keep_unmatched,
            table_first,
            Arc::new(join.schema.as_arrow().clone()),
        )?;
        self.finish_table_join(built, Box::new(op), join, &table, table_first)
    }

    /// A join where either input's rows change (an updating aggregate, a Top-N, an outer join):
    /// both are fed as changelogs, every row is kept with its count, and the output is a
    /// changelog. No time bound applies: a changed row meets its partners whenever it comes.
    fn build_retract_join(
        &mut self,
        join: &datafusion::logical_expr::Join,
        left: Built,
        right: Built,
        shared: Option<weir_engine::dataflow::Dataflow>,
    ) -> Result<Built> {
        use datafusion::logical_expr::JoinType;
        if left.session_gap_ns.is_some() || right.session_gap_ns.is_some() {
            return Err(unsupported("a join of SESSION windows"));
        }
        let (keep_left, keep_right) = match join.join_type {
            JoinType::Left => (true, false),
            JoinType::Right => (false, true),
            JoinType::Full => (true, true),
            _ => (false, false),
        };
        let side = |built: Built, plan: &LogicalPlan| -> Result<(Built, SchemaRef)> {
            let schema = Self::physical_schema(plan, &built);
            let built = Self::into_changelog(built, &schema)?;
            let schema = Self::physical_schema(plan, &built);
            Ok((built, schema))
        };
        let (left, left_schema) = side(left, &join.left)?;
        let (right, right_schema) = side(right, &join.right)?;
        let (left_keys, right_keys, filter) = self.join_exprs(join)?;
        let op = RetractJoinOperator::try_new(
            [
                (left_schema, left_keys, left.changelog, keep_left),
                (right_schema, right_keys, right.changelog, keep_right),
            ],
            filter,
            Arc::new(join.schema.as_arrow().clone()),
        )?;
        let width = join.schema.fields().len();
        let aggregated = left.aggregated || right.aggregated;
        let windowed_aggregate = left.windowed_aggregate || right.windowed_aggregate;
        Ok(Built {
            input: op.schema(),
            base: Self::join_base(shared, left, right, Box::new(op))?,
            operators: Vec::new(),
            times: vec![None; width],
            session_gap_ns: None,
            session_partition: None,
            hop: None,
            aggregated,
            windowed_aggregate,
            key: None,
            visibility: false,
            changelog: true,
        })
    }

    /// Under `state_ttl`, a join without a time bound keeps each row until the watermark passes
    /// its event time plus the TTL: the event time column of each input (the view's plan keeps
    /// them for this).
    fn ttl_times(
        &mut self,
        left: &[Option<TimeColumn>],
        right: &[Option<TimeColumn>],
    ) -> Result<(usize, usize)> {
        let time_of = |side: &[Option<TimeColumn>], name: &str| {
            side.iter()
                .position(|t| matches!(t, Some(TimeColumn::EventTime)))
                .or_else(|| side.iter().position(Option::is_some))
                .ok_or_else(|| {
                    Error::NotSupported(format!(
                        "state_ttl needs an event time on both inputs of a join, and its {name} \
                         input has none (a column the watermark follows)"
                    ))
                })
        };
        let times = (time_of(left, "left")?, time_of(right, "right")?);
        self.ttl_applied = true;
        Ok(times)
    }

    /// A join of two streams, bounded in time by window columns or an interval condition, or
    /// without a bound, keeping every row of both.
    pub(crate) fn build_stream_join(
        &mut self,
        join: &datafusion::logical_expr::Join,
    ) -> Result<Built> {
        let shared::Sides {
            left,
            right,
            shared,
        } = self.build_sides(join)?;
        if left.changes() || right.changes() {
            return self.build_retract_join(join, left, right, shared);
        }
        if left.session_gap_ns.is_some() || right.session_gap_ns.is_some() {
            return Err(unsupported("a join of SESSION windows"));
        }
        let left_width = join.left.schema().fields().len();
        let schema = join.schema.as_ref();
        let times: Vec<Option<TimeColumn>> =
            left.times.iter().chain(&right.times).copied().collect();
        let mut conditions: Vec<Expr> = join
            .on
            .iter()
            .map(|(l, r)| l.clone().eq(r.clone()))
            .collect();
        if let Some(f) = &join.filter {
            conjuncts(f, &mut conditions);
        }
        let bounds = time_bounds(&conditions, schema, left_width, &times);
        let lag = |i: usize| times[i].map_or(0, TimeColumn::lag_ns);
        // A left row at a can meet right rows with b <= a - low; those still to come have
        // b >= watermark - lag(b). So it is kept while a - low + lag(b) >= watermark.
        let left_keep = bounds
            .iter()
            .filter_map(|b| b.low.map(|low| (b.left, lag(left_width + b.right) - low)))
            .min_by_key(|&(_, offset)| offset);
        // A right row at b meets left rows with a <= b + high; those to come have
        // a >= watermark - lag(a).
        let right_keep = bounds
            .iter()
            .filter_map(|b| b.high.map(|high| (b.right, high + lag(b.left))))
            .min_by_key(|&(_, offset)| offset);
        // Without a bound on both sides, every row is kept (Flink's regular join): the view's
        // memory limit bounds it, and the results are the same as in batch.
        let bounded = match (left_keep, right_keep) {
            (Some(l), Some(r)) => Some((l, r)),
            _ => None,
        };
        use datafusion::logical_expr::JoinType;
        let (keep_left, keep_right) = match join.join_type {
            JoinType::Left => (true, false),
            JoinType::Right => (false, true),
            JoinType::Full => (true, true),
            _ => (false, false),
        };
        // An outer join without a time bound emits an unmatched row at once and takes it back
        // when its first match comes: its output is a changelog.
        let updating = (keep_left || keep_right) && bounded.is_none();
        let ttl = self.options.state_ttl_ns;
        let ttl_times = match bounded {
            None if ttl > 0 => Some(self.ttl_times(&left.times, &right.times)?),
            _ => None,
        };
        let left_schema = join.left.schema();
        let (left_keys, right_keys, filter) = self.join_exprs(join)?;
        let input = |keys, side: Option<(usize, i64)>, offset: usize, keep_unmatched| match side {
            Some((column, expiry_offset_ns)) => JoinInput {
                keys,
                time: Some(column),
                time_lag_ns: TimeColumn::lag_ns(
                    times[offset + column].unwrap_or(TimeColumn::EventTime),
                ),
                expiry_column: Some(column),
                expiry_offset_ns,
                keep_unmatched,
            },
            None => JoinInput {
                keys,
                time: None,
                time_lag_ns: 0,
                expiry_column: None,
                expiry_offset_ns: 0,
                keep_unmatched,
            },
        };
        let (mut left_input, mut right_input) = (
            input(left_keys, bounded.map(|b| b.0), 0, keep_left),
            input(right_keys, bounded.map(|b| b.1), left_width, keep_right),
        );
        if let Some((l, r)) = ttl_times {
            for (side, column) in [(&mut left_input, l), (&mut right_input, r)] {
                side.expiry_column = Some(column);
                side.expiry_offset_ns = ttl;
            }
        }
        let op = StreamJoinOperator::try_new(
            left_input,
            right_input,
            &Arc::new(left_schema.as_arrow().clone()),
            filter,
            Arc::new(join.schema.as_arrow().clone()),
        )?
        .with_state_ttl(ttl_times.map(|_| ttl));
        // Window columns equated across the join keep their meaning in the output: a match is
        // emitted when its later row arrives, which is never behind the watermark. An outer
        // join's unmatched rows come out behind it, so its output follows no watermark.
        let mut out_times = vec![None; times.len()];
        for b in bounds.iter().filter(|_| !keep_left && !keep_right) {
            if b.low == Some(0) && b.high == Some(0) {
                let r = left_width + b.right;
                if matches!(
                    times[b.left],
                    Some(TimeColumn::WindowEnd { .. } | TimeColumn::WindowStart { .. })
                ) {
                    out_times[b.left] = times[b.left];
                    out_times[r] = times[r];
                }
            }
        }
        let windowed_aggregate = left.windowed_aggregate || right.windowed_aggregate;
        let aggregated = left.aggregated || right.aggregated;
        let input = op.schema();
        Ok(Built {
            base: Self::join_base(shared, left, right, Box::new(op))?,
            input,
            operators: Vec::new(),
            times: out_times,
            session_gap_ns: None,
            session_partition: None,
            hop: None,
            aggregated,
            windowed_aggregate,
            key: None,
            visibility: false,
            changelog: updating,
        })
    }
}

/// The column of the other input that `plan`, read as a versioned table (`weir_versions(...)`,
/// from `FOR SYSTEM_TIME AS OF`), is joined as of; `None` if `plan` is not one. A condition
/// on the versions (a WHERE the optimizer moved below the join) would choose among them, which
/// is another join than Flink's: refused.
fn versions_of(plan: &LogicalPlan) -> Result<Option<String>> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let provider = source_as_provider(&scan.source)?;
            Ok(provider_as::<VersionedTable>(&provider).map(|v| v.as_of.clone()))
        }
        LogicalPlan::SubqueryAlias(a) => versions_of(&a.input),
        LogicalPlan::Projection(p) => versions_of(&p.input),
        LogicalPlan::Filter(f) => match versions_of(&f.input)? {
            Some(as_of) => Err(Error::NotSupported(format!(
                "FOR SYSTEM_TIME AS OF {as_of} with a condition on the versioned stream ({}): \
                 it would choose among the versions before the join. Filter the joined rows \
                 in an outer query, or the stream in a view of its own",
                f.predicate
            ))),
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

impl Planner<'_> {
    /// A join's key expressions over each input and its other conditions over both.
    #[allow(clippy::type_complexity)]
    fn join_exprs(
        &self,
        join: &datafusion::logical_expr::Join,
    ) -> Result<(
        Vec<Arc<dyn PhysicalExpr>>,
        Vec<Arc<dyn PhysicalExpr>>,
        Option<Arc<dyn PhysicalExpr>>,
    )> {
        let mut left_keys = Vec::new();
        let mut right_keys = Vec::new();
        for (l, r) in &join.on {
            left_keys.push(
                self.state
                    .create_physical_expr(l.clone(), join.left.schema())?,
            );
            right_keys.push(
                self.state
                    .create_physical_expr(r.clone(), join.right.schema())?,
            );
        }
        let filter = match &join.filter {
            Some(f) => Some(self.state.create_physical_expr(f.clone(), &join.schema)?),
            None => None,
        };
        Ok((left_keys, right_keys, filter))
    }

    /// Flink's event-time temporal join: each left row, once the watermark passes its time,
    /// with the right's row for its key current at that time.
    fn build_temporal_join(&mut self, join: &datafusion::logical_expr::Join) -> Result<Built> {
        use datafusion::logical_expr::JoinType;
        let as_of = versions_of(&join.right)?.unwrap_or_default();
        let keep_unmatched = match join.join_type {
            JoinType::Inner => false,
            JoinType::Left => true,
            t => {
                return Err(Error::NotSupported(format!(
                    "FOR SYSTEM_TIME AS OF {as_of} in a {t} join: a temporal join is inner or \
                     LEFT, as in Flink"
                )));
            }
        };
        if join.on.is_empty() {
            return Err(Error::NotSupported(format!(
                "FOR SYSTEM_TIME AS OF {as_of}: a temporal join needs an equality between the \
                 two inputs, the versioned stream's key (ON l.k = r.k)"
            )));
        }
        let shared::Sides {
            left,
            right,
            shared,
        } = self.build_sides(join)?;
        if left.changes() || right.changes() || left.session_gap_ns.is_some() {
            return Err(Error::NotSupported(format!(
                "FOR SYSTEM_TIME AS OF {as_of} over results that change or sessions: a temporal \
                 join takes rows that only append on both sides"
            )));
        }
        let left_schema = join.left.schema();
        let column = match as_of.rsplit_once('.') {
            Some((q, n)) => datafusion::common::Column::new(Some(q), n),
            None => datafusion::common::Column::from_name(&as_of),
        };
        let left_time = left_schema
            .index_of_column(&column)
            .map_err(|_| Error::UndefinedColumn(format!("column \"{as_of}\" does not exist")))?;
        if !matches!(left.times.get(left_time), Some(Some(TimeColumn::EventTime))) {
            return Err(Error::NotSupported(format!(
                "FOR SYSTEM_TIME AS OF {as_of}: a temporal join is as of the event time of the \
                 left input (the column its stream's WATERMARK is on), or as of a PROCTIME() \
                 column"
            )));
        }
        let right_time = right
            .times
            .iter()
            .position(|t| matches!(t, Some(TimeColumn::EventTime)))
            .ok_or_else(|| {
                Error::NotSupported(format!(
                    "FOR SYSTEM_TIME AS OF {as_of}: the versioned stream's event time does not \
                     reach the join; read the stream itself"
                ))
            })?;
        let (left_keys, right_keys, filter) = self.join_exprs(join)?;
        let op = TemporalJoinOperator::try_new(
            TemporalInput {
                keys: left_keys,
                time: left_time,
                schema: left.output_schema(),
            },
            TemporalInput {
                keys: right_keys,
                time: right_time,
                schema: right.output_schema(),
            },
            keep_unmatched,
            filter,
            Arc::new(join.schema.as_arrow().clone()),
        )?;
        // Rows go out when the watermark passes their time, before it moves on: the left's
        // times still follow the watermark.
        let mut times: Vec<Option<TimeColumn>> = left.times.clone();
        times.resize(join.schema.fields().len(), None);
        let windowed_aggregate = left.windowed_aggregate || right.windowed_aggregate;
        let aggregated = left.aggregated || right.aggregated;
        let input = op.schema();
        Ok(Built {
            base: Self::join_base(shared, left, right, Box::new(op))?,
            input,
            operators: Vec::new(),
            times,
            session_gap_ns: None,
            session_partition: None,
            hop: None,
            aggregated,
            windowed_aggregate,
            key: None,
            visibility: false,
            changelog: false,
        })
    }
}
