//! The image side of recognition, shared by the agent (at run time) and the simulator (to make
//! training crops), so the model sees exactly the same normalisation in training and in use.
//!
//! - [`gray`]: decode once into a float grey image.
//! - [`affine`]: the map from a template's reference frame to an export's pixels.
//! - [`crop`]: sample a field box through that map into the model's fixed input.
#![deny(missing_docs)]

pub mod affine;
pub mod crop;
pub mod gray;

pub use affine::Affine;
pub use crop::{normalise_crop, CROP_H, CROP_W};
pub use gray::GrayF32;
