//! Weir's Postgres wire server: every connection gets a `weir_sql::Session`.

pub mod pg;

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
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    db: Database,
}

impl Server {
    /// Opens the database and binds the listener.
    pub async fn bind(config: &ServeConfig) -> Result<Self, Error> {
        if !config.listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "refusing to listen on {}: Weir accepts connections without a password, so it \
                 listens on loopback addresses only (password authentication is not built yet)",
                config.listen
            )));
        }
        let db = Database::open(&config.data_dir).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Io {
                context: format!("listening on {}", config.listen),
                source,
            })?;
        Ok(Self { listener, db })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(|source| Error::Io {
            context: "reading the bound address".into(),
            source,
        })
    }

    /// The database served.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Accepts connections until the task is dropped.
    pub async fn run(self) -> Result<(), Error> {
        let factory = Arc::new(pg::HandlerFactory::new(self.db.clone()));
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
            tokio::spawn(async move {
                tracing::debug!(%peer, "connection");
                if let Err(e) = pgwire::tokio::process_socket(socket, None, factory).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    }
}
