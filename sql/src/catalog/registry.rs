//! The registry of live objects: streams with their logs, views with their running queries,
//! reference tables and connectors. Table providers and the planner read it; only the
//! database changes it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::arrow::datatypes::SchemaRef;
use weir_engine::log::StreamLog;
use weir_engine::result_table::ResultTable;
use weir_engine::runtime::RunningQuery;

use super::connector::Connector;
use super::table::TableEntry;
use super::{CatalogData, FunctionDef, PlainViewDef, StreamDef, ViewDef};
use crate::{Error, Result};

/// The catalog every object lives in, as SQL names it (`weir.public.clicks`).
pub const CATALOG: &str = "weir";
/// The schema every object lives in.
pub const SCHEMA: &str = "public";

/// A stream and its log.
#[derive(Debug)]
pub struct StreamEntry {
    /// The catalog definition.
    pub def: StreamDef,
    /// The row schema.
    pub schema: SchemaRef,
    /// The partitioned log holding the rows.
    pub log: Arc<StreamLog>,
}

/// A materialized view, its results and its running query.
#[derive(Debug)]
pub struct ViewEntry {
    /// The catalog definition.
    pub def: ViewDef,
    /// The streams the view reads, in the order of its query's sources.
    pub sources: Vec<Arc<StreamEntry>>,
    /// The tables the view looks rows up in.
    pub tables: Vec<String>,
    /// The views whose queries this view includes.
    pub views: Vec<String>,
    /// The view's rows.
    pub table: Arc<ResultTable>,
    /// Events that arrived after their window had closed.
    pub late: Arc<ResultTable>,
    /// The operator plan, one line per step, sink first.
    pub plan: Vec<String>,
    /// The queries that write the streams this one reads (those made `AS SELECT`): a read
    /// waits for them to have written their results first.
    pub upstream: Vec<Arc<ViewEntry>>,
    /// The running query; `None` once stopped.
    pub(crate) query: Mutex<Option<RunningQuery>>,
    /// The query stamps rows with `PROCTIME()`: its watermark is the processing-time clock.
    pub processing_time: bool,
}

impl ViewEntry {
    /// The committed offsets of every source, in the order the view's progress reports them.
    pub fn source_offsets(&self) -> Vec<u64> {
        self.sources
            .iter()
            .flat_map(|s| s.log.committed_offsets())
            .collect()
    }

    /// Whether the view reads stream `name`.
    pub fn reads(&self, name: &str) -> bool {
        self.sources.iter().any(|s| s.def.name == name)
    }

    /// Stops the view's query (a no-op once stopped).
    pub(crate) fn stop(&self) {
        if let Some(mut q) = self.query.lock().unwrap_or_else(|e| e.into_inner()).take() {
            q.stop();
        }
    }
}

/// The kinds of objects that share one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `CREATE STREAM`.
    Stream,
    /// `CREATE MATERIALIZED VIEW`.
    MaterializedView,
    /// `CREATE TABLE`.
    Table,
    /// `CREATE VIEW`: a named query.
    PlainView,
}

/// Everything the registry holds, behind one lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The catalog as last stored.
    pub(crate) data: CatalogData,
    pub(crate) streams: BTreeMap<String, Arc<StreamEntry>>,
    pub(crate) views: BTreeMap<String, Arc<ViewEntry>>,
    pub(crate) tables: BTreeMap<String, Arc<TableEntry>>,
    /// The queries of `CREATE STREAM ... AS SELECT`, by the stream they write.
    pub(crate) producers: BTreeMap<String, Arc<ViewEntry>>,
    /// External sources and sinks, by their stream.
    pub(crate) connectors: BTreeMap<String, Arc<dyn Connector>>,
}

impl State {
    /// What kind of object `name` is, if any: the one name check every CREATE makes.
    pub(crate) fn kind_of(&self, name: &str) -> Option<ObjectKind> {
        if self.streams.contains_key(name) {
            Some(ObjectKind::Stream)
        } else if self.views.contains_key(name) {
            Some(ObjectKind::MaterializedView)
        } else if self.tables.contains_key(name) {
            Some(ObjectKind::Table)
        } else if self.data.plain_views.iter().any(|v| v.name == name) {
            Some(ObjectKind::PlainView)
        } else {
            None
        }
    }

    /// Refuses `name` when an object of any kind has it (42P07).
    pub(crate) fn check_free(&self, name: &str) -> Result<()> {
        match self.kind_of(name) {
            Some(_) => Err(Error::DuplicateRelation(name.to_string())),
            None => Ok(()),
        }
    }
}

/// A shared handle to the live objects of a database; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    state: Arc<Mutex<State>>,
    sessions: Arc<super::sessions::SessionRegistry>,
}

impl Registry {
    /// The sessions open on the database.
    pub fn sessions(&self) -> &super::sessions::SessionRegistry {
        &self.sessions
    }

    /// The state, locked. Only the database changes it.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stream by name.
    pub fn stream(&self, name: &str) -> Option<Arc<StreamEntry>> {
        self.state().streams.get(name).cloned()
    }

    /// A view by name.
    pub fn view(&self, name: &str) -> Option<Arc<ViewEntry>> {
        self.state().views.get(name).cloned()
    }

    /// A reference table by name.
    pub fn table(&self, name: &str) -> Option<Arc<TableEntry>> {
        self.state().tables.get(name).cloned()
    }

    /// What kind of object `name` is, if it is one.
    pub fn kind_of(&self, name: &str) -> Option<ObjectKind> {
        self.state().kind_of(name)
    }

    /// Whether a stream, view or table is called `name`.
    pub fn exists(&self, name: &str) -> bool {
        self.kind_of(name).is_some()
    }

    /// A plain view (named query) by name.
    pub fn plain_view(&self, name: &str) -> Option<PlainViewDef> {
        self.state()
            .data
            .plain_views
            .iter()
            .find(|v| v.name == name)
            .cloned()
    }

    /// The functions written in SQL, in creation order.
    pub fn functions(&self) -> Vec<FunctionDef> {
        self.state().data.functions.clone()
    }

    /// All plain views, in creation order.
    pub fn plain_views(&self) -> Vec<PlainViewDef> {
        self.state().data.plain_views.clone()
    }

    /// All streams, by name.
    pub fn streams(&self) -> Vec<Arc<StreamEntry>> {
        self.state().streams.values().cloned().collect()
    }

    /// All views, by name.
    pub fn views(&self) -> Vec<Arc<ViewEntry>> {
        self.state().views.values().cloned().collect()
    }

    /// All reference tables, by name.
    pub fn tables(&self) -> Vec<Arc<TableEntry>> {
        self.state().tables.values().cloned().collect()
    }

    /// Every continuous query: the views', then those of streams made `AS SELECT` (named as
    /// their stream).
    pub fn queries(&self) -> Vec<Arc<ViewEntry>> {
        let state = self.state();
        state
            .views
            .values()
            .chain(state.producers.values())
            .cloned()
            .collect()
    }

    /// The query that writes stream `name`, if it was made `AS SELECT`.
    pub fn producer(&self, name: &str) -> Option<Arc<ViewEntry>> {
        self.state().producers.get(name).cloned()
    }

    /// The running external sources and sinks, by stream name.
    pub fn connectors(&self) -> Vec<Arc<dyn Connector>> {
        self.state().connectors.values().cloned().collect()
    }
}
