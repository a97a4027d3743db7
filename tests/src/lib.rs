//! End-to-end test package (tests live in `tests/`).
