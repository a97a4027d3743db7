//! The device simulator (issue #2): synthetic exports with exact ground truth, training crops
//! for the recognizer, and template overlays for checking boxes by eye.
//!
//! Stages, in the order an export is made:
//! - [`fonts`]: find font files by name in the font directories.
//! - [`hint`] and [`text`]: rasterise values like PIL: FreeType-style hinting, glyph placement
//!   and blending.
//! - [`printed`] and [`values`]: draw valid values per field and the label, honouring the rules.
//! - [`render`]: the [`Simulator`]: values drawn on the plate, then degraded.
//! - [`degrade`] and [`filters`]: the template's variation (geometry, blur, noise, JPEG, scans).
//! - [`stress`]: sets past the documented variation, and look-alike layouts (#14).
//! - [`encode`]: the export file (PNG colour types, JPEG, BMP) beside its label JSON.
//! - [`crops`]: recognizer training crops through `vision::normalise_crop`.
//! - [`overlay`]: anchor and field boxes drawn over an export, aligned by a shift estimate.
//!
//! Plus [`samples`]: where the shared labelled sample exports are, for every test and tool.
#![deny(missing_docs)]
// Pixel code indexes colour channels and kernel taps by position on purpose.
#![allow(clippy::needless_range_loop, clippy::type_complexity)]

pub mod crops;
pub mod degrade;
pub mod encode;
pub mod filters;
pub mod fonts;
pub mod hint;
pub mod overlay;
pub mod printed;
pub mod render;
pub mod samples;
pub mod stress;
pub mod text;
pub mod values;

/// The clock types of the simulator's API ([`Simulator::with_today`],
/// [`Simulator::render_export_at`]), for callers without their own `chrono`.
pub use chrono::{NaiveDate, NaiveDateTime};
pub use degrade::{Degrade, ScanMode};
pub use encode::encode;
pub use fonts::{FontDirs, FontError};
pub use render::{Export, Prepared, SimError, Simulator};
pub use stress::{Lookalike, Stress};
pub use values::{Label, Values};
