//! `examlink-sim`: synthetic exports, recognizer training crops and template overlays.
//!
//! ```text
//! examlink-sim render  --templates DIR --out DIR [--template ID]... --count N --seed S [--today D]
//!                      [--stress documented|ink|geometry|bounds] [--lookalike firmware|model]
//! examlink-sim crops   --templates DIR --out DIR --count N --seed S [--hard] [--today D]
//! examlink-sim overlay --templates DIR --template ID IMAGE OUT.png
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use record::TemplateSet;
use sim::{FontDirs, Lookalike, NaiveDate, Simulator, Stress};

#[derive(Parser)]
#[command(
    name = "examlink-sim",
    about = "Device simulator: synthetic exports, training crops, overlays"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// Templates folder (`*.toml` and `plates/`).
    #[arg(long, default_value = "templates")]
    templates: PathBuf,
    /// Extra font directory, searched before EXAMLINK_FONT_DIR and /usr/share/fonts/truetype.
    #[arg(long = "font-dir")]
    font_dirs: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Synthetic exports with label JSON: <id>_<seed>_<n>.<ext> + .json, N per template.
    Render {
        #[command(flatten)]
        common: Common,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Only these templates (repeatable); default all.
        #[arg(long = "template")]
        only: Vec<String>,
        /// Exports per template.
        #[arg(long, default_value_t = 10)]
        count: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The devices' today, YYYY-MM-DD (exam dates are drawn up to it); default: today, UTC.
        #[arg(long)]
        today: Option<NaiveDate>,
        /// How far past the catalog's documented variation (sim::stress).
        #[arg(long, default_value = "documented")]
        stress: Stress,
        /// Look-alike layouts instead (one glyph of the firmware string or the model name
        /// changed): every export must be refused; labels say `"device_type": null`.
        #[arg(long)]
        lookalike: Option<Lookalike>,
    },
    /// Recognizer training crops: crops/<n>.png + labels.jsonl.
    Crops {
        #[command(flatten)]
        common: Common,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Number of crops.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Harder degradations and crop misalignment.
        #[arg(long)]
        hard: bool,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// The devices' today, YYYY-MM-DD (exam dates are drawn up to it); default: today, UTC.
        #[arg(long)]
        today: Option<NaiveDate>,
    },
    /// Draws anchor and field boxes over an export, aligned by a shift estimate.
    Overlay {
        #[command(flatten)]
        common: Common,
        /// Template id.
        #[arg(long)]
        template: String,
        /// The export image.
        image: PathBuf,
        /// Output PNG.
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("examlink-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(common: &Common) -> Result<(TemplateSet, FontDirs)> {
    let set = TemplateSet::load_dir(&common.templates)
        .with_context(|| format!("loading templates from {}", common.templates.display()))?;
    Ok((set, FontDirs::new(&common.font_dirs)))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Render {
            common,
            out,
            only,
            count,
            seed,
            today,
            stress,
            lookalike,
        } => {
            let (mut set, fonts) = load(&common)?;
            if !only.is_empty() {
                let mut chosen = TemplateSet::default();
                for id in &only {
                    match set.get(id) {
                        Some(t) => chosen.insert(t.clone()),
                        None => bail!("no template {id:?} in {}", common.templates.display()),
                    }
                }
                set = chosen;
            }
            let mut sim = Simulator::new(&set, &fonts)?.with_stress(stress);
            if let Some(today) = today {
                sim = sim.with_today(today);
            }
            if let Some(which) = lookalike {
                let dropped;
                (sim, dropped) = sim.into_lookalikes(which);
                for id in dropped {
                    eprintln!("examlink-sim: {id}: no two glyphs to swap, no look-alike");
                }
            }
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let start = Instant::now();
            for p in sim.templates() {
                let id = &p.template.id;
                for n in 0..count {
                    let mut rng = sim::render::export_rng(seed, id, n);
                    let e = sim.render_export(id, &mut rng)?;
                    let stem = format!("{id}_{seed}_{n}");
                    let img = out.join(format!("{stem}.{}", e.format));
                    let bytes = sim::encode(&e)?;
                    write(&img, &bytes)?;
                    let label = match lookalike {
                        None => e.label.to_json(),
                        Some(_) => serde_json::json!({
                            "device_type": null, "firmware": null, "fields": {}, "lookalike_of": id,
                        })
                        .to_string(),
                    };
                    write(&out.join(format!("{stem}.json")), label.as_bytes())?;
                }
            }
            let total = count * sim.templates().len();
            let secs = start.elapsed().as_secs_f64();
            println!(
                "rendered {total} exports into {} in {secs:.1} s",
                out.display()
            );
        }
        Command::Crops {
            common,
            out,
            count,
            seed,
            hard,
            threads,
            today,
        } => {
            let (set, fonts) = load(&common)?;
            let mut sim = Simulator::new(&set, &fonts)?;
            if let Some(today) = today {
                sim = sim.with_today(today);
            }
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let start = Instant::now();
            let n = sim::crops::write_crops(&sim, &out, count, seed, hard, threads)?;
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            println!(
                "wrote {n} crops into {} in {secs:.1} s: {:.0} crops/s on {threads} threads ({:.0} crops/s per thread)",
                out.display(),
                n as f64 / secs,
                n as f64 / secs / threads as f64
            );
        }
        Command::Overlay {
            common,
            template,
            image,
            out,
        } => {
            let (set, fonts) = load(&common)?;
            let t = set.get(&template).with_context(|| {
                format!("no template {template:?} in {}", common.templates.display())
            })?;
            let img =
                image::open(&image).with_context(|| format!("reading {}", image.display()))?;
            let label_path = image.with_extension("json");
            let label = match std::fs::read_to_string(&label_path) {
                Ok(s) => Some(
                    sim::Label::from_json(&s)
                        .with_context(|| format!("parsing label {}", label_path.display()))?,
                ),
                Err(_) => None,
            };
            let o = sim::overlay::overlay(t, &fonts, &img, label.as_ref())?;
            println!(
                "{}: shift {:+.1},{:+.1} px, scale {:.4}, rotation {:+.2} deg, anchor score {:.3}",
                image.display(),
                o.alignment.shift.0,
                o.alignment.shift.1,
                o.alignment.map.scale(),
                o.alignment.map.c.atan2(o.alignment.map.a).to_degrees(),
                o.alignment.score
            );
            o.image
                .save(&out)
                .with_context(|| format!("writing {}", out.display()))?;
        }
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
