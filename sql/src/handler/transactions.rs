//! BEGIN, COMMIT, ROLLBACK, savepoints, and the session resets drivers send (DEALLOCATE,
//! DISCARD).
//!
//! Weir commits every statement when it completes. A transaction block is accepted for the
//! clients that open one around their work, and a ROLLBACK (to the block's start or to a
//! savepoint) is accepted where nothing changed since: undoing a change would be needed
//! otherwise, and that is refused rather than pretended.

use datafusion::sql::sqlparser::ast::{Ident, Statement};

use super::Handler;
use crate::output::Output;
use crate::syntax::normalize;
use crate::{Error, Result};

/// An open transaction block.
#[derive(Debug, Default)]
pub(crate) struct Block {
    /// Statements that changed data since `BEGIN`.
    pub(crate) changes: u64,
    /// Savepoints, oldest first, each with the changes made before it.
    savepoints: Vec<(String, u64)>,
}

fn outside(what: &str) -> Error {
    Error::WrongObject {
        sqlstate: "25P01",
        message: format!("{what} can only be used in transaction blocks"),
    }
}

fn no_savepoint(name: &str) -> Error {
    Error::WrongObject {
        sqlstate: "3B001",
        message: format!("savepoint \"{name}\" does not exist"),
    }
}

fn cannot_undo(changed: u64, since: &str) -> Error {
    Error::WrongObject {
        sqlstate: "0A000",
        message: format!(
            "ROLLBACK cannot undo the {changed} statement(s) since {since} that changed data: \
             Weir commits every statement when it completes"
        ),
    }
}

impl Block {
    /// The position of the newest savepoint called `name`.
    fn find(&self, name: &Ident) -> Result<usize> {
        let name = normalize(name);
        self.savepoints
            .iter()
            .rposition(|(n, _)| *n == name)
            .ok_or_else(|| no_savepoint(&name))
    }
}

impl Handler {
    /// `BEGIN` / `COMMIT` / `ROLLBACK` / `SAVEPOINT` / `RELEASE` / `ROLLBACK TO`.
    pub(crate) fn transaction(&self, stmt: &Statement) -> Result<Output> {
        let mut transaction = self.transaction.lock().unwrap_or_else(|e| e.into_inner());
        match stmt {
            Statement::StartTransaction { .. } => {
                *transaction = Some(Block::default());
                Ok(Output::Transaction(true, "BEGIN"))
            }
            Statement::Commit { .. } => {
                transaction.take();
                Ok(Output::Transaction(false, "COMMIT"))
            }
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => {
                let block = transaction
                    .as_mut()
                    .ok_or_else(|| outside("ROLLBACK TO SAVEPOINT"))?;
                let at = block.find(name)?;
                let changed = block.changes - block.savepoints[at].1;
                if changed > 0 {
                    return Err(cannot_undo(
                        changed,
                        &format!("savepoint {}", block.savepoints[at].0),
                    ));
                }
                // The savepoint stays; those after it go.
                block.savepoints.truncate(at + 1);
                Ok(Output::Command("ROLLBACK".into()))
            }
            Statement::Rollback { .. } => {
                let changed = transaction.take().map_or(0, |b| b.changes);
                if changed > 0 {
                    return Err(cannot_undo(changed, "BEGIN"));
                }
                Ok(Output::Transaction(false, "ROLLBACK"))
            }
            Statement::Savepoint { name } => {
                let block = transaction.as_mut().ok_or_else(|| outside("SAVEPOINT"))?;
                let changes = block.changes;
                block.savepoints.push((normalize(name), changes));
                Ok(Output::Command("SAVEPOINT".into()))
            }
            Statement::ReleaseSavepoint { name } => {
                let block = transaction
                    .as_mut()
                    .ok_or_else(|| outside("RELEASE SAVEPOINT"))?;
                let at = block.find(name)?;
                block.savepoints.truncate(at);
                Ok(Output::Command("RELEASE".into()))
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
