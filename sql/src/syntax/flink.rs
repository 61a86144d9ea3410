//! Flink SQL's dialect where a query is written in it: backtick identifiers and the window
//! table functions `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), ...))`, rewritten on tokens before
//! parsing into the forms Weir's planner knows.

use datafusion::sql::sqlparser::keywords::Keyword;
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

/// Rewrites Flink's window table functions into Weir's:
/// `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size))` becomes `TUMBLE(t, ts, size)`, and the same for
/// HOP, so that queries written for Flink (Nexmark's among them) run unchanged.
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
        let is_tvf = word(i, "TABLE")
            && tok(i + 1) == Some(&Token::LParen)
            && (word(i + 2, "TUMBLE") || word(i + 2, "HOP"))
            && tok(i + 3) == Some(&Token::LParen)
            && word(i + 4, "TABLE");
        if is_tvf {
            // TABLE name [. name ...] , DESCRIPTOR ( column ) ,
            let mut j = i + 5;
            while matches!(tok(j), Some(Token::Word(_) | Token::Period)) {
                j += 1;
            }
            let shape = j > i + 5
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
                out.extend(t[i + 5..j].iter().cloned());
                out.push(t[j].clone());
                out.push(t[j + 3].clone());
                out.push(t[j + 5].clone());
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
