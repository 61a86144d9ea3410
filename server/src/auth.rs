//! Password authentication (SCRAM-SHA-256) from a users file or a single password, and TLS.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use pgwire::api::auth::sasl::scram::{SCRAM_ITERATIONS, gen_salted_password};
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::tokio_rustls::rustls::ServerConfig;
use pgwire::tokio::tokio_rustls::rustls::pki_types::pem::PemObject;
use pgwire::tokio::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// The users who may connect, with their SCRAM-salted passwords (the cleartext is not kept).
#[derive(Debug, Default)]
pub struct Users {
    salted: HashMap<String, (Vec<u8>, Vec<u8>)>,
}

fn random_salt() -> Result<Vec<u8>, Error> {
    let mut salt = vec![0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .map_err(|source| Error::Io {
            context: "reading /dev/urandom for password salts".into(),
            source,
        })?;
    Ok(salt)
}

impl Users {
    /// Adds (or replaces) a user.
    pub fn add(&mut self, name: &str, password: &str) -> Result<(), Error> {
        if name.is_empty() || password.is_empty() {
            return Err(Error::Config(
                "a user needs a name and a non-empty password".into(),
            ));
        }
        let salt = random_salt()?;
        let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        self.salted.insert(name.to_string(), (salt, salted));
        Ok(())
    }

    /// Reads a users file: one `name:password` per line; blank lines and `#` comments skipped.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            context: format!("reading users file {}", path.display()),
            source,
        })?;
        let mut users = Self::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, password)) = line.split_once(':') else {
                return Err(Error::Config(format!(
                    "{}:{}: expected name:password",
                    path.display(),
                    i + 1
                )));
            };
            users.add(name.trim(), password)?;
        }
        if users.salted.is_empty() {
            return Err(Error::Config(format!(
                "users file {} names no users",
                path.display()
            )));
        }
        Ok(users)
    }

    /// Whether `password` is `name`'s (in time independent of where they differ).
    pub fn verify(&self, name: &str, password: &str) -> bool {
        let Some((salt, salted)) = self.salted.get(name) else {
            return false;
        };
        let given = gen_salted_password(password, salt, SCRAM_ITERATIONS);
        bool::from(subtle::ConstantTimeEq::ct_eq(
            given.as_slice(),
            salted.as_slice(),
        ))
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.salted.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.salted.is_empty()
    }
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        match self.salted.get(user) {
            Some((salt, salted)) => Ok(Password::new(Some(salt.clone()), salted.clone())),
            // The same answer as a wrong password, so that names cannot be probed.
            None => Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".to_owned(),
                "28P01".to_owned(),
                format!("password authentication failed for user \"{user}\""),
            )))),
        }
    }
}

/// A TLS acceptor for the Postgres listener from PEM files: a certificate chain and its
/// private key.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    tls_acceptor_for(cert, key, b"postgresql")
}

/// A TLS acceptor from PEM files that agrees on the application protocol `alpn` with clients
/// that name one.
pub fn tls_acceptor_for(cert: &Path, key: &Path, alpn: &[u8]) -> Result<TlsAcceptor, Error> {
    let config_error = |what: &str, path: &Path, e: String| {
        Error::Config(format!("{what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| config_error("TLS certificate", cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error("TLS certificate", cert, e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| config_error("TLS key", key, e.to_string()))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| config_error("TLS certificate and key", cert, e.to_string()))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
