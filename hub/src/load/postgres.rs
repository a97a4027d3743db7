//! The PostgreSQL adapter: connection settings (with the schema as `search_path`), a shared
//! lazily reconnecting connection for the light users (auth, status, HTTP), and the
//! retriable/permanent error split the load stage retries on.

use std::sync::Arc;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tracing::warn;

use crate::config::{ConfigError, LoadConfig};

/// How to reach the database, with the password resolved.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    schema: String,
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
        Ok(Self {
            config,
            schema: load.schema.clone(),
        })
    }

    /// The schema the hub's tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Opens a connection; its driver task logs and ends when the connection drops.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                warn!(%error, "PostgreSQL connection closed.");
            }
        });
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
