//! The HTTP listener (`weir serve --http`): `/metrics` in Prometheus' text format, `/healthz`,
//! `/readyz`, `/api/...` (the system relations as JSON) and the console at `/`. With users,
//! every request but `/healthz` needs their password (HTTP Basic); with TLS, it speaks HTTPS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use datafusion::arrow::record_batch::RecordBatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_sql::database::Database;

use crate::auth::Users;

/// The most a request's head may take; a client that sends more is answered 431.
const MAX_HEAD: usize = 16 << 10;

/// The first byte of a TLS handshake, which no HTTP request starts with.
const TLS_HANDSHAKE: u8 = 0x16;

/// The system relations served under `/api/NAME`, as the statement that reads each. Every one
/// reads as it is, without waiting for views to catch up.
const RELATIONS: &[(&str, &str)] = &[
    ("progress", "SELECT * FROM weir_view_progress"),
    ("operators", "SELECT * FROM weir_operators"),
    ("watermarks", "SELECT * FROM weir_watermarks"),
    ("checkpoints", "SELECT * FROM weir_checkpoints"),
    ("sessions", "SELECT * FROM weir_sessions"),
    ("connectors", "SELECT * FROM weir_connectors"),
    // A thousand: a view can have missed millions.
    ("late_events", "SELECT * FROM weir_late_events LIMIT 1000"),
    ("streams", "SHOW STREAMS"),
    ("materialized_views", "SHOW MATERIALIZED VIEWS"),
];

/// Who may use the listener and how it is reached.
#[derive(Clone)]
pub(crate) struct Access {
    /// With users, every request but `/healthz` needs a user's name and password.
    pub(crate) users: Option<Arc<Users>>,
    /// With TLS, HTTPS; plain HTTP too when `plain` allows.
    pub(crate) tls: Option<pgwire::tokio::TlsAcceptor>,
    /// Whether plain HTTP is served (on loopback); off loopback only HTTPS is.
    pub(crate) plain: bool,
}

/// Serves `db` on `listener` until the task is dropped.
pub(crate) async fn run(listener: TcpListener, db: Database, access: Access) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let db = db.clone();
        let access = access.clone();
        tokio::spawn(async move {
            let served = connection(socket, peer, &db, &access);
            if tokio::time::timeout(Duration::from_secs(10), served)
                .await
                .is_err()
            {
                tracing::debug!(%peer, "HTTP request timed out");
            }
        });
    }
}

/// Answers one connection, over TLS if it starts a TLS handshake.
async fn connection(socket: TcpStream, peer: SocketAddr, db: &Database, access: &Access) {
    if let Some(tls) = &access.tls {
        let mut first = [0u8; 1];
        if matches!(socket.peek(&mut first).await, Ok(1)) && first[0] == TLS_HANDSHAKE {
            match tls.accept(socket).await {
                Ok(stream) => serve(stream, peer, db, access).await,
                Err(e) => tracing::debug!(%peer, error = %e, "HTTPS handshake failed"),
            }
            return;
        }
        if !access.plain {
            let mut socket = socket;
            let why = "this listener speaks HTTPS only\n";
            respond(&mut socket, "400 Bad Request", "text/plain", &[], why).await;
            return;
        }
    }
    serve(socket, peer, db, access).await;
}

/// A request's method, path and the user it names (`Authorization: Basic ...`), if any.
struct Request {
    method: String,
    path: String,
    credentials: Option<(String, String)>,
}

/// Reads a request's head; `Err` carries the status to answer with.
async fn read_head<S: AsyncRead + Unpin>(socket: &mut S) -> Result<Option<Request>, &'static str> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err("431 Request Header Fields Too Large");
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let credentials = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("authorization") {
            return None;
        }
        let (scheme, encoded) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        Some((user.to_string(), password.to_string()))
    });
    Ok(Some(Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        credentials,
    }))
}

/// Whether `request` may go on: without users every request may; with users, one that names
/// a user with the right password. Checking costs a SCRAM key derivation, off the async workers.
async fn allowed(request: &Request, access: &Access) -> Option<String> {
    let Some(users) = &access.users else {
        return Some(String::new());
    };
    let (user, password) = request.credentials.clone()?;
    let users = Arc::clone(users);
    let name = user.clone();
    let ok = tokio::task::spawn_blocking(move || users.verify(&name, &password))
        .await
        .unwrap_or(false);
    ok.then_some(user)
}

/// Reads one request and answers it.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    peer: SocketAddr,
    db: &Database,
    access: &Access,
) {
    let request = match read_head(&mut socket).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(status) => {
            respond(&mut socket, status, "text/plain", &[], "").await;
            return;
        }
    };
    if request.method != "GET" {
        let status = "405 Method Not Allowed";
        respond(&mut socket, status, "text/plain", &[], "GET only\n").await;
        return;
    }
    // Liveness tells nothing about the data, so probes need no password.
    if request.path == "/healthz" {
        respond(&mut socket, "200 OK", "text/plain", &[], "ok\n").await;
        return;
    }
    let Some(user) = allowed(&request, access).await else {
        let challenge = [(
            "WWW-Authenticate",
            "Basic realm=\"weir\", charset=\"UTF-8\"",
        )];
        let why = "a user name and password are needed\n";
        respond(
            &mut socket,
            "401 Unauthorized",
            "text/plain",
            &challenge,
            why,
        )
        .await;
        return;
    };
    let (status, content_type, body) = answer(&request.path, db, &user, peer).await;
    respond(&mut socket, status, content_type, &[], &body).await;
}

/// The status, content type and body for a GET of `path`.
async fn answer(
    path: &str,
    db: &Database,
    user: &str,
    peer: SocketAddr,
) -> (&'static str, &'static str, String) {
    const JSON: &str = "application/json";
    match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            weir_sql::metrics::prometheus_text(db.registry()),
        ),
        "/api/views" => (
            "200 OK",
            JSON,
            weir_sql::metrics::views_json(db.registry()).to_string(),
        ),
        // The console: one page that reads the API every second.
        "/" => (
            "200 OK",
            "text/html; charset=utf-8",
            include_str!("console.html").to_string(),
        ),
        // Recovered (the listener serves once the database is open) and caught up.
        "/readyz" => match weir_sql::metrics::readiness(db.registry()) {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_string()),
            Err(why) => ("503 Service Unavailable", "text/plain", why),
        },
        _ => {
            let relation = path.strip_prefix("/api/").and_then(|name| {
                RELATIONS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, sql)| *sql)
            });
            let Some(sql) = relation else {
                return ("404 Not Found", "text/plain", "not found\n".to_string());
            };
            match relation_json(db, sql, user, peer).await {
                Ok(body) => ("200 OK", JSON, body),
                Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
            }
        }
    }
}

/// The rows of `sql` as a JSON array of objects, read by a session of the HTTP client's own
/// (so `weir_sessions` shows it, as `weir http`).
async fn relation_json(
    db: &Database,
    sql: &str,
    user: &str,
    peer: SocketAddr,
) -> Result<String, String> {
    let session = weir_sql::Session::new(db.clone());
    session.set_client(weir_sql::catalog::sessions::ClientDesc {
        user: user.to_string(),
        address: peer.to_string(),
        application: "weir http".to_string(),
    });
    let output = session
        .execute_one(sql, None)
        .await
        .map_err(|e| e.to_string())?;
    let weir_sql::Output::Rows { stream, .. } = output else {
        return Err(format!("{sql} returned no rows"));
    };
    let batches: Vec<RecordBatch> = datafusion::physical_plan::common::collect(stream)
        .await
        .map_err(|e| e.to_string())?;
    // NULLs as null, so that every object has every column.
    let mut writer = datafusion::arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, datafusion::arrow::json::writer::JsonArray>(Vec::new());
    for batch in &batches {
        writer.write(batch).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    let body = String::from_utf8(writer.into_inner()).map_err(|e| e.to_string())?;
    Ok(if body.is_empty() { "[]".into() } else { body })
}

async fn respond<S: AsyncWrite + Unpin>(
    socket: &mut S,
    status: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &str,
) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(body.as_bytes()).await;
    let _ = socket.shutdown().await;
}
