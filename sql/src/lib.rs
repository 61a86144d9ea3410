//! Weir's SQL layer: parsing, the catalog, planning streaming SQL into engine pipelines, and the
//! [`Session`] API that the Postgres server and the shell use.

pub mod catalog;
pub mod connectors;
pub mod copy;
pub mod database;
pub mod error;
pub mod functions;
pub mod parser;
mod pg_compat;
pub mod planner;
pub mod ref_table;
pub mod session;
pub mod settings;
pub mod subscribe;
pub mod tables;
pub mod topics;

pub use database::{Database, Options};
pub use error::{Error, Result};
pub use session::{Description, Output, Session};

/// Re-exported so that front ends use the same Arrow and DataFusion as the engine.
pub use datafusion;
