//! recognize: identify layout → align → crop → model → decode → validate.

pub mod decode;
pub mod model;
