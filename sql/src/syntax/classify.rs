//! The one classification of statements: which handler runs a statement, whether it returns
//! rows, and its Postgres command tag. Execution, Describe and the shell all decide from it.

use datafusion::sql::sqlparser::ast::{ObjectType, Set, Statement};

use super::parser::{SubscribeOutput, SubscribeTarget, WeirStatement, object_name, parse};
use crate::Result;

/// What a statement is, decided on its parsed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    /// `CREATE STREAM name (...)` or `CREATE STREAM name AS SELECT ...`.
    CreateStream,
    /// `CREATE SINK name INTO KAFKA ... AS SELECT ...`.
    CreateSink,
    /// `DROP STREAM` / `DROP SINK`.
    DropStream,
    /// `CREATE MATERIALIZED VIEW name ...`, with the view's name.
    CreateView(String),
    /// `DROP MATERIALIZED VIEW`.
    DropView,
    /// `CREATE VIEW name AS SELECT ...`: a named query.
    CreatePlainView,
    /// `DROP VIEW`.
    DropPlainView,
    /// `CREATE FUNCTION`.
    CreateFunction,
    /// `DROP FUNCTION`.
    DropFunction,
    /// `CREATE TABLE`.
    CreateTable,
    /// `DROP TABLE`.
    DropTable,
    /// `EXPLAIN CREATE MATERIALIZED VIEW` / `EXPLAIN CREATE STREAM ... AS SELECT`: the operator
    /// plan, nothing created.
    ExplainContinuous,
    /// `INSERT`.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `COPY name FROM STDIN` (other sources are refused by its handler).
    CopyFrom,
    /// `COPY ... TO ...` of anything but a subscription.
    CopyTo,
    /// `SUBSCRIBE` in any form; the view or stream it names, if it names one.
    Subscribe {
        /// How its rows reach the client.
        output: SubscribeOutput,
        /// The view or stream followed (`None` for a query).
        name: Option<String>,
    },
    /// `DECLARE name CURSOR FOR SELECT ...`.
    Declare,
    /// `FETCH`.
    Fetch,
    /// `CLOSE`.
    Close,
    /// `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`.
    Transaction,
    /// `DEALLOCATE`, `DISCARD`: session resets with nothing to reset.
    Reset,
    /// `SET` of a Postgres setting.
    Set,
    /// `SHOW` of a Postgres setting.
    ShowSetting,
    /// `SHOW STREAMS`.
    ShowStreams,
    /// `SHOW MATERIALIZED VIEWS`.
    ShowViews,
    /// A query DataFusion runs: SELECT, or EXPLAIN of a query.
    Query,
    /// `SET` or `SHOW` of one of DataFusion's dotted settings, run by DataFusion.
    DataFusionCommand,
    /// Anything else: refused with 0A000.
    Unsupported,
}

impl StatementKind {
    /// Whether the statement answers with rows (a row description, then rows).
    pub fn returns_rows(&self) -> bool {
        matches!(
            self,
            Self::ExplainContinuous
                | Self::ShowSetting
                | Self::ShowStreams
                | Self::ShowViews
                | Self::Query
                | Self::Fetch
                | Self::Subscribe {
                    output: SubscribeOutput::Rows,
                    ..
                }
        )
    }

    /// Whether the statement may create or drop an object (so names known to a client change).
    pub fn changes_names(&self) -> bool {
        matches!(
            self,
            Self::CreateStream
                | Self::CreateSink
                | Self::DropStream
                | Self::CreateView(_)
                | Self::DropView
                | Self::CreatePlainView
                | Self::DropPlainView
                | Self::CreateFunction
                | Self::DropFunction
                | Self::CreateTable
                | Self::DropTable
        )
    }
}

/// Classifies a parsed statement.
pub fn classify(stmt: &WeirStatement) -> StatementKind {
    match stmt {
        WeirStatement::CreateStream(_) => StatementKind::CreateStream,
        WeirStatement::CreateSink(_) => StatementKind::CreateSink,
        WeirStatement::DropStream { .. } => StatementKind::DropStream,
        WeirStatement::ExplainCreateStream(_) => StatementKind::ExplainContinuous,
        WeirStatement::ShowStreams => StatementKind::ShowStreams,
        WeirStatement::ShowMaterializedViews => StatementKind::ShowViews,
        WeirStatement::ExplainView { .. } => StatementKind::ExplainContinuous,
        WeirStatement::Fetch { .. } => StatementKind::Fetch,
        WeirStatement::Subscribe { target, output } => StatementKind::Subscribe {
            output: output.clone(),
            name: match target {
                SubscribeTarget::View(name, _) => Some(name.clone()),
                SubscribeTarget::Query(_) => None,
            },
        },
        WeirStatement::Sql(s) | WeirStatement::Emit(s, _) => classify_sql(s),
    }
}

/// Classifies each statement of `sql`, with its command tag (for front ends that send the
/// text elsewhere, such as the shell connected to a server).
pub fn classify_text(sql: &str) -> Result<Vec<(StatementKind, &'static str)>> {
    Ok(parse(sql)?
        .iter()
        .map(|s| (classify(s), command_tag(s)))
        .collect())
}

/// The Postgres command tag of a statement, without its row count (`CREATE STREAM`,
/// `INSERT`, `BEGIN`, ...).
pub fn command_tag(stmt: &WeirStatement) -> &'static str {
    match stmt {
        WeirStatement::CreateStream(_) => "CREATE STREAM",
        WeirStatement::CreateSink(_) => "CREATE SINK",
        WeirStatement::DropStream { .. } => "DROP STREAM",
        WeirStatement::ExplainCreateStream(_) | WeirStatement::ExplainView { .. } => "EXPLAIN",
        WeirStatement::ShowStreams | WeirStatement::ShowMaterializedViews => "SHOW",
        WeirStatement::Fetch { .. } => "FETCH",
        WeirStatement::Subscribe {
            output: SubscribeOutput::Cursor(_),
            ..
        } => "DECLARE CURSOR",
        WeirStatement::Subscribe {
            output: SubscribeOutput::Copy,
            ..
        } => "COPY",
        WeirStatement::Subscribe { .. } => "SUBSCRIBE",
        WeirStatement::Sql(s) | WeirStatement::Emit(s, _) => sql_tag(s),
    }
}

fn sql_tag(s: &Statement) -> &'static str {
    match s {
        Statement::CreateView(cv) if cv.materialized => "CREATE MATERIALIZED VIEW",
        Statement::CreateView(_) => "CREATE VIEW",
        Statement::Drop { object_type, .. } => match object_type {
            ObjectType::MaterializedView => "DROP MATERIALIZED VIEW",
            ObjectType::View => "DROP VIEW",
            ObjectType::Table => "DROP TABLE",
            _ => "DROP",
        },
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::CreateFunction(_) => "CREATE FUNCTION",
        Statement::DropFunction(_) => "DROP FUNCTION",
        Statement::Insert(_) => "INSERT",
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Copy { .. } => "COPY",
        Statement::Declare { .. } => "DECLARE CURSOR",
        Statement::Close { .. } => "CLOSE CURSOR",
        Statement::StartTransaction { .. } => "BEGIN",
        Statement::Commit { .. } => "COMMIT",
        Statement::Rollback { .. } => "ROLLBACK",
        Statement::Savepoint { .. } => "SAVEPOINT",
        Statement::ReleaseSavepoint { .. } => "RELEASE",
        Statement::Deallocate { .. } => "DEALLOCATE",
        Statement::Discard { .. } => "DISCARD ALL",
        Statement::Set(_) => "SET",
        Statement::ShowVariable { .. } => "SHOW",
        Statement::Explain { .. } => "EXPLAIN",
        Statement::Query(_) => "SELECT",
        _ => "OK",
    }
}

fn classify_sql(s: &Statement) -> StatementKind {
    match s {
        Statement::CreateView(cv) if cv.materialized => match object_name(&cv.name) {
            Ok(name) => StatementKind::CreateView(name),
            Err(_) => StatementKind::Unsupported,
        },
        Statement::Explain { statement, .. } if matches!(statement.as_ref(), Statement::CreateView(cv) if cv.materialized) => {
            StatementKind::ExplainContinuous
        }
        Statement::CreateView(_) => StatementKind::CreatePlainView,
        Statement::Drop { object_type, .. } => match object_type {
            ObjectType::MaterializedView => StatementKind::DropView,
            ObjectType::View => StatementKind::DropPlainView,
            ObjectType::Table => StatementKind::DropTable,
            _ => StatementKind::Unsupported,
        },
        Statement::CreateTable(_) => StatementKind::CreateTable,
        Statement::CreateFunction(_) => StatementKind::CreateFunction,
        Statement::DropFunction(_) => StatementKind::DropFunction,
        Statement::Insert(_) => StatementKind::Insert,
        Statement::Update(_) => StatementKind::Update,
        Statement::Delete(_) => StatementKind::Delete,
        // Every other form of COPY FROM is refused by the COPY handler, with the reason.
        Statement::Copy { to: false, .. } => StatementKind::CopyFrom,
        Statement::Copy { .. } => StatementKind::CopyTo,
        Statement::Declare { .. } => StatementKind::Declare,
        Statement::Close { .. } => StatementKind::Close,
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => StatementKind::Transaction,
        Statement::Deallocate { .. } | Statement::Discard { .. } => StatementKind::Reset,
        Statement::Set(set) if is_datafusion_setting(set) => StatementKind::DataFusionCommand,
        Statement::Set(_) => StatementKind::Set,
        Statement::ShowVariable { variable } if is_pg_setting(variable) => {
            StatementKind::ShowSetting
        }
        Statement::ShowVariable { .. } => StatementKind::DataFusionCommand,
        Statement::Query(_) | Statement::Explain { .. } => StatementKind::Query,
        _ => StatementKind::Unsupported,
    }
}

/// Whether SHOW names a Postgres setting (not one of DataFusion's dotted ones).
pub(crate) fn is_pg_setting(variable: &[datafusion::sql::sqlparser::ast::Ident]) -> bool {
    !variable.is_empty() && !variable.iter().any(|v| v.value.contains('.'))
}

/// Whether a SET names one of DataFusion's own settings (`datafusion.execution...`).
fn is_datafusion_setting(set: &Set) -> bool {
    matches!(set, Set::SingleAssignment { variable, .. } if variable.to_string().contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<StatementKind> {
        classify_text(sql)
            .expect("parses")
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn statements_by_kind() {
        assert_eq!(
            kinds(
                "CREATE STREAM s (a BIGINT); CREATE MATERIALIZED VIEW IF NOT EXISTS v AS SELECT a FROM s; \
                 SELECT 1; SHOW STREAMS; SUBSCRIBE v; COPY (SUBSCRIBE v) TO STDOUT; \
                 COPY (SELECT 1) TO STDOUT; BEGIN; SET search_path = public; SHOW timezone; \
                 COPY s FROM STDIN"
            ),
            vec![
                StatementKind::CreateStream,
                StatementKind::CreateView("v".into()),
                StatementKind::Query,
                StatementKind::ShowStreams,
                StatementKind::Subscribe {
                    output: SubscribeOutput::Rows,
                    name: Some("v".into())
                },
                StatementKind::Subscribe {
                    output: SubscribeOutput::Copy,
                    name: Some("v".into())
                },
                StatementKind::CopyTo,
                StatementKind::Transaction,
                StatementKind::Set,
                StatementKind::ShowSetting,
                // The data of a COPY FROM STDIN follows it, so it comes last.
                StatementKind::CopyFrom,
            ]
        );
        assert!(kinds("SHOW STREAMS")[0].returns_rows());
        assert!(!kinds("INSERT INTO s VALUES (1)")[0].returns_rows());
        assert!(kinds("DROP TABLE t")[0].changes_names());
        let tags: Vec<&str> =
            classify_text("BEGIN; INSERT INTO s VALUES (1); DROP MATERIALIZED VIEW v")
                .expect("parses")
                .into_iter()
                .map(|(_, t)| t)
                .collect();
        assert_eq!(tags, ["BEGIN", "INSERT", "DROP MATERIALIZED VIEW"]);
    }
}
