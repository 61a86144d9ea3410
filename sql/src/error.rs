//! The SQL layer's error type, with the Postgres SQLSTATE of every error.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// Result with the SQL layer's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a statement can fail with. [`Error::sqlstate`] gives the Postgres code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement does not parse (42601).
    #[error("syntax error: {0}")]
    Syntax(String),
    /// A stream, view or table that does not exist (42P01).
    #[error("relation \"{0}\" does not exist")]
    UndefinedRelation(String),
    /// A column that does not exist (42703).
    #[error("{0}")]
    UndefinedColumn(String),
    /// A stream or view of that name exists already (42P07).
    #[error("relation \"{0}\" already exists")]
    DuplicateRelation(String),
    /// A value that does not fit its type (22P02).
    #[error("invalid input value: {0}")]
    InvalidValue(String),
    /// A NULL where the column is NOT NULL (23502).
    #[error("{0}")]
    NotNull(String),
    /// Types that do not fit together (42804).
    #[error("{0}")]
    Datatype(String),
    /// A statement that is valid but refers to the wrong kind of object, or breaks a rule (42809 /
    /// 2BP01 for dependent objects).
    #[error("{message}")]
    WrongObject {
        /// The SQLSTATE to report.
        sqlstate: &'static str,
        /// What went wrong and what to do instead.
        message: String,
    },
    /// Something Weir does not do (yet) (0A000).
    #[error("{0}")]
    NotSupported(String),
    /// An error from the engine (log, operators).
    #[error(transparent)]
    Engine(#[from] weir_engine::Error),
    /// A DataFusion error (planning, execution).
    #[error(transparent)]
    DataFusion(DataFusionError),
    /// A broken invariant (XX000).
    #[error("internal error: {0}; this is a bug")]
    Internal(String),
}

impl From<DataFusionError> for Error {
    /// Unwraps Weir's own errors that travelled through DataFusion (from a table provider, for
    /// example), so that their message and SQLSTATE reach the client unchanged.
    fn from(e: DataFusionError) -> Self {
        match e {
            DataFusionError::Context(context, inner) => match Self::from(*inner) {
                Self::DataFusion(inner) => {
                    Self::DataFusion(DataFusionError::Context(context, Box::new(inner)))
                }
                own => own,
            },
            DataFusionError::External(inner) => match inner.downcast::<Error>() {
                Ok(own) => *own,
                Err(other) => Self::DataFusion(DataFusionError::External(other)),
            },
            e => Self::DataFusion(e),
        }
    }
}

impl From<ArrowError> for Error {
    fn from(e: ArrowError) -> Self {
        Self::DataFusion(DataFusionError::ArrowError(Box::new(e), None))
    }
}

impl From<datafusion::sql::sqlparser::parser::ParserError> for Error {
    fn from(e: datafusion::sql::sqlparser::parser::ParserError) -> Self {
        Self::Syntax(e.to_string())
    }
}

impl Error {
    /// The error of a continuous query that stopped, as a statement reading its results
    /// reports it: 53200 (out of memory) when its state outgrew its memory limit.
    pub fn query_stopped(what: &str, e: &weir_engine::result_table::QueryError) -> Self {
        Self::WrongObject {
            sqlstate: if e.out_of_memory { "53200" } else { "XX000" },
            message: format!("{what} stopped on an error: {e}"),
        }
    }

    /// The Postgres SQLSTATE for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Self::Syntax(_) => "42601",
            Self::UndefinedRelation(_) => "42P01",
            Self::UndefinedColumn(_) => "42703",
            Self::DuplicateRelation(_) => "42P07",
            Self::InvalidValue(_) => "22P02",
            Self::NotNull(_) => "23502",
            Self::Datatype(_) => "42804",
            Self::WrongObject { sqlstate, .. } => sqlstate,
            Self::NotSupported(_) => "0A000",
            Self::Engine(e) => engine_sqlstate(e),
            Self::DataFusion(e) => datafusion_sqlstate(e),
            Self::Internal(_) => "XX000",
        }
    }
}

fn engine_sqlstate(e: &weir_engine::Error) -> &'static str {
    use weir_engine::Error as E;
    match e {
        E::NotNull(_) => "23502",
        E::InvalidArgument(_) => "22023",
        E::Io { source, .. } if source.raw_os_error() == Some(28) => "53100",
        E::Io { .. } => "58030",
        E::Corrupt(_) => "XX001",
        E::Poisoned(_) => "58030",
        E::LimitExceeded(_) => "54000",
        E::MemoryExceeded(_) => "53200",
        E::OutOfOrderSequence(_) => "22023",
        E::Arrow(a) => arrow_sqlstate(a),
        E::DataFusion(d) => datafusion_sqlstate(d),
        E::Internal(_) => "XX000",
        E::Stopped => "57014",
    }
}

/// Arrow's errors, from DataFusion's own checks (an INSERT's VALUES with a NULL for a NOT NULL
/// column is refused by DataFusion before Weir sees the rows), are text too.
fn arrow_sqlstate(e: &ArrowError) -> &'static str {
    match e {
        ArrowError::InvalidArgumentError(m) if m.contains("non-nullable") => "23502",
        ArrowError::CastError(_)
        | ArrowError::ParseError(_)
        | ArrowError::InvalidArgumentError(_) => "22P02",
        ArrowError::DivideByZero => "22012",
        ArrowError::ArithmeticOverflow(_) => "22003",
        _ => "XX000",
    }
}

/// DataFusion reports planning errors (an unknown table or function, types that do not fit) as
/// text only; these are the one place where Weir reads another library's message, and only to
/// pick a SQLSTATE. Weir's own refusals are variants of [`Error`] that carry theirs.
fn datafusion_sqlstate(e: &DataFusionError) -> &'static str {
    match e.find_root() {
        DataFusionError::SQL(_, _) => "42601",
        DataFusionError::ArrowError(a, _) => arrow_sqlstate(a),
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            datafusion::common::SchemaError::FieldNotFound { .. } => "42703",
            _ => "42P07",
        },
        DataFusionError::Plan(m) if m.contains("not found") && m.contains("table") => "42P01",
        DataFusionError::Plan(m) if m.contains("No function matches") || m.contains("coerc") => {
            "42883"
        }
        DataFusionError::Plan(m) if m.contains("Invalid function") => "42883",
        DataFusionError::Plan(_) => "42804",
        DataFusionError::Execution(m) if m.contains("cast") || m.contains("Cannot") => "22P02",
        DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
            Some(e) => e.sqlstate(),
            None => "XX000",
        },
        _ => "XX000",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        assert_eq!(Error::Syntax("x".into()).sqlstate(), "42601");
        assert_eq!(Error::UndefinedRelation("x".into()).sqlstate(), "42P01");
        let cast = DataFusionError::ArrowError(
            Box::new(ArrowError::CastError(
                "Cannot cast string 'x' to value of Int64 type".into(),
            )),
            None,
        );
        assert_eq!(Error::DataFusion(cast).sqlstate(), "22P02");
        let ctx = DataFusionError::Context(
            "while inserting".into(),
            Box::new(DataFusionError::Plan(
                "table 'weir.public.nope' not found".into(),
            )),
        );
        assert_eq!(Error::DataFusion(ctx).sqlstate(), "42P01");
    }
}
