//! Weir's SQL layer: the catalog, parsing, planning streaming SQL into engine pipelines, and the
//! [`Session`] API that the Postgres server and the shell use.
//!
//! Its modules are layers, each importing only those below it:
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | catalog | [`catalog`] | definitions, their file, the registry of live objects, the connector interface |
//! | syntax | [`syntax`], [`copy`] | the AST, the parser, client-compatibility rewrites, the statement classification, COPY data |
//! | providers | [`providers`] | DataFusion tables and table functions over the registry, the planning context |
//! | plan | [`plan`] | compiling a query into an engine dataflow: analysis and lowering |
//! | database | [`database`] | open, recovery, the lifecycle of queries and connectors, retention |
//! | handler | `handler`, [`subscribe`], [`output`] | one file per statement family; subscriptions and cursors; what statements return |
//! | session | [`session`] | parse, classify, dispatch |
//!
//! Leaves that any layer may use: [`error`], [`time`], [`settings`], [`functions`],
//! [`pg_text`].

pub mod catalog;
pub mod copy;
pub mod copy_pipe;
pub mod database;
pub mod error;
pub mod functions;
mod handler;
pub mod metrics;
pub mod output;
pub mod pg_text;
pub mod plan;
pub mod providers;
pub mod session;
pub mod settings;
pub mod subscribe;
pub mod syntax;
pub mod time;

pub use copy::CopyChunk;
pub use database::{DEFAULT_VIEW_MEMORY_LIMIT, Database, Options};
pub use error::{Error, Result};
pub use output::{Description, Notice, Output};
pub use session::Session;
/// The parser, under its former path.
pub use syntax::parser;

/// Re-exported so that front ends use the same Arrow and DataFusion as the engine.
pub use datafusion;
