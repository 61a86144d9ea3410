//! Plain views (CREATE VIEW: named queries, expanded where they are read) and functions written
//! in SQL, kept in the catalog. What uses one is found by the names in the definitions of
//! the views: the relations they read, the functions they call.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, ObjectName, visit_expressions, visit_relations};

use super::{Database, check_name};
use crate::catalog::{FunctionDef, PlainViewDef};
use crate::syntax::{WeirStatement, normalize, parse};
use crate::{Error, Result};

/// The relations a query's text names (streams, views, tables), by their last name part.
pub(crate) fn relations_named(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(stmts) = parse(query) {
        for stmt in stmts {
            if let WeirStatement::Sql(s) | WeirStatement::Emit(s, _) = stmt {
                let _ = visit_relations(s.as_ref(), |name: &ObjectName| {
                    if let Some(ident) = name.0.last().and_then(|p| p.as_ident()) {
                        names.push(normalize(ident));
                    }
                    ControlFlow::<()>::Continue(())
                });
            }
        }
    }
    names
}

/// The functions a query's text calls, by their last name part.
fn functions_called(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(stmts) = parse(query) {
        for stmt in stmts {
            if let WeirStatement::Sql(s) | WeirStatement::Emit(s, _) = stmt {
                let _ = visit_expressions(s.as_ref(), |e: &Expr| {
                    if let Expr::Function(f) = e {
                        if let Some(ident) = f.name.0.last().and_then(|p| p.as_ident()) {
                            names.push(normalize(ident));
                        }
                    }
                    ControlFlow::<()>::Continue(())
                });
            }
        }
    }
    names
}

impl Database {
    /// The plain views whose definitions read relation `name` (a stream, a materialized view or
    /// a table about to be dropped): an error (2BP01) without `cascade`, else dropped first.
    pub(crate) fn drop_plain_views_reading(
        &self,
        kind: &str,
        name: &str,
        cascade: bool,
    ) -> Result<()> {
        let readers: Vec<String> = self
            .state()
            .data
            .plain_views
            .iter()
            .filter(|v| relations_named(&v.query).iter().any(|r| r == name))
            .map(|v| v.name.clone())
            .collect();
        if readers.is_empty() {
            return Ok(());
        }
        if !cascade {
            return Err(Error::WrongObject {
                sqlstate: "2BP01",
                message: format!(
                    "cannot drop {kind} {name} because view {} depends on it; use DROP {} {name} \
                     CASCADE to drop them too",
                    readers.join(", "),
                    kind.to_uppercase()
                ),
            });
        }
        for view in &readers {
            if self
                .state()
                .data
                .plain_views
                .iter()
                .any(|v| &v.name == view)
            {
                self.drop_plain_view(view, true)?;
            }
        }
        Ok(())
    }

    /// Persists a function written in SQL (planned by the caller).
    pub(crate) fn create_function(&self, def: FunctionDef) -> Result<()> {
        check_name(&def.name)?;
        let mut state = self.state();
        if state.data.functions.iter().any(|f| f.name == def.name) {
            return Err(Error::WrongObject {
                sqlstate: "42723",
                message: format!("function \"{}\" already exists", def.name),
            });
        }
        let mut data = state.data.clone();
        data.functions.push(def.clone());
        self.inner.catalog.store(&data)?;
        state.data = data;
        tracing::info!(function = %def.name, "function created");
        Ok(())
    }

    /// Forgets a function. Views (plain or materialized) and functions that call it are an
    /// error (2BP01), or with `cascade` are dropped too.
    pub fn drop_function(&self, name: &str, cascade: bool) -> Result<()> {
        let (plain, materialized, functions) = {
            let state = self.state();
            let calls = |query: &str| functions_called(query).iter().any(|f| f == name);
            let plain: Vec<String> = state
                .data
                .plain_views
                .iter()
                .filter(|v| calls(&v.query))
                .map(|v| v.name.clone())
                .collect();
            let materialized: Vec<String> = state
                .data
                .views
                .iter()
                .filter(|v| calls(&v.query))
                .map(|v| v.name.clone())
                .collect();
            let functions: Vec<String> = state
                .data
                .functions
                .iter()
                .filter(|f| f.name != name && calls(&format!("SELECT {}", f.body)))
                .map(|f| f.name.clone())
                .collect();
            (plain, materialized, functions)
        };
        let all: Vec<String> = plain
            .iter()
            .chain(&materialized)
            .chain(&functions)
            .cloned()
            .collect();
        if !cascade && !all.is_empty() {
            return Err(Error::WrongObject {
                sqlstate: "2BP01",
                message: format!(
                    "cannot drop function {name} because {} depends on it; use DROP FUNCTION \
                     {name} CASCADE to drop them too",
                    all.join(", ")
                ),
            });
        }
        for f in &functions {
            if self.state().data.functions.iter().any(|d| &d.name == f) {
                self.drop_function(f, true)?;
            }
        }
        for view in &plain {
            if self
                .state()
                .data
                .plain_views
                .iter()
                .any(|v| &v.name == view)
            {
                self.drop_plain_view(view, true)?;
            }
        }
        for view in &materialized {
            if self.view(view).is_some() {
                self.drop_view(view, true)?;
            }
        }
        let mut state = self.state();
        let mut data = state.data.clone();
        data.functions.retain(|f| f.name != name);
        self.inner.catalog.store(&data)?;
        state.data = data;
        Ok(())
    }

    /// Persists a plain view (its query already planned by the caller).
    pub(crate) fn create_plain_view(&self, def: PlainViewDef) -> Result<()> {
        check_name(&def.name)?;
        let mut state = self.state();
        state.check_free(&def.name)?;
        let mut data = state.data.clone();
        data.plain_views.push(def.clone());
        self.inner.catalog.store(&data)?;
        state.data = data;
        tracing::info!(view = %def.name, "view created");
        Ok(())
    }

    /// Forgets a plain view. The views (plain or materialized) whose definitions read it are an
    /// error (2BP01), or with `cascade` are dropped too.
    pub fn drop_plain_view(&self, name: &str, cascade: bool) -> Result<()> {
        let (plain, materialized) = {
            let state = self.state();
            if !state.data.plain_views.iter().any(|v| v.name == name) {
                return Err(Error::UndefinedRelation(name.to_string()));
            }
            let reads = |query: &str| relations_named(query).iter().any(|r| r == name);
            let plain: Vec<String> = state
                .data
                .plain_views
                .iter()
                .filter(|v| v.name != name && reads(&v.query))
                .map(|v| v.name.clone())
                .collect();
            let materialized: Vec<String> = state
                .data
                .views
                .iter()
                .filter(|v| reads(&v.query))
                .map(|v| v.name.clone())
                .collect();
            (plain, materialized)
        };
        if !cascade && !(plain.is_empty() && materialized.is_empty()) {
            let all: Vec<String> = plain.iter().chain(&materialized).cloned().collect();
            return Err(Error::WrongObject {
                sqlstate: "2BP01",
                message: format!(
                    "cannot drop view {name} because {} depends on it; use DROP VIEW {name} \
                     CASCADE to drop them too",
                    all.join(", ")
                ),
            });
        }
        for view in &plain {
            if self
                .state()
                .data
                .plain_views
                .iter()
                .any(|v| &v.name == view)
            {
                self.drop_plain_view(view, true)?;
            }
        }
        for view in &materialized {
            if self.view(view).is_some() {
                self.drop_view(view, true)?;
            }
        }
        let mut state = self.state();
        let mut data = state.data.clone();
        data.plain_views.retain(|v| v.name != name);
        self.inner.catalog.store(&data)?;
        state.data = data;
        Ok(())
    }
}
