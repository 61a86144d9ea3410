//! What columns say about time, relative to the watermark, and the time conditions between
//! the two inputs of a join: the properties that let windows close and join state be freed.

use datafusion::logical_expr::Expr;

use crate::time::interval_ns;

/// What a column's values say about time, relative to the watermark: the property that lets
/// windows close and join state be freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeColumn {
    /// The stream's event time: rows still to come are at or after the watermark.
    EventTime,
    /// The start of windows of this size: rows still to come start after `watermark - size`.
    WindowStart { size_ns: i64 },
    /// The end of windows of this size: rows still to come end after the watermark.
    WindowEnd { size_ns: i64 },
}

impl TimeColumn {
    /// How far behind the watermark rows still to come can be in this column.
    pub(crate) fn lag_ns(self) -> i64 {
        match self {
            Self::EventTime | Self::WindowEnd { .. } => 0,
            Self::WindowStart { size_ns } => size_ns,
        }
    }
}

/// A time condition between the join's inputs: `left.a - right.b` lies within `[low, high]`
/// (either bound may be missing).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeBound {
    pub(crate) left: usize,
    pub(crate) right: usize,
    pub(crate) low: Option<i64>,
    pub(crate) high: Option<i64>,
}

/// `column + offset` where `column` is a time column of one of the join's inputs.
pub(crate) fn time_term(e: &Expr, schema: &datafusion::common::DFSchema) -> Option<(usize, i64)> {
    use datafusion::logical_expr::Operator as Op;
    match e {
        Expr::BinaryExpr(b) if matches!(b.op, Op::Plus | Op::Minus) => {
            let (col, offset) = time_term(&b.left, schema)?;
            let n = interval_ns(&b.right)?;
            Some((
                col,
                if b.op == Op::Plus {
                    offset + n
                } else {
                    offset - n
                },
            ))
        }
        e => {
            let c = column_of(e)?;
            Some((schema.index_of_column(c).ok()?, 0))
        }
    }
}

/// Splits a conjunction.
pub(crate) fn conjuncts(e: &Expr, out: &mut Vec<Expr>) {
    use datafusion::logical_expr::Operator as Op;
    match e {
        Expr::BinaryExpr(b) if b.op == Op::And => {
            conjuncts(&b.left, out);
            conjuncts(&b.right, out);
        }
        Expr::Between(b) if !b.negated => {
            out.push(b.expr.as_ref().clone().gt_eq(b.low.as_ref().clone()));
            out.push(b.expr.as_ref().clone().lt_eq(b.high.as_ref().clone()));
        }
        e => out.push(e.clone()),
    }
}

/// The time conditions among `conditions` (over the join's schema, left columns first).
pub(crate) fn time_bounds(
    conditions: &[Expr],
    schema: &datafusion::common::DFSchema,
    left_width: usize,
    times: &[Option<TimeColumn>],
) -> Vec<TimeBound> {
    use datafusion::logical_expr::Operator as Op;
    let mut bounds = Vec::new();
    for c in conditions {
        let Expr::BinaryExpr(b) = c else { continue };
        let op = match b.op {
            Op::Eq | Op::Lt | Op::LtEq | Op::Gt | Op::GtEq => b.op,
            _ => continue,
        };
        let (Some((a, oa)), Some((z, oz))) =
            (time_term(&b.left, schema), time_term(&b.right, schema))
        else {
            continue;
        };
        if times.get(a).copied().flatten().is_none() || times.get(z).copied().flatten().is_none() {
            continue;
        }
        // a + oa  op  z + oz, with a and z on different sides.
        let (l, r, lo, diff_op) = if a < left_width && z >= left_width {
            (a, z - left_width, oz - oa, op)
        } else if z < left_width && a >= left_width {
            (z, a - left_width, oa - oz, op.swap().unwrap_or(op))
        } else {
            continue;
        };
        // Now: left.l  diff_op  right.r + lo.
        let (low, high) = match diff_op {
            Op::Eq => (Some(lo), Some(lo)),
            Op::Lt | Op::LtEq => (None, Some(lo)),
            _ => (Some(lo), None),
        };
        bounds.push(TimeBound {
            left: l,
            right: r,
            low,
            high,
        });
    }
    bounds
}

/// The column an expression reads, looking through aliases and casts.
pub(crate) fn column_of(e: &Expr) -> Option<&datafusion::common::Column> {
    match e {
        Expr::Column(c) => Some(c),
        Expr::Alias(a) => column_of(&a.expr),
        Expr::Cast(c) => column_of(&c.expr),
        Expr::TryCast(c) => column_of(&c.expr),
        _ => None,
    }
}
