//! Rewrites that let Postgres clients' own SQL run: psql's catalog queries DataFusion cannot
//! run as sent, LIKE escapes, scalar subqueries over one row, and `information_schema.columns`
//! answered with Postgres type names.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Statement, VisitMut, VisitorMut};

/// The relation that answers `information_schema.columns` (see [`rewrite_statement`]).
pub const WEIR_COLUMNS: &str = "weir_columns";

/// psql 15 queries that DataFusion cannot run as sent, and the equivalent Weir runs instead.
const CLIENT_REWRITES: &[(&str, &str)] = &[
    // Grafana's table and column pickers: the schemas on the search_path, computed with
    // generate_series over array bounds, which DataFusion cannot plan from a subquery. Weir has
    // one schema.
    (
        r#"SELECT CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END FROM generate_series( array_lower(string_to_array(current_setting('search_path'),','),1), array_upper(string_to_array(current_setting('search_path'),','),1) ) as i, string_to_array(current_setting('search_path'),',') s"#,
        "SELECT 'public'",
    ),
    // \d+: storage options (with ARRAY(subquery) over TOAST's), which Weir's relations never have.
    (
        "pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')",
        "''",
    ),
];

/// Runs of whitespace as one space, so that patterns match however a client lays out its SQL.
fn collapse_whitespace(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Rewrites the client queries listed in [`CLIENT_REWRITES`] (matched with whitespace
/// collapsed; a query that matches none is returned as it is).
pub(crate) fn rewrite_client_sql(sql: &str) -> std::borrow::Cow<'_, str> {
    let collapsed = collapse_whitespace(sql);
    let mut out = None::<String>;
    for (from, to) in CLIENT_REWRITES {
        let from = collapse_whitespace(from);
        let current = out.as_deref().unwrap_or(&collapsed);
        if current.contains(&from) {
            out = Some(current.replace(&from, to));
        }
    }
    match out {
        Some(rewritten) => std::borrow::Cow::Owned(rewritten),
        None => std::borrow::Cow::Borrowed(sql),
    }
}

/// Rewrites `LIKE pattern ESCAPE 'c'` (SQLAlchemy writes `NOT LIKE 'pg/_' || '%' ESCAPE '/'`)
/// into the backslash escapes DataFusion knows, when the pattern is constant text.
struct LikeEscapes;

fn constant_text(e: &SqlExpr) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, Value};
    match e {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s.clone()),
            _ => None,
        },
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::StringConcat,
            right,
        } => Some(constant_text(left)? + &constant_text(right)?),
        SqlExpr::Nested(inner) => constant_text(inner),
        _ => None,
    }
}

impl VisitorMut for LikeEscapes {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::Value;
        let (SqlExpr::Like {
            pattern,
            escape_char,
            ..
        }
        | SqlExpr::ILike {
            pattern,
            escape_char,
            ..
        }) = expr
        else {
            return ControlFlow::Continue(());
        };
        let Some(escape) = escape_char.as_ref().and_then(|v| match &v.value {
            Value::SingleQuotedString(c) if c.chars().count() == 1 => c.chars().next(),
            _ => None,
        }) else {
            return ControlFlow::Continue(());
        };
        if escape == '\\' {
            return ControlFlow::Continue(());
        }
        let Some(text) = constant_text(pattern) else {
            // A pattern known only when the statement runs (a parameter, as psycopg 3 binds
            // SQLAlchemy's): PostgreSQL's like_escape converts it then.
            let sql = format!("like_escape({pattern}, '{escape}')");
            let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
            if escape != '\'' {
                if let Ok(call) = datafusion::sql::sqlparser::parser::Parser::new(&dialect)
                    .try_with_sql(&sql)
                    .and_then(|mut p| p.parse_expr())
                {
                    **pattern = call;
                    *escape_char = None;
                }
            }
            return ControlFlow::Continue(());
        };
        let out = crate::functions::backslash_escapes(&text, escape);
        **pattern = SqlExpr::Value(Value::SingleQuotedString(out).into());
        *escape_char = None;
        ControlFlow::Continue(())
    }
}

/// `generate_subscripts(a, d)` (the subscripts of an array's dimension `d`, a set-returning
/// function DataFusion lacks) as `unnest(range(1, cardinality(a) + 1))` for `d` = 1: beside an
/// `unnest(a)` in the same select list, as SQLAlchemy's primary-key reflection writes it, the
/// two unnest in step, as PostgreSQL's set-returning functions do.
struct GenerateSubscripts;

impl VisitorMut for GenerateSubscripts {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments};
        let SqlExpr::Function(f) = expr else {
            return ControlFlow::Continue(());
        };
        let named = f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|i| i.value.eq_ignore_ascii_case("generate_subscripts"));
        let FunctionArguments::List(list) = &f.args else {
            return ControlFlow::Continue(());
        };
        let [
            FunctionArg::Unnamed(FunctionArgExpr::Expr(array)),
            FunctionArg::Unnamed(FunctionArgExpr::Expr(dim)),
        ] = list.args.as_slice()
        else {
            return ControlFlow::Continue(());
        };
        if !named {
            return ControlFlow::Continue(());
        }
        // Weir's arrays have one dimension: any other has no subscripts.
        let sql = format!(
            "unnest(range(1, CASE WHEN {dim} = 1 THEN CAST(cardinality({array}) AS BIGINT) + 1 \
             ELSE 1 END))"
        );
        let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
        if let Ok(rewritten) = datafusion::sql::sqlparser::parser::Parser::new(&dialect)
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_expr())
        {
            *expr = rewritten;
        }
        ControlFlow::Continue(())
    }
}

/// PostgreSQL forms DataFusion lacks, in any statement: `LIKE ... ESCAPE 'c'`,
/// `generate_subscripts(a, 1)`, and interval literals with `hh:mm:ss` (`INTERVAL '1 day
/// 02:03:04'`, as PostgreSQL writes intervals), which DataFusion reads when it plans.
pub(crate) fn rewrite_postgres_forms(stmt: &mut Statement) {
    let _ = stmt.visit(&mut LikeEscapes);
    let _ = stmt.visit(&mut GenerateSubscripts);
    let _ = stmt.visit(&mut IntervalClocks);
}

/// Interval literals whose text has `hh:mm:ss`, written out in units (see
/// [`crate::functions::interval_text`]).
struct IntervalClocks;

impl VisitorMut for IntervalClocks {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::Value;
        let SqlExpr::Interval(interval) = expr else {
            return ControlFlow::Continue(());
        };
        if interval.leading_field.is_some() {
            return ControlFlow::Continue(());
        }
        if let SqlExpr::Value(v) = interval.value.as_mut() {
            if let Value::SingleQuotedString(text) = &mut v.value {
                if let std::borrow::Cow::Owned(written) = crate::functions::interval_text(text) {
                    *text = written;
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Applies Weir's rewrites of client catalog queries to a parsed statement.
pub(crate) fn rewrite_statement(stmt: &mut Statement) {
    rewrite_postgres_forms(stmt);
    let _ = stmt.visit(&mut AggregateScalarSubqueries);
    // information_schema.columns with Postgres type names (DataFusion's shows Arrow's).
    let _ = datafusion::sql::sqlparser::ast::visit_relations_mut(stmt, |name| {
        let parts: Vec<String> = name
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| i.value.to_lowercase()))
            .collect();
        let tail: Vec<&str> = parts.iter().rev().take(2).map(String::as_str).collect();
        if tail == ["columns", "information_schema"] {
            *name = datafusion::sql::sqlparser::ast::ObjectName::from(vec![
                datafusion::sql::sqlparser::ast::Ident::new("pg_catalog"),
                datafusion::sql::sqlparser::ast::Ident::new(WEIR_COLUMNS),
            ]);
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Wraps the one column of a scalar subquery in `max(...)` when it is not aggregated, and
/// answers lookups of column defaults, identity sequences and collations with NULL.
///
/// Catalog queries (SQLAlchemy's `get_columns`, for one) look up at most one row with a
/// correlated scalar subquery; DataFusion plans those only when they aggregate. Over at most
/// one row, `max` is that row's value.
struct AggregateScalarSubqueries;

impl VisitorMut for AggregateScalarSubqueries {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::{
            FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, SelectItem, SetExpr,
        };
        let SqlExpr::Subquery(query) = expr else {
            return ControlFlow::Continue(());
        };
        // Column defaults, identity sequences and collations: Weir has none, so these lookups
        // are NULL (and DataFusion cannot decorrelate some of them inside CASE).
        let text = query.to_string().to_lowercase();
        if ["pg_attrdef", "pg_sequence", "pg_collation", "typcollation"]
            .iter()
            .any(|t| text.contains(t))
        {
            *expr = SqlExpr::Value(datafusion::sql::sqlparser::ast::Value::Null.into());
            return ControlFlow::Continue(());
        }
        let SetExpr::Select(select) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
        if grouped || select.projection.len() != 1 || select.having.is_some() {
            return ControlFlow::Continue(());
        }
        let column = match &mut select.projection[0] {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => return ControlFlow::Continue(()),
        };
        let aggregated = matches!(column, SqlExpr::Function(f) if {
            let name = f.name.to_string().to_lowercase();
            ["max", "min", "count", "sum", "avg", "array_agg", "string_agg", "bool_and", "bool_or"]
                .contains(&name.trim_start_matches("pg_catalog."))
        });
        if aggregated {
            return ControlFlow::Continue(());
        }
        let Ok(mut max) = datafusion::sql::sqlparser::parser::Parser::new(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
        )
        .try_with_sql("max(NULL)")
        .and_then(|mut p| p.parse_expr()) else {
            return ControlFlow::Continue(());
        };
        if let SqlExpr::Function(f) = &mut max
            && let FunctionArguments::List(list) = &mut f.args
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))) = list.args.first_mut()
        {
            *arg = column.clone();
            *column = max;
        }
        ControlFlow::Continue(())
    }
}

/// Refuses casts to text of a length (`CAST(x AS varchar(2))`, `x::char(3)`): PostgreSQL cuts
/// or pads the text to that length, and Weir's text has no length, so it would keep the whole
/// text and give a plausible wrong value.
pub(crate) fn refuse_text_lengths(stmt: &Statement) -> crate::Result<()> {
    use datafusion::sql::sqlparser::ast::{DataType, Visit, Visitor};
    struct Lengths;
    impl Visitor for Lengths {
        type Break = String;
        fn pre_visit_expr(&mut self, expr: &SqlExpr) -> ControlFlow<String> {
            if let SqlExpr::Cast { data_type, .. } = expr {
                if let DataType::Character(Some(_))
                | DataType::Char(Some(_))
                | DataType::CharacterVarying(Some(_))
                | DataType::CharVarying(Some(_))
                | DataType::Varchar(Some(_))
                | DataType::Nvarchar(Some(_)) = data_type
                {
                    return ControlFlow::Break(data_type.to_string());
                }
            }
            ControlFlow::Continue(())
        }
    }
    match stmt.visit(&mut Lengths) {
        ControlFlow::Break(ty) => Err(crate::Error::NotSupported(format!(
            "a cast to {ty} is not supported: Weir's text has no length, so it cannot cut or pad \
             the text as PostgreSQL does; cast to text, and use left(x, n) or rpad(x, n) for the \
             length"
        ))),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// The column name that stands for `*` in `FORCE_QUOTE *` once parsed: PostgreSQL's
/// identifiers cannot hold a NUL, so no column has it.
pub const FORCE_QUOTE_ALL: &str = "\u{0}*";

/// `FORCE_QUOTE *` (and the older `FORCE QUOTE *`), which sqlparser does not read, with the `*`
/// as a column named [`FORCE_QUOTE_ALL`], so that COPY quotes every column.
pub(crate) fn force_quote_all(
    tokens: Vec<datafusion::sql::sqlparser::tokenizer::TokenWithSpan>,
) -> Vec<datafusion::sql::sqlparser::tokenizer::TokenWithSpan> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Word};
    let word = |t: &Token, w: &str| matches!(t, Token::Word(x) if x.value.eq_ignore_ascii_case(w));
    let mut out = Vec::with_capacity(tokens.len());
    // The tokens of the last two words seen (whitespace skipped), to recognize the two forms.
    let mut last: Vec<Token> = Vec::new();
    for mut t in tokens {
        if t.token == Token::Mul {
            let n = last.len();
            let all = Token::Word(Word {
                value: FORCE_QUOTE_ALL.into(),
                quote_style: Some('"'),
                keyword: datafusion::sql::sqlparser::keywords::Keyword::NoKeyword,
            });
            if n >= 1 && word(&last[n - 1], "FORCE_QUOTE") {
                // The option list's form takes its columns in parentheses.
                let span = t.span;
                for token in [Token::LParen, all, Token::RParen] {
                    out.push(datafusion::sql::sqlparser::tokenizer::TokenWithSpan::new(
                        token, span,
                    ));
                }
                last.clear();
                continue;
            }
            if n >= 2 && word(&last[n - 2], "FORCE") && word(&last[n - 1], "QUOTE") {
                t.token = all;
            }
        }
        if !matches!(t.token, Token::Whitespace(_)) {
            last.push(t.token.clone());
            if last.len() > 2 {
                last.remove(0);
            }
        }
        out.push(t);
    }
    out
}
