//! telemetry stage (being written).
