//! BEGIN, COMMIT, ROLLBACK, and the session resets drivers send (DEALLOCATE, DISCARD).

use datafusion::sql::sqlparser::ast::Statement;

use super::Handler;
use crate::output::Output;
use crate::{Error, Result};

impl Handler {
    /// `BEGIN` / `COMMIT` / `ROLLBACK`: every statement commits when it completes, so a
    /// ROLLBACK after a change since BEGIN is refused rather than pretended.
    pub(crate) fn transaction(&self, stmt: &Statement) -> Result<Output> {
        let mut transaction = self.transaction.lock().unwrap_or_else(|e| e.into_inner());
        match stmt {
            Statement::StartTransaction { .. } => {
                *transaction = Some(0);
                Ok(Output::Transaction(true, "BEGIN"))
            }
            Statement::Commit { .. } => {
                transaction.take();
                Ok(Output::Transaction(false, "COMMIT"))
            }
            Statement::Rollback { .. } => {
                let changed = transaction.take().unwrap_or(0);
                if changed > 0 {
                    return Err(Error::WrongObject {
                        sqlstate: "0A000",
                        message: format!(
                            "ROLLBACK cannot undo the {changed} statement(s) since BEGIN that changed data: \
                             Weir commits every statement when it completes"
                        ),
                    });
                }
                Ok(Output::Transaction(false, "ROLLBACK"))
            }
            _ => Err(Error::Internal(
                "a transaction statement was misclassified".into(),
            )),
        }
    }

    /// `DEALLOCATE` / `DISCARD`: drivers and pools reset sessions with these; prepared
    /// statements live in the wire protocol's portal store, and there is nothing else to
    /// discard.
    pub(crate) fn reset(&self, stmt: &Statement) -> Result<Output> {
        Ok(Output::Command(
            match stmt {
                Statement::Deallocate { .. } => "DEALLOCATE",
                _ => "DISCARD ALL",
            }
            .into(),
        ))
    }
}
