//! `agent-crops --templates DIR --from-samples DIR --out DIR`: aligned crops of real labelled
//! exports in the simulator's crops format (see `agent::recognize::samples`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Writes OUT/crops/<n>.png and OUT/labels.jsonl from labelled sample exports.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Templates directory.
    #[arg(long, default_value = "templates")]
    templates: PathBuf,
    /// Folder of labelled exports (searched recursively).
    #[arg(long)]
    from_samples: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let templates = agent::recognize::command::locate(&cli.templates);
    match agent::recognize::dump_sample_crops(&templates, &cli.from_samples, &cli.out) {
        Ok(d) => {
            for (file, why) in &d.failures {
                eprintln!("skipped {file}: {why}");
            }
            println!(
                "{} crops from {} exports into {} ({} absent fields skipped, {} problems)",
                d.crops,
                d.exports,
                cli.out.display(),
                d.skipped_absent,
                d.failures.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
