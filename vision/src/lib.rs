//! The image side of recognition, shared by the agent (at run time) and the simulator (to make
//! training crops), so the model sees exactly the same normalisation in training and in use.
//!
//! - [`gray`]: decode once into a float grey image.
//! - [`pyramid`]: 2x box pyramids and area resampling, for coarse-to-fine matching.
//! - [`ncc`]: normalised cross-correlation of a patch over a window, sub-pixel peaks.
//! - [`fit`]: least-squares translation / scale / similarity from matched points.
//! - [`layout`]: identify an export's template from its anchors and plate, and fit its map
//!   (the anchor search itself is in `anchor`).
//! - [`firmware`]: is the firmware string exactly the template's, character by character.
//! - [`affine`]: the map from a template's reference frame to an export's pixels.
//! - [`crop`]: sample a field box through that map into the model's fixed input.
#![deny(missing_docs)]

pub mod affine;
mod anchor;
pub mod context;
pub mod crop;
pub mod firmware;
pub mod fit;
pub mod gray;
pub mod layout;
pub mod ncc;
pub mod pyramid;

pub use affine::Affine;
pub use crop::{normalise_crop, CROP_H, CROP_W};
pub use gray::GrayF32;
pub use layout::{AnchorScore, Drift, LayoutError, Layouts, Match, Thresholds, Unknown};
