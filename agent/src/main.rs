//! The `agent` binary: parses the command line, installs tracing, loads the configuration and
//! calls [`agent::run`]. Subcommands: `run` (default), `check-config`, `print-config`,
//! `recognize`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// examlink agent: reads exam-device exports and delivers them to the hub.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (for `run`).
    #[arg(long, short, global = true, default_value = "agent.toml")]
    config: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
}

fn install_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
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
            install_tracing(cli.log_format);
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
        Command::Run => {
            install_tracing(cli.log_format);
            run(cli.config)
        }
    }
}

fn run(config: PathBuf) -> ExitCode {
    let settings = match agent::config::load_settings(&config) {
        Ok(s) => s,
        Err(errors) => {
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(agent::run(settings, shutdown_signal()));
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "Agent failed.");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C, or SIGTERM where there is one.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _signalled = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _signalled = tokio::signal::ctrl_c().await;
    }
}
