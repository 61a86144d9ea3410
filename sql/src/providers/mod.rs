//! The providers layer: Weir's objects as DataFusion tables and table functions (streams,
//! windows, views, reference tables, system relations, `pg_catalog`), and the context that
//! plans statements over them. Providers read the catalog's registry, never the database.

pub mod checkpoints;
pub mod context;
pub(crate) mod functions;
pub mod operators;
pub mod pg_catalog;
pub mod sessions;
pub mod stream;
pub mod system;
pub mod table;
pub mod versions;
pub mod view;
pub mod watermarks;
pub mod why;
pub mod window;

pub use checkpoints::CHECKPOINTS;
pub(crate) use context::{WeirContext, new_context};
pub use operators::OPERATORS;
pub use sessions::SESSIONS;
pub use stream::StreamTable;
pub use system::{CONNECTORS, LATE_EVENTS, LateEventsTable, VIEW_PROGRESS, ViewProgressTable};
pub use table::RefTable;
pub use versions::{VERSIONS, VersionedTable, VersionsFunction};
pub use view::ViewTable;
pub(crate) use view::{VIEW_READ_WAIT, provider_as};
pub use watermarks::WATERMARKS;
pub use why::WHY;
pub use window::{WindowFunction, WindowInput, WindowSpec, WindowTable};
