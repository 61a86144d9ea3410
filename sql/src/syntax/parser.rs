//! Parsing of Weir's statements: standard SQL through sqlparser, plus the streaming extensions
//! (`CREATE STREAM ... WATERMARK FOR ...`, `DROP STREAM`, `SHOW STREAMS`, `SHOW MATERIALIZED VIEWS`).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    DataType, Expr, FunctionArg, FunctionArgExpr, Ident, ObjectName, ObjectNamePart, Statement,
    TableAlias, TableFactor, Value, VisitMut, VisitorMut, visit_relations_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::{Error, Result};

/// A parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum WeirStatement {
    /// `CREATE STREAM`.
    CreateStream(CreateStream),
    /// `EXPLAIN CREATE STREAM name AS SELECT ...`: the plan, without creating anything.
    ExplainCreateStream(CreateStream),
    /// `CREATE SINK [IF NOT EXISTS] name INTO KAFKA WITH (brokers = ..., topic = ...) AS
    /// SELECT ...`: a stream of the query's results, delivered to an external Kafka topic.
    CreateSink(CreateStream),
    /// `DROP STREAM [IF EXISTS] name [CASCADE]`.
    DropStream {
        /// The stream.
        name: String,
        /// Whether a missing stream is fine.
        if_exists: bool,
        /// Whether dependent views are dropped too.
        cascade: bool,
    },
    /// `SHOW STREAMS`.
    ShowStreams,
    /// `SHOW MATERIALIZED VIEWS`.
    ShowMaterializedViews,
    /// `EXPLAIN [ANALYZE] MATERIALIZED VIEW name`: the plan of a running view, with what each
    /// operator has done (ANALYZE).
    ExplainView {
        /// The view.
        name: String,
        /// Whether each operator's numbers are shown.
        analyze: bool,
    },
    /// Any standard statement.
    Sql(Box<Statement>),
    /// `CREATE MATERIALIZED VIEW ... EMIT ON ...` (or its EXPLAIN) with an explicit emit mode.
    Emit(Box<Statement>, EmitMode),
    /// `SUBSCRIBE [TO] view | (query)`, also inside `COPY (...) TO STDOUT` and
    /// `DECLARE c CURSOR FOR ...`.
    Subscribe {
        /// What is followed.
        target: SubscribeTarget,
        /// How rows are delivered.
        output: SubscribeOutput,
    },
    /// `FETCH [FORWARD] [n | ALL] [FROM | IN] cursor [WITH (timeout = 'interval')]`.
    Fetch {
        /// The cursor.
        cursor: String,
        /// At most this many rows; `None` for ALL.
        count: Option<u64>,
        /// How long to wait for a first row of a subscription; `None` waits until one comes.
        timeout: Option<std::time::Duration>,
    },
}

/// What a SUBSCRIBE follows.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscribeTarget {
    /// A materialized view, or a stream (its log, from given offsets), by name, with the
    /// options of `WITH (name = 'value', ...)` in the order given.
    View(String, Vec<(String, String)>),
    /// A query, run as a temporary continuous query for as long as the subscription lasts.
    Query(Box<Statement>),
}

/// How a SUBSCRIBE's rows reach the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeOutput {
    /// As the rows of a statement that never ends (until cancelled).
    Rows,
    /// `COPY (SUBSCRIBE ...) TO STDOUT`: as COPY data, line by line as changes happen.
    Copy,
    /// `DECLARE name CURSOR FOR SUBSCRIBE ...`: read with `FETCH n name`.
    Cursor(String),
}

/// The `EMIT ON ...` clause of a materialized view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitMode {
    /// `EMIT ON WINDOW CLOSE`: each window once, when the watermark passes its end.
    OnWindowClose,
    /// `EMIT ON UPDATE`: results as they change, open windows included.
    OnUpdate,
}

/// Removes `EMIT ON UPDATE` / `EMIT ON WINDOW CLOSE` clauses (outside parentheses) and returns
/// them with the number of the (non-empty) statement they belong to.
fn take_emit_clauses(tokens: Vec<TokenWithSpan>) -> (Vec<TokenWithSpan>, Vec<(usize, EmitMode)>) {
    let mut out = Vec::with_capacity(tokens.len());
    let mut found = Vec::new();
    let mut depth = 0usize;
    let mut statement = 0usize;
    let mut statement_has_tokens = false;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i].token;
        let word = |k: usize, w: &str| tokens.get(i + k).is_some_and(|x| is_word(&x.token, w));
        if depth == 0 && word(0, "EMIT") && word(1, "ON") {
            if word(2, "UPDATE") {
                found.push((statement, EmitMode::OnUpdate));
                i += 3;
                continue;
            }
            if word(2, "WINDOW") && word(3, "CLOSE") {
                found.push((statement, EmitMode::OnWindowClose));
                i += 4;
                continue;
            }
        }
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::SemiColon if depth == 0 => {
                if statement_has_tokens {
                    statement += 1;
                }
                statement_has_tokens = false;
            }
            Token::EOF => {}
            _ => statement_has_tokens = true,
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    (out, found)
}

/// A column of `CREATE STREAM`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamColumn {
    /// Normalised name.
    pub name: String,
    /// Declared SQL type.
    pub data_type: DataType,
    /// `NOT NULL` was given.
    pub not_null: bool,
}

/// `CREATE STREAM [IF NOT EXISTS] name (columns..., WATERMARK FOR col AS expr) [WITH (k = v, ...)]`,
/// or `CREATE STREAM [IF NOT EXISTS] name [WITH (k = v, ...)] AS SELECT ...`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateStream {
    /// Normalised stream name.
    pub name: String,
    /// `IF NOT EXISTS` was given.
    pub if_not_exists: bool,
    /// Columns in order.
    pub columns: Vec<StreamColumn>,
    /// `WATERMARK FOR column AS expr`.
    pub watermark: Option<(String, Expr)>,
    /// `WITH` options, keys lower case, values as written (quotes removed).
    pub options: Vec<(String, String)>,
    /// The query of `AS SELECT ...`, whose results the stream holds.
    pub query: Option<Box<Statement>>,
}

/// Unquoted identifiers fold to lower case, as in Postgres.
pub fn normalize(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// The normalised last part of an object name (`public.clicks` is `clicks`).
pub fn object_name(name: &ObjectName) -> Result<String> {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(normalize)
        .ok_or_else(|| Error::Syntax(format!("invalid name {name}")))
}

/// Folds unquoted relation and table-function names to lower case, as Postgres does, so that
/// `TUMBLE(...)` finds the `tumble` function.
fn normalize_relations(stmt: &mut Statement) {
    let _ = visit_relations_mut(stmt, |name: &mut ObjectName| {
        for part in &mut name.0 {
            if let ObjectNamePart::Identifier(ident) = part {
                if ident.quote_style.is_none() {
                    ident.value = ident.value.to_lowercase();
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    let _ = stmt.visit(&mut AliasWindows);
}

/// Names an unaliased window function in FROM after the stream it windows, as RisingWave does:
/// in `FROM HOP(bid, ...)` the columns are `bid.auction`, `bid.window_start`, ...
struct AliasWindows;

impl VisitorMut for AliasWindows {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        // A window over a subquery, `TUMBLE((SELECT ...), ts, size)`: DataFusion would take the
        // subquery for a scalar one and refuse its columns, so it is passed as `EXISTS (...)`,
        // which carries the subquery's plan whole; the window function reads its rows.
        if let TableFactor::Table {
            name,
            args: Some(args),
            ..
        } = factor
        {
            let function = name.0.last().and_then(|p| p.as_ident());
            if function.is_some_and(|f| {
                ["tumble", "hop", "session"].contains(&f.value.to_lowercase().as_str())
            }) {
                if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))) =
                    args.args.first_mut()
                {
                    if let Expr::Subquery(query) = arg {
                        *arg = Expr::Exists {
                            subquery: query.clone(),
                            negated: false,
                        };
                    }
                }
            }
        }
        if let TableFactor::Table {
            name,
            alias: alias @ None,
            args: Some(args),
            ..
        } = factor
        {
            let function = name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.as_str());
            if matches!(function, Some("tumble" | "hop" | "session")) {
                if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(stream)))) =
                    args.args.first()
                {
                    *alias = Some(TableAlias {
                        explicit: true,
                        name: stream.clone(),
                        columns: Vec::new(),
                        at: None,
                    });
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// A window over a plain view by name (`TUMBLE(v, ts, ...)`, or Flink's
/// `TABLE(TUMBLE(TABLE v, DESCRIPTOR(ts), ...))`) becomes a window over its rows as a subquery,
/// `TUMBLE((SELECT * FROM v), ts, ...)`, which the planner expands: the parser cannot tell a
/// plain view from a stream, so this runs where the catalog is known (`is_plain_view`).
pub fn window_plain_views(stmt: &mut Statement, is_plain_view: &dyn Fn(&str) -> bool) {
    let _ = stmt.visit(&mut WindowPlainViews(is_plain_view));
}

struct WindowPlainViews<'a>(&'a dyn Fn(&str) -> bool);

impl VisitorMut for WindowPlainViews<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            args: Some(args),
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let function = name.0.last().and_then(|p| p.as_ident()).map(normalize);
        if !matches!(function.as_deref(), Some("tumble" | "hop" | "session")) {
            return ControlFlow::Continue(());
        }
        let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))) = args.args.first_mut() else {
            return ControlFlow::Continue(());
        };
        let view = match &*arg {
            Expr::Identifier(i) => i.clone(),
            Expr::CompoundIdentifier(parts) if parts.len() <= 3 => match parts.last() {
                Some(i) => i.clone(),
                None => return ControlFlow::Continue(()),
            },
            _ => return ControlFlow::Continue(()),
        };
        if !(self.0)(&normalize(&view)) {
            return ControlFlow::Continue(());
        }
        let text = format!("SELECT * FROM {}", Ident::with_quote('"', normalize(&view)));
        let query = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_query());
        if let Ok(query) = query {
            // As a window over a subquery is passed: see `AliasWindows`.
            *arg = Expr::Exists {
                subquery: query,
                negated: false,
            };
        }
        ControlFlow::Continue(())
    }
}

pub(super) fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Whether `sql` is a client's catalog query (psql's `\d`, a driver's metadata call, a BI
/// tool's table picker): a SELECT (or WITH) naming a `pg_` relation or function,
/// `information_schema`, or `current_user` / `session_user`. Those go through
/// datafusion-pg-catalog's rewrites of Postgres-only syntax (`OPERATOR(pg_catalog.~)`,
/// `::regclass`, `COLLATE`, ...). Decided on the statement's tokens, so that a string literal
/// or a comment that mentions such a name does not count.
fn is_catalog_query(sql: &str) -> bool {
    // Only a cheap necessary condition: most statements are decided without tokenizing twice.
    let lower = sql.to_ascii_lowercase();
    let may_be = ["pg_", "information_schema", "current_user", "session_user"]
        .iter()
        .any(|w| lower.contains(w));
    if !may_be {
        return false;
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return false;
    };
    let mut words = tokens.iter().filter_map(|t| match t {
        Token::Word(w) => Some(w),
        _ => None,
    });
    let is_query = tokens
        .iter()
        .find(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon))
        .is_some_and(
            |t| matches!(t, Token::Word(w) if matches!(w.keyword, Keyword::SELECT | Keyword::WITH)),
        );
    is_query
        && words.any(|w| {
            let v = w.value.to_ascii_lowercase();
            v.starts_with("pg_")
                || matches!(
                    v.as_str(),
                    "information_schema" | "current_user" | "session_user"
                )
        })
}

/// Prepares a catalog query for the compatibility rewrites: names unaliased `current_user`,
/// `session_user` and `user` in select lists after themselves, as Postgres does (the rewrite
/// turns them all into `session_user()`, which would name two of them the same), and compares
/// pg_type's regproc columns with function names. `None` when nothing changed.
fn name_session_functions(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{Query, SelectItem, SetExpr};
    struct Namer(bool);
    impl VisitorMut for Namer {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_mut() {
                for item in &mut select.projection {
                    let SelectItem::UnnamedExpr(Expr::Function(f)) = item else {
                        continue;
                    };
                    let name = f.name.to_string().to_lowercase();
                    if ["current_user", "session_user", "user"].contains(&name.as_str()) {
                        let expr = Expr::Function(f.clone());
                        *item = SelectItem::ExprWithAlias {
                            expr,
                            alias: Ident::with_quote('"', name),
                        };
                        self.0 = true;
                    }
                }
            }
            ControlFlow::Continue(())
        }

        /// `typinput = 'pg_catalog.array_in'::regproc` (DBeaver): datafusion-pg-catalog keeps
        /// pg_type's regproc columns as function names, so compare with the name.
        fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            use datafusion::sql::sqlparser::ast::BinaryOperator;
            let Expr::BinaryOp { left, op, right } = expr else {
                return ControlFlow::Continue(());
            };
            if !matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq) {
                return ControlFlow::Continue(());
            }
            let regproc_column = |e: &Expr| {
                let name = match e {
                    Expr::Identifier(i) => &i.value,
                    Expr::CompoundIdentifier(parts) => match parts.last() {
                        Some(i) => &i.value,
                        None => return false,
                    },
                    _ => return false,
                };
                ["typinput", "typoutput", "typreceive", "typsend"]
                    .contains(&name.to_lowercase().as_str())
            };
            let cast = if regproc_column(left) {
                right.as_mut()
            } else if regproc_column(right) {
                left.as_mut()
            } else {
                return ControlFlow::Continue(());
            };
            if let Expr::Cast {
                expr: inner,
                data_type,
                ..
            } = cast
                && data_type.to_string().to_lowercase().ends_with("regproc")
                && let Expr::Value(v) = inner.as_ref()
                && let Value::SingleQuotedString(name) = &v.value
            {
                let bare = name.trim_start_matches("pg_catalog.").to_string();
                *cast = Expr::Value(Value::SingleQuotedString(bare).into());
                self.0 = true;
            }
            ControlFlow::Continue(())
        }
    }
    let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut namer = Namer(false);
    for s in &mut stmts {
        let _ = s.visit(&mut namer);
    }
    namer.0.then(|| {
        stmts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn compatibility_parser() -> &'static datafusion_pg_catalog::sql::PostgresCompatibilityParser {
    static PARSER: std::sync::OnceLock<datafusion_pg_catalog::sql::PostgresCompatibilityParser> =
        std::sync::OnceLock::new();
    PARSER.get_or_init(datafusion_pg_catalog::sql::PostgresCompatibilityParser::new)
}

/// `EXPLAIN [ANALYZE] MATERIALIZED VIEW name`, if the tokens start with it.
fn parse_explain_view(parser: &mut Parser<'_>) -> Result<Option<WeirStatement>> {
    let word = |i: usize, w: &str| is_word(&parser.peek_nth_token(i).token, w);
    if !word(0, "EXPLAIN") {
        return Ok(None);
    }
    let analyze = word(1, "ANALYZE");
    let at = 1 + usize::from(analyze);
    if !(word(at, "MATERIALIZED") && word(at + 1, "VIEW")) {
        return Ok(None);
    }
    for _ in 0..at + 2 {
        parser.next_token();
    }
    let name = object_name(&parser.parse_object_name(false)?)?;
    Ok(Some(WeirStatement::ExplainView { name, analyze }))
}

/// Parses a string of `;`-separated statements, Weir's own (`CREATE STREAM`, ...) and standard
/// ones.
pub fn parse(sql: &str) -> Result<Vec<WeirStatement>> {
    if is_catalog_query(sql) {
        let named = name_session_functions(sql);
        let sql = super::compat::rewrite_client_sql(named.as_deref().unwrap_or(sql));
        if let Ok(stmts) = compatibility_parser().parse(&sql) {
            return Ok(stmts
                .into_iter()
                .map(|mut s| {
                    super::compat::rewrite_statement(&mut s);
                    WeirStatement::Sql(Box::new(s))
                })
                .collect());
        }
    }
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| Error::Syntax(e.to_string()))?;
    let tokens = super::flink::backtick_identifiers(tokens)?;
    let tokens = super::compat::force_quote_all(tokens);
    let tokens = super::flink::temporal_joins(tokens)?;
    let (tokens, emits) = take_emit_clauses(super::flink::rewrite_windows(tokens));
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut out = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token().token == Token::EOF {
            break;
        }
        let t0 = parser.peek_nth_token(0).token;
        let t1 = parser.peek_nth_token(1).token;
        let t2 = parser.peek_nth_token(2).token;
        if let Some(e) = super::flink::java_function(&parser) {
            return Err(e);
        }
        let stmt = if is_word(&t0, "CREATE") && is_word(&t1, "STREAM") {
            parser.next_token();
            parser.next_token();
            WeirStatement::CreateStream(parse_create_stream(&mut parser)?)
        } else if is_word(&t0, "EXPLAIN") && is_word(&t1, "CREATE") && is_word(&t2, "STREAM") {
            for _ in 0..3 {
                parser.next_token();
            }
            let cs = parse_create_stream(&mut parser)?;
            if cs.query.is_none() {
                return Err(Error::Syntax(
                    "EXPLAIN CREATE STREAM explains a CREATE STREAM ... AS SELECT".into(),
                ));
            }
            WeirStatement::ExplainCreateStream(cs)
        } else if is_word(&t0, "CREATE") && is_word(&t1, "SINK") {
            parser.next_token();
            parser.next_token();
            WeirStatement::CreateSink(parse_create_sink(&mut parser)?)
        } else if is_word(&t0, "DROP") && (is_word(&t1, "STREAM") || is_word(&t1, "SINK")) {
            parser.next_token();
            parser.next_token();
            let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let name = object_name(&parser.parse_object_name(false)?)?;
            let cascade = parser.parse_keyword(Keyword::CASCADE);
            if !cascade {
                let _ = parser.parse_keyword(Keyword::RESTRICT);
            }
            WeirStatement::DropStream {
                name,
                if_exists,
                cascade,
            }
        } else if is_word(&t0, "SUBSCRIBE") {
            parser.next_token();
            WeirStatement::Subscribe {
                target: parse_subscribe_target(&mut parser)?,
                output: SubscribeOutput::Rows,
            }
        } else if is_word(&t0, "COPY") && t1 == Token::LParen && is_word(&t2, "SUBSCRIBE") {
            for _ in 0..3 {
                parser.next_token();
            }
            let target = parse_subscribe_target(&mut parser)?;
            parser.expect_token(&Token::RParen)?;
            parser.expect_keyword(Keyword::TO)?;
            if !is_word(&parser.next_token().token, "STDOUT") {
                return Err(Error::Syntax("COPY (SUBSCRIBE ...) goes TO STDOUT".into()));
            }
            // Options (FORMAT text) are accepted; the rows are always text.
            skip_with_options(&mut parser)?;
            WeirStatement::Subscribe {
                target,
                output: SubscribeOutput::Copy,
            }
        } else if let Some(skip) = declare_subscribe(&parser) {
            parser.next_token();
            let name = normalize(&parser.parse_identifier()?);
            for _ in 0..skip {
                parser.next_token();
            }
            WeirStatement::Subscribe {
                target: parse_subscribe_target(&mut parser)?,
                output: SubscribeOutput::Cursor(name),
            }
        } else if is_word(&t0, "FETCH") {
            parse_fetch(&mut parser)?
        } else if is_word(&t0, "SHOW") && is_word(&t1, "STREAMS") {
            parser.next_token();
            parser.next_token();
            WeirStatement::ShowStreams
        } else if let Some(stmt) = parse_explain_view(&mut parser)? {
            stmt
        } else if is_word(&t0, "SHOW") && is_word(&t1, "MATERIALIZED") && is_word(&t2, "VIEWS") {
            for _ in 0..3 {
                parser.next_token();
            }
            WeirStatement::ShowMaterializedViews
        } else {
            let mut stmt = parser.parse_statement()?;
            super::flink::rewrite_group_windows(&mut stmt)?;
            super::compat::refuse_text_lengths(&stmt)?;
            super::compat::rewrite_postgres_forms(&mut stmt);
            normalize_relations(&mut stmt);
            match emits.iter().find(|(n, _)| *n == out.len()) {
                None => WeirStatement::Sql(Box::new(stmt)),
                Some(&(_, mode)) => {
                    let creates_view =
                        |s: &Statement| matches!(s, Statement::CreateView(cv) if cv.materialized);
                    let ok = creates_view(&stmt)
                        || matches!(&stmt, Statement::Explain { statement, .. } if creates_view(statement));
                    if !ok {
                        return Err(Error::Syntax(
                            "EMIT ON ... belongs at the end of CREATE MATERIALIZED VIEW".into(),
                        ));
                    }
                    WeirStatement::Emit(Box::new(stmt), mode)
                }
            }
        };
        if !matches!(stmt, WeirStatement::Emit(..)) && emits.iter().any(|(n, _)| *n == out.len()) {
            return Err(Error::Syntax(
                "EMIT ON ... belongs at the end of CREATE MATERIALIZED VIEW".into(),
            ));
        }
        out.push(stmt);
        let next = parser.peek_token().token;
        if !parser.consume_token(&Token::SemiColon) && next != Token::EOF {
            return Err(Error::Syntax(format!(
                "expected end of statement, found: {next}"
            )));
        }
    }
    Ok(out)
}

/// Skips a `WITH ( ... )` clause, if there is one.
fn skip_with_options(parser: &mut Parser<'_>) -> Result<()> {
    if parser.parse_keyword(Keyword::WITH) {
        parser.expect_token(&Token::LParen)?;
        let mut depth = 1;
        while depth > 0 {
            match parser.next_token().token {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                Token::EOF => return Err(Error::Syntax("unclosed WITH (".into())),
                _ => {}
            }
        }
    }
    Ok(())
}

/// `[TO] name` or `[TO] (query)` after SUBSCRIBE.
fn parse_subscribe_target(parser: &mut Parser<'_>) -> Result<SubscribeTarget> {
    let _ = parser.parse_keyword(Keyword::TO);
    if parser.consume_token(&Token::LParen) {
        let query = parser.parse_query()?;
        parser.expect_token(&Token::RParen)?;
        let mut stmt = Statement::Query(query);
        normalize_relations(&mut stmt);
        Ok(SubscribeTarget::Query(Box::new(stmt)))
    } else {
        let name = object_name(&parser.parse_object_name(false)?)?;
        let mut options = Vec::new();
        if parser.parse_keyword(Keyword::WITH) {
            parser.expect_token(&Token::LParen)?;
            loop {
                let key = normalize(&parser.parse_identifier()?);
                parser.expect_token(&Token::Eq)?;
                let value = match parser.next_token().token {
                    Token::SingleQuotedString(s) => s,
                    Token::Number(n, _) => n,
                    Token::Word(w) => w.value,
                    other => {
                        return Err(Error::Syntax(format!(
                            "SUBSCRIBE option {key} takes a value such as 'earliest', not {other}"
                        )));
                    }
                };
                options.push((key, value));
                if !parser.consume_token(&Token::Comma) {
                    break;
                }
            }
            parser.expect_token(&Token::RParen)?;
        }
        Ok(SubscribeTarget::View(name, options))
    }
}

/// For `DECLARE name [options] CURSOR [WITH[OUT] HOLD] FOR SUBSCRIBE ...`, how many tokens
/// follow the name up to SUBSCRIBE.
fn declare_subscribe(parser: &Parser<'_>) -> Option<usize> {
    if !is_word(&parser.peek_nth_token(0).token, "DECLARE") {
        return None;
    }
    for k in 2..10 {
        let t = parser.peek_nth_token(k).token;
        if is_word(&t, "FOR") {
            return is_word(&parser.peek_nth_token(k + 1).token, "SUBSCRIBE").then_some(k);
        }
        if matches!(t, Token::EOF | Token::SemiColon) {
            return None;
        }
    }
    None
}

/// `FETCH [FORWARD | NEXT] [n | ALL] [FROM | IN] cursor [WITH (timeout = '...')]`.
fn parse_fetch(parser: &mut Parser<'_>) -> Result<WeirStatement> {
    parser.next_token();
    let mut count = Some(1);
    if is_word(&parser.peek_token().token, "FORWARD") || is_word(&parser.peek_token().token, "NEXT")
    {
        parser.next_token();
    }
    match parser.peek_token().token {
        Token::Number(n, _) => {
            parser.next_token();
            count = Some(
                n.parse::<u64>()
                    .map_err(|_| Error::Syntax(format!("FETCH takes a row count, not {n}")))?,
            );
        }
        Token::Word(w) if w.value.eq_ignore_ascii_case("ALL") => {
            parser.next_token();
            count = None;
        }
        _ => {}
    }
    let _ = parser.parse_keyword(Keyword::FROM) || parser.parse_keyword(Keyword::IN);
    let cursor = normalize(&parser.parse_identifier()?);
    let mut timeout = None;
    if parser.parse_keyword(Keyword::WITH) {
        parser.expect_token(&Token::LParen)?;
        if !is_word(&parser.next_token().token, "TIMEOUT") {
            return Err(Error::Syntax(
                "FETCH ... WITH takes (timeout = 'interval')".into(),
            ));
        }
        let _ = parser.consume_token(&Token::Eq);
        let text = match parser.next_token().token {
            Token::SingleQuotedString(s) => s,
            Token::Number(n, _) => format!("{n} seconds"),
            other => {
                return Err(Error::Syntax(format!(
                    "FETCH timeout takes an interval such as '1s', not {other}"
                )));
            }
        };
        parser.expect_token(&Token::RParen)?;
        timeout = Some(parse_duration(&text).ok_or_else(|| {
            Error::Syntax(format!(
                "FETCH timeout '{text}' is not an interval such as '500ms' or '2 seconds'"
            ))
        })?);
    }
    Ok(WeirStatement::Fetch {
        cursor,
        count,
        timeout,
    })
}

/// A short duration: `500ms`, `2s`, `2 seconds`, `1 minute`, `0`.
fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let t = text.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "second" | "seconds" => n,
        "ms" | "millisecond" | "milliseconds" => n / 1000.0,
        "m" | "min" | "minute" | "minutes" => n * 60.0,
        _ => return None,
    };
    (seconds >= 0.0).then(|| std::time::Duration::from_secs_f64(seconds))
}

fn parse_create_stream(parser: &mut Parser<'_>) -> Result<CreateStream> {
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(&parser.parse_object_name(false)?)?;
    parse_stream_rest(parser, name, if_not_exists, true)
}

/// After `CREATE SINK`: `[IF NOT EXISTS] name INTO KAFKA WITH (...) AS SELECT ...`.
fn parse_create_sink(parser: &mut Parser<'_>) -> Result<CreateStream> {
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(&parser.parse_object_name(false)?)?;
    parser.expect_keyword(Keyword::INTO)?;
    if !is_word(&parser.next_token().token, "KAFKA") {
        return Err(Error::Syntax(
            "CREATE SINK name INTO KAFKA WITH (brokers = 'host:port', topic = '...') AS SELECT ...:              Kafka is the only kind of sink"
                .into(),
        ));
    }
    parse_stream_rest(parser, name, if_not_exists, false)
}

/// The rest of a CREATE STREAM or SINK after its name: the column list (if `columns_allowed`),
/// `WITH (...)` and `AS SELECT ...`.
fn parse_stream_rest(
    parser: &mut Parser<'_>,
    name: String,
    if_not_exists: bool,
    columns_allowed: bool,
) -> Result<CreateStream> {
    let mut columns = Vec::new();
    let mut watermark = None;
    // Without a column list the stream takes the columns of its AS SELECT.
    let listed = columns_allowed && parser.consume_token(&Token::LParen);
    while listed {
        if is_word(&parser.peek_token().token, "WATERMARK") {
            parser.next_token();
            parser.expect_keyword(Keyword::FOR)?;
            let column = normalize(&parser.parse_identifier()?);
            parser.expect_keyword(Keyword::AS)?;
            let expr = parser.parse_expr()?;
            if watermark.replace((column, expr)).is_some() {
                return Err(Error::Syntax("a stream has at most one WATERMARK".into()));
            }
        } else {
            let name = normalize(&parser.parse_identifier()?);
            let data_type = parser.parse_data_type()?;
            let mut not_null = false;
            loop {
                if parser.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
                    not_null = true;
                } else if !parser.parse_keyword(Keyword::NULL) {
                    break;
                }
            }
            columns.push(StreamColumn {
                name,
                data_type,
                not_null,
            });
        }
        if !parser.consume_token(&Token::Comma) {
            parser.expect_token(&Token::RParen)?;
            break;
        }
    }
    let mut options = Vec::new();
    if parser.parse_keyword(Keyword::WITH) {
        parser.expect_token(&Token::LParen)?;
        loop {
            let key = match parser.next_token().token {
                Token::Word(w) => match w.quote_style {
                    Some(_) => w.value,
                    None => w.value.to_lowercase(),
                },
                Token::SingleQuotedString(s) => s.to_lowercase(),
                other => {
                    return Err(Error::Syntax(format!(
                        "expected an option name, found: {other}"
                    )));
                }
            };
            parser.expect_token(&Token::Eq)?;
            let value = match parser.parse_expr()? {
                Expr::Value(v) => match v.value {
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s,
                    Value::Number(n, _) => n,
                    Value::Boolean(b) => b.to_string(),
                    other => other.to_string(),
                },
                Expr::Identifier(i) => i.value,
                other => {
                    return Err(Error::Syntax(format!(
                        "option {key} takes a literal value, not {other}"
                    )));
                }
            };
            options.push((key, value));
            if !parser.consume_token(&Token::Comma) {
                parser.expect_token(&Token::RParen)?;
                break;
            }
        }
    }
    let query = if parser.parse_keyword(Keyword::AS) {
        if listed {
            return Err(Error::Syntax(
                "CREATE STREAM ... AS SELECT takes its columns from the query; leave out the column list"
                    .into(),
            ));
        }
        let mut stmt = Statement::Query(parser.parse_query()?);
        normalize_relations(&mut stmt);
        Some(Box::new(stmt))
    } else if !columns_allowed {
        return Err(Error::Syntax(
            "CREATE SINK needs AS SELECT ...: the query whose results it delivers".into(),
        ));
    } else if !listed {
        return Err(Error::Syntax(
            "CREATE STREAM needs a column list, or AS SELECT ...".into(),
        ));
    } else {
        None
    };
    Ok(CreateStream {
        name,
        if_not_exists,
        columns,
        watermark,
        options,
        query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_sink_into_kafka() {
        let stmts = parse(
            "CREATE SINK IF NOT EXISTS Big INTO KAFKA WITH (brokers = 'b:9092', topic = 'big') \
             AS SELECT id FROM orders; DROP SINK big",
        )
        .expect("parses");
        let WeirStatement::CreateSink(cs) = &stmts[0] else {
            panic!("not a CREATE SINK: {:?}", stmts[0]);
        };
        assert_eq!((cs.name.as_str(), cs.if_not_exists), ("big", true));
        assert_eq!(cs.options.len(), 2);
        assert!(cs.query.is_some() && cs.columns.is_empty());
        assert!(matches!(&stmts[1], WeirStatement::DropStream { name, .. } if name == "big"));
        assert!(parse("CREATE SINK s INTO KAFKA (id BIGINT) AS SELECT 1").is_err());
    }

    #[test]
    fn create_stream_with_watermark_and_options() {
        let stmts = parse(
            "CREATE STREAM Clicks (user_id BIGINT NOT NULL, url TEXT, ts TIMESTAMP,
               WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
             WITH (partitions = 4, key = 'user_id'); SHOW STREAMS; show materialized views",
        )
        .expect("parses");
        assert_eq!(stmts.len(), 3);
        let WeirStatement::CreateStream(cs) = &stmts[0] else {
            panic!("not a CREATE STREAM: {:?}", stmts[0]);
        };
        assert_eq!(cs.name, "clicks");
        assert_eq!(cs.columns.len(), 3);
        assert!(cs.columns[0].not_null);
        assert_eq!(cs.watermark.as_ref().map(|w| w.0.as_str()), Some("ts"));
        assert_eq!(
            cs.options,
            vec![
                ("partitions".into(), "4".into()),
                ("key".into(), "user_id".into())
            ]
        );
        assert_eq!(stmts[1], WeirStatement::ShowStreams);
        assert_eq!(stmts[2], WeirStatement::ShowMaterializedViews);
    }

    #[test]
    fn flink_window_functions_are_rewritten() {
        let flink = parse(
            "SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY window_start; \
             SELECT * FROM TABLE(HOP(TABLE nexmark.bid, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) AS h WHERE (1 = 1)",
        )
        .expect("parses");
        let ours = parse(
            "SELECT window_start, COUNT(*) FROM tumble(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_start; \
             SELECT * FROM hop(nexmark.bid, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS h WHERE (1 = 1)",
        )
        .expect("parses");
        assert_eq!(flink, ours);
    }

    #[test]
    fn emit_clauses_belong_to_their_view() {
        let stmts = parse(
            "SELECT 1;; CREATE MATERIALIZED VIEW v AS SELECT a FROM t GROUP BY a EMIT ON UPDATE; \
             CREATE MATERIALIZED VIEW w AS SELECT (1) FROM t emit on window close",
        )
        .expect("parses");
        assert!(matches!(stmts[0], WeirStatement::Sql(_)));
        assert!(matches!(
            stmts[1],
            WeirStatement::Emit(_, EmitMode::OnUpdate)
        ));
        assert!(matches!(
            stmts[2],
            WeirStatement::Emit(_, EmitMode::OnWindowClose)
        ));
        for bad in [
            "SELECT 1 EMIT ON UPDATE",
            "CREATE STREAM s (a BIGINT) EMIT ON UPDATE",
        ] {
            assert_eq!(parse(bad).expect_err(bad).sqlstate(), "42601", "{bad}");
        }
    }

    #[test]
    fn errors_are_syntax_errors() {
        for bad in [
            "CREATE STREAM s (a BIGINT",
            "SELEC 1",
            "CREATE STREAM s (a) WITH",
            "SELECT 1 2",
        ] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.sqlstate(), "42601", "{bad}: {e}");
        }
    }
}
