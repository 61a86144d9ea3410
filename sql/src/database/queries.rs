//! Running queries: a view's or a stream's query as an engine `RunningQuery` with its result
//! table, checkpoints and late events, and the connectors of streams over external topics.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_engine::checkpoint::CheckpointStore;
use weir_engine::log::StreamLog;
use weir_engine::result_table::ResultTable;
use weir_engine::runtime::{
    CheckpointSpec, QuerySpec, RunningQuery, SourceSpec, late_events_schema,
};

use super::Database;
use crate::catalog::{StreamDef, ViewDef, ViewEntry};
use crate::plan::CompiledView;
use crate::{Error, Result};

impl Database {
    /// Starts the Kafka source or sink of stream `def`, if it has one.
    pub(super) fn start_connector(&self, def: &StreamDef) -> Result<()> {
        let stream = || {
            self.stream(&def.name).ok_or_else(|| {
                Error::Internal(format!("stream {} vanished; this is a bug", def.name))
            })
        };
        let connector = match (&def.source, &def.sink) {
            (Some(source), _) => self
                .connector_factory()?
                .start_source(stream()?, source.clone())?,
            (None, Some(sink)) => self.connector_factory()?.start_sink(
                stream()?,
                sink.clone(),
                self.stream_dir(&def.name).join("delivered.json"),
            )?,
            (None, None) => return Ok(()),
        };
        self.state().connectors.insert(def.name.clone(), connector);
        Ok(())
    }

    /// Starts `compiled` as a running query named `name`: its result table, its late events
    /// and the query thread.
    pub(super) fn spawn_query(
        name: &str,
        compiled: &mut Option<CompiledView>,
        checkpoint: Option<CheckpointSpec>,
        output: Option<Arc<StreamLog>>,
        memory_limit: Option<u64>,
    ) -> Result<(Arc<ResultTable>, Arc<ResultTable>, RunningQuery)> {
        let compiled = compiled.take().ok_or_else(|| {
            Error::Internal("a compiled view started twice; this is a bug".into())
        })?;
        let schema = compiled.schema();
        let table = Arc::new(match &compiled.key {
            None if compiled.changelog => ResultTable::counted(schema)?,
            None => ResultTable::new(schema),
            Some(key) if compiled.visibility => {
                ResultTable::keyed_with_visibility(schema, key.clone())?
            }
            Some(key) => ResultTable::keyed(schema, key.clone())?,
        });
        let late = Arc::new(ResultTable::new(late_events_schema()));
        let sources: Vec<SourceSpec> = compiled
            .sources
            .iter()
            .map(|s| {
                // In processing time the clock is the watermark; event times play no part.
                let (event_time, delay_ns) = match &s.def.watermark {
                    Some(w) if !compiled.processing_time => {
                        (s.def.column_index(&w.column), w.delay_ns)
                    }
                    _ => (None, 0),
                };
                SourceSpec {
                    log: Arc::clone(&s.log),
                    event_time,
                    delay_ns,
                    idle_timeout: Duration::from_millis(s.def.idle_timeout_ms),
                    processing_time: compiled.processing_time,
                }
            })
            .collect();
        let query = RunningQuery::spawn(QuerySpec {
            name: name.to_string(),
            sources,
            dataflow: compiled.dataflow,
            sink: Arc::clone(&table),
            late: Arc::clone(&late),
            checkpoint,
            output,
            memory_limit: memory_limit.and_then(|m| usize::try_from(m).ok()),
        })?;
        Ok((table, late, query))
    }

    /// Runs a query that is in no catalog (the query of `SUBSCRIBE (SELECT ...)`) until the
    /// returned handle is dropped; returns its result table too.
    pub(crate) fn start_temporary(
        &self,
        name: &str,
        compiled: CompiledView,
    ) -> Result<(Arc<ResultTable>, RunningQuery)> {
        let limit = self.inner.options.view_memory_limit;
        let (table, _late, query) =
            Self::spawn_query(name, &mut Some(compiled), None, None, limit)?;
        Ok((table, query))
    }

    /// Starts a query: a view's (results in its table), or with `output` a stream's. Its
    /// checkpoints live in `checkpoints`.
    pub(super) fn start_query(
        &self,
        def: ViewDef,
        compiled: CompiledView,
        checkpoints: &Path,
        output: Option<Arc<StreamLog>>,
    ) -> Result<Arc<ViewEntry>> {
        let plan = match &output {
            Some(_) => compiled.explain_into(&format!(
                "stream {}, appended exactly once with each checkpoint",
                def.name
            )),
            None => compiled.explain(&def.name),
        };
        let sources = compiled.sources.clone();
        let processing_time = compiled.processing_time;
        let tables: Vec<String> = compiled.tables.iter().map(|t| t.def.name.clone()).collect();
        let views = compiled.views.clone();
        let checkpoint = CheckpointSpec {
            store: CheckpointStore::open(checkpoints)?,
            interval: self.inner.options.checkpoint_interval,
            // A checkpoint is restored only into the plan that wrote it.
            fingerprint: format!("{def:?}\n{}", plan.join("\n")),
        };
        let upstream = sources
            .iter()
            .filter_map(|s| self.producer(&s.def.name))
            .collect();
        let limit = def.memory_limit.or(self.inner.options.view_memory_limit);
        let (table, late, query) = Self::spawn_query(
            &def.name,
            &mut Some(compiled),
            Some(checkpoint),
            output,
            limit,
        )?;
        Ok(Arc::new(ViewEntry {
            def,
            sources,
            tables,
            views,
            table,
            late,
            plan,
            upstream,
            query: Mutex::new(Some(query)),
            processing_time,
        }))
    }

    pub(super) fn start_view(&self, def: ViewDef, compiled: CompiledView) -> Result<()> {
        let entry = self.start_query(def.clone(), compiled, &self.view_dir(&def.name), None)?;
        self.state().views.insert(def.name, entry);
        Ok(())
    }

    /// Starts the query of a stream made `AS SELECT`; its checkpoints live with the stream.
    pub(super) fn start_producer(&self, def: ViewDef, compiled: CompiledView) -> Result<()> {
        let stream = self.stream(&def.name).ok_or_else(|| {
            Error::Internal(format!("stream {} vanished; this is a bug", def.name))
        })?;
        let dir = self.stream_dir(&def.name).join("query");
        let entry = self.start_query(def.clone(), compiled, &dir, Some(Arc::clone(&stream.log)))?;
        self.state().producers.insert(def.name, entry);
        Ok(())
    }
}
