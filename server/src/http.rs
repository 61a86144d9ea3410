//! The HTTP listener (`weir serve --http`): `/metrics` in Prometheus' text format,
//! `/healthz`, `/readyz`, `/api/views` (JSON) and the console at `/`. Loopback only, as it has no authentication yet; one request per connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_sql::database::Database;

/// The most a request's head may take; a client that sends more is answered 431.
const MAX_HEAD: usize = 16 << 10;

/// Serves `db`'s metrics on `listener` until the task is dropped.
pub(crate) async fn run(listener: TcpListener, db: Database) {
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
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(Duration::from_secs(10), serve(socket, &db)).await
            {
                tracing::debug!(%peer, error = %e, "HTTP request timed out");
            }
        });
    }
}

/// Reads one request's head and answers it.
async fn serve(mut socket: TcpStream, db: &Database) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            respond(
                &mut socket,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
            return;
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = weir_sql::metrics::prometheus_text(db.registry());
            respond(
                &mut socket,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await;
        }
        ("GET", "/api/views") => {
            let body = weir_sql::metrics::views_json(db.registry()).to_string();
            respond(&mut socket, "200 OK", "application/json", &body).await;
        }
        // The console: one page that reads /api/views every two seconds.
        ("GET", "/") => {
            respond(
                &mut socket,
                "200 OK",
                "text/html; charset=utf-8",
                include_str!("console.html"),
            )
            .await;
        }
        ("GET", "/healthz") => respond(&mut socket, "200 OK", "text/plain", "ok\n").await,
        // Recovered (the listener serves once the database is open) and caught up.
        ("GET", "/readyz") => match weir_sql::metrics::readiness(db.registry()) {
            Ok(()) => respond(&mut socket, "200 OK", "text/plain", "ready\n").await,
            Err(why) => {
                respond(&mut socket, "503 Service Unavailable", "text/plain", &why).await;
            }
        },
        ("GET", _) => respond(&mut socket, "404 Not Found", "text/plain", "not found\n").await,
        _ => {
            respond(
                &mut socket,
                "405 Method Not Allowed",
                "text/plain",
                "GET only\n",
            )
            .await;
        }
    }
}

async fn respond(socket: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(body.as_bytes()).await;
    let _ = socket.shutdown().await;
}
