//! The `hub` binary: parses the command line, installs tracing, loads the configuration and
//! calls [`hub::run`] (or one of the admin commands).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hub::config::{HubConfig, DEFAULT_CONFIG};
use record::DeviceId;

/// jemalloc, not the system allocator: the hub's memory is mostly network buffers of many sizes
/// freed by other threads than the ones that made them, which glibc's per-thread arenas keep
/// as resident memory. Measured with `hub-bench` on the same run conditions: peak RSS 317 MiB
/// with glibc, 214 MiB with jemalloc.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "hub",
    version,
    about = "examlink hub: MQTT in, checks, PostgreSQL, live results"
)]
struct Cli {
    /// Configuration file (TOML); every key defaults to `hub print-config`.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (the default).
    Run,
    /// Print the default configuration.
    PrintConfig,
    /// Check a configuration file and exit.
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Create or upgrade the database schema and exit.
    Migrate,
    /// Manage device accounts.
    Device {
        #[command(subcommand)]
        action: DeviceAction,
    },
}

#[derive(Subcommand)]
enum DeviceAction {
    /// Register a device and print its password (once).
    Add {
        /// Device id (a-z, 0-9, '-', '_').
        id: String,
        /// Device type (autoref, tonometer, ...; `reader` for a read-only results account).
        #[arg(long = "type")]
        device_type: String,
    },
    /// Give a device a new password and print it (once).
    Rotate {
        /// Device id.
        id: String,
    },
    /// Revoke a device.
    Revoke {
        /// Device id.
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<HubConfig> {
    match path {
        Some(p) => {
            HubConfig::from_file(p).with_context(|| format!("loading config {}", p.display()))
        }
        None => Ok(HubConfig::default()),
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::PrintConfig = command {
        print!("{DEFAULT_CONFIG}");
        return Ok(());
    }
    if let Command::CheckConfig { file } = &command {
        HubConfig::from_file(file).with_context(|| format!("checking {}", file.display()))?;
        println!("{}: ok", file.display());
        return Ok(());
    }
    let config = load_config(cli.config.as_ref())?;
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async move {
        match command {
            Command::Run => hub::run(config, shutdown_signal())
                .await
                .context("running the hub"),
            Command::Migrate => {
                let target = hub::load::PgTarget::new(&config.load)?;
                let mut client = target.connect().await.context("connecting to PostgreSQL")?;
                let applied = hub::load::migrate::migrate(&mut client, target.schema())
                    .await
                    .context("migrating")?;
                println!("schema {}: applied {applied:?}", target.schema());
                Ok(())
            }
            Command::Device { action } => device(&config, action).await,
            Command::PrintConfig | Command::CheckConfig { .. } => Ok(()),
        }
    })
}

async fn device(config: &HubConfig, action: DeviceAction) -> anyhow::Result<()> {
    let target = hub::load::PgTarget::new(&config.load)?;
    let mut client = target.connect().await.context("connecting to PostgreSQL")?;
    hub::load::migrate::migrate(&mut client, target.schema())
        .await
        .context("migrating")?;
    let parse = |id: &str| DeviceId::new(id).context("device id");
    match action {
        DeviceAction::Add { id, device_type } => {
            let id = parse(&id)?;
            let pw = hub::auth::add_device(&client, &id, &device_type).await?;
            println!("device {id} added; password (shown once): {}", pw.expose());
        }
        DeviceAction::Rotate { id } => {
            let id = parse(&id)?;
            let pw = hub::auth::rotate_device(&client, &id).await?;
            println!(
                "device {id} rotated; new password (shown once): {}",
                pw.expose()
            );
        }
        DeviceAction::Revoke { id } => {
            let id = parse(&id)?;
            hub::auth::revoke_device(&client, &id).await?;
            println!("device {id} revoked");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    ctrl_c.await.ok();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.ok();
}
