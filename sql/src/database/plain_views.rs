//! CREATE VIEW and DROP VIEW: named queries, kept in the catalog and expanded where they are
//! read. What reads a plain view is found by the relation names in its definition.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{ObjectName, visit_relations};

use super::{Database, check_name};
use crate::catalog::PlainViewDef;
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

impl Database {
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
