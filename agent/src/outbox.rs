//! outbox stage (being written).
