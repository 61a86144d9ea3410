//! The `Session` API that the Postgres server and the shell call to run statements. It parses,
//! classifies each statement once, and dispatches it to the handler of its family.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::sql::sqlparser::ast::Statement;

use crate::copy::CopyIn;
use crate::database::Database;
use crate::handler::{Handler, show_streams_schema, show_views_schema};
use crate::output::{Description, Notice, Output, explain_schema};
use crate::settings::Settings;
use crate::subscribe::Subscription;
use crate::syntax::{EmitMode, StatementKind, SubscribeTarget, WeirStatement, classify, parse};
use crate::{Error, Result};

/// A connection's session: runs statements against a [`Database`].
pub struct Session {
    handler: Handler,
    /// This session as `weir_sessions` shows it.
    info: std::sync::Arc<crate::catalog::sessions::SessionInfo>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("db", &self.handler.db.dir())
            .finish()
    }
}

impl Session {
    /// A new session on `db`.
    pub fn new(db: Database) -> Self {
        let info = db.registry().sessions().register();
        Self {
            handler: Handler::new(db, std::sync::Arc::clone(&info)),
            info,
        }
    }

    /// Says who is on the other end (for `weir_sessions`).
    pub fn set_client(&self, client: crate::catalog::sessions::ClientDesc) {
        self.info.set_client(client);
    }

    /// Follows a view (or a query, run for as long as the subscription lasts) from its current
    /// rows on: first the rows as of everything committed now, then every change.
    pub async fn subscribe(&self, target: SubscribeTarget) -> Result<Subscription> {
        self.handler.subscribe(target).await
    }

    /// The session's Postgres settings (`SET` / `SHOW`).
    pub fn settings(&self) -> &Settings {
        &self.handler.settings
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.handler.db
    }

    /// The notices the statements of the last `execute` or `execute_one` left for the client
    /// (PostgreSQL's `NOTICE`s, such as `relation "x" already exists, skipping`), oldest first;
    /// each call starts afresh, so notices nobody takes do not pile up.
    pub fn take_notices(&self) -> Vec<Notice> {
        self.handler.take_notices()
    }

    /// Runs every statement in `sql`, in order, stopping at the first error (which is the last
    /// element). Statements before the error keep their effect.
    pub async fn execute(&self, sql: &str) -> Vec<Result<Output>> {
        let _running = self.info.begin(sql);
        self.handler.take_notices();
        let stmts = match parse(sql) {
            Ok(s) => s,
            Err(e) => return vec![Err(e)],
        };
        let mut out = Vec::with_capacity(stmts.len());
        for stmt in stmts {
            let r = self.in_zone(self.execute_statement(stmt, None).await);
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        out
    }

    /// Rows with the TimeZone in effect now, for their `timestamptz` text.
    fn in_zone(&self, out: Result<Output>) -> Result<Output> {
        match out {
            Ok(Output::Rows { schema, stream, .. }) => Ok(Output::Rows {
                schema,
                stream,
                zone: self.handler.settings.time_zone(),
            }),
            other => other,
        }
    }

    /// Runs one statement with parameter values for `$1`, `$2`, ...
    pub async fn execute_one(&self, sql: &str, params: Option<ParamValues>) -> Result<Output> {
        let _running = self.info.begin(sql);
        self.handler.take_notices();
        let mut stmts = parse(sql)?;
        match stmts.len() {
            0 => Ok(Output::Command(String::new())),
            1 => self.in_zone(self.execute_statement(stmts.remove(0), params).await),
            _ => Err(Error::Syntax(
                "cannot run several statements in one prepared statement".into(),
            )),
        }
    }

    /// Loads the data of a `COPY ... FROM STDIN` (everything the client sent): all rows in one
    /// append, or none and an error naming the first bad line. Returns the rows loaded.
    pub async fn copy_data(&self, copy: &CopyIn, data: Vec<u8>) -> Result<u64> {
        self.handler.note_change();
        self.handler.copy_data(copy, data).await
    }

    /// A loader for the data of `copy` that parses it as it arrives ([`CopyLoader::feed`]),
    /// so that the text of a large COPY is never held whole; [`Session::copy_finish`] loads it.
    pub fn copy_loader(&self, copy: &CopyIn) -> Result<crate::copy::CopyLoader> {
        self.handler.copy_loader(copy)
    }

    /// A loader of `copy`'s data on a thread of its own, fed as the data comes (see
    /// [`crate::copy_pipe::CopyPipe`]), aborted after the session's `copy_idle_timeout`.
    pub fn copy_pipe(&self, copy: &CopyIn) -> Result<crate::copy_pipe::CopyPipe> {
        let idle = self.settings().copy_idle_timeout()?;
        crate::copy_pipe::CopyPipe::start(self.copy_loader(copy)?, idle)
    }

    /// Loads what `loader` parsed once the data has ended: all rows, or none and the error.
    /// Returns the rows loaded.
    pub async fn copy_finish(&self, loader: crate::copy::CopyLoader) -> Result<u64> {
        self.handler.note_change();
        self.handler.copy_load(loader).await
    }

    /// Describes one statement: its parameters and result columns.
    pub async fn describe(&self, sql: &str) -> Result<Description> {
        let mut stmts = parse(sql)?;
        if stmts.len() > 1 {
            return Err(Error::Syntax(
                "cannot prepare several statements at once".into(),
            ));
        }
        let none = Description {
            params: vec![],
            columns: None,
        };
        let Some(stmt) = stmts.pop() else {
            return Ok(none);
        };
        let columns = |schema| Description {
            params: vec![],
            columns: Some(schema),
        };
        let kind = classify(&stmt);
        match (kind, stmt) {
            (StatementKind::ShowStreams, _) => Ok(columns(show_streams_schema())),
            (StatementKind::ShowViews, _) => Ok(columns(show_views_schema())),
            (StatementKind::ExplainContinuous, _) => Ok(columns(explain_schema())),
            (StatementKind::Fetch, WeirStatement::Fetch { cursor, .. }) => {
                Ok(columns(self.handler.cursor_schema(&cursor).await?))
            }
            (StatementKind::ShowSetting, WeirStatement::Sql(s)) => {
                let Statement::ShowVariable { variable } = s.as_ref() else {
                    return Ok(none);
                };
                let name = crate::handler::setting_name(variable);
                Ok(columns(crate::handler::setting_schema(&name)))
            }
            (
                kind @ (StatementKind::Query
                | StatementKind::Insert
                | StatementKind::DataFusionCommand),
                WeirStatement::Sql(s),
            ) => self.describe_planned(*s, kind.returns_rows()).await,
            _ => Ok(none),
        }
    }

    /// The parameters (and, for a query, the columns) of a statement DataFusion plans.
    async fn describe_planned(&self, stmt: Statement, returns_rows: bool) -> Result<Description> {
        let named = matches!(stmt, Statement::Query(_)).then(|| stmt.clone());
        let plan = self.handler.plan(stmt).await?;
        let types = plan.get_parameter_types()?;
        let mut params: Vec<(usize, Option<DataType>)> = types
            .into_iter()
            .filter_map(|(k, v)| {
                k.trim_start_matches('$')
                    .parse::<usize>()
                    .ok()
                    .map(|i| (i, v))
            })
            .collect();
        params.sort_by_key(|(i, _)| *i);
        let n = params.last().map_or(0, |(i, _)| *i);
        let mut ordered = vec![None; n];
        for (i, t) in params {
            ordered[i - 1] = t;
        }
        Ok(Description {
            params: ordered,
            columns: returns_rows.then(|| {
                let schema = plan.schema().as_arrow();
                Arc::new(match &named {
                    Some(stmt) => crate::handler::with_pg_names(schema, stmt),
                    None => schema.clone(),
                })
            }),
        })
    }

    async fn execute_statement(
        &self,
        stmt: WeirStatement,
        params: Option<ParamValues>,
    ) -> Result<Output> {
        let out = self.dispatch(stmt, params).await?;
        if matches!(out, Output::Inserted(_) | Output::Modified(..)) {
            self.handler.note_change();
        }
        Ok(out)
    }

    /// Hands a statement to the handler of its family.
    async fn dispatch(&self, stmt: WeirStatement, params: Option<ParamValues>) -> Result<Output> {
        let h = &self.handler;
        h.sync_functions();
        let kind = classify(&stmt);
        match stmt {
            WeirStatement::Subscribe { target, output } => {
                h.subscribe_statement(target, output).await
            }
            WeirStatement::Fetch {
                cursor,
                count,
                timeout,
            } => h.fetch(cursor, count, timeout).await,
            WeirStatement::CreateStream(cs) => h.create_stream(cs).await,
            WeirStatement::CreateSink(cs) => h.create_sink(cs).await,
            WeirStatement::ExplainCreateStream(cs) => h.explain_create_stream(cs).await,
            WeirStatement::DropStream {
                name,
                if_exists,
                cascade,
            } => h.drop_stream(name, if_exists, cascade).await,
            WeirStatement::ShowStreams => h.show_streams(),
            WeirStatement::ShowMaterializedViews => h.show_views().await,
            WeirStatement::ExplainView { name, analyze } => h.explain_view(&name, analyze),
            WeirStatement::Sql(s) => self.dispatch_sql(kind, *s, params, None).await,
            WeirStatement::Emit(s, mode) => self.dispatch_sql(kind, *s, params, Some(mode)).await,
        }
    }

    /// Hands a standard statement to the handler of its family.
    async fn dispatch_sql(
        &self,
        kind: StatementKind,
        stmt: Statement,
        params: Option<ParamValues>,
        emit: Option<EmitMode>,
    ) -> Result<Output> {
        let h = &self.handler;
        let mut stmt = stmt;
        let registry = h.db.registry();
        crate::syntax::window_plain_views(&mut stmt, &|name| registry.plain_view(name).is_some());
        match kind {
            StatementKind::CreateView(_) => h.create_view(stmt, emit).await,
            StatementKind::ExplainContinuous => h.explain_create_view(stmt, emit).await,
            StatementKind::CreatePlainView => h.create_view(stmt, emit).await,
            StatementKind::CreateFunction => h.create_function(stmt).await,
            StatementKind::DropFunction => h.drop_function(stmt).await,
            StatementKind::DropView | StatementKind::DropTable | StatementKind::DropPlainView => {
                let (names, if_exists, cascade) = drop_targets(&stmt)?;
                match kind {
                    StatementKind::DropView => h.drop_views(names, if_exists, cascade).await,
                    StatementKind::DropPlainView => {
                        h.drop_plain_views(names, if_exists, cascade).await
                    }
                    _ => h.drop_tables(names, if_exists, cascade).await,
                }
            }
            StatementKind::CreateTable => h.create_table(stmt).await,
            StatementKind::Insert => h.insert(stmt, params).await,
            StatementKind::Update | StatementKind::Delete => h.update_delete(stmt, params).await,
            StatementKind::CopyFrom => h.copy_from(&stmt),
            StatementKind::CopyTo => h.copy_to(&stmt).await,
            StatementKind::Declare => h.declare(stmt, params).await,
            StatementKind::Close => h.close(stmt).await,
            StatementKind::Transaction => h.transaction(&stmt),
            StatementKind::Reset => h.reset(&stmt),
            StatementKind::Set => h.set(stmt),
            StatementKind::ShowSetting => h.show_setting(&stmt),
            StatementKind::Query => h.query(stmt, params).await,
            StatementKind::DataFusionCommand => h.datafusion_command(stmt, params).await,
            StatementKind::CreateStream
            | StatementKind::CreateSink
            | StatementKind::DropStream
            | StatementKind::Subscribe { .. }
            | StatementKind::Fetch
            | StatementKind::ShowStreams
            | StatementKind::ShowViews
            | StatementKind::Unsupported => h.unsupported(&stmt),
        }
    }
}

/// The names, `IF EXISTS` and `CASCADE` of a DROP.
fn drop_targets(stmt: &Statement) -> Result<(Vec<String>, bool, bool)> {
    let Statement::Drop {
        names,
        if_exists,
        cascade,
        ..
    } = stmt
    else {
        return Err(Error::Internal("DROP lost its statement".into()));
    };
    let names = names
        .iter()
        .map(crate::syntax::object_name)
        .collect::<Result<Vec<_>>>()?;
    Ok((names, *if_exists, *cascade))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(session: &Session, sql: &str) -> Output {
        let mut out = session.execute(sql).await;
        out.pop()
            .expect("a statement")
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Result columns carry PostgreSQL's names in a SELECT, its Describe and a cursor's FETCH.
    #[tokio::test]
    async fn result_columns_have_postgres_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(dir.path()).await.expect("open");
        let session = Session::new(db.clone());
        let sql = "SELECT x, x * 2, count(*) OVER (), CAST(1 AS smallint), upper('a') \
                   FROM (VALUES (1)) t(x)";
        let names = |schema: &datafusion::arrow::datatypes::Schema| -> Vec<String> {
            schema.fields().iter().map(|f| f.name().clone()).collect()
        };
        let expected = ["x", "?column?", "count", "int2", "upper"];
        let Output::Rows { schema, .. } = run(&session, sql).await else {
            panic!("rows")
        };
        assert_eq!(names(&schema), expected);
        let described = session.describe(sql).await.expect("describe");
        assert_eq!(names(&described.columns.expect("columns")), expected);
        run(&session, &format!("DECLARE c CURSOR FOR {sql}")).await;
        let Output::Rows { schema, .. } = run(&session, "FETCH 1 FROM c").await else {
            panic!("rows")
        };
        assert_eq!(names(&schema), expected);
        db.shutdown();
    }

    /// `CREATE ... IF NOT EXISTS` over an object of another kind does what PostgreSQL does:
    /// a notice, and nothing changed.
    #[tokio::test]
    async fn if_not_exists_over_another_kind_is_a_notice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(dir.path()).await.expect("open");
        let session = Session::new(db.clone());
        run(
            &session,
            "CREATE STREAM s (a BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts)",
        )
        .await;
        run(
            &session,
            "CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT)",
        )
        .await;
        run(
            &session,
            "CREATE MATERIALIZED VIEW v AS SELECT a, COUNT(*) AS n FROM s GROUP BY a",
        )
        .await;
        assert!(session.take_notices().is_empty());
        let cases = [
            (
                "CREATE STREAM IF NOT EXISTS t (x BIGINT)",
                "CREATE STREAM",
                "t",
            ),
            (
                "CREATE STREAM IF NOT EXISTS v AS SELECT a FROM s",
                "CREATE STREAM",
                "v",
            ),
            (
                "CREATE MATERIALIZED VIEW IF NOT EXISTS t AS SELECT a FROM s",
                "CREATE MATERIALIZED VIEW",
                "t",
            ),
            (
                "CREATE MATERIALIZED VIEW IF NOT EXISTS s AS SELECT a FROM s",
                "CREATE MATERIALIZED VIEW",
                "s",
            ),
            (
                "CREATE TABLE IF NOT EXISTS s (id BIGINT PRIMARY KEY)",
                "CREATE TABLE",
                "s",
            ),
            (
                "CREATE TABLE IF NOT EXISTS v (id BIGINT PRIMARY KEY)",
                "CREATE TABLE",
                "v",
            ),
        ];
        for (sql, tag, name) in cases {
            match run(&session, sql).await {
                Output::Command(t) => assert_eq!(t, tag, "{sql}"),
                other => panic!("{sql}: {other:?}"),
            }
            assert_eq!(
                session.take_notices(),
                vec![Notice {
                    sqlstate: "42P07",
                    message: format!("relation \"{name}\" already exists, skipping"),
                }],
                "{sql}"
            );
        }
        // Nothing changed: each name is still the kind it was, with its columns.
        use crate::catalog::ObjectKind;
        assert_eq!(db.kind_of("s"), Some(ObjectKind::Stream));
        assert_eq!(db.kind_of("t"), Some(ObjectKind::Table));
        assert_eq!(db.kind_of("v"), Some(ObjectKind::MaterializedView));
        assert_eq!(db.stream("s").expect("s").schema.fields().len(), 2);
        assert_eq!(db.table("t").expect("t").schema.fields().len(), 2);
        // Without IF NOT EXISTS each is refused, whatever kind holds the name.
        for sql in [
            "CREATE STREAM t (x BIGINT)",
            "CREATE MATERIALIZED VIEW s AS SELECT a FROM s",
            "CREATE TABLE v (id BIGINT PRIMARY KEY)",
        ] {
            let err = session.execute(sql).await.pop().expect("a result");
            let err = err.expect_err(sql);
            assert_eq!(err.sqlstate(), "42P07", "{sql}: {err}");
        }
        assert!(session.take_notices().is_empty());
        // Each execute starts afresh: notices nobody took do not pile up.
        run(
            &session,
            "CREATE TABLE IF NOT EXISTS s (id BIGINT PRIMARY KEY)",
        )
        .await;
        run(&session, "SELECT 1").await;
        assert!(session.take_notices().is_empty());
        db.shutdown();
    }

    /// The bytes of a `COPY ... TO STDOUT`, and the rows it counted.
    async fn copy_out(session: &Session, sql: &str) -> (String, usize) {
        use futures::StreamExt;
        let Output::CopyOut { mut stream, .. } = run(session, sql).await else {
            panic!("{sql}: not a COPY TO");
        };
        let (mut text, mut rows) = (Vec::new(), 0);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap_or_else(|e| panic!("{sql}: {e}"));
            rows += chunk.rows;
            text.extend(chunk.data);
        }
        (String::from_utf8(text).expect("utf-8"), rows)
    }

    /// `COPY (query) TO STDOUT` and `COPY name TO STDOUT` write what PostgreSQL 15 writes for
    /// the same rows, in text and CSV with their options.
    #[tokio::test]
    async fn copy_to_stdout_writes_text_and_csv_as_postgres() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(dir.path()).await.expect("open");
        let session = Session::new(db.clone());
        run(&session, "CREATE STREAM s (id BIGINT, name TEXT, ts TIMESTAMP, score DOUBLE PRECISION, ok BOOLEAN)").await;
        run(
            &session,
            "INSERT INTO s VALUES (1, 'a,b', '2026-01-01 00:00:00', 1.5, true), \
             (2, NULL, '2026-01-01 00:00:00.5', NULL, false), \
             (3, 'say \"hi\"' || chr(10) || 'bye' || chr(9) || '\\', '2026-01-02 03:04:05.25', 1e20, NULL)",
        )
        .await;
        let (text, rows) = copy_out(&session, "COPY (SELECT * FROM s ORDER BY id) TO STDOUT").await;
        assert_eq!(rows, 3);
        assert_eq!(
            text,
            "1\ta,b\t2026-01-01 00:00:00\t1.5\tt\n\
             2\t\\N\t2026-01-01 00:00:00.5\t\\N\tf\n\
             3\tsay \"hi\"\\nbye\\t\\\\\t2026-01-02 03:04:05.25\t1e+20\t\\N\n"
        );
        let (csv, rows) = copy_out(
            &session,
            "COPY (SELECT id, name, score FROM s ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)",
        )
        .await;
        assert_eq!(rows, 3, "a quoted line break is not a row");
        assert_eq!(
            csv,
            "id,name,score\n1,\"a,b\",1.5\n2,,\n3,\"say \"\"hi\"\"\nbye\t\\\",1e+20\n"
        );
        // psql's \copy (query) TO 'file' CSV HEADER sends the legacy form.
        let (legacy, _) = copy_out(
            &session,
            "COPY ( SELECT id, ok FROM s WHERE id < 3 ORDER BY id ) TO STDOUT csv header",
        )
        .await;
        assert_eq!(legacy, "id,ok\n1,t\n2,f\n");
        let (options, _) = copy_out(
            &session,
            "COPY (SELECT id, name FROM s WHERE id < 3 ORDER BY id) TO STDOUT \
             WITH (FORMAT csv, DELIMITER ';', NULL 'null', FORCE_QUOTE (id))",
        )
        .await;
        assert_eq!(options, "\"1\";a,b\n\"2\";null\n");
        // A relation by name, with a column list; its rows in log order (one partition).
        let (named, rows) = copy_out(&session, "COPY s (id, ok) TO STDOUT").await;
        assert_eq!((named.as_str(), rows), ("1\tt\n2\tf\n3\t\\N\n", 3));
        for (sql, state) in [
            ("COPY s TO STDOUT WITH (FORMAT binary, HEADER)", "0A000"),
            ("COPY s FROM STDIN WITH (FORMAT binary)", "0A000"),
            ("COPY s TO STDOUT WITH (QUOTE '\"')", "0A000"),
            (
                "COPY (SELECT 1 AS a) TO STDOUT WITH (FORMAT csv, FORCE_QUOTE (b))",
                "42703",
            ),
            ("COPY nope TO STDOUT", "42P01"),
            ("COPY s TO '/tmp/s.txt'", "0A000"),
        ] {
            let err = session.execute(sql).await.pop().expect("a result");
            let err = err.expect_err(sql);
            assert_eq!(err.sqlstate(), state, "{sql}: {err}");
        }
        db.shutdown();
    }
}
