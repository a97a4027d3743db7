//! publish stage (being written).
