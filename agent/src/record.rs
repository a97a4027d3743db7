//! record stage (being written).
