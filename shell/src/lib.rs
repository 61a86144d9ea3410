//! The Weir shell: a line-editing REPL over an embedded engine.

use std::io::Write;
use std::path::{Path, PathBuf};

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use weir_sql::{Database, Output, Session};

/// What stops the shell.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database did not open.
    #[error(transparent)]
    Sql(#[from] weir_sql::Error),
    /// The terminal failed.
    #[error("terminal: {0}")]
    Readline(#[from] ReadlineError),
    /// Writing output failed.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
}

const HELP: &str = "\
Statements end with ';' and may span lines.
  \\d      list streams and materialized views
  \\q      quit (or Ctrl-D)
  \\?      this help
Ctrl-C discards the statement being typed.";

/// Whether `sql` is one or more complete statements: it tokenizes (no open quote) and its last
/// token is `;`.
pub fn is_complete(sql: &str) -> bool {
    let dialect = PostgreSqlDialect {};
    match Tokenizer::new(&dialect, sql).tokenize() {
        Ok(tokens) => tokens
            .iter()
            .rev()
            .find(|t| !matches!(t, Token::Whitespace(_)))
            .is_some_and(|t| *t == Token::SemiColon),
        Err(_) => false,
    }
}

/// Renders batches as an aligned table.
pub fn render(batches: &[RecordBatch], schema: &datafusion::arrow::datatypes::Schema) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(schema.fields().iter().map(|f| f.name().clone()));
    let options = FormatOptions::default().with_null("NULL");
    let mut count = 0usize;
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        if formatters.len() != batch.num_columns() {
            continue;
        }
        for row in 0..batch.num_rows() {
            table.add_row(formatters.iter().map(|f| f.value(row).to_string()));
            count += 1;
        }
    }
    format!(
        "{table}\n({count} row{})",
        if count == 1 { "" } else { "s" }
    )
}

/// Reads the data of a `COPY ... FROM STDIN` from the terminal, up to a line `\.` (as psql does).
fn read_copy_data(editor: &mut DefaultEditor, out: &mut impl Write) -> std::io::Result<Vec<u8>> {
    writeln!(
        out,
        "Enter data to be copied followed by a newline.\nEnd with a backslash and a period on a line by itself, or an EOF signal."
    )?;
    let mut data = Vec::new();
    while let Ok(line) = editor.readline(">> ") {
        if line == "\\." {
            break;
        }
        data.extend_from_slice(line.as_bytes());
        data.push(b'\n');
    }
    Ok(data)
}

async fn run_sql(
    session: &Session,
    sql: &str,
    out: &mut impl Write,
    mut editor: Option<&mut DefaultEditor>,
) -> std::io::Result<()> {
    for result in session.execute(sql).await {
        match result {
            Ok(Output::Rows { schema, stream }) => {
                let output = Output::Rows {
                    schema: schema.clone(),
                    stream,
                };
                match output.collect().await {
                    Ok(batches) => writeln!(out, "{}", render(&batches, &schema))?,
                    Err(e) => writeln!(out, "ERROR {}: {e}", e.sqlstate())?,
                }
            }
            Ok(Output::Command(tag)) => writeln!(out, "{tag}")?,
            Ok(Output::Inserted(n)) => writeln!(out, "INSERT 0 {n}")?,
            Ok(Output::Modified(command, n)) => writeln!(out, "{command} {n}")?,
            Ok(Output::Transaction(_, tag)) => writeln!(out, "{tag}")?,
            Ok(Output::CopyOut { mut stream, .. }) => {
                // Live rows until the subscription ends or Ctrl-C.
                use futures::StreamExt;
                loop {
                    tokio::select! {
                        next = stream.next() => match next {
                            Some(Ok(lines)) => {
                                out.write_all(&lines)?;
                                out.flush()?;
                            }
                            Some(Err(e)) => {
                                writeln!(out, "ERROR {}: {e}", e.sqlstate())?;
                                break;
                            }
                            None => break,
                        },
                        _ = tokio::signal::ctrl_c() => {
                            writeln!(out, "(cancelled)")?;
                            break;
                        }
                    }
                }
            }
            Ok(Output::CopyIn(copy)) => {
                let Some(editor) = editor.as_deref_mut() else {
                    writeln!(out, "ERROR: COPY FROM STDIN needs the terminal")?;
                    continue;
                };
                let data = read_copy_data(editor, out)?;
                match session.copy_data(&copy, data).await {
                    Ok(n) => writeln!(out, "COPY {n}")?,
                    Err(e) => writeln!(out, "ERROR {}: {e}", e.sqlstate())?,
                }
            }
            Err(e) => writeln!(out, "ERROR {}: {e}", e.sqlstate())?,
        }
    }
    Ok(())
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".weir_history"))
}

/// Runs the shell on the database in `data_dir` until `\q` or end of input.
pub async fn run(data_dir: &Path) -> Result<(), Error> {
    let db = Database::open(data_dir).await?;
    let session = Session::new(db.clone());
    let mut editor = DefaultEditor::new()?;
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut out = std::io::stdout();
    writeln!(
        out,
        "Weir shell on {} — \\? for help, \\q to quit.",
        data_dir.display()
    )?;
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "weir> "
        } else {
            "  ... "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() && trimmed.starts_with('\\') {
                    match trimmed {
                        "\\q" => break,
                        "\\?" => writeln!(out, "{HELP}")?,
                        "\\d" => {
                            run_sql(
                                &session,
                                "SHOW STREAMS; SHOW MATERIALIZED VIEWS;",
                                &mut out,
                                None,
                            )
                            .await?
                        }
                        other => writeln!(out, "unknown command {other}; \\? lists commands")?,
                    }
                    continue;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if is_complete(&buffer) {
                    let _ = editor.add_history_entry(buffer.trim());
                    run_sql(&session, &buffer, &mut out, Some(&mut editor)).await?;
                    buffer.clear();
                }
            }
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    db.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_a_semicolon_outside_quotes() {
        assert!(is_complete("SELECT 1;"));
        assert!(is_complete("SELECT 1;\n  "));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT ';"));
        assert!(is_complete("SELECT ';';"));
    }
}
