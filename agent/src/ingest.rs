//! ingest stage (being written).
