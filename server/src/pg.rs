//! The pgwire handlers: startup, simple and extended query protocol, mapped onto `Session`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, StartupHandler, finish_authentication,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_describe_response};
use pgwire::api::results::{
    CopyResponse, DescribePortalResponse, DescribeStatementResponse, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{NoopQueryParser, StoredStatement};
use pgwire::api::store::Entry;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionGuard, ConnectionHandle, ConnectionManager,
    PgWireServerHandlers, PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail, CopyOutResponse};
use pgwire::messages::data::DataRow;
use pgwire::messages::data::{NoData, ParameterDescription};
use pgwire::messages::extendedquery::{Describe, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use weir_sql::copy_pipe::CopyPipe;

use crate::auth::Users;
use weir_sql::datafusion::arrow::datatypes::Schema;
use weir_sql::datafusion::arrow::record_batch::RecordBatch;
use weir_sql::{CopyChunk, Database, Output, Session};

/// The only database name there is.
pub const DATABASE: &str = "weir";

fn pg_error(e: &weir_sql::Error) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_owned(), e.sqlstate().to_owned(), e.to_string())
}

fn user_error(e: weir_sql::Error) -> PgWireError {
    PgWireError::UserError(Box::new(pg_error(&e)))
}

/// Turns a statement's output into a pgwire response, encoding rows as they stream.
/// A statement's output as a pgwire response; rows stop, with SQLSTATE 57014, when `cancel`
/// fires while they are being sent.
fn response(out: Output, format: &Format, cancel: Arc<CancelSignal>) -> PgWireResult<Response> {
    match out {
        Output::Rows {
            schema,
            stream,
            zone,
        } => {
            let fields = Arc::new(arrow_schema_to_pg_fields(&schema, format, None)?);
            let f = Arc::clone(&fields);
            let seen = cancel.generation();
            let waiting = Arc::clone(&cancel);
            let rows = stream
                .take_until(async move { waiting.fired_after(seen).await })
                .map(move |batch: Result<RecordBatch, _>| {
                    let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> =
                        match batch {
                            Ok(b) => match crate::text_rows::text_rows(&f, &b, zone) {
                                Some(rows) => Box::new(rows.into_iter().map(Ok)),
                                None => encode_recordbatch(Arc::clone(&f), b),
                            },
                            Err(e) => Box::new(std::iter::once(Err(user_error(e.into())))),
                        };
                    stream::iter(rows)
                })
                .flatten()
                .chain(
                    stream::once(async move {
                        (cancel.generation() != seen).then_some(Err(PgWireError::QueryCanceled))
                    })
                    .filter_map(|r| async move { r }),
                );
            Ok(Response::Query(QueryResponse::new(fields, rows)))
        }
        Output::Command(tag) => Ok(Response::Execution(Tag::new(&tag))),
        Output::Inserted(rows) => Ok(Response::Execution(
            Tag::new("INSERT").with_oid(0).with_rows(rows as usize),
        )),
        Output::Modified(command, rows) => Ok(Response::Execution(
            Tag::new(command).with_rows(rows as usize),
        )),
        Output::Transaction(true, tag) => Ok(Response::TransactionStart(Tag::new(tag))),
        Output::Transaction(false, tag) => Ok(Response::TransactionEnd(Tag::new(tag))),
        Output::CopyOut {
            columns,
            binary,
            stream,
        } => Ok(Response::CopyOut(CopyResponse::new(
            binary.into(),
            columns,
            stream.map(|r| {
                r.map(|chunk| CopyData::new(chunk.data.into()))
                    .map_err(user_error)
            }),
        ))),
        Output::CopyIn(copy) => Ok(Response::CopyIn(CopyResponse::new(
            0,
            copy.columns.len(),
            stream::empty(),
        ))),
    }
}

/// Streams `COPY ... TO STDOUT` data, flushing every chunk; ends with CopyDone and the tag.
async fn copy_out_live<C>(
    client: &mut C,
    columns: usize,
    binary: bool,
    stream: futures::stream::BoxStream<'static, weir_sql::Result<CopyChunk>>,
) -> Result<(), weir_sql::Error>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
{
    let rows = copy_out_stream(client, columns, binary, stream).await?;
    let tag = Tag::new("COPY").with_rows(rows);
    client
        .send(PgWireBackendMessage::CommandComplete(tag.into()))
        .await
        .map_err(|e| weir_sql::Error::Internal(format!("client connection: {e:?}")))?;
    Ok(())
}

/// Sends CopyOutResponse, the data (flushing every chunk) and CopyDone; returns the rows sent.
async fn copy_out_stream<C>(
    client: &mut C,
    columns: usize,
    binary: bool,
    mut stream: futures::stream::BoxStream<'static, weir_sql::Result<CopyChunk>>,
) -> Result<usize, weir_sql::Error>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
{
    let closed = |e: C::Error| weir_sql::Error::Internal(format!("client connection: {e:?}"));
    let format = i16::from(binary);
    let response = CopyOutResponse::new(format as i8, columns as i16, vec![format; columns]);
    client
        .send(PgWireBackendMessage::CopyOutResponse(response))
        .await
        .map_err(closed)?;
    let mut rows = 0usize;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                rows += chunk.rows;
                client
                    .send(PgWireBackendMessage::CopyData(CopyData::new(
                        chunk.data.into(),
                    )))
                    .await
                    .map_err(closed)?;
            }
            Err(e) => {
                client
                    .send(PgWireBackendMessage::CopyFail(CopyFail::new(e.to_string())))
                    .await
                    .map_err(closed)?;
                return Err(e);
            }
        }
    }
    if binary {
        // The binary format's trailer: a field count of -1.
        client
            .send(PgWireBackendMessage::CopyData(CopyData::new(
                (-1i16).to_be_bytes().to_vec().into(),
            )))
            .await
            .map_err(closed)?;
    }
    client
        .send(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await
        .map_err(closed)?;
    Ok(rows)
}

/// The COPY FROM STDIN a connection is receiving data for: the pipe to its loader, or why it
/// cannot load (told when the data ends, as the protocol answers then).
#[derive(Debug, Default)]
struct PendingCopy(Mutex<Option<weir_sql::Result<CopyPipe>>>);

impl PendingCopy {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<weir_sql::Result<CopyPipe>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Remembers a COPY FROM STDIN that is about to receive data on this connection.
fn expect_copy<C: ClientInfo>(client: &C, session: &Session, out: &Output) {
    if let Output::CopyIn(copy) = out {
        let pending = client
            .session_extensions()
            .get_or_insert_with(PendingCopy::default);
        *pending.lock() = Some(session.copy_pipe(copy));
    }
}

/// Serves one database to every connection; each connection has its own session.
#[derive(Debug)]
pub struct Handler {
    db: Database,
    parser: Arc<NoopQueryParser>,
    signals: Signals,
}

/// Fired by a CancelRequest for its connection: ends the rows a statement is still sending
/// (pgwire's own cancellation covers only the time until the first row).
#[derive(Debug, Default)]
pub struct CancelSignal {
    generation: std::sync::atomic::AtomicU64,
    notify: tokio::sync::Notify,
}

impl CancelSignal {
    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn fire(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Resolves once the signal fires after generation `seen`.
    async fn fired_after(&self, seen: u64) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.generation() != seen {
                return;
            }
            notified.await;
        }
    }
}

/// Each connection's cancel signal, by process ID (with its secret key, which a CancelRequest
/// must match).
type Signals = Arc<std::sync::Mutex<HashMap<i32, (SecretKey, std::sync::Weak<CancelSignal>)>>>;

/// Cancels a connection's statement: pgwire's part (a statement still running) and ours (rows
/// still being sent).
#[derive(Debug)]
struct WeirCancel {
    inner: DefaultCancelHandler,
    signals: Signals,
}

#[async_trait]
impl CancelHandler for WeirCancel {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let signal = {
            let signals = self.signals.lock().unwrap_or_else(|e| e.into_inner());
            signals
                .get(&request.pid)
                .filter(|(key, _)| key.eq_value(&request.secret_key))
                .and_then(|(_, s)| s.upgrade())
        };
        if let Some(signal) = signal {
            signal.fire();
        }
        self.inner.on_cancel_request(request).await;
    }
}

impl Handler {
    fn session<C: ClientInfo>(&self, client: &C) -> Arc<Session> {
        client.session_extensions().get_or_insert_with(|| {
            let session = Session::new(self.db.clone());
            let meta = client.metadata();
            let value = |k: &str| meta.get(k).cloned().unwrap_or_default();
            session.set_client(weir_sql::catalog::sessions::ClientDesc {
                user: value("user"),
                address: client.socket_addr().to_string(),
                application: value("application_name"),
            });
            session
        })
    }

    /// The connection's cancel signal, registered under its process ID on first use.
    fn cancel_signal<C: ClientInfo>(&self, client: &C) -> Arc<CancelSignal> {
        if let Some(signal) = client.session_extensions().get::<CancelSignal>() {
            return signal;
        }
        let signal = client
            .session_extensions()
            .get_or_insert_with(CancelSignal::default);
        let (pid, key) = client.pid_and_secret_key();
        let mut signals = self.signals.lock().unwrap_or_else(|e| e.into_inner());
        signals.retain(|_, (_, s)| s.strong_count() > 0);
        signals.insert(pid, (key, Arc::downgrade(&signal)));
        signal
    }
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session(client);
        let mut responses = Vec::new();
        let results = session.execute(query).await;
        send_notices(client, &session).await?;
        for result in results {
            match result {
                Ok(Output::CopyOut {
                    columns,
                    binary,
                    stream,
                }) => {
                    // Sent here rather than as a response so that every change is flushed as it
                    // happens; a CancelRequest drops this future, and the subscription with it.
                    if let Err(e) = copy_out_live(client, columns, binary, stream).await {
                        responses.push(Response::Error(Box::new(pg_error(&e))));
                        break;
                    }
                }
                Ok(out) => {
                    expect_copy(client, &session, &out);
                    responses.push(response(
                        out,
                        &Format::UnifiedText,
                        self.cancel_signal(client),
                    )?);
                }
                Err(e) => {
                    tracing::debug!(error = %e, sqlstate = e.sqlstate(), "statement failed");
                    responses.push(Response::Error(Box::new(pg_error(&e))));
                }
            }
        }
        Ok(responses)
    }
}

/// Sends the notices the session's statements left (before their responses, as PostgreSQL
/// sends a notice before its statement's CommandComplete).
async fn send_notices<C>(client: &mut C, session: &Session) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for notice in session.take_notices() {
        let info = ErrorInfo::new(
            "NOTICE".to_owned(),
            notice.sqlstate.to_owned(),
            notice.message,
        );
        client
            .send(PgWireBackendMessage::NoticeResponse(info.into()))
            .await?;
    }
    Ok(())
}

fn pg_fields(
    schema: &Schema,
    format: &Format,
) -> PgWireResult<Vec<pgwire::api::results::FieldInfo>> {
    arrow_schema_to_pg_fields(schema, format, None)
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = String;
    type QueryParser = NoopQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    /// As pgwire's, except that a statement with parameters but no result columns (an INSERT
    /// with `$1`) is answered with NoData after its ParameterDescription, as Postgres does;
    /// pgwire sends an empty RowDescription there, which JDBC takes for a result set.
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.target_type == TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or("");
            if let Some(Entry::Value(stmt)) = client.portal_store().get_statement(name) {
                let response = self.do_describe_statement(client, &stmt).await?;
                if response.fields.is_empty() {
                    let oids = response.parameters.iter().map(Type::oid).collect();
                    client
                        .send(PgWireBackendMessage::ParameterDescription(
                            ParameterDescription::new(oids),
                        ))
                        .await?;
                    client
                        .send(PgWireBackendMessage::NoData(NoData::new()))
                        .await?;
                    return Ok(());
                }
                return send_describe_response(client, &response).await;
            }
        }
        self._on_describe(client, message).await
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let desc = self
            .session(client)
            .describe(&target.statement)
            .await
            .map_err(user_error)?;
        let n = desc.params.len().max(target.parameter_types.len());
        let mut params = Vec::with_capacity(n);
        for i in 0..n {
            let given = target.parameter_types.get(i).cloned().flatten();
            let t = match (given, desc.params.get(i).cloned().flatten()) {
                (Some(t), _) if t != Type::UNKNOWN => t,
                (_, Some(dt)) => into_pg_type(&dt)?,
                _ => Type::UNKNOWN,
            };
            params.push(t);
        }
        let fields = match &desc.columns {
            Some(schema) => pg_fields(schema, &Format::UnifiedText)?,
            None => Vec::new(),
        };
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let desc = self
            .session(client)
            .describe(&portal.statement.statement)
            .await
            .map_err(user_error)?;
        let fields = match &desc.columns {
            Some(schema) => pg_fields(schema, &portal.result_column_format)?,
            None => Vec::new(),
        };
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session(client);
        let sql = &portal.statement.statement;
        let params = if portal.parameter_len() > 0 {
            let desc = session.describe(sql).await.map_err(user_error)?;
            let inferred: Vec<Option<&weir_sql::datafusion::arrow::datatypes::DataType>> =
                desc.params.iter().map(Option::as_ref).collect();
            Some(deserialize_parameters(portal, &inferred)?)
        } else {
            None
        };
        let out = session.execute_one(sql, params).await;
        send_notices(client, &session).await?;
        let out = out.map_err(user_error)?;
        if let Output::CopyOut {
            columns,
            binary,
            stream,
        } = out
        {
            // Streamed here so that each change is flushed as it happens (see the simple path).
            let rows = copy_out_stream(client, columns, binary, stream)
                .await
                .map_err(user_error)?;
            return Ok(Response::Execution(Tag::new("COPY").with_rows(rows)));
        }
        expect_copy(client, &session, &out);
        response(
            out,
            &portal.result_column_format,
            self.cancel_signal(client),
        )
    }
}

#[async_trait]
impl CopyHandler for Handler {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let pending = client
            .session_extensions()
            .get_or_insert_with(PendingCopy::default);
        // Out of the lock while it waits: the loader's thread may be behind.
        let taken = pending.lock().take();
        if let Some(Ok(mut pipe)) = taken {
            pipe.feed(&copy_data.data).await;
            *pending.lock() = Some(Ok(pipe));
        } else {
            *pending.lock() = taken;
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let pending = client
            .session_extensions()
            .get_or_insert_with(PendingCopy::default);
        let taken = pending.lock().take();
        let Some(loader) = taken else {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".to_owned(),
                "08P01".to_owned(),
                "COPY data ended, but no COPY FROM STDIN was running".to_owned(),
            ))));
        };
        let loader = loader
            .map_err(user_error)?
            .finish()
            .await
            .map_err(user_error)?;
        let rows = self
            .session(client)
            .copy_finish(loader)
            .await
            .map_err(user_error)?;
        let tag = Tag::new("COPY").with_rows(rows as usize);
        client
            .send(PgWireBackendMessage::CommandComplete(tag.into()))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let pending = client
            .session_extensions()
            .get_or_insert_with(PendingCopy::default);
        pending.lock().take();
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".to_owned(),
            "57014".to_owned(),
            format!(
                "COPY from stdin failed: {}; nothing was loaded",
                fail.message
            ),
        )))
    }
}

/// Accepts the startup of a connection to database `weir`: trusted, or with a SCRAM-SHA-256
/// password when the server has users. A fresh one serves each connection.
pub struct Startup {
    parameters: DefaultServerParameterProvider,
    connections: Arc<ConnectionManager>,
    keys: Arc<RandomPidSecretKeyGenerator>,
    /// The SCRAM exchange, when passwords are required.
    scram: Option<SASLAuthStartupHandler<DefaultServerParameterProvider>>,
}

impl Debug for Startup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Startup")
            .field("passwords", &self.scram.is_some())
            .finish()
    }
}

fn server_parameters() -> DefaultServerParameterProvider {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = format!(
        "{} (Weir {})",
        weir_sql::settings::PG_VERSION,
        env!("CARGO_PKG_VERSION")
    );
    parameters
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(ref startup) = message {
            let db = startup
                .parameters
                .get("database")
                .or_else(|| startup.parameters.get("user"))
                .cloned()
                .unwrap_or_default();
            if db != DATABASE {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "FATAL".to_owned(),
                    "3D000".to_owned(),
                    format!("database \"{db}\" does not exist; connect to database \"{DATABASE}\""),
                ))));
            }
        }
        if let Some(scram) = &self.scram {
            return scram.on_startup(client, message).await;
        }
        if let PgWireFrontendMessage::Startup(ref startup) = message {
            protocol_negotiation(client, startup).await?;
            save_startup_parameters_to_metadata(client, startup);
            // A key for CancelRequest (psql's Ctrl-C): registered so that the cancel handler
            // can interrupt this connection's running statement.
            let (pid, secret) = self.keys.generate(client);
            client.set_pid_and_secret_key(pid, secret.clone());
            let (handle, guard) = self.connections.register(pid, secret);
            client
                .session_extensions()
                .insert::<Arc<ConnectionHandle>>(handle);
            client.session_extensions().insert::<ConnectionGuard>(guard);
            finish_authentication(client, &self.parameters).await?;
        }
        Ok(())
    }
}

/// Builds the handlers pgwire asks for.
#[derive(Debug)]
pub struct HandlerFactory {
    handler: Arc<Handler>,
    connections: Arc<ConnectionManager>,
    keys: Arc<RandomPidSecretKeyGenerator>,
    users: Option<Arc<Users>>,
    cancel: Arc<WeirCancel>,
}

impl HandlerFactory {
    /// Handlers serving `db`; with `users`, every connection logs in with SCRAM-SHA-256.
    pub fn new(db: Database, users: Option<Arc<Users>>) -> Self {
        let connections = Arc::new(ConnectionManager::new());
        let signals = Signals::default();
        Self {
            handler: Arc::new(Handler {
                db,
                parser: Arc::new(NoopQueryParser::new()),
                signals: Arc::clone(&signals),
            }),
            keys: Arc::new(RandomPidSecretKeyGenerator::default()),
            cancel: Arc::new(WeirCancel {
                inner: DefaultCancelHandler::new(Arc::clone(&connections)),
                signals,
            }),
            connections,
            users,
        }
    }
}

impl PgWireServerHandlers for HandlerFactory {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        Arc::clone(&self.handler)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        let scram = self.users.as_ref().map(|users| {
            SASLAuthStartupHandler::new(Arc::new(server_parameters()))
                .with_scram(ScramAuth::new(Arc::clone(users) as Arc<dyn AuthSource>))
                .with_pid_secret_key_generator(Arc::clone(&self.keys) as _)
                .with_connection_manager(Arc::clone(&self.connections))
        });
        Arc::new(Startup {
            parameters: server_parameters(),
            connections: Arc::clone(&self.connections),
            keys: Arc::clone(&self.keys),
            scram,
        })
    }
}
