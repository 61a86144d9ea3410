//! Plain views (CREATE VIEW: named queries, expanded where they are read) and functions written
//! in SQL, kept in the catalog. What uses one is found by the names in the definitions of
//! the views and functions: the relations they read, the functions they call.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, ObjectName, visit_expressions, visit_relations};

use super::{Database, check_name};
use crate::catalog::{FunctionDef, PlainViewDef};
use crate::syntax::{WeirStatement, normalize, parse};
use crate::{Error, Result};

/// How a definition can use a named object.
#[derive(Debug, Clone, Copy)]
enum Use {
    /// Reads it as a relation (a stream, view or table).
    Reads,
    /// Calls it as a function.
    Calls,
}

/// Whether the SQL `query` uses `name` in the way `how` says (names compare by their last
/// part, folded as Weir folds them).
fn uses(query: &str, how: Use, name: &str) -> bool {
    let Ok(stmts) = parse(query) else {
        return false;
    };
    let last = |n: &ObjectName| n.0.last().and_then(|p| p.as_ident()).map(normalize);
    stmts.iter().any(|stmt| {
        let (WeirStatement::Sql(s) | WeirStatement::Emit(s, _)) = stmt else {
            return false;
        };
        let found = match how {
            Use::Reads => visit_relations(s.as_ref(), |n: &ObjectName| {
                if last(n).as_deref() == Some(name) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }),
            Use::Calls => visit_expressions(s.as_ref(), |e: &Expr| match e {
                Expr::Function(f) if last(&f.name).as_deref() == Some(name) => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }),
        };
        found.is_break()
    })
}

/// What uses an object about to be dropped, by kind.
#[derive(Debug, Default)]
struct Dependents {
    functions: Vec<String>,
    plain: Vec<String>,
    materialized: Vec<String>,
}

impl Database {
    /// The functions, plain views and materialized views (other than `name` itself) whose
    /// definitions use `name` as `how` says.
    fn dependents(&self, name: &str, how: Use) -> Dependents {
        let state = self.state();
        let data = &state.data;
        Dependents {
            functions: data
                .functions
                .iter()
                .filter(|f| f.name != name && uses(&format!("SELECT {}", f.body), how, name))
                .map(|f| f.name.clone())
                .collect(),
            plain: data
                .plain_views
                .iter()
                .filter(|v| v.name != name && uses(&v.query, how, name))
                .map(|v| v.name.clone())
                .collect(),
            materialized: data
                .views
                .iter()
                .filter(|v| v.name != name && uses(&v.query, how, name))
                .map(|v| v.name.clone())
                .collect(),
        }
    }

    /// Refuses to drop `what` (`"view x"`, for the message, where `label` names the kind of
    /// the dependents if it is one; `drop` is its statement) while `deps` exist (2BP01), or
    /// with `cascade` drops them first.
    fn drop_dependents(
        &self,
        what: &str,
        label: &str,
        drop: &str,
        deps: Dependents,
        cascade: bool,
    ) -> Result<()> {
        let all: Vec<&String> = deps
            .functions
            .iter()
            .chain(&deps.plain)
            .chain(&deps.materialized)
            .collect();
        if all.is_empty() {
            return Ok(());
        }
        if !cascade {
            let names: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
            return Err(Error::WrongObject {
                sqlstate: "2BP01",
                message: format!(
                    "cannot drop {what} because {label}{} depends on it; use {drop} CASCADE to \
                     drop them too",
                    names.join(", ")
                ),
            });
        }
        // One may already be gone with another's cascade.
        for f in &deps.functions {
            if self.state().data.functions.iter().any(|d| &d.name == f) {
                self.drop_function(f, true)?;
            }
        }
        for view in &deps.plain {
            if self.registry().plain_view(view).is_some() {
                self.drop_plain_view(view, true)?;
            }
        }
        for view in &deps.materialized {
            if self.view(view).is_some() {
                self.drop_view(view, true)?;
            }
        }
        Ok(())
    }

    /// The plain views whose definitions read relation `name` (a stream, a materialized view or
    /// a table about to be dropped): an error (2BP01) without `cascade`, else dropped first.
    /// (Materialized views that read it are the caller's to check.)
    pub(crate) fn drop_plain_views_reading(
        &self,
        kind: &str,
        name: &str,
        cascade: bool,
    ) -> Result<()> {
        let plain = Dependents {
            plain: self.dependents(name, Use::Reads).plain,
            ..Dependents::default()
        };
        let drop = format!("DROP {} {name}", kind.to_uppercase());
        self.drop_dependents(&format!("{kind} {name}"), "view ", &drop, plain, cascade)
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
        let deps = self.dependents(name, Use::Calls);
        self.drop_dependents(
            &format!("function {name}"),
            "",
            &format!("DROP FUNCTION {name}"),
            deps,
            cascade,
        )?;
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
        if self.registry().plain_view(name).is_none() {
            return Err(Error::UndefinedRelation(name.to_string()));
        }
        let deps = self.dependents(name, Use::Reads);
        self.drop_dependents(
            &format!("view {name}"),
            "",
            &format!("DROP VIEW {name}"),
            deps,
            cascade,
        )?;
        let mut state = self.state();
        let mut data = state.data.clone();
        data.plain_views.retain(|v| v.name != name);
        self.inner.catalog.store(&data)?;
        state.data = data;
        Ok(())
    }
}
