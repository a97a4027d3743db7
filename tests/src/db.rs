//! PostgreSQL for a fleet run: a database of its own (created, and dropped by tests), and
//! queries over what the hub stored. URL base from `EXAMLINK_PG` (default
//! `host=127.0.0.1 user=postgres`).

use anyhow::Context;
use postgres::{Client, NoTls};

/// Connection parameters without a database name.
pub fn base_url() -> String {
    std::env::var("EXAMLINK_PG").unwrap_or_else(|_| "host=127.0.0.1 user=postgres".into())
}

/// The connection string of database `name`.
pub fn url(name: &str) -> String {
    format!("{} dbname={name}", base_url())
}

/// Connects to database `name`.
pub fn connect(name: &str) -> anyhow::Result<Client> {
    connect_url(&url(name))
}

/// Connects with a full connection string.
pub fn connect_url(url: &str) -> anyhow::Result<Client> {
    Client::connect(url, NoTls).with_context(|| format!("connecting to PostgreSQL ({url})"))
}

/// Creates database `name` unless it exists.
pub fn ensure_database(name: &str) -> anyhow::Result<()> {
    let mut c = connect("postgres")?;
    let exists = c
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])?
        .is_some();
    if !exists {
        c.batch_execute(&format!("CREATE DATABASE \"{name}\""))?;
    }
    Ok(())
}

/// Drops database `name` (terminating its connections).
pub fn drop_database(name: &str) -> anyhow::Result<()> {
    let mut c = connect("postgres")?;
    c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))?;
    Ok(())
}

/// One stored measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Record id.
    pub record_id: String,
    /// Device id.
    pub device_id: String,
    /// Export file name.
    pub source_file: String,
    /// Field.
    pub field: String,
    /// Value (normalised).
    pub value: Option<String>,
    /// Status.
    pub status: String,
}

/// Every measurement stored in `schema`.
pub fn measurements(c: &mut Client, schema: &str) -> anyhow::Result<Vec<Stored>> {
    let rows = c.query(
        &format!(
            "SELECT r.record_id, r.device_id, r.source_file, m.field, m.value, m.status \
             FROM \"{schema}\".records r JOIN \"{schema}\".measurements m USING (record_id) \
             WHERE r.superseded_by IS NULL"
        ),
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| Stored {
            record_id: r.get(0),
            device_id: r.get(1),
            source_file: r.get(2),
            field: r.get(3),
            value: r.get(4),
            status: r.get(5),
        })
        .collect())
}

/// `(device_id, source_file, rows)` for every export stored more than once (must be empty).
pub fn duplicates(c: &mut Client, schema: &str) -> anyhow::Result<Vec<(String, String, i64)>> {
    let rows = c.query(
        &format!(
            "SELECT device_id, source_file, count(*) FROM \"{schema}\".records \
             WHERE superseded_by IS NULL GROUP BY device_id, source_file HAVING count(*) > 1"
        ),
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Records stored per device.
pub fn record_counts(c: &mut Client, schema: &str) -> anyhow::Result<Vec<(String, i64)>> {
    let rows = c.query(
        &format!(
            "SELECT device_id, count(*) FROM \"{schema}\".records GROUP BY device_id ORDER BY 1"
        ),
        &[],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
