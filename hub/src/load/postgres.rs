//! The PostgreSQL adapter: connection settings (with the schema as `search_path`, optionally
//! TLS with rustls), shared lazily reconnecting connections for the light users, and the
//! retriable/permanent error split the load stage retries on.
//!
//! The hub keeps its users apart, each on its own connection: the load stage; logins and
//! device status ([`Db`] "auth"); and the HTTP API ([`Db`] "api", whose queries run under
//! `load.api_statement_timeout_ms`), so a slow or abusive API query never holds up a device
//! login or a batch of records.

use std::sync::Arc;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tracing::warn;

use crate::config::{ConfigError, LoadConfig, PgTls};

/// Whether `host` names this machine (`localhost` or a loopback address).
pub fn is_local_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How to reach the database, with the password resolved.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    schema: String,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Builds the target from `[load]`, reading the password from its file or variable.
    pub fn new(load: &LoadConfig) -> Result<Self, ConfigError> {
        let mut config: tokio_postgres::Config =
            load.url.parse().map_err(|e| ConfigError::Invalid {
                key: "load.url",
                problem: format!("{e}"),
            })?;
        if let Some(p) = load.password().resolve("load")? {
            config.password(p.expose());
        }
        // Schema names are checked to be plain identifiers by the config.
        config.options(format!("-c search_path={}", load.schema));
        config.application_name("examlink-hub");
        let tls = match (load.tls, &load.tls_ca_file) {
            (PgTls::Require, Some(ca)) => {
                let c = crate::tls::client_config(ca).map_err(|e| ConfigError::Invalid {
                    key: "load.tls_ca_file",
                    problem: e.to_string(),
                })?;
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(tokio_postgres_rustls::MakeRustlsConnect::new(c))
            }
            (PgTls::Require, None) => {
                return Err(ConfigError::Invalid {
                    key: "load.tls_ca_file",
                    problem: "load.tls = \"require\" needs a CA file".into(),
                })
            }
            (PgTls::Disable, _) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                None
            }
        };
        Ok(Self {
            config,
            schema: load.schema.clone(),
            tls,
        })
    }

    /// Whether every host is this machine (a Unix socket or loopback).
    pub fn is_local(&self) -> bool {
        self.config.get_hosts().iter().all(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => is_local_host(name),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => true,
        })
    }

    /// Whether connections use TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The same target, with every statement limited to `ms` milliseconds and its own
    /// application name.
    pub fn with_statement_timeout(&self, ms: u64, application: &str) -> Self {
        let mut t = self.clone();
        t.config.options(format!(
            "-c search_path={} -c statement_timeout={ms}",
            self.schema
        ));
        t.config.application_name(application);
        t
    }

    /// The schema the hub's tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Opens a connection; its driver task logs and ends when the connection drops.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let client = match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        warn!(%error, "PostgreSQL connection closed.");
                    }
                });
                client
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        warn!(%error, "PostgreSQL connection closed.");
                    }
                });
                client
            }
        };
        Ok(client)
    }
}

/// A shared connection, reopened on demand after it breaks. Queries from several tasks are
/// pipelined on it.
pub struct Db {
    target: PgTarget,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Db {
    /// A handle that connects on first use.
    pub fn new(target: PgTarget) -> Self {
        Self {
            target,
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection, reconnecting if it is closed.
    pub async fn client(&self) -> Result<Arc<Client>, tokio_postgres::Error> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(self.target.connect().await?);
        *slot = Some(c.clone());
        Ok(c)
    }
}

/// Whether an error may go away by retrying (connection trouble, server restart,
/// serialization failures, resource shortage) rather than being caused by the data.
pub fn is_retriable(e: &tokio_postgres::Error) -> bool {
    let Some(code) = e.code() else {
        // No SQLSTATE: I/O, closed connection, timeout.
        return true;
    };
    let class = &code.code()[..2];
    matches!(class, "08" | "53" | "57" | "58" | "40")
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
}
