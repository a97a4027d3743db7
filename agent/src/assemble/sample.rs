//! Quality sampling: which fields read `ok` keep their crop for a blind check at the hub.
//!
//! A share of the `ok` fields (`recognize.quality_sample`, 0.5% by default) travels with its
//! crop in [`record::Record::sample_crops`]; at the hub a reviewer types what the crop shows
//! without seeing the read, and the disagreements give the production estimate of the
//! ok-but-wrong rate.
//!
//! The draw is a pure function of the record id and the field name ([`uniform`]: SHA-256 of
//! both, as a number in `[0, 1)`, drawn when below the share), never random per run: the same
//! export read again (after a crash, a resend) draws the same fields, so its record is the same.
//! Only fields whose status is `ok` are drawn; the others already go to a person.

use record::{DeviceId, Field, FieldStatus, RecordId, Template};
use sha2::{Digest, Sha256};

/// The default share of `ok` fields drawn for a blind check (0.5%).
pub const DEFAULT_QUALITY_SAMPLE: f64 = 0.005;

/// Where field `field` of record `id` falls in `[0, 1)`: uniform over ids and fields, and
/// the same on every run.
pub fn uniform(id: &RecordId, field: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(id.as_str().as_bytes());
    // A separator, so (id, field) pairs never collide by concatenation.
    h.update([0]);
    h.update(field.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The top 53 bits: exactly representable, so the result is < 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether field `field` of record `id` is drawn at `share` (0: never, 1: always).
pub fn drawn(id: &RecordId, field: &str, share: f64) -> bool {
    uniform(id, field) < share
}

/// One export's draw: the record id follows from the template the recognizer matches, so the
/// recognizer asks [`Draw::keeps`] per field once it knows it.
#[derive(Debug, Clone, Copy)]
pub struct Draw<'a> {
    device: &'a DeviceId,
    image_sha256: &'a str,
    share: f64,
}

impl<'a> Draw<'a> {
    /// The draw for the export with digest `image_sha256` on `device`, at `share`.
    pub fn new(device: &'a DeviceId, image_sha256: &'a str, share: f64) -> Self {
        Self {
            device,
            image_sha256,
            share,
        }
    }

    /// Whether `field`, read with template `t`, keeps its crop for a blind check: read `ok`,
    /// and drawn for the record id this export gets with `t`.
    pub fn keeps(&self, t: &Template, field: &Field) -> bool {
        if field.status != FieldStatus::Ok || self.share <= 0.0 {
            return false;
        }
        let id = RecordId::derive(self.device, self.image_sha256, &t.id, t.version);
        drawn(&id, &field.name, self.share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> RecordId {
        let d = DeviceId::new("autoref-01").unwrap();
        RecordId::derive(&d, &format!("{n:064x}"), "autoref_fw2", 1)
    }

    #[test]
    fn the_draw_is_deterministic_and_in_the_unit_interval() {
        let a = uniform(&id(1), "r_sph");
        assert_eq!(a, uniform(&id(1), "r_sph"));
        assert_ne!(a, uniform(&id(1), "r_cyl"));
        assert_ne!(a, uniform(&id(2), "r_sph"));
        for n in 0..1000 {
            let u = uniform(&id(n), "pd");
            assert!((0.0..1.0).contains(&u), "{u}");
        }
    }

    #[test]
    fn the_share_drawn_matches_the_configured_share() {
        let fields = ["patient_id", "r_sph", "r_cyl", "r_axis", "pd"];
        let draws = |share: f64| {
            (0..40_000)
                .flat_map(|n| fields.iter().map(move |f| (n, *f)))
                .filter(|(n, f)| drawn(&id(*n), f, share))
                .count()
        };
        let total = 40_000 * fields.len();
        assert_eq!(draws(0.0), 0);
        assert_eq!(draws(1.0), total);
        // 200,000 draws at 0.5%: 1,000 expected, sd about 31.5; allow 4 sd.
        let at_default = draws(DEFAULT_QUALITY_SAMPLE);
        assert!((874..=1126).contains(&at_default), "{at_default}");
        let at_tenth = draws(0.1) as f64 / total as f64;
        assert!((at_tenth - 0.1).abs() < 0.003, "{at_tenth}");
    }
}
