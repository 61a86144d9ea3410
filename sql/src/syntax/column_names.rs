//! The names PostgreSQL gives a query's result columns (its `FigureColname`): a column's own
//! name, a function's name, a cast's type, `?column?` for other expressions.

use datafusion::sql::sqlparser::ast::{
    AccessExpr, DataType as SqlType, Expr, Ident, ObjectName, Query, SelectItem, SetExpr, Statement,
};

/// How sure a name is: PostgreSQL lets a cast keep its argument's name only if that is a
/// real name, not a fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Figured {
    /// A column's, function's or keyword's name.
    Name(String),
    /// A cast's type name, used when the argument has no name.
    Type(String),
    /// No name: `?column?`.
    None,
}

fn folded(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn last_name(name: &ObjectName) -> Option<String> {
    name.0.last().and_then(|part| part.as_ident()).map(folded)
}

/// PostgreSQL's internal name for a type as written (`integer` is `int4`).
fn type_name(t: &SqlType) -> String {
    let name = match t {
        SqlType::SmallInt(_) | SqlType::Int2(_) => "int2",
        SqlType::Int(_) | SqlType::Integer(_) | SqlType::Int4(_) => "int4",
        SqlType::BigInt(_) | SqlType::Int8(_) => "int8",
        SqlType::Real | SqlType::Float4 => "float4",
        SqlType::Double(_) | SqlType::DoublePrecision | SqlType::Float8 => "float8",
        SqlType::Float(_) => "float8",
        SqlType::Numeric(_) | SqlType::Decimal(_) | SqlType::Dec(_) => "numeric",
        SqlType::Text | SqlType::String(_) => "text",
        SqlType::Varchar(_) | SqlType::CharacterVarying(_) | SqlType::CharVarying(_) => "varchar",
        SqlType::Char(_) | SqlType::Character(_) => "bpchar",
        SqlType::Boolean | SqlType::Bool => "bool",
        SqlType::Timestamp(_, tz) => match tz {
            datafusion::sql::sqlparser::ast::TimezoneInfo::WithTimeZone
            | datafusion::sql::sqlparser::ast::TimezoneInfo::Tz => "timestamptz",
            _ => "timestamp",
        },
        SqlType::Date => "date",
        SqlType::Time(..) => "time",
        SqlType::Interval { .. } => "interval",
        SqlType::Bytea => "bytea",
        SqlType::Custom(name, _) => return last_name(name).unwrap_or_else(|| "?column?".into()),
        other => return other.to_string().to_lowercase(),
    };
    name.to_string()
}

fn figure(expr: &Expr) -> Figured {
    match expr {
        Expr::Identifier(i) => Figured::Name(folded(i)),
        Expr::CompoundIdentifier(parts) => parts
            .last()
            .map_or(Figured::None, |i| Figured::Name(folded(i))),
        Expr::Nested(e) => figure(e),
        Expr::Function(f) => last_name(&f.name).map_or(Figured::None, Figured::Name),
        Expr::Cast {
            expr, data_type, ..
        } => match figure(expr) {
            name @ Figured::Name(_) => name,
            _ => Figured::Type(type_name(data_type)),
        },
        Expr::TypedString(t) => Figured::Type(type_name(&t.data_type)),
        Expr::Interval(_) => Figured::Type("interval".into()),
        Expr::Extract { .. } => Figured::Name("extract".into()),
        Expr::Case { .. } => Figured::Name("case".into()),
        Expr::Substring { shorthand, .. } => {
            Figured::Name(if *shorthand { "substr" } else { "substring" }.into())
        }
        // The last field name accessed, else the name of what the subscripts apply to.
        Expr::CompoundFieldAccess { root, access_chain } => access_chain
            .iter()
            .rev()
            .find_map(|a| match a {
                AccessExpr::Dot(Expr::Identifier(i)) => Some(Figured::Name(folded(i))),
                _ => None,
            })
            .unwrap_or_else(|| figure(root)),
        Expr::Trim { .. } => Figured::Name("btrim".into()),
        Expr::Position { .. } => Figured::Name("position".into()),
        Expr::Overlay { .. } => Figured::Name("overlay".into()),
        Expr::Ceil { .. } => Figured::Name("ceil".into()),
        Expr::Floor { .. } => Figured::Name("floor".into()),
        Expr::Array(_) => Figured::Name("array".into()),
        Expr::Exists { .. } => Figured::Name("exists".into()),
        Expr::Tuple(_) => Figured::Name("row".into()),
        Expr::AtTimeZone { .. } => Figured::Name("timezone".into()),
        _ => Figured::None,
    }
}

/// The name PostgreSQL gives a select-list expression without an alias.
pub fn column_name(expr: &Expr) -> String {
    match figure(expr) {
        Figured::Name(n) | Figured::Type(n) => n,
        Figured::None => "?column?".into(),
    }
}

fn leftmost_select(body: &SetExpr) -> Option<&[SelectItem]> {
    match body {
        SetExpr::Select(s) => Some(&s.projection),
        SetExpr::Query(q) => leftmost_select(&q.body),
        SetExpr::SetOperation { left, .. } => leftmost_select(left),
        _ => None,
    }
}

/// For a query with `width` result columns, PostgreSQL's name of each column that has no alias
/// and is not from a `*` (`None` where the planner's name stands), or `None` when the select
/// list cannot be matched to the columns (two `*`s).
pub fn query_column_names(stmt: &Statement, width: usize) -> Option<Vec<Option<String>>> {
    let Statement::Query(query) = stmt else {
        return None;
    };
    names_of(query, width)
}

fn names_of(query: &Query, width: usize) -> Option<Vec<Option<String>>> {
    let items = leftmost_select(&query.body)?;
    let stars = items
        .iter()
        .filter(|i| {
            matches!(
                i,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        })
        .count();
    let expanded = match stars {
        0 if items.len() == width => 0,
        1 => width.checked_sub(items.len() - 1)?,
        _ => return None,
    };
    let mut names = Vec::with_capacity(width);
    for item in items {
        match item {
            SelectItem::UnnamedExpr(e) => names.push(Some(column_name(e))),
            SelectItem::ExprWithAlias { .. } => names.push(None),
            _ => names.extend(std::iter::repeat_n(None, expanded)),
        }
    }
    (names.len() == width).then_some(names)
}

/// Names the select-list expressions of `stmt` (a query) that have no alias and are not plain
/// columns as PostgreSQL would (`count`, `?column?`), so that a view's columns are named as in
/// PostgreSQL. Returns a name that two columns would then share (PostgreSQL refuses such a
/// view, 42701), if any.
pub fn name_view_columns(stmt: &mut Statement) -> Option<String> {
    let Statement::Query(query) = stmt else {
        return None;
    };
    let items = leftmost_select_mut(&mut query.body)?;
    let mut seen = std::collections::HashSet::new();
    let mut twice = None;
    for item in items.iter_mut() {
        let name = match item {
            SelectItem::UnnamedExpr(e @ (Expr::Identifier(_) | Expr::CompoundIdentifier(_))) => {
                column_name(e)
            }
            SelectItem::UnnamedExpr(e) => {
                let name = column_name(e);
                *item = SelectItem::ExprWithAlias {
                    expr: e.clone(),
                    alias: Ident::with_quote('"', name.clone()),
                };
                name
            }
            SelectItem::ExprWithAlias { alias, .. } => folded(alias),
            _ => continue,
        };
        if !seen.insert(name.clone()) && twice.is_none() {
            twice = Some(name);
        }
    }
    twice
}

fn leftmost_select_mut(body: &mut SetExpr) -> Option<&mut Vec<SelectItem>> {
    match body {
        SetExpr::Select(s) => Some(&mut s.projection),
        SetExpr::Query(q) => leftmost_select_mut(&mut q.body),
        SetExpr::SetOperation { left, .. } => leftmost_select_mut(left),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str, width: usize) -> Vec<String> {
        let stmt = crate::syntax::parse(sql).unwrap().pop().unwrap();
        let crate::syntax::WeirStatement::Sql(stmt) = stmt else {
            panic!("not SQL")
        };
        query_column_names(&stmt, width)
            .unwrap()
            .into_iter()
            .map(|n| n.unwrap_or_else(|| "-".into()))
            .collect()
    }

    /// Each read off PostgreSQL 15.
    #[test]
    fn names_columns_as_postgres_does() {
        assert_eq!(
            names("SELECT 1, 1 + 1, 'a' || 'b', NULL", 4),
            ["?column?", "?column?", "?column?", "?column?"]
        );
        assert_eq!(
            names(
                "SELECT TIMESTAMP '2026-01-01', DATE '2026-01-01', INTERVAL '1 day'",
                3
            ),
            ["timestamp", "date", "interval"]
        );
        assert_eq!(
            names(
                "SELECT 1.5::numeric, CAST(1 AS smallint), 1::integer, x::text FROM t",
                4
            ),
            ["numeric", "int2", "int4", "x"]
        );
        assert_eq!(
            names(
                "SELECT count(*), sum(x), upper('a'), coalesce(NULL, 3), T.X, \"Y\" FROM t",
                6
            ),
            ["count", "sum", "upper", "coalesce", "x", "Y"]
        );
        assert_eq!(
            names(
                "SELECT extract(year FROM ts), CASE WHEN true THEN 1 END, (x) FROM t",
                3
            ),
            ["extract", "case", "x"]
        );
        assert_eq!(
            names(
                "SELECT substr(s, 1), substring(s FROM 1), (ARRAY[1])[1], a[1], r.f[2] FROM t",
                5
            ),
            ["substr", "substring", "array", "a", "f"]
        );
        assert_eq!(
            names("SELECT *, x + 1, y AS z FROM t", 4),
            ["-", "-", "?column?", "-"]
        );
    }
}
