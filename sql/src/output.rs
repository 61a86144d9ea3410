//! What a statement returns: rows, a command tag, or the start of a COPY.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;

use crate::Result;
use crate::copy::{CopyChunk, CopyIn};

/// What a statement returns.
pub enum Output {
    /// Rows, streamed.
    Rows {
        /// Their schema.
        schema: SchemaRef,
        /// The rows.
        stream: SendableRecordBatchStream,
        /// The session's TimeZone when the statement ran, in which `timestamptz` values are
        /// written as text (a later `SET TimeZone` in the same query string does not apply).
        zone: Option<crate::pg_text::Zone>,
    },
    /// A command completed: its Postgres command tag (`CREATE STREAM`, `DROP STREAM`, ...).
    Command(String),
    /// An INSERT appended this many rows.
    Inserted(u64),
    /// An UPDATE or DELETE (the command) changed this many rows.
    Modified(&'static str, u64),
    /// A `COPY ... FROM STDIN` waits for its data: hand it to [`Session::copy_data`].
    CopyIn(CopyIn),
    /// `BEGIN` (true) or `COMMIT` / `ROLLBACK` (false), with the command tag.
    Transaction(bool, &'static str),
    /// `COPY ... TO STDOUT`: COPY data, a chunk at a time; for `COPY (SUBSCRIBE ...)` as
    /// changes happen.
    CopyOut {
        /// Columns per row.
        columns: usize,
        /// The data is in PostgreSQL's binary COPY format (else text or CSV): the signature
        /// and the rows; the trailer that ends it is the wire protocol's to send.
        binary: bool,
        /// The data. A subscription's ends only with an error (the subscriber fell behind) or
        /// when dropped; a query's when its rows are all sent.
        stream: futures::stream::BoxStream<'static, Result<CopyChunk>>,
    },
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rows { schema, .. } => write!(f, "Rows({schema})"),
            Self::Command(tag) => write!(f, "Command({tag})"),
            Self::Inserted(n) => write!(f, "Inserted({n})"),
            Self::Modified(c, n) => write!(f, "{c}({n})"),
            Self::CopyIn(c) => write!(f, "CopyIn({})", c.target),
            Self::Transaction(_, tag) => write!(f, "Transaction({tag})"),
            Self::CopyOut { columns, .. } => write!(f, "CopyOut({columns} columns)"),
        }
    }
}

impl Output {
    /// Collects the rows of a `Rows` output (none for a command).
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        match self {
            Self::Rows { stream, .. } => Ok(stream.try_collect().await?),
            Self::Command(_)
            | Self::Inserted(_)
            | Self::Modified(..)
            | Self::CopyIn(_)
            | Self::CopyOut { .. }
            | Self::Transaction(..) => Ok(Vec::new()),
        }
    }
}

/// What a statement will take and return, for the extended query protocol's Describe.
#[derive(Debug, Clone)]
pub struct Description {
    /// Types of `$1`, `$2`, ... where they can be inferred.
    pub params: Vec<Option<DataType>>,
    /// The columns of the rows it returns; `None` for commands.
    pub columns: Option<SchemaRef>,
}

impl Output {
    /// One batch of rows.
    pub(crate) fn batch(schema: SchemaRef, batch: RecordBatch) -> Self {
        let stream = futures::stream::iter(vec![Ok(batch)]);
        Self::Rows {
            schema: Arc::clone(&schema),
            stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
            zone: None,
        }
    }

    /// An operator plan as the rows of EXPLAIN.
    pub(crate) fn explain(lines: Vec<String>) -> Result<Self> {
        let schema = explain_schema();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(StringArray::from(lines)) as ArrayRef],
        )?;
        Ok(Self::batch(schema, batch))
    }
}

/// The columns of EXPLAIN CREATE MATERIALIZED VIEW / STREAM.
pub(crate) fn explain_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("plan", DataType::Utf8, false)]))
}

/// A notice for the client: something worth saying about a statement that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Its SQLSTATE (`42P07` for an object that exists already).
    pub sqlstate: &'static str,
    /// What happened (`relation "x" already exists, skipping`).
    pub message: String,
}
