//! Lowering of aggregates OVER a frame of preceding rows ordered by event time (`AVG(x) OVER
//! (PARTITION BY k ORDER BY ts ROWS BETWEEN 10 PRECEDING AND CURRENT ROW)`), Flink's OVER
//! aggregation: each row is emitted once the watermark passes it, with its aggregates.

use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    Expr, Window, WindowFrame, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use weir_engine::operator::{
    ChangingFrame, FrameBound, OverAggregateOperator, OverFrame, RetractOverOperator, TopNOrder,
};

use super::{Built, Planner, arrow_schema};
use crate::plan::bounds::TimeColumn;
use crate::{Error, Result};

fn refuse(what: &str) -> Error {
    Error::NotSupported(format!(
        "{what}; an OVER aggregate in a continuous query is ordered by the stream's event time \
         and framed by preceding rows: OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN n PRECEDING \
         AND CURRENT ROW), or RANGE BETWEEN INTERVAL '...' PRECEDING AND CURRENT ROW"
    ))
}

/// Whether every window function of `window` is an aggregate (rather than ROW_NUMBER & co).
pub(crate) fn is_over_aggregate(window: &Window) -> bool {
    window.window_expr.iter().all(|e| {
        matches!(e.clone().unalias(), Expr::WindowFunction(f)
            if matches!(f.fun, WindowFunctionDefinition::AggregateUDF(_)))
    })
}

/// Nanoseconds of a constant interval without months (whose length varies).
fn interval_ns(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => i64::from(i.days)
            .checked_mul(86_400_000_000_000)?
            .checked_add(i.nanoseconds),
        ScalarValue::IntervalDayTime(Some(i)) => i64::from(i.days)
            .checked_mul(86_400_000_000_000)?
            .checked_add(i64::from(i.milliseconds).checked_mul(1_000_000)?),
        ScalarValue::DurationSecond(Some(s)) => s.checked_mul(1_000_000_000),
        ScalarValue::DurationMillisecond(Some(s)) => s.checked_mul(1_000_000),
        ScalarValue::DurationMicrosecond(Some(s)) => s.checked_mul(1_000),
        ScalarValue::DurationNanosecond(Some(s)) => Some(*s),
        _ => None,
    }
}

/// The engine's frame for a SQL frame that ends at the current row.
fn over_frame(frame: &WindowFrame) -> Result<OverFrame> {
    if frame.end_bound != WindowFrameBound::CurrentRow {
        return Err(refuse(
            "a frame that ends after the current row (FOLLOWING) would hold each row back for \
             rows still to come",
        ));
    }
    match (frame.units, &frame.start_bound) {
        (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => Ok(OverFrame::Rows(Some(0))),
        (WindowFrameUnits::Range, WindowFrameBound::CurrentRow) => Ok(OverFrame::Range(Some(0))),
        (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) if v.is_null() => {
            Ok(OverFrame::Rows(None))
        }
        (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) if v.is_null() => {
            Ok(OverFrame::Range(None))
        }
        (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) => {
            match v.cast_to(&datafusion::arrow::datatypes::DataType::UInt64)? {
                ScalarValue::UInt64(Some(n)) => Ok(OverFrame::Rows(Some(n))),
                _ => Err(refuse(&format!("a ROWS frame of {v} PRECEDING"))),
            }
        }
        (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) => match interval_ns(v) {
            Some(ns) if ns >= 0 => Ok(OverFrame::Range(Some(ns))),
            _ => Err(refuse(&format!(
                "a RANGE frame of {v} PRECEDING (give a fixed interval: seconds, minutes, \
                 hours or days, not months)"
            ))),
        },
        (units, _) => Err(refuse(&format!("a {units} frame"))),
    }
}

/// The engine's frame, any bounds, for an OVER whose results change.
fn changing_frame(frame: &WindowFrame) -> Result<ChangingFrame> {
    let rows = match frame.units {
        WindowFrameUnits::Rows => true,
        WindowFrameUnits::Range => false,
        WindowFrameUnits::Groups => return Err(refuse("a GROUPS frame")),
    };
    let amount = |v: &ScalarValue| -> Result<Option<i64>> {
        if v.is_null() {
            return Ok(None);
        }
        let n = match rows {
            true => match v.cast_to(&datafusion::arrow::datatypes::DataType::Int64)? {
                ScalarValue::Int64(Some(n)) if n >= 0 => Some(n),
                _ => None,
            },
            false => interval_ns(v).filter(|&ns| ns >= 0),
        };
        n.map(Some).ok_or_else(|| {
            refuse(&format!(
                "a frame bound of {v} (give a row count for ROWS, a fixed interval over a \
                 timestamp for RANGE)"
            ))
        })
    };
    let bound = |b: &WindowFrameBound| -> Result<FrameBound> {
        Ok(match b {
            WindowFrameBound::Preceding(v) => FrameBound::Preceding(amount(v)?),
            WindowFrameBound::CurrentRow => FrameBound::CurrentRow,
            WindowFrameBound::Following(v) => FrameBound::Following(amount(v)?),
        })
    };
    Ok(ChangingFrame {
        rows,
        start: bound(&frame.start_bound)?,
        end: bound(&frame.end_bound)?,
    })
}

/// One OVER clause and its aggregates.
struct Over<'a> {
    partition_by: &'a [Expr],
    order_by: &'a [datafusion::logical_expr::SortExpr],
    frame: ChangingFrame,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
}

impl Planner<'_> {
    /// Aggregates OVER a window of results that change: every row's aggregates follow its
    /// frame as rows come and are taken back, a changelog.
    fn build_retract_over(&mut self, built: Built, window: &Window, over: Over) -> Result<Built> {
        let schema = Self::physical_schema(&window.input, &built);
        let mut built = match built.changes() {
            true => Self::into_changelog(built, &schema)?,
            false => Self::append_only_changelog(built)?,
        };
        let input = window.input.schema();
        let physical = |e: &Expr| self.state.create_physical_expr(e.clone(), input);
        let partition = over
            .partition_by
            .iter()
            .map(physical)
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let order = over
            .order_by
            .iter()
            .map(|s| {
                Ok(TopNOrder {
                    expr: physical(&s.expr)?,
                    options: SortOptions {
                        descending: !s.asc,
                        nulls_first: s.nulls_first,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let operator = RetractOverOperator::try_new(
            &built.output_schema(),
            partition,
            order,
            over.frame,
            over.aggregates,
            window.schema.as_arrow(),
        )?;
        built.operators.push(Box::new(operator));
        built.times = vec![None; window.schema.fields().len()];
        Ok(built)
    }

    /// Aggregates OVER one window (partition, event-time order, frame) of an append-only input.
    pub(crate) fn build_over(&mut self, window: &Window) -> Result<Built> {
        let mut built = self.build(&window.input)?;
        let input = window.input.schema();
        let input_arrow = arrow_schema(&window.input);
        let width = input.fields().len();
        let mut shared = None;
        let mut aggregates: Vec<Arc<AggregateFunctionExpr>> = Vec::new();
        for (e, field) in window
            .window_expr
            .iter()
            .zip(&window.schema.fields()[width..])
        {
            let Expr::WindowFunction(f) = e.clone().unalias() else {
                return Err(Error::Internal(
                    "a window node without a window function".into(),
                ));
            };
            let WindowFunctionDefinition::AggregateUDF(udaf) = &f.fun else {
                return Err(refuse("ranking functions beside aggregates"));
            };
            let p = &f.params;
            if p.distinct || p.filter.is_some() || p.null_treatment.is_some() {
                return Err(refuse(&format!(
                    "{}(DISTINCT ...), FILTER or IGNORE NULLS over a frame",
                    udaf.name()
                )));
            }
            let over = (
                p.partition_by.clone(),
                p.order_by.clone(),
                p.window_frame.clone(),
            );
            match &shared {
                None => shared = Some(over),
                Some(s) if *s == over => {}
                Some(_) => {
                    return Err(refuse(
                        "OVER clauses that differ within one SELECT (compute each in a subquery \
                         of its own)",
                    ));
                }
            }
            let args = p
                .args
                .iter()
                .map(|a| self.state.create_physical_expr(a.clone(), input))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            let aggregate = AggregateExprBuilder::new(Arc::clone(udaf), args)
                .schema(Arc::clone(&input_arrow))
                .alias(field.name())
                .build()?;
            aggregates.push(Arc::new(aggregate));
        }
        let Some((partition_by, order_by, frame)) = shared else {
            return Err(Error::Internal(
                "a window node without a window function".into(),
            ));
        };
        // Flink's OVER aggregation: ordered by the event time, framed up to the current row,
        // over rows that only append; each row goes out once, final, as the watermark passes.
        let time = match order_by.as_slice() {
            [sort] if sort.asc => match &sort.expr {
                Expr::Column(c) => input.index_of_column(c).ok(),
                _ => None,
            },
            _ => None,
        }
        .filter(|&i| matches!(built.times.get(i), Some(Some(TimeColumn::EventTime))));
        let (Some(time), Ok(event_frame), false) = (time, over_frame(&frame), built.changes())
        else {
            // Any other OVER: every row's aggregates follow its frame as rows come (and are
            // taken back), a changelog.
            let over = Over {
                partition_by: &partition_by,
                order_by: &order_by,
                frame: changing_frame(&frame)?,
                aggregates,
            };
            return self.build_retract_over(built, window, over);
        };
        let partition = partition_by
            .iter()
            .map(|e| self.state.create_physical_expr(e.clone(), input))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        built
            .operators
            .push(Box::new(OverAggregateOperator::try_new(
                input_arrow,
                partition,
                time,
                event_frame,
                aggregates,
                Arc::new(window.schema.as_arrow().clone()),
            )?));
        built.times.resize(window.schema.fields().len(), None);
        Ok(built)
    }
}
