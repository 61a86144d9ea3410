//! The Weir shell: a line-editing REPL over an embedded engine or a Weir server.

pub mod backend;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use futures::StreamExt;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper};
use weir_sql::syntax::StatementKind;
use weir_sql::{Database, Session};

use crate::backend::{Backend, Live, Reply};

/// What stops the shell.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database did not open.
    #[error(transparent)]
    Sql(#[from] weir_sql::Error),
    /// The server could not be reached.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The terminal failed.
    #[error("terminal: {0}")]
    Readline(#[from] ReadlineError),
    /// Writing output failed.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
}

/// How the shell runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The data directory of the embedded engine.
    pub data_dir: PathBuf,
    /// A server to talk to instead (`postgres://user@host:port/db`).
    pub connect: Option<String>,
    /// How the embedded engine runs, with the connectors the binary provides (so that
    /// streams over external Kafka topics run in the shell too).
    pub database: weir_sql::Options,
}

const HELP: &str = "\
Statements end with ';' and may span lines. Tab completes keywords and names.
  \\d [NAME]   streams and materialized views, or NAME's columns
  \\dt         streams and tables      \\dv  materialized views
  \\timing     show how long each statement takes (toggle)
  \\x          expanded rows, one field per line (toggle)
  \\i FILE     run the statements in FILE
  \\o [FILE]   send results to FILE (none: back to the terminal)
  \\q          quit (or Ctrl-D)       \\?  this help
SUBSCRIBE view; shows the view as a table updated in place until Ctrl-C.
Ctrl-C discards the statement being typed, or stops a running one.";

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "HAVING",
    "ORDER BY",
    "LIMIT",
    "JOIN",
    "LEFT JOIN",
    "ON",
    "AND",
    "OR",
    "NOT",
    "AS",
    "INSERT INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "DELETE FROM",
    "CREATE STREAM",
    "CREATE TABLE",
    "CREATE MATERIALIZED VIEW",
    "DROP STREAM",
    "DROP TABLE",
    "DROP MATERIALIZED VIEW",
    "SHOW STREAMS",
    "SHOW MATERIALIZED VIEWS",
    "EXPLAIN",
    "SUBSCRIBE",
    "COPY",
    "WATERMARK FOR",
    "INTERVAL",
    "TUMBLE",
    "HOP",
    "SESSION",
    "WINDOW_START",
    "WINDOW_END",
    "EMIT ON WINDOW CLOSE",
    "EMIT ON UPDATE",
    "WITH",
    "PARTITIONS",
    "KEY",
    "PRIMARY KEY",
    "TIMESTAMP",
    "BIGINT",
    "INT",
    "TEXT",
    "VARCHAR",
    "DOUBLE",
    "BOOLEAN",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "DISTINCT",
    "CASCADE",
    "BETWEEN",
    "NULL",
    "IS",
    "IN",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "DECLARE",
    "CURSOR",
    "FETCH",
    "CLOSE",
    "BEGIN",
    "COMMIT",
];

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

/// Completion, and multi-line input that ends at `;`.
struct ShellHelper {
    names: Arc<Mutex<Vec<String>>>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((start, Vec::new()));
        }
        let lower = word.to_lowercase();
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut candidates: Vec<Pair> = KEYWORDS
            .iter()
            .filter(|k| k.to_lowercase().starts_with(&lower))
            .map(|k| {
                let text = if word.chars().all(|c| c.is_lowercase() || !c.is_alphabetic()) {
                    k.to_lowercase()
                } else {
                    (*k).to_string()
                };
                Pair {
                    display: text.clone(),
                    replacement: text,
                }
            })
            .chain(
                names
                    .iter()
                    .filter(|n| n.starts_with(&lower))
                    .map(|n| Pair {
                        display: n.clone(),
                        replacement: n.clone(),
                    }),
            )
            .collect();
        candidates.dedup_by(|a, b| a.replacement == b.replacement);
        Ok((start, candidates))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        let trimmed = input.trim();
        if trimmed.is_empty() || trimmed.starts_with('\\') || is_complete(input) {
            Ok(ValidationResult::Valid(None))
        } else {
            Ok(ValidationResult::Incomplete)
        }
    }
}

impl Helper for ShellHelper {}

/// Renders rows as an aligned table with a row count.
pub fn render(columns: &[String], rows: &[Vec<String>]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    // Wide rows wrap to the terminal's width, when the terminal says how wide it is.
    if table.width().is_some_and(|w| w >= 40) {
        table.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    }
    table.set_header(columns);
    for r in rows {
        table.add_row(r);
    }
    format!(
        "{table}\n({} row{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    )
}

/// Renders rows one field per line, as psql's `\x`.
pub fn render_expanded(columns: &[String], rows: &[Vec<String>]) -> String {
    let width = columns.iter().map(|c| c.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        out.push_str(&format!("-[ RECORD {} ]-\n", i + 1));
        for (c, v) in columns.iter().zip(r) {
            out.push_str(&format!("{c:<width$} | {v}\n"));
        }
    }
    out.push_str(&format!(
        "({} row{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out
}

/// For an error that names a position (`... at Line: 2, Column: 8`), the statement's line with
/// a caret under that column.
fn point_at(sql: &str, error: &str) -> Option<String> {
    let number_after = |label: &str| -> Option<usize> {
        let start = error.find(label)? + label.len();
        let digits: String = error[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let line = number_after("Line: ")?;
    let column = number_after("Column: ")?;
    let text = sql.lines().nth(line.checked_sub(1)?)?;
    let caret = " ".repeat(column.saturating_sub(1).min(text.chars().count())) + "^";
    Some(format!(
        "LINE {line}: {text}\n{}{caret}",
        " ".repeat(format!("LINE {line}: ").len())
    ))
}

/// Where results go, and how they look.
struct Screen {
    out: Box<dyn Write + Send>,
    timing: bool,
    expanded: bool,
}

impl Screen {
    fn line(&mut self, text: &str) -> std::io::Result<()> {
        writeln!(self.out, "{text}")?;
        self.out.flush()
    }
}

/// Shows a live feed until it ends or Ctrl-C: a table updated in place for a subscription
/// (the newest rows first, with the watermark and the input rate), or lines as they come.
async fn show_live(live: Live, screen: &mut Screen) -> std::io::Result<()> {
    let Live {
        columns,
        mut rows,
        table,
        cancel,
        input,
    } = live;
    // A stream's rows come with their partition and offset and only append.
    let log = columns.first().is_some_and(|c| c == "weir_partition");
    let started = Instant::now();
    let mut received = 0u64;
    let mut current: HashMap<Vec<String>, i64> = HashMap::new();
    let mut newest: std::collections::VecDeque<Vec<String>> = Default::default();
    let mut watermark = String::from("none yet");
    let mut drawn = String::new();
    let mut input_rate: Option<f64> = None;
    let mut sample: Option<(u64, Instant)> = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    // One listener for the whole feed: a new one per turn of the loop could miss a Ctrl-C
    // that arrives between turns.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            next = rows.next() => match next {
                Some(Ok(batch)) => {
                    if !table {
                        for r in batch {
                            screen.line(&r.join("\t"))?;
                        }
                        continue;
                    }
                    for r in batch {
                        received += 1;
                        if log {
                            newest.push_front(r);
                            newest.truncate(20);
                            continue;
                        }
                        let diff: i64 = r.get(1).and_then(|d| d.parse().ok()).unwrap_or(0);
                        if let Some(w) = r.first().filter(|w| w.as_str() != "NULL") {
                            watermark = w.clone();
                        }
                        let key: Vec<String> = r.into_iter().skip(2).collect();
                        let n = current.entry(key.clone()).or_insert(0);
                        *n += diff;
                        if *n <= 0 {
                            current.remove(&key);
                        }
                    }
                    let (shown, total): (Vec<Vec<String>>, u64) = if log {
                        (newest.iter().cloned().collect(), received)
                    } else {
                        let mut shown: Vec<Vec<String>> = current
                            .iter()
                            .flat_map(|(r, &n)| std::iter::repeat_n(r.clone(), n.max(0) as usize))
                            .collect();
                        shown.sort_by(|a, b| b.cmp(a));
                        let total = shown.len() as u64;
                        shown.truncate(20);
                        (shown, total)
                    };
                    let shown_columns: Vec<String> = columns.iter().skip(usize::from(!log) * 2).cloned().collect();
                    let mut grid = Table::new();
                    grid.load_preset(UTF8_FULL_CONDENSED);
                    grid.set_header(&shown_columns);
                    for r in &shown {
                        grid.add_row(r);
                    }
                    drawn = grid.to_string();
                    let what = if log { "rows so far" } else { "rows" };
                    let header = live_header(log, &watermark, total, what, input_rate, received, started);
                    draw(screen, &header, &drawn)?;
                }
                Some(Err(e)) => {
                    screen.line(&e.replace('\n', " "))?;
                    return Ok(());
                }
                None => return Ok(()),
            },
            _ = tick.tick(), if table => {
                // The input rate: events the view's query processed per second (for a stream,
                // its own rows).
                if let Some(probe) = &input {
                    if let Some(processed) = probe().await {
                        let now = Instant::now();
                        if let Some((before, at)) = sample {
                            let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                            input_rate = Some(processed.saturating_sub(before) as f64 / secs);
                        }
                        sample = Some((processed, now));
                    }
                }
                if !drawn.is_empty() {
                    let total = if log { received } else { current.values().map(|n| (*n).max(0) as u64).sum() };
                    let what = if log { "rows so far" } else { "rows" };
                    let header = live_header(log, &watermark, total, what, input_rate, received, started);
                    draw(screen, &header, &drawn)?;
                }
            }
            _ = &mut ctrl_c => {
                if let Some(cancel) = cancel {
                    // Stop it on the server too, and read to the end of the feed, so that the
                    // connection is ready for the next statement.
                    let _ = cancel.cancel_query(tokio_postgres::NoTls).await;
                    let drain = async { while let Some(Ok(_)) = rows.next().await {} };
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
                }
                screen.line("(stopped)")?;
                return Ok(());
            }
        }
    }
}

/// The line above a live table: watermark, rows, and the input rate.
fn live_header(
    log: bool,
    watermark: &str,
    total: u64,
    what: &str,
    input_rate: Option<f64>,
    received: u64,
    started: Instant,
) -> String {
    let rate = match input_rate {
        Some(r) => format!("input {}/s", human(r)),
        None if log => format!(
            "input {}/s",
            human(received as f64 / started.elapsed().as_secs_f64().max(1e-3))
        ),
        None => "input measuring".to_string(),
    };
    if log {
        format!("{total} {what} | {rate} | Ctrl-C stops")
    } else {
        format!("watermark {watermark} | {total} {what} | {rate} | Ctrl-C stops")
    }
}

/// Clears the screen and draws a live table under its header line.
fn draw(screen: &mut Screen, header: &str, table: &str) -> std::io::Result<()> {
    write!(screen.out, "\x1b[2J\x1b[H")?;
    screen.line(header)?;
    screen.line(table)
}

/// The view a `CREATE MATERIALIZED VIEW` statement creates.
fn created_view(sql: &str) -> Option<String> {
    backend::classified(sql)
        .into_iter()
        .find_map(|(kind, _)| match kind {
            StatementKind::CreateView(name) if !name.is_empty() => Some(name),
            _ => None,
        })
}

/// Whether `sql` creates or drops an object, so that the names Tab completes change.
fn changes_names(sql: &str) -> bool {
    backend::classified(sql)
        .iter()
        .any(|(kind, _)| kind.changes_names())
}

/// Whether `sql` is a `COPY ... FROM STDIN`, whose data follows it.
fn is_copy_from(sql: &str) -> bool {
    backend::classified(sql)
        .first()
        .is_some_and(|(kind, _)| *kind == StatementKind::CopyFrom)
}

/// Events as people read them: 950, 12.3k, 4.1M.
fn human(n: f64) -> String {
    match n {
        n if n >= 1e6 => format!("{:.1}M", n / 1e6),
        n if n >= 1e4 => format!("{:.1}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

/// While a new view catches up on its sources' backlog: a progress bar with the events
/// processed, the rate and the time left, until it has caught up or Ctrl-C leaves it running.
async fn show_progress(backend: &Backend, view: &str, screen: &mut Screen) -> std::io::Result<()> {
    let query = format!(
        "SELECT processed, committed FROM weir_view_progress WHERE view = '{}'",
        view.replace('\'', "''")
    );
    let started = Instant::now();
    let mut shown = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let mut state = None;
        for reply in backend.run(&query).await {
            if let Reply::Table { rows, .. } = reply {
                state = rows.first().and_then(|r| {
                    Some((
                        r.first()?.parse::<f64>().ok()?,
                        r.get(1)?.parse::<f64>().ok()?,
                    ))
                });
            }
        }
        let Some((done, total)) = state else {
            return Ok(());
        };
        if done >= total {
            if shown {
                write!(screen.out, "\r{:<78}\r", "")?;
                screen.line(&format!("caught up: {} events", human(total)))?;
            }
            return Ok(());
        }
        let secs = started.elapsed().as_secs_f64();
        // A backlog that takes under half a second needs no bar.
        if secs >= 0.5 {
            shown = true;
            let fraction = done / total.max(1.0);
            let filled = (fraction * 30.0) as usize;
            let rate = done / secs.max(1e-3);
            let left = (total - done) / rate.max(1.0);
            write!(
                screen.out,
                "\r[{}{}] {} / {} events, {}/s, {:.0}s left  ",
                "#".repeat(filled),
                ".".repeat(30 - filled.min(30)),
                human(done),
                human(total),
                human(rate),
                left
            )?;
            screen.out.flush()?;
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            _ = &mut ctrl_c => {
                screen.line("\n(the view goes on catching up in the background)")?;
                return Ok(());
            }
        }
    }
}

/// Reads a COPY's data from the terminal up to a line `\.`, as psql does.
fn read_copy_data(
    editor: &mut Editor<ShellHelper, DefaultHistory>,
    screen: &mut Screen,
) -> std::io::Result<Vec<u8>> {
    screen.line(
        "Enter data to be copied followed by a newline.\nEnd with a backslash and a period on a line by itself, or an EOF signal.",
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

/// Runs `sql` and shows what it returns.
async fn run_sql(
    backend: &Backend,
    sql: &str,
    screen: &mut Screen,
    mut editor: Option<&mut Editor<ShellHelper, DefaultHistory>>,
    mut copy_data: Option<Vec<u8>>,
) -> std::io::Result<()> {
    let started = Instant::now();
    // Ctrl-C cancels the statement, not the shell.
    let replies = tokio::select! {
        replies = backend.run(sql) => replies,
        _ = tokio::signal::ctrl_c() => {
            backend.cancel().await;
            screen.line("ERROR 57014: canceling statement due to user request")?;
            return Ok(());
        }
    };
    for reply in replies {
        match reply {
            Reply::Table { columns, rows } => {
                let text = if screen.expanded {
                    render_expanded(&columns, &rows)
                } else {
                    render(&columns, &rows)
                };
                screen.line(&text)?;
            }
            Reply::Tag(tag) => screen.line(&tag)?,
            Reply::Notice(n) => screen.line(&format!("NOTICE:  {n}"))?,
            Reply::Error(e) => {
                screen.line(&e.replace('\n', " "))?;
                if let Some(pointer) = point_at(sql, &e) {
                    screen.line(&pointer)?;
                }
            }
            Reply::Live(live) => show_live(live, screen).await?,
            Reply::CopyIn(copy) => {
                let data = match (copy_data.take(), editor.as_deref_mut()) {
                    (Some(data), _) => data,
                    (None, Some(editor)) => read_copy_data(editor, screen)?,
                    (None, None) => Vec::new(),
                };
                match backend.copy_in(copy, data).await {
                    Ok(n) => screen.line(&format!("COPY {n}"))?,
                    Err(e) => screen.line(&e.replace('\n', " "))?,
                }
            }
        }
    }
    if screen.timing {
        screen.line(&format!(
            "Time: {:.3} ms",
            started.elapsed().as_secs_f64() * 1000.0
        ))?;
    }
    Ok(())
}

/// Runs the statements of a file; COPY FROM STDIN takes the lines after it up to `\.`.
async fn run_file(backend: &Backend, path: &Path, screen: &mut Screen) -> std::io::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return screen.line(&format!("\\i {}: {e}", path.display())),
    };
    let mut statement = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if statement.trim().is_empty() && line.trim().starts_with("--") {
            continue;
        }
        statement.push_str(line);
        statement.push('\n');
        if !is_complete(&statement) {
            continue;
        }
        let data = if is_copy_from(&statement) {
            let mut data = Vec::new();
            for l in lines.by_ref() {
                if l == "\\." {
                    break;
                }
                data.extend_from_slice(l.as_bytes());
                data.push(b'\n');
            }
            Some(data)
        } else {
            None
        };
        run_sql(backend, &statement, screen, None, data).await?;
        statement.clear();
    }
    Ok(())
}

/// Runs a meta-command; returns false to quit.
async fn meta(
    command: &str,
    backend: &Backend,
    screen: &mut Screen,
    names: &Arc<Mutex<Vec<String>>>,
) -> std::io::Result<bool> {
    let mut parts = command.split_whitespace();
    let name = parts.next().unwrap_or_default();
    let arg = parts.next();
    let quote = |s: &str| s.replace('\'', "''");
    match (name, arg) {
        ("\\q", _) => return Ok(false),
        ("\\?", _) => screen.line(HELP)?,
        ("\\timing", _) => {
            screen.timing = !screen.timing;
            screen.line(&format!(
                "Timing is {}.",
                if screen.timing { "on" } else { "off" }
            ))?;
        }
        ("\\x", _) => {
            screen.expanded = !screen.expanded;
            screen.line(&format!(
                "Expanded display is {}.",
                if screen.expanded { "on" } else { "off" }
            ))?;
        }
        ("\\d", None) => {
            run_sql(
                backend,
                "SHOW STREAMS; SHOW MATERIALIZED VIEWS;",
                screen,
                None,
                None,
            )
            .await?
        }
        ("\\d", Some(relation)) => {
            let sql = format!(
                "SELECT column_name AS \"column\", data_type AS \"type\", is_nullable AS \"nullable\" \
                 FROM information_schema.columns WHERE table_schema = 'public' \
                 AND table_name = '{}' ORDER BY ordinal_position;",
                quote(relation)
            );
            run_sql(backend, &sql, screen, None, None).await?;
        }
        ("\\dt", _) => {
            let sql = "SELECT table_name AS name FROM information_schema.tables \
                       WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1;";
            run_sql(backend, sql, screen, None, None).await?;
        }
        ("\\dv" | "\\dm", _) => {
            run_sql(backend, "SHOW MATERIALIZED VIEWS;", screen, None, None).await?
        }
        ("\\i", Some(file)) => run_file(backend, Path::new(file), screen).await?,
        ("\\o", file) => match file {
            None => {
                screen.out = Box::new(std::io::stdout());
            }
            Some(path) => match std::fs::File::create(path) {
                Ok(f) => screen.out = Box::new(f),
                Err(e) => screen.line(&format!("\\o {path}: {e}"))?,
            },
        },
        (other, _) => screen.line(&format!("unknown command {other}; \\? lists commands"))?,
    }
    if name.starts_with("\\i") {
        *names.lock().unwrap_or_else(|e| e.into_inner()) = backend.names().await;
    }
    Ok(true)
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".weir_history"))
}

/// Runs the shell until `\q` or end of input.
pub async fn run(options: &Options) -> Result<(), Error> {
    let (backend, db, place) = match &options.connect {
        Some(url) => {
            let backend = Backend::connect(url)
                .await
                .map_err(|e| Error::Connect(format!("{url}: {e}")))?;
            (backend, None, url.clone())
        }
        None => {
            let db = Database::open_with(&options.data_dir, options.database.clone()).await?;
            let session = Session::new(db.clone());
            (
                Backend::Embedded(session),
                Some(db),
                options.data_dir.display().to_string(),
            )
        }
    };
    let names = Arc::new(Mutex::new(backend.names().await));
    let mut editor: Editor<ShellHelper, DefaultHistory> = Editor::new()?;
    editor.set_helper(Some(ShellHelper {
        names: Arc::clone(&names),
    }));
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut screen = Screen {
        out: Box::new(std::io::stdout()),
        timing: false,
        expanded: false,
    };
    screen.line(&format!(
        "Weir shell on {place} — \\? for help, \\q to quit."
    ))?;
    loop {
        match editor.readline("weir> ") {
            Ok(line) => {
                let trimmed = line.trim();
                if trimmed.is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(trimmed);
                if trimmed.starts_with('\\') {
                    if !meta(trimmed, &backend, &mut screen, &names).await? {
                        break;
                    }
                    continue;
                }
                run_sql(&backend, &line, &mut screen, Some(&mut editor), None).await?;
                if let Some(view) = created_view(trimmed) {
                    show_progress(&backend, &view, &mut screen).await?;
                }
                if changes_names(trimmed) {
                    *names.lock().unwrap_or_else(|e| e.into_inner()) = backend.names().await;
                }
            }
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    if let Some(db) = db {
        db.shutdown();
    }
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

    #[test]
    fn errors_point_at_their_position() {
        let sql = "SELECT a,\n  FROM WHERE x;";
        let e = "ERROR 42601: syntax error: Expected: an expression, found: WHERE at Line: 2, Column: 8";
        assert_eq!(
            point_at(sql, e).as_deref(),
            Some("LINE 2:   FROM WHERE x;\n               ^")
        );
        assert_eq!(point_at(sql, "ERROR 42P01: no such table"), None);
    }

    #[test]
    fn the_view_a_statement_creates() {
        assert_eq!(
            created_view("CREATE MATERIALIZED VIEW v AS SELECT 1;").as_deref(),
            Some("v")
        );
        assert_eq!(
            created_view("create materialized view if not exists Per_User as select 1").as_deref(),
            Some("per_user")
        );
        assert_eq!(created_view("CREATE STREAM s (a INT);"), None);
        assert_eq!(human(4_100_000.0), "4.1M");
    }

    #[test]
    fn expanded_rows_put_one_field_per_line() {
        let text = render_expanded(
            &["a".into(), "long_name".into()],
            &[vec!["1".into(), "x".into()]],
        );
        assert_eq!(
            text,
            "-[ RECORD 1 ]-\na         | 1\nlong_name | x\n(1 row)"
        );
    }
}
