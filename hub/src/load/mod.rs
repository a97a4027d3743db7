//! load: store each checked message in PostgreSQL exactly once, then hand its receipt on.
//!
//! - [`postgres`]: connection settings, the shared connection, error classification.
//! - [`migrate`]: embedded versioned schema migrations.
//! - [`batch`]: one transaction for a batch: idempotent records insert, measurements COPY,
//!   review queue, rejects.
//! - [`stage`]: the loop: batching, retry with backoff while the database is down,
//!   isolating a record the database refuses.

pub mod batch;
pub mod migrate;
pub mod postgres;
pub mod stage;

pub use batch::Outcome;
pub use postgres::{is_retriable, Db, PgTarget};
pub use stage::Loader;
