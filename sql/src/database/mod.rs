//! A Weir database: a data directory holding the catalog, the streams' logs, and the running
//! continuous queries of its materialized views.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use weir_engine::checkpoint::CheckpointStore;
use weir_engine::log::StreamLog;
use weir_engine::result_table::ResultTable;
use weir_engine::runtime::{
    CheckpointSpec, QuerySpec, RunningQuery, SourceSpec, late_events_schema,
};

use crate::catalog::registry::State;
use crate::catalog::{
    CatalogFile, Connector, ConnectorFactory, ObjectKind, Registry, StreamDef, StreamEntry,
    TableDef, TableEntry, ViewDef, ViewEntry,
};
use crate::plan::{CompiledView, compile_view};
use crate::{Error, Result};

mod retention;

/// The relations that own a directory of rows.
#[derive(Debug, Clone, Copy)]
enum Relation {
    Stream,
    Table,
}

/// How a database runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often each materialized view checkpoints its query (when it made progress).
    pub checkpoint_interval: Duration,
    /// Starts the connectors of streams over external Kafka topics; without it such streams
    /// are refused (0A000).
    pub connectors: Option<Arc<dyn ConnectorFactory>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            checkpoint_interval: Duration::from_secs(1),
            connectors: None,
        }
    }
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: Options,
    catalog: CatalogFile,
    registry: Registry,
    /// Held (locked) for the database's lifetime so that two processes never share a data dir.
    _lock: File,
}

/// A handle to an open database; clones share it.
#[derive(Debug, Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

fn io(context: String, source: std::io::Error) -> Error {
    Error::Engine(weir_engine::Error::Io { context, source })
}

/// Whether `name` can be a stream or view name (it becomes a directory name).
fn check_name(name: &str) -> Result<()> {
    if name.starts_with("weir_") {
        return Err(Error::WrongObject {
            sqlstate: "42939",
            message: format!(
                "\"{name}\": names starting with weir_ are reserved for system relations"
            ),
        });
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::WrongObject {
            sqlstate: "42602",
            message: format!(
                "invalid name \"{name}\": names of streams and views are up to 63 letters, digits and underscores"
            ),
        })
    }
}

impl Database {
    /// Opens (or creates) the database in `dir` with default [`Options`].
    pub async fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, Options::default()).await
    }

    /// Opens (or creates) the database in `dir`: recovers every stream's log and restarts every
    /// view's continuous query from its last checkpoint (or, without one, from the start of its
    /// sources).
    pub async fn open_with(dir: &Path, options: Options) -> Result<Self> {
        fs::create_dir_all(dir.join("tables"))
            .map_err(|e| io(format!("creating data directory {}", dir.display()), e))?;
        fs::create_dir_all(dir.join("streams"))
            .map_err(|e| io(format!("creating data directory {}", dir.display()), e))?;
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path)
            .map_err(|e| io(format!("creating {}", lock_path.display()), e))?;
        lock.try_lock().map_err(|_| {
            Error::Engine(weir_engine::Error::InvalidArgument(format!(
                "data directory {} is in use by another Weir process",
                dir.display()
            )))
        })?;
        let catalog = CatalogFile::new(dir);
        let data = catalog.load()?;
        let db = Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                options,
                catalog,
                registry: Registry::default(),
                _lock: lock,
            }),
        };
        {
            let mut state = db.state();
            for def in &data.streams {
                let entry = db.open_stream(def.clone())?;
                state.streams.insert(def.name.clone(), entry);
            }
            for def in &data.tables {
                let entry = TableEntry::open(&db.table_dir(&def.name), def.clone())?;
                state.tables.insert(def.name.clone(), Arc::new(entry));
            }
            state.data = data.clone();
        }
        for def in data.streams.iter().filter(|d| d.query.is_some()) {
            let view = producer_def(def);
            let compiled = compile_view(db.registry(), &view).await.map_err(|e| {
                Error::Internal(format!(
                    "the query of stream {} no longer compiles: {e}",
                    def.name
                ))
            })?;
            db.start_producer(view, compiled)?;
        }
        for def in &data.streams {
            db.start_connector(def)?;
        }
        for def in data.views {
            let compiled = compile_view(db.registry(), &def).await;
            match compiled {
                Ok(compiled) => db.start_view(def, compiled)?,
                Err(e) => {
                    tracing::error!(view = %def.name, error = %e, "view does not compile after restart");
                    return Err(Error::Internal(format!(
                        "materialized view {} no longer compiles: {e}",
                        def.name
                    )));
                }
            }
        }
        let weak = Arc::downgrade(&db.inner);
        std::thread::Builder::new()
            .name("retention".into())
            .spawn(move || retention::run(&weak))
            .map_err(|e| io("starting the retention thread".into(), e))?;
        tracing::info!(dir = %dir.display(), "database open");
        Ok(db)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.registry.state()
    }

    /// The live objects, for table providers and the planner.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// What kind of object `name` is, if it is one.
    pub fn kind_of(&self, name: &str) -> Option<ObjectKind> {
        self.inner.registry.kind_of(name)
    }

    /// The connector factory this database was opened with, or the refusal of a stream over
    /// an external topic without one.
    pub fn connector_factory(&self) -> Result<Arc<dyn ConnectorFactory>> {
        self.inner.options.connectors.clone().ok_or_else(|| {
            Error::NotSupported(
                "streams over external Kafka topics need the connectors of the weir binary \
                 (weir serve or weir shell); this process was opened without them"
                    .into(),
            )
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn stream_dir(&self, name: &str) -> PathBuf {
        self.inner.dir.join("streams").join(name)
    }

    /// Where a materialized view keeps its checkpoints.
    fn view_dir(&self, name: &str) -> PathBuf {
        self.inner.dir.join("views").join(name)
    }

    /// Deletes a view's checkpoints (the view is gone, or a new view of that name starts).
    fn remove_view_dir(&self, name: &str) -> Result<()> {
        let dir = self.view_dir(name);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("removing {}", dir.display()), e)),
        }
    }

    fn table_dir(&self, name: &str) -> PathBuf {
        self.inner.dir.join("tables").join(name)
    }

    fn open_stream(&self, def: StreamDef) -> Result<Arc<StreamEntry>> {
        let schema = def.schema()?;
        let key = match &def.key {
            Some(k) => Some(def.column_index(k).ok_or_else(|| {
                Error::Internal(format!("key column {k} of stream {} is missing", def.name))
            })?),
            None => None,
        };
        let log = StreamLog::open(
            &self.stream_dir(&def.name),
            Arc::clone(&schema),
            def.partitions,
            key,
            def.log_config(),
        )?;
        Ok(Arc::new(StreamEntry {
            def,
            schema,
            log: Arc::new(log),
        }))
    }

    /// A stream by name.
    pub fn stream(&self, name: &str) -> Option<Arc<StreamEntry>> {
        self.inner.registry.stream(name)
    }

    /// A view by name.
    pub fn view(&self, name: &str) -> Option<Arc<ViewEntry>> {
        self.inner.registry.view(name)
    }

    /// A reference table by name.
    pub fn table(&self, name: &str) -> Option<Arc<TableEntry>> {
        self.inner.registry.table(name)
    }

    /// All reference tables, by name.
    pub fn tables(&self) -> Vec<Arc<TableEntry>> {
        self.inner.registry.tables()
    }

    /// Whether a stream, view or table is called `name`.
    pub fn exists(&self, name: &str) -> bool {
        self.inner.registry.exists(name)
    }

    /// All streams, by name.
    pub fn streams(&self) -> Vec<Arc<StreamEntry>> {
        self.inner.registry.streams()
    }

    /// All views, by name.
    pub fn views(&self) -> Vec<Arc<ViewEntry>> {
        self.inner.registry.views()
    }

    /// Every continuous query: the views', then those of streams made `AS SELECT`.
    pub fn queries(&self) -> Vec<Arc<ViewEntry>> {
        self.inner.registry.queries()
    }

    /// The query that writes stream `name`, if it was made `AS SELECT`.
    pub fn producer(&self, name: &str) -> Option<Arc<ViewEntry>> {
        self.inner.registry.producer(name)
    }

    /// Creates a stream: its log directories first, then the catalog entry, so that a crash in
    /// between leaves at most an orphan directory (removed by the next CREATE of that name).
    pub fn create_stream(&self, def: StreamDef) -> Result<()> {
        check_name(&def.name)?;
        let mut state = self.state();
        state.check_free(&def.name)?;
        let dir = self.stream_dir(&def.name);
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .map_err(|e| io(format!("removing orphan {}", dir.display()), e))?;
        }
        let entry = self.open_stream(def.clone())?;
        let mut data = state.data.clone();
        data.streams.push(def.clone());
        if let Err(e) = self.inner.catalog.store(&data) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        state.data = data;
        state.streams.insert(def.name.clone(), entry);
        drop(state);
        tracing::info!(stream = %def.name, partitions = def.partitions, "stream created");
        if def.source.is_some() {
            if let Err(e) = self.start_connector(&def) {
                let _ = self.drop_stream(&def.name, false);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Starts the Kafka source or sink of stream `def`, if it has one.
    fn start_connector(&self, def: &StreamDef) -> Result<()> {
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

    /// The running Kafka sources and sinks, by stream name.
    pub fn connectors(&self) -> Vec<Arc<dyn Connector>> {
        self.inner.registry.connectors()
    }

    /// Drops the streams made `AS SELECT` from relation `name` (a `kind`), which `depends`
    /// picks out, when `cascade`; else their existence is an error.
    fn drop_streams_made_from(
        &self,
        kind: &str,
        name: &str,
        cascade: bool,
        depends: impl Fn(&ViewEntry) -> bool,
    ) -> Result<()> {
        let readers: Vec<String> = self
            .state()
            .producers
            .values()
            .filter(|p| p.def.name != name && depends(p))
            .map(|p| p.def.name.clone())
            .collect();
        let Some(first) = readers.first() else {
            return Ok(());
        };
        if !cascade {
            return Err(Error::WrongObject {
                sqlstate: "2BP01",
                message: format!(
                    "cannot drop {kind} {name} because stream {first} is made from it; \
                     use DROP ... {name} CASCADE to drop it too"
                ),
            });
        }
        for r in &readers {
            self.drop_stream(r, true)?;
        }
        Ok(())
    }

    /// Creates a stream that holds the results of `compiled` (`CREATE STREAM ... AS SELECT`)
    /// and starts the query.
    pub(crate) fn create_stream_as(&self, def: StreamDef, compiled: CompiledView) -> Result<()> {
        let view = producer_def(&def);
        self.create_stream(def)?;
        if let Err(e) = self.start_producer(view.clone(), compiled) {
            let _ = self.drop_stream(&view.name, false);
            return Err(e);
        }
        if let Some(def) = self.stream(&view.name).map(|s| s.def.clone()) {
            if let Err(e) = self.start_connector(&def) {
                let _ = self.drop_stream(&view.name, false);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drops a stream and its log; its views (and streams made from it `AS SELECT`) go too with
    /// `cascade`, else their existence is an error.
    pub fn drop_stream(&self, name: &str, cascade: bool) -> Result<()> {
        self.drop_streams_made_from("stream", name, cascade, |p| p.reads(name))?;
        // Refused before anything stops: a refused drop must leave the stream's own query and
        // connector running.
        dependent_views(&self.state(), Relation::Stream, name, cascade, |v| {
            v.reads(name)
        })?;
        // Stopped first, so that nothing writes the stream or reads it for delivery while it
        // goes; started again if the drop fails.
        let connector = self.state().connectors.remove(name);
        drop(connector);
        let producer = self.state().producers.remove(name);
        if let Some(p) = producer {
            p.stop();
        }
        let dropped = self.drop_relation(
            Relation::Stream,
            name,
            cascade,
            |v| v.reads(name),
            &self.stream_dir(name),
        );
        if dropped.is_err() {
            if let Some(def) = self.stream(name).map(|s| s.def.clone()) {
                if let Err(e) = self.start_connector(&def) {
                    tracing::error!(stream = name, error = %e, "connector did not restart");
                }
            }
        }
        dropped
    }

    /// Drops a stream or table and its directory, with the views that depend on it when
    /// `cascade` (else their existence is an error). The catalog changes first: if storing it
    /// fails, nothing has changed.
    fn drop_relation(
        &self,
        kind: Relation,
        name: &str,
        cascade: bool,
        depends: impl Fn(&ViewEntry) -> bool,
        dir: &Path,
    ) -> Result<()> {
        let mut state = self.state();
        let exists = match kind {
            Relation::Stream => state.streams.contains_key(name),
            Relation::Table => state.tables.contains_key(name),
        };
        if !exists {
            return Err(Error::UndefinedRelation(name.to_string()));
        }
        let dependents = dependent_views(&state, kind, name, cascade, &depends)?;
        let mut data = state.data.clone();
        match kind {
            Relation::Stream => data.streams.retain(|s| s.name != name),
            Relation::Table => data.tables.retain(|t| t.name != name),
        }
        data.views.retain(|v| !dependents.contains(&v.name));
        self.inner.catalog.store(&data)?;
        state.data = data;
        match kind {
            Relation::Stream => {
                state.streams.remove(name);
            }
            Relation::Table => {
                state.tables.remove(name);
            }
        }
        let stopped: Vec<_> = dependents
            .iter()
            .filter_map(|v| state.views.remove(v))
            .collect();
        drop(state);
        for view in stopped {
            view.stop();
            self.remove_view_dir(&view.def.name)?;
        }
        fs::remove_dir_all(dir).map_err(|e| io(format!("removing {}", dir.display()), e))?;
        Ok(())
    }

    /// Starts `compiled` as a running query named `name`: its result table, its late events
    /// and the query thread.
    fn spawn_query(
        name: &str,
        compiled: &mut Option<CompiledView>,
        checkpoint: Option<CheckpointSpec>,
        output: Option<Arc<StreamLog>>,
    ) -> Result<(Arc<ResultTable>, Arc<ResultTable>, RunningQuery)> {
        let compiled = compiled.take().ok_or_else(|| {
            Error::Internal("a compiled view started twice; this is a bug".into())
        })?;
        let schema = compiled.schema();
        let table = Arc::new(match &compiled.key {
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
                let (event_time, delay_ns) = match &s.def.watermark {
                    Some(w) => (s.def.column_index(&w.column), w.delay_ns),
                    None => (None, 0),
                };
                SourceSpec {
                    log: Arc::clone(&s.log),
                    event_time,
                    delay_ns,
                    idle_timeout: Duration::from_millis(s.def.idle_timeout_ms),
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
        let (table, _late, query) = Self::spawn_query(name, &mut Some(compiled), None, None)?;
        Ok((table, query))
    }

    /// Starts a query: a view's (results in its table), or with `output` a stream's. Its
    /// checkpoints live in `checkpoints`.
    fn start_query(
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
        let (table, late, query) =
            Self::spawn_query(&def.name, &mut Some(compiled), Some(checkpoint), output)?;
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
        }))
    }

    fn start_view(&self, def: ViewDef, compiled: CompiledView) -> Result<()> {
        let entry = self.start_query(def.clone(), compiled, &self.view_dir(&def.name), None)?;
        self.state().views.insert(def.name, entry);
        Ok(())
    }

    /// Starts the query of a stream made `AS SELECT`; its checkpoints live with the stream.
    fn start_producer(&self, def: ViewDef, compiled: CompiledView) -> Result<()> {
        let stream = self.stream(&def.name).ok_or_else(|| {
            Error::Internal(format!("stream {} vanished; this is a bug", def.name))
        })?;
        let dir = self.stream_dir(&def.name).join("query");
        let entry = self.start_query(def.clone(), compiled, &dir, Some(Arc::clone(&stream.log)))?;
        self.state().producers.insert(def.name, entry);
        Ok(())
    }

    /// Persists and starts a materialized view.
    pub(crate) fn create_view(&self, def: ViewDef, compiled: CompiledView) -> Result<()> {
        check_name(&def.name)?;
        {
            let mut state = self.state();
            state.check_free(&def.name)?;
            let mut data = state.data.clone();
            data.views.push(def.clone());
            self.inner.catalog.store(&data)?;
            state.data = data;
        }
        tracing::info!(view = %def.name, "materialized view created");
        // Checkpoints left by an earlier view of the same name are not this view's.
        self.remove_view_dir(&def.name)?;
        self.start_view(def, compiled)
    }

    /// Stops and forgets a materialized view; views that read it go too with `cascade`, else
    /// they are an error.
    pub fn drop_view(&self, name: &str, cascade: bool) -> Result<()> {
        if self.view(name).is_some() {
            self.drop_streams_made_from("materialized view", name, cascade, |p| {
                p.views.iter().any(|v| v == name)
            })?;
        }
        let mut state = self.state();
        if !state.views.contains_key(name) {
            return Err(Error::UndefinedRelation(name.to_string()));
        }
        let dependents: Vec<String> = state
            .views
            .values()
            .filter(|v| v.views.iter().any(|d| d == name))
            .map(|v| v.def.name.clone())
            .collect();
        if !dependents.is_empty() && !cascade {
            return Err(Error::WrongObject {
                sqlstate: "2BP01",
                message: format!(
                    "cannot drop materialized view {name} because materialized view {} depends on it; \
                     use DROP MATERIALIZED VIEW {name} CASCADE to drop them too",
                    dependents.join(", ")
                ),
            });
        }
        let mut gone = dependents;
        gone.push(name.to_string());
        let mut data = state.data.clone();
        data.views.retain(|v| !gone.contains(&v.name));
        self.inner.catalog.store(&data)?;
        state.data = data;
        let stopped: Vec<_> = gone.iter().filter_map(|v| state.views.remove(v)).collect();
        drop(state);
        for view in stopped {
            view.stop();
            self.remove_view_dir(&view.def.name)?;
        }
        Ok(())
    }

    /// Creates a reference table: its log first, then the catalog entry.
    pub fn create_table(&self, def: TableDef) -> Result<()> {
        check_name(&def.name)?;
        let mut state = self.state();
        state.check_free(&def.name)?;
        let dir = self.table_dir(&def.name);
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .map_err(|e| io(format!("removing orphan {}", dir.display()), e))?;
        }
        let entry = TableEntry::open(&dir, def.clone())?;
        let mut data = state.data.clone();
        data.tables.push(def.clone());
        if let Err(e) = self.inner.catalog.store(&data) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        state.data = data;
        state.tables.insert(def.name.clone(), Arc::new(entry));
        tracing::info!(table = %def.name, "table created");
        Ok(())
    }

    /// Drops a reference table; views that join it go too with `cascade`, else they are an error.
    pub fn drop_table(&self, name: &str, cascade: bool) -> Result<()> {
        self.drop_streams_made_from("table", name, cascade, |p| {
            p.tables.iter().any(|t| t == name)
        })?;
        self.drop_relation(
            Relation::Table,
            name,
            cascade,
            |v| v.tables.iter().any(|t| t == name),
            &self.table_dir(name),
        )
    }

    /// Stops every continuous query (also done when the last handle is dropped).
    pub fn shutdown(&self) {
        let connectors = std::mem::take(&mut self.state().connectors);
        drop(connectors);
        for v in self.queries() {
            v.stop();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut state = self.registry.state();
        let queries: Vec<_> = std::mem::take(&mut state.views)
            .into_values()
            .chain(std::mem::take(&mut state.producers).into_values())
            .collect();
        let connectors = std::mem::take(&mut state.connectors);
        drop(state);
        drop(connectors);
        for v in queries {
            v.stop();
        }
    }
}

/// The query of a stream made `AS SELECT`, as a view definition named as the stream.
fn producer_def(def: &StreamDef) -> ViewDef {
    ViewDef {
        name: def.name.clone(),
        query: def.query.clone().unwrap_or_default(),
        emit_on_update: false,
        allowed_lateness_ns: 0,
    }
}

/// The views that `depends` picks out, or the 2BP01 refusal to drop `name` while they exist
/// and `cascade` is not given.
fn dependent_views(
    state: &State,
    kind: Relation,
    name: &str,
    cascade: bool,
    depends: impl Fn(&ViewEntry) -> bool,
) -> Result<Vec<String>> {
    let dependents: Vec<String> = state
        .views
        .values()
        .filter(|v| depends(v))
        .map(|v| v.def.name.clone())
        .collect();
    if !dependents.is_empty() && !cascade {
        let word = match kind {
            Relation::Stream => "stream",
            Relation::Table => "table",
        };
        return Err(Error::WrongObject {
            sqlstate: "2BP01",
            message: format!(
                "cannot drop {word} {name} because materialized view {} depends on it; \
                 use DROP {} {name} CASCADE to drop the views too",
                dependents.join(", "),
                word.to_uppercase()
            ),
        });
    }
    Ok(dependents)
}
