//! Where the shell's statements run: an engine inside the shell, or a Weir server over the wire.

use std::pin::Pin;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::{Stream, StreamExt, TryStreamExt};
use weir_sql::parser::{SubscribeOutput, WeirStatement};
use weir_sql::syntax::{StatementKind, classify_text};
use weir_sql::{Output, Session};

/// A statement's result, as text.
#[derive(Debug)]
pub enum Reply {
    /// Rows: column names and values (`NULL` for nulls).
    Table {
        /// Column names.
        columns: Vec<String>,
        /// Rows of formatted values.
        rows: Vec<Vec<String>>,
    },
    /// A command's tag (`CREATE STREAM`, `INSERT 0 3`, ...).
    Tag(String),
    /// A notice from the engine (`relation "x" already exists, skipping`).
    Notice(String),
    /// An error, one line.
    Error(String),
    /// Live rows of a subscription (or COPY TO STDOUT), until the feed ends or the user stops it.
    Live(Live),
    /// A COPY FROM STDIN waiting for its data (lines typed or read from a file).
    CopyIn(CopyIn),
}

/// A live feed: column names and rows of text, each `weir_watermark`, `weir_diff`, then the
/// row's columns.
pub struct Live {
    /// Column names, when known.
    pub columns: Vec<String>,
    /// Rows as they happen.
    pub rows: Pin<Box<dyn Stream<Item = Result<Vec<Vec<String>>, String>> + Send>>,
    /// Whether to draw the rows as a table updated in place (SUBSCRIBE) or print them (COPY).
    pub table: bool,
    /// For a feed from a server: how to stop it there (a CancelRequest).
    pub cancel: Option<tokio_postgres::CancelToken>,
    /// For a subscription to a view: reads how many events its query has processed, so the
    /// shell can show the input rate (a stream's own rows are its input).
    pub input: Option<InputProbe>,
}

/// Reads a count of events processed so far (see [`Live::input`]).
pub type InputProbe = std::sync::Arc<
    dyn Fn() -> Pin<Box<dyn std::future::Future<Output = Option<u64>> + Send>> + Send + Sync,
>;

/// The statements of `sql` as Weir classifies them, with their command tags; none when they
/// do not parse here (a server may still run them).
pub(crate) fn classified(sql: &str) -> Vec<(StatementKind, &'static str)> {
    classify_text(sql).unwrap_or_default()
}

/// The view (or stream) a `SUBSCRIBE name` follows; `None` for a query.
fn subscribed_name(sql: &str) -> Option<String> {
    match classified(sql).pop()? {
        (StatementKind::Subscribe { name, .. }, _) => name,
        _ => None,
    }
}

/// The kind of the first statement of `sql`.
fn first_kind(sql: &str) -> Option<StatementKind> {
    classified(sql).into_iter().next().map(|(k, _)| k)
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("columns", &self.columns)
            .finish()
    }
}

/// A COPY FROM STDIN in progress.
#[derive(Debug)]
pub enum CopyIn {
    /// In the embedded engine.
    Embedded(weir_sql::copy::CopyIn),
    /// On a server: the statement, sent again with its data.
    Remote(String),
}

/// Formats batches as rows of text.
pub fn text_rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let Ok(formatters) = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
        else {
            continue;
        };
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    rows
}

/// Rows of a chunk of COPY text data.
fn copy_rows(bytes: &[u8]) -> Vec<Vec<String>> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(copy_fields)
        .collect()
}

/// Splits a line of COPY text data into fields (`\N` is NULL).
pub fn copy_fields(line: &str) -> Vec<String> {
    line.split('\t')
        .map(|f| {
            if f == "\\N" {
                return "NULL".to_string();
            }
            let mut out = String::with_capacity(f.len());
            let mut chars = f.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    match chars.next() {
                        Some('t') => out.push('\t'),
                        Some('n') => out.push('\n'),
                        Some('r') => out.push('\r'),
                        Some(o) => out.push(o),
                        None => {}
                    }
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect()
}

/// The command of each statement in `sql`, as Postgres tags name it (`CREATE STREAM`, `INSERT`,
/// `CREATE MATERIALIZED VIEW`, ...): the server's completion messages carry only row counts.
fn statement_commands(sql: &str) -> Vec<String> {
    classified(sql)
        .into_iter()
        .map(|(_, tag)| tag.to_string())
        .collect()
}

/// The engine in this process, or a server.
pub enum Backend {
    /// An embedded engine over a data directory.
    Embedded(Session),
    /// A Weir (or any Postgres) server, its address (for a second connection that reads a
    /// view's progress while the first follows it), and the notices it sent not yet shown.
    Remote(tokio_postgres::Client, String, Notices),
}

/// Notices a server sent, oldest first, until the shell shows them.
pub type Notices = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

impl Backend {
    /// Connects to a server; its notices are kept for the replies of the statements that
    /// caused them.
    pub async fn connect(url: &str) -> Result<Self, tokio_postgres::Error> {
        let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let notices = Notices::default();
        let kept = std::sync::Arc::clone(&notices);
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notice(n)) => kept
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(n.message().to_string()),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        Ok(Self::Remote(client, url.to_string(), notices))
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded(_) => write!(f, "Embedded"),
            Self::Remote(..) => write!(f, "Remote"),
        }
    }
}

fn sql_error(e: &weir_sql::Error) -> String {
    format!("ERROR {}: {e}", e.sqlstate())
}

fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("ERROR {}: {}", db.code().code(), db.message()),
        None => format!("ERROR: {e}"),
    }
}

/// Reads a view's processed events from the server over a second connection (the first is
/// busy with the subscription), made on first use.
fn remote_probe(url: String, view: String) -> InputProbe {
    let client: std::sync::Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>> =
        std::sync::Arc::default();
    std::sync::Arc::new(move || {
        let (url, view, client) = (url.clone(), view.clone(), std::sync::Arc::clone(&client));
        Box::pin(async move {
            let mut client = client.lock().await;
            if client.is_none() {
                let (c, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(connection);
                *client = Some(c);
            }
            let row = client
                .as_ref()?
                .query_opt(
                    "SELECT processed FROM weir_view_progress WHERE view = $1",
                    &[&view],
                )
                .await
                .ok()??;
            row.get::<_, i64>(0).try_into().ok()
        })
    })
}

/// Whether `sql` is a SUBSCRIBE to show as a live table.
fn is_subscribe(sql: &str) -> bool {
    matches!(
        first_kind(sql),
        Some(StatementKind::Subscribe {
            output: SubscribeOutput::Rows,
            ..
        })
    )
}

impl Backend {
    /// Stops what the server runs for this shell (a CancelRequest); in the embedded engine,
    /// dropping the statement's future has already stopped it.
    pub async fn cancel(&self) {
        if let Self::Remote(client, ..) = self {
            let _ = client
                .cancel_token()
                .cancel_query(tokio_postgres::NoTls)
                .await;
        }
    }

    /// Runs the statements in `sql`, one reply each (stopping at the first error).
    pub async fn run(&self, sql: &str) -> Vec<Reply> {
        match self {
            Self::Embedded(session) => Self::run_embedded(session, sql).await,
            Self::Remote(client, url, notices) => {
                let replies = Self::run_remote(client, url, sql).await;
                let shown = std::mem::take(&mut *notices.lock().unwrap_or_else(|e| e.into_inner()));
                shown
                    .into_iter()
                    .map(Reply::Notice)
                    .chain(replies)
                    .collect()
            }
        }
    }

    async fn run_embedded(session: &Session, sql: &str) -> Vec<Reply> {
        if is_subscribe(sql) {
            if let Ok(mut stmts) = weir_sql::parser::parse(sql) {
                if let Some(WeirStatement::Subscribe {
                    target,
                    output: SubscribeOutput::Rows,
                }) = stmts.pop()
                {
                    return vec![match session.subscribe(target).await {
                        Ok(sub) => {
                            let columns = sub
                                .schema()
                                .fields()
                                .iter()
                                .map(|f| f.name().clone())
                                .collect();
                            let rows = futures::stream::unfold(Some(sub), |state| async move {
                                let mut sub = state?;
                                match sub.next().await {
                                    Ok(b) => Some((Ok(text_rows(&[b])), Some(sub))),
                                    Err(e) => Some((Err(sql_error(&e)), None)),
                                }
                            });
                            let db = session.database().clone();
                            let input = subscribed_name(sql)
                                .filter(|name| db.view(name).is_some())
                                .map(|name| -> InputProbe {
                                    std::sync::Arc::new(move || {
                                        let processed = db.view(&name).map(|v| {
                                            v.table.progress().offsets.iter().sum::<u64>()
                                        });
                                        Box::pin(async move { processed })
                                    })
                                });
                            Reply::Live(Live {
                                columns,
                                rows: Box::pin(rows),
                                table: true,
                                cancel: None,
                                input,
                            })
                        }
                        Err(e) => Reply::Error(sql_error(&e)),
                    }];
                }
            }
        }
        let mut replies = Vec::new();
        for result in session.execute(sql).await {
            replies.push(match result {
                Ok(Output::Rows { schema, stream, .. }) => {
                    match stream.try_collect::<Vec<RecordBatch>>().await {
                        Ok(batches) => Reply::Table {
                            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
                            rows: text_rows(&batches),
                        },
                        Err(e) => Reply::Error(sql_error(&weir_sql::Error::from(e))),
                    }
                }
                Ok(Output::Command(tag)) => Reply::Tag(tag),
                Ok(Output::Inserted(n)) => Reply::Tag(format!("INSERT 0 {n}")),
                Ok(Output::Modified(command, n)) => Reply::Tag(format!("{command} {n}")),
                Ok(Output::Transaction(_, tag)) => Reply::Tag(tag.to_string()),
                Ok(Output::CopyIn(copy)) => Reply::CopyIn(CopyIn::Embedded(copy)),
                Ok(Output::CopyOut { stream, .. }) => Reply::Live(Live {
                    columns: Vec::new(),
                    rows: Box::pin(stream.map(|chunk| match chunk {
                        Ok(chunk) => Ok(copy_rows(&chunk.data)),
                        Err(e) => Err(sql_error(&e)),
                    })),
                    table: false,
                    cancel: None,
                    input: None,
                }),
                Err(e) => Reply::Error(sql_error(&e)),
            });
        }
        // Before the replies, as psql shows a notice before its statement's tag.
        let notices = session
            .take_notices()
            .into_iter()
            .map(|n| Reply::Notice(n.message));
        notices.chain(replies).collect()
    }

    async fn run_remote(client: &tokio_postgres::Client, url: &str, sql: &str) -> Vec<Reply> {
        let first = first_kind(sql);
        let copy_to = matches!(
            first,
            Some(
                StatementKind::CopyTo
                    | StatementKind::Subscribe {
                        output: SubscribeOutput::Copy,
                        ..
                    }
            )
        );
        if is_subscribe(sql) || copy_to {
            let (copy, table) = if is_subscribe(sql) {
                let body = sql.trim().trim_end_matches(';');
                (format!("COPY ({body}) TO STDOUT"), true)
            } else {
                (sql.trim().trim_end_matches(';').to_string(), false)
            };
            // The view's columns, from the statement a subscription follows.
            let columns = if table {
                let target = sql.trim().trim_end_matches(';')[9..].trim();
                let target = target
                    .strip_prefix("TO ")
                    .or_else(|| target.strip_prefix("to "))
                    .unwrap_or(target);
                let query = match subscribed_name(sql) {
                    Some(name) => {
                        format!("SELECT * FROM \"{}\" LIMIT 0", name.replace('"', "\"\""))
                    }
                    None => format!("SELECT * FROM {target} AS s LIMIT 0"),
                };
                // A stream's rows come with their place in the log instead of a change.
                let is_stream = match subscribed_name(sql) {
                    Some(name) => client
                        .query_opt(
                            "SELECT 1 FROM pg_catalog.pg_class WHERE relname = $1 AND relkind = 'r'",
                            &[&name],
                        )
                        .await
                        .ok()
                        .flatten()
                        .is_some(),
                    None => false,
                };
                let leading = if is_stream {
                    ["weir_partition", "weir_offset"]
                } else {
                    ["weir_watermark", "weir_diff"]
                };
                match client.prepare(&query).await {
                    Ok(stmt) => leading
                        .into_iter()
                        .map(String::from)
                        .chain(stmt.columns().iter().map(|c| c.name().to_string()))
                        .collect(),
                    Err(e) => return vec![Reply::Error(pg_error(&e))],
                }
            } else {
                Vec::new()
            };
            let input = subscribed_name(sql)
                .filter(|_| table)
                .map(|name| remote_probe(url.to_string(), name));
            return vec![match client.copy_out(copy.as_str()).await {
                Ok(stream) => Reply::Live(Live {
                    columns,
                    rows: Box::pin(stream.map(|chunk| match chunk {
                        Ok(bytes) => Ok(copy_rows(&bytes)),
                        Err(e) => Err(pg_error(&e)),
                    })),
                    table,
                    cancel: Some(client.cancel_token()),
                    input,
                }),
                Err(e) => Reply::Error(pg_error(&e)),
            }];
        }
        if first == Some(StatementKind::CopyFrom) {
            return vec![Reply::CopyIn(CopyIn::Remote(sql.trim().to_string()))];
        }
        let messages = match client.simple_query(sql).await {
            Ok(m) => m,
            Err(e) => return vec![Reply::Error(pg_error(&e))],
        };
        let mut replies = Vec::new();
        let mut columns: Option<Vec<String>> = None;
        let mut rows = Vec::new();
        let mut tags = statement_commands(sql).into_iter();
        for m in messages {
            match m {
                tokio_postgres::SimpleQueryMessage::RowDescription(cols) => {
                    columns = Some(cols.iter().map(|c| c.name().to_string()).collect());
                }
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    if columns.is_none() {
                        columns =
                            Some(row.columns().iter().map(|c| c.name().to_string()).collect());
                    }
                    rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).unwrap_or("NULL").to_string())
                            .collect(),
                    );
                }
                tokio_postgres::SimpleQueryMessage::CommandComplete(n) => match columns.take() {
                    Some(columns) => {
                        tags.next();
                        replies.push(Reply::Table {
                            columns,
                            rows: std::mem::take(&mut rows),
                        });
                    }
                    None => {
                        let command = tags.next().unwrap_or_else(|| "OK".into());
                        replies.push(Reply::Tag(match command.as_str() {
                            "INSERT" => format!("INSERT 0 {n}"),
                            "UPDATE" | "DELETE" | "COPY" => format!("{command} {n}"),
                            _ => command,
                        }));
                        continue;
                    }
                },
                _ => {}
            }
        }
        replies
    }

    /// Sends the data of a COPY FROM STDIN; returns the rows loaded.
    pub async fn copy_in(&self, copy: CopyIn, data: Vec<u8>) -> Result<u64, String> {
        match (self, copy) {
            (Self::Embedded(session), CopyIn::Embedded(copy)) => session
                .copy_data(&copy, data)
                .await
                .map_err(|e| sql_error(&e)),
            (Self::Remote(client, ..), CopyIn::Remote(sql)) => {
                use futures::SinkExt;
                let sink = client
                    .copy_in::<_, bytes::Bytes>(sql.trim_end_matches(';'))
                    .await
                    .map_err(|e| pg_error(&e))?;
                futures::pin_mut!(sink);
                sink.send(bytes::Bytes::from(data))
                    .await
                    .map_err(|e| pg_error(&e))?;
                sink.finish().await.map_err(|e| pg_error(&e))
            }
            _ => Err("ERROR: COPY started on another backend; this is a bug".into()),
        }
    }

    /// Names for completion: streams, views, tables, their columns, and functions.
    pub async fn names(&self) -> Vec<String> {
        let sql = "SELECT table_name, column_name FROM information_schema.columns \
                   WHERE table_schema = 'public'; \
                   SELECT DISTINCT routine_name FROM information_schema.routines";
        let mut names = Vec::new();
        for reply in self.run(sql).await {
            if let Reply::Table { rows, .. } = reply {
                for r in rows {
                    names.extend(r);
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }
}
