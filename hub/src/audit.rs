//! The audit trail: who did what, when. Every read of patient data (the query and how many
//! records it returned) and every change (device and user add, rotate and revoke, logins,
//! and what later features add: review decisions, replays) is one row of the `audit` table
//! (`hub/migrations/0003_accounts_audit.sql`). The table is append-only: a trigger refuses
//! UPDATE, DELETE and TRUNCATE, for the table's owner too.
//!
//! Appending is one call, inside whatever transaction the caller is in:
//!
//! ```no_run
//! # async fn f(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
//! hub::audit::append(client, "alice", "review.resolve", serde_json::json!({"record": "r-1"})).await?;
//! # Ok(()) }
//! ```
//!
//! Actors: a person's user name, `device:<id>` for a device, `cli:<os user>` for the `hub`
//! command line. Actions are dotted `<noun>.<verb>` names ([`actions`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

/// The action names the hub itself writes.
pub mod actions {
    /// `/api/records` answered (detail: query, count).
    pub const RECORDS_READ: &str = "records.read";
    /// A device registered (detail: device, type).
    pub const DEVICE_ADD: &str = "device.add";
    /// A device's password replaced.
    pub const DEVICE_ROTATE: &str = "device.rotate";
    /// A device revoked.
    pub const DEVICE_REVOKE: &str = "device.revoke";
    /// A person's account created (detail: user, role).
    pub const USER_ADD: &str = "user.add";
    /// A person's password replaced (their sessions end).
    pub const USER_ROTATE: &str = "user.rotate";
    /// A person's account revoked (their sessions end).
    pub const USER_REVOKE: &str = "user.revoke";
    /// A login opened a session (detail: kind page|api, address).
    pub const LOGIN: &str = "login";
    /// A session ended by its user.
    pub const LOGOUT: &str = "logout";
    /// Review items listed (detail: count); they carry patient data.
    pub const REVIEW_READ: &str = "review.read";
    /// A review item resolved or escalated (detail: record, field, before, after, decision).
    pub const REVIEW_RESOLVE: &str = "review.resolve";
    /// A blind entry for a double-keyed field (detail: record, field, value).
    pub const REVIEW_KEY: &str = "review.key";
    /// A blind check of quality sampling answered (detail: record, field, read, answer,
    /// agrees); a disagreement also sent the field to review. Showing one is a
    /// [`REVIEW_READ`] (its crop is patient data).
    pub const REVIEW_BLIND: &str = "review.blind";
    /// Rejects listed or shown (detail: filter, count); a reject's payload is patient data.
    pub const REJECTS_READ: &str = "rejects.read";
    /// Rejects replayed (detail: filter and the outcomes' counts).
    pub const REJECTS_REPLAY: &str = "rejects.replay";
    /// FHIR resources read under `/fhir` (detail: type, query or id, count).
    pub const FHIR_READ: &str = "fhir.read";
}

/// Appends one entry. `detail` is free-form JSON (keep patient data out of it beyond the query
/// parameters that were asked).
pub async fn append(
    client: &impl GenericClient,
    actor: &str,
    action: &str,
    detail: serde_json::Value,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO audit (actor, action, detail) VALUES ($1, $2, $3)",
            &[&actor, &action, &detail],
        )
        .await?;
    Ok(())
}

/// One audit entry.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Sequence number.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// The particulars.
    pub detail: serde_json::Value,
}

/// Which entries [`list`] returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only entries at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Most entries (the newest); 0 means 1000.
    pub limit: i64,
}

/// The newest entries matching `filter`, oldest first.
pub async fn list(
    client: &impl GenericClient,
    filter: &Filter,
) -> Result<Vec<Entry>, tokio_postgres::Error> {
    let limit = if filter.limit <= 0 {
        1000
    } else {
        filter.limit
    };
    let rows = client
        .query(
            "SELECT id, at, actor, action, detail FROM ( \
                 SELECT * FROM audit \
                 WHERE ($1::text IS NULL OR actor = $1) \
                   AND ($2::text IS NULL OR action = $2) \
                   AND ($3::timestamptz IS NULL OR at >= $3) \
                 ORDER BY id DESC LIMIT $4) newest \
             ORDER BY id",
            &[&filter.actor, &filter.action, &filter.since, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Entry {
            id: r.get(0),
            at: r.get(1),
            actor: r.get(2),
            action: r.get(3),
            detail: r.get(4),
        })
        .collect())
}

/// The actor name of the `hub` command line: `cli:<user>` (from `$USER`, else `unknown`).
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}
