//! CREATE FUNCTION ... LANGUAGE SQL and DROP FUNCTION: functions of one SQL expression.

use datafusion::sql::sqlparser::ast::{
    CreateFunction, CreateFunctionBody, Expr as SqlExpr, FunctionReturnType, SelectItem, SetExpr,
    Statement, Value,
};

use super::Handler;
use crate::catalog::FunctionDef;
use crate::output::Output;
use crate::syntax::{WeirStatement, normalize, object_name, parse};
use crate::{Error, Result};

fn not_supported(what: &str) -> Error {
    Error::NotSupported(format!(
        "{what}; Weir's functions are CREATE FUNCTION name(arg type, ...) RETURNS type \
         LANGUAGE SQL AS $$ SELECT expression $$ (or RETURN expression)"
    ))
}

/// The expression of a body `SELECT expression` (no FROM, one column), as SQL.
fn body_expression(text: &str) -> Result<String> {
    let mut stmts = parse(text)?;
    let (Some(WeirStatement::Sql(stmt)), true) = (stmts.pop(), stmts.is_empty()) else {
        return Err(not_supported("a body of more than one statement"));
    };
    let Statement::Query(query) = *stmt else {
        return Err(not_supported("a body that is not a SELECT"));
    };
    let SetExpr::Select(select) = *query.body else {
        return Err(not_supported("a body that is not a simple SELECT"));
    };
    match (select.from.is_empty(), select.projection.as_slice()) {
        (true, [SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }])
            if select.selection.is_none() =>
        {
            Ok(e.to_string())
        }
        _ => Err(not_supported(
            "a body other than SELECT of one expression over the arguments",
        )),
    }
}

/// The catalog definition of `CREATE FUNCTION`.
fn function_def(cf: CreateFunction) -> Result<FunctionDef> {
    if cf.or_replace || cf.or_alter || cf.temporary {
        return Err(not_supported("CREATE OR REPLACE and TEMPORARY functions"));
    }
    if let Some(language) = &cf.language {
        if !language.value.eq_ignore_ascii_case("sql") {
            return Err(not_supported(&format!("LANGUAGE {language}")));
        }
    }
    let name = object_name(&cf.name)?;
    let mut args = Vec::new();
    for arg in cf.args.unwrap_or_default() {
        let Some(arg_name) = arg.name else {
            return Err(not_supported("an argument without a name"));
        };
        if arg.default_expr.is_some() || arg.mode.is_some() {
            return Err(not_supported("argument defaults and modes"));
        }
        args.push((normalize(&arg_name), arg.data_type.to_string()));
    }
    let returns = match cf.return_type {
        Some(FunctionReturnType::DataType(t)) => t.to_string(),
        _ => {
            return Err(not_supported(
                "a function without RETURNS type, or RETURNS SETOF",
            ));
        }
    };
    let body = match cf.function_body {
        Some(
            CreateFunctionBody::AsBeforeOptions { body, .. }
            | CreateFunctionBody::AsAfterOptions(body),
        ) => match body {
            SqlExpr::Value(v) => match &v.value {
                Value::DollarQuotedString(s) => body_expression(&s.value)?,
                Value::SingleQuotedString(s) => body_expression(s)?,
                _ => return Err(not_supported("this function body")),
            },
            _ => return Err(not_supported("this function body")),
        },
        Some(CreateFunctionBody::Return(e)) => e.to_string(),
        _ => return Err(not_supported("this function body")),
    };
    Ok(FunctionDef {
        name,
        args,
        returns,
        body,
    })
}

impl Handler {
    /// `CREATE FUNCTION name(arg type, ...) RETURNS type LANGUAGE SQL AS $$ SELECT expr $$`:
    /// planned now (a body that does not plan is refused), kept in the catalog, and usable in
    /// every session's queries and views.
    pub(crate) async fn create_function(&self, stmt: Statement) -> Result<Output> {
        let Statement::CreateFunction(cf) = stmt else {
            return Err(Error::Internal("CREATE FUNCTION lost its statement".into()));
        };
        let if_not_exists = cf.if_not_exists;
        let def = function_def(cf)?;
        let exists = self
            .db
            .registry()
            .functions()
            .iter()
            .any(|f| f.name == def.name);
        if exists && if_not_exists {
            self.notice(
                "42723",
                format!("function \"{}\" already exists, skipping", def.name),
            );
            return Ok(Output::Command("CREATE FUNCTION".into()));
        }
        if exists || self.ctx.state().scalar_functions().contains_key(&def.name) {
            return Err(Error::WrongObject {
                sqlstate: "42723",
                message: format!("function \"{}\" already exists", def.name),
            });
        }
        crate::providers::functions::plan_function(&self.ctx.state(), &def)?;
        self.blocking(move |db| db.create_function(def)).await?;
        self.sync_functions();
        Ok(Output::Command("CREATE FUNCTION".into()))
    }

    /// `DROP FUNCTION [IF EXISTS] name [(types)] [CASCADE]`: views that call it are an error
    /// (2BP01), or with CASCADE are dropped too.
    pub(crate) async fn drop_function(&self, stmt: Statement) -> Result<Output> {
        let Statement::DropFunction(df) = stmt else {
            return Err(Error::Internal("DROP FUNCTION lost its statement".into()));
        };
        let cascade = matches!(
            df.drop_behavior,
            Some(datafusion::sql::sqlparser::ast::DropBehavior::Cascade)
        );
        for desc in df.func_desc {
            let name = object_name(&desc.name)?;
            if !self
                .db
                .registry()
                .functions()
                .iter()
                .any(|f| f.name == name)
            {
                if df.if_exists {
                    continue;
                }
                return Err(Error::WrongObject {
                    sqlstate: "42883",
                    message: format!("function {name}() does not exist"),
                });
            }
            self.blocking(move |db| db.drop_function(&name, cascade))
                .await?;
        }
        self.sync_functions();
        Ok(Output::Command("DROP FUNCTION".into()))
    }
}
