//! The syntax layer: Weir's statements as an AST, the parser (standard SQL plus the streaming
//! extensions and Flink's window syntax), client-compatibility rewrites, and the one
//! classification of statements that execution, Describe and the shell share.

pub mod classify;
pub mod column_names;
pub mod compat;
mod flink;
pub mod parser;

pub use classify::{StatementKind, classify, classify_text, command_tag};
pub use flink::VERSIONS;
pub use parser::{
    CreateStream, EmitMode, StreamColumn, SubscribeOutput, SubscribeTarget, WeirStatement,
    normalize, object_name, parse, window_plain_views,
};
