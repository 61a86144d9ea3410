//! Weir's engine: the durable partitioned log, streaming operators, watermarks and the runtime that drives them.
//!
//! The engine knows no SQL. The SQL layer (`weir-sql`) plans queries into [`pipeline::Pipeline`]s of
//! [`operator::Operator`]s and hands them to [`runtime`] together with the [`log`] they read.

pub mod checkpoint;
pub mod compact;
pub mod dataflow;
pub mod error;
pub mod log;
pub mod operator;
pub mod pipeline;
pub mod result_table;
pub mod runtime;
pub mod state_store;
pub mod stats;
pub mod watermark;

pub use error::{Error, Result};
