//! config stage (being written).
