//! The database layer: a data directory holding the catalog, the streams' logs, and the
//! running continuous queries of its materialized views. This file opens it (recovering logs
//! and restarting queries from their checkpoints); `ddl.rs` creates and drops objects,
//! `queries.rs` runs queries and connectors, `retention.rs` trims logs.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use weir_engine::log::{Decisions, StreamLog};

use crate::catalog::registry::State;
use crate::catalog::{
    CatalogFile, Connector, ConnectorFactory, ObjectKind, Registry, StreamDef, StreamEntry,
    TableEntry, ViewDef, ViewEntry,
};
use crate::plan::compile_view;
use crate::{Error, Result};

mod ddl;
mod named;
mod queries;
mod retention;

/// How a database runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often each materialized view checkpoints its query (when it made progress).
    pub checkpoint_interval: Duration,
    /// Starts the connectors of streams over external Kafka topics; without it such streams
    /// are refused (0A000).
    pub connectors: Option<Arc<dyn ConnectorFactory>>,
    /// The most memory a view's state may hold unless the view sets its own
    /// `WITH (memory_limit = ...)`, in bytes; past it the view stops with SQLSTATE 53200.
    pub view_memory_limit: Option<u64>,
}

/// The default [`Options::view_memory_limit`]: 4 GiB.
pub const DEFAULT_VIEW_MEMORY_LIMIT: u64 = 4 << 30;

impl Default for Options {
    fn default() -> Self {
        Self {
            checkpoint_interval: Duration::from_secs(1),
            connectors: None,
            view_memory_limit: Some(DEFAULT_VIEW_MEMORY_LIMIT),
        }
    }
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: Options,
    catalog: CatalogFile,
    registry: Registry,
    /// Decisions of transactions over several streams (Kafka transactions over several
    /// topics): streams commit the ones a crash left open.
    decisions: Decisions,
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
        let decisions = Decisions::open(&dir.join("transactions.log"))?;
        let db = Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                options,
                catalog,
                registry: Registry::default(),
                decisions,
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

    /// The decisions of transactions over several streams (see [`Decisions`]).
    pub fn decisions(&self) -> &Decisions {
        &self.inner.decisions
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
        let log = StreamLog::open_deciding(
            &self.stream_dir(&def.name),
            Arc::clone(&schema),
            def.partitions,
            key,
            def.log_config(),
            &self.inner.decisions.committed(),
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

    /// The running Kafka sources and sinks, by stream name.
    pub fn connectors(&self) -> Vec<Arc<dyn Connector>> {
        self.inner.registry.connectors()
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
        state_ttl_ns: 0,
        memory_limit: None,
    }
}
