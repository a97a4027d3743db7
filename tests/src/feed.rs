//! Simulated devices: each writes synthetic exports of one layout into its agent's export
//! folder, atomically (a dot-file renamed into place, as agents ignore dot-files), and keeps
//! the ground truth beside it in `truth/<export name>.json`. Deterministic per device and index,
//! and it continues numbering after a restart, so a re-run never rewrites an export.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use record::TemplateSet;
use sim::{Export, FontDirs, Label, NaiveDateTime, Simulator};

/// The simulator, shared by every simulated device.
#[derive(Debug)]
pub struct Feed {
    sim: Simulator,
    /// A share of exports drawn past the documented variation (`sim::Stress::Ink`: more blur
    /// and noise, a JPEG re-encode), so some fields come out flagged for review.
    hard: Option<(Simulator, f64)>,
}

/// One simulated device.
#[derive(Debug, Clone)]
pub struct Device {
    /// Device id (also the export name prefix).
    pub id: String,
    /// Template (layout) it exports.
    pub template: String,
    /// Where it writes exports.
    pub exports: PathBuf,
    /// Where the ground truth goes.
    pub truth: PathBuf,
    /// Next export index.
    pub next: u64,
}

impl Device {
    /// A device writing `template` exports into `exports`, truth into `truth`; numbering
    /// continues after the highest index already in `truth`.
    pub fn new(id: &str, template: &str, exports: &Path, truth: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(truth)?;
        let next = fs::read_dir(truth)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix(&format!("{id}_"))?
                    .split('.')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .map_or(0, |n| n + 1);
        Ok(Self {
            id: id.into(),
            template: template.into(),
            exports: exports.into(),
            truth: truth.into(),
            next,
        })
    }
}

impl Feed {
    /// Loads the templates and fonts.
    pub fn new(templates: &Path) -> anyhow::Result<Self> {
        let set = TemplateSet::load_dir(templates)?;
        let sim = Simulator::new(&set, &FontDirs::new(&[])).context("preparing the simulator")?;
        Ok(Self { sim, hard: None })
    }

    /// Draws `share` (0..1) of the exports harder than the documented variation
    /// (`sim::Stress::Ink`), which way for each export decided by its device and number.
    pub fn with_hard_share(mut self, templates: &Path, share: f64) -> anyhow::Result<Self> {
        if share > 0.0 {
            let set = TemplateSet::load_dir(templates)?;
            let sim = Simulator::new(&set, &FontDirs::new(&[]))
                .context("preparing the simulator")?
                .with_stress(sim::Stress::Ink);
            self.hard = Some((sim, share.min(1.0)));
        }
        Ok(self)
    }

    /// The simulator for `dev`'s next export.
    fn sim_for(&self, dev: &Device) -> &Simulator {
        match &self.hard {
            Some((hard, share)) => {
                let draw = fxhash(&format!("{}/{}", dev.id, dev.next)) as f64 / u64::MAX as f64;
                if draw < *share {
                    hard
                } else {
                    &self.sim
                }
            }
            None => &self.sim,
        }
    }

    /// Writes the next export of `dev`; returns its file name.
    pub fn emit(&self, dev: &mut Device) -> anyhow::Result<String> {
        let mut rng = ChaCha8Rng::seed_from_u64(dev.next ^ fxhash(&dev.id));
        let export = self.sim_for(dev).render_export(&dev.template, &mut rng)?;
        write(dev, &export)
    }

    /// Writes the next export of `dev` with its exam date and time (where the layout shows one)
    /// stamped `at`, the device's own clock (printed as given, even outside the template's
    /// range); returns its file name. Otherwise the export `emit` would have written.
    pub fn emit_at(&self, dev: &mut Device, at: NaiveDateTime) -> anyhow::Result<String> {
        let mut rng = ChaCha8Rng::seed_from_u64(dev.next ^ fxhash(&dev.id));
        let export = self
            .sim_for(dev)
            .render_export_at(&dev.template, &mut rng, at)?;
        write(dev, &export)
    }
}

/// Writes `export` as `dev`'s next export (truth first, then the image atomically).
fn write(dev: &mut Device, export: &Export) -> anyhow::Result<String> {
    let bytes = sim::encode(export)?;
    let name = format!("{}_{:06}.{}", dev.id, dev.next, export.format);
    fs::write(
        dev.truth.join(format!("{name}.json")),
        export.label.to_json(),
    )?;
    let tmp = dev.exports.join(format!(".{name}.tmp"));
    fs::write(&tmp, &bytes)?;
    fs::rename(&tmp, dev.exports.join(&name))?;
    dev.next += 1;
    Ok(name)
}

/// The ground truth of every export `dev` wrote: `(export name, label)`.
pub fn truth(dir: &Path) -> anyhow::Result<Vec<(String, Label)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let Some(name) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let label: Label = serde_json::from_str(&fs::read_to_string(&p)?)
            .with_context(|| format!("reading {}", p.display()))?;
        out.push((name.to_owned(), label));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
