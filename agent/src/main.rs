//! The `agent` binary: parses the command line, installs tracing, loads the configuration and
//! calls [`agent::run`]. Subcommands: `run` (default), `check`, `check-config`, `print-config`,
//! `recognize`, for a stopped agent `outbox list|status|requeue|export` and `requeue`
//! (library functions in [`agent::outbox::admin`] and [`agent::outbox::reread`]), and on
//! Windows `service install|uninstall|start|stop|run` ([`agent::service`]).

use std::path::PathBuf;
use std::process::ExitCode;

use agent::logfile::LogFormat;
use agent::outbox::admin::{self, Part, Target};
use agent::outbox::{reread, Requeued};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// examlink agent: reads exam-device exports and delivers them to the hub.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (for `run`, `check`, `outbox`, `requeue` and `service`); default
    /// `agent.toml`, on Windows `%ProgramData%\examlink\agent.toml`.
    #[arg(long, short, global = true, default_value_os_t = agent::paths::default_config_file())]
    config: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Check a configuration file and explain every problem with its key.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Print the default configuration, with comments.
    PrintConfig,
    /// Check the configuration file (-c) and show the outbox: queued, deferred and rejected
    /// counts and the oldest deferral's reason. While the agent runs, the outbox is locked;
    /// then its status message (`last_error`) and metrics show the same.
    Check,
    /// Inspect or act on the outbox of a stopped agent (the running agent locks it).
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Make a stopped agent read export files again at its next start, after a template or
    /// model update: forgets their digests (nothing queued or rejected is touched).
    ///
    /// What the hub does with a re-read: the record id derives from device, image digest,
    /// template id and template version. Under the same template version it is the same record
    /// (the hub answers duplicate; nothing changes). Under a new template version it is a new
    /// record id, which the hub stores as a revision that supersedes the earlier record of the
    /// same image. A quarantined export that a template now fits becomes a record.
    #[command(
        override_usage = "agent requeue --quarantined\n       agent requeue <EXPORT FILE>..."
    )]
    Requeue {
        /// Every file in quarantine.dir (not the *.reason.txt files) goes back into the first
        /// export folder under its original name, to be read again.
        #[arg(long, conflicts_with = "files")]
        quarantined: bool,
        /// Export files (in an export folder) to read again.
        #[arg(required_unless_present = "quarantined", value_name = "EXPORT FILE")]
        files: Vec<PathBuf>,
    },
    /// Recognize export files and print one JSON line per file.
    Recognize {
        /// Templates directory.
        #[arg(long, default_value = "templates")]
        templates: PathBuf,
        /// Model path.
        #[arg(long, default_value = "models")]
        model: PathBuf,
        /// Export files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The agent as a Windows service (`examlink-agent`): automatic start at boot, restart on
    /// failure, a service stop is a graceful stop. Run as Administrator.
    #[cfg(windows)]
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
}

#[cfg(windows)]
#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Register the service for this agent.exe and the configuration file (-c).
    Install,
    /// Stop the service if it runs and remove it (configuration, outbox and logs stay).
    Uninstall,
    /// Start the service.
    Start,
    /// Stop the service gracefully (the batch in hand finishes) and wait until it stopped.
    Stop,
    /// What the service control manager runs; not for a console.
    #[command(hide = true)]
    Run,
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// List messages, one per line: id, state, kind, seq, size, source file, times, reason.
    /// Default: everything queued (deferred messages included).
    List {
        /// Only the messages the hub rejected (kept aside, never deleted).
        #[arg(long, conflicts_with = "deferred")]
        rejected: bool,
        /// Only the queued messages the hub deferred.
        #[arg(long)]
        deferred: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Counts of queued, deferred and rejected messages, and the oldest deferral's reason.
    Status,
    /// Move rejected messages back into the queue (new seq, same payload), so the agent sends
    /// them again at its next start; for a deferred id, clear its deferral (retry at once).
    #[command(override_usage = "agent outbox requeue <ID>...\n       agent outbox requeue --all")]
    Requeue {
        /// Message ids, as `agent outbox list` prints them.
        #[arg(required_unless_present = "all", value_name = "ID")]
        ids: Vec<String>,
        /// Every rejected and every deferred message.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Write each queued message's payload (JSON, as published) to DIR/<id>.json.
    Export {
        /// Target folder (created if missing).
        dir: PathBuf,
        /// The rejected messages instead.
        #[arg(long)]
        rejected: bool,
    },
}

fn main() -> ExitCode {
    // Before any thread: see the function.
    #[cfg(windows)]
    agent::recognize::model::keep_tract_off_wmic();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::PrintConfig => {
            print!("{}", agent::config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file } => match agent::config::load_settings(&file) {
            Ok(s) => {
                println!(
                    "{}: ok (device {}, broker {}:{})",
                    file.display(),
                    s.device,
                    s.mqtt.broker.host,
                    s.mqtt.broker.port
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{}: {} problem(s):", file.display(), errors.len());
                for e in errors {
                    eprintln!("  {e}");
                }
                ExitCode::from(2)
            }
        },
        Command::Recognize {
            templates,
            model,
            files,
        } => {
            agent::logfile::install(cli.log_format, None);
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match agent::recognize::recognize_files(&templates, &model, &files, &mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run => run(&cli.config, cli.log_format),
        #[cfg(windows)]
        Command::Service { command } => report(match command {
            ServiceCommand::Install => agent::service::install(&cli.config),
            ServiceCommand::Uninstall => agent::service::uninstall(),
            ServiceCommand::Start => agent::service::start(),
            ServiceCommand::Stop => agent::service::stop(),
            ServiceCommand::Run => agent::service::run_dispatcher(&cli.config),
        }),
        Command::Check => check(&cli.config),
        Command::Outbox { command } => report(outbox(&cli.config, command)),
        Command::Requeue { quarantined, files } => {
            report(requeue(&cli.config, quarantined, &files))
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `agent check`: the configuration, then the outbox (exit 0 while a running agent holds it).
fn check(config: &std::path::Path) -> ExitCode {
    let settings = match agent::config::load_settings(config) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{}: {} problem(s):", config.display(), errors.len());
            for e in errors {
                eprintln!("  {e}");
            }
            return ExitCode::from(2);
        }
    };
    println!(
        "{}: ok (device {}, broker {}:{})",
        config.display(),
        settings.device,
        settings.mqtt.broker.host,
        settings.mqtt.broker.port
    );
    let dir = settings.data_dir.join(agent::OUTBOX_DIR);
    match agent::outbox::Store::open(&dir, settings.outbox.max_bytes) {
        Ok(store) => match admin::summary(&store) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: reading the outbox: {e}");
                ExitCode::FAILURE
            }
        },
        Err(agent::outbox::OutboxError::Locked { .. }) => {
            println!(
                "outbox: in use by the running agent; its status last_error and the metrics \
                 examlink_agent_outbox_deferred / _rejected show deferred and rejected records"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open_outbox(
    config: &std::path::Path,
) -> anyhow::Result<(agent::config::AdminPaths, agent::outbox::Store)> {
    let paths = agent::config::load_admin_paths(config)?;
    let store = admin::open(&paths)?;
    Ok((paths, store))
}

fn outbox(config: &std::path::Path, command: OutboxCommand) -> anyhow::Result<()> {
    let (_, store) = open_outbox(config)?;
    match command {
        OutboxCommand::List {
            rejected,
            deferred,
            json,
        } => {
            let part = match (rejected, deferred) {
                (true, _) => Part::Rejected,
                (_, true) => Part::Deferred,
                _ => Part::Queued,
            };
            let items = admin::list(&store, part)?;
            admin::write_list(&mut std::io::stdout().lock(), &items, json)?;
            if !json {
                eprintln!("{}", admin::summary(&store)?);
            }
        }
        OutboxCommand::Status => println!("{}", admin::summary(&store)?),
        OutboxCommand::Requeue { ids, all } => {
            let target = if all { Target::All } else { Target::Ids(ids) };
            let mut missing = 0;
            for (id, r) in admin::requeue(&store, &target)? {
                match r {
                    Requeued::Queued(seq) => println!("{id}: queued again (seq {seq})"),
                    Requeued::Undeferred => {
                        println!("{id}: deferral cleared; sent at the next start")
                    }
                    Requeued::NotFound => {
                        missing += 1;
                        println!("{id}: neither rejected nor deferred; nothing done");
                    }
                }
            }
            if missing > 0 && !all {
                anyhow::bail!("{missing} id(s) were neither rejected nor deferred");
            }
        }
        OutboxCommand::Export { dir, rejected } => {
            let part = if rejected {
                Part::Rejected
            } else {
                Part::Queued
            };
            let n = admin::export(&store, &dir, part)
                .with_context(|| format!("exporting to {}", dir.display()))?;
            println!("exported {n} message(s) to {}", dir.display());
        }
    }
    store.flush()?;
    Ok(())
}

fn requeue(config: &std::path::Path, quarantined: bool, files: &[PathBuf]) -> anyhow::Result<()> {
    let (paths, store) = open_outbox(config)?;
    let done = if quarantined {
        let export = paths
            .export_dirs
            .first()
            .context("ingest.export_dirs is empty: nowhere to put the files back")?;
        reread::quarantined(&store, &paths.quarantine_dir, export)?
    } else {
        reread::files(&store, files, &paths.export_dirs)?
    };
    for r in &done {
        if let Some(w) = &r.warning {
            eprintln!("warning: {w}");
        }
        println!("{} -> read again as {}", r.file.display(), r.into.display());
    }
    println!(
        "{} file(s) will be read again when the agent starts",
        done.len()
    );
    store.flush()?;
    Ok(())
}

fn run(config: &std::path::Path, format: LogFormat) -> ExitCode {
    let settings = match agent::config::load_settings(config) {
        Ok(s) => s,
        Err(errors) => {
            agent::logfile::install(format, None);
            for e in &errors {
                tracing::error!(config = %config.display(), error = %e, "Invalid configuration.");
            }
            eprintln!(
                "{}: invalid configuration; run `agent check-config {}`",
                config.display(),
                config.display()
            );
            return ExitCode::from(2);
        }
    };
    let file = if settings.log.file.as_os_str().is_empty() {
        None
    } else {
        let log = &settings.log;
        match agent::logfile::RotatingFile::open(&log.file, log.max_bytes, log.keep) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("error: log.file {}: {e}", log.file.display());
                return ExitCode::from(2);
            }
        }
    };
    agent::logfile::install(format, file);
    match agent::run_blocking(settings, record::signal::shutdown()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "Agent failed.");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
