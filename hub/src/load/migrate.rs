//! Embedded, versioned schema migrations. Each `hub/migrations/NNNN_name.sql` is applied once,
//! in order, inside the configured schema, and recorded in `schema_migrations`. Concurrent
//! hubs serialise on a transaction-scoped advisory lock keyed by the schema name.

use tokio_postgres::Client;
use tracing::info;

/// `(version, name, sql)`, in order. Never edit an applied one: add a new file.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/0001_init.sql")),
    (
        3,
        "accounts_audit",
        include_str!("../../migrations/0003_accounts_audit.sql"),
    ),
    (
        4,
        "lossless",
        include_str!("../../migrations/0004_lossless.sql"),
    ),
    (
        5,
        "review",
        include_str!("../../migrations/0005_review.sql"),
    ),
    (
        6,
        "double_key",
        include_str!("../../migrations/0006_double_key.sql"),
    ),
    (
        7,
        "fhir_queue",
        include_str!("../../migrations/0007_fhir_queue.sql"),
    ),
    (
        8,
        "republish_revisions",
        include_str!("../../migrations/0008_republish_revisions.sql"),
    ),
    (
        9,
        "blind_checks",
        include_str!("../../migrations/0009_blind_checks.sql"),
    ),
    (
        10,
        "review_context",
        include_str!("../../migrations/0010_review_context.sql"),
    ),
];

/// Creates the schema if needed and applies the missing migrations; returns those applied.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<Vec<i32>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1)::bigint)",
        &[&schema],
    )
    .await?;
    // `schema` is a checked identifier (config::valid_schema_name).
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         SET LOCAL search_path TO {schema};
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let done: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        info!(schema, version, name, "Applied migration.");
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(applied)
}
