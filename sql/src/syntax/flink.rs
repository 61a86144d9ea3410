//! Flink SQL's dialect where a query is written in it: backtick identifiers, the window table
//! functions `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), ...))` and the group windows
//! `GROUP BY TUMBLE(ts, size)` with `TUMBLE_START(...)`, rewritten into the forms Weir's
//! planner knows.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident,
    ObjectName, Query, Select, SetExpr, Statement, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan, Word};

use super::parser::is_word;
use crate::{Error, Result};

/// Turns each backtick-quoted identifier (Flink's and MySQL's quoting) into a double-quoted one.
///
/// The name inside folds to lower case, as an unquoted name does in Weir (and PostgreSQL), so
/// that `` `dateTime` `` finds the column `dateTime` declared without quotes; the quotes still
/// let a reserved word such as `` `value` `` be a name. An unclosed backtick is a syntax error.
pub(super) fn backtick_identifiers(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    if !tokens.iter().any(|t| t.token == Token::Char('`')) {
        return Ok(tokens);
    }
    let mut out = Vec::with_capacity(tokens.len());
    let mut tokens = tokens.into_iter();
    while let Some(t) = tokens.next() {
        if t.token != Token::Char('`') {
            out.push(t);
            continue;
        }
        let mut name = String::new();
        let end = loop {
            match tokens.next() {
                Some(inner) if inner.token == Token::Char('`') => break inner.span,
                Some(inner) => name.push_str(&inner.token.to_string()),
                None => {
                    return Err(Error::Syntax(format!(
                        "unterminated quoted identifier `{name} at {}",
                        t.span.start
                    )));
                }
            }
        };
        if name.is_empty() {
            return Err(Error::Syntax(format!(
                "zero-length quoted identifier at {}",
                t.span.start
            )));
        }
        out.push(TokenWithSpan {
            token: Token::Word(Word {
                value: name.to_lowercase(),
                quote_style: Some('"'),
                keyword: Keyword::NoKeyword,
            }),
            span: Span::new(t.span.start, end.end),
        });
    }
    Ok(out)
}

/// The columns of `PARTITION BY a, b` or `PARTITION BY (a, b)` at `*j` (lower-cased as
/// unquoted names are), moving `*j` past them; none when there is no PARTITION BY, and `None`
/// when it is malformed.
fn partition_by(t: &[TokenWithSpan], j: &mut usize) -> Option<Vec<String>> {
    let tok = |i: usize| t.get(i).map(|x| &x.token);
    let word = |i: usize, w: &str| tok(i).is_some_and(|x| is_word(x, w));
    let column = |i: usize| match tok(i) {
        Some(Token::Word(w)) if w.quote_style.is_some() => Some(w.value.clone()),
        Some(Token::Word(w)) => Some(w.value.to_lowercase()),
        _ => None,
    };
    if !(word(*j, "PARTITION") && word(*j + 1, "BY")) {
        return Some(Vec::new());
    }
    let mut k = *j + 2;
    let parenthesized = tok(k) == Some(&Token::LParen);
    if parenthesized {
        k += 1;
    }
    let mut columns = Vec::new();
    loop {
        columns.push(column(k)?);
        k += 1;
        let more = tok(k) == Some(&Token::Comma) && (parenthesized || !word(k + 1, "DESCRIPTOR"));
        if !more {
            break;
        }
        k += 1;
    }
    if parenthesized {
        if tok(k) != Some(&Token::RParen) {
            return None;
        }
        k += 1;
    }
    *j = k;
    Some(columns)
}

/// Rewrites Flink's window table functions into Weir's:
/// `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size))` becomes `TUMBLE(t, ts, size)`, and the same for
/// HOP; `TABLE(SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), gap))` becomes
/// `SESSION(t, ts, 'k', gap)` (the partition columns as text, which the planner checks against
/// the GROUP BY); so that queries written for Flink (Nexmark's among them) run unchanged.
pub(super) fn rewrite_windows(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let t: Vec<TokenWithSpan> = tokens
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let tok = |i: usize| t.get(i).map(|x| &x.token);
    let word = |i: usize, w: &str| tok(i).is_some_and(|x| is_word(x, w));
    let mut out = Vec::with_capacity(t.len());
    // Emitted-paren depths at which a dropped `TABLE(` is waiting for its `)`.
    let mut dropped: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < t.len() {
        let session = word(i + 2, "SESSION");
        let is_tvf = word(i, "TABLE")
            && tok(i + 1) == Some(&Token::LParen)
            && (word(i + 2, "TUMBLE") || word(i + 2, "HOP") || session)
            && tok(i + 3) == Some(&Token::LParen)
            && word(i + 4, "TABLE");
        if is_tvf {
            // TABLE name [. name ...] [PARTITION BY columns] , DESCRIPTOR ( column ) ,
            let mut j = i + 5;
            while matches!(tok(j), Some(Token::Word(_) | Token::Period))
                && !(session && word(j, "PARTITION") && word(j + 1, "BY"))
            {
                j += 1;
            }
            let name_end = j;
            let partition = match session {
                true => partition_by(&t, &mut j),
                false => Some(Vec::new()),
            };
            let shape = name_end > i + 5
                && partition.is_some()
                && tok(j) == Some(&Token::Comma)
                && word(j + 1, "DESCRIPTOR")
                && tok(j + 2) == Some(&Token::LParen)
                && matches!(tok(j + 3), Some(Token::Word(_)))
                && tok(j + 4) == Some(&Token::RParen)
                && tok(j + 5) == Some(&Token::Comma);
            if shape {
                dropped.push(depth);
                out.push(t[i + 2].clone());
                out.push(t[i + 3].clone());
                depth += 1;
                out.extend(t[i + 5..name_end].iter().cloned());
                out.push(t[j].clone());
                out.push(t[j + 3].clone());
                out.push(t[j + 5].clone());
                if session {
                    // SESSION(t, ts, 'partition columns', gap): see the window function.
                    let columns = partition.unwrap_or_default().join(",");
                    out.push(TokenWithSpan::wrap(Token::SingleQuotedString(columns)));
                    out.push(t[j + 5].clone());
                }
                i = j + 6;
                continue;
            }
        }
        match &t[i].token {
            Token::LParen => depth += 1,
            Token::RParen if dropped.last() == Some(&depth) => {
                dropped.pop();
                i += 1;
                continue;
            }
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        out.push(t[i].clone());
        i += 1;
    }
    out
}

/// Flink's temporal joins (`JOIN t FOR SYSTEM_TIME AS OF x.p_time`). As of a processing-time
/// attribute (a column the statement defines as `PROCTIME()`), the join sees the table as it is
/// when each event is processed: Weir's lookup join, so the clause goes, and with it the
/// `PROCTIME()` column if nothing else reads it. As of any other column (Flink's event-time
/// temporal join against a versioned table) it is refused with the reason.
pub(super) fn temporal_joins(mut tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    while let Some(at) = find_words(&tokens, &["FOR", "SYSTEM_TIME", "AS", "OF"]) {
        // The attribute: name [. name ...]; its last part is the column.
        let mut end = at.last().copied().unwrap_or(0);
        let mut column = None;
        loop {
            let Some(next) = next_solid(&tokens, end + 1) else {
                break;
            };
            match &tokens[next].token {
                Token::Word(w) if column.is_none() || tokens[end].token == Token::Period => {
                    column = Some(w.value.to_lowercase());
                    end = next;
                }
                Token::Period if column.is_some() => end = next,
                _ => break,
            }
        }
        let Some(column) = column else {
            return Err(Error::Syntax("FOR SYSTEM_TIME AS OF needs a column".into()));
        };
        let Some(definition) = proctime_definition(&tokens, &column) else {
            // As of an event-time column: the relation is read as versions, as of the column.
            tokens = as_of_event_time(tokens, &at, end)?;
            continue;
        };
        let first = at[0];
        tokens.splice(first..=end, [blank()]);
        // The PROCTIME() column goes too when nothing else reads it (it comes before the join).
        let (from, alias) = definition;
        let read_elsewhere = tokens.iter().enumerate().any(|(i, t)| {
            i != alias && matches!(&t.token, Token::Word(w) if w.value.to_lowercase() == column)
        });
        if !read_elsewhere && alias < first {
            tokens.splice(from..=alias, [blank()]);
        }
    }
    Ok(tokens)
}

/// The table function that reads a stream as versions (see `providers::versions`).
pub const VERSIONS: &str = "weir_versions";

/// `r FOR SYSTEM_TIME AS OF l.ts` (the clause at `at`, its attribute ending at `end`)
/// becomes `weir_versions(r, 'l.ts')`: the stream `r` read as a versioned table, joined as of
/// `l.ts` (an event-time temporal join; the planner checks the rest).
fn as_of_event_time(
    mut tokens: Vec<TokenWithSpan>,
    at: &[usize],
    end: usize,
) -> Result<Vec<TokenWithSpan>> {
    let solid = |i: usize| !matches!(tokens[i].token, Token::Whitespace(_));
    let attribute: Vec<String> = (at[at.len() - 1] + 1..=end)
        .filter(|&i| solid(i))
        .filter_map(|i| match &tokens[i].token {
            Token::Word(w) if w.quote_style.is_some() => Some(w.value.clone()),
            Token::Word(w) => Some(w.value.to_lowercase()),
            _ => None,
        })
        .collect();
    // The relation's name: words joined by periods, right before FOR.
    let mut start = at[0];
    let mut expect_word = true;
    while let Some(i) = (0..start).rev().find(|&i| solid(i)) {
        match (&tokens[i].token, expect_word) {
            (Token::Word(w), true) if w.keyword != Keyword::JOIN => {
                start = i;
                expect_word = false;
            }
            (Token::Period, false) => {
                start = i;
                expect_word = true;
            }
            _ => break,
        }
    }
    if start == at[0] || expect_word {
        return Err(Error::Syntax(
            "FOR SYSTEM_TIME AS OF follows the name of the relation it versions".into(),
        ));
    }
    let name: Vec<TokenWithSpan> = (start..at[0])
        .filter(|&i| solid(i))
        .map(|i| tokens[i].clone())
        .collect();
    let mut call = vec![
        TokenWithSpan::wrap(Token::make_word(VERSIONS, None)),
        TokenWithSpan::wrap(Token::LParen),
    ];
    call.extend(name);
    call.push(TokenWithSpan::wrap(Token::Comma));
    call.push(TokenWithSpan::wrap(Token::SingleQuotedString(
        attribute.join("."),
    )));
    call.push(TokenWithSpan::wrap(Token::RParen));
    tokens.splice(start..=end, call);
    Ok(tokens)
}

fn blank() -> TokenWithSpan {
    TokenWithSpan::wrap(Token::Whitespace(
        datafusion::sql::sqlparser::tokenizer::Whitespace::Space,
    ))
}

/// The index of the first token that is not whitespace, from `from` on.
fn next_solid(tokens: &[TokenWithSpan], from: usize) -> Option<usize> {
    (from..tokens.len()).find(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
}

/// The indexes of the first run of `words` (unquoted, between whitespace).
fn find_words(tokens: &[TokenWithSpan], words: &[&str]) -> Option<Vec<usize>> {
    let solid: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    solid
        .windows(words.len())
        .find(|w| {
            w.iter()
                .zip(words)
                .all(|(&i, word)| is_word(&tokens[i].token, word))
        })
        .map(<[usize]>::to_vec)
}

/// Where the select item `, PROCTIME() [AS] column` is: the index of its comma and of the
/// alias.
fn proctime_definition(tokens: &[TokenWithSpan], column: &str) -> Option<(usize, usize)> {
    let solid: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    solid.iter().enumerate().find_map(|(k, &i)| {
        if !is_word(&tokens[i].token, "PROCTIME") {
            return None;
        }
        let at = |d: usize| solid.get(k + d).map(|&j| (j, &tokens[j].token));
        let comma = k.checked_sub(1).map(|p| solid[p]);
        let (Some((_, Token::LParen)), Some((_, Token::RParen))) = (at(1), at(2)) else {
            return None;
        };
        let alias = match at(3) {
            Some((_, t)) if is_word(t, "AS") => at(4),
            other => other,
        };
        match (comma, alias) {
            (Some(c), Some((a, Token::Word(w))))
                if tokens[c].token == Token::Comma && w.value.to_lowercase() == column =>
            {
                Some((c, a))
            }
            _ => None,
        }
    })
}

/// Flink's `CREATE [TEMPORARY [SYSTEM]] FUNCTION [IF NOT EXISTS] name AS 'java.Class'
/// [LANGUAGE JAVA]`: refused with the reason, rather than as a syntax error.
pub(super) fn java_function(parser: &Parser<'_>) -> Option<Error> {
    let word = |i: usize, w: &str| is_word(&parser.peek_nth_token(i).token, w);
    if !word(0, "CREATE") {
        return None;
    }
    let mut i = 1;
    while word(i, "TEMPORARY") || word(i, "SYSTEM") {
        i += 1;
    }
    if !word(i, "FUNCTION") {
        return None;
    }
    i += 1;
    if word(i, "IF") {
        i += 3;
    }
    // name [. name ...] AS 'class'
    i += 1;
    while parser.peek_nth_token(i).token == Token::Period {
        i += 2;
    }
    let class = match (word(i, "AS"), parser.peek_nth_token(i + 1).token) {
        (true, Token::SingleQuotedString(class)) => class,
        _ => return None,
    };
    Some(Error::NotSupported(format!(
        "CREATE FUNCTION ... AS '{class}' loads a Java class, which Weir cannot run; \
         write the function in SQL instead"
    )))
}

/// A group window of Flink's legacy syntax: `GROUP BY k, TUMBLE(ts, size)`.
struct GroupWindow {
    /// `tumble`, `hop` or `session`.
    kind: String,
    /// The time column, unqualified.
    time: Ident,
    /// The interval arguments after the time column, as SQL text.
    args: Vec<String>,
}

/// The group window a GROUP BY item calls, if it is one.
fn group_window(expr: &Expr) -> Result<Option<GroupWindow>> {
    let Expr::Function(f) = expr else {
        return Ok(None);
    };
    let kind = f.name.to_string().to_lowercase();
    if !matches!(kind.as_str(), "tumble" | "hop" | "session") {
        return Ok(None);
    }
    let FunctionArguments::List(list) = &f.args else {
        return Ok(None);
    };
    let mut args = list.args.iter().map(|a| match a {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
        _ => None,
    });
    let time = match args.next().flatten() {
        Some(Expr::Identifier(i)) => i.clone(),
        Some(Expr::CompoundIdentifier(parts)) if !parts.is_empty() => {
            parts[parts.len() - 1].clone()
        }
        _ => {
            return Err(Error::Syntax(format!(
                "GROUP BY {expr}: the first argument of a group window is a time column"
            )));
        }
    };
    let args: Vec<String> = args
        .map(|a| a.map(ToString::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::Syntax(format!("GROUP BY {expr}: unexpected arguments")))?;
    let expected = if kind == "hop" { 2 } else { 1 };
    if args.len() != expected {
        return Err(Error::Syntax(format!(
            "GROUP BY {expr}: {} takes a time column and {expected} interval(s)",
            kind.to_uppercase()
        )));
    }
    Ok(Some(GroupWindow { kind, time, args }))
}

/// Replaces `TUMBLE_START(ts, size)`, `HOP_END(...)`, `SESSION_ROWTIME(...)`, ... with the
/// window's columns; counts the calls it finds to a window other than `window`.
struct WindowProperties<'a> {
    window: &'a GroupWindow,
    mismatched: Option<String>,
}

impl VisitorMut for WindowProperties<'_> {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(f) = &*expr else {
            return ControlFlow::Continue(());
        };
        let name = f.name.to_string().to_lowercase();
        let Some((kind, property)) = name.split_once('_') else {
            return ControlFlow::Continue(());
        };
        if !matches!(kind, "tumble" | "hop" | "session")
            || !matches!(property, "start" | "end" | "rowtime")
        {
            return ControlFlow::Continue(());
        }
        let call = f.to_string();
        let same = match group_window(&Expr::Function(Function {
            name: ObjectName::from(vec![Ident::new(kind)]),
            ..f.clone()
        })) {
            Ok(Some(w)) => {
                w.kind == self.window.kind
                    && w.args == self.window.args
                    && w.time.value.eq_ignore_ascii_case(&self.window.time.value)
            }
            _ => false,
        };
        if !same {
            self.mismatched = Some(call);
            return ControlFlow::Break(());
        }
        *expr = match property {
            "start" => Expr::Identifier(Ident::new("window_start")),
            "end" => Expr::Identifier(Ident::new("window_end")),
            // Flink's rowtime of a window is its last millisecond.
            _ => parse_expr("window_end - INTERVAL '1' MILLISECOND"),
        };
        ControlFlow::Continue(())
    }
}

fn parse_expr(sql: &str) -> Expr {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .unwrap_or_else(|_| Expr::Identifier(Ident::new("window_end")))
}

/// Rewrites a SELECT in Flink's group-window syntax into Weir's window table functions:
///
/// ```sql
/// SELECT k, SESSION_START(ts, INTERVAL '10' SECOND), count(*) FROM t AS x
/// GROUP BY k, SESSION(ts, INTERVAL '10' SECOND)
/// -- becomes
/// SELECT k, window_start, count(*) FROM SESSION(t, ts, INTERVAL '10' SECOND) AS x
/// GROUP BY k, window_start, window_end
/// ```
fn rewrite_group_window(select: &mut Select) -> Result<()> {
    let GroupByExpr::Expressions(items, _) = &mut select.group_by else {
        return Ok(());
    };
    let mut window = None;
    let mut rest = Vec::with_capacity(items.len() + 1);
    for item in items.drain(..) {
        match group_window(&item)? {
            Some(w) if window.is_none() => window = Some(w),
            Some(_) => {
                return Err(Error::NotSupported(
                    "more than one group window in one GROUP BY".into(),
                ));
            }
            None => rest.push(item),
        }
    }
    let Some(window) = window else {
        *items = rest;
        return Ok(());
    };
    rest.push(Expr::Identifier(Ident::new("window_start")));
    rest.push(Expr::Identifier(Ident::new("window_end")));
    *items = rest;
    let [from] = select.from.as_mut_slice() else {
        return Err(Error::NotSupported(
            "a group window (GROUP BY TUMBLE/HOP/SESSION(...)) over more than one relation; window one stream with the window table functions instead".into(),
        ));
    };
    if !from.joins.is_empty() {
        return Err(Error::NotSupported(
            "a group window (GROUP BY TUMBLE/HOP/SESSION(...)) over a join; window one stream with the window table functions instead".into(),
        ));
    }
    let (source, alias) = match &from.relation {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => (name.to_string(), alias.clone()),
        TableFactor::Derived {
            subquery, alias, ..
        } => (format!("({subquery})"), alias.clone()),
        other => {
            return Err(Error::NotSupported(format!(
                "a group window over {other}: window a stream or a subquery"
            )));
        }
    };
    let alias = alias.map(|a| format!(" AS {a}")).unwrap_or_default();
    let sql = format!(
        "SELECT * FROM {}({source}, {}, {}){alias}",
        window.kind,
        window.time,
        window.args.join(", ")
    );
    let parsed = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
        .map_err(|e| Error::Syntax(format!("group window: {e}")))?;
    let SetExpr::Select(windowed) = *parsed.body else {
        return Err(Error::Internal("a window query lost its SELECT".into()));
    };
    if let Some(relation) = windowed.from.into_iter().next().map(|f| f.relation) {
        from.relation = relation;
    }
    let mut properties = WindowProperties {
        window: &window,
        mismatched: None,
    };
    let _ = select.projection.visit(&mut properties);
    let _ = select.having.visit(&mut properties);
    if let Some(call) = properties.mismatched {
        return Err(Error::NotSupported(format!(
            "{call} names another window than the GROUP BY's {}({}, {})",
            window.kind.to_uppercase(),
            window.time,
            window.args.join(", ")
        )));
    }
    Ok(())
}

/// Applies [`rewrite_group_window`] to every SELECT of a statement.
pub(super) fn rewrite_group_windows(stmt: &mut Statement) -> Result<()> {
    struct Selects(Option<Error>);
    impl VisitorMut for Selects {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_mut() {
                if let Err(e) = rewrite_group_window(select) {
                    self.0 = Some(e);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut selects = Selects(None);
    let _ = stmt.visit(&mut selects);
    selects.0.map_or(Ok(()), Err)
}
