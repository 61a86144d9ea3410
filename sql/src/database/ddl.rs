//! Creating and dropping streams, views and tables: the catalog file and the registry change
//! together, directories and queries follow, and a refused drop leaves everything running.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;

use super::{Database, check_name, io, producer_def};
use crate::catalog::registry::State;
use crate::catalog::{StreamDef, TableDef, TableEntry, ViewDef, ViewEntry};
use crate::plan::CompiledView;
use crate::{Error, Result};

/// The relations that own a directory of rows.
#[derive(Debug, Clone, Copy)]
enum Relation {
    Stream,
    Table,
}

impl Database {
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

    /// Drops a stream and its log; its views (and streams made from it `AS SELECT`) go too with
    /// `cascade`, else their existence is an error.
    pub fn drop_stream(&self, name: &str, cascade: bool) -> Result<()> {
        self.drop_plain_views_reading("stream", name, cascade)?;
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
            self.drop_plain_views_reading("materialized view", name, cascade)?;
        }
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

    /// Creates a reference table with `rows` (a file's, or none): its log first, then the
    /// catalog entry; rows the table refuses leave nothing behind.
    pub fn create_table(&self, def: TableDef, rows: Vec<RecordBatch>) -> Result<()> {
        check_name(&def.name)?;
        let mut state = self.state();
        state.check_free(&def.name)?;
        let dir = self.table_dir(&def.name);
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .map_err(|e| io(format!("removing orphan {}", dir.display()), e))?;
        }
        let entry = TableEntry::open(&dir, def.clone())?;
        let loaded = match rows.first() {
            Some(first) => concat_batches(&first.schema(), &rows)
                .map_err(Error::from)
                .and_then(|rows| {
                    // The file's columns as the table declares them (NOT NULL included).
                    RecordBatch::try_new(Arc::clone(&entry.schema), rows.columns().to_vec())
                        .map_err(|e| Error::WrongObject {
                            sqlstate: "23502",
                            message: format!("table {}: {e}", def.name),
                        })
                })
                .and_then(|rows| entry.load(rows)),
            None => Ok(0),
        };
        if let Err(e) = loaded {
            drop(entry);
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
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
        self.drop_plain_views_reading("table", name, cascade)?;
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
