//! Lowering of `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)` with a filter on the rank
//! (`WHERE rn <= N`): Top-N per partition and deduplication, as upserts by partition and rank;
//! `RANK()` and `DENSE_RANK()` the same way, as a changelog (ties share a rank, so a rank is
//! not a key).

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator as BinaryOp, Window};
use weir_engine::operator::{RankKind, RetractTopNOperator, TopNExpiry, TopNOperator, TopNOrder};

use super::{Built, Planner, arrow_schema, event_time_column, unsupported};
use crate::plan::bounds::{TimeColumn, conjuncts};
use crate::{Error, Result};

/// A filter's bound on a rank column: keep ranks up to `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RankLimit {
    /// The rank column's name (the window expression's).
    pub(crate) column: String,
    /// The largest rank kept.
    pub(crate) limit: usize,
}

/// The rank limit among a filter's conjuncts (`rn <= N`, `rn < N`, `rn = 1`, or the same
/// reversed), and the other conjuncts.
pub(crate) fn rank_limit(predicate: &Expr) -> Option<(RankLimit, Vec<Expr>)> {
    let mut parts = Vec::new();
    conjuncts(predicate, &mut parts);
    let found = parts.iter().enumerate().find_map(|(i, e)| {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
            return None;
        };
        let (column, op, value) = match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), Expr::Literal(v, _)) => (c, *op, v),
            (Expr::Literal(v, _), Expr::Column(c)) => (c, op.swap()?, v),
            _ => return None,
        };
        let value = match value.cast_to(&DataType::Int64).ok()? {
            datafusion::common::ScalarValue::Int64(Some(v)) => v,
            _ => return None,
        };
        let limit = match op {
            BinaryOp::LtEq => value,
            BinaryOp::Lt => value - 1,
            BinaryOp::Eq if value == 1 => 1,
            _ => return None,
        };
        let limit = usize::try_from(limit).ok().filter(|&l| l >= 1)?;
        Some((
            i,
            RankLimit {
                column: column.name.clone(),
                limit,
            },
        ))
    })?;
    let (index, limit) = found;
    parts.remove(index);
    Some((limit, parts))
}

impl Planner<'_> {
    /// A Top-N over results that change (an updating aggregate's, an outer join's): fed their
    /// changelog, it keeps every row and emits the changes of the top as a changelog.
    fn build_retract_top_n(
        &mut self,
        window: &Window,
        built: Built,
        partition: Vec<std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
        order: Vec<TopNOrder>,
        limit: usize,
        kind: RankKind,
    ) -> Result<Built> {
        if self.options.state_ttl_ns > 0 {
            return Err(unsupported("state_ttl on a Top-N over results that change"));
        }
        let schema = Self::physical_schema(&window.input, &built);
        let mut built = Self::into_changelog(built, &schema)?;
        let input = Self::physical_schema(&window.input, &built);
        let input_width = window.input.schema().fields().len();
        let rank_name = window.schema.field(input_width).name().clone();
        let op = RetractTopNOperator::try_new(&input, partition, order, limit, kind, &rank_name)?;
        built.operators.push(Box::new(op));
        built.times = vec![None; input_width + 1];
        built.changelog = true;
        Ok(built)
    }

    /// A window node: only ROW_NUMBER, RANK or DENSE_RANK whose rank a filter above bounds
    /// ([`RankLimit`]).
    pub(crate) fn build_top_n(&mut self, window: &Window) -> Result<Built> {
        let [expr] = window.window_expr.as_slice() else {
            return Err(unsupported(
                "more than one window function (OVER) in one SELECT",
            ));
        };
        let Expr::WindowFunction(f) = expr.clone().unalias() else {
            return Err(unsupported("this window function (OVER)"));
        };
        let name = f.fun.name().to_lowercase();
        let kind = match name.as_str() {
            "row_number" => RankKind::RowNumber,
            "rank" => RankKind::Rank,
            "dense_rank" => RankKind::DenseRank,
            _ => {
                return Err(Error::NotSupported(format!(
                    "{name}() OVER (...) is not supported in a continuous query yet: a Top-N or \
                     deduplication is ROW_NUMBER(), RANK() or DENSE_RANK() OVER (PARTITION BY ... \
                     ORDER BY ...) with a filter on it (WHERE rn <= N)"
                )));
            }
        };
        let input_width = window.input.schema().fields().len();
        let rank_name = window.schema.field(input_width).name().clone();
        let limit = match self.rank_limit.take() {
            Some(l) if l.column == rank_name => l.limit,
            other => {
                self.rank_limit = other;
                return Err(Error::NotSupported(format!(
                    "{}() OVER (...) without a filter on its result would renumber every \
                         row as rows arrive; filter it (WHERE rn <= N) for a Top-N, or (WHERE rn = \
                         1) to keep one row per key",
                    name.to_uppercase()
                )));
            }
        };
        let mut built = self.build(&window.input)?;
        let input = window.input.schema();
        let mut key = Vec::new();
        let mut partition = Vec::new();
        for e in &f.params.partition_by {
            let Expr::Column(c) = e else {
                return Err(unsupported(&format!(
                    "PARTITION BY {e} (partition by columns; compute {e} in a subquery first)"
                )));
            };
            key.push(input.index_of_column(c)?);
            partition.push(self.state.create_physical_expr(e.clone(), input)?);
        }
        let order = f
            .params
            .order_by
            .iter()
            .map(|s| {
                Ok(TopNOrder {
                    expr: self.state.create_physical_expr(s.expr.clone(), input)?,
                    options: SortOptions {
                        descending: !s.asc,
                        nulls_first: s.nulls_first,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if built.changes() {
            return self.build_retract_top_n(window, built, partition, order, limit, kind);
        }
        // A Top-N per window (PARTITION BY window_end, or window_start) is final once the
        // watermark passes the window's end: its state goes then.
        let expiry = key
            .iter()
            .enumerate()
            .filter_map(|(j, &k)| match built.times.get(k).copied().flatten() {
                Some(TimeColumn::WindowEnd { .. }) => Some((0, j, 0)),
                Some(TimeColumn::WindowStart { size_ns }) => Some((1, j, size_ns)),
                _ => None,
            })
            .min()
            .map(|(_, partition_index, offset_ns)| TopNExpiry {
                partition_index,
                offset_ns,
            });
        // Ranks 2..=N of a partition are told apart by the rank; a Top-1 needs the key alone.
        if limit > 1 {
            key.push(input_width);
        }
        let mut op = TopNOperator::try_new(
            arrow_schema(&window.input),
            partition,
            order,
            limit,
            &rank_name,
        )?
        .with_rank(kind);
        if let Some(expiry) = expiry {
            op = op.with_expiry(expiry);
        }
        let ttl = self.options.state_ttl_ns;
        if ttl > 0 && expiry.is_none() {
            if limit != 1 || kind != RankKind::RowNumber {
                return Err(Error::NotSupported(
                    "state_ttl on a Top-N without a window applies to a deduplication (ROW_NUMBER() \
                     ... = 1) so far: a key forgotten by a Top-N of several rows would leave its \
                     other ranks behind in the view"
                        .into(),
                ));
            }
            let time = event_time_column(&built.times, "the Top-N's input")?;
            op = op.with_state_ttl(time, ttl)?;
            self.ttl_applied = true;
        }
        built.operators.push(Box::new(op));
        built.times.push(None);
        if kind == RankKind::RowNumber {
            built.key = Some(key);
        } else {
            // Ties share a rank, so (partition, rank) is no key: the rows go as a changelog.
            built.changelog = true;
        }
        Ok(built)
    }
}
