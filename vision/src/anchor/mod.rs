//! The anchor search for one template variant: find every anchor in the export, fit the map, and
//! score the result.
//!
//! Coordinates: a variant's frame is the reference frame times `s0` (1, or the export downscale
//! factor); the map being fitted goes from the variant frame to the export. The search works in
//! the variant frame *through* the current map, so once scale and rotation are known the windows
//! are resampled upright and the patches compare like with like.
//!
//! Order: the anchor with the smallest expected displacement first (shift plus what scale and
//! rotation can do at its distance from the image centre), searched coarse to fine on the
//! pyramid; each later anchor is predicted from the map fitted so far, so its search range
//! shrinks to a few pixels. Then every anchor is refined at full resolution with sub-pixel peaks
//! and the map refitted (twice when scale or rotation vary), integer-shift layouts are snapped to
//! whole pixels, and every anchor is scored by its NCC at the fitted position.
//!
//! - [`search`]: an anchor's plate patches and the NCC search for it, coarse to fine.
//! - [`matching`]: one variant: search order, map fitting, refinement, the outcome
//!   ([`Attempt`]).
//! - [`score`]: the fitted map's verdict: every anchor verified, scale and rotation in range,
//!   the firmware checks.

mod matching;
mod score;
mod search;

pub(crate) use matching::{match_variant, Attempt};
pub(crate) use search::{sample_grid, VariantAnchor};
