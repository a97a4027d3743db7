//! recognize: identify layout → align → crop → model → decode → validate.
//!
//! - [`input`]: bytes → grey image, pixel cap before decoding, rejection codes.
//! - layout identification and alignment live in the `vision` crate (`vision::layout`).
//! - [`model`]: the field reader (encoder + greedy decoder), loaded once.
//! - [`decode`]: grammar-constrained decoding and confidence calibration.
//! - [`validate`]: reading → field status (absent / ok / invalid / unreadable), template rules.
//! - [`recognizer`]: the whole chain for one export ([`Recognizer::recognize`]).
//! - [`load`]: templates, plates and model into a [`Recognizer`], once at start-up.
//! - [`command`]: `agent recognize FILE...`, one JSON line per file.
//! - `samples` (feature `samples`, dev tools only): aligned crops of real labelled exports (the
//!   reader's validation set).

pub mod command;
pub mod decode;
pub mod input;
pub mod load;
pub mod model;
pub mod recognizer;
#[cfg(feature = "samples")]
pub mod samples;
pub mod validate;

pub use command::recognize_files;
pub use load::LoadError;
pub use recognizer::{Recognized, Recognizer, RecognizerError, Refusal, Timings};
#[cfg(feature = "samples")]
pub use samples::dump_sample_crops;
