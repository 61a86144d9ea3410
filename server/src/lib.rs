//! Weir's Postgres wire server: every connection gets a `weir_sql::Session`.

pub mod auth;
mod http;
pub mod kafka;
pub mod pg;
mod text_rows;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use weir_sql::Database;

/// How `weir serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address for the Postgres wire protocol.
    pub listen: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Who may connect; `None` trusts every connection (allowed on loopback only).
    pub users: Option<Arc<auth::Users>>,
    /// TLS certificate chain and private key (PEM), to accept encrypted connections.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How often each materialized view checkpoints.
    pub checkpoint_interval: std::time::Duration,
    /// The default memory limit of a view's state, in bytes.
    pub view_memory_limit: u64,
    /// Address for the Kafka protocol; `None` turns it off.
    pub kafka_listen: Option<SocketAddr>,
    /// Whether Kafka clients create topics by using them (Metadata or Produce).
    pub kafka_auto_create: bool,
    /// Address for HTTP (`/metrics`, `/healthz`, the console); `None` turns it off. Off
    /// loopback it needs `users` and `tls`.
    pub http_listen: Option<SocketAddr>,
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening the database failed.
    #[error(transparent)]
    Sql(#[from] weir_sql::Error),
    /// Binding or accepting failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not acceptable.
    #[error("{0}")]
    Config(String),
}

/// A server bound to its address, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    kafka: Option<TcpListener>,
    kafka_auto_create: bool,
    http: Option<(TcpListener, http::Access)>,
    db: Database,
    users: Option<Arc<auth::Users>>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("passwords", &self.users.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Server {
    /// Opens the database and binds the listener.
    pub async fn bind(config: &ServeConfig) -> Result<Self, Error> {
        if !config.listen.ip().is_loopback() && config.users.is_none() {
            return Err(Error::Config(format!(
                "refusing to listen on {} without passwords: only loopback connections are \
                 trusted. Give users with --users FILE (name:password lines) or --password \
                 (user weir), and they log in with SCRAM-SHA-256",
                config.listen
            )));
        }
        if let Some(kafka) = config.kafka_listen.filter(|a| !a.ip().is_loopback()) {
            return Err(Error::Config(format!(
                "refusing to serve the Kafka protocol on {kafka}: it has no authentication yet \
                 (SASL), so it listens on loopback only"
            )));
        }
        if let Some(http) = config.http_listen.filter(|a| !a.ip().is_loopback())
            && (config.users.is_none() || config.tls.is_none())
        {
            return Err(Error::Config(format!(
                "refusing to serve HTTP on {http} without passwords and TLS: off loopback it \
                 needs the Postgres listener's users (--users or --password) and TLS \
                 (--tls-cert and --tls-key), and then serves HTTPS with HTTP Basic \
                 authentication"
            )));
        }
        let tls = match &config.tls {
            Some((cert, key)) => Some(auth::tls_acceptor(cert, key)?),
            None => None,
        };
        let db = Database::open_with(
            &config.data_dir,
            weir_sql::Options {
                checkpoint_interval: config.checkpoint_interval,
                connectors: Some(kafka::connectors::KafkaConnectors::shared()),
                view_memory_limit: Some(config.view_memory_limit),
            },
        )
        .await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Io {
                context: format!("listening on {}", config.listen),
                source,
            })?;
        let kafka = match config.kafka_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| Error::Io {
                context: format!("listening for Kafka clients on {addr}"),
                source,
            })?),
            None => None,
        };
        let http = match config.http_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
                    context: format!("listening for HTTP on {addr}"),
                    source,
                })?;
                let tls = match &config.tls {
                    Some((cert, key)) => Some(auth::tls_acceptor_for(cert, key, b"http/1.1")?),
                    None => None,
                };
                let access = http::Access {
                    users: config.users.clone(),
                    tls,
                    plain: addr.ip().is_loopback(),
                };
                Some((listener, access))
            }
            None => None,
        };
        Ok(Self {
            listener,
            kafka,
            kafka_auto_create: config.kafka_auto_create,
            http,
            db,
            users: config.users.clone(),
            tls,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(|source| Error::Io {
            context: "reading the bound address".into(),
            source,
        })
    }

    /// The address the Kafka protocol is served on, if it is.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address HTTP (`/metrics`) is served on, if it is.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The database served.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Accepts connections until the task is dropped.
    pub async fn run(self) -> Result<(), Error> {
        let _kafka = self.kafka.map(|listener| {
            AbortOnDrop(tokio::spawn(kafka::run(
                listener,
                self.db.clone(),
                kafka::DEFAULT_MAX_FRAME_BYTES,
                self.kafka_auto_create,
            )))
        });
        let _http = self.http.map(|(listener, access)| {
            AbortOnDrop(tokio::spawn(http::run(listener, self.db.clone(), access)))
        });
        let factory = Arc::new(pg::HandlerFactory::new(self.db.clone(), self.users.clone()));
        loop {
            let (socket, peer) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Running out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let factory = Arc::clone(&factory);
            let tls = self.tls.clone();
            tokio::spawn(async move {
                tracing::debug!(%peer, "connection");
                if let Err(e) = pgwire::tokio::process_socket(socket, tls, factory).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    }
}

/// Stops a background task (the Kafka listener) when the server stops.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
