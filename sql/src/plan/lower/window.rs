//! Lowering of the window table functions: the rows they window (a stream, a view's query
//! inlined, or a subquery), then the window assigner.

use weir_engine::operator::{Operator, ProjectionOperator};

use super::{Built, Planner, column_exprs, derived_window_input, unsupported};
use crate::Error;
use crate::Result;
use crate::plan::bounds::TimeColumn;
use crate::providers::{WindowInput, WindowSpec, WindowTable};

impl Planner<'_> {
    /// A window over rows that change (a view or subquery with a GROUP BY without a window, a
    /// Top-N, a join without a time bound): each row gets its window's columns like any other
    /// computed column, and what reads them follows the rows as they come and are taken back.
    /// Such windows never close: what aggregates them is an updating aggregate.
    fn window_over_changes(
        &mut self,
        built: Built,
        t: &WindowTable,
    ) -> Result<(Built, Option<Vec<usize>>)> {
        if matches!(t.spec, WindowSpec::Session { .. }) {
            return Err(unsupported(
                "SESSION windows over rows that change (sessions form per GROUP BY key over rows \
                 that only append)",
            ));
        }
        let schema = built.output_schema();
        let mut built = Self::into_changelog(built, &schema)?;
        let with_trailer = built.output_schema();
        let width = with_trailer.fields().len() - 1;
        let operator = t.operator_over(&with_trailer, t.time_index)?;
        let windowed = operator.schema();
        built.operators.push(operator);
        // The changelog's column goes last again, after the window's.
        let order: Vec<usize> = (0..width).chain([width + 1, width + 2, width]).collect();
        let exprs = column_exprs(&windowed, &order);
        built
            .operators
            .push(Box::new(ProjectionOperator::try_new(exprs, &windowed)?));
        built.times = vec![None; width + 2];
        Ok((built, None))
    }

    /// The rows a window function windows, then the window assigner. With `keep` (the input
    /// columns the query reads, the time among them, in order), the rest are dropped before
    /// the assigner, which then copies less; the columns kept are returned when they were.
    pub(crate) fn build_window(
        &mut self,
        t: &WindowTable,
        keep: Option<&[usize]>,
    ) -> Result<(Built, Option<Vec<usize>>)> {
        let time = t.input_schema.field(t.time_index).name().clone();
        let mut built = match &t.input {
            WindowInput::Stream(stream) if self.processing_time => {
                return Err(Error::NotSupported(format!(
                    "a window over {time} of stream {} in a query that also stamps rows with \
                     PROCTIME(): a query follows processing time or event time, not both; \
                     window over the PROCTIME() column",
                    stream.def.name
                )));
            }
            WindowInput::Stream(stream) => {
                let def = &stream.def;
                match &def.watermark {
                    Some(w) if w.column == time => {}
                    Some(w) => {
                        return Err(Error::NotSupported(format!(
                            "a window over {time}, but stream {} has its watermark on {}; \
                             window over the watermark column",
                            def.name, w.column
                        )));
                    }
                    None => {
                        return Err(Error::NotSupported(format!(
                            "stream {} has no watermark, so its windows would never close; \
                             declare WATERMARK FOR {time} AS {time} - INTERVAL '...' in CREATE STREAM",
                            def.name
                        )));
                    }
                }
                self.stream_base(stream)
            }
            WindowInput::View(view) => {
                let built = self.inline_view(view)?;
                if built.changes() {
                    return self.window_over_changes(built, t);
                }
                derived_window_input(
                    built,
                    t.time_index,
                    &time,
                    &format!("view {}", view.def.name),
                )?
            }
            WindowInput::Query(plan) => {
                let plan = self.state.optimize(plan)?;
                // The windowed rows only append: the subquery's own aggregates emit each window
                // once, whatever the outer query's emit mode.
                let saved = std::mem::take(&mut self.options);
                let built = self.build(&plan);
                self.options = saved;
                let built = built?;
                if built.changes() {
                    return self.window_over_changes(built, t);
                }
                derived_window_input(built, t.time_index, &time, "the subquery")?
            }
        };
        if built.session_gap_ns.is_some() {
            return Err(unsupported("a window over SESSION windows"));
        }
        let width_in = t.input_schema.fields().len();
        let keep =
            keep.filter(|k| k.len() < width_in && built.key.is_none() && built.trailer().is_none());
        let (operator, time_index) = match keep {
            Some(keep) => {
                let current = built.output_schema();
                let exprs = column_exprs(&current, keep);
                let projection = ProjectionOperator::try_new(exprs, &current)?;
                let time_index = keep
                    .iter()
                    .position(|&i| i == t.time_index)
                    .ok_or_else(|| {
                        Error::Internal(
                            "the window's time column was dropped; this is a bug".into(),
                        )
                    })?;
                let operator = t.operator_over(&projection.schema(), time_index)?;
                built.times = keep
                    .iter()
                    .map(|&i| built.times.get(i).copied().flatten())
                    .collect();
                built.operators.push(Box::new(projection));
                (operator, time_index)
            }
            None => (t.operator()?, t.time_index),
        };
        let width = operator.schema().fields().len();
        built.times.resize(width, None);
        built.times[time_index] = Some(TimeColumn::EventTime);
        if let Some(size_ns) = t.spec.size_ns() {
            built.times[width - 2] = Some(TimeColumn::WindowStart { size_ns });
            built.times[width - 1] = Some(TimeColumn::WindowEnd { size_ns });
        } else {
            built.times[width - 2] = None;
            built.times[width - 1] = None;
        }
        if let WindowSpec::Session { gap_ns } = t.spec {
            built.session_gap_ns = Some(gap_ns);
            built.session_partition = t.session_partition.clone();
        }
        if let WindowSpec::Hop { slide_ns, size_ns } = t.spec {
            built.hop = Some(super::hop::HopSite {
                operator: built.operators.len(),
                time_index,
                slide_ns,
                size_ns,
            });
        }
        built.operators.push(operator);
        Ok((built, keep.map(<[usize]>::to_vec)))
    }
}
